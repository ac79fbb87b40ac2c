//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while opening an output, building a batch, or writing/reading a table.
///
/// Every variant names what it was working on (the URL, the object path, the column), so a message is actionable
/// without a backtrace. Credentials never appear in an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The output location uses a scheme this crate does not support.
    #[error("unsupported output location {url:?}: scheme {scheme:?} is not one of {supported}")]
    UnsupportedScheme {
        /// The location as given.
        url: String,
        /// The scheme that was found.
        scheme: String,
        /// The supported schemes, for the message.
        supported: &'static str,
    },

    /// The output location could not be understood (bad URL, missing bucket, invalid prefix, ...).
    #[error("invalid output location {url:?}: {reason}")]
    InvalidLocation {
        /// The location as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A local output directory could not be created.
    #[error("cannot create output directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The object store for a location could not be built (bad configuration).
    #[error("cannot open object store for {url:?}: {source}")]
    OpenStore {
        /// The location as given (never contains credentials).
        url: String,
        /// The underlying error.
        source: object_store::Error,
    },

    /// A patient id cannot be used as a partition value (empty, bad escape, too long).
    #[error("invalid patient id partition value {value:?}: {reason}")]
    InvalidPatientId {
        /// The offending value (truncated to 64 characters for very long ids).
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A part name is not made of `[A-Za-z0-9_-]` only, or is empty or too long.
    #[error("invalid part name {name:?}: {reason}")]
    InvalidPartName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Building or decoding an Arrow batch failed.
    #[error("arrow error for table {table}: {source}")]
    Arrow {
        /// The table (`frames`, `sites` or `patients`).
        table: &'static str,
        /// The underlying error.
        source: arrow::error::ArrowError,
    },

    /// A batch read back does not have the expected shape (missing column, wrong type, nulls).
    #[error("table {table}: column {column:?} in {path}: {reason}")]
    BadColumn {
        /// The table (`frames`, `sites` or `patients`).
        table: &'static str,
        /// The object the batch came from (or `<batch>` when converting a batch directly).
        path: String,
        /// The column.
        column: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A batch handed to the writer does not have the table's schema.
    #[error("batch for table {table} at {path} does not match the table schema: {reason}")]
    SchemaMismatch {
        /// The table (`frames`, `sites` or `patients`).
        table: &'static str,
        /// The object path the batch was meant for.
        path: String,
        /// How the schemas differ.
        reason: String,
    },

    /// Encoding or decoding a Parquet file failed.
    #[error("parquet error for {path}: {source}")]
    Parquet {
        /// The object path.
        path: String,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },

    /// A Parquet file was written with a schema version this build cannot read.
    #[error(
        "{path}: schema version {found} is not supported (this build reads version {supported})"
    )]
    SchemaVersion {
        /// The object path.
        path: String,
        /// The version found in the file's `capflow.schema_version` metadata.
        found: String,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// An object-store operation (put, get, list) failed.
    #[error("object store error at {path}: {source}")]
    Store {
        /// The object path (or listing prefix).
        path: String,
        /// The underlying error.
        source: object_store::Error,
    },

    /// A `.parquet` object under a table does not sit at `<table>/patient_id=<value>/<part>.parquet`.
    #[error("unexpected object {path} in table {table}: {reason}")]
    BadLayout {
        /// The table (`frames`, `sites` or `patients`).
        table: &'static str,
        /// The object path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A blocking call was made from inside a tokio runtime, where `Handle::block_on` would panic.
    #[error(
        "{operation} blocks on the tokio runtime and must not be called from an async context; use the async variant"
    )]
    InsideRuntime {
        /// The operation that was called.
        operation: &'static str,
    },

    /// The store stayed unreachable (or kept failing) for the whole retry period while writing `path`.
    #[error(
        "gave up writing {path} to {url} after {attempts} attempts over {waited_s:.0} s: {last_error}. Parts committed \
         before are intact; once the store is reachable again, rerun the same command with --resume to finish \
         (raise output.retry_timeout_s to wait longer)"
    )]
    Unavailable {
        /// The object being written.
        path: String,
        /// The output location.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Seconds spent retrying.
        waited_s: f64,
        /// The last error seen.
        last_error: String,
    },

    /// An earlier write gave up after its retry period, so this writer refuses further writes.
    #[error("not writing {path}: an earlier write to {url} gave up after its retry period (see the error before this one)")]
    GaveUp {
        /// The object not written.
        path: String,
        /// The output location.
        url: String,
    },

    /// The output holds another job's data (other settings, model or capflow version).
    #[error(
        "output {url} holds a job with {what} {found:?}, but this run has {expected:?}; resuming or re-running into it \
         would mix results. Use the job's original config, model and capflow version, or a new output location"
    )]
    JobMismatch {
        /// The output location.
        url: String,
        /// What differs (`settings and model fingerprint`, `capflow version`, `schema version`).
        what: &'static str,
        /// The value stored with the output.
        found: String,
        /// This run's value.
        expected: String,
    },

    /// `--resume` was asked for but the output holds no job.
    #[error("nothing to resume at {url}: it holds no capflow job (no _capflow/job.json); run without --resume to start one")]
    NothingToResume {
        /// The output location.
        url: String,
    },

    /// A commit marker or job manifest could not be read, or disagrees with what it describes.
    #[error("damaged commit record {path}: {reason}")]
    BadCommit {
        /// The marker or manifest path.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// A pseudonymisation key is missing or too short.
    #[error("pseudonymising patient ids: {reason}")]
    PseudonymKey {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The location needs an object store this build was compiled without.
    #[error("output location {url:?} needs capflow built with the `{feature}` feature: cargo build --release --features {feature}")]
    NotCompiledIn {
        /// The location.
        url: String,
        /// The cargo feature that adds the store.
        feature: &'static str,
    },

    /// Any other error, from a backend or a caller-supplied component.
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync>),
}
