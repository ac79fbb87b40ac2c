//! Sources end to end through the `capflow` binary: a live RTSP stream whose server is killed and restarted and
//! which SIGTERM ends cleanly; eight live streams sharing two cores; files that ffmpeg (not capflow) wrote in
//! several containers and codecs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/cli.rs"]
mod cli;
#[path = "support/rtsp_server.rs"]
mod rtsp_server;
#[path = "support/s3_server.rs"]
mod s3_server;

use cli::{capflow, duckdb_view, CAPFLOW};
use rtsp_server::{free_port, RtspServer};
use serde_json::Value;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A generated sublingual clip's PNG frames (`%06d.png`), and the MP4 capflow's own encoder wrote of them.
fn synth_clip(dir: &Path, frames: u32) -> (PathBuf, PathBuf) {
    let out = capflow(&[
        "synth",
        "--preset",
        "sublingual",
        "--width",
        "320",
        "--height",
        "240",
        "--frames",
        &frames.to_string(),
        "--png",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "c",
    ]);
    assert!(out.status.success());
    (dir.join("c/frames"), dir.join("c.mp4"))
}

/// A config of `streams` (id, patient, source) with 2 s windows writing to `dir/out`.
fn config(dir: &Path, streams: &[(String, String, String)]) -> PathBuf {
    let mut text = format!(
        "[output]\nlocation = \"{}\"\n[windows]\nlength_s = 2.0\n",
        dir.join("out").display()
    );
    for (id, patient, source) in streams {
        text += &format!(
            "[[streams]]\nid = \"{id}\"\npatient = \"{patient}\"\nsite = \"sublingual\"\nsource = \"{source}\"\n\
             um_per_px = 1.5\n"
        );
    }
    let path = dir.join("capflow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `capflow run` in the background, its output in `dir/run.log`.
fn spawn_run(dir: &Path, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    Command::new(CAPFLOW)
        .arg("run")
        .args(args)
        // The reader's INFO lines say when a stream's event time switches to the sender's clock.
        .env("CAPFLOW_LOG", "warn,capflow_ingest::reader=info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("capflow runs")
}

/// Peak and current resident memory of a running process, KiB, from /proc.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Waits for `child` up to `limit`, sampling its memory every 200 ms; returns the status, the last peak RSS and
/// every RSS sample (KiB).
fn wait_sampling(child: &mut Child, limit: Duration) -> (ExitStatus, u64, Vec<u64>) {
    let deadline = Instant::now() + limit;
    let (mut peak, mut samples) = (0, Vec::new());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak, samples);
        }
        if let Some((hwm, rss)) = memory_kib(child.id()) {
            peak = hwm;
            samples.push(rss);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("capflow did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    eprintln!("--- capflow run ---\n{text}");
    text
}

/// Runs `capflow run args` to completion against a live `peer` (then stopped), and reads the tables it wrote to
/// `out`; returns the run's output text and the tables.
fn run_against(peer: &mut Child, args: &[&str], out: &Path) -> (String, Value) {
    let run = capflow(&[&["run"], args].concat());
    let _ = peer.kill();
    let _ = peer.wait();
    let text = cli::text(&run);
    assert!(run.status.success(), "{text}");
    (text, duckdb_view(out))
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn events(view: &Value, stream: &str) -> Vec<Value> {
    view["stream_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stream_id"] == stream)
        .cloned()
        .collect()
}

#[test]
fn a_live_rtsp_run_reconnects_after_its_server_restarts_and_ends_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (frames, _) = synth_clip(d, 50);
    let mut server = RtspServer::start(free_port(), &frames, "%06d.png");
    let config = config(d, &[("cam-1".into(), "P-live".into(), server.url())]);
    let mut run = spawn_run(d, &["--config", config.to_str().unwrap()]);

    std::thread::sleep(Duration::from_secs(5));
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    let restarted_ms = now_ms();
    std::thread::sleep(Duration::from_secs(6));
    let sent = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let (status, peak_kib, _) = wait_sampling(&mut run, Duration::from_secs(60));
    let text = log(d);
    assert!(
        status.success(),
        "SIGTERM ends a live run cleanly: {status}"
    );
    assert!(text.contains("1 reconnect(s)"), "{text}");
    // GStreamer's RTSP server sends RTCP sender reports: event time switches to the sender's NTP clock.
    assert!(
        text.contains("event time now follows the sender's clock"),
        "{text}"
    );

    let view = duckdb_view(&d.join("out"));
    // A burst after a (re)connect may overflow the queue; those drops are counted but not what is tested here.
    let events: Vec<Value> = events(&view, "cam-1")
        .into_iter()
        .filter(|e| e["kind"] != "dropped")
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["started", "gap", "stopped"], "{events:#?}");
    let gap = &events[1];
    let (start, end) = (
        gap["start_ms"].as_i64().unwrap(),
        gap["end_ms"].as_i64().unwrap(),
    );
    assert!(end - start >= 1500, "the 2 s outage is a gap: {gap}");
    assert!(gap["frames_lost"].as_u64().unwrap() >= 30, "{gap}");
    assert!(gap["attempts"].as_u64().unwrap() >= 1, "{gap}");
    assert!(
        gap["detail"].as_str().unwrap().contains(&server.url()),
        "{gap}"
    );
    eprintln!(
        "reconnect: first frame {:.2} s after the RTSP server came back; gap {:.2} s, {} frames lost; peak RSS {} MiB",
        (end - restarted_ms) as f64 / 1000.0,
        (end - start) as f64 / 1000.0,
        gap["frames_lost"],
        peak_kib / 1024
    );

    // Output resumes after the gap, and the windows open at SIGTERM were flushed.
    let frames = view["frames"].as_array().unwrap();
    let before = frames
        .iter()
        .filter(|f| f["event_ms"].as_i64().unwrap() <= start)
        .count();
    let after = frames
        .iter()
        .filter(|f| f["event_ms"].as_i64().unwrap() >= end)
        .count();
    assert!(
        before >= 50 && after >= 50,
        "{before} frames before the gap, {after} after"
    );
    let stopped = events[2]["start_ms"].as_i64().unwrap();
    let last_window = view["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["window_start_ms"].as_i64().unwrap())
        .max()
        .unwrap();
    // SIGTERM may land just past a window's start, before a frame of that window arrived: the window open at
    // SIGTERM is the one of the last frame analysed.
    let last_frame = frames
        .iter()
        .map(|f| f["event_ms"].as_i64().unwrap())
        .max()
        .unwrap();
    assert!(
        (last_window..last_window + 2_000).contains(&last_frame),
        "the window open at SIGTERM is written: last window at {last_window}, last frame at {last_frame}"
    );
    assert!(
        stopped - last_frame < 2_000,
        "frames are analysed up to SIGTERM: last frame at {last_frame}, stopped at {stopped}"
    );
    // Only the windows the start and SIGTERM cut are partial: the gap is recorded in stream_events, not as an edge.
    let partial: Vec<(i64, bool)> = view["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["window_start_ms"].as_i64().unwrap(),
                p["partial"].as_bool().unwrap(),
            )
        })
        .collect();
    let mut times: Vec<i64> = frames
        .iter()
        .map(|f| f["event_ms"].as_i64().unwrap())
        .collect();
    times.sort_unstable();
    let (first_frame, last_frame) = (times[0], times[times.len() - 1]);
    let first_window = partial[0].0;
    // The recording ends one frame interval (the last one seen) past its last frame: a window is whole only if
    // that end reaches the window's end. The windows are 2 s.
    let last_interval = last_frame - times[times.len() - 2];
    let cut = last_frame + last_interval < last_window + 2_000;
    assert!(
        partial.iter().all(|&(start, partial)| partial
            == ((cut && start == last_window)
                || (first_frame > first_window && start == first_window))),
        "{partial:?}, frames from {first_frame} to {last_frame}"
    );
}

