//! Arrow schemas of the `frames` and `windows` tables, and conversion between rows and record batches.
//!
//! `patient_id` is the Hive partition column: it is encoded in the folder name (`patient_id=<escaped>/`), not stored
//! in the files (the Spark/Hive convention), so converting a batch back to rows takes the patient id as an argument.
//! Times are stored as `Timestamp(Millisecond, "UTC")` under names without the `_ms` suffix, and each window
//! statistic is flattened into `<metric>_mean`, `<metric>_median`, `<metric>_p10`, `<metric>_p90`. No column is
//! nullable.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, Float64Array, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use capflow_operators::records::{FrameMetrics, Stats, WindowAggregate};

use crate::SinkError;

/// Version of the table layout written into every file's `capflow.schema_version` metadata. Bump it on any
/// incompatible change to the columns below.
pub const SCHEMA_VERSION: u32 = 1;

/// One of capflow's two tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// One row per segmented frame ([`FrameMetrics`]).
    Frames,
    /// One row per patient and tumbling event-time window ([`WindowAggregate`]).
    Windows,
}

impl Table {
    /// Both tables.
    pub const ALL: [Table; 2] = [Table::Frames, Table::Windows];

    /// The table's name and folder: `frames` or `windows`.
    pub fn name(self) -> &'static str {
        match self {
            Table::Frames => "frames",
            Table::Windows => "windows",
        }
    }

    /// The table's Arrow schema (without the `patient_id` partition column).
    pub fn schema(self) -> SchemaRef {
        static FRAMES: OnceLock<SchemaRef> = OnceLock::new();
        static WINDOWS: OnceLock<SchemaRef> = OnceLock::new();
        match self {
            Table::Frames => FRAMES.get_or_init(|| build_schema(FRAMES_COLUMNS)).clone(),
            Table::Windows => WINDOWS
                .get_or_init(|| build_schema(WINDOWS_COLUMNS))
                .clone(),
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Column type names used in [`columns`]; each maps to exactly one Arrow type.
const UTF8: &str = "utf8";
const UINT64: &str = "uint64";
const UINT32: &str = "uint32";
const TIMESTAMP: &str = "timestamp[ms, UTC]";
const FLOAT64: &str = "float64";

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
        "capillary_count",
        UINT32,
        "capillaries (connected components within the area range)",
    ),
    (
        "area_fraction",
        FLOAT64,
        "capillary pixels / analysed pixels, 0..1",
    ),
    (
        "density_per_mm2",
        FLOAT64,
        "capillaries per mm² of analysed field",
    ),
    (
        "mean_probability",
        FLOAT64,
        "mean model probability over counted capillaries, 0..1",
    ),
    ("field_area_mm2", FLOAT64, "analysed field area, mm²"),
];

const WINDOWS_COLUMNS: &[(&str, &str, &str)] = &[
    ("window_start", TIMESTAMP, "inclusive window start"),
    ("window_end", TIMESTAMP, "exclusive window end"),
    (
        "n_frames",
        UINT64,
        "frames in the window, over all of the patient's streams",
    ),
    (
        "n_streams",
        UINT32,
        "distinct streams (sites) that contributed frames",
    ),
    (
        "capillary_count_mean",
        FLOAT64,
        "capillaries per frame: mean",
    ),
    (
        "capillary_count_median",
        FLOAT64,
        "capillaries per frame: median",
    ),
    (
        "capillary_count_p10",
        FLOAT64,
        "capillaries per frame: 10th percentile",
    ),
    (
        "capillary_count_p90",
        FLOAT64,
        "capillaries per frame: 90th percentile",
    ),
    ("area_fraction_mean", FLOAT64, "area fraction (0..1): mean"),
    (
        "area_fraction_median",
        FLOAT64,
        "area fraction (0..1): median",
    ),
    (
        "area_fraction_p10",
        FLOAT64,
        "area fraction (0..1): 10th percentile",
    ),
    (
        "area_fraction_p90",
        FLOAT64,
        "area fraction (0..1): 90th percentile",
    ),
    ("density_per_mm2_mean", FLOAT64, "capillaries per mm²: mean"),
    (
        "density_per_mm2_median",
        FLOAT64,
        "capillaries per mm²: median",
    ),
    (
        "density_per_mm2_p10",
        FLOAT64,
        "capillaries per mm²: 10th percentile",
    ),
    (
        "density_per_mm2_p90",
        FLOAT64,
        "capillaries per mm²: 90th percentile",
    ),
    (
        "mean_probability_mean",
        FLOAT64,
        "mean capillary probability (0..1): mean",
    ),
    (
        "mean_probability_median",
        FLOAT64,
        "mean capillary probability (0..1): median",
    ),
    (
        "mean_probability_p10",
        FLOAT64,
        "mean capillary probability (0..1): 10th percentile",
    ),
    (
        "mean_probability_p90",
        FLOAT64,
        "mean capillary probability (0..1): 90th percentile",
    ),
];

