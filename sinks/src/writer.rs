//! Writing and committing Parquet part files, with retries while the store is unreachable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use tokio::runtime::Handle;

use crate::commit::{get_json, sha256_hex, Job, Marker, PartId};
use crate::{Output, SinkError, Table, SCHEMA_VERSION};

/// Key of the file metadata entry holding [`SCHEMA_VERSION`].
pub const META_SCHEMA_VERSION: &str = "capflow.schema_version";
/// Key of the file metadata entry holding the writing crate's version.
pub const META_VERSION: &str = "capflow.version";
/// Key of the file metadata entry holding the table name.
pub const META_TABLE: &str = "capflow.table";

/// Longest accepted part name, so that `<part>.parquet` stays within file-name limits.
pub const MAX_PART_NAME_BYTES: usize = 200;

/// Default size of the upload buffer: objects up to this size are sent with one PUT, larger ones as a multipart
/// upload in chunks of this size.
pub const DEFAULT_UPLOAD_CHUNK_BYTES: usize = 10 * 1024 * 1024;

/// Rows per Parquet row group: large enough for column statistics and vectorised scans to pay off, small enough
/// that a reader filtering on time skips most of a long night's part.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;

/// How long and how often a failed put is retried before the run gives up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total time to keep retrying one object.
    pub timeout: Duration,
    /// Wait before the first retry; doubles per attempt.
    pub first_wait: Duration,
    /// Longest wait between attempts.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    /// Five minutes, waits from 0.25 s doubling to 10 s.
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(300),
            first_wait: Duration::from_millis(250),
            max_wait: Duration::from_secs(10),
        }
    }
}

/// The result of [`TableWriter::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The part file.
    pub path: Path,
    /// Rows in the part.
    pub rows: u64,
    /// Size of the part file.
    pub bytes: u64,
    /// The part was already committed (a re-run or resume) and was not written again.
    pub skipped: bool,
}

/// Writes and commits Parquet parts (see [`crate::commit`] for the protocol).
///
/// Cheap to clone and `Send + Sync`: give one to each timely worker; clones share the retry state, so once one
/// write has given up the others fail fast instead of each waiting out the retry period. Every file is
/// zstd-compressed and carries the key-value metadata `capflow.schema_version`, `capflow.version` and
/// `capflow.table`.
#[derive(Clone, Debug)]
pub struct TableWriter {
    output: Output,
    handle: Handle,
    upload_chunk_bytes: usize,
    job: Arc<Job>,
    retry: RetryPolicy,
    abort_before_commit: Option<u64>,
    state: Arc<WriterState>,
}

#[derive(Debug, Default)]
struct WriterState {
    gave_up: AtomicBool,
    retries: AtomicU64,
    uploads: AtomicU64,
}

impl TableWriter {
    /// A writer for `output` whose blocking calls run on `handle`, which must belong to a multi-thread runtime
    /// (a current-thread runtime's I/O is only driven inside its own `block_on`).
    pub fn new(output: Output, handle: Handle) -> Self {
        Self {
            output,
            handle,
            upload_chunk_bytes: DEFAULT_UPLOAD_CHUNK_BYTES,
            job: Arc::new(Job::default()),
            retry: RetryPolicy::default(),
            abort_before_commit: None,
            state: Arc::default(),
        }
    }

    /// Sets the upload buffer size (see [`DEFAULT_UPLOAD_CHUNK_BYTES`]); S3 requires multipart chunks of at least
    /// 5 MiB. Values below 1 are raised to 1.
    pub fn with_upload_chunk_size(mut self, bytes: usize) -> Self {
        self.upload_chunk_bytes = bytes.max(1);
        self
    }

    /// Sets the job whose fingerprint goes into every commit marker; a part already committed by another job is
    /// an error rather than skipped.
    pub fn with_job(mut self, job: Job) -> Self {
        self.job = Arc::new(job);
        self
    }

