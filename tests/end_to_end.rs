//! End-to-end: generated clips with known ground truth → the `capflow` binary → Parquet, read back with the Rust
//! reader and independently with DuckDB/pyarrow; bad inputs; worker-count invariance; image-folder input.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/cli.rs"]
mod cli;
use cli::{capflow, duckdb_view, python, text, CAPFLOW};

/// Renders a clip with `capflow synth` and returns (mp4 path, clip folder with truth).
fn synth(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let mut args = vec!["synth", "--out", dir.to_str().unwrap(), "--name", name];
    args.extend_from_slice(extra);
    let out = capflow(&args);
    assert!(out.status.success(), "synth failed: {}", text(&out));
    (dir.join(format!("{name}.mp4")), dir.join(name))
}

/// Ground truth per frame: (capillary_count, area_fraction), from the generator's CSV.
fn truth(clip_dir: &Path) -> Vec<(u32, f64)> {
    let csv = std::fs::read_to_string(clip_dir.join("truth_frames.csv")).expect("truth_frames.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let (c, a) = (col("capillary_count"), col("area_fraction"));
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[c].parse().unwrap(), f[a].parse().unwrap())
        })
        .collect()
}

fn write_config(dir: &Path, output: &Path, streams: &[(&str, &str, &Path, f64)]) -> PathBuf {
    let mut toml = format!(
        "[output]\nlocation = {:?}\nframes_per_part = 8\n\n[windows]\nlength_s = 1.0\n\n",
        output.display().to_string()
    );
    for (id, patient, source, um) in streams {
        toml += &format!(
            "[[streams]]\nid = {id:?}\npatient = {patient:?}\nsite = \"site\"\nsource = {:?}\num_per_px = {um}\nrecorded_at = \"2026-03-01T08:00:00Z\"\n\n",
            source.display().to_string()
        );
    }
    let path = dir.join("capflow.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn read_back(
    root: &Path,
) -> (
    Vec<capflow_operators::records::FrameMetrics>,
    Vec<capflow_operators::records::PatientWindow>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let output = capflow_sinks::open_output(root.to_str().unwrap(), &Default::default()).unwrap();
    let frames = capflow_sinks::read_frames(&output, runtime.handle()).unwrap();
    let patients = capflow_sinks::read_patients(&output, runtime.handle()).unwrap();
    let sites = capflow_sinks::read_sites(&output, runtime.handle()).unwrap();
    // Every patient window is built from its site windows.
    for p in &patients {
        let n = sites
            .iter()
            .filter(|s| s.patient_id == p.patient_id && s.window_start_ms == p.window_start_ms)
            .count();
        assert_eq!(n as u32, p.n_sites, "{p:?}");
    }
    (frames, patients)
}

#[test]
fn generated_clips_are_measured_within_tolerance_of_ground_truth_and_read_back_independently() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Skin at the detector's design scale, half HD to keep the test quick; 2 s at 10 fps → two 1 s windows.
    let (skin, skin_truth) = synth(
        d,
        "skin",
        &[
            "--preset", "skin", "--width", "960", "--height", "540", "--frames", "20", "--fps",
            "10", "--seed", "11",
        ],
    );
    let (sub, _) = synth(
        d,
        "sub",
        &[
            "--preset",
            "sublingual",
            "--frames",
            "15",
            "--fps",
            "10",
            "--seed",
            "12",
        ],
    );
    let out = d.join("out");
    let config = write_config(
        d,
        &out,
        &[
            ("skin-a", "patient-a", &skin, 2.2),
            ("sub-b", "patient-b", &sub, 1.5),
        ],
    );
    let run = capflow(&["run", "--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("patient-a"), "summary lists patients");

    let (frames, windows) = read_back(&out);
    let by_stream = |id: &str| {
        frames
            .iter()
            .filter(|f| f.stream_id == id)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_stream("skin-a").len(), 20);
    assert_eq!(by_stream("sub-b").len(), 15);
    assert!(out.join("frames/patient_id=patient-a").is_dir());
    assert!(out.join("patients/patient_id=patient-b").is_dir());
    assert!(out.join("sites/patient_id=patient-b").is_dir());
    // 20 frames at 10 fps starting on a whole second: windows [0 s, 1 s) and [1 s, 2 s) per patient.
    let per_patient = |p: &str| {
        windows
            .iter()
            .filter(|w| w.patient_id == p)
            .collect::<Vec<_>>()
    };
    assert_eq!(per_patient("patient-a").len(), 2);
    assert_eq!(per_patient("patient-b").len(), 2);
    assert_eq!(
        per_patient("patient-a")
            .iter()
            .map(|w| w.n_frames)
            .sum::<u64>(),
        20
    );
    assert!(windows
        .iter()
        .all(|w| w.n_sites == 1 && w.window_end_ms - w.window_start_ms == 1000));

    // Per-frame accuracy against the generator's ground truth (tolerances: what a usable detector must reach).
    let gt = truth(&skin_truth);
    let skin_rows = by_stream("skin-a");
    let n = gt.len() as f64;
    let count_mae = skin_rows
        .iter()
        .zip(&gt)
        .map(|(r, t)| (r.capillary_count as f64 - t.0 as f64).abs())
        .sum::<f64>()
        / n;
    let mean_count = gt.iter().map(|t| t.0 as f64).sum::<f64>() / n;
    let area_mae = skin_rows
        .iter()
        .zip(&gt)
        .map(|(r, t)| (r.area_fraction - t.1).abs())
        .sum::<f64>()
        / n;
    let mean_area = gt.iter().map(|t| t.1).sum::<f64>() / n;
    eprintln!("skin: count MAE {count_mae:.2} (truth mean {mean_count:.1}), area MAE {area_mae:.4} (truth mean {mean_area:.4})");
    assert!(mean_count >= 5.0, "the clip has capillaries to find");
    assert!(
        count_mae <= 0.2 * mean_count,
        "count MAE {count_mae:.2} vs truth mean {mean_count:.1}"
    );
    assert!(
        area_mae <= 0.25 * mean_area,
        "area-fraction MAE {area_mae:.4} vs truth mean {mean_area:.4}"
    );

    // The same tables through DuckDB and pyarrow.
    let view = duckdb_view(&out);
    assert_eq!(view["frames_per_patient"]["patient-a"], 20);
    assert_eq!(view["frames_per_patient"]["patient-b"], 15);
    assert_eq!(view["patients_per_patient"]["patient-a"], 2);
    assert_eq!(view["sites_per_patient"]["patient-a"], 2);
    let duck_frames = view["frames"].as_array().unwrap();
    assert_eq!(duck_frames.len(), frames.len());
    for (duck, rust) in duck_frames
        .iter()
        .zip(frames.iter().filter(|f| f.stream_id == "skin-a"))
    {
        assert_eq!(duck["capillary_count"], rust.capillary_count);
        assert_eq!(duck["event_ms"], rust.event_time_ms);
    }
    for meta in view["file_metadata"].as_array().unwrap() {
        assert_eq!(
            meta["capflow.schema_version"],
            capflow_sinks::SCHEMA_VERSION.to_string(),
            "{meta}"
        );
    }
}

/// Every file under `root`, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                files.push(e);
            }
        }
    }
    files.sort();
    files
}

