//! Arrow/Parquet tables on object storage for capflow's outputs.
//!
//! capflow writes two tables, `frames` (one row per segmented frame,
//! [`FrameMetrics`](capflow_operators::records::FrameMetrics)) and `windows` (one row per
//! patient and event-time window,
//! [`WindowAggregate`](capflow_operators::records::WindowAggregate)). Each is a folder of Parquet files, Hive-partitioned by
//! patient, under an output location that is a local folder, an `s3://bucket/prefix`, or `memory://` for tests:
//!
//! ```text
//! <root>/frames/patient_id=<escaped id>/<part>.parquet
//! <root>/windows/patient_id=<escaped id>/<part>.parquet
//! ```
//!
//! `patient_id` lives only in the folder name (see [`partition`] for the escaping that keeps any id path-safe);
//! the file columns are listed by [`columns`]. Files are zstd-compressed, written atomically, and carry the
//! key-value metadata `capflow.schema_version`, `capflow.version` and `capflow.table`.
//!
//! * [`store`]: [`open_output`] turns a location and [`S3Options`] into an [`Output`];
//! * [`schema`]: the Arrow schemas and rows ⇄ [`RecordBatch`](arrow::record_batch::RecordBatch) conversion;
//! * [`partition`]: the `patient_id=` folder names;
//! * [`writer`]: [`TableWriter`], one per timely worker, with a blocking `write_part`;
//! * [`read`]: reading a table back into sorted rows.
//!
//! ```
//! use capflow_operators::records::FrameMetrics;
//! use capflow_sinks::{frames_batch, open_output, read_frames, S3Options, Table, TableWriter};
//!
//! let runtime = tokio::runtime::Runtime::new().unwrap();
//! let output = open_output("memory://", &S3Options::default()).unwrap();
//! let writer = TableWriter::new(output.clone(), runtime.handle().clone());
//!
//! let row = FrameMetrics {
//!     stream_id: "s1".into(), patient_id: "P-001".into(), site: "sublingual-1".into(),
//!     frame_index: 0, pts_ns: 0, event_time_ms: 1_700_000_000_000, width: 640, height: 480,
//!     um_per_px: 1.2, capillary_count: 12, area_fraction: 0.1, density_per_mm2: 25.0,
//!     mean_probability: 0.9, field_area_mm2: 0.44,
//! };
//! let batch = frames_batch(std::slice::from_ref(&row)).unwrap();
//! let path = writer.write_part(Table::Frames, "P-001", "w0-e000000", &batch).unwrap();
//! assert_eq!(path.as_ref(), "frames/patient_id=P-001/w0-e000000.parquet");
//!
//! assert_eq!(read_frames(&output, runtime.handle()).unwrap(), vec![row]);
//! ```

mod error;
pub mod partition;
pub mod read;
pub mod schema;
pub mod store;
pub mod writer;

pub use error::SinkError;
pub use read::{read_frames, read_windows};
pub use schema::{
    columns, frames_batch, frames_from_batch, windows_batch, windows_from_batch, Table,
    SCHEMA_VERSION,
};
pub use store::{open_output, Output, S3Options};
pub use writer::TableWriter;