    /// Sets how long failed puts are retried.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Testing hook for crash recovery: abort the whole process, as `kill -9` would, once the `n`-th part (over
    /// all clones) is uploaded but before its commit marker is written, the one point a timed kill rarely hits.
    pub fn with_abort_before_commit(mut self, n: u64) -> Self {
        self.abort_before_commit = Some(n);
        self
    }

    /// The output this writer writes to.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Whether a write has given up after its retry period (then every later write fails at once).
    pub fn gave_up(&self) -> bool {
        self.state.gave_up.load(Ordering::Relaxed)
    }

    /// Failed attempts that were retried so far, over all clones.
    pub fn retries(&self) -> u64 {
        self.state.retries.load(Ordering::Relaxed)
    }

    /// The object path of a part (see [`PartId::path`]).
    pub fn part_path(&self, id: &PartId) -> Result<Path, SinkError> {
        id.path(&self.output.root)
    }

    /// Writes `batch` as part `id` and commits it, unless the part is already committed. Blocks the calling
    /// thread on the tokio runtime: meant for timely worker threads, which are not runtime threads.
    ///
    /// Transient store errors (connection refused, timeouts, 5xx) are retried with exponential backoff for the
    /// writer's [`RetryPolicy`], blocking the caller meanwhile, which holds the pipeline back instead of buffering;
    /// then [`SinkError::Unavailable`]. Errors that retrying cannot fix (access denied, bad names) return at once.
    ///
    /// Returns [`SinkError::InsideRuntime`] instead of panicking when called from a thread inside a tokio runtime
    /// context (an async task or `spawn_blocking`): use [`Self::commit_async`] there.
    pub fn commit(&self, id: &PartId, batch: &RecordBatch) -> Result<Commit, SinkError> {
        if Handle::try_current().is_ok() {
            return Err(SinkError::InsideRuntime {
                operation: "TableWriter::commit",
            });
        }
        self.handle.block_on(self.commit_async(id, batch))
    }

    /// Async variant of [`Self::commit`].
    pub async fn commit_async(
        &self,
        id: &PartId,
        batch: &RecordBatch,
    ) -> Result<Commit, SinkError> {
        let path = self.part_path(id)?;
        let marker_path = id.marker_path(&self.output.root)?;
        let schema = id.table.schema();
        if batch.schema().fields() != schema.fields() {
            return Err(SinkError::SchemaMismatch {
                table: id.table.name(),
                path: path.to_string(),
                reason: format!("expected {schema}, got {}", batch.schema()),
            });
        }
        let existing = self
            .retrying(&marker_path, || {
                get_json::<Marker>(&self.output, &marker_path)
            })
            .await?;
        if let Some(marker) = existing {
            if marker.fingerprint != self.job.fingerprint {
                return Err(SinkError::JobMismatch {
                    url: self.output.url.clone(),
                    what: "settings and model fingerprint",
                    found: marker.fingerprint,
                    expected: self.job.fingerprint.clone(),
                });
            }
            tracing::debug!(%path, "part already committed; skipped");
            return Ok(Commit {
                path,
                rows: marker.rows,
                bytes: marker.bytes,
                skipped: true,
            });
        }
        let bytes = encode(id.table, batch).map_err(|source| SinkError::Parquet {
            path: path.to_string(),
            source,
        })?;
        let relative: Vec<String> = path
            .prefix_match(&self.output.root)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect())
            .unwrap_or_default();
        let marker = Marker {
            path: relative.join("/"),
            table: id.table.name().to_string(),
            rows: batch.num_rows() as u64,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
            fingerprint: self.job.fingerprint.clone(),
            capflow_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        self.retrying(&path, || self.upload(&path, bytes.clone()))
            .await?;
        let uploads = self.state.uploads.fetch_add(1, Ordering::SeqCst) + 1;
        if self.abort_before_commit == Some(uploads) {
            eprintln!(
                "capflow: failpoint abort-before-commit:{uploads} reached at {path}; aborting"
            );
            std::process::abort();
        }
        self.retrying(&marker_path, || self.put_marker(&marker_path, &marker))
            .await?;
        tracing::debug!(%path, rows = marker.rows, bytes = marker.bytes, "part committed");
        Ok(Commit {
            path,
            rows: marker.rows,
            bytes: marker.bytes,
            skipped: false,
        })
    }

