//! `capflow eval` end to end: a tiny synthetic dataset generated at test time (no shipped data) → the `capflow`
//! binary with the built-in model → report.json / report.md / overlays; and the errors for bad inputs.
//!
//! Like the other end-to-end tests this needs the ONNX Runtime library (ORT_DYLIB_PATH or `.deps/onnxruntime/`,
//! installed by `make setup`); without it the scoring tests fail with the binary's message saying so.

use std::path::Path;

#[path = "../../tests/support/cli.rs"]
mod cli;
use cli::{capflow, text};

use capflow_synth::{write_gray_png, write_rgb_png, Renderer, SynthSpec};

/// Writes `dir/images/*.png`, `dir/masks/*.png` and `dir/index.csv` for small frames of a few looks.
fn dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    let mut index =
        String::from("file,look,seed,width,height,um_per_px,capillary_count,area_fraction\n");
    for (look, seed) in [("skin", 11u64), ("skin", 12), ("sublingual", 13)] {
        let spec = SynthSpec {
            width: 256,
            height: 192,
            frames: 1,
            seed,
            capillaries: 12,
            ..SynthSpec::preset(look).unwrap()
        };
        let frame = Renderer::new(&spec).unwrap().render(0);
        let file = format!("{look}-{seed}.png");
        write_rgb_png(&dir.join("images").join(&file), 256, 192, &frame.rgb).unwrap();
        write_gray_png(&dir.join("masks").join(&file), 256, 192, &frame.mask).unwrap();
        index += &format!(
            "{file},{look},{seed},256,192,{},{},{}\n",
            spec.um_per_px, frame.truth.capillary_count, frame.truth.area_fraction
        );
    }
    std::fs::write(dir.join("index.csv"), index).unwrap();
}

fn unit(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"));
    assert!((0.0..=1.0).contains(&x), "{key} = {x} is outside 0..1");
    x
}

fn non_negative(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"));
    assert!(x >= 0.0, "{key} = {x} < 0");
    x
}

#[test]
fn scores_a_folder_and_writes_the_report_and_overlays() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ds");
    dataset(&data);
    let report_dir = tmp.path().join("report");
    let out = capflow(&[
        "eval",
        "--model",
        "builtin",
        "--images",
        data.join("images").to_str().unwrap(),
        "--masks",
        data.join("masks").to_str().unwrap(),
        "--report",
        report_dir.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("dice"), "{}", text(&out));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    for key in ["dice", "iou", "cldice"] {
        unit(&report, key);
    }
    for key in [
        "count_mae",
        "area_fraction_mae",
        "count_mape",
        "area_fraction_relative_error",
    ] {
        non_negative(&report, key);
    }
    for key in [
        "count_total_relative_error",
        "area_fraction_total_relative_error",
    ] {
        non_negative(&report, key);
    }
    assert!(!report["model"]["name"].as_str().unwrap().is_empty());
    assert!(report["model"]["origin"]
        .as_str()
        .unwrap()
        .starts_with("builtin"));
    assert!(report["model"]["version"].is_string());
    unit(&report, "threshold");

    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    for row in images {
        for key in [
            "dice",
            "iou",
            "cldice",
            "area_fraction_pred",
            "area_fraction_true",
        ] {
            unit(row, key);
        }
        for key in ["count_pred", "count_true"] {
            assert!(row[key].is_u64(), "{key} in {row}");
        }
        assert!(row["file"].as_str().unwrap().ends_with(".png"));
        assert!(row["look"].is_string());
    }
    // Per-image pixel sizes come from index.csv.
    let sub = images.iter().find(|r| r["look"] == "sublingual").unwrap();
    assert_eq!(sub["um_per_px"].as_f64(), Some(1.5));
    assert_eq!(report["by_look"]["skin"]["n_images"], 2);
    assert_eq!(report["by_look"]["sublingual"]["n_images"], 1);
    unit(&report["by_look"]["skin"], "dice");
    // The classical detector finds vessels on skin frames: not a random mask.
    assert!(
        report["by_look"]["skin"]["dice"].as_f64().unwrap() > 0.2,
        "{report}"
    );

    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(
        md.contains("| Dice |") && md.contains("skin-11.png"),
        "{md}"
    );
    for stem in ["skin-11", "skin-12", "sublingual-13"] {
        let overlay = report_dir.join("overlays").join(format!("{stem}.png"));
        let img = capflow::imageio::read_image(&overlay).unwrap();
        assert_eq!((img.width, img.height), (256, 192));
    }
}

#[test]
fn generates_and_scores_a_held_out_synthetic_set() {
    let tmp = tempfile::tempdir().unwrap();
    let report_dir = tmp.path().join("report");
    let out = capflow(&[
        "eval",
        "--model",
        "builtin",
        "--synth",
        "--count",
        "1",
        "--looks",
        "sublingual",
        "--report",
        report_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["images"][0]["file"], "sublingual-00000.png");
    assert_eq!(report["images"][0]["look"], "sublingual");
    assert_eq!(report["synth"]["seed"], 1_000_000);
    unit(&report, "dice");
    assert!(report_dir.join("data/index.csv").is_file());
    assert!(report_dir.join("overlays/sublingual-00000.png").is_file());
}

#[test]
fn an_image_without_a_mask_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ds");
    dataset(&data);
    std::fs::remove_file(data.join("masks/skin-12.png")).unwrap();
    let out = capflow(&[
        "eval",
        "--model",
        "builtin",
        "--images",
        data.join("images").to_str().unwrap(),
        "--masks",
        data.join("masks").to_str().unwrap(),
        "--report",
        tmp.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("skin-12.png") && msg.contains("has no mask") && msg.contains("add the mask"),
        "{msg}"
    );
}

#[test]
fn missing_folders_and_unreadable_images_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("r");
    let out = capflow(&[
        "eval",
        "--model",
        "builtin",
        "--images",
        "/nonexistent/images",
        "--masks",
        "/nonexistent/masks",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("/nonexistent/images"), "{}", text(&out));

    let data = tmp.path().join("ds");
    dataset(&data);
    std::fs::write(data.join("images/skin-11.png"), b"not a png").unwrap();
    let out = capflow(&[
        "eval",
        "--model",
        "builtin",
        "--images",
        data.join("images").to_str().unwrap(),
        "--masks",
        data.join("masks").to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("skin-11.png") && text(&out).contains("not a readable PNG/JPEG"),
        "{}",
        text(&out)
    );
}
