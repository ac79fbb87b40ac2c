//! How many live 1080p 25-fps streams this machine keeps up with: `capflow run` on N generator cameras
//! (`synth://`, real time, dropping frames when behind) for a fixed time, N = 1, 2, … until frames are dropped.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};

/// Seconds each live run lasts.
const SECONDS: u64 = 20;
/// Most streams tried.
const MAX_STREAMS: usize = 8;

/// Frames analysed and dropped by one live run of `streams` cameras with `segmentation` TOML.
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
    // The summary prints, per stream: `ok  cam-0 ... N frames ... (live: D dropped, R reconnect(s))`.
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut frames, mut dropped) = (0u64, 0u64);
    for line in text.lines().filter(|l| l.contains("(live:")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let before = |word: &str| {
            words
                .iter()
                .position(|w| w.trim_end_matches(',') == word)
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| words[i].trim_start_matches('(').parse::<u64>().ok())
        };
        frames += before("frames").unwrap_or(0);
        dropped += before("dropped").unwrap_or(0);
    }
    Ok((frames, dropped))
}

/// Streams sustained at 1 Hz segmentation (flow on every frame) and at full rate, with both cores.
pub fn capacity(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "live — 1920x1080 25-fps generator cameras for {SECONDS} s each, -w {workers}; sustained = under 1 % dropped:"
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
