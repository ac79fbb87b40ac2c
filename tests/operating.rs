//! Operating a run through the `capflow` binary: `/healthz`, `/metrics` (read by the Prometheus project's own
//! parser), `/status`, the bedside dashboard in headless Chromium (numbers checked against `/status` and the
//! committed Parquet), a bearer token, SIGTERM's shutdown latency, progress lines and JSON logs free of patient ids.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "support/cli.rs"]
mod cli;

use cli::{capflow_env, duckdb_view, python, CAPFLOW};
use serde_json::Value;

const TOKEN: &str = "bedside-test-token-7f3a";

/// A live run of two generated cameras (two patients), 2 s windows (judged long enough by the quality check, so
/// patient windows carry numbers), evidence images, served on a free port.
fn live_config(dir: &Path) -> PathBuf {
    let mut text = format!(
        "[output]\nlocation = \"{}\"\nevidence = true\nlive_frames_part_s = 2.0\n[windows]\nlength_s = 2.0\n\
         [quality]\nduration_optimal_s = 1.5\nduration_acceptable_s = 1.0\n\
         [http]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"BEDSIDE_TOKEN\"\n",
        dir.join("out").display()
    );
    for (id, patient, preset, seed) in [
        ("bed3-tongue", "P-alpha", "sublingual", 5),
        ("bed4-arm", "P-beta", "skin", 6),
    ] {
        text += &format!(
            "[[streams]]\nid = \"{id}\"\npatient = \"{patient}\"\nsite = \"{preset}\"\n\
             source = \"synth://{preset}?width=320&height=240&fps=10&seed={seed}\"\num_per_px = 1.5\n"
        );
    }
    let path = dir.join("bedside.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One HTTP/1.1 GET: status code and body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut conn = TcpStream::connect(addr).expect("the status server accepts");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let code = head[9..12].parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (code, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 4 + size..];
    }
}

fn status(addr: SocketAddr) -> Value {
    let (code, body) = get(addr, "/status", Some(TOKEN));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Starts `capflow run` with stderr collected line by line; returns the child, the lines so far (a channel) and
/// the address it serves on.
fn start_run(args: &[&str], env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>, SocketAddr) {
    let mut child = Command::new(CAPFLOW)
        .arg("run")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capflow runs");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[capflow] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("capflow did not print where it serves within 120 s");
        };
        if let Some(rest) = line.split("dashboard at http://").nth(1) {
            let addr = rest.split('/').next().unwrap().parse().unwrap();
            return (child, rx, addr);
        }
    }
}

/// The browser, if installed (`make test` installs Debian's through tools/setup-browser.sh).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CAPFLOW_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CAPFLOW_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "CAPFLOW_REQUIRE_BROWSER=1 but no Chromium at {}",
        path.display()
    );
    None
}

/// Headless Chromium on `url` (our own closed-network flags); `what` is `--dump-dom` or `--screenshot=…`.
fn browse(chromium: &Path, profile: &Path, url: &str, what: &str) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            // Long enough for the page's first poll and two more (it polls every 2 s).
            "--virtual-time-budget=7000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name="value"` attributes of the element opened at the first `<tag` after `from` in `html`.
fn attribute(html: &str, name: &str) -> Option<String> {
    let start = html.find(&format!("{name}=\""))? + name.len() + 2;
    Some(html[start..start + html[start..].find('"')?].to_string())
}

/// The text between the first `>` after `from` and the next `<`.
fn text_after(html: &str) -> String {
    let start = html.find('>').unwrap() + 1;
    html[start..start + html[start..].find('<').unwrap()].to_string()
}

/// The numbers the dashboard shows for `patient`: window start, and each metric's raw value and shown text.
fn shown(dom: &str, patient: &str) -> (i64, Vec<(String, Option<f64>, String)>) {
    let card_at = dom
        .find(&format!("data-patient=\"{patient}\""))
        .unwrap_or_else(|| panic!("no card for {patient} in the dashboard"));
    let card = &dom[card_at..];
    let card = &card[..card.find("</section>").unwrap()];
    let window = card.find("data-window-start=").unwrap();
    let start: i64 = attribute(&card[window..], "data-window-start")
        .unwrap()
        .parse()
        .unwrap();
    let mut metrics = Vec::new();
    let mut rest = card;
    while let Some(at) = rest.find("data-metric=\"") {
        rest = &rest[at..];
        let metric = attribute(rest, "data-metric").unwrap();
        let value = attribute(rest, "data-value").unwrap();
        metrics.push((metric, value.parse::<f64>().ok(), text_after(rest)));
        rest = &rest[1..];
    }
    (start, metrics)
}

