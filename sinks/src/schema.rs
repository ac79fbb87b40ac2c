//! Arrow schemas of the `frames`, `sites`, `patients` and `stream_events` tables, and conversion between rows and record batches.
//!
//! `patient_id` is the Hive partition column: it is encoded in the folder name (`patient_id=<escaped>/`), not stored
//! in the files (the Spark/Hive convention), so converting a batch back to rows takes the patient id as an argument.
//! Times are stored as `Timestamp(Millisecond, "UTC")` under names without the `_ms` suffix (`event_time`,
//! `window_start`, `window_end`); other units stay in the column names and descriptions.
//!
//! Only the columns of `Option` fields are nullable (type names ending in `(nullable)` in [`columns`]). Null means "not
//! measurable in this window": a site window without a flow window has no PPV, a patient window without a valid site
//! has no means. Every other column is non-null, and reading a null there is an error.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, StringArray, TimestampMillisecondArray,
    UInt32Array, UInt64Array, UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use capflow_operators::records::{EventKind, FrameMetrics, PatientWindow, SiteWindow, StreamEvent};

use crate::SinkError;

/// Version of the table layout written into every file's `capflow.schema_version` metadata. Bump it on any
/// incompatible change to the columns below.
///
/// Version 2 replaced the `windows` table by `sites` and `patients` and added the vessel, flow and quality columns;
/// version 3 added `sites.evidence_path`; version 4 added the `stream_events` table; version 5 added `partial` to
/// `sites` and `patients`.
pub const SCHEMA_VERSION: u32 = 5;

