//! Plain records that flow out of the per-frame, per-stream and per-window operators.
//!
//! They are the rows of capflow's three tables (`frames`, `sites`, `patients`) plus the per-stream flow samples that
//! feed `sites`. They carry no I/O, so the sink crate can turn them into Arrow batches and tests can build them by
//! hand. Units are in the field names: `_um`, `_mm_per_mm2`, `_percent`, `_ms`, `_px`.

use serde::{Deserialize, Serialize};

/// One row of the `stream_events` table (defined by ingest, which records the events).
pub use capflow_ingest::{EventKind, StreamEvent};

/// Metrics of one segmented frame: one row of the `frames` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    /// How the row was segmented: `every_frame`, `every_nth` or `block_mean`.
    pub segmentation: String,
    /// Frames behind this row: 1, or N for `every_nth` (frames it stands for) and `block_mean` (frames averaged).
    pub segmented_frames: u32,
    /// Number of capillaries: connected components of the mask within the configured area range.
    pub capillary_count: u32,
    /// Capillaries per mm² of analysed field.
    pub capillary_density_per_mm2: f64,
    /// Capillary pixels divided by analysed pixels (0..1).
    pub area_fraction: f64,
    /// Total vessel density: centre-line length of all vessels ÷ field area, mm/mm².
    pub tvd_mm_per_mm2: f64,
    /// Total vessel density of small vessels (diameter below the configured threshold), mm/mm².
    pub tvd_small_mm_per_mm2: f64,
    /// Length-weighted mean vessel diameter, µm (0 when no vessel).
    pub mean_diameter_um: f64,
    /// Mean model probability over the pixels of counted capillaries (0..1; 0 when none).
    pub mean_probability: f64,
    /// Analysed field area, mm².
    pub field_area_mm2: f64,
    /// Horizontal displacement of the field content since the stream's first frame, frame pixels.
    pub drift_x_px: f64,
    /// Vertical displacement of the field content since the stream's first frame, frame pixels.
    pub drift_y_px: f64,
    /// Mean luma/green level, 0..255 (illumination evidence).
    pub mean_luma: f64,
    /// Share of saturated pixels (illumination evidence).
    pub saturated_fraction: f64,
    /// Share of black pixels (illumination evidence).
    pub dark_fraction: f64,
    /// Sharpness measure (focus evidence; see `quality::frame_quality`).
    pub focus: f64,
}

/// Flow measured over one sliding window of consecutive frames of one stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowSample {
    /// Stream the frames came from.
    pub stream_id: String,
    /// Patient of the stream.
    pub patient_id: String,
    /// Recording site.
    pub site: String,
    /// Index of the first frame of the flow window.
    pub first_frame: u64,
    /// Index of the last frame of the flow window.
    pub last_frame: u64,
    /// Event time of the last frame, ms since the Unix epoch (the sample belongs to the windows containing it).
    pub event_time_ms: i64,
    /// Vessel segments analysed.
    pub n_segments: u32,
    /// Proportion of perfused vessels: length with sluggish or continuous flow ÷ total length, %.
    pub ppv_percent: f64,
    /// Perfused vessel density = TVD × PPV, mm/mm².
    pub pvd_mm_per_mm2: f64,
    /// Microvascular flow index, 0..3: predominant flow class per quadrant, averaged over quadrants with vessels.
    pub mfi: f64,
    /// Experimental: median red-cell velocity over perfused segments, µm/s (`None` when none could be measured).
    pub rbc_velocity_um_s: Option<f64>,
}

/// What flows from the per-stream operators into the windowed aggregates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StreamRecord {
    /// One segmented frame.
    Frame(FrameMetrics),
    /// One flow window.
    Flow(FlowSample),
    /// The stream started or ended: a window it cuts is marked `partial`.
    Edge(StreamEdge),
}

/// Which edge of a stream's recording a [`StreamEdge`] marks.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Edge {
    /// The first frame: windows that began before it are partial.
    #[default]
    Start,
    /// One frame interval past the last frame: windows that end after it are partial.
    End,
}

/// Where a stream's recording starts or ends, in event time.
///
/// Sent with a stream's first frame and when it ends, is stopped (Ctrl-C, SIGTERM, `--duration`, removed by a
/// reload) or fails, so the windows it covers only in part are marked `partial`. Both are computed from the frames
/// alone (the end is the last frame's event time plus the interval before it), so a replay marks the same windows on
/// every run and with any worker count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamEdge {
    /// The stream.
    pub stream_id: String,
    /// Patient of the stream.
    pub patient_id: String,
    /// Recording site.
    pub site: String,
    /// Start or end.
    pub edge: Edge,
    /// Index of the stream's first (start) or last (end) frame.
    pub frame: u64,
    /// The first frame's event time, or the last frame's plus one frame interval, ms since the Unix epoch.
    pub event_time_ms: i64,
}

impl StreamEdge {
    /// Whether the window `[start_ms, end_ms)` holding this edge is covered only in part.
    pub fn cuts(&self, start_ms: i64, end_ms: i64) -> bool {
        match self.edge {
            Edge::Start => self.event_time_ms > start_ms,
            Edge::End => self.event_time_ms < end_ms,
        }
    }
}

impl StreamRecord {
    /// Event time of the record, ms since the Unix epoch.
    pub fn event_time_ms(&self) -> i64 {
        match self {
            StreamRecord::Frame(f) => f.event_time_ms,
            StreamRecord::Flow(f) => f.event_time_ms,
            StreamRecord::Edge(e) => e.event_time_ms,
        }
    }

