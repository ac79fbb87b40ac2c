#!/usr/bin/python3
"""A test MJPEG-over-HTTP camera: serves a folder of JPEG frames, looped at a fixed rate, as
multipart/x-mixed-replace on http://127.0.0.1:PORT/ (what many IP and USB-to-network microscope cameras send).
Started and killed by capflow's live-source tests; runs until killed. Standard library only.

    python3 tools/mjpeg_server.py --port 8080 --frames DIR [--fps 25]
"""
import argparse
import glob
import http.server
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", required=True, help="folder of .jpg frames, played in name order")
    parser.add_argument("--fps", type=float, default=25.0)
    args = parser.parse_args()
    frames = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(args.frames, "*.jpg")))]
    if not frames:
        print(f"no .jpg frames in {args.frames}", file=sys.stderr)
        return 1
    period = 1.0 / args.fps

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            start = time.monotonic()
            i = 0
            try:
                while True:
                    frame = frames[i % len(frames)]
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(frame)
                    self.wfile.write(head + frame + b"\r\n")
                    i += 1
                    time.sleep(max(0.0, start + i * period - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Camera)
    print(f"serving http://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