    /// Stores a window's evidence image (PNG bytes) at [`evidence_path`], unless it is already there (a re-run or
    /// resume: the image of a window is deterministic). Retried like a part; returns the path relative to the root.
    pub fn put_evidence(
        &self,
        patient_id: &str,
        stream_id: &str,
        window_start_ms: i64,
        png: Vec<u8>,
    ) -> Result<String, SinkError> {
        if Handle::try_current().is_ok() {
            return Err(SinkError::InsideRuntime {
                operation: "TableWriter::put_evidence",
            });
        }
        let relative = evidence_path(patient_id, stream_id, window_start_ms)?;
        let path = crate::commit::join_root(&self.output.root, &relative)?;
        let bytes = Bytes::from(png);
        self.handle.block_on(async {
            let exists = self
                .retrying(&path, || async {
                    match self.output.store.head(&path).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::NotFound { .. }) => Ok(false),
                        Err(source) => Err(SinkError::Store {
                            path: path.to_string(),
                            source,
                        }),
                    }
                })
                .await?;
            if !exists {
                self.retrying(&path, || self.upload(&path, bytes.clone()))
                    .await?;
            }
            Ok::<_, SinkError>(())
        })?;
        Ok(relative)
    }

    /// Runs `op` until it succeeds, fails for good, or the retry period is over.
    async fn retrying<T, F, Fut>(&self, path: &Path, mut op: F) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>>,
    {
        let gave_up = || SinkError::GaveUp {
            path: path.to_string(),
            url: self.output.url.clone(),
        };
        if self.gave_up() {
            return Err(gave_up());
        }
        let start = Instant::now();
        let mut wait = self.retry.first_wait;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match op().await {
                Ok(value) => {
                    if attempts > 1 {
                        tracing::info!(%path, attempts, "store reachable again; write succeeded");
                    }
                    return Ok(value);
                }
                Err(e) if !is_transient(&e) => return Err(e),
                Err(e) => e,
            };
            if self.gave_up() {
                return Err(gave_up());
            }
            let waited = start.elapsed();
            if waited + wait > self.retry.timeout {
                self.state.gave_up.store(true, Ordering::Relaxed);
                return Err(SinkError::Unavailable {
                    path: path.to_string(),
                    url: self.output.url.clone(),
                    attempts,
                    waited_s: waited.as_secs_f64(),
                    last_error: error.to_string(),
                });
            }
            self.state.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                %path,
                attempt = attempts,
                retry_in_ms = wait.as_millis() as u64,
                error = %error,
                "write failed; retrying (the pipeline waits meanwhile)"
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.retry.max_wait);
        }
    }

    /// One atomic put of a whole file: a single PUT up to the chunk size, else a multipart upload that is aborted
    /// on failure (the object only appears when the upload completes).
    async fn upload(&self, path: &Path, bytes: Bytes) -> Result<(), SinkError> {
        let store_err = |source| SinkError::Store {
            path: path.to_string(),
            source,
        };
        let store = &self.output.store;
        if bytes.len() <= self.upload_chunk_bytes {
            store
                .put(path, PutPayload::from(bytes))
                .await
                .map_err(store_err)?;
            return Ok(());
        }
        let upload = store.put_multipart(path).await.map_err(store_err)?;
        let mut multipart = WriteMultipart::new_with_chunk_size(upload, self.upload_chunk_bytes);
        multipart.write(&bytes);
        if let Err(e) = multipart.finish().await {
            tracing::debug!(%path, error = %e, "multipart upload failed (aborted)");
            return Err(store_err(e));
        }
        Ok(())
    }

    /// Creates the marker if absent. An existing marker with the same content hash is a commit by an earlier
    /// attempt (or another process of the same job); one with different content means two jobs collide.
    async fn put_marker(&self, path: &Path, marker: &Marker) -> Result<(), SinkError> {
        let body = serde_json::to_vec_pretty(marker).map_err(|e| SinkError::External(e.into()))?;
        let payload = PutPayload::from(body);
        let store = &self.output.store;
        let result = match store
            .put_opts(path, payload.clone(), PutOptions::from(PutMode::Create))
            .await
        {
            // Stores without conditional puts: a plain put (a part has one writer per job).
            Err(object_store::Error::NotImplemented { .. }) => {
                store.put(path, payload).await.map(|_| ())
            }
            other => other.map(|_| ()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let found: Option<Marker> = get_json(&self.output, path).await?;
                match found {
                    Some(found) if found.sha256 == marker.sha256 => Ok(()),
                    _ => Err(SinkError::BadCommit {
                        path: path.to_string(),
                        reason: "another writer committed different content for this part; two different \
                                 jobs write to one output"
                            .into(),
                    }),
                }
            }
            Err(source) => Err(SinkError::Store {
                path: path.to_string(),
                source,
            }),
        }
    }
}

