//! Hostile inputs, generated at test time: an empty file, random bytes named `.mp4`, 1×1 frames, a 16000×16000 frame
//! (PNG in AVI, a few kB on disk), a folder of PNGs of mixed sizes, and a model whose output is NaN. Each bad stream
//! must fail on its own with an error that says what is wrong, in the run's summary and in `stream_events`, while a
//! good stream in the same run is analysed in full; nothing may panic or hang (every run has a deadline).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/cli.rs"]
mod cli;
use cli::{capflow, duckdb_view, python, text, CAPFLOW};

/// Runs `capflow args`, killing it after `limit`: a hang fails the test instead of blocking CI.
fn capflow_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(CAPFLOW)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capflow starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for capflow") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "capflow {} hung: still running after {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    eprintln!(
        "$ capflow {} ({:.1} s)\n{}",
        args.join(" "),
        start.elapsed().as_secs_f64(),
        text(&out)
    );
    out
}

/// Writes an 8-bit PNG of `width × height` (gray or RGB) with a simple pattern.
fn write_png(path: &Path, width: u32, height: u32, rgb: bool) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, width, height);
    let channels = if rgb { 3 } else { 1 };
    encoder.set_color(if rgb {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    encoder.set_depth(png::BitDepth::Eight);
    let pixels: Vec<u8> = (0..width as usize * height as usize * channels)
        .map(|i| 120 + (i % 7) as u8 * 10)
        .collect();
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&pixels)
        .unwrap();
}

/// A 1-bit PNG of `side × side` black pixels: 16000×16000 is 32 MB of rows that deflate to a few kB.
fn write_huge_png(path: &Path, side: u32) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    let mut writer = encoder.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let row = vec![0u8; side.div_ceil(8) as usize];
    for _ in 0..side {
        std::io::Write::write_all(&mut stream, &row).unwrap();
    }
    stream.finish().unwrap();
}

/// Muxes the PNG images `pattern` (an ffmpeg image pattern) into an AVI as they are (no re-encoding), with ffmpeg,
/// the independent encoder `make setup` installs for tests.
fn png_avi(pattern: &Path, avi: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "5", "-i"])
        .arg(pattern)
        .args(["-c:v", "copy"])
        .arg(avi)
        .output()
        .expect("ffmpeg runs (make setup installs it)");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every hostile input in `dir`, as (stream id, source, what its error must mention).
fn hostile_inputs(dir: &Path) -> Vec<(&'static str, PathBuf, Vec<String>)> {
    let zero = dir.join("zero.mp4");
    std::fs::write(&zero, b"").unwrap();

    let random = dir.join("random.mp4");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(&random, noise).unwrap();

    // 1×1 frames in a video container (PNG in AVI).
    let tiny_frames = dir.join("tiny-frames");
    std::fs::create_dir(&tiny_frames).unwrap();
    for i in 0..5 {
        write_png(&tiny_frames.join(format!("{i:06}.png")), 1, 1, true);
    }
    let tiny = dir.join("tiny.avi");
    png_avi(&tiny_frames.join("%06d.png"), &tiny);

    // One 16000×16000 frame: a 1-bit PNG muxed into AVI as it is, a few kB on disk.
    let huge_png = dir.join("huge.png");
    write_huge_png(&huge_png, 16_000);
    let huge = dir.join("huge.avi");
    png_avi(&huge_png, &huge);
    assert!(std::fs::metadata(&huge).unwrap().len() < 1 << 20);

    // The same frame as an image sequence: caught from the PNG header, before decoding.
    let huge_folder = dir.join("huge-frames");
    std::fs::create_dir(&huge_folder).unwrap();
    std::fs::rename(&huge_png, huge_folder.join("000000.png")).unwrap();

    // Frames of mixed sizes; the last one is below the smallest accepted size.
    let mixed = dir.join("mixed-frames");
    std::fs::create_dir(&mixed).unwrap();
    for (i, (w, h)) in [(96, 64), (128, 96), (96, 64), (8, 8)]
        .into_iter()
        .enumerate()
    {
        write_png(&mixed.join(format!("{i:06}.png")), w, h, true);
    }

    let path = |p: &Path| p.display().to_string();
    vec![
        ("zero-bytes", zero.clone(), vec![path(&zero)]),
        ("random-bytes", random.clone(), vec![path(&random)]),
        (
            "one-pixel",
            tiny.clone(),
            vec![path(&tiny), "1x1".into(), "limits.min_width = 16".into()],
        ),
        (
            "huge-avi",
            huge.clone(),
            vec![
                path(&huge),
                "16000x16000".into(),
                "limits.max_width = 8192".into(),
                "raise".into(),
            ],
        ),
        (
            "huge-png",
            huge_folder.clone(),
            vec![
                path(&huge_folder),
                "16000x16000".into(),
                "limits.max_width".into(),
            ],
        ),
        (
            "mixed-sizes",
            mixed.clone(),
            vec![path(&mixed), "8x8".into(), "limits.min_width".into()],
        ),
    ]
}

