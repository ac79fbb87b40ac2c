#!/usr/bin/python3
"""A test RTSP server: GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0) looping a PNG sequence as
live H.264 at rtsp://127.0.0.1:PORT/live. Started and killed by capflow's live-source tests; runs until killed.

    /usr/bin/python3 tools/rtsp_server.py --port 8554 --frames DIR [--fps 25]
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", required=True, help="folder of frame_NNNNN.png images")
    parser.add_argument("--pattern", default="frame_%05d.png")
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = f"{args.frames}/{args.pattern}"
    factory.set_launch(
        f'( multifilesrc location="{location}" loop=true caps="image/png,framerate={args.fps}/1" '
        f"! pngdec ! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    # One pipeline for every client, as a camera would be.
    factory.set_shared(True)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print(f"serving rtsp://127.0.0.1:{args.port}/live", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