/// The columns stored in a table's files, in order: `(name, type, unit or meaning)`. The type is one of `utf8`,
/// `uint32`, `uint64`, `float64`, `timestamp[ms, UTC]`. Used to generate the schema table in the README; a unit
/// test keeps it equal to the Arrow schema.
pub fn columns(table: Table) -> &'static [(&'static str, &'static str, &'static str)] {
    match table {
        Table::Frames => FRAMES_COLUMNS,
        Table::Windows => WINDOWS_COLUMNS,
    }
}

fn data_type(type_name: &str) -> DataType {
    match type_name {
        UTF8 => DataType::Utf8,
        UINT64 => DataType::UInt64,
        UINT32 => DataType::UInt32,
        TIMESTAMP => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        FLOAT64 => DataType::Float64,
        other => unreachable!("unknown column type name {other}"),
    }
}

fn build_schema(columns: &[(&str, &str, &str)]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, ty, _)| Field::new(*name, data_type(ty), false))
        .collect();
    Arc::new(Schema::new(fields))
}

fn utc_millis(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
}

/// Builds a `frames` batch from rows; their `patient_id` is dropped (it is the partition).
pub fn frames_batch(rows: &[FrameMetrics]) -> Result<RecordBatch, SinkError> {
    let strings = |f: fn(&FrameMetrics) -> &str| -> ArrayRef {
        Arc::new(rows.iter().map(f).map(Some).collect::<StringArray>())
    };
    let u64s = |f: fn(&FrameMetrics) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let u32s = |f: fn(&FrameMetrics) -> u32| -> ArrayRef {
        Arc::new(UInt32Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let f64s = |f: fn(&FrameMetrics) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let columns = vec![
        strings(|r| &r.stream_id),
        strings(|r| &r.site),
        u64s(|r| r.frame_index),
        u64s(|r| r.pts_ns),
        utc_millis(rows.iter().map(|r| r.event_time_ms).collect()),
        u32s(|r| r.width),
        u32s(|r| r.height),
        f64s(|r| r.um_per_px),
        u32s(|r| r.capillary_count),
        f64s(|r| r.area_fraction),
        f64s(|r| r.density_per_mm2),
        f64s(|r| r.mean_probability),
        f64s(|r| r.field_area_mm2),
    ];
    RecordBatch::try_new(Table::Frames.schema(), columns).map_err(|source| SinkError::Arrow {
        table: Table::Frames.name(),
        source,
    })
}

/// Builds a `windows` batch from rows; their `patient_id` is dropped (it is the partition).
pub fn windows_batch(rows: &[WindowAggregate]) -> Result<RecordBatch, SinkError> {
    let mut columns = vec![
        utc_millis(rows.iter().map(|r| r.window_start_ms).collect()),
        utc_millis(rows.iter().map(|r| r.window_end_ms).collect()),
        Arc::new(UInt64Array::from(
            rows.iter().map(|r| r.n_frames).collect::<Vec<_>>(),
        )) as ArrayRef,
        Arc::new(UInt32Array::from(
            rows.iter().map(|r| r.n_streams).collect::<Vec<_>>(),
        )),
    ];
    for metric in STATS_METRICS {
        let stats: Vec<Stats> = rows.iter().map(|r| *metric(r)).collect();
        for part in STATS_PARTS {
            columns.push(Arc::new(Float64Array::from(
                stats.iter().map(part).collect::<Vec<_>>(),
            )));
        }
    }
    RecordBatch::try_new(Table::Windows.schema(), columns).map_err(|source| SinkError::Arrow {
        table: Table::Windows.name(),
        source,
    })
}

/// The flattened statistics, in column order.
const STATS_METRICS: [fn(&WindowAggregate) -> &Stats; 4] = [
    |r| &r.capillary_count,
    |r| &r.area_fraction,
    |r| &r.density_per_mm2,
    |r| &r.mean_probability,
];
const STATS_PARTS: [fn(&Stats) -> f64; 4] = [|s| s.mean, |s| s.median, |s| s.p10, |s| s.p90];

/// Converts a `frames` batch back into rows of `patient_id`. Columns are found by name; a missing column, a column of
/// the wrong type or a null is an error.
pub fn frames_from_batch(
    batch: &RecordBatch,
    patient_id: &str,
) -> Result<Vec<FrameMetrics>, SinkError> {
    frames_from_batch_at(batch, patient_id, "<batch>")
}

/// Converts a `windows` batch back into rows of `patient_id`. Columns are found by name; a missing column, a column
/// of the wrong type or a null is an error.
pub fn windows_from_batch(
    batch: &RecordBatch,
    patient_id: &str,
) -> Result<Vec<WindowAggregate>, SinkError> {
    windows_from_batch_at(batch, patient_id, "<batch>")
}

/// Typed, null-checked access to a batch's columns by name, naming `source` in errors.
struct Columns<'a> {
    batch: &'a RecordBatch,
    table: Table,
    source: &'a str,
}

impl<'a> Columns<'a> {
    fn get<A: Array + 'static>(&self, name: &str) -> Result<&'a A, SinkError> {
        let bad = |reason: String| SinkError::BadColumn {
            table: self.table.name(),
            path: self.source.to_string(),
            column: name.to_string(),
            reason,
        };
        let column = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| bad("missing".to_string()))?;
        if column.null_count() > 0 {
            return Err(bad(format!("{} null values", column.null_count())));
        }
        column
            .as_any()
            .downcast_ref::<A>()
            .ok_or_else(|| bad(format!("unexpected type {}", column.data_type())))
    }
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
    let capillary_count = c.get::<UInt32Array>("capillary_count")?;
    let area_fraction = c.get::<Float64Array>("area_fraction")?;
    let density_per_mm2 = c.get::<Float64Array>("density_per_mm2")?;
    let mean_probability = c.get::<Float64Array>("mean_probability")?;
    let field_area_mm2 = c.get::<Float64Array>("field_area_mm2")?;
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
            capillary_count: capillary_count.value(i),
            area_fraction: area_fraction.value(i),
            density_per_mm2: density_per_mm2.value(i),
            mean_probability: mean_probability.value(i),
            field_area_mm2: field_area_mm2.value(i),
        })
        .collect())
}

