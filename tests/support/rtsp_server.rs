//! GStreamer's RTSP server (Debian's gir1.2-gst-rtsp-server-1.0, driven by `tools/rtsp_server.py`) on 127.0.0.1,
//! looping a folder of PNG frames as live H.264: the real peer of the live-source tests, killed and restarted by them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server; killed when dropped.
pub struct RtspServer {
    child: Child,
    port: u16,
    frames: PathBuf,
    pattern: String,
}

impl RtspServer {
    /// Serves `frames/<pattern>` (e.g. `%06d.png`) at `rtsp://127.0.0.1:<port>/live` and waits until it listens.
    pub fn start(port: u16, frames: &Path, pattern: &str) -> RtspServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--pattern", pattern, "--frames"])
            .arg(frames)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the RTSP test server starts (make setup installs python3-gi and gir1.2-gst-rtsp-server-1.0)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("serving"), "RTSP server said {line:?}");
        RtspServer {
            child,
            port,
            frames: frames.to_owned(),
            pattern: pattern.to_owned(),
        }
    }

    /// The stream's URL.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/live", self.port)
    }

    /// Kills the server (as a crash or power loss would: no teardown sent).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same frames.
    pub fn restart(&mut self) {
        self.kill();
        *self = RtspServer::start(self.port, &self.frames, &self.pattern);
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}
