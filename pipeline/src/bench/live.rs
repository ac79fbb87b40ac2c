//! How many live 1080p 25-fps streams this machine keeps up with: `capflow run` on N generator cameras
//! (`synth://`, real time, dropping frames when behind) for a fixed time, N = 1, 2, … until frames are dropped.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};

/// Seconds each live run lasts.
const SECONDS: u64 = 25;
/// Event time at the start of a live run that is not counted (milliseconds).
const WARM_UP_MS: i64 = 8_000;
/// The cameras' frame rate.
const FPS: f64 = 25.0;
/// Most streams tried.
const MAX_STREAMS: usize = 8;

/// Frames sent and dropped after the warm-up by one live run of `streams` cameras with `segmentation` TOML.
fn live_run(
    dir: &Path,
    streams: usize,
    workers: usize,
    segmentation: &str,
) -> anyhow::Result<(f64, f64)> {
    let out_dir = dir.join(format!("output-live-{streams}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut toml = format!(
        "[output]\nlocation = {:?}\n\n{segmentation}\n\n",
        out_dir.display().to_string()
    );
    for i in 0..streams {
        toml += &format!(
            "[[streams]]\nid = \"cam-{i}\"\npatient = \"bed-{i}\"\n\
             source = \"synth://skin?width=1920&height=1080&fps={FPS}&length_s=1&seed={}\"\n\n",
            100 + i
        );
    }
    let config = dir.join(format!("live-{streams}.toml"));
    std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
    let exe = std::env::current_exe().context("locating the capflow binary")?;
    let out = Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["-w", &workers.to_string()])
        .args(["--duration", &format!("{SECONDS}s")])
        .output()
        .context("running capflow on live generator streams")?;
    if !out.status.success() {
        bail!(
            "the live run with {streams} streams failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    steady_state(&out_dir, streams)
}

/// What one live run lost: the share of the frames the cameras sent after the first [`WARM_UP_MS`] of event time
/// that were dropped (the generator renders each camera's loop as it opens, which costs drops no steady state has),
/// from the run's `stream_events` (drop episodes, prorated by their overlap with the counted span).
fn steady_state(out_dir: &Path, streams: usize) -> anyhow::Result<(f64, f64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime to read the live run's tables")?;
    let output = capflow_sinks::open_output(&out_dir.display().to_string(), &Default::default())?;
    let frames = capflow_sinks::read_frames(&output, runtime.handle())?;
    let events = capflow_sinks::read_stream_events(&output, runtime.handle())?;
    let (Some(first), Some(last)) = (
        frames.iter().map(|f| f.event_time_ms).min(),
        frames.iter().map(|f| f.event_time_ms).max(),
    ) else {
        bail!("the live run analysed no frames");
    };
    let (from, to) = (first + WARM_UP_MS, last);
    if to <= from {
        bail!("the live run was shorter than its warm-up");
    }
    let dropped: f64 = events
        .iter()
        .filter(|e| e.kind == capflow_ingest::EventKind::Dropped)
        .map(|e| {
            let overlap = (e.end_ms.min(to) - e.start_ms.max(from)).max(0) as f64;
            let span = (e.end_ms - e.start_ms).max(1) as f64;
            e.frames_lost as f64 * (overlap / span).min(1.0)
        })
        // `sum` of no f64 is -0.0, which prints as "-0".
        .fold(0.0, |total, lost| total + lost);
    let sent = streams as f64 * FPS * (to - from) as f64 / 1000.0;
    Ok((sent, dropped))
}

/// Streams sustained at 1 Hz segmentation (flow on every frame) and at full rate, with both cores.
pub fn capacity(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "live — 1920x1080 25-fps generator cameras for {SECONDS} s each, -w {workers}; counted after the first {} s; \
         sustained = under 1 % dropped:",
        WARM_UP_MS / 1000
    );
    let mut modes = Vec::new();
    for (label, segmentation) in [
        (
            "segmentation 1 Hz, flow every frame",
            "[segmentation]\nmode = \"every_nth\"\nn = 25",
        ),
        ("segmentation every frame", ""),
    ] {
        let mut rows = Vec::new();
        let mut sustained = 0;
        for streams in 1..=MAX_STREAMS {
            let (sent, dropped) = live_run(dir, streams, workers, segmentation)?;
            let share = dropped / sent.max(1.0);
            println!(
                "  {label:<38} {streams} stream(s): {sent:>6.0} frames sent, {dropped:>6.0} dropped ({:.1} %)",
                share * 100.0
            );
            rows.push(serde_json::json!({
                "streams": streams, "frames_sent": sent, "dropped": dropped, "dropped_share": share,
            }));
            if share >= 0.01 {
                break;
            }
            sustained = streams;
        }
        println!("  {label:<38} sustained: {sustained} stream(s)");
        modes.push(
            serde_json::json!({ "mode": label, "sustained_streams": sustained, "runs": rows }),
        );
    }
    Ok(serde_json::Value::Array(modes))
}
