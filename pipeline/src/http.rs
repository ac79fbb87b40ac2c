//! Status over HTTP while a run goes on: `/healthz`, `/metrics` (Prometheus), `/status` (JSON), the bedside
//! dashboard at `/` and each site's latest evidence image at `/evidence/<patient>/<stream>`.
//!
//! It serves on the run's I/O runtime and only reads the [`Monitor`]. Loopback needs no credentials; any other
//! address needs a bearer token (`http.token_env`), which every endpoint but `/healthz` and the (data-free)
//! dashboard page then requires.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::monitor::Monitor;

/// The dashboard: one static page whose script polls `/status` (no build step, no external resources).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Where to serve and who may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// Address to listen on; port 0 picks a free one (the address bound is printed and returned).
    pub listen: SocketAddr,
    /// Bearer token required on every endpoint but `/healthz` and `/`; needed for a non-loopback address.
    pub token: Option<String>,
}

impl HttpOptions {
    /// Parses `listen` and reads the token from the environment variable `token_env` (unset or empty: none).
    /// Refuses a non-loopback address without a token, naming the variable to set.
    pub fn new(listen: &str, token_env: &str) -> anyhow::Result<Self> {
        let listen = parse_listen(listen).with_context(|| {
            format!(
                "http.listen / --http {listen:?}: expected PORT or IP:PORT, e.g. 127.0.0.1:9464"
            )
        })?;
        let token = std::env::var(token_env).ok().filter(|t| !t.is_empty());
        if !listen.ip().is_loopback() && token.is_none() {
            bail!(
                "serving status on {listen} (not a loopback address) needs a bearer token: set {token_env} \
                 (http.token_env), or listen on 127.0.0.1"
            );
        }
        Ok(HttpOptions { listen, token })
    }
}

/// `IP:PORT`, or a bare port on loopback (the default interface).
pub fn parse_listen(text: &str) -> Result<SocketAddr, std::net::AddrParseError> {
    match text.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => text.parse(),
    }
}

#[derive(Clone)]
struct Served {
    monitor: Arc<Monitor>,
    token: Option<Arc<str>>,
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Served {
    fn authorised(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if same(given.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "a bearer token is required (Authorization: Bearer <token>)\n",
                )
                    .into_response(),
            )),
        }
    }
}

async fn healthz(State(served): State<Served>) -> Response {
    // Alive while the run goes on; a finished run (being torn down) is no longer healthy.
    if served.monitor.is_finished() {
        (StatusCode::SERVICE_UNAVAILABLE, "finished\n").into_response()
    } else {
        "ok\n".into_response()
    }
}

async fn metrics(State(served): State<Served>, headers: HeaderMap) -> Response {
    if let Err(denied) = served.authorised(&headers) {
        return *denied;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        served.monitor.prometheus(),
    )
        .into_response()
}

async fn status(State(served): State<Served>, headers: HeaderMap) -> Response {
    if let Err(denied) = served.authorised(&headers) {
        return *denied;
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(served.monitor.status()),
    )
        .into_response()
}

async fn evidence(
    State(served): State<Served>,
    headers: HeaderMap,
    Path((patient, stream)): Path<(String, String)>,
) -> Response {
    if let Err(denied) = served.authorised(&headers) {
        return *denied;
    }
    match served.monitor.evidence_png(&patient, &stream) {
        Some(png) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            png.as_ref().clone(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no evidence image for that site yet\n",
        )
            .into_response(),
    }
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

/// The routes, for serving and for tests.
pub fn router(monitor: Arc<Monitor>, token: Option<String>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/evidence/{patient}/{stream}", get(evidence))
        .with_state(Served {
            monitor,
            token: token.map(Arc::from),
        })
}

/// Binds the address now (so a taken port is an error before the run starts) and serves on `runtime` until it is
/// shut down. Returns the address bound.
pub fn start(
    runtime: &tokio::runtime::Handle,
    options: &HttpOptions,
    monitor: Arc<Monitor>,
) -> anyhow::Result<SocketAddr> {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(options.listen))
        .with_context(|| {
            format!(
                "serving status on {}: the address is taken or not this machine's (choose another with --http or \
                 http.listen)",
                options.listen
            )
        })?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let app = router(monitor, options.token.clone());
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the status server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_a_token() {
        let e = HttpOptions::new("0.0.0.0:9464", "CAPFLOW_TEST_TOKEN_THAT_IS_UNSET")
            .unwrap_err()
            .to_string();
        assert!(e.contains("CAPFLOW_TEST_TOKEN_THAT_IS_UNSET"), "{e}");
        let ok = HttpOptions::new("127.0.0.1:0", "CAPFLOW_TEST_TOKEN_THAT_IS_UNSET").unwrap();
        assert_eq!(ok.token, None);
        assert!(HttpOptions::new("localhost", "X")
            .unwrap_err()
            .to_string()
            .contains("IP:PORT"));
        let port_only = HttpOptions::new("9464", "X").unwrap();
        assert_eq!(port_only.listen, "127.0.0.1:9464".parse().unwrap());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }

    #[test]
    fn endpoints_answer_and_a_token_guards_them() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let monitor = Arc::new(Monitor::new(0, std::time::Duration::from_secs(60)));
        monitor.stream_opened("s1", "p1", "arm", false);
        let options = HttpOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: Some("t0ken".into()),
        };
        let addr = start(runtime.handle(), &options, monitor).unwrap();
        let get = move |path: &str, token: Option<&str>| -> (u16, String) {
            use std::io::{Read, Write};
            let mut conn = std::net::TcpStream::connect(addr).unwrap();
            let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
            write!(
                conn,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
            )
            .unwrap();
            let mut text = String::new();
            conn.read_to_string(&mut text).unwrap();
            let code = text[9..12].parse().unwrap();
            (code, text)
        };
        // The server runs on the runtime's thread only while something drives it.
        let (tx, rx) = std::sync::mpsc::channel();
        let client = std::thread::spawn(move || {
            let results = [
                get("/healthz", None),
                get("/status", None),
                get("/status", Some("wrong")),
                get("/status", Some("t0ken")),
                get("/", None),
                get("/evidence/p1/s1", Some("t0ken")),
            ];
            tx.send(()).unwrap();
            results
        });
        runtime.block_on(async {
            while rx.try_recv().is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        let r = client.join().unwrap();
        assert_eq!(r[0].0, 200);
        assert_eq!((r[1].0, r[2].0), (401, 401));
        assert_eq!(r[3].0, 200);
        assert!(r[3].1.contains("\"stream_id\":\"s1\""), "{}", r[3].1);
        assert_eq!(r[4].0, 200);
        assert!(r[4].1.contains("<title>capflow"));
        assert_eq!(r[5].0, 404);
    }
}
