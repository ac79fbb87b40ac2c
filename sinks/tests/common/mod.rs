//! Shared helpers of the integration tests: sample rows and a checker for written files.

#![allow(dead_code)]

use std::path::Path as FsPath;

use capflow_operators::records::{FrameMetrics, PatientWindow, SiteWindow};
use parquet::file::reader::{FileReader, SerializedFileReader};

/// A frame row with values derived from its index.
pub fn frame(patient: &str, stream: &str, i: u64) -> FrameMetrics {
    FrameMetrics {
        stream_id: stream.into(),
        patient_id: patient.into(),
        site: format!("site-{stream}"),
        frame_index: i,
        pts_ns: i * 33_366_667,
        event_time_ms: 1_700_000_000_000 + i as i64 * 33,
        width: 1920,
        height: 1080,
        um_per_px: 0.95,
        segmentation: "every_frame".into(),
        segmented_frames: 1,
        capillary_count: (i % 40) as u32,
        capillary_density_per_mm2: 10.0 + i as f64 * 0.5,
        area_fraction: (i % 100) as f64 / 100.0,
        tvd_mm_per_mm2: 12.0 + (i % 7) as f64,
        tvd_small_mm_per_mm2: 9.0 + (i % 5) as f64,
        mean_diameter_um: 8.0 + (i % 3) as f64,
        mean_probability: 0.5 + (i % 50) as f64 / 100.0,
        field_area_mm2: 1.87,
        drift_x_px: i as f64 * 0.25,
        drift_y_px: -(i as f64) * 0.125,
        mean_luma: 100.0 + (i % 20) as f64,
        saturated_fraction: 0.001,
        dark_fraction: 0.0,
        focus: 30.0 + (i % 11) as f64,
    }
}

/// A site window of `stream` starting at `start`; `flow` decides whether it had flow windows (else the flow columns
/// are null) and whether it passed the quality check.
pub fn site(patient: &str, stream: &str, start: i64, flow: bool) -> SiteWindow {
    SiteWindow {
        patient_id: patient.into(),
        stream_id: stream.into(),
        site: format!("site-{stream}"),
        window_start_ms: start,
        window_end_ms: start + 5_000,
        n_frames: 150,
        duration_s: 4.97,
        segmentation: "every_frame".into(),
        capillary_count: 20.0,
        capillary_density_per_mm2: 30.0,
        area_fraction: 0.2,
        tvd_mm_per_mm2: 16.5,
        tvd_small_mm_per_mm2: 13.25,
        mean_diameter_um: 10.5,
        n_flow_windows: if flow { 5 } else { 0 },
        ppv_percent: flow.then_some(87.5),
        pvd_mm_per_mm2: flow.then_some(14.4375),
        mfi: flow.then_some(2.5),
        rbc_velocity_um_s: None,
        max_drift_fraction: 0.02,
        mean_luma: 105.0,
        focus: 35.0,
        q_illumination: 0,
        q_duration: 1,
        q_focus: if flow { 0 } else { 10 },
        q_content: 0,
        q_stability: 1,
        quality_score: if flow { 2 } else { 12 },
        quality_ok: flow,
        partial: !flow,
        evidence_path: flow.then(|| format!("evidence/patient_id={patient}/{stream}_{start}.png")),
    }
}

/// A patient window of two sites starting at `start`; with `valid` both passed the quality check, without it neither
/// did and every mean is null.
pub fn patient(patient: &str, start: i64, valid: bool) -> PatientWindow {
    PatientWindow {
        patient_id: patient.into(),
        window_start_ms: start,
        window_end_ms: start + 5_000,
        n_sites: 2,
        n_valid_sites: if valid { 2 } else { 0 },
        n_frames: 150,
        late_frames: if valid { 0 } else { 2 },
        capillary_count: valid.then_some(20.0),
        capillary_density_per_mm2: valid.then_some(30.0),
        area_fraction: valid.then_some(0.2),
        tvd_mm_per_mm2: valid.then_some(16.5),
        tvd_small_mm_per_mm2: valid.then_some(13.25),
        mean_diameter_um: valid.then_some(10.5),
        ppv_percent: valid.then_some(87.5),
        pvd_mm_per_mm2: valid.then_some(14.4375),
        mfi: valid.then_some(2.5),
        hi: valid.then_some(0.4),
        rbc_velocity_um_s: valid.then_some(640.0),
        partial: !valid,
    }
}

/// Opens a Parquet file on disk and returns its key-value metadata, asserting the capflow entries are present.
pub fn assert_capflow_metadata(file: &FsPath, table: &str) {
    let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let get = |key: &str| {
        kv.iter()
            .find(|e| e.key == key)
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| panic!("{} lacks metadata {key}: {kv:?}", file.display()))
    };
    assert_eq!(
        get("capflow.schema_version"),
        capflow_sinks::SCHEMA_VERSION.to_string()
    );
    assert_eq!(get("capflow.version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(get("capflow.table"), table);
    let compression = reader.metadata().row_group(0).column(0).compression();
    assert!(
        matches!(compression, parquet::basic::Compression::ZSTD(_)),
        "{compression:?}"
    );
}
