//! `capflow bench`: end-to-end throughput next to its bounds (decode-only, inference-only), measured in one run.
//!
//! Numbers are reported, never asserted: they are ratios against baselines measured on the same machine in the same
//! invocation.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use capflow_ingest::{PixelFormat, Source, SourceOptions, StreamInfo};
use capflow_operators::metrics::{measure, MetricParams};
use capflow_operators::preprocess::preprocess;
use capflow_operators::{ort_environment, Segmenter};

use crate::model::{load_model, ort_library};
use crate::synth_cmd::SynthArgs;

/// Options of `capflow bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Frames in the generated 1920x1080 clip.
    #[arg(long, default_value_t = 100)]
    pub frames: u32,
    /// Working folder (clip and output).
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Worker threads for the end-to-end run.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Inference batch size.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// ONNX Runtime threads for the per-model speed table (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Overrides the learned model's largest working frame in the speed table (megapixels), to measure
    /// the resolution/speed trade-off.
    #[arg(long)]
    pub max_megapixels: Option<f64>,
}

/// Inference speed of one model on one kind of frame, all cores, measured after a warm-up.
#[derive(Clone, Debug, serde::Serialize)]
struct ModelSpeed {
    model: String,
    frame: &'static str,
    working_size: String,
    batch: usize,
    threads: usize,
    preprocess_ms: f64,
    inference_fps: f64,
}

/// Times `preprocess` and the model on `frame` for about `seconds` (at least 5 batches).
fn model_speed(
    env: &ort::environment::Environment,
    model: &capflow_operators::model::Model,
    frame: &capflow_ingest::Frame,
    label: &'static str,
    threads: usize,
    batch: usize,
    seconds: f64,
) -> anyhow::Result<ModelSpeed> {
    let mut segmenter = Segmenter::new(env, model, threads)?;
    let start = Instant::now();
    let input = preprocess(frame, &model.card.input);
    let preprocess_ms = start.elapsed().as_secs_f64() * 1e3;
    let refs = vec![&input; batch];
    segmenter.run(&refs)?; // warm-up
    let start = Instant::now();
    let mut rounds = 0u64;
    while rounds < 5 || start.elapsed().as_secs_f64() < seconds {
        std::hint::black_box(segmenter.run(&refs)?);
        rounds += 1;
    }
    Ok(ModelSpeed {
        model: model.card.name.clone(),
        frame: label,
        working_size: format!("{}x{}", input.valid_width, input.valid_height),
        batch,
        threads,
        preprocess_ms,
        inference_fps: fps(rounds * batch as u64, start.elapsed()),
    })
}

