//! Writing one Parquet part file of a table, hive-partitioned by patient.

use arrow::record_batch::RecordBatch;
use object_store::buffered::BufWriter;
use object_store::path::{Path, PathPart};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use tokio::runtime::Handle;

use crate::{partition, Output, SinkError, Table, SCHEMA_VERSION};

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

/// Writes Parquet part files under `<root>/<table>/patient_id=<escaped>/<part>.parquet`.
///
/// Cheap to clone and `Send + Sync`: give one to each timely worker. Every file is zstd-compressed and carries the
/// key-value metadata `capflow.schema_version`, `capflow.version` and `capflow.table`. Puts are atomic: a reader
/// never sees a partial file, and writing the same part again replaces it.
#[derive(Clone, Debug)]
pub struct TableWriter {
    output: Output,
    handle: Handle,
    upload_chunk_bytes: usize,
}

impl TableWriter {
    /// A writer for `output` whose blocking calls run on `handle`, which must belong to a multi-thread runtime
    /// (a current-thread runtime's I/O is only driven inside its own `block_on`).
    pub fn new(output: Output, handle: Handle) -> Self {
        Self {
            output,
            handle,
            upload_chunk_bytes: DEFAULT_UPLOAD_CHUNK_BYTES,
        }
    }

    /// Sets the upload buffer size (see [`DEFAULT_UPLOAD_CHUNK_BYTES`]); S3 requires multipart chunks of at least
    /// 5 MiB. Values below 1 are raised to 1.
    pub fn with_upload_chunk_size(mut self, bytes: usize) -> Self {
        self.upload_chunk_bytes = bytes.max(1);
        self
    }

    /// The output this writer writes to.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// The object path of a part: `<root>/<table>/patient_id=<escaped>/<part_name>.parquet`. Validates the patient
    /// id (see [`partition::segment`]) and the part name (`[A-Za-z0-9_-]`, 1 to [`MAX_PART_NAME_BYTES`] bytes).
    pub fn part_path(
        &self,
        table: Table,
        patient_id: &str,
        part_name: &str,
    ) -> Result<Path, SinkError> {
        validate_part_name(part_name)?;
        let segment = partition::segment(patient_id)?;
        let file = format!("{part_name}.parquet");
        // Both segments are made of `[A-Za-z0-9_.%=-]` and are never `.`/`..`, so they parse as they are (going
        // through `From<&str>` would escape the `%` a second time).
        let segment_part = PathPart::parse(&segment).map_err(|e| SinkError::External(e.into()))?;
        let file_part = PathPart::parse(&file).map_err(|e| SinkError::External(e.into()))?;
        Ok(self
            .output
            .root
            .clone()
            .join(table.name())
            .join(segment_part)
            .join(file_part))
    }

    /// Writes `batch` as one Parquet file and returns its object path. Blocks the calling thread on the tokio
    /// runtime: meant for timely worker threads, which are not runtime threads.
    ///
    /// Returns [`SinkError::InsideRuntime`] instead of panicking when called from a thread inside a tokio runtime
    /// context (an async task or `spawn_blocking`): use [`Self::write_part_async`] there.
    pub fn write_part(
        &self,
        table: Table,
        patient_id: &str,
        part_name: &str,
        batch: &RecordBatch,
    ) -> Result<Path, SinkError> {
        if Handle::try_current().is_ok() {
            return Err(SinkError::InsideRuntime {
                operation: "TableWriter::write_part",
            });
        }
        self.handle
            .block_on(self.write_part_async(table, patient_id, part_name, batch))
    }

    /// Async variant of [`Self::write_part`].
    pub async fn write_part_async(
        &self,
        table: Table,
        patient_id: &str,
        part_name: &str,
        batch: &RecordBatch,
    ) -> Result<Path, SinkError> {
        let path = self.part_path(table, patient_id, part_name)?;
        let schema = table.schema();
        if batch.schema().fields() != schema.fields() {
            return Err(SinkError::SchemaMismatch {
                table: table.name(),
                path: path.to_string(),
                reason: format!("expected {schema}, got {}", batch.schema()),
            });
        }
        let parquet_err = |source| SinkError::Parquet {
            path: path.to_string(),
            source,
        };
        let upload = BufWriter::with_capacity(
            self.output.store.clone(),
            path.clone(),
            self.upload_chunk_bytes,
        );
        let mut writer = AsyncArrowWriter::try_new(upload, schema, Some(writer_properties(table)))
            .map_err(parquet_err)?;
        // Encode and upload the row group first: an error here leaves the upload in a state that can be aborted.
        let staged = async {
            writer.write(batch).await?;
            writer.flush().await
        }
        .await;
        if let Err(source) = staged {
            let mut upload = writer.into_inner();
            if let Err(abort) = upload.abort().await {
                tracing::warn!(%path, error = %abort, "could not abort a failed upload");
            }
            return Err(parquet_err(source));
        }
        // Footer and commit (the single PUT, or the multipart completion). If this fails the object was never
        // created; a local staging file is removed on drop, an S3 multipart upload is left to the bucket's
        // lifecycle rules.
        let metadata = writer.close().await.map_err(parquet_err)?;
        tracing::debug!(
            %path,
            rows = batch.num_rows(),
            row_groups = metadata.num_row_groups(),
            "wrote parquet part"
        );
        Ok(path)
    }
}

fn writer_properties(table: Table) -> WriterProperties {
    let kv = |k: &str, v: String| KeyValue::new(k.to_string(), v);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
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