    /// Patient the record belongs to.
    pub fn patient_id(&self) -> &str {
        match self {
            StreamRecord::Frame(f) => &f.patient_id,
            StreamRecord::Flow(f) => &f.patient_id,
            StreamRecord::Edge(e) => &e.patient_id,
        }
    }

    /// Stream the record belongs to.
    pub fn stream_id(&self) -> &str {
        match self {
            StreamRecord::Frame(f) => &f.stream_id,
            StreamRecord::Flow(f) => &f.stream_id,
            StreamRecord::Edge(e) => &e.stream_id,
        }
    }
}

/// One stream (site) over one event-time window: one row of the `sites` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteWindow {
    /// Patient the stream belongs to; the `sites` table is partitioned by it.
    pub patient_id: String,
    /// Stream id.
    pub stream_id: String,
    /// Recording site.
    pub site: String,
    /// Inclusive window start, ms since the Unix epoch.
    pub window_start_ms: i64,
    /// Exclusive window end, ms since the Unix epoch.
    pub window_end_ms: i64,
    /// Segmented frames in the window.
    pub n_frames: u64,
    /// Time covered by the stream's frames in the window, seconds.
    pub duration_s: f64,
    /// Segmentation mode of the frames (`every_frame`, `every_nth`, `block_mean`).
    pub segmentation: String,
    /// Mean capillaries per frame.
    pub capillary_count: f64,
    /// Mean capillaries per mm².
    pub capillary_density_per_mm2: f64,
    /// Mean area fraction.
    pub area_fraction: f64,
    /// Mean total vessel density, mm/mm².
    pub tvd_mm_per_mm2: f64,
    /// Mean small-vessel density, mm/mm².
    pub tvd_small_mm_per_mm2: f64,
    /// Mean vessel diameter, µm.
    pub mean_diameter_um: f64,
    /// Flow windows that ended in this window.
    pub n_flow_windows: u32,
    /// Mean PPV over the flow windows, % (`None` without a flow window).
    pub ppv_percent: Option<f64>,
    /// Mean PVD over the flow windows, mm/mm².
    pub pvd_mm_per_mm2: Option<f64>,
    /// Mean MFI over the flow windows, 0..3.
    pub mfi: Option<f64>,
    /// Experimental: mean red-cell velocity, µm/s.
    pub rbc_velocity_um_s: Option<f64>,
    /// Largest field displacement within the window ÷ field size.
    pub max_drift_fraction: f64,
    /// Mean luma, 0..255.
    pub mean_luma: f64,
    /// Median focus measure.
    pub focus: f64,
    /// MIQS-style illumination score: 0 optimal, 1 acceptable, 10 unacceptable.
    pub q_illumination: u8,
    /// Duration score.
    pub q_duration: u8,
    /// Focus score.
    pub q_focus: u8,
    /// Content score (enough vessels in view).
    pub q_content: u8,
    /// Stability score (drift).
    pub q_stability: u8,
    /// Sum of the scores.
    pub quality_score: u32,
    /// Whether the window is good enough to enter patient aggregates.
    pub quality_ok: bool,
    /// The stream started, ended or was stopped inside the window (start or end of a clip or a live run, Ctrl-C,
    /// SIGTERM, `--duration`, added or removed by a reload), so the window holds less than its length of recording.
    pub partial: bool,
    /// The window's evidence image (the first segmented frame with the vessels drawn over it), relative to the
    /// output root; `None` when evidence images are off or the window has no segmented frame.
    pub evidence_path: Option<String>,
}

/// One patient over one event-time window, combined over the sites: one row of the `patients` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PatientWindow {
    /// Patient id; the `patients` table is partitioned by it.
    pub patient_id: String,
    /// Inclusive window start, ms since the Unix epoch.
    pub window_start_ms: i64,
    /// Exclusive window end, ms since the Unix epoch.
    pub window_end_ms: i64,
    /// Sites (streams) with frames in the window.
    pub n_sites: u32,
    /// Sites whose window passed the quality check; only these enter the means below.
    pub n_valid_sites: u32,
    /// Segmented frames over all sites.
    pub n_frames: u64,
    /// Frames of this patient that arrived after their own window had closed (beyond the allowed lateness) while
    /// this window was open; they are logged and counted here, not lost silently.
    pub late_frames: u64,
    /// Mean over valid sites of capillaries per frame.
    pub capillary_count: Option<f64>,
    /// Mean over valid sites of capillary density, per mm².
    pub capillary_density_per_mm2: Option<f64>,
    /// Mean over valid sites of area fraction.
    pub area_fraction: Option<f64>,
    /// Mean over valid sites of TVD, mm/mm².
    pub tvd_mm_per_mm2: Option<f64>,
    /// Mean over valid sites of small-vessel TVD, mm/mm².
    pub tvd_small_mm_per_mm2: Option<f64>,
    /// Mean over valid sites of vessel diameter, µm.
    pub mean_diameter_um: Option<f64>,
    /// Mean over valid sites with flow of PPV, %.
    pub ppv_percent: Option<f64>,
    /// Mean over valid sites with flow of PVD, mm/mm².
    pub pvd_mm_per_mm2: Option<f64>,
    /// Mean over valid sites with flow of MFI, 0..3.
    pub mfi: Option<f64>,
    /// Heterogeneity index of site MFI: (max − min) ÷ mean, over valid sites with flow (`None` when the mean is 0).
    pub hi: Option<f64>,
    /// Experimental: mean red-cell velocity over valid sites, µm/s.
    pub rbc_velocity_um_s: Option<f64>,
    /// At least one of the patient's sites is `partial` in this window.
    pub partial: bool,
}
