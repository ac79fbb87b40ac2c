//! Parquet study manifests: the same columns as the CSV form, read with the Arrow reader, for studies whose index
//! already lives in a data lake (written by pandas, Polars, DuckDB or Spark).
//!
//! Text columns may be UTF-8 or dictionary-encoded strings; numbers any integer or float type; `recorded_at` text
//! (RFC 3339) or a timestamp. Nulls are missing values.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::config::{ManifestRow, StreamModeName, MANIFEST_COLUMNS};

/// Reads the rows of a Parquet manifest; errors name the file, and the row or column at fault.
pub(crate) fn parquet_rows(path: &Path) -> Result<Vec<ManifestRow>, String> {
    let at = |e: String| format!("manifest {}: {e}", path.display());
    let file =
        std::fs::File::open(path).map_err(|e| at(format!("{e} (check the manifest path)")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| at(format!("not a readable Parquet file: {e}")))?;
    let known: Vec<&str> = MANIFEST_COLUMNS.split(", ").collect();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| at(e.to_string()))?;
        let schema = batch.schema();
        if let Some(f) = schema
            .fields()
            .iter()
            .find(|f| !known.contains(&f.name().as_str()))
        {
            return Err(at(format!(
                "unknown column `{}` (columns: {MANIFEST_COLUMNS})",
                f.name()
            )));
        }
        let column = |name: &str| batch.column_by_name(name).cloned();
        let text = |name: &str| -> Result<Option<Vec<Option<String>>>, String> {
            column(name)
                .map(|c| texts(name, &c))
                .transpose()
                .map_err(at)
        };
        let number = |name: &str| -> Result<Option<Vec<Option<f64>>>, String> {
            column(name)
                .map(|c| numbers(name, &c))
                .transpose()
                .map_err(at)
        };
        let source = text("source")?;
        let patient = text("patient")?;
        let (site, recorded_at, profile, id, mode) = (
            text("site")?,
            text("recorded_at")?,
            text("profile")?,
            text("id")?,
            text("mode")?,
        );
        let (um_per_px, fps) = (number("um_per_px")?, number("fps")?);
        let get = |c: &Option<Vec<Option<String>>>, i: usize| c.as_ref().and_then(|v| v[i].clone());
        let first = rows.len();
        for i in 0..batch.num_rows() {
            let row = first + i + 1;
            let required = |c: &Option<Vec<Option<String>>>, name: &str| {
                get(c, i).ok_or_else(|| {
                    at(format!(
                        "row {row}: `{name}` is missing (columns: {MANIFEST_COLUMNS})"
                    ))
                })
            };
            let mode = match get(&mode, i).as_deref() {
                None | Some("") => None,
                Some(m) => Some(
                    serde_json::from_value::<StreamModeName>(serde_json::Value::String(m.into()))
                        .map_err(|_| {
                        at(format!(
                            "row {row}: mode `{m}` is not one of auto, live, replay"
                        ))
                    })?,
                ),
            };
            rows.push(ManifestRow {
                source: required(&source, "source")?,
                patient: required(&patient, "patient")?,
                site: get(&site, i),
                recorded_at: get(&recorded_at, i),
                profile: get(&profile, i),
                id: get(&id, i),
                mode,
                um_per_px: um_per_px.as_ref().and_then(|v| v[i]),
                fps: fps.as_ref().and_then(|v| v[i]),
            });
        }
    }
    Ok(rows)
}

/// A column's values as text; timestamps as RFC 3339 UTC.
fn texts(name: &str, column: &ArrayRef) -> Result<Vec<Option<String>>, String> {
    if let DataType::Timestamp(..) = column.data_type() {
        let ms = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))
            .map_err(|e| format!("column `{name}`: {e}"))?;
        let ms = ms.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        return Ok((0..ms.len())
            .map(|i| {
                ms.is_valid(i).then(|| {
                    let t = std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(ms.value(i).max(0) as u64);
                    humantime::format_rfc3339_millis(t).to_string()
                })
            })
            .collect());
    }
    let utf8: Arc<dyn Array> = cast(column, &DataType::Utf8)
        .map_err(|_| format!("column `{name}` has type {}, not text", column.data_type()))?;
    let utf8 = utf8.as_string::<i32>();
    Ok((0..utf8.len())
        .map(|i| utf8.is_valid(i).then(|| utf8.value(i).trim().to_string()))
        .collect())
}

/// A column's values as numbers.
fn numbers(name: &str, column: &ArrayRef) -> Result<Vec<Option<f64>>, String> {
    if !column.data_type().is_numeric() {
        return Err(format!(
            "column `{name}` has type {}, not a number",
            column.data_type()
        ));
    }
    let values = cast(column, &DataType::Float64).map_err(|e| format!("column `{name}`: {e}"))?;
    let values = values.as_primitive::<arrow::datatypes::Float64Type>();
    Ok((0..values.len())
        .map(|i| values.is_valid(i).then(|| values.value(i)))
        .collect())
}
