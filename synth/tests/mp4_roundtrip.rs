//! Writes a small clip with every output and decodes the MP4 back with GStreamer (and ffprobe).

use std::path::Path;

use capflow_synth::{gst_init, write_clip, Outputs, Renderer, SynthError, SynthSpec};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// Decodes `path` to RGB frames with `filesrc ! decodebin ! videoconvert ! appsink`.
fn decode_rgb(path: &Path) -> (Vec<Vec<u8>>, Vec<u64>, (i32, i32)) {
    gst_init().unwrap();
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
        path.display()
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut frames = Vec::new();
    let mut pts = Vec::new();
    let mut dims = (0, 0);
    while let Ok(sample) = sink.pull_sample() {
        let caps = sample.caps().unwrap();
        let s = caps.structure(0).unwrap();
        dims = (
            s.get::<i32>("width").unwrap(),
            s.get::<i32>("height").unwrap(),
        );
        let buffer = sample.buffer().unwrap();
        pts.push(buffer.pts().unwrap().nseconds());
        let map = buffer.map_readable().unwrap();
        // Rows of RGB are padded to 4 bytes; strip the padding.
        let (w, h) = (dims.0 as usize, dims.1 as usize);
        let stride = map.len() / h;
        let mut rgb = Vec::with_capacity(w * h * 3);
        for row in map.chunks(stride).take(h) {
            rgb.extend_from_slice(&row[..w * 3]);
        }
        frames.push(rgb);
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (frames, pts, dims)
}

#[test]
fn small_clip_round_trips_through_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        width: 160,
        height: 120,
        frames: 5,
        capillaries: 6,
        ..SynthSpec::default()
    };
    let outputs = Outputs {
        mp4: true,
        png: true,
        masks: true,
    };
    let written = write_clip(&spec, dir.path(), "tiny", &outputs).unwrap();
    let mp4 = written.mp4.clone().unwrap();
    assert_eq!(mp4, dir.path().join("tiny.mp4"));
    assert_eq!(written.frames, 5);
    assert_eq!(written.truth.len(), 5);
    assert_eq!(written.dir, dir.path().join("tiny"));
    for i in 0..5 {
        assert!(written.dir.join(format!("frames/{i:06}.png")).is_file());
        assert!(written.dir.join(format!("masks/{i:06}.png")).is_file());
    }
    let csv = std::fs::read_to_string(written.dir.join("truth_frames.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6);
    let vcsv = std::fs::read_to_string(written.dir.join("truth_vessels.csv")).unwrap();
    assert_eq!(vcsv.lines().count(), written.vessels.len() + 1);
    let json = std::fs::read_to_string(written.dir.join("spec.json")).unwrap();
    let back: SynthSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);

    let (frames, pts, dims) = decode_rgb(&mp4);
    assert_eq!(dims, (160, 120));
    assert_eq!(frames.len(), 5);
    let want_pts: Vec<u64> = (0..5).map(|i| spec.pts_ns(i)).collect();
    assert_eq!(pts, want_pts);
    // The decoded picture is close to what was rendered (colours in the right order).
    let rendered = Renderer::new(&spec).unwrap().render(0).rgb;
    let mae: f64 = rendered
        .iter()
        .zip(&frames[0])
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / rendered.len() as f64;
    assert!(mae < 4.0, "mean abs error {mae}");

    // ffprobe, an independent decoder, agrees (skipped where ffprobe is not installed).
    match std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames,profile",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&mp4)
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.starts_with("h264,"), "{text}");
            assert!(text.contains("160,120"), "{text}");
            assert!(text.trim_end().ends_with(",5"), "{text}");
        }
        _ => eprintln!("ffprobe not available; skipped the ffprobe check"),
    }
}

#[test]
fn write_clip_rejects_bad_spec_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = Outputs {
        mp4: false,
        png: false,
        masks: false,
    };
    let spec = SynthSpec {
        fps: 0,
        ..SynthSpec::default()
    };
    let err = write_clip(&spec, dir.path(), "x", &outputs).unwrap_err();
    assert!(
        matches!(err, SynthError::InvalidSpec { field: "fps", .. }),
        "{err}"
    );
    let spec = SynthSpec {
        width: 128,
        height: 96,
        frames: 2,
        ..SynthSpec::default()
    };
    let err = write_clip(&spec, dir.path(), "../escape", &outputs).unwrap_err();
    assert!(matches!(err, SynthError::InvalidName { .. }), "{err}");
    // Truth files are written even without any picture output.
    let written = write_clip(&spec, dir.path(), "truth-only", &outputs).unwrap();
    assert!(written.mp4.is_none());
    assert!(written.dir.join("truth_frames.csv").is_file());
    assert!(!dir.path().join("truth-only.mp4").exists());
}