/// One of capflow's four tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// One row per segmented frame ([`FrameMetrics`]).
    Frames,
    /// One row per stream (site) and tumbling event-time window ([`SiteWindow`]).
    Sites,
    /// One row per patient and tumbling event-time window, combined over the sites ([`PatientWindow`]).
    Patients,
    /// One row per thing that happened to a stream: start, end, source gaps, overload drops ([`StreamEvent`]).
    StreamEvents,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 4] = [
        Table::Frames,
        Table::Sites,
        Table::Patients,
        Table::StreamEvents,
    ];

    /// The table's name and folder: `frames`, `sites`, `patients` or `stream_events`.
    pub fn name(self) -> &'static str {
        match self {
            Table::Frames => "frames",
            Table::Sites => "sites",
            Table::Patients => "patients",
            Table::StreamEvents => "stream_events",
        }
    }

    /// The table's Arrow schema (without the `patient_id` partition column).
    pub fn schema(self) -> SchemaRef {
        static FRAMES: OnceLock<SchemaRef> = OnceLock::new();
        static SITES: OnceLock<SchemaRef> = OnceLock::new();
        static PATIENTS: OnceLock<SchemaRef> = OnceLock::new();
        static EVENTS: OnceLock<SchemaRef> = OnceLock::new();
        let cell = match self {
            Table::Frames => &FRAMES,
            Table::Sites => &SITES,
            Table::Patients => &PATIENTS,
            Table::StreamEvents => &EVENTS,
        };
        cell.get_or_init(|| build_schema(columns(self))).clone()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Column type names used in [`columns`]; each maps to exactly one Arrow type and nullability.
const UTF8: &str = "utf8";
const BOOL: &str = "bool";
const UINT8: &str = "uint8";
const UINT32: &str = "uint32";
const UINT64: &str = "uint64";
const TIMESTAMP: &str = "timestamp[ms, UTC]";
const FLOAT64: &str = "float64";
const FLOAT64_NULLABLE: &str = "float64 (nullable)";
const UTF8_NULLABLE: &str = "utf8 (nullable)";

const FRAMES_COLUMNS: &[(&str, &str, &str)] = &[
    (
        "stream_id",
        UTF8,
        "stream (site recording) id, unique within a run",
    ),
    ("site", UTF8, "recording site, free text from the config"),
    (
        "frame_index",
        UINT64,
        "0-based frame index within the stream",
    ),
    (
        "pts_ns",
        UINT64,
        "presentation timestamp within the stream, ns",
    ),
    ("event_time", TIMESTAMP, "stream's recorded_at plus the PTS"),
    ("width", UINT32, "decoded frame width, px"),
    ("height", UINT32, "decoded frame height, px"),
    ("um_per_px", FLOAT64, "pixel size, µm per px"),
    (
        "segmentation",
        UTF8,
        "how the row was segmented: every_frame, every_nth or block_mean",
    ),
    (
        "segmented_frames",
        UINT32,
        "frames behind the row: 1, or N for every_nth (frames it stands for) and block_mean (frames averaged)",
    ),
    (
        "capillary_count",
        UINT32,
        "capillaries (connected components within the area range)",
    ),
    (
        "capillary_density_per_mm2",
        FLOAT64,
        "capillaries per mm² of analysed field",
    ),
    (
        "area_fraction",
        FLOAT64,
        "capillary pixels / analysed pixels, 0..1",
    ),
    (
        "tvd_mm_per_mm2",
        FLOAT64,
        "total vessel density: centre-line length of all vessels / field area, mm/mm²",
    ),
    (
        "tvd_small_mm_per_mm2",
        FLOAT64,
        "total vessel density of small vessels (diameter below the configured threshold), mm/mm²",
    ),
    (
        "mean_diameter_um",
        FLOAT64,
        "length-weighted mean vessel diameter, µm (0 when no vessel)",
    ),
    (
        "mean_probability",
        FLOAT64,
        "mean model probability over counted capillaries, 0..1 (0 when none)",
    ),
    ("field_area_mm2", FLOAT64, "analysed field area, mm²"),
    (
        "drift_x_px",
        FLOAT64,
        "horizontal displacement of the field since the stream's first frame, px",
    ),
    (
        "drift_y_px",
        FLOAT64,
        "vertical displacement of the field since the stream's first frame, px",
    ),
    (
        "mean_luma",
        FLOAT64,
        "mean luma/green level, 0..255 (illumination evidence)",
    ),
    (
        "saturated_fraction",
        FLOAT64,
        "share of saturated pixels, 0..1 (illumination evidence)",
    ),
    (
        "dark_fraction",
        FLOAT64,
        "share of black pixels, 0..1 (illumination evidence)",
    ),
    ("focus", FLOAT64, "sharpness measure (focus evidence)"),
];

const SITES_COLUMNS: &[(&str, &str, &str)] = &[
    (
        "stream_id",
        UTF8,
        "stream (site recording) id, unique within a run",
    ),
    ("site", UTF8, "recording site, free text from the config"),
    ("window_start", TIMESTAMP, "inclusive window start"),
    ("window_end", TIMESTAMP, "exclusive window end"),
    ("n_frames", UINT64, "segmented frames of the stream in the window"),
    (
        "duration_s",
        FLOAT64,
        "time covered by the stream's frames in the window, s",
    ),
    (
        "segmentation",
        UTF8,
        "segmentation mode of the frames: every_frame, every_nth or block_mean",
    ),
    ("capillary_count", FLOAT64, "mean capillaries per frame"),
    (
        "capillary_density_per_mm2",
        FLOAT64,
        "mean capillaries per mm²",
    ),
    ("area_fraction", FLOAT64, "mean area fraction, 0..1"),
    (
        "tvd_mm_per_mm2",
        FLOAT64,
        "mean total vessel density, mm/mm²",
    ),
    (
        "tvd_small_mm_per_mm2",
        FLOAT64,
        "mean small-vessel density, mm/mm²",
    ),
    ("mean_diameter_um", FLOAT64, "mean vessel diameter, µm"),
    (
        "n_flow_windows",
        UINT32,
        "flow windows (sliding runs of frames) that ended in this window",
    ),
    (
        "ppv_percent",
        FLOAT64_NULLABLE,
        "proportion of perfused vessels, mean over the flow windows, %; null without a flow window",
    ),
    (
        "pvd_mm_per_mm2",
        FLOAT64_NULLABLE,
        "perfused vessel density (TVD × PPV), mean over the flow windows, mm/mm²; null without a flow window",
    ),
    (
        "mfi",
        FLOAT64_NULLABLE,
        "microvascular flow index, mean over the flow windows, 0..3; null without a flow window",
    ),
    (
        "rbc_velocity_um_s",
        FLOAT64_NULLABLE,
        "experimental: mean red-cell velocity, µm/s; null when none could be measured",
    ),
    (
        "max_drift_fraction",
        FLOAT64,
        "largest field displacement within the window / field size",
    ),
    ("mean_luma", FLOAT64, "mean luma, 0..255"),
    ("focus", FLOAT64, "median focus measure"),
    (
        "q_illumination",
        UINT8,
        "MIQS-style illumination score: 0 optimal, 1 acceptable, 10 unacceptable",
    ),
    (
        "q_duration",
        UINT8,
        "MIQS-style duration score: 0 optimal, 1 acceptable, 10 unacceptable",
    ),
    (
        "q_focus",
        UINT8,
        "MIQS-style focus score: 0 optimal, 1 acceptable, 10 unacceptable",
    ),
    (
        "q_content",
        UINT8,
        "MIQS-style content score (enough vessels in view): 0 optimal, 1 acceptable, 10 unacceptable",
    ),
    (
        "q_stability",
        UINT8,
        "MIQS-style stability score (drift): 0 optimal, 1 acceptable, 10 unacceptable",
    ),
    ("quality_score", UINT32, "sum of the q_* scores"),
    (
        "quality_ok",
        BOOL,
        "whether the window is good enough to enter the patients table",
    ),
    (
        "partial",
        BOOL,
        "the stream ended or was stopped inside the window (end of a clip, Ctrl-C, SIGTERM, --duration, removed by a reload): less than the window's length was recorded",
    ),
    (
        "evidence_path",
        UTF8_NULLABLE,
        "evidence image of the window (its first segmented frame with the vessels drawn), relative to the output root; null unless output.evidence is on",
    ),
];

const PATIENTS_COLUMNS: &[(&str, &str, &str)] = &[
    ("window_start", TIMESTAMP, "inclusive window start"),
    ("window_end", TIMESTAMP, "exclusive window end"),
    ("n_sites", UINT32, "sites (streams) with frames in the window"),
    (
        "n_valid_sites",
        UINT32,
        "sites whose window passed the quality check; only these enter the means below",
    ),
    ("n_frames", UINT64, "segmented frames over all sites"),
    (
        "late_frames",
        UINT64,
        "frames of the patient that arrived after their own window had closed, counted while this window was open",
    ),
    (
        "partial",
        BOOL,
        "at least one of the patient's sites is partial in this window",
    ),
    (
        "capillary_count",
        FLOAT64_NULLABLE,
        "mean over valid sites of capillaries per frame; null without a valid site",
    ),
    (
        "capillary_density_per_mm2",
        FLOAT64_NULLABLE,
        "mean over valid sites of capillaries per mm²; null without a valid site",
    ),
    (
        "area_fraction",
        FLOAT64_NULLABLE,
        "mean over valid sites of area fraction, 0..1; null without a valid site",
    ),
    (
        "tvd_mm_per_mm2",
        FLOAT64_NULLABLE,
        "mean over valid sites of total vessel density, mm/mm²; null without a valid site",
    ),
    (
        "tvd_small_mm_per_mm2",
        FLOAT64_NULLABLE,
        "mean over valid sites of small-vessel density, mm/mm²; null without a valid site",
    ),
    (
        "mean_diameter_um",
        FLOAT64_NULLABLE,
        "mean over valid sites of vessel diameter, µm; null without a valid site",
    ),
    (
        "ppv_percent",
        FLOAT64_NULLABLE,
        "mean over valid sites with flow of PPV, %; null without a valid site with flow",
    ),
    (
        "pvd_mm_per_mm2",
        FLOAT64_NULLABLE,
        "mean over valid sites with flow of PVD, mm/mm²; null without a valid site with flow",
    ),
    (
        "mfi",
        FLOAT64_NULLABLE,
        "mean over valid sites with flow of MFI, 0..3; null without a valid site with flow",
    ),
    (
        "hi",
        FLOAT64_NULLABLE,
        "heterogeneity index of site MFI: (max − min) / mean over valid sites with flow; null without one or when the mean is 0",
    ),
    (
        "rbc_velocity_um_s",
        FLOAT64_NULLABLE,
        "experimental: mean red-cell velocity over valid sites, µm/s; null when none could be measured",
    ),
];

const STREAM_EVENTS_COLUMNS: &[(&str, &str, &str)] = &[
    ("stream_id", UTF8, "stream id from the config"),
    ("site", UTF8, "recording site"),
    (
        "kind",
        UTF8,
        "started, gap (source lost and back), dropped (overload), ended, stopped (run stopped) or failed",
    ),
    (
        "start_time",
        TIMESTAMP,
        "start (event time: the recording's clock for replays, the receive wall clock for live sources)",
    ),
    (
        "end_time",
        TIMESTAMP,
        "end; equal to start_time for started, ended and stopped",
    ),
    (
        "frames_lost",
        UINT64,
        "frames dropped (dropped) or missing at the nominal rate (gap); 0 otherwise",
    ),
    (
        "attempts",
        UINT32,
        "reconnect attempts before the source came back (gap) or was given up (failed)",
    ),
    (
        "detail",
        UTF8_NULLABLE,
        "the error behind a gap or failure; null otherwise",
    ),
];

/// The columns stored in a table's files, in order: `(name, type, unit or meaning)`. The type is one of `utf8`,
/// `bool`, `uint8`, `uint32`, `uint64`, `float64`, `float64 (nullable)`, `utf8 (nullable)`, `timestamp[ms, UTC]`;
/// only the `(nullable)` columns may hold nulls. The schema tables in the README are generated from this list (a test
/// in `sinks/tests/readme_schema.rs` keeps them equal, and prints the expected tables when they differ); a unit test
/// keeps it equal to the Arrow schema.
pub fn columns(table: Table) -> &'static [(&'static str, &'static str, &'static str)] {
    match table {
        Table::Frames => FRAMES_COLUMNS,
        Table::Sites => SITES_COLUMNS,
        Table::Patients => PATIENTS_COLUMNS,
        Table::StreamEvents => STREAM_EVENTS_COLUMNS,
    }
}