/// Sends `signal` (`TERM`, `INT`), then returns how long the process took to exit (the test fails on a hang past
/// `limit`).
fn signal_and_wait(
    child: &mut Child,
    signal: &str,
    limit: Duration,
) -> (Duration, std::process::ExitStatus) {
    let sent = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let at = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (at.elapsed(), status);
        }
        if at.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("capflow did not exit within {limit:?} of SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The run's /metrics parsed by the Prometheus client library's own text parser: {family: {sample labels: value}}.
fn parse_metrics(text: &[u8]) -> Value {
    let py = python().expect("the Python readers are installed by `make setup`");
    let script = "import json, sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
                  out = {}\nfor f in text_string_to_metric_families(sys.stdin.read()):\n    \
                  out[f.name] = {'type': f.type, 'samples': [[s.name, s.labels, s.value] for s in f.samples]}\n\
                  print(json.dumps(out))";
    let mut child = Command::new(py)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(text)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(metrics: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics[family]["samples"]
        .as_array()?
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v)))
        .and_then(|s| s[2].as_f64())
}

/// Equal, both absent, or within float text round-trip error.
fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(1.0),
        (a, b) => a.is_none() && b.is_none(),
    }
}

#[test]
fn a_live_run_serves_status_metrics_and_a_dashboard_showing_the_committed_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = live_config(d);
    let (mut child, _lines, addr) = start_run(
        &["--config", config.to_str().unwrap()],
        &[("BEDSIDE_TOKEN", TOKEN)],
    );

    // Wait until both patients have a closed window and each site an evidence image.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = status(addr);
    while !seen["patients"].as_array().is_some_and(|p| {
        p.len() == 2
            && p.iter().all(|p| {
                p["latest"].is_object()
                    && p["trend"].as_array().is_some_and(|t| t.len() >= 2)
                    && p["sites"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|s| s["evidence_url"].is_string())
            })
    }) {
        assert!(
            Instant::now() < deadline,
            "no closed windows after 90 s: {seen:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
        seen = status(addr);
    }
    assert_eq!(seen["state"], "running");
    let streams = seen["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    for s in streams {
        assert!(s["frames_analysed"].as_u64().unwrap() > 0, "{s}");
        assert!(
            s["lag_s"].as_f64().is_some(),
            "live streams report lag: {s}"
        );
    }

    // Health needs no token; the rest does.
    assert_eq!(get(addr, "/healthz", None), (200, b"ok\n".to_vec()));
    assert_eq!(get(addr, "/status", None).0, 401);
    assert_eq!(get(addr, "/metrics", Some("wrong-token")).0, 401);
    let evidence = seen["patients"][0]["sites"][0]["evidence_url"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, png) = get(addr, &evidence, Some(TOKEN));
    assert_eq!(code, 200);
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the evidence image is a PNG"
    );

    // /metrics, read by the Prometheus client library's parser.
    let (code, text) = get(addr, "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    let metrics = parse_metrics(&text);
    for stream in ["bed3-tongue", "bed4-arm"] {
        let decoded = sample(
            &metrics,
            "capflow_frames_decoded",
            "capflow_frames_decoded_total",
            &[("stream", stream)],
        );
        assert!(decoded.is_some_and(|n| n > 0.0), "{stream}: {decoded:?}");
        let running = sample(
            &metrics,
            "capflow_stream_state",
            "capflow_stream_state",
            &[("stream", stream), ("state", "running")],
        );
        assert_eq!(running, Some(1.0), "{stream} is running");
        assert!(sample(
            &metrics,
            "capflow_lag_seconds",
            "capflow_lag_seconds",
            &[("stream", stream)]
        )
        .is_some());
    }
    assert_eq!(metrics["capflow_inference_seconds"]["type"], "histogram");
    let calls = sample(
        &metrics,
        "capflow_inference_seconds",
        "capflow_inference_seconds_count",
        &[],
    )
    .unwrap();
    let batched = sample(
        &metrics,
        "capflow_batch_size",
        "capflow_batch_size_count",
        &[],
    )
    .unwrap();
    assert!(
        calls > 0.0 && calls == batched,
        "{calls} model calls, {batched} batch sizes"
    );
    // Live frame parts are cut every 2 s of event time (window parts only once their chunk of windows is whole).
    let commits = sample(
        &metrics,
        "capflow_sink_commit_seconds",
        "capflow_sink_commit_seconds_count",
        &[("table", "frames")],
    );
    assert!(
        commits.is_some_and(|n| n >= 1.0),
        "frames parts committed: {commits:?}"
    );
    let rows = sample(
        &metrics,
        "capflow_rows_committed",
        "capflow_rows_committed_total",
        &[("table", "frames")],
    );
    assert!(
        rows.is_some_and(|n| n >= 10.0),
        "frame rows committed: {rows:?}"
    );
    assert!(sample(
        &metrics,
        "capflow_sink_retries",
        "capflow_sink_retries_total",
        &[]
    )
    .is_some());

    // The dashboard in a real browser: its numbers are /status's, for the window it shows.
    if let Some(chromium) = chromium() {
        let url = format!("http://{addr}/#token={TOKEN}");
        let dom = browse(&chromium, &d.join("profile-dom"), &url, "--dump-dom");
        let after = status(addr);
        let polls: u32 = attribute(&dom[dom.find("<body").unwrap()..], "data-polls")
            .unwrap()
            .parse()
            .unwrap();
        assert!(polls >= 2, "the page updates itself (polls: {polls})");
        assert!(
            dom.contains("data-state=\"running\""),
            "stream states shown"
        );
        for patient in ["P-alpha", "P-beta"] {
            let (start, metrics) = shown(&dom, patient);
            let p = after["patients"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["patient_id"] == patient)
                .unwrap();
            let window = p["trend"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["window_start_ms"] == start)
                .unwrap_or_else(|| {
                    panic!("{patient}: the shown window {start} is in /status's trend")
                });
            assert_eq!(
                metrics.len(),
                4,
                "{patient}: density, TVD, PPV, MFI: {metrics:?}"
            );
            assert!(
                metrics[0].1.is_some(),
                "{patient}: a window that passed the quality check has a density"
            );
            for (metric, value, text) in metrics {
                // serde_json's default float parsing may be one ulp off the shortest text both sides print.
                let expected = window[&metric].as_f64();
                assert!(
                    close(value, expected),
                    "{patient} {metric}: shown {value:?}, /status {expected:?}"
                );
                if let Some(v) = value {
                    let digits = match metric.as_str() {
                        "capillary_density_per_mm2" => 1,
                        "ppv_percent" => 0,
                        _ => 2,
                    };
                    assert_eq!(text, format!("{v:.digits$}"), "{patient} {metric} as shown");
                }
            }
            assert!(
                dom.contains("data-quality=\"true\"") || dom.contains("data-quality=\"false\"")
            );
        }
        assert!(
            dom.contains("<img") && dom.contains("src=\"blob:"),
            "evidence images are shown"
        );
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        browse(
            &chromium,
            &d.join("profile-shot"),
            &url,
            &format!("--screenshot={}", shot.display()),
        );
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 20_000,
            "a screenshot with content"
        );
        eprintln!("dashboard screenshot: {}", shot.display());
    } else {
        eprintln!("SKIPPED the dashboard's browser check: no Chromium (tools/setup-browser.sh installs it)");
    }

    // SIGTERM: flush, commit, exit; the latency is printed for the record.
    let last_shown = status(addr);
    let (latency, exit) = signal_and_wait(&mut child, "TERM", Duration::from_secs(60));
    eprintln!(
        "shutdown latency after SIGTERM: {:.2} s",
        latency.as_secs_f64()
    );
    assert!(exit.success(), "SIGTERM ends the run cleanly: {exit}");

    // Every window /status showed is in the committed patients table with the same numbers.
    let view = duckdb_view(&d.join("out"));
    let rows = view["patients"].as_array().unwrap();
    for p in last_shown["patients"].as_array().unwrap() {
        for w in p["trend"].as_array().unwrap() {
            let row = rows
                .iter()
                .find(|r| {
                    r["patient_id"] == p["patient_id"]
                        && r["window_start_ms"] == w["window_start_ms"]
                })
                .unwrap_or_else(|| panic!("window {w} of {} committed", p["patient_id"]));
            for metric in [
                "capillary_density_per_mm2",
                "tvd_mm_per_mm2",
                "ppv_percent",
                "mfi",
            ] {
                let (a, b) = (row[metric].as_f64(), w[metric].as_f64());
                assert!(close(a, b), "{metric}: table {a:?}, /status {b:?}");
            }
        }
    }
}