/// Eight live streams from one RTSP server, two workers on the machine's cores, for `duration`.
fn eight_live_streams(duration: &str, limit: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (frames, _) = synth_clip(d, 50);
    let server = RtspServer::start(free_port(), &frames, "%06d.png");
    let streams: Vec<(String, String, String)> = (1..=8u32)
        .map(|i| {
            (
                format!("cam-{i}"),
                format!("P-{}", i.div_ceil(2)),
                server.url(),
            )
        })
        .collect();
    let config = config(d, &streams);
    let mut run = spawn_run(
        d,
        &[
            "--config",
            config.to_str().unwrap(),
            "--duration",
            duration,
            "-w",
            "2",
        ],
    );
    let (status, peak_kib, samples) = wait_sampling(&mut run, limit);
    let text = log(d);
    assert!(status.success(), "{status}");

    let view = duckdb_view(&d.join("out"));
    let mut per_stream = std::collections::BTreeMap::new();
    let mut last_index = std::collections::BTreeMap::new();
    for f in view["frames"].as_array().unwrap() {
        let stream = f["stream_id"].as_str().unwrap().to_string();
        let index = f["frame_index"].as_u64().unwrap();
        let last = last_index.entry(stream.clone()).or_insert(0u64);
        *last = (*last).max(index);
        *per_stream.entry(stream).or_insert(0u64) += 1;
    }
    let mut dropped = std::collections::BTreeMap::new();
    for e in view["stream_events"].as_array().unwrap() {
        if e["kind"] == "dropped" {
            *dropped
                .entry(e["stream_id"].as_str().unwrap().to_string())
                .or_insert(0u64) += e["frames_lost"].as_u64().unwrap();
        }
    }
    let (min, max) = (
        *per_stream.values().min().unwrap(),
        *per_stream.values().max().unwrap(),
    );
    // A source numbers every frame it decodes, dropped or not: each frame up to a stream's last analysed one was
    // analysed or counted as dropped. (Whether 2 cores drop at all depends on the machine's speed; each stream's
    // decoding also starts at its own first key frame, so streams are not compared with each other.)
    let unaccounted: Vec<(&String, u64)> = per_stream
        .iter()
        .map(|(stream, n)| {
            let counted = n + dropped.get(stream).copied().unwrap_or(0);
            (stream, (last_index[stream] + 1).saturating_sub(counted))
        })
        .filter(|&(_, missing)| missing > 0)
        .collect();
    let half = samples.len() / 2;
    let late_rss = samples[half..].iter().max().copied().unwrap_or(0);
    let early_rss = samples[..half].iter().max().copied().unwrap_or(0);
    eprintln!(
        "8 live streams for {duration}: frames analysed per stream {per_stream:?}, dropped {dropped:?}; \
         peak RSS {} MiB (max RSS first half {} MiB, second half {} MiB)",
        peak_kib / 1024,
        early_rss / 1024,
        late_rss / 1024
    );
    assert_eq!(per_stream.len(), 8, "every stream was served: {text}");
    assert!(min * 2 >= max, "no stream starved: {per_stream:?}");
    assert!(
        unaccounted.is_empty(),
        "every frame is analysed or counted as dropped; frames missing {unaccounted:?}: analysed {per_stream:?}, \
         last index {last_index:?}, dropped {dropped:?}"
    );
    assert!(
        late_rss <= early_rss + early_rss / 4 + 64 * 1024,
        "memory does not grow with lag: {early_rss} KiB then {late_rss} KiB"
    );
}

