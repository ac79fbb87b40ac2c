//! Arrow/Parquet tables on object storage for capflow's outputs.
//!
//! capflow writes three tables:
//!
//! * `frames`: one row per segmented frame ([`FrameMetrics`](capflow_operators::records::FrameMetrics));
//! * `sites`: one row per stream (recording site) and event-time window, with vessel, flow and quality measures
//!   ([`SiteWindow`](capflow_operators::records::SiteWindow));
//! * `patients`: one row per patient and event-time window, combined over the sites that passed the quality check
//!   ([`PatientWindow`](capflow_operators::records::PatientWindow)).
//!
//! Each is a folder of Parquet files, Hive-partitioned by patient, under an output location that is a local folder,
//! an `s3://bucket/prefix`, or `memory://` for tests:
//!
//! ```text
//! <root>/frames/patient_id=<escaped id>/<part>.parquet
//! <root>/sites/patient_id=<escaped id>/<part>.parquet
//! <root>/patients/patient_id=<escaped id>/<part>.parquet
//! ```
//!
//! `patient_id` lives only in the folder name (see [`partition`] for the escaping that keeps any id path-safe);
//! the file columns are listed by [`columns`] (only the columns of `Option` fields are nullable; null means "not
//! measurable in this window"). Files are zstd-compressed, written atomically, and carry the
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
//!     stream_id: "s1".into(),
//!     patient_id: "P-001".into(),
//!     site: "sublingual-1".into(),
//!     event_time_ms: 1_700_000_000_000,
//!     um_per_px: 1.2,
//!     segmentation: "every_frame".into(),
//!     segmented_frames: 1,
//!     capillary_count: 12,
//!     capillary_density_per_mm2: 25.0,
//!     ..FrameMetrics::default()
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
pub use read::{read_frames, read_patients, read_sites};
pub use schema::{
    columns, frames_batch, frames_from_batch, patients_batch, patients_from_batch, sites_batch,
    sites_from_batch, Table, SCHEMA_VERSION,
};
pub use store::{open_output, Output, S3Options};
pub use writer::TableWriter;