fn fps(frames: u64, elapsed: Duration) -> f64 {
    frames as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Peak resident memory of a child process, by polling `/proc/<pid>/status` (VmHWM) until it exits.
fn run_with_peak_rss(cmd: &mut Command) -> anyhow::Result<(std::process::ExitStatus, u64)> {
    let mut child = cmd.spawn().context("starting the end-to-end run")?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:")) {
                let kb = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak_kb = peak_kb.max(kb);
            }
        }
        if let Some(status) = child.try_wait()? {
            return Ok((status, peak_kb));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `capflow run` on `clip` (one stream of pixel size `um`) with `extra` config TOML; returns frames/s and peak
/// memory (MiB). The clip's frame count is `frames`.
fn e2e_with_config(
    dir: &std::path::Path,
    name: &str,
    clip: &str,
    um: f64,
    frames: u64,
    workers: usize,
    extra: &str,
) -> anyhow::Result<(f64, f64)> {
    let out_dir = dir.join(format!("output-{name}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    let config = dir.join(format!("{name}.toml"));
    // Sources in a config are relative to the config's folder: give the clip's absolute path.
    let clip = std::fs::canonicalize(clip)
        .with_context(|| format!("locating {clip}"))?
        .display()
        .to_string();
    std::fs::write(
        &config,
        format!(
            "[output]\nlocation = {:?}\n\n{extra}\n\n[[streams]]\nid = \"bench\"\npatient = \"bench\"\nsource = {clip:?}\num_per_px = {um}\n",
            out_dir.display().to_string()
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let exe = std::env::current_exe().context("locating the capflow binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .args(["-w", &workers.to_string()])
        .stdout(std::process::Stdio::null());
    let start = Instant::now();
    let (status, peak_kb) = run_with_peak_rss(&mut cmd)?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("the end-to-end run {name} failed ({status})");
    }
    Ok((fps(frames, elapsed), peak_kb as f64 / 1024.0))
}

/// Runs the benchmark and prints a report.
pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let synth = SynthArgs {
        preset: "skin".into(),
        out: args.out.clone(),
        name: "bench-1080p".into(),
        frames: Some(args.frames),
        seed: Some(2026),
        ..Default::default()
    };
    let start = Instant::now();
    let clip = synth.run()?.mp4.context("the generator wrote no MP4")?;
    let synth_time = start.elapsed();
    let clip_str = clip.display().to_string();

    // (1) decode only: GStreamer decode + conversion to RGB + packed copy, as the pipeline does it.
    capflow_ingest::init()?;
    let info = Arc::new(StreamInfo::new("bench", "bench", "forearm", 2.2));
    let options = SourceOptions {
        format: PixelFormat::Rgb8,
        ..Default::default()
    };
    let start = Instant::now();
    let mut source = Source::open(&clip_str, Arc::clone(&info), &options)?;
    let mut decoded = 0u64;
    let mut first = None;
    while let Some(frame) = source.next_frame()? {
        if first.is_none() {
            first = Some(frame);
        }
        decoded += 1;
    }
    let decode_time = start.elapsed();
    let Some(frame) = first else {
        bail!("the benchmark clip decoded to no frames")
    };

    // (2) inference only: the ONNX model on batches of preprocessed frames; and pre/post-processing alone.
    let model = load_model("builtin")?;
    let env = ort_environment(&ort_library(None)?)?;
    let mut segmenter = Segmenter::new(&env, &model, 1)?;
    let input = preprocess(&frame, &model.card.input);
    let batch = args.batch.max(1);
    let refs = vec![&input; batch];
    let rounds = (decoded as usize).div_ceil(batch);
    segmenter.run(&refs[..1])?; // warm-up
    let start = Instant::now();
    let mut probs = Vec::new();
    for _ in 0..rounds {
        probs = segmenter.run(&refs)?;
    }
    let infer_time = start.elapsed();
    let params = MetricParams {
        threshold: model.card.output.threshold,
        min_area_um2: model.card.postprocess.min_area_um2,
        max_area_um2: model.card.postprocess.max_area_um2,
    };
    let start = Instant::now();
    for _ in 0..decoded.min(50) {
        let i = preprocess(&frame, &model.card.input);
        std::hint::black_box(measure(&probs[0], i.width, i.height, i.um_per_px, &params));
    }
    let prepost_time = start.elapsed() / decoded.min(50) as u32;

    // (3) end to end: the capflow binary on the clip, as a user runs it.
    let out_dir = args.out.join("output");
    let _ = std::fs::remove_dir_all(&out_dir);
    let exe = std::env::current_exe().context("locating the capflow binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "run",
        "--input",
        &clip_str,
        "--patient",
        "bench",
        "--output",
    ])
    .arg(&out_dir)
    .args(["-w", &args.workers.to_string()])
    .stdout(std::process::Stdio::null());
    let start = Instant::now();
    let (status, peak_kb) = run_with_peak_rss(&mut cmd)?;
    let e2e_time = start.elapsed();
    if !status.success() {
        bail!("the end-to-end run failed ({status})");
    }

    let decode_fps = fps(decoded, decode_time);
    let infer_fps = fps((rounds * batch) as u64, infer_time);
    let e2e_fps = fps(decoded, e2e_time);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let speeds = model_table(&env, &frame, threads, args.max_megapixels)?;
    let bound = decode_fps.min(infer_fps);
    println!(
        "capflow bench — {} frames of 1920x1080 H.264 (generated in {:.1} s)",
        decoded,
        synth_time.as_secs_f64()
    );
    println!("  decode only (GStreamer → RGB frames)      {decode_fps:>8.1} frames/s");
    println!("  inference only (ONNX, batch {batch})           {infer_fps:>8.1} frames/s");
    println!(
        "  pre+post-processing per frame              {:>8.1} ms",
        prepost_time.as_secs_f64() * 1e3
    );
    println!(
        "  end to end (capflow run -w {})             {e2e_fps:>8.1} frames/s  (incl. start-up)",
        args.workers
    );
    println!(
        "  end to end ÷ min(decode, inference)       {:>8.2}",
        e2e_fps / bound
    );
    println!(
        "  end to end vs the replaced system (0.84 s/frame) {:>5.1}×",
        e2e_fps * 0.84
    );
    println!(
        "  peak memory of the end-to-end run          {:>8.1} MiB",
        peak_kb as f64 / 1024.0
    );
    let json = serde_json::json!({
        "frames": decoded, "width": 1920, "height": 1080,
        "decode_fps": decode_fps, "inference_fps": infer_fps, "batch": batch,
        "prepost_ms": prepost_time.as_secs_f64() * 1e3,
        "end_to_end_fps": e2e_fps, "workers": args.workers,
        "ratio_end_to_end_to_bound": e2e_fps / bound,
        "peak_rss_mib": peak_kb as f64 / 1024.0,
        "models": speeds,
    });
    println!(
        "  model inference alone ({threads} threads; frames resized to each model's working size):"
    );
    println!(
        "    {:<24} {:<26} {:>10} {:>5} {:>9} {:>10}",
        "model", "frame", "working", "batch", "prep ms", "frames/s"
    );
    for s in &speeds {
        println!(
            "    {:<24} {:<26} {:>10} {:>5} {:>9.1} {:>10.1}",
            s.model, s.frame, s.working_size, s.batch, s.preprocess_ms, s.inference_fps
        );
    }
    if let (Some(learned), Some(old)) = (
        speeds
            .iter()
            .find(|s| s.model == "capillary-seg-v1" && s.batch == 1),
        speeds
            .iter()
            .find(|s| s.model == "capillary-classical-v1" && s.batch == 1),
    ) {
        println!(
            "    learned ÷ classical on 1080p skin: {:.2}; learned vs the replaced system (0.84 s/frame): {:.0}×",
            learned.inference_fps / old.inference_fps,
            learned.inference_fps * 0.84
        );
    }
    // (4) what the clinical metrics cost: the same clips with flow analysis off, and at lower segmentation rates.
    let sublingual = SynthArgs {
        preset: "sublingual".into(),
        out: args.out.clone(),
        name: "bench-sublingual".into(),
        frames: Some(150),
        seed: Some(2027),
        ..Default::default()
    }
    .run()?
    .mp4
    .context("the generator wrote no MP4")?
    .display()
    .to_string();
    let variants: [(&str, &str); 4] = [
        ("flow off", "[flow]\nenabled = false"),
        ("every frame + flow (default)", ""),
        (
            "every 5th frame + flow",
            "[segmentation]\nmode = \"every_nth\"\nn = 5",
        ),
        (
            "mean of 5 frames + flow",
            "[segmentation]\nmode = \"block_mean\"\nn = 5",
        ),
    ];
    let mut clinical = Vec::new();
    println!(
        "  clinical metrics cost, end to end (capflow run -w {}; ratio to flow off, same clip):",
        args.workers
    );
    for (clip, label, um, frames) in [
        (&clip_str, "skin 1920x1080", 2.2, decoded),
        (&sublingual, "sublingual 640x480", 1.5, 150),
    ] {
        let mut base = None;
        for (i, (variant, extra)) in variants.iter().enumerate() {
            let (v_fps, peak) = e2e_with_config(
                &args.out,
                &format!("clinical-{i}-{}", label.split(' ').next().unwrap_or("clip")),
                clip,
                um,
                frames,
                args.workers,
                extra,
            )?;
            let base_fps = *base.get_or_insert(v_fps);
            println!(
                "    {label:<20} {variant:<30} {v_fps:>8.1} frames/s  ×{:.2}  peak {peak:.0} MiB",
                v_fps / base_fps
            );
            clinical.push(serde_json::json!({
                "clip": label, "variant": variant, "fps": v_fps, "ratio_to_flow_off": v_fps / base_fps,
                "peak_rss_mib": peak,
            }));
        }
    }
    let mut json = json;
    json["clinical"] = serde_json::Value::Array(clinical);
    let report = args.out.join("bench.json");
    std::fs::write(&report, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", report.display()))?;
    println!("  (also in {})", report.display());
    Ok(())
}

/// Per-model inference speed on a 1920x1080 skin frame and a 640x480 sublingual frame, every built-in
/// model in the same run (so the learned model is compared with the classical one on this machine).
fn model_table(
    env: &ort::environment::Environment,
    skin: &capflow_ingest::Frame,
    threads: usize,
    max_megapixels: Option<f64>,
) -> anyhow::Result<Vec<ModelSpeed>> {
    let spec = capflow_synth::SynthSpec::preset("sublingual").context("sublingual preset")?;
    let still = capflow_synth::render_still(&spec)?;
    let sublingual = capflow_ingest::Frame {
        stream: Arc::new(StreamInfo::new(
            "bench-sl",
            "bench",
            "sublingual",
            spec.um_per_px,
        )),
        index: 0,
        pts_ns: 0,
        width: spec.width,
        height: spec.height,
        format: PixelFormat::Rgb8,
        data: still.rgb,
    };
    let mut rows = Vec::new();
    for builtin in crate::model::BUILTIN_MODELS {
        let mut model = load_model(builtin.name)?;
        if let (Some(mp), Some(_)) = (max_megapixels, model.card.input.max_megapixels) {
            model.card.input.max_megapixels = Some(mp);
        }
        for (frame, label) in [
            (skin, "skin 1920x1080 @2.2um"),
            (&sublingual, "sublingual 640x480 @1.5um"),
        ] {
            for batch in [1, 4] {
                rows.push(model_speed(env, &model, frame, label, threads, batch, 3.0)?);
            }
        }
    }
    Ok(rows)
}