#[test]
fn eight_live_streams_share_two_cores_fairly_counting_every_drop_with_bounded_memory() {
    eight_live_streams("20s", Duration::from_secs(120));
}

/// The soak: `cargo test --release --test sources -- --ignored --nocapture` (about 3 minutes).
#[test]
#[ignore = "two-minute soak; run with --ignored"]
fn eight_live_streams_for_two_minutes() {
    eight_live_streams("120s", Duration::from_secs(300));
}

#[test]
fn files_from_ffmpeg_in_several_containers_give_the_metrics_of_the_lossless_frames() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (frames, ours) = synth_clip(d, 25);
    let pattern = frames.join("%06d.png");
    let encodings: [(&str, &[&str]); 4] = [
        (
            "h264.mkv",
            &["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "16"],
        ),
        (
            "h264.mov",
            &["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "16"],
        ),
        ("mjpeg.avi", &["-c:v", "mjpeg", "-q:v", "2"]),
        ("raw.avi", &["-c:v", "rawvideo", "-pix_fmt", "bgr24"]),
    ];
    let mut streams = vec![
        (
            "png".to_string(),
            "P".to_string(),
            frames.display().to_string(),
        ),
        (
            "ours".to_string(),
            "P".to_string(),
            ours.display().to_string(),
        ),
    ];
    for (name, codec) in encodings {
        let path = d.join(name);
        let out = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-framerate", "25", "-i"])
            .arg(&pattern)
            .args(codec)
            .arg(&path)
            .output()
            .expect("ffmpeg is installed by `make setup`");
        assert!(
            out.status.success(),
            "ffmpeg {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        streams.push((
            name.replace('.', "-"),
            "P".into(),
            path.display().to_string(),
        ));
    }
    let config = config(d, &streams);
    let run = capflow(&["run", "--config", config.to_str().unwrap()]);
    assert!(run.status.success());

    let view = duckdb_view(&d.join("out"));
    let mut means = std::collections::BTreeMap::new();
    for f in view["frames"].as_array().unwrap() {
        let e = means
            .entry(f["stream_id"].as_str().unwrap().to_string())
            .or_insert((0u64, 0.0f64, 0.0f64));
        e.0 += 1;
        e.1 += f["capillary_count"].as_f64().unwrap();
        e.2 += f["area_fraction"].as_f64().unwrap();
    }
    let (n0, count0, area0) = means["png"];
    eprintln!("per stream: frames, mean capillaries, mean area fraction");
    for (stream, (n, count, area)) in &means {
        eprintln!(
            "  {stream:<10} {n:>3} {:>7.2} {:>7.4}",
            count / *n as f64,
            area / *n as f64
        );
    }
    assert_eq!(means.len(), 6, "every file decoded: {means:?}");
    for (stream, (n, count, area)) in &means {
        assert_eq!(*n, n0, "{stream}: every frame decoded");
        let area_err = (area - area0).abs() / area0;
        let count_err = (count - count0).abs() / count0.max(1.0);
        assert!(
            area_err < 0.10 && count_err < 0.25,
            "{stream}: area fraction {:.4} vs {:.4} from the lossless frames, count {:.2} vs {:.2}",
            area / *n as f64,
            area0 / n0 as f64,
            count / *n as f64,
            count0 / n0 as f64
        );
    }
}