/// Folder of the evidence images under the output root.
pub const EVIDENCE_DIR: &str = "evidence";

/// Where the evidence image of a stream's window lives, relative to the output root:
/// `evidence/patient_id=<escaped>/date=<yyyy-mm-dd>/<stream>_<window start ms>.png` (the `sites` table's
/// `evidence_path`). Validates the patient id and the stream id (`[A-Za-z0-9_-]`).
pub fn evidence_path(
    patient_id: &str,
    stream_id: &str,
    window_start_ms: i64,
) -> Result<String, SinkError> {
    let name = format!("{stream_id}_{window_start_ms}");
    validate_part_name(&name)?;
    Ok(format!(
        "{EVIDENCE_DIR}/{}/{}/{name}.png",
        crate::partition::segment(patient_id)?,
        crate::partition::date_segment(window_start_ms)
    ))
}

/// Whether retrying can help: network and server errors yes; missing rights, missing buckets, bad paths and
/// conflicts no.
fn is_transient(error: &SinkError) -> bool {
    match error {
        SinkError::Store { source, .. } => matches!(
            source,
            object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
        ),
        _ => false,
    }
}

/// Encodes a batch as one Parquet file in memory (parts are small; hashing needs the bytes anyway).
fn encode(table: Table, batch: &RecordBatch) -> Result<Bytes, parquet::errors::ParquetError> {
    let mut writer =
        ArrowWriter::try_new(Vec::new(), table.schema(), Some(writer_properties(table)))?;
    writer.write(batch)?;
    Ok(Bytes::from(writer.into_inner()?))
}

fn writer_properties(table: Table) -> WriterProperties {
    let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            kv(META_SCHEMA_VERSION, SCHEMA_VERSION.to_string()),
            kv(META_VERSION, env!("CARGO_PKG_VERSION").to_string()),
            kv(META_TABLE, table.name().to_string()),
        ]))
        .build()
}

/// Checks that a part name is 1 to [`MAX_PART_NAME_BYTES`] characters of `[A-Za-z0-9_-]`. That keeps names clear of
/// path syntax and of the `name#N` staging files of the local store.
pub fn validate_part_name(part_name: &str) -> Result<(), SinkError> {
    let bad = |reason: &str| SinkError::InvalidPartName {
        name: part_name.chars().take(64).collect(),
        reason: reason.to_string(),
    };
    if part_name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if part_name.len() > MAX_PART_NAME_BYTES {
        return Err(bad("longer than 200 bytes"));
    }
    if !part_name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad("only ASCII letters, digits, '_' and '-' are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names() {
        for ok in ["part-0", "w3_e000017", "A-b_9"] {
            validate_part_name(ok).unwrap();
        }
        for bad in ["", "a#1", "#12", "a.b", "a/b", "..", "é", &"a".repeat(201)] {
            assert!(
                matches!(
                    validate_part_name(bad),
                    Err(SinkError::InvalidPartName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn writer_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<TableWriter>();
    }
}