fn sorted_tables(root: &Path) -> (Vec<String>, Vec<String>, Vec<PathBuf>) {
    let (frames, windows) = read_back(root);
    let files = files_under(root)
        .into_iter()
        .map(|f| f.strip_prefix(root).unwrap().to_path_buf())
        .collect();
    (
        frames.iter().map(|f| format!("{f:?}")).collect(),
        windows.iter().map(|w| format!("{w:?}")).collect(),
        files,
    )
}

/// Three small generated skin clips (12 frames at 10 fps, seeds 1-3) named a, b and c.
fn three_small_clips(d: &Path) -> [PathBuf; 3] {
    let small = [
        "--preset", "skin", "--width", "320", "--height", "240", "--frames", "12", "--fps", "10",
    ];
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            synth(
                d,
                name,
                &[&small[..], &["--seed", &(i + 1).to_string()]].concat(),
            )
            .0
        })
        .collect::<Vec<_>>()
        .try_into()
        .unwrap()
}

#[test]
fn two_workers_write_the_same_rows_and_files_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [a, b, c] = three_small_clips(d);
    let mut results = Vec::new();
    for workers in ["1", "2", "3"] {
        let out = d.join(format!("out-w{workers}"));
        let config = write_config(
            d,
            &out,
            &[
                ("a", "p1", &a, 2.2),
                ("b", "p1", &b, 2.2),
                ("c", "p2", &c, 2.2),
            ],
        );
        let run = capflow(&["run", "--config", config.to_str().unwrap(), "-w", workers]);
        assert!(run.status.success(), "{}", text(&run));
        results.push(sorted_tables(&out));
    }
    assert_eq!(results[0].0.len(), 36);
    assert!(
        results[0].1.iter().any(|w| w.contains("n_sites: 2")),
        "p1's two sites meet in one window"
    );
    assert_eq!(results[0], results[1], "-w 2 differs from -w 1");
    assert_eq!(results[0], results[2], "-w 3 differs from -w 1");
}