#[test]
fn serving_beyond_loopback_without_a_token_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path());
    let out = capflow_env(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--http",
            "0.0.0.0:0",
            "--duration",
            "1s",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let text = cli::text(&out);
    assert!(
        text.contains("needs a bearer token: set BEDSIDE_TOKEN"),
        "{text}"
    );
    assert!(!dir.path().join("out").exists(), "nothing written");
}

#[test]
fn a_replay_prints_progress_lines_and_json_logs_without_the_patient_id() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/skin-p001.mp4");
    let patient = "alice-smith-1950";
    let out = capflow_env(
        &[
            "run",
            "--input",
            sample.to_str().unwrap(),
            "--patient",
            patient,
            "--output",
            dir.path().join("out").to_str().unwrap(),
            "--log-format",
            "json",
            "--progress",
            "lines",
            "--progress-every",
            "1s",
        ],
        &[("CAPFLOW_LOG", "debug")],
    );
    assert!(out.status.success(), "{}", cli::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(patient),
        "a raw patient id reached the logs"
    );
    let mut opened = None;
    let mut json_lines = 0;
    for line in stderr.lines() {
        if let Some(progress) = line.strip_prefix("capflow: progress: ") {
            assert!(progress.contains("frames/s"), "{line}");
            continue;
        }
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["timestamp"].is_string(),
            "{line}"
        );
        json_lines += 1;
        if event["message"] == "stream opened" {
            opened = event["patient"].as_str().map(str::to_string);
        }
    }
    assert!(json_lines > 0);
    let tag = opened.expect("the stream-opened event names its patient");
    assert!(
        tag.starts_with("patient#"),
        "logs name the patient by tag: {tag}"
    );
    assert!(
        stderr.contains("capflow: progress: "),
        "a progress line at least once a second"
    );
    // The tables themselves keep the id (pseudonymisation there is `output.pseudonymise`).
    let view = duckdb_view(&dir.path().join("out"));
    assert_eq!(view["patients"][0]["patient_id"], patient);
}

