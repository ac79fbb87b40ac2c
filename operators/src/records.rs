//! Plain records that flow out of the per-frame and per-window operators.
//!
//! They are the rows of capflow's two tables (`frames`, `windows`) and carry no I/O, so the sink crate can turn them
//! into Arrow batches and tests can build them by hand.

use serde::{Deserialize, Serialize};

/// Metrics of one segmented frame: one row of the `frames` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameMetrics {
    /// Stream (site recording) the frame came from, unique within a run.
    pub stream_id: String,
    /// Patient the stream belongs to; the `frames` table is partitioned by it.
    pub patient_id: String,
    /// Recording site (e.g. `sublingual-1`), free text from the config.
    pub site: String,
    /// 0-based index of the frame within its stream.
    pub frame_index: u64,
    /// Presentation timestamp within the stream, nanoseconds.
    pub pts_ns: u64,
    /// Event time: the stream's `recorded_at` plus the PTS, milliseconds since the Unix epoch.
    pub event_time_ms: i64,
    /// Width of the decoded frame, pixels.
    pub width: u32,
    /// Height of the decoded frame, pixels.
    pub height: u32,
    /// Pixel size of the decoded frame, micrometres per pixel.
    pub um_per_px: f64,
    /// Number of capillaries: connected components of the mask within the configured area range.
    pub capillary_count: u32,
    /// Capillary pixels divided by analysed pixels (0..1).
    pub area_fraction: f64,
    /// Capillaries per mm² of analysed field.
    pub density_per_mm2: f64,
    /// Mean model probability over the pixels of counted capillaries (0..1; 0 when none).
    pub mean_probability: f64,
    /// Analysed field area, mm².
    pub field_area_mm2: f64,
}

/// Summary statistics of one metric over the frames of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (mean of the two middle values for even counts).
    pub median: f64,
    /// 10th percentile (linear interpolation between closest ranks).
    pub p10: f64,
    /// 90th percentile (linear interpolation between closest ranks).
    pub p90: f64,
}

/// One patient's aggregate over one tumbling event-time window: one row of the `windows` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowAggregate {
    /// Patient the window belongs to; the `windows` table is partitioned by it.
    pub patient_id: String,
    /// Inclusive window start, milliseconds since the Unix epoch.
    pub window_start_ms: i64,
    /// Exclusive window end, milliseconds since the Unix epoch.
    pub window_end_ms: i64,
    /// Frames that fell into the window, over all of the patient's streams.
    pub n_frames: u64,
    /// Distinct streams (sites) that contributed frames.
    pub n_streams: u32,
    /// Capillary count per frame.
    pub capillary_count: Stats,
    /// Area fraction per frame.
    pub area_fraction: Stats,
    /// Capillary density per mm² per frame.
    pub density_per_mm2: Stats,
    /// Mean capillary probability per frame.
    pub mean_probability: Stats,
}