#[test]
fn a_grayscale_camera_is_decoded_to_luma_and_measures_as_its_rgb_decode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (clip, _) = synth(
        d,
        "sub",
        &[
            "--preset",
            "sublingual",
            "--width",
            "320",
            "--height",
            "240",
            "--frames",
            "6",
            "--seed",
            "31",
        ],
    );
    let clip = clip.to_str().unwrap();
    let mut tables = Vec::new();
    for gray in [false, true] {
        let out = d.join(if gray { "gray" } else { "rgb" });
        let mut args = vec![
            "run",
            "--input",
            clip,
            "--um-per-px",
            "1.5",
            "--patient",
            "p",
            "--output",
        ];
        args.push(out.to_str().unwrap());
        if gray {
            args.push("--grayscale");
        }
        let run = cli::capflow_env(&args, &[("CAPFLOW_LOG", "capflow=info")]);
        let said = text(&run);
        assert!(run.status.success(), "{said}");
        let pixels = if gray { "GRAY8" } else { "RGB" };
        assert!(
            said.lines()
                .any(|l| l.contains("stream opened") && l.contains(&format!("\"{pixels}\""))),
            "the stream is decoded to {pixels}: {said}"
        );
        tables.push(read_back(&out).0);
    }
    let (rgb, gray) = (&tables[0], &tables[1]);
    assert_eq!(rgb.len(), 6);
    assert_eq!(gray.len(), 6);
    // The clip is grey, so its RGB decode has R = G = B and the luma plane, stretched from the video's 16–235 to
    // 0–255, carries the same picture: the same vessels. The stretch restores the rendered levels (BT.601, as the
    // encoder wrote them); GStreamer's RGB conversion of the same video reads up to ~3 levels darker in the mid-greys.
    for (a, b) in rgb.iter().zip(gray) {
        assert!(a.capillary_count > 0, "the clip shows vessels");
        assert!(
            a.capillary_count.abs_diff(b.capillary_count) <= 1,
            "frame {}: {} vs {} capillaries",
            a.frame_index,
            a.capillary_count,
            b.capillary_count
        );
        assert!(
            (a.tvd_mm_per_mm2 - b.tvd_mm_per_mm2).abs() <= 0.03 * a.tvd_mm_per_mm2,
            "frame {}: TVD {} vs {}",
            a.frame_index,
            a.tvd_mm_per_mm2,
            b.tvd_mm_per_mm2
        );
        assert!(
            (a.mean_luma - b.mean_luma).abs() <= 4.0,
            "frame {}: luma {} vs {}",
            a.frame_index,
            a.mean_luma,
            b.mean_luma
        );
    }
}