pub(crate) fn windows_from_batch_at(
    batch: &RecordBatch,
    patient_id: &str,
    source: &str,
) -> Result<Vec<WindowAggregate>, SinkError> {
    let c = Columns {
        batch,
        table: Table::Windows,
        source,
    };
    let window_start = c.get::<TimestampMillisecondArray>("window_start")?;
    let window_end = c.get::<TimestampMillisecondArray>("window_end")?;
    let n_frames = c.get::<UInt64Array>("n_frames")?;
    let n_streams = c.get::<UInt32Array>("n_streams")?;
    let stats = |metric: &str| -> Result<[&Float64Array; 4], SinkError> {
        Ok([
            c.get::<Float64Array>(&format!("{metric}_mean"))?,
            c.get::<Float64Array>(&format!("{metric}_median"))?,
            c.get::<Float64Array>(&format!("{metric}_p10"))?,
            c.get::<Float64Array>(&format!("{metric}_p90"))?,
        ])
    };
    let capillary_count = stats("capillary_count")?;
    let area_fraction = stats("area_fraction")?;
    let density_per_mm2 = stats("density_per_mm2")?;
    let mean_probability = stats("mean_probability")?;
    let at = |cols: &[&Float64Array; 4], i: usize| Stats {
        mean: cols[0].value(i),
        median: cols[1].value(i),
        p10: cols[2].value(i),
        p90: cols[3].value(i),
    };
    Ok((0..batch.num_rows())
        .map(|i| WindowAggregate {
            patient_id: patient_id.to_string(),
            window_start_ms: window_start.value(i),
            window_end_ms: window_end.value(i),
            n_frames: n_frames.value(i),
            n_streams: n_streams.value(i),
            capillary_count: at(&capillary_count, i),
            area_fraction: at(&area_fraction, i),
            density_per_mm2: at(&density_per_mm2, i),
            mean_probability: at(&mean_probability, i),
        })
        .collect())
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
            capillary_count: 7 + i as u32,
            area_fraction: 0.125,
            density_per_mm2: 17.5,
            mean_probability: 0.875,
            field_area_mm2: 0.48,
        }
    }

    fn window(patient: &str, start: i64) -> WindowAggregate {
        let s = |x: f64| Stats {
            mean: x,
            median: x + 0.5,
            p10: x - 1.0,
            p90: x + 2.0,
        };
        WindowAggregate {
            patient_id: patient.into(),
            window_start_ms: start,
            window_end_ms: start + 10_000,
            n_frames: 250,
            n_streams: 2,
            capillary_count: s(12.0),
            area_fraction: s(0.1),
            density_per_mm2: s(20.0),
            mean_probability: s(0.8),
        }
    }

    fn type_name(dt: &DataType) -> &'static str {
        match dt {
            DataType::Utf8 => UTF8,
            DataType::UInt64 => UINT64,
            DataType::UInt32 => UINT32,
            DataType::Float64 => FLOAT64,
            DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => {
                TIMESTAMP
            }
            other => panic!("type {other} has no name in columns()"),
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
                .map(|f| (f.name().as_str(), type_name(f.data_type())))
                .collect();
            assert_eq!(listed, actual, "{table}");
            assert!(schema.fields().iter().all(|f| !f.is_nullable()));
            assert!(schema.field_with_name("patient_id").is_err());
            assert!(columns(table)
                .iter()
                .all(|(_, _, meaning)| !meaning.is_empty()));
        }
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
    fn windows_round_trip() {
        let rows = vec![window("p1", 0), window("p1", 10_000)];
        let batch = windows_batch(&rows).unwrap();
        assert_eq!(batch.num_columns(), WINDOWS_COLUMNS.len());
        assert_eq!(windows_from_batch(&batch, "p1").unwrap(), rows);
        let col = batch
            .column_by_name("density_per_mm2_p90")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(col.value(0), 22.0);
    }

    #[test]
    fn empty_batches_round_trip() {
        assert_eq!(frames_batch(&[]).unwrap().num_rows(), 0);
        assert!(windows_from_batch(&windows_batch(&[]).unwrap(), "p")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn wrong_batch_is_a_typed_error() {
        let batch = frames_batch(&[frame("p", "s", 0)]).unwrap();
        let err = windows_from_batch(&batch, "p").unwrap_err();
        assert!(
            matches!(&err, SinkError::BadColumn { column, .. } if column == "window_start"),
            "{err}"
        );
    }
}
