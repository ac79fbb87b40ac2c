//! Reading a table back into rows: for the CLI summary and for tests.

use bytes::Bytes;
use capflow_operators::records::{FrameMetrics, PatientWindow, SiteWindow, StreamEvent};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::runtime::Handle;

use crate::commit::list_markers;
use crate::schema::{
    frames_from_batch_at, patients_from_batch_at, sites_from_batch_at, stream_events_from_batch_at,
};
use crate::writer::{META_SCHEMA_VERSION, META_TABLE};
use crate::{partition, Output, SinkError, Table, SCHEMA_VERSION};

/// How many part files are fetched at once.
const CONCURRENT_GETS: usize = 8;

/// One committed Parquet part file of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The patient, unescaped from the `patient_id=` folder.
    pub patient_id: String,
    /// The UTC day, from the `date=` folder.
    pub date: String,
    /// The object path.
    pub path: Path,
    /// Size in bytes, from the commit marker.
    pub size: u64,
    /// Rows, from the commit marker.
    pub rows: u64,
}

/// Lists the committed parts of `table` (those with a commit marker, see [`crate::commit`]), sorted by path.
/// Parts without a marker (left by a crash before their commit) are not listed; a marker whose path is not
/// `<table>/patient_id=<value>/date=<yyyy-mm-dd>/<part>.parquet` is an error.
pub async fn list_parts(output: &Output, table: Table) -> Result<Vec<Part>, SinkError> {
    let prefix = output.root.clone().join(table.name());
    let mut parts = Vec::new();
    for (path, marker) in list_markers(output, table).await? {
        let bad = |reason: &str| SinkError::BadLayout {
            table: table.name(),
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let below: Vec<String> = path
            .prefix_match(&prefix)
            .ok_or_else(|| bad("outside the table prefix"))?
            .map(|part| part.as_ref().to_string())
            .collect();
        let [folder, day, file] = below.as_slice() else {
            return Err(bad(
                "expected <table>/patient_id=<value>/date=<yyyy-mm-dd>/<part>.parquet",
            ));
        };
        if !file.ends_with(".parquet") {
            return Err(bad("a part's name must end in .parquet"));
        }
        let patient_id = partition::parse_segment(folder)
            .ok_or_else(|| bad("the folder is not a patient_id=<value> partition"))??;
        let date = partition::parse_date_segment(day)
            .ok_or_else(|| bad("the folder is not a date=<yyyy-mm-dd> partition"))?
            .to_string();
        parts.push(Part {
            patient_id,
            date,
            path,
            size: marker.bytes,
            rows: marker.rows,
        });
    }
    Ok(parts)
}

/// Reads the whole `frames` table, sorted by patient, stream and frame index. Blocks on `handle`; returns
/// [`SinkError::InsideRuntime`] when called inside a tokio runtime context (use [`read_frames_async`] there).
pub fn read_frames(output: &Output, handle: &Handle) -> Result<Vec<FrameMetrics>, SinkError> {
    block_on(handle, "read_frames", read_frames_async(output))
}

/// Reads the whole `sites` table, sorted by patient, stream and window. Blocks on `handle`; returns
/// [`SinkError::InsideRuntime`] when called inside a tokio runtime context (use [`read_sites_async`] there).
pub fn read_sites(output: &Output, handle: &Handle) -> Result<Vec<SiteWindow>, SinkError> {
    block_on(handle, "read_sites", read_sites_async(output))
}

/// Reads the whole `patients` table, sorted by patient and window. Blocks on `handle`; returns
/// [`SinkError::InsideRuntime`] when called inside a tokio runtime context (use [`read_patients_async`] there).
pub fn read_patients(output: &Output, handle: &Handle) -> Result<Vec<PatientWindow>, SinkError> {
    block_on(handle, "read_patients", read_patients_async(output))
}

/// Reads the whole `stream_events` table, sorted by patient, stream, start and kind. Blocks on `handle`; returns
/// [`SinkError::InsideRuntime`] when called inside a tokio runtime context (use [`read_stream_events_async`] there).
pub fn read_stream_events(output: &Output, handle: &Handle) -> Result<Vec<StreamEvent>, SinkError> {
    block_on(
        handle,
        "read_stream_events",
        read_stream_events_async(output),
    )
}

/// Async variant of [`read_stream_events`].
pub async fn read_stream_events_async(output: &Output) -> Result<Vec<StreamEvent>, SinkError> {
    let mut rows = read_table(output, Table::StreamEvents, |batch, part| {
        stream_events_from_batch_at(batch, &part.patient_id, part.path.as_ref())
    })
    .await?;
    rows.sort_by(|a, b| {
        (&a.patient_id, &a.stream_id, a.start_ms, a.kind).cmp(&(
            &b.patient_id,
            &b.stream_id,
            b.start_ms,
            b.kind,
        ))
    });
    Ok(rows)
}

/// Async variant of [`read_frames`].
pub async fn read_frames_async(output: &Output) -> Result<Vec<FrameMetrics>, SinkError> {
    let mut rows = read_table(output, Table::Frames, |batch, part| {
        frames_from_batch_at(batch, &part.patient_id, part.path.as_ref())
    })
    .await?;
    rows.sort_by(|a, b| {
        (&a.patient_id, &a.stream_id, a.frame_index).cmp(&(
            &b.patient_id,
            &b.stream_id,
            b.frame_index,
        ))
    });
    Ok(rows)
}

/// Async variant of [`read_sites`].
pub async fn read_sites_async(output: &Output) -> Result<Vec<SiteWindow>, SinkError> {
    read_sites_parts_async(output, list_parts(output, Table::Sites).await?).await
}

/// Reads the rows of some committed `sites` parts (from [`list_parts`]), sorted as [`read_sites`] sorts them: a
/// reader that needs only some patients or days lists the parts once and fetches only those.
pub async fn read_sites_parts_async(
    output: &Output,
    parts: Vec<Part>,
) -> Result<Vec<SiteWindow>, SinkError> {
    let mut rows = read_parts(output, Table::Sites, parts, |batch, part| {
        sites_from_batch_at(batch, &part.patient_id, part.path.as_ref())
    })
    .await?;
    rows.sort_by(|a, b| {
        (
            &a.patient_id,
            &a.stream_id,
            a.window_start_ms,
            a.window_end_ms,
        )
            .cmp(&(
                &b.patient_id,
                &b.stream_id,
                b.window_start_ms,
                b.window_end_ms,
            ))
    });
    Ok(rows)
}

/// Async variant of [`read_patients`].
pub async fn read_patients_async(output: &Output) -> Result<Vec<PatientWindow>, SinkError> {
    read_patients_parts_async(output, list_parts(output, Table::Patients).await?).await
}

/// Reads the rows of some committed `patients` parts (from [`list_parts`]), sorted as [`read_patients`] sorts them.
pub async fn read_patients_parts_async(
    output: &Output,
    parts: Vec<Part>,
) -> Result<Vec<PatientWindow>, SinkError> {
    let mut rows = read_parts(output, Table::Patients, parts, |batch, part| {
        patients_from_batch_at(batch, &part.patient_id, part.path.as_ref())
    })
    .await?;
    rows.sort_by(|a, b| {
        (&a.patient_id, a.window_start_ms, a.window_end_ms).cmp(&(
            &b.patient_id,
            b.window_start_ms,
            b.window_end_ms,
        ))
    });
    Ok(rows)
}

/// Reads one object stored next to the tables, such as an evidence image (the `sites` table's `evidence_path`),
/// given its path relative to the output root. Each `/`-separated segment must be a plain name: empty, `.` and
/// `..` segments are refused, so a path read from a table cannot reach outside the output.
pub async fn read_object_async(output: &Output, relative: &str) -> Result<Bytes, SinkError> {
    if relative
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(SinkError::InvalidLocation {
            url: relative.to_string(),
            reason: "an object path relative to the output root must be made of plain names separated by /".into(),
        });
    }
    let path = crate::commit::join_root(&output.root, relative)?;
    let store_err = |source| SinkError::Store {
        path: path.to_string(),
        source,
    };
    let result = output.store.get(&path).await.map_err(store_err)?;
    result.bytes().await.map_err(store_err)
}