#[test]
fn sigint_ends_a_replay_cleanly_with_its_cut_windows_partial() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let inputs: Vec<String> = ["skin-p001.mp4", "sublingual-p002-1.mp4"]
        .iter()
        .map(|f| samples.join(f).display().to_string())
        .collect();
    let (mut child, _lines, addr) = start_run(
        &[
            "--input",
            &inputs[0],
            "--input",
            &inputs[1],
            "--patient",
            "p1",
            "--output",
            out_dir.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );
    // Interrupt once some frames are in, well before the replay's end.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = status(addr);
        let frames: u64 = seen["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["frames_analysed"].as_u64().unwrap())
            .sum();
        if frames >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "no frames after 120 s: {seen}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (latency, exit) = signal_and_wait(&mut child, "INT", Duration::from_secs(60));
    eprintln!(
        "replay shutdown latency after SIGINT: {:.2} s",
        latency.as_secs_f64()
    );
    assert!(exit.success(), "SIGINT ends a replay cleanly: {exit}");
    let view = duckdb_view(&out_dir);
    let kinds: Vec<&str> = view["stream_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"stopped"),
        "a stream was stopped, not ended: {kinds:?}"
    );
    let windows = view["patients"].as_array().unwrap();
    assert!(!windows.is_empty(), "the open window was written");
    assert!(
        windows.iter().all(|w| w["partial"] == true),
        "cut windows are partial: {windows:?}"
    );
}
