//! Shared helpers of the integration tests: sample rows and a checker for written files.

#![allow(dead_code)]

use std::path::Path as FsPath;

use capflow_operators::records::{FrameMetrics, Stats, WindowAggregate};
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
        capillary_count: (i % 40) as u32,
        area_fraction: (i % 100) as f64 / 100.0,
        density_per_mm2: 10.0 + i as f64 * 0.5,
        mean_probability: 0.5 + (i % 50) as f64 / 100.0,
        field_area_mm2: 1.87,
    }
}

/// A window row starting at `start`.
pub fn window(patient: &str, start: i64) -> WindowAggregate {
    let s = |x: f64| Stats {
        mean: x,
        median: x * 1.01,
        p10: x * 0.8,
        p90: x * 1.2,
    };
    WindowAggregate {
        patient_id: patient.into(),
        window_start_ms: start,
        window_end_ms: start + 5_000,
        n_frames: 150,
        n_streams: 3,
        capillary_count: s(20.0),
        area_fraction: s(0.2),
        density_per_mm2: s(30.0),
        mean_probability: s(0.7),
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
    assert_eq!(get("capflow.schema_version"), "1");
    assert_eq!(get("capflow.version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(get("capflow.table"), table);
    let compression = reader.metadata().row_group(0).column(0).compression();
    assert!(
        matches!(compression, parquet::basic::Compression::ZSTD(_)),
        "{compression:?}"
    );
}
