//! Arrow/Parquet tables on object storage for capflow's outputs.
//!
//! capflow writes four tables:
//!
//! * `frames`: one row per segmented frame ([`FrameMetrics`](capflow_operators::records::FrameMetrics));
//! * `sites`: one row per stream (recording site) and event-time window, with vessel, flow and quality measures
//!   ([`SiteWindow`](capflow_operators::records::SiteWindow));
//! * `patients`: one row per patient and event-time window, combined over the sites that passed the quality check
//!   ([`PatientWindow`](capflow_operators::records::PatientWindow));
//! * `stream_events`: one row per thing that happened to a stream (started, ended, source gaps and reconnects,
//!   frames dropped under overload, stopped, failed) ([`StreamEvent`](capflow_operators::records::StreamEvent)).
//!
//! Each is a folder of Parquet files, Hive-partitioned by patient and UTC day, under an output location that is a
//! local folder, an `s3://bucket/prefix`, or `memory://` for tests:
//!
//! ```text
//! <root>/frames/patient_id=<escaped id>/date=<yyyy-mm-dd>/<part>.parquet
//! <root>/sites/patient_id=<escaped id>/date=<yyyy-mm-dd>/<part>.parquet
//! <root>/patients/patient_id=<escaped id>/date=<yyyy-mm-dd>/<part>.parquet
//! <root>/stream_events/patient_id=<escaped id>/date=<yyyy-mm-dd>/<part>.parquet
//! <root>/_capflow/job.json                                   the job this output belongs to
//! <root>/_capflow/commits/<table>/…/<part>.parquet.json      one commit marker per part
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
//! * [`commit`]: part ids, commit markers and the job manifest, which make re-runs and resumes exactly-once;
//! * [`writer`]: [`TableWriter`], one per timely worker, with a blocking `commit` that retries through outages;
//! * [`pseudonym`]: keyed pseudonyms that keep patient identifiers out of paths, rows and logs;
//! * [`read`]: reading a table back into sorted rows.
//!
//! ```
//! use capflow_operators::records::FrameMetrics;
//! use capflow_sinks::{frames_batch, open_output, read_frames, PartId, S3Options, Table, TableWriter};
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
//! let part = PartId::new(Table::Frames, "P-001", row.event_time_ms, "part-s1-000000");
//! let commit = writer.commit(&part, &batch).unwrap();
//! assert_eq!(commit.path.as_ref(), "frames/patient_id=P-001/date=2023-11-14/part-s1-000000.parquet");
//! // Committing the same part again (a re-run, a resume) writes nothing.
//! assert!(writer.commit(&part, &batch).unwrap().skipped);
//!
//! assert_eq!(read_frames(&output, runtime.handle()).unwrap(), vec![row]);
//! ```

pub mod commit;
mod error;
pub mod partition;
pub mod pseudonym;
pub mod read;
pub mod schema;
pub mod store;
pub mod writer;

pub use commit::{open_job, Job, JobState, PartId};
pub use error::SinkError;
pub use pseudonym::Pseudonymiser;
pub use read::{read_frames, read_patients, read_sites, read_stream_events};
pub use schema::{
    columns, frames_batch, frames_from_batch, patients_batch, patients_from_batch, sites_batch,
    sites_from_batch, stream_events_batch, stream_events_from_batch, Table, SCHEMA_VERSION,
};
pub use store::{open_output, presign_s3_get, Output, S3Options};
pub use writer::{evidence_path, Commit, RetryPolicy, TableWriter};