/// A small good clip made by `capflow synth`: (mp4 path, frames).
fn good_clip(dir: &Path) -> (PathBuf, usize) {
    let out = capflow(&[
        "synth",
        "--preset",
        "skin",
        "--width",
        "192",
        "--height",
        "144",
        "--frames",
        "10",
        "--fps",
        "10",
        "--seed",
        "5",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "good",
    ]);
    assert!(out.status.success(), "synth: {}", text(&out));
    (dir.join("good.mp4"), 10)
}

fn config(dir: &Path, output: &Path, model: &str, streams: &[(&str, &Path)]) -> PathBuf {
    let streams: Vec<(&str, &Path, f64)> = streams.iter().map(|&(id, p)| (id, p, 2.2)).collect();
    config_um(dir, output, model, &streams)
}

/// [`config`] with each stream's pixel size.
fn config_um(dir: &Path, output: &Path, model: &str, streams: &[(&str, &Path, f64)]) -> PathBuf {
    let mut toml = format!(
        "[output]\nlocation = {:?}\n\n[model]\ncard = {model:?}\n\n[ingest]\nstall_timeout_s = 10.0\n\n",
        output.display().to_string()
    );
    for (id, source, um) in streams {
        toml += &format!(
            "[[streams]]\nid = {id:?}\npatient = \"p-{id}\"\nsite = \"forearm\"\nsource = {:?}\num_per_px = {um}\nrecorded_at = \"2026-03-01T08:00:00Z\"\n\n",
            source.display().to_string()
        );
    }
    let path = dir.join("capflow-hostile.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The summary line of a stream.
fn summary_line<'a>(text: &'a str, id: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .unwrap_or_else(|| panic!("no summary line for {id} in\n{text}"))
}

/// `stream_events` rows of kind `failed`, as (stream id, detail), read independently with DuckDB.
fn failed_events(root: &Path) -> Vec<(String, String)> {
    let py = python().expect("the Python readers (make setup)");
    let events = root.join("stream_events/*/*/*.parquet");
    let script = format!(
        "import duckdb, json\nrows = duckdb.connect().execute(\"SELECT stream_id, detail FROM read_parquet('{}', \
         hive_partitioning = true) WHERE kind = 'failed' ORDER BY 1\").fetchall()\nprint(json.dumps(rows))",
        events.display()
    );
    let out = Command::new(py).arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON rows")
}

#[test]
fn each_hostile_stream_fails_on_its_own_with_a_clear_error_while_a_good_one_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (good, good_frames) = good_clip(d);
    let hostile = hostile_inputs(d);
    let out_dir = d.join("out");
    let mut streams: Vec<(&str, &Path, f64)> = hostile
        .iter()
        .map(|(id, p, _)| (*id, p.as_path(), 2.2))
        .collect();
    streams.push(("good", &good, 2.2));
    // A good clip with an absurd pixel size: the model would see it enlarged ×400 (tens of gigabytes).
    streams.push(("absurd-scale", &good, 900.0));
    let config = config_um(d, &out_dir, "classical", &streams);

    let run = capflow_within(
        &["run", "--config", config.to_str().unwrap()],
        Duration::from_secs(90),
    );
    let all = text(&run);
    assert_eq!(run.status.code(), Some(1), "some inputs failed: {all}");
    assert!(!all.contains("panicked"), "{all}");

    assert!(
        summary_line(&all, "mixed-sizes").contains(" 3 frames"),
        "the frames before the bad one are analysed"
    );
    let absurd = summary_line(&all, "absurd-scale");
    for needle in [
        "FAILED",
        "900 µm per pixel",
        "um_per_px",
        "input.um_per_px (2.2)",
    ] {
        assert!(absurd.contains(needle), "{needle:?} missing from {absurd}");
    }
    let ok = summary_line(&all, "good");
    assert!(
        ok.trim_start().starts_with("ok") && ok.contains(&format!("{good_frames} frames")),
        "{ok}"
    );
    for (id, _, needles) in &hostile {
        let line = summary_line(&all, id);
        assert!(line.trim_start().starts_with("FAILED"), "{line}");
        for needle in needles {
            assert!(
                line.contains(needle.as_str()),
                "{id}: {needle:?} missing from {line}"
            );
        }
    }

    if python().is_none() {
        eprintln!("skipping the DuckDB checks: no Python readers (make setup)");
        return;
    }
    let failed = failed_events(&out_dir);
    for (id, _, needles) in &hostile {
        let detail = failed
            .iter()
            .find(|(s, _)| s == id)
            .map(|(_, d)| d.as_str())
            .unwrap_or_else(|| panic!("no failed stream_events row for {id}: {failed:?}"));
        for needle in needles {
            assert!(
                detail.contains(needle.as_str()),
                "{id}: {needle:?} missing from {detail}"
            );
        }
    }
    assert!(
        failed
            .iter()
            .any(|(s, d)| s == "absurd-scale" && d.contains("900 µm per pixel")),
        "{failed:?}"
    );
    assert!(
        !failed.iter().any(|(s, _)| s == "good"),
        "the good stream did not fail: {failed:?}"
    );
    let view = duckdb_view(&out_dir);
    let good_rows = view["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["stream_id"] == "good")
        .count();
    assert_eq!(
        good_rows, good_frames,
        "every frame of the good stream has its row"
    );
    let counts = view["frames_per_patient"].as_object().unwrap();
    // Mixed sizes are fine (each frame is analysed at its own size) up to the frame under the limit; no other
    // hostile stream has a frame row.
    for (id, _, _) in &hostile {
        let rows = counts
            .get(&format!("p-{id}"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let expected = if *id == "mixed-sizes" { 3 } else { 0 };
        assert_eq!(rows, expected, "frame rows of {id}");
    }
    assert!(counts.get("p-absurd-scale").is_none(), "{counts:?}");
}

#[test]
fn too_many_streams_is_a_config_error_naming_the_count_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let streams: Vec<(String, PathBuf)> = (0..5)
        .map(|i| (format!("s{i}"), d.join(format!("s{i}.mp4"))))
        .collect();
    let refs: Vec<(&str, &Path)> = streams
        .iter()
        .map(|(id, p)| (id.as_str(), p.as_path()))
        .collect();
    let config = config(d, &d.join("out"), "classical", &refs);
    let mut text_config = std::fs::read_to_string(&config).unwrap();
    text_config.insert_str(0, "[limits]\nmax_streams = 4\n\n");
    std::fs::write(&config, text_config).unwrap();
    let run = capflow_within(
        &["run", "--config", config.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let all = text(&run);
    assert_eq!(run.status.code(), Some(2), "{all}");
    assert!(
        all.contains("5 streams") && all.contains("limits.max_streams = 4"),
        "{all}"
    );
    assert!(!d.join("out").exists(), "nothing was written");
}

/// Builds a model that takes the classical card's input and answers NaN everywhere, and its card.
fn nan_model(dir: &Path) -> PathBuf {
    let py = python().expect("the Python venv with `onnx` (make setup) builds the NaN model");
    let onnx = dir.join("nan-model.onnx");
    let script = format!(
        r#"
import onnx
from onnx import TensorProto, helper
x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])
y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, "H", "W"])
nan = helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")])
graph = helper.make_graph([helper.make_node("Mul", ["image", "nan"], ["prob"])], "nan", [x], [y], [nan])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
onnx.checker.check_model(model)
onnx.save(model, {:?})
"#,
        onnx.display().to_string()
    );
    let out = Command::new(py).arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let classical =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/capillary-classical-v1.toml");
    let card = std::fs::read_to_string(classical)
        .unwrap()
        .replace("name = \"capillary-classical-v1\"", "name = \"nan-model\"")
        .replace("capillary-classical-v1.onnx", "nan-model.onnx");
    let card_path = dir.join("nan-model.toml");
    std::fs::write(&card_path, card).unwrap();
    card_path
}

#[test]
fn a_model_answering_nan_fails_its_streams_naming_the_model_instead_of_writing_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (good, _) = good_clip(d);
    let card = nan_model(d);
    let out_dir = d.join("out");
    let config = config(d, &out_dir, card.to_str().unwrap(), &[("clip", &good)]);
    let run = capflow_within(
        &["run", "--config", config.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let all = text(&run);
    assert_eq!(run.status.code(), Some(1), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    let line = summary_line(&all, "clip");
    for needle in [
        "FAILED",
        "nan-model.toml",
        "NaN or infinite",
        "segmentation failed at frame",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from {line}");
    }
    assert!(
        !out_dir.join("frames").exists(),
        "no garbage frame rows were written"
    );
    let failed = failed_events(&out_dir);
    assert!(
        failed
            .iter()
            .any(|(s, d)| s == "clip" && d.contains("nan-model.toml") && d.contains("NaN")),
        "{failed:?}"
    );
}