fn block_on<T>(
    handle: &Handle,
    operation: &'static str,
    future: impl std::future::Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    if Handle::try_current().is_ok() {
        return Err(SinkError::InsideRuntime { operation });
    }
    handle.block_on(future)
}

async fn read_table<R>(
    output: &Output,
    table: Table,
    convert: impl Fn(&arrow::record_batch::RecordBatch, &Part) -> Result<Vec<R>, SinkError>,
) -> Result<Vec<R>, SinkError> {
    read_parts(output, table, list_parts(output, table).await?, convert).await
}

async fn read_parts<R>(
    output: &Output,
    table: Table,
    parts: Vec<Part>,
    convert: impl Fn(&arrow::record_batch::RecordBatch, &Part) -> Result<Vec<R>, SinkError>,
) -> Result<Vec<R>, SinkError> {
    let fetched: Vec<(Part, Bytes)> = futures::stream::iter(parts)
        .map(|part| async move {
            let store_err = |source| SinkError::Store {
                path: part.path.to_string(),
                source,
            };
            let result = output.store.get(&part.path).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => SinkError::BadCommit {
                    path: part.path.to_string(),
                    reason: "the part is committed (it has a marker) but its file is missing; the output was \
                             damaged outside capflow"
                        .into(),
                },
                other => store_err(other),
            })?;
            let bytes = result.bytes().await.map_err(store_err)?;
            Ok::<_, SinkError>((part, bytes))
        })
        .buffered(CONCURRENT_GETS)
        .try_collect()
        .await?;
    let mut rows = Vec::new();
    for (part, bytes) in fetched {
        let parquet_err = |source| SinkError::Parquet {
            path: part.path.to_string(),
            source,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet_err)?;
        check_metadata(
            builder.metadata().file_metadata().key_value_metadata(),
            table,
            &part,
        )?;
        for batch in builder.build().map_err(parquet_err)? {
            let batch = batch.map_err(|source| SinkError::Arrow {
                table: table.name(),
                source,
            })?;
            rows.extend(convert(&batch, &part)?);
        }
    }
    Ok(rows)
}

/// Files written by capflow must carry this build's schema version and the right table; files without capflow
/// metadata (other writers) are accepted and checked column by column.
fn check_metadata(
    kv: Option<&Vec<parquet::file::metadata::KeyValue>>,
    table: Table,
    part: &Part,
) -> Result<(), SinkError> {
    let get = |key: &str| {
        kv.into_iter()
            .flatten()
            .find(|entry| entry.key == key)
            .and_then(|entry| entry.value.as_deref())
    };
    if let Some(found) = get(META_SCHEMA_VERSION) {
        if found != SCHEMA_VERSION.to_string() {
            return Err(SinkError::SchemaVersion {
                path: part.path.to_string(),
                found: found.to_string(),
                supported: SCHEMA_VERSION,
            });
        }
    }
    if let Some(found) = get(META_TABLE) {
        if found != table.name() {
            return Err(SinkError::BadLayout {
                table: table.name(),
                path: part.path.to_string(),
                reason: format!("the file says it belongs to table {found:?}"),
            });
        }
    }
    Ok(())
}