#[test]
fn a_panicking_worker_fails_the_run_instead_of_hanging_and_resume_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [a, b, c] = three_small_clips(d);
    let streams = [
        ("a", "p1", a.as_path(), 2.2),
        ("b", "p1", b.as_path(), 2.2),
        ("c", "p2", c.as_path(), 2.2),
    ];
    let clean = d.join("clean");
    let config = write_config(d, &clean, &streams);
    let run = capflow(&["run", "--config", config.to_str().unwrap(), "-w", "2"]);
    assert!(run.status.success(), "{}", text(&run));

    let out = d.join("out");
    let config = write_config(d, &out, &streams);
    let mut child = Command::new(CAPFLOW)
        .args(["run", "--config", config.to_str().unwrap(), "-w", "2"])
        .env("CAPFLOW_FAILPOINT", "panic-worker:1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a run whose worker panicked hung instead of failing");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let failed = child.wait_with_output().unwrap();
    let said = text(&failed);
    assert!(!failed.status.success(), "{said}");
    assert!(
        said.contains("a worker failed (worker 1: CAPFLOW_FAILPOINT=panic-worker:1)")
            && said.contains("--resume"),
        "{said}"
    );
    let run = capflow(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "-w",
        "2",
        "--resume",
    ]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(
        sorted_tables(&out),
        sorted_tables(&clean),
        "the resumed run equals a clean one"
    );
}

#[test]
fn a_folder_of_png_frames_runs_without_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth(
        d,
        "seq",
        &[
            "--preset", "skin", "--width", "320", "--height", "240", "--frames", "6", "--png",
            "--no-mp4",
        ],
    );
    let out = d.join("out");
    let run = capflow(&[
        "run",
        "--input",
        d.join("seq/frames").to_str().unwrap(),
        "--patient",
        "P7",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let (frames, windows) = read_back(&out);
    assert_eq!(frames.len(), 6);
    assert!(frames.iter().all(|f| f.patient_id == "P7"));
    // 6 frames at the default 25 fps for sequences: one 10 s window.
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].n_frames, 6);
}

