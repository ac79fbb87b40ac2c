//! A real S3-compatible server (s3s-fs) for tests, shared by the sink tests and the end-to-end tests.
//!
//! The binary comes from `tools/setup-s3.sh` (`.deps/s3s/bin/s3s-fs`) or `$CAPFLOW_S3S_FS`. Without it tests print
//! a skip message, unless `CAPFLOW_REQUIRE_S3=1` (set by `make test`), which turns the absence into a failure.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capflow_sinks::S3Options;

pub const ACCESS_KEY: &str = "K";
pub const SECRET_KEY: &str = "S";
pub const BUCKET: &str = "capflow-test";

/// A running s3s-fs server; killed when dropped.
pub struct S3Server {
    child: Child,
    binary: PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its storage folder: one sub-folder per bucket.
    pub root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn options(&self, secret: &str) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(secret.into()),
            allow_http: true,
            virtual_hosted_style: false,
        }
    }

    /// The config's `[output.s3]` table for this server, with the right credentials.
    pub fn output_s3_section(&self) -> String {
        format!(
            "[output.s3]\nendpoint = {:?}\nregion = \"us-east-1\"\naccess_key_id = {:?}\nsecret_access_key = {:?}\n\
             allow_http = true\n",
            self.endpoint(),
            ACCESS_KEY,
            SECRET_KEY
        )
    }

    /// Stops the server (SIGKILL), as an outage would; its stored objects stay on disk.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and storage folder.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.child = spawn(&self.binary, self.port, self.root.path());
            if wait_listening(&mut self.child, self.port) {
                return;
            }
            // The port may still be held for a moment after the kill: try again.
            assert!(
                Instant::now() < deadline,
                "s3s-fs could not listen on port {} again within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Where the server keeps an object of the test bucket on disk.
    pub fn on_disk(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }
}

pub fn s3s_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("CAPFLOW_S3S_FS") {
        Some(p) => PathBuf::from(p),
        None => FsPath::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the crate lives inside the workspace")
            .join(".deps/s3s/bin/s3s-fs"),
    };
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "s3s-fs not found at {}: run tools/setup-s3.sh (or set CAPFLOW_S3S_FS)",
        path.display()
    );
    if std::env::var("CAPFLOW_REQUIRE_S3").as_deref() == Ok("1") {
        panic!("{message}; CAPFLOW_REQUIRE_S3=1 makes this a failure");
    }
    eprintln!("skipping S3 test: {message}");
    None
}

pub fn start_server() -> Option<S3Server> {
    let binary = s3s_binary()?;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = spawn(&binary, port, root.path());
    assert!(
        wait_listening(&mut child, port),
        "s3s-fs exited early on port {port}"
    );
    Some(S3Server {
        child,
        binary,
        port,
        root,
    })
}

fn spawn(binary: &FsPath, port: u16, root: &FsPath) -> Child {
    Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

/// Waits until the server accepts connections (true) or exits (false); panics after 20 s.
fn wait_listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "s3s-fs did not listen on port {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
