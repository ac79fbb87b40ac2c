//! How many live 1080p 25-fps streams this machine keeps up with: `capflow run` on N generator cameras
//! (`synth://`, real time, dropping frames when behind) for a fixed time, N = 1, 2, … until frames are dropped.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};

/// Seconds each live run lasts.
const SECONDS: u64 = 25;
/// Event time at the start of a live run that is not counted (milliseconds).
const WARM_UP_MS: i64 = 8_000;
/// Most streams tried.
const MAX_STREAMS: usize = 8;

/// Frames analysed and dropped after the warm-up by one live run of `streams` cameras with `segmentation` TOML.
fn live_run(
    dir: &Path,
    streams: usize,
    workers: usize,
    segmentation: &str,
) -> anyhow::Result<(u64, u64)> {
    let out_dir = dir.join(format!("output-live-{streams}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut toml = format!(
        "[output]\nlocation = {:?}\n\n{segmentation}\n\n",
        out_dir.display().to_string()
    );
    for i in 0..streams {
        toml += &format!(
            "[[streams]]\nid = \"cam-{i}\"\npatient = \"bed-{i}\"\n\
             source = \"synth://skin?width=1920&height=1080&fps=25&length_s=1&seed={}\"\n\n",
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
    steady_state(&out_dir)
}

/// Frames analysed and dropped after the first [`WARM_UP_MS`] of event time (the generator renders each camera's
/// loop as it opens, which costs drops no steady state has), read back from the run's tables.
fn steady_state(out_dir: &Path) -> anyhow::Result<(u64, u64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime to read the live run's tables")?;
    let output = capflow_sinks::open_output(&out_dir.display().to_string(), &Default::default())?;
    let frames = capflow_sinks::read_frames(&output, runtime.handle())?;
    let events = capflow_sinks::read_stream_events(&output, runtime.handle())?;
    let Some(first) = frames.iter().map(|f| f.event_time_ms).min() else {
        bail!("the live run analysed no frames");
    };
    let from = first + WARM_UP_MS;
    let analysed = frames.iter().filter(|f| f.event_time_ms >= from).count() as u64;
    let dropped = events
        .iter()
        .filter(|e| e.kind == capflow_ingest::EventKind::Dropped && e.start_ms >= from)
        .map(|e| e.frames_lost)
        .sum();
    Ok((analysed, dropped))
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
            let (frames, dropped) = live_run(dir, streams, workers, segmentation)?;
            let share = dropped as f64 / (frames + dropped).max(1) as f64;
            println!(
                "  {label:<38} {streams} stream(s): {frames:>6} frames analysed, {dropped:>6} dropped ({:.1} %)",
                share * 100.0
            );
            rows.push(serde_json::json!({
                "streams": streams, "frames": frames, "dropped": dropped, "dropped_share": share,
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
