//! The comparison a researcher would make: `tools/bench_baseline.py` (OpenCV decoding, the onnxruntime Python
//! package running the same ONNX model frame by frame, OpenCV counting) next to `capflow run` on the same clips, in
//! the same run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::{e2e_with_config, Clip};

/// The Python interpreter with the baseline's packages: `CAPFLOW_PYTHON`, else the project's `.venv`.
fn python() -> PathBuf {
    std::env::var_os("CAPFLOW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
}

/// The baseline script: `CAPFLOW_BASELINE_SCRIPT`, else `tools/bench_baseline.py` under the current folder.
fn script() -> PathBuf {
    std::env::var_os("CAPFLOW_BASELINE_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tools/bench_baseline.py"))
}

/// Runs the baseline on `clip` with `threads` ONNX Runtime threads; its JSON report, or why it could not run.
fn run_baseline(clip: &Clip, threads: usize) -> Result<serde_json::Value, String> {
    let script = script();
    if !script.is_file() {
        return Err(format!(
            "{} not found: run `make bench` from the repository root (or set CAPFLOW_BASELINE_SCRIPT)",
            script.display()
        ));
    }
    let out = Command::new(python())
        .arg(&script)
        .arg(&clip.path)
        .args(["--um-per-px", &clip.um_per_px.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .map_err(|e| {
            format!(
                "cannot start {} ({e}): `make bench` installs the baseline's Python packages into .venv",
                python().display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "the baseline failed on {}: {}",
            clip.path,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the baseline printed no JSON report ({e})"))
}

/// capflow end to end (`-w 1`, one ONNX Runtime thread, every frame with flow and quality) against the baseline with
/// 1 and 2 threads, on each clip.
pub fn compare(dir: &Path, clips: &[&Clip]) -> anyhow::Result<serde_json::Value> {
    println!(
        "baseline — Python + OpenCV + onnxruntime, same model, frame by frame, on the same clips:"
    );
    let mut rows = Vec::new();
    for clip in clips {
        let name = format!(
            "baseline-{}",
            clip.label.split(' ').next().unwrap_or("clip")
        );
        let (capflow_fps, _) = e2e_with_config(dir, &name, clip, 1, "")
            .with_context(|| format!("capflow run on {}", clip.path))?;
        let mut row = serde_json::json!({ "clip": clip.label, "capflow_fps": capflow_fps });
        for threads in [1, 2] {
            match run_baseline(clip, threads) {
                Ok(report) => {
                    let fps = report["fps"].as_f64().unwrap_or(f64::NAN);
                    println!(
                        "  {:<20} baseline, {threads} thread(s) {fps:>8.1} frames/s; capflow run -w 1 {capflow_fps:>8.1} \
                         frames/s: ×{:.2} (baseline mean count {:.1}, area {:.4})",
                        clip.label,
                        capflow_fps / fps,
                        report["mean_count"].as_f64().unwrap_or(f64::NAN),
                        report["mean_area_fraction"].as_f64().unwrap_or(f64::NAN),
                    );
                    row[format!("baseline_{threads}_threads")] = report;
                    row[format!("ratio_to_baseline_{threads}_threads")] =
                        serde_json::json!(capflow_fps / fps);
                }
                Err(why) => {
                    println!("  {:<20} baseline skipped: {why}", clip.label);
                    row["skipped"] = serde_json::json!(why);
                    break;
                }
            }
        }
        rows.push(row);
    }
    Ok(serde_json::Value::Array(rows))
}