fn field(name: &str, type_name: &str) -> Field {
    let (data_type, nullable) = match type_name {
        UTF8 => (DataType::Utf8, false),
        BOOL => (DataType::Boolean, false),
        UINT8 => (DataType::UInt8, false),
        UINT32 => (DataType::UInt32, false),
        UINT64 => (DataType::UInt64, false),
        TIMESTAMP => (
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        FLOAT64 => (DataType::Float64, false),
        FLOAT64_NULLABLE => (DataType::Float64, true),
        UTF8_NULLABLE => (DataType::Utf8, true),
        other => unreachable!("unknown column type name {other}"),
    };
    Field::new(name, data_type, nullable)
}

fn build_schema(columns: &[(&str, &str, &str)]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, ty, _)| field(name, ty))
        .collect();
    Arc::new(Schema::new(fields))
}

// Builders of one column from one field of every row.
fn strings<R>(rows: &[R], f: impl Fn(&R) -> &str) -> ArrayRef {
    Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
}

fn bools<R>(rows: &[R], f: impl Fn(&R) -> bool) -> ArrayRef {
    Arc::new(BooleanArray::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn u8s<R>(rows: &[R], f: impl Fn(&R) -> u8) -> ArrayRef {
    Arc::new(UInt8Array::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn u32s<R>(rows: &[R], f: impl Fn(&R) -> u32) -> ArrayRef {
    Arc::new(UInt32Array::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn u64s<R>(rows: &[R], f: impl Fn(&R) -> u64) -> ArrayRef {
    Arc::new(UInt64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn f64s<R>(rows: &[R], f: impl Fn(&R) -> f64) -> ArrayRef {
    Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn optional_strings<R>(rows: &[R], f: impl Fn(&R) -> Option<&str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

fn optional_f64s<R>(rows: &[R], f: impl Fn(&R) -> Option<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn utc_millis<R>(rows: &[R], f: impl Fn(&R) -> i64) -> ArrayRef {
    Arc::new(
        TimestampMillisecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
            .with_timezone("UTC"),
    )
}

fn batch(table: Table, columns: Vec<ArrayRef>) -> Result<RecordBatch, SinkError> {
    RecordBatch::try_new(table.schema(), columns).map_err(|source| SinkError::Arrow {
        table: table.name(),
        source,
    })
}

/// Builds a `frames` batch from rows; their `patient_id` is dropped (it is the partition).
pub fn frames_batch(rows: &[FrameMetrics]) -> Result<RecordBatch, SinkError> {
    batch(
        Table::Frames,
        vec![
            strings(rows, |r| &r.stream_id),
            strings(rows, |r| &r.site),
            u64s(rows, |r| r.frame_index),
            u64s(rows, |r| r.pts_ns),
            utc_millis(rows, |r| r.event_time_ms),
            u32s(rows, |r| r.width),
            u32s(rows, |r| r.height),
            f64s(rows, |r| r.um_per_px),
            strings(rows, |r| &r.segmentation),
            u32s(rows, |r| r.segmented_frames),
            u32s(rows, |r| r.capillary_count),
            f64s(rows, |r| r.capillary_density_per_mm2),
            f64s(rows, |r| r.area_fraction),
            f64s(rows, |r| r.tvd_mm_per_mm2),
            f64s(rows, |r| r.tvd_small_mm_per_mm2),
            f64s(rows, |r| r.mean_diameter_um),
            f64s(rows, |r| r.mean_probability),
            f64s(rows, |r| r.field_area_mm2),
            f64s(rows, |r| r.drift_x_px),
            f64s(rows, |r| r.drift_y_px),
            f64s(rows, |r| r.mean_luma),
            f64s(rows, |r| r.saturated_fraction),
            f64s(rows, |r| r.dark_fraction),
            f64s(rows, |r| r.focus),
        ],
    )
}

/// Builds a `sites` batch from rows; their `patient_id` is dropped (it is the partition).
pub fn sites_batch(rows: &[SiteWindow]) -> Result<RecordBatch, SinkError> {
    batch(
        Table::Sites,
        vec![
            strings(rows, |r| &r.stream_id),
            strings(rows, |r| &r.site),
            utc_millis(rows, |r| r.window_start_ms),
            utc_millis(rows, |r| r.window_end_ms),
            u64s(rows, |r| r.n_frames),
            f64s(rows, |r| r.duration_s),
            strings(rows, |r| &r.segmentation),
            f64s(rows, |r| r.capillary_count),
            f64s(rows, |r| r.capillary_density_per_mm2),
            f64s(rows, |r| r.area_fraction),
            f64s(rows, |r| r.tvd_mm_per_mm2),
            f64s(rows, |r| r.tvd_small_mm_per_mm2),
            f64s(rows, |r| r.mean_diameter_um),
            u32s(rows, |r| r.n_flow_windows),
            optional_f64s(rows, |r| r.ppv_percent),
            optional_f64s(rows, |r| r.pvd_mm_per_mm2),
            optional_f64s(rows, |r| r.mfi),
            optional_f64s(rows, |r| r.rbc_velocity_um_s),
            f64s(rows, |r| r.max_drift_fraction),
            f64s(rows, |r| r.mean_luma),
            f64s(rows, |r| r.focus),
            u8s(rows, |r| r.q_illumination),
            u8s(rows, |r| r.q_duration),
            u8s(rows, |r| r.q_focus),
            u8s(rows, |r| r.q_content),
            u8s(rows, |r| r.q_stability),
            u32s(rows, |r| r.quality_score),
            bools(rows, |r| r.quality_ok),
            bools(rows, |r| r.partial),
            optional_strings(rows, |r| r.evidence_path.as_deref()),
        ],
    )
}

/// Builds a `patients` batch from rows; their `patient_id` is dropped (it is the partition).
pub fn patients_batch(rows: &[PatientWindow]) -> Result<RecordBatch, SinkError> {
    batch(
        Table::Patients,
        vec![
            utc_millis(rows, |r| r.window_start_ms),
            utc_millis(rows, |r| r.window_end_ms),
            u32s(rows, |r| r.n_sites),
            u32s(rows, |r| r.n_valid_sites),
            u64s(rows, |r| r.n_frames),
            u64s(rows, |r| r.late_frames),
            bools(rows, |r| r.partial),
            optional_f64s(rows, |r| r.capillary_count),
            optional_f64s(rows, |r| r.capillary_density_per_mm2),
            optional_f64s(rows, |r| r.area_fraction),
            optional_f64s(rows, |r| r.tvd_mm_per_mm2),
            optional_f64s(rows, |r| r.tvd_small_mm_per_mm2),
            optional_f64s(rows, |r| r.mean_diameter_um),
            optional_f64s(rows, |r| r.ppv_percent),
            optional_f64s(rows, |r| r.pvd_mm_per_mm2),
            optional_f64s(rows, |r| r.mfi),
            optional_f64s(rows, |r| r.hi),
            optional_f64s(rows, |r| r.rbc_velocity_um_s),
        ],
    )
}

/// Builds a `stream_events` batch from rows; their `patient_id` is dropped (it is the partition).
pub fn stream_events_batch(rows: &[StreamEvent]) -> Result<RecordBatch, SinkError> {
    batch(
        Table::StreamEvents,
        vec![
            strings(rows, |r| &r.stream_id),
            strings(rows, |r| &r.site),
            strings(rows, |r| r.kind.name()),
            utc_millis(rows, |r| r.start_ms),
            utc_millis(rows, |r| r.end_ms),
            u64s(rows, |r| r.frames_lost),
            u32s(rows, |r| r.attempts),
            optional_strings(rows, |r| r.detail.as_deref()),
        ],
    )
}

/// Converts a `stream_events` batch back into rows of `patient_id`. Columns are found by name; a missing column, a
/// column of the wrong type, a null outside `detail` or an unknown `kind` is an error.
pub fn stream_events_from_batch(
    batch: &RecordBatch,
    patient_id: &str,
) -> Result<Vec<StreamEvent>, SinkError> {
    stream_events_from_batch_at(batch, patient_id, "<batch>")
}

/// Converts a `frames` batch back into rows of `patient_id`. Columns are found by name; a missing column, a column of
/// the wrong type or a null is an error.
pub fn frames_from_batch(
    batch: &RecordBatch,
    patient_id: &str,
) -> Result<Vec<FrameMetrics>, SinkError> {
    frames_from_batch_at(batch, patient_id, "<batch>")
}

/// Converts a `sites` batch back into rows of `patient_id`. Columns are found by name; a missing column, a column of
/// the wrong type or a null outside the nullable columns is an error.
pub fn sites_from_batch(
    batch: &RecordBatch,
    patient_id: &str,
) -> Result<Vec<SiteWindow>, SinkError> {
    sites_from_batch_at(batch, patient_id, "<batch>")
}

/// Converts a `patients` batch back into rows of `patient_id`. Columns are found by name; a missing column, a column
/// of the wrong type or a null outside the nullable columns is an error.
pub fn patients_from_batch(
    batch: &RecordBatch,
    patient_id: &str,
) -> Result<Vec<PatientWindow>, SinkError> {
    patients_from_batch_at(batch, patient_id, "<batch>")
}

/// Typed access to a batch's columns by name, naming `source` in errors.
struct Columns<'a> {
    batch: &'a RecordBatch,
    table: Table,
    source: &'a str,
}

impl<'a> Columns<'a> {
    fn bad(&self, name: &str, reason: String) -> SinkError {
        SinkError::BadColumn {
            table: self.table.name(),
            path: self.source.to_string(),
            column: name.to_string(),
            reason,
        }
    }

    /// A column that may hold nulls (an `Option` field).
    fn nullable<A: Array + 'static>(&self, name: &str) -> Result<&'a A, SinkError> {
        let column = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| self.bad(name, "missing".to_string()))?;
        column
            .as_any()
            .downcast_ref::<A>()
            .ok_or_else(|| self.bad(name, format!("unexpected type {}", column.data_type())))
    }

    /// A column that must not hold nulls.
    fn get<A: Array + 'static>(&self, name: &str) -> Result<&'a A, SinkError> {
        let column = self.nullable::<A>(name)?;
        if column.null_count() > 0 {
            return Err(self.bad(name, format!("{} null values", column.null_count())));
        }
        Ok(column)
    }
}

/// The value at `i`, `None` for a null.
fn optional(column: &Float64Array, i: usize) -> Option<f64> {
    column.is_valid(i).then(|| column.value(i))
}

pub(crate) fn frames_from_batch_at(
    batch: &RecordBatch,
    patient_id: &str,
    source: &str,
) -> Result<Vec<FrameMetrics>, SinkError> {
    let c = Columns {
        batch,
        table: Table::Frames,
        source,
    };
    let stream_id = c.get::<StringArray>("stream_id")?;
    let site = c.get::<StringArray>("site")?;
    let frame_index = c.get::<UInt64Array>("frame_index")?;
    let pts_ns = c.get::<UInt64Array>("pts_ns")?;
    let event_time = c.get::<TimestampMillisecondArray>("event_time")?;
    let width = c.get::<UInt32Array>("width")?;
    let height = c.get::<UInt32Array>("height")?;
    let um_per_px = c.get::<Float64Array>("um_per_px")?;
    let segmentation = c.get::<StringArray>("segmentation")?;
    let segmented_frames = c.get::<UInt32Array>("segmented_frames")?;
    let capillary_count = c.get::<UInt32Array>("capillary_count")?;
    let capillary_density = c.get::<Float64Array>("capillary_density_per_mm2")?;
    let area_fraction = c.get::<Float64Array>("area_fraction")?;
    let tvd = c.get::<Float64Array>("tvd_mm_per_mm2")?;
    let tvd_small = c.get::<Float64Array>("tvd_small_mm_per_mm2")?;
    let mean_diameter = c.get::<Float64Array>("mean_diameter_um")?;
    let mean_probability = c.get::<Float64Array>("mean_probability")?;
    let field_area_mm2 = c.get::<Float64Array>("field_area_mm2")?;
    let drift_x_px = c.get::<Float64Array>("drift_x_px")?;
    let drift_y_px = c.get::<Float64Array>("drift_y_px")?;
    let mean_luma = c.get::<Float64Array>("mean_luma")?;
    let saturated_fraction = c.get::<Float64Array>("saturated_fraction")?;
    let dark_fraction = c.get::<Float64Array>("dark_fraction")?;
    let focus = c.get::<Float64Array>("focus")?;
    Ok((0..batch.num_rows())
        .map(|i| FrameMetrics {
            stream_id: stream_id.value(i).to_string(),
            patient_id: patient_id.to_string(),
            site: site.value(i).to_string(),
            frame_index: frame_index.value(i),
            pts_ns: pts_ns.value(i),
            event_time_ms: event_time.value(i),
            width: width.value(i),
            height: height.value(i),
            um_per_px: um_per_px.value(i),
            segmentation: segmentation.value(i).to_string(),
            segmented_frames: segmented_frames.value(i),
            capillary_count: capillary_count.value(i),
            capillary_density_per_mm2: capillary_density.value(i),
            area_fraction: area_fraction.value(i),
            tvd_mm_per_mm2: tvd.value(i),
            tvd_small_mm_per_mm2: tvd_small.value(i),
            mean_diameter_um: mean_diameter.value(i),
            mean_probability: mean_probability.value(i),
            field_area_mm2: field_area_mm2.value(i),
            drift_x_px: drift_x_px.value(i),
            drift_y_px: drift_y_px.value(i),
            mean_luma: mean_luma.value(i),
            saturated_fraction: saturated_fraction.value(i),
            dark_fraction: dark_fraction.value(i),
            focus: focus.value(i),
        })
        .collect())
}

pub(crate) fn sites_from_batch_at(
    batch: &RecordBatch,
    patient_id: &str,
    source: &str,
) -> Result<Vec<SiteWindow>, SinkError> {
    let c = Columns {
        batch,
        table: Table::Sites,
        source,
    };
    let stream_id = c.get::<StringArray>("stream_id")?;
    let site = c.get::<StringArray>("site")?;
    let window_start = c.get::<TimestampMillisecondArray>("window_start")?;
    let window_end = c.get::<TimestampMillisecondArray>("window_end")?;
    let n_frames = c.get::<UInt64Array>("n_frames")?;
    let duration_s = c.get::<Float64Array>("duration_s")?;
    let segmentation = c.get::<StringArray>("segmentation")?;
    let capillary_count = c.get::<Float64Array>("capillary_count")?;
    let capillary_density = c.get::<Float64Array>("capillary_density_per_mm2")?;
    let area_fraction = c.get::<Float64Array>("area_fraction")?;
    let tvd = c.get::<Float64Array>("tvd_mm_per_mm2")?;
    let tvd_small = c.get::<Float64Array>("tvd_small_mm_per_mm2")?;
    let mean_diameter = c.get::<Float64Array>("mean_diameter_um")?;
    let n_flow_windows = c.get::<UInt32Array>("n_flow_windows")?;
    let ppv = c.nullable::<Float64Array>("ppv_percent")?;
    let pvd = c.nullable::<Float64Array>("pvd_mm_per_mm2")?;
    let mfi = c.nullable::<Float64Array>("mfi")?;
    let rbc_velocity = c.nullable::<Float64Array>("rbc_velocity_um_s")?;
    let max_drift_fraction = c.get::<Float64Array>("max_drift_fraction")?;
    let mean_luma = c.get::<Float64Array>("mean_luma")?;
    let focus = c.get::<Float64Array>("focus")?;
    let q_illumination = c.get::<UInt8Array>("q_illumination")?;
    let q_duration = c.get::<UInt8Array>("q_duration")?;
    let q_focus = c.get::<UInt8Array>("q_focus")?;
    let q_content = c.get::<UInt8Array>("q_content")?;
    let q_stability = c.get::<UInt8Array>("q_stability")?;
    let quality_score = c.get::<UInt32Array>("quality_score")?;
    let quality_ok = c.get::<BooleanArray>("quality_ok")?;
    let partial = c.get::<BooleanArray>("partial")?;
    let evidence_path = c.nullable::<StringArray>("evidence_path")?;
    Ok((0..batch.num_rows())
        .map(|i| SiteWindow {
            patient_id: patient_id.to_string(),
            stream_id: stream_id.value(i).to_string(),
            site: site.value(i).to_string(),
            window_start_ms: window_start.value(i),
            window_end_ms: window_end.value(i),
            n_frames: n_frames.value(i),
            duration_s: duration_s.value(i),
            segmentation: segmentation.value(i).to_string(),
            capillary_count: capillary_count.value(i),
            capillary_density_per_mm2: capillary_density.value(i),
            area_fraction: area_fraction.value(i),
            tvd_mm_per_mm2: tvd.value(i),
            tvd_small_mm_per_mm2: tvd_small.value(i),
            mean_diameter_um: mean_diameter.value(i),
            n_flow_windows: n_flow_windows.value(i),
            ppv_percent: optional(ppv, i),
            pvd_mm_per_mm2: optional(pvd, i),
            mfi: optional(mfi, i),
            rbc_velocity_um_s: optional(rbc_velocity, i),
            max_drift_fraction: max_drift_fraction.value(i),
            mean_luma: mean_luma.value(i),
            focus: focus.value(i),
            q_illumination: q_illumination.value(i),
            q_duration: q_duration.value(i),
            q_focus: q_focus.value(i),
            q_content: q_content.value(i),
            q_stability: q_stability.value(i),
            quality_score: quality_score.value(i),
            quality_ok: quality_ok.value(i),
            partial: partial.value(i),
            evidence_path: evidence_path
                .is_valid(i)
                .then(|| evidence_path.value(i).to_string()),
        })
        .collect())
}

pub(crate) fn patients_from_batch_at(
    batch: &RecordBatch,
    patient_id: &str,
    source: &str,
) -> Result<Vec<PatientWindow>, SinkError> {
    let c = Columns {
        batch,
        table: Table::Patients,
        source,
    };
    let window_start = c.get::<TimestampMillisecondArray>("window_start")?;
    let window_end = c.get::<TimestampMillisecondArray>("window_end")?;
    let n_sites = c.get::<UInt32Array>("n_sites")?;
    let n_valid_sites = c.get::<UInt32Array>("n_valid_sites")?;
    let n_frames = c.get::<UInt64Array>("n_frames")?;
    let late_frames = c.get::<UInt64Array>("late_frames")?;
    let partial = c.get::<BooleanArray>("partial")?;
    let capillary_count = c.nullable::<Float64Array>("capillary_count")?;
    let capillary_density = c.nullable::<Float64Array>("capillary_density_per_mm2")?;
    let area_fraction = c.nullable::<Float64Array>("area_fraction")?;
    let tvd = c.nullable::<Float64Array>("tvd_mm_per_mm2")?;
    let tvd_small = c.nullable::<Float64Array>("tvd_small_mm_per_mm2")?;
    let mean_diameter = c.nullable::<Float64Array>("mean_diameter_um")?;
    let ppv = c.nullable::<Float64Array>("ppv_percent")?;
    let pvd = c.nullable::<Float64Array>("pvd_mm_per_mm2")?;
    let mfi = c.nullable::<Float64Array>("mfi")?;
    let hi = c.nullable::<Float64Array>("hi")?;
    let rbc_velocity = c.nullable::<Float64Array>("rbc_velocity_um_s")?;
    Ok((0..batch.num_rows())
        .map(|i| PatientWindow {
            patient_id: patient_id.to_string(),
            window_start_ms: window_start.value(i),
            window_end_ms: window_end.value(i),
            n_sites: n_sites.value(i),
            n_valid_sites: n_valid_sites.value(i),
            n_frames: n_frames.value(i),
            late_frames: late_frames.value(i),
            partial: partial.value(i),
            capillary_count: optional(capillary_count, i),
            capillary_density_per_mm2: optional(capillary_density, i),
            area_fraction: optional(area_fraction, i),
            tvd_mm_per_mm2: optional(tvd, i),
            tvd_small_mm_per_mm2: optional(tvd_small, i),
            mean_diameter_um: optional(mean_diameter, i),
            ppv_percent: optional(ppv, i),
            pvd_mm_per_mm2: optional(pvd, i),
            mfi: optional(mfi, i),
            hi: optional(hi, i),
            rbc_velocity_um_s: optional(rbc_velocity, i),
        })
        .collect())
}

pub(crate) fn stream_events_from_batch_at(
    batch: &RecordBatch,
    patient_id: &str,
    source: &str,
) -> Result<Vec<StreamEvent>, SinkError> {
    let c = Columns {
        batch,
        table: Table::StreamEvents,
        source,
    };
    let stream_id = c.get::<StringArray>("stream_id")?;
    let site = c.get::<StringArray>("site")?;
    let kind = c.get::<StringArray>("kind")?;
    let start = c.get::<TimestampMillisecondArray>("start_time")?;
    let end = c.get::<TimestampMillisecondArray>("end_time")?;
    let frames_lost = c.get::<UInt64Array>("frames_lost")?;
    let attempts = c.get::<UInt32Array>("attempts")?;
    let detail = c.nullable::<StringArray>("detail")?;
    (0..batch.num_rows())
        .map(|i| {
            let kind = EventKind::from_name(kind.value(i))
                .ok_or_else(|| c.bad("kind", format!("unknown kind {:?}", kind.value(i))))?;
            Ok(StreamEvent {
                stream_id: stream_id.value(i).to_string(),
                patient_id: patient_id.to_string(),
                site: site.value(i).to_string(),
                kind,
                start_ms: start.value(i),
                end_ms: end.value(i),
                frames_lost: frames_lost.value(i),
                attempts: attempts.value(i),
                detail: detail.is_valid(i).then(|| detail.value(i).to_string()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(patient: &str, stream: &str, i: u64) -> FrameMetrics {
        FrameMetrics {
            stream_id: stream.into(),
            patient_id: patient.into(),
            site: "sublingual-1".into(),
            frame_index: i,
            pts_ns: i * 40_000_000,
            event_time_ms: 1_700_000_000_000 + i as i64 * 40,
            width: 640,
            height: 480,
            um_per_px: 1.25,
            segmentation: "every_nth".into(),
            segmented_frames: 3,
            capillary_count: 7 + i as u32,
            capillary_density_per_mm2: 17.5,
            area_fraction: 0.125,
            tvd_mm_per_mm2: 14.25,
            tvd_small_mm_per_mm2: 11.5,
            mean_diameter_um: 9.75,
            mean_probability: 0.875,
            field_area_mm2: 0.48,
            drift_x_px: -1.5,
            drift_y_px: 2.25,
            mean_luma: 120.5,
            saturated_fraction: 0.001,
            dark_fraction: 0.002,
            focus: 31.0,
        }
    }

    fn site(patient: &str, stream: &str, start: i64, flow: bool) -> SiteWindow {
        SiteWindow {
            patient_id: patient.into(),
            stream_id: stream.into(),
            site: "sublingual-1".into(),
            window_start_ms: start,
            window_end_ms: start + 10_000,
            n_frames: 250,
            duration_s: 9.96,
            segmentation: "every_frame".into(),
            capillary_count: 12.5,
            capillary_density_per_mm2: 20.0,
            area_fraction: 0.1,
            tvd_mm_per_mm2: 15.0,
            tvd_small_mm_per_mm2: 12.0,
            mean_diameter_um: 11.0,
            n_flow_windows: if flow { 4 } else { 0 },
            ppv_percent: flow.then_some(92.5),
            pvd_mm_per_mm2: flow.then_some(13.875),
            mfi: flow.then_some(2.75),
            rbc_velocity_um_s: None,
            max_drift_fraction: 0.05,
            mean_luma: 110.0,
            focus: 42.0,
            q_illumination: 0,
            q_duration: 1,
            q_focus: 10,
            q_content: 0,
            q_stability: 1,
            quality_score: 12,
            quality_ok: flow,
            partial: !flow,
            evidence_path: flow
                .then(|| format!("evidence/patient_id={patient}/{stream}_{start}.png")),
        }
    }

    fn patient(patient: &str, start: i64, valid: bool) -> PatientWindow {
        PatientWindow {
            patient_id: patient.into(),
            window_start_ms: start,
            window_end_ms: start + 10_000,
            n_sites: 2,
            n_valid_sites: u32::from(valid),
            n_frames: 500,
            late_frames: 3,
            capillary_count: valid.then_some(12.5),
            capillary_density_per_mm2: valid.then_some(20.0),
            area_fraction: valid.then_some(0.1),
            tvd_mm_per_mm2: valid.then_some(15.0),
            tvd_small_mm_per_mm2: valid.then_some(12.0),
            mean_diameter_um: valid.then_some(11.0),
            ppv_percent: valid.then_some(92.5),
            pvd_mm_per_mm2: valid.then_some(13.875),
            mfi: valid.then_some(2.75),
            hi: None,
            rbc_velocity_um_s: valid.then_some(850.0),
            partial: valid,
        }
    }

    fn type_name(field: &Field) -> &'static str {
        match (field.data_type(), field.is_nullable()) {
            (DataType::Utf8, false) => UTF8,
            (DataType::Boolean, false) => BOOL,
            (DataType::UInt8, false) => UINT8,
            (DataType::UInt32, false) => UINT32,
            (DataType::UInt64, false) => UINT64,
            (DataType::Float64, false) => FLOAT64,
            (DataType::Float64, true) => FLOAT64_NULLABLE,
            (DataType::Utf8, true) => UTF8_NULLABLE,
            (DataType::Timestamp(TimeUnit::Millisecond, Some(tz)), false)
                if tz.as_ref() == "UTC" =>
            {
                TIMESTAMP
            }
            (other, nullable) => {
                panic!("type {other} (nullable: {nullable}) has no name in columns()")
            }
        }
    }

    #[test]
    fn columns_match_the_arrow_schema() {
        for table in Table::ALL {
            let schema = table.schema();
            let listed: Vec<(&str, &str)> =
                columns(table).iter().map(|(n, t, _)| (*n, *t)).collect();
            let actual: Vec<(&str, &str)> = schema
                .fields()
                .iter()
                .map(|f| (f.name().as_str(), type_name(f)))
                .collect();
            assert_eq!(listed, actual, "{table}");
            assert!(schema.field_with_name("patient_id").is_err());
            assert!(columns(table)
                .iter()
                .all(|(_, _, meaning)| !meaning.is_empty()));
            assert!(
                columns(table)
                    .iter()
                    .all(|(name, _, _)| !name.ends_with("_ms")),
                "{table}: times are stored as timestamps, without the _ms suffix"
            );
        }
        assert_eq!(
            Table::ALL.map(Table::name),
            ["frames", "sites", "patients", "stream_events"]
        );
    }

    #[test]
    fn only_option_fields_are_nullable() {
        let nullable = |table: Table| -> Vec<String> {
            table
                .schema()
                .fields()
                .iter()
                .filter(|f| f.is_nullable())
                .map(|f| f.name().clone())
                .collect()
        };
        assert!(nullable(Table::Frames).is_empty());
        assert_eq!(
            nullable(Table::Sites),
            [
                "ppv_percent",
                "pvd_mm_per_mm2",
                "mfi",
                "rbc_velocity_um_s",
                "evidence_path"
            ]
        );
        // Everything but the window bounds, the counts and `partial`.
        assert_eq!(nullable(Table::Patients).len(), PATIENTS_COLUMNS.len() - 7);
        assert_eq!(nullable(Table::StreamEvents), vec!["detail"]);
    }

    #[test]
    fn frames_round_trip() {
        let rows = vec![
            frame("p1", "s1", 0),
            frame("p1", "s2", 1),
            frame("p1", "s1", 2),
        ];
        let batch = frames_batch(&rows).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.num_columns(), FRAMES_COLUMNS.len());
        assert_eq!(frames_from_batch(&batch, "p1").unwrap(), rows);
    }

    #[test]
    fn sites_round_trip_with_nulls_and_bools() {
        let mut rows = vec![site("p1", "s1", 0, true), site("p1", "s2", 0, false)];
        rows[0].rbc_velocity_um_s = Some(812.5);
        let batch = sites_batch(&rows).unwrap();
        assert_eq!(batch.num_columns(), SITES_COLUMNS.len());
        assert_eq!(sites_from_batch(&batch, "p1").unwrap(), rows);
        let ppv = batch.column_by_name("ppv_percent").unwrap();
        assert_eq!(ppv.null_count(), 1);
        assert!(ppv.is_null(1));
        let ok = batch
            .column_by_name("quality_ok")
            .unwrap()
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap();
        assert!(ok.value(0) && !ok.value(1));
        let focus = batch
            .column_by_name("q_focus")
            .unwrap()
            .as_any()
            .downcast_ref::<UInt8Array>()
            .unwrap();
        assert_eq!(focus.value(0), 10);
    }

    #[test]
    fn patients_round_trip_with_nulls() {
        let rows = vec![patient("p1", 0, true), patient("p1", 10_000, false)];
        let batch = patients_batch(&rows).unwrap();
        assert_eq!(batch.num_columns(), PATIENTS_COLUMNS.len());
        assert_eq!(patients_from_batch(&batch, "p1").unwrap(), rows);
        assert_eq!(batch.column_by_name("hi").unwrap().null_count(), 2);
        assert_eq!(batch.column_by_name("mfi").unwrap().null_count(), 1);
        assert_eq!(batch.column_by_name("n_sites").unwrap().null_count(), 0);
    }

    #[test]
    fn stream_events_round_trip_and_reject_unknown_kinds() {
        let event = |kind, detail: Option<&str>| StreamEvent {
            stream_id: "cam".into(),
            patient_id: "P".into(),
            site: "sublingual".into(),
            kind,
            start_ms: 1_000,
            end_ms: 3_000,
            frames_lost: 49,
            attempts: 2,
            detail: detail.map(String::from),
        };
        let rows = vec![
            event(EventKind::Started, None),
            event(EventKind::Gap, Some("connection refused")),
        ];
        let batch = stream_events_batch(&rows).unwrap();
        assert_eq!(stream_events_from_batch(&batch, "P").unwrap(), rows);
        let mut columns = batch.columns().to_vec();
        columns[2] = Arc::new(StringArray::from(vec!["started", "exploded"]));
        let bad = RecordBatch::try_new(batch.schema(), columns).unwrap();
        let err = stream_events_from_batch(&bad, "P").unwrap_err();
        assert!(err.to_string().contains("exploded"), "{err}");
    }

    #[test]
    fn empty_batches_round_trip() {
        assert_eq!(frames_batch(&[]).unwrap().num_rows(), 0);
        assert!(sites_from_batch(&sites_batch(&[]).unwrap(), "p")
            .unwrap()
            .is_empty());
        assert!(patients_from_batch(&patients_batch(&[]).unwrap(), "p")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn wrong_batch_is_a_typed_error() {
        let batch = frames_batch(&[frame("p", "s", 0)]).unwrap();
        for err in [
            sites_from_batch(&batch, "p").unwrap_err(),
            patients_from_batch(&batch, "p").unwrap_err(),
        ] {
            assert!(
                matches!(&err, SinkError::BadColumn { column, .. } if column == "window_start"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_null_outside_the_nullable_columns_is_an_error() {
        // Another writer may declare every column nullable; nulls are only accepted where the row has an Option.
        let good = sites_batch(&[site("p", "s", 0, true), site("p", "s", 10_000, true)]).unwrap();
        let schema = Schema::new(
            good.schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        );
        let relaxed =
            RecordBatch::try_new(Arc::new(schema.clone()), good.columns().to_vec()).unwrap();
        assert_eq!(
            sites_from_batch(&relaxed, "p").unwrap(),
            sites_from_batch(&good, "p").unwrap()
        );
        let mut columns = good.columns().to_vec();
        let index = schema.index_of("quality_ok").unwrap();
        columns[index] = Arc::new(BooleanArray::from(vec![Some(true), None]));
        let broken = RecordBatch::try_new(Arc::new(schema), columns).unwrap();
        let err = sites_from_batch(&broken, "p").unwrap_err();
        assert!(
            matches!(&err, SinkError::BadColumn { column, reason, .. }
                if column == "quality_ok" && reason.contains("null")),
            "{err}"
        );
    }
}