#[test]
fn bad_inputs_fail_clearly_and_the_good_stream_still_lands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (good, _) = synth(
        d,
        "good",
        &[
            "--preset", "skin", "--width", "320", "--height", "240", "--frames", "8", "--fps", "10",
        ],
    );
    let not_video = d.join("notes.mp4");
    std::fs::write(&not_video, "not a video\n".repeat(100)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = d.join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let missing = d.join("missing.mp4");
    let out = d.join("out");
    let config = write_config(
        d,
        &out,
        &[
            ("good", "p1", &good, 2.2),
            ("missing", "p2", &missing, 2.2),
            ("notvideo", "p3", &not_video, 2.2),
            ("cut", "p4", &truncated, 2.2),
        ],
    );
    let run = capflow(&["run", "--config", config.to_str().unwrap(), "-w", "2"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let t = text(&run);
    for name in ["missing.mp4", "notes.mp4", "truncated.mp4"] {
        assert!(t.contains(name), "the error names {name}: {t}");
    }
    let (frames, _) = read_back(&out);
    assert_eq!(
        frames.iter().filter(|f| f.stream_id == "good").count(),
        8,
        "the good stream is complete"
    );

    // A missing model, an invalid config, and a model whose input does not match its card.
    let run = capflow(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--model",
        "/nonexistent/model.toml",
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run).contains("/nonexistent/model.toml"),
        "{}",
        text(&run)
    );

    let bad_config = d.join("bad.toml");
    std::fs::write(
        &bad_config,
        "[windows]\nlength_s = 0\n[[streams]]\nid = \"x\"\npatient = \"\"\nsource = \"a.mp4\"\n",
    )
    .unwrap();
    let run = capflow(&["run", "--config", bad_config.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let t = text(&run);
    assert!(
        t.contains("windows.length_s") && t.contains("streams[0].patient"),
        "{t}"
    );

    let wrong = wrong_shape_model(d);
    let run = capflow(&[
        "run",
        "--input",
        good.to_str().unwrap(),
        "--patient",
        "p",
        "--output",
        d.join("o2").to_str().unwrap(),
        "--model",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(text(&run).contains("[N, 1, H, W]"), "{}", text(&run));
}

/// A model card whose ONNX graph takes 3 channels where its card lists 1 (built with Python's onnx).
fn wrong_shape_model(dir: &Path) -> PathBuf {
    let py = python().expect("Python with onnx is installed by `make setup`");
    let onnx = dir.join("wrong.onnx");
    let script = format!(
        "import onnx\nfrom onnx import helper, TensorProto as T\n\
         x = helper.make_tensor_value_info('image', T.FLOAT, ['N', 3, 'H', 'W'])\n\
         y = helper.make_tensor_value_info('prob', T.FLOAT, ['N', 3, 'H', 'W'])\n\
         g = helper.make_graph([helper.make_node('Identity', ['image'], ['prob'])], 'g', [x], [y])\n\
         m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]); m.ir_version = 8\n\
         onnx.save(m, {:?})\n",
        onnx.display().to_string()
    );
    let status = Command::new(py).args(["-c", &script]).status().unwrap();
    assert!(status.success());
    let card = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/capillary-classical-v1.toml"),
    )
    .unwrap()
    .replace("capillary-classical-v1.onnx", "wrong.onnx");
    let path = dir.join("wrong.toml");
    std::fs::write(&path, card).unwrap();
    path
}

/// All files under `root` with their bytes, sorted: what a refused run must leave as it was.
fn file_contents(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(root)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect()
}

#[test]
fn a_model_changed_under_the_same_card_path_is_another_job() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (clip, _) = synth(
        d,
        "clip",
        &["--frames", "8", "--width", "320", "--height", "240"],
    );
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    std::fs::copy(
        models.join("capillary-classical-v1.onnx"),
        d.join("capillary-classical-v1.onnx"),
    )
    .unwrap();
    let card_text = std::fs::read_to_string(models.join("capillary-classical-v1.toml")).unwrap();
    let card = d.join("card.toml");
    std::fs::write(&card, &card_text).unwrap();
    let root = d.join("out");
    let config = write_config(d, &root, &[("s", "p", &clip, 2.2)]);
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml += &format!("[model]\ncard = {:?}\n", card.display().to_string());
    std::fs::write(&config, toml).unwrap();
    let run = || capflow(&["run", "--config", config.to_str().unwrap()]);

    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    let written = file_contents(&root);
    let out = run();
    assert!(
        out.status.success() && text(&out).contains("already held"),
        "the same job re-runs: {}",
        text(&out)
    );
    assert_eq!(file_contents(&root), written, "a re-run changed the output");

    // The same config, but the card's threshold edited in place: results would differ, so the output refuses it.
    let edited = card_text.replacen("threshold = 0.5", "threshold = 0.6", 1);
    assert_ne!(edited, card_text, "the card has a threshold to edit");
    std::fs::write(&card, edited).unwrap();
    let out = run();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("settings and model fingerprint")
            && text(&out).contains("new output location"),
        "{}",
        text(&out)
    );
    assert_eq!(
        file_contents(&root),
        written,
        "a refused run changed the output"
    );
}

#[path = "support/s3_server.rs"]
mod s3_server;

#[test]
fn output_to_s3_lands_on_a_real_s3_server_and_reads_back() {
    let Some(server) = s3_server::start_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (clip, _) = synth(
        d,
        "clip",
        &[
            "--preset", "skin", "--width", "320", "--height", "240", "--frames", "10", "--fps",
            "10",
        ],
    );
    let config = d.join("s3.toml");
    std::fs::write(
        &config,
        format!(
            "[output]\nlocation = \"s3://{bucket}/study-1\"\n[output.s3]\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\n\
             access_key_id = {key:?}\nsecret_access_key = {secret:?}\nallow_http = true\n\n\
             [[streams]]\nid = \"s3clip\"\npatient = \"p-s3\"\nsource = {clip:?}\n",
            bucket = s3_server::BUCKET,
            endpoint = server.endpoint(),
            key = s3_server::ACCESS_KEY,
            secret = s3_server::SECRET_KEY,
            clip = clip.display().to_string(),
        ),
    )
    .unwrap();
    let run = capflow(&["run", "--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    // The server keeps objects as plain files: read them with DuckDB/pyarrow straight from its disk.
    let on_disk = server.on_disk("study-1");
    assert!(
        on_disk.join("frames/patient_id=p-s3").is_dir(),
        "objects under {}",
        on_disk.display()
    );
    let view = duckdb_view(&on_disk);
    assert_eq!(view["frames_per_patient"]["p-s3"], 10);
    assert_eq!(view["patients_per_patient"]["p-s3"], 1);
}

/// Free loopback addresses, one per process.
fn loopback_hosts(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// Runs `capflow run` as processes 0..n at the same time (a cluster must start together) and waits for all.
fn run_cluster(n: usize, extra: &[&str]) {
    let procs: Vec<_> = (0..n)
        .map(|p| {
            Command::new(CAPFLOW)
                .args(["run", "-p", &p.to_string()])
                .args(extra)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (p, child) in procs.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "process {p}: {}", text(&out));
    }
}

#[test]
fn two_and_three_processes_on_loopback_write_the_same_rows_and_files_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let small = [
        "--preset", "skin", "--width", "320", "--height", "240", "--frames", "10", "--fps", "10",
    ];
    let (a, _) = synth(d, "a", &[&small[..], &["--seed", "4"]].concat());
    let (b, _) = synth(d, "b", &[&small[..], &["--seed", "5"]].concat());
    let (c, _) = synth(d, "c", &[&small[..], &["--seed", "6"]].concat());
    let streams = |out: &Path| {
        write_config(
            d,
            out,
            &[
                ("a", "p1", &a, 2.2),
                ("b", "p1", &b, 2.2),
                ("c", "p2", &c, 2.2),
            ],
        )
    };

    let single = d.join("single");
    let run = capflow(&["run", "--config", streams(&single).to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    let expected = sorted_tables(&single);

    // Two processes from a hostfile on the command line.
    let two = d.join("two");
    let config = streams(&two);
    let hostfile = d.join("hosts.txt");
    std::fs::write(&hostfile, loopback_hosts(2).join("\n")).unwrap();
    run_cluster(
        2,
        &[
            "--config",
            config.to_str().unwrap(),
            "-n",
            "2",
            "-h",
            hostfile.to_str().unwrap(),
        ],
    );
    assert_eq!(sorted_tables(&two), expected);

    // Three processes from the config's [cluster] table, with two workers each.
    let three = d.join("three");
    let config = streams(&three);
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml += &format!(
        "[cluster]\nprocesses = 3\nworkers = 2\nhosts = {:?}\n",
        loopback_hosts(3)
    );
    std::fs::write(&config, toml).unwrap();
    run_cluster(3, &["--config", config.to_str().unwrap()]);
    assert_eq!(sorted_tables(&three), expected);
}

/// `capflow run` as process 1 of a 2-process cluster described by `hostfile`.
fn second_of_two(config: &Path, hostfile: &Path) -> Command {
    let mut cmd = Command::new(CAPFLOW);
    cmd.args(["run", "--config"])
        .arg(config)
        .args(["-n", "2", "-p", "1", "-h"])
        .arg(hostfile);
    cmd
}

#[test]
fn a_process_given_a_wrong_peer_address_fails_fast_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, _) = synth(
        d,
        "a",
        &[
            "--preset", "skin", "--width", "160", "--height", "120", "--frames", "3",
        ],
    );
    let out_dir = d.join("out");
    let config = write_config(d, &out_dir, &[("a", "p1", &a, 2.2)]);
    // Process 1's peer, process 0, is said to be at a port nobody listens on.
    let hosts = loopback_hosts(2);
    let hostfile = d.join("hosts.txt");
    std::fs::write(&hostfile, hosts.join("\n")).unwrap();
    let started = std::time::Instant::now();
    let mut child = second_of_two(&config, &hostfile)
        .args(["--peer-timeout", "3s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the process must end by itself well after its 3 s timeout; a hang is killed and fails the test.
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(90) {
            child.kill().unwrap();
            panic!("capflow kept waiting for an unreachable peer");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        said.contains(&format!("connects to process 0 at {}", hosts[0]))
            && said.contains("could not form the cluster within 3 s"),
        "{said}"
    );
    assert!(
        !out_dir.exists(),
        "a process that never joined wrote to its output"
    );

    // An own address that is not this machine's is named at once.
    std::fs::write(&hostfile, format!("{}\n192.0.2.7:2102\n", hosts[0])).unwrap();
    let out = second_of_two(&config, &hostfile).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot listen at its own address 192.0.2.7:2102"),
        "{}",
        text(&out)
    );
}

#[test]
fn readme_query_examples_run_against_a_real_runs_output() {
    // The bundled demo into `<tmp>/capflow-out`, the path the README's examples use.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("capflow-out");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(CAPFLOW)
        .args(["run", "--output", out_dir.to_str().unwrap()])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let py = python()
        .expect("the Python readers are installed by `make setup` (.venv) or CAPFLOW_PYTHON");
    let out = Command::new(py)
        .arg(repo.join("tests/readme_examples.py"))
        .arg(repo.join("README.md"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        !out.stdout.is_empty(),
        "readme_examples.py printed nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let count = |kind: &str| results.iter().filter(|r| r["kind"] == kind).count();
    assert!(count("sql") >= 6 && count("python") >= 2, "{results:?}");
    for r in &results {
        assert!(r.get("error").is_none(), "README example fails: {r}");
        assert!(
            r["rows"].as_u64().unwrap() > 0,
            "README example finds nothing in the demo's output: {r}"
        );
    }
}

#[test]
fn readme_documents_every_output_column() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    for table in capflow_sinks::Table::ALL {
        for (name, ty, _) in capflow_sinks::schema::columns(table) {
            let row = format!("| `{name}` | {ty} |");
            assert!(
                readme.contains(&row),
                "README lacks the {table} column row {row}"
            );
        }
    }
}

#[test]
fn model_inspect_prints_the_card_and_the_tensors_and_names_a_broken_model() {
    let out = capflow(&["model", "inspect", "builtin"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for expected in [
        "model   capillary-seg-v1",
        "input   image: float32 [-1, 2, -1, -1]",
        "output  prob: float32 [-1, 1, -1, -1]",
        "channels [green, redness]",
        "[metrics.heldout_synthetic.skin]",
        "limit   ",
    ] {
        assert!(
            said.contains(expected),
            "{expected:?} missing from:\n{said}"
        );
    }
    let out = capflow(&["model", "inspect", "classical"]);
    assert!(
        text(&out).contains("capillary-classical-v1"),
        "{}",
        text(&out)
    );

    // A model whose file breaks its card's contract fails here as a run would, naming the card and the shape.
    let dir = tempfile::tempdir().unwrap();
    let wrong = wrong_shape_model(dir.path());
    let out = capflow(&["model", "inspect", wrong.to_str().unwrap()]);
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("wrong.toml") && said.contains("[N, 1, H, W]"),
        "{said}"
    );
    let out = capflow(&["model", "inspect", "/nonexistent/card.toml"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent/card.toml"));
}