#[test]
fn a_study_manifest_replays_local_and_s3_archives_alike() {
    let Some(server) = s3_server::start_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, clip) = synth_clip(d, 25);
    let key = "archive/2026/p2 visit.mp4";
    std::fs::create_dir_all(server.on_disk(key).parent().unwrap()).unwrap();
    std::fs::copy(&clip, server.on_disk(key)).unwrap();
    std::fs::write(
        d.join("study.csv"),
        format!(
            "# one archived recording per row\n\
             source,patient,site,recorded_at,um_per_px\n\
             c.mp4,P1,sublingual,2026-03-01T08:00:00Z,1.5\n\
             s3://{}/{key},P2,sublingual,2026-03-01T09:00:00Z,1.5\n",
            s3_server::BUCKET
        ),
    )
    .unwrap();
    let config = d.join("capflow.toml");
    std::fs::write(
        &config,
        format!(
            "manifest = \"study.csv\"\n[output]\nlocation = \"{}\"\n[ingest.s3]\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n",
            d.join("out").display(),
            server.endpoint(),
            s3_server::ACCESS_KEY,
            s3_server::SECRET_KEY
        ),
    )
    .unwrap();
    let run = capflow(&["run", "--config", config.to_str().unwrap()]);
    let text = cli::text(&run);
    assert!(run.status.success(), "{text}");
    assert!(
        !text.contains("X-Amz-Signature"),
        "presigned URLs stay out of the output: {text}"
    );
    assert!(
        text.contains("P2-p2_visit"),
        "ids are derived from patient and file name: {text}"
    );

    let view = duckdb_view(&d.join("out"));
    let frames = view["frames"].as_array().unwrap();
    let metrics = |patient: &str| -> Vec<(u64, f64)> {
        frames
            .iter()
            .filter(|f| f["patient_id"] == patient)
            .map(|f| {
                (
                    f["frame_index"].as_u64().unwrap(),
                    f["area_fraction"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(metrics("P1").len(), 25);
    assert_eq!(
        metrics("P1"),
        metrics("P2"),
        "the S3 copy gives the local file's numbers"
    );
    let events: Vec<&str> = view["stream_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["patient_id"] == "P2")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["started", "ended"]);
}

/// Plays the PNG frames in `frames` as live H.264 at 25 fps to 127.0.0.1:`port` over UDP, wrapped by `payload`.
fn udp_sender(frames: &Path, port: u16, payload: &str) -> Child {
    let pipeline = format!(
        "multifilesrc location={}/%06d.png loop=true caps=image/png,framerate=25/1 ! pngdec ! videoconvert \
         ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! {payload} \
         ! udpsink host=127.0.0.1 port={port}",
        frames.display()
    );
    Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0 runs (make setup installs gstreamer1.0-tools)")
}

#[test]
fn udp_mpeg_ts_and_raw_rtp_senders_are_live_sources() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (frames, _) = synth_clip(d, 25);
    for (name, payload, uri) in [
        ("udp", "mpegtsmux", "udp://127.0.0.1:{port}"),
        (
            "rtp",
            "rtph264pay config-interval=1 pt=96",
            "rtp://127.0.0.1:{port}?encoding-name=H264",
        ),
    ] {
        let port = free_port();
        let mut sender = udp_sender(&frames, port, payload);
        let uri = uri.replace("{port}", &port.to_string());
        let out = d.join(name);
        let args = ["--input", &uri, "--patient", "P-net", "--output"];
        let args = [&args[..], &[out.to_str().unwrap(), "--duration", "6s"]].concat();
        let (text, view) = run_against(&mut sender, &args, &out);
        let frames = view["frames"].as_array().unwrap().len();
        let kinds: Vec<String> = events(&view, "input-0")
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        eprintln!("{name}: {frames} frames in 6 s, events {kinds:?}");
        // Decoding starts at the first key frame (one a second); the rest of the 6 s is analysed.
        assert!(frames >= 25, "{name}: {frames} frames: {text}");
        assert_eq!(kinds.first().map(String::as_str), Some("started"), "{name}");
        assert_eq!(kinds.last().map(String::as_str), Some("stopped"), "{name}");
    }
}

#[test]
fn an_mjpeg_http_camera_is_a_live_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (frames, _) = synth_clip(d, 25);
    let jpegs = d.join("jpegs");
    std::fs::create_dir_all(&jpegs).unwrap();
    let encoded = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(
            format!(
                "multifilesrc location={}/%06d.png index=0 stop-index=24 caps=image/png,framerate=25/1 ! pngdec \
                 ! videoconvert ! jpegenc ! multifilesink location={}/%03d.jpg",
                frames.display(),
                jpegs.display()
            )
            .split_whitespace(),
        )
        .status()
        .unwrap();
    assert!(encoded.success());
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/mjpeg_server.py");
    let mut server = Command::new("python3")
        .arg(script)
        .args(["--port", &port.to_string(), "--frames"])
        .arg(&jpegs)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let config = d.join("capflow.toml");
    std::fs::write(
        &config,
        format!(
            "[output]\nlocation = \"{}\"\n[[streams]]\nid = \"mjpeg\"\npatient = \"P-cam\"\n\
             source = \"http://127.0.0.1:{port}/\"\nmode = \"live\"\n",
            d.join("out").display()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--duration", "5s"];
    let (text, view) = run_against(&mut server, &args, &d.join("out"));
    let times: Vec<i64> = view["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["event_ms"].as_i64().unwrap())
        .collect();
    eprintln!("MJPEG over HTTP: {} frames in 5 s", times.len());
    assert!(times.len() >= 25, "{} frames: {text}", times.len());
    // Two frames may arrive within the same millisecond on a loaded machine: in order, and spread over the run.
    assert!(
        times.windows(2).all(|w| w[1] >= w[0]) && times[times.len() - 1] - times[0] >= 1_000,
        "frames are timed as they arrive, not all at zero: {times:?}"
    );
    // A loaded machine may drop a frame now and then (counted in `dropped` rows); not what is tested here. Once in
    // many CI runs the HTTP stream broke off and was reconnected (a `gap` row): tolerated once, with its cause shown.
    let events = events(&view, "mjpeg");
    let gaps: Vec<&Value> = events.iter().filter(|e| e["kind"] == "gap").collect();
    for gap in &gaps {
        eprintln!("MJPEG stream broke off and was reconnected: {gap}");
    }
    assert!(gaps.len() <= 1, "{text}");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .filter(|kind| !matches!(*kind, "dropped" | "gap"))
        .collect();
    assert_eq!(kinds, ["started", "stopped"], "{text}");
}

#[test]
fn the_generator_is_a_live_source_that_duration_ends_with_its_cut_windows_partial() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = config(
        d,
        &[
            (
                "gen-a".into(),
                "P-gen".into(),
                "synth://skin?width=160&height=120&fps=10&seed=3&length_s=1".into(),
            ),
            (
                "gen-b".into(),
                "P-gen".into(),
                "synth://sublingual?width=160&height=120&fps=10&seed=4".into(),
            ),
        ],
    );
    // Frame parts of a second of event time: each is written once the watermark passes its end.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[output]\n",
        "[output]\nlive_frames_part_s = 1.0\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let run = capflow(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--duration",
        "5s",
    ]);
    let text = cli::text(&run);
    assert!(run.status.success(), "{text}");
    let view = duckdb_view(&d.join("out"));
    let parts: Vec<String> = walk(&d.join("out/frames"))
        .into_iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .filter(|name| name.starts_with("part-gen-a-t"))
        .collect();
    assert!(parts.len() >= 3, "one part per second of gen-a: {parts:?}");
    let mut indices: Vec<u64> = view["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["stream_id"] == "gen-a")
        .map(|f| f["frame_index"].as_u64().unwrap())
        .collect();
    indices.sort();
    assert!(
        indices.iter().enumerate().all(|(i, &f)| f == i as u64),
        "every frame row once, none lost between parts: {indices:?}"
    );
    for stream in ["gen-a", "gen-b"] {
        let kinds: Vec<String> = events(&view, stream)
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .filter(|kind| kind != "dropped")
            .collect();
        assert_eq!(kinds, ["started", "stopped"], "{stream}: {text}");
        let frames = view["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["stream_id"] == stream)
            .count();
        // Real time at 10 fps for about 5 s (less the start-up); the generator never ends a stream by itself.
        assert!(frames >= 10, "{stream}: {frames} frames: {text}");
    }
    let patients = view["patients"].as_array().unwrap();
    let last = patients.last().unwrap();
    let start = last["window_start_ms"].as_i64().unwrap();
    // A stream stopping within a frame interval (100 ms) of the 2 s window's end leaves it whole.
    let cut = ["gen-a", "gen-b"].iter().any(|stream| {
        let last_frame = view["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["stream_id"] == *stream)
            .map(|f| f["event_ms"].as_i64().unwrap())
            .max()
            .unwrap();
        last_frame >= start && last_frame < start + 2_000 - 100
    });
    assert!(
        patients.len() >= 2 && last["partial"] == cut,
        "the window --duration cut is partial: {patients:?}"
    );

    // A monitor restarted into the same output adds its rows next to the first run's (a live run's parts are named
    // by its start, so none of them is taken for an already-committed part).
    let before = view["frames"].as_array().unwrap().len();
    let windows_before = patients.len();
    let run = capflow(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--duration",
        "3s",
    ]);
    let text = cli::text(&run);
    assert!(run.status.success(), "{text}");
    let view = duckdb_view(&d.join("out"));
    assert!(
        view["frames"].as_array().unwrap().len() >= before + 10,
        "the restarted run's frames land too: {text}"
    );
    assert!(
        view["patients"].as_array().unwrap().len() > windows_before,
        "and its windows: {text}"
    );
}

#[test]
fn a_parquet_manifest_from_pyarrow_replays_with_device_profiles() {
    let Some(py) = cli::python() else {
        panic!("the Python readers are installed by `make setup` (.venv) or CAPFLOW_PYTHON");
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, clip) = synth_clip(d, 10);
    // A data engineer's manifest: typed columns, a real timestamp, nulls where a value is not known.
    let write = |name: &str, patients: &str| {
        let script = format!(
            "import datetime, pyarrow as pa, pyarrow.parquet as pq\n\
             t = datetime.datetime(2026, 3, 1, 8, 0, tzinfo=datetime.timezone.utc)\n\
             pq.write_table(pa.table({{\n\
               'source': ['{clip}', '{clip}'],\n\
               'patient': {patients},\n\
               'site': ['sublingual', None],\n\
               'recorded_at': pa.array([t, t + datetime.timedelta(hours=1)], pa.timestamp('ms', tz='UTC')),\n\
               'profile': ['scope', 'hdmia-skin'],\n\
               'fps': pa.array([None, 25], pa.int32()),\n\
             }}), '{}')\n",
            d.join(name).display(),
            clip = clip.display(),
        );
        let out = Command::new(&py).args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    write("study.parquet", "['P1', 'P2']");
    let config = d.join("capflow.toml");
    std::fs::write(
        &config,
        format!(
            "manifest = \"study.parquet\"\n[profiles.scope]\num_per_px = 1.5\nfps = 25\n\
             description = \"SDF, 640x480\"\n[output]\nlocation = \"{}\"\n",
            d.join("out").display()
        ),
    )
    .unwrap();
    let run = capflow(&["run", "--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", cli::text(&run));
    let view = duckdb_view(&d.join("out"));
    let frames = view["frames"].as_array().unwrap();
    let first = |patient: &str| {
        frames
            .iter()
            .find(|f| f["patient_id"] == patient && f["frame_index"] == 0)
            .unwrap()
            .clone()
    };
    let (p1, p2) = (first("P1"), first("P2"));
    assert_eq!(p1["um_per_px"], 1.5, "from the config's profile");
    assert_eq!(p2["um_per_px"], 2.2, "from the built-in profile");
    assert_eq!(
        p1["event_ms"], 1_772_352_000_000i64,
        "recorded_at from a timestamp column"
    );
    assert_eq!(p2["event_ms"], 1_772_355_600_000i64);

    // A row without a patient is named, and nothing runs.
    write("study.parquet", "['P1', None]");
    std::fs::remove_dir_all(d.join("out")).unwrap();
    let run = capflow(&["run", "--config", config.to_str().unwrap()]);
    let text = cli::text(&run);
    assert!(!run.status.success());
    assert!(
        text.contains("study.parquet: row 2: `patient` is missing"),
        "{text}"
    );
}

#[test]
fn a_config_reload_adds_and_removes_live_streams_while_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (frames, _) = synth_clip(d, 50);
    let server = RtspServer::start(free_port(), &frames, "%06d.png");
    let stream = |id: &str| (id.to_string(), "P-1".to_string(), server.url());
    let config = config(d, &[stream("cam-a")]);
    let mut run = spawn_run(
        d,
        &["--config", config.to_str().unwrap(), "--follow", "-w", "2"],
    );
    let signal = |name: &str| {
        let sent = Command::new("kill")
            .args([name, &run.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    std::thread::sleep(Duration::from_secs(4));
    let rewrite = |streams: &[(String, String, String)]| {
        let written = self::config(d, streams);
        assert_eq!(written, config);
    };
    rewrite(&[stream("cam-a"), stream("cam-b")]);
    signal("-HUP");
    let added_ms = now_ms();
    std::thread::sleep(Duration::from_secs(4));
    rewrite(&[stream("cam-b")]);
    signal("-HUP");
    let removed_ms = now_ms();
    std::thread::sleep(Duration::from_secs(4));
    // A broken reload is refused and changes nothing.
    std::fs::write(&config, "this is not toml").unwrap();
    signal("-HUP");
    std::thread::sleep(Duration::from_secs(2));
    signal("-TERM");
    let (status, _, _) = wait_sampling(&mut run, Duration::from_secs(60));
    let text = log(d);
    assert!(status.success(), "{status}");
    assert!(text.contains("config reload refused"), "{text}");

    let view = duckdb_view(&d.join("out"));
    let times = |stream: &str| -> Vec<i64> {
        view["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["stream_id"] == stream)
            .map(|f| f["event_ms"].as_i64().unwrap())
            .collect()
    };
    let (a, b) = (times("cam-a"), times("cam-b"));
    assert!(
        a.len() >= 100 && b.len() >= 100,
        "cam-a {} frames, cam-b {}",
        a.len(),
        b.len()
    );
    let (a_last, b_first, b_last) = (
        *a.iter().max().unwrap(),
        *b.iter().min().unwrap(),
        *b.iter().max().unwrap(),
    );
    assert!(
        b_first >= added_ms - 1000,
        "cam-b starts at the first reload"
    );
    assert!(
        a_last <= removed_ms + 1000,
        "cam-a stops at the second reload"
    );
    assert!(
        b_last >= removed_ms + 4000,
        "cam-b goes on after cam-a left"
    );
    for stream in ["cam-a", "cam-b"] {
        let kinds: Vec<String> = events(&view, stream)
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .filter(|k| k != "dropped")
            .collect();
        assert_eq!(kinds, ["started", "stopped"], "{stream}");
    }
}
