//! The commit protocol: deterministic part names, one commit marker per part, one job manifest per output.
//!
//! A run writes each part in two steps:
//!
//! 1. the part file, `<root>/<table>/patient_id=<id>/date=<yyyy-mm-dd>/<name>.parquet`, with one atomic put (a reader
//!    never sees half a file);
//! 2. its commit marker, `<root>/_capflow/commits/<same path>.json`, created only if absent, holding the row count,
//!    size and SHA-256 of the file and the job's settings fingerprint.
//!
//! A part is **committed** once its marker exists. Part names depend only on the data (stream, chunk of frames or
//! of windows), so a re-run or a `--resume` after `kill -9` at any point writes the same names with the same bytes:
//! parts that already have a marker are skipped, a part left without a marker by a crash is rewritten identically
//! and then committed. Readers that go through the markers ([`crate::read`]) see exactly the rows of one clean
//! run, never a duplicate; a reader that globs the folders sees complete parts only, and between a crash and the
//! resume possibly a part whose marker is still missing (its rows are final).
//!
//! `<root>/_capflow/job.json` ([`Job`]) ties an output to one job: the fingerprint of the settings that shape the
//! results, the capflow version and the schema version. A run or resume whose job differs is refused before
//! anything is written, so two different jobs never mix in one output.

use object_store::path::{Path, PathPart};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::{partition, Output, SinkError, Table, SCHEMA_VERSION};

/// Folder of capflow's own records under the output root. Starts with `_`, which Hive-style readers (Spark,
/// DuckDB's `hive_partitioning`, pyarrow datasets) skip.
pub const CONTROL_DIR: &str = "_capflow";
/// Sub-folder of [`CONTROL_DIR`] holding the commit markers.
pub const COMMITS_DIR: &str = "commits";
/// File name of the job manifest in [`CONTROL_DIR`].
pub const JOB_FILE: &str = "job.json";

/// Which part: table, partition values and name. Everything in the object path comes from here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartId {
    /// The table.
    pub table: Table,
    /// The patient (the `patient_id=` partition); escaped in the path.
    pub patient_id: String,
    /// UTC day of the rows (`yyyy-mm-dd`, the `date=` partition).
    pub date: String,
    /// Part name, `[A-Za-z0-9_-]`, unique within its partition.
    pub name: String,
}

impl PartId {
    /// A part of `table` for `patient_id` on the UTC day of `event_time_ms`.
    pub fn new(
        table: Table,
        patient_id: impl Into<String>,
        event_time_ms: i64,
        name: impl Into<String>,
    ) -> Self {
        PartId {
            table,
            patient_id: patient_id.into(),
            date: partition::date_of(event_time_ms),
            name: name.into(),
        }
    }

    /// The path segments below the output root: `[<table>, patient_id=<escaped>, date=<date>, <name><ext>]`.
    /// Validates the patient id, the date and the name.
    pub fn segments(&self, ext: &str) -> Result<[String; 4], SinkError> {
        crate::writer::validate_part_name(&self.name)?;
        if !partition::is_date(&self.date) {
            return Err(SinkError::InvalidPartName {
                name: self.date.chars().take(64).collect(),
                reason: "the date partition must be yyyy-mm-dd".into(),
            });
        }
        Ok([
            self.table.name().to_string(),
            partition::segment(&self.patient_id)?,
            format!("{}={}", partition::DATE_COLUMN, self.date),
            format!("{}{ext}", self.name),
        ])
    }

    /// The part file: `<root>/<table>/patient_id=<escaped>/date=<date>/<name>.parquet`.
    pub fn path(&self, root: &Path) -> Result<Path, SinkError> {
        join(root.clone(), self.segments(".parquet")?)
    }

    /// The commit marker: `<root>/_capflow/commits/<table>/patient_id=<escaped>/date=<date>/<name>.parquet.json`.
    pub fn marker_path(&self, root: &Path) -> Result<Path, SinkError> {
        let base = root.clone().join(CONTROL_DIR).join(COMMITS_DIR);
        join(base, self.segments(".parquet.json")?)
    }
}

/// Joins segments that are already path-safe (`[A-Za-z0-9_.%=-]`, never `.` or `..`): parsing them as they are
/// keeps the `%` of escaped ids from being escaped a second time.
fn join(mut path: Path, segments: impl IntoIterator<Item = String>) -> Result<Path, SinkError> {
    for segment in segments {
        let part = PathPart::parse(&segment).map_err(|e| SinkError::External(e.into()))?;
        path = path.join(part);
    }
    Ok(path)
}

/// Lower-case hex SHA-256 of `bytes`: part checksums in the markers and the job's settings fingerprint.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `root` joined with a relative path whose segments are already path-safe (as [`PartId::segments`] makes them).
pub(crate) fn join_root(root: &Path, relative: &str) -> Result<Path, SinkError> {
    join(root.clone(), relative.split('/').map(String::from))
}

/// What ties an output to one job; stored as `_capflow/job.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Hex digest of the settings and the model that shape the results (the pipeline hashes `Config::fingerprint`
    /// with `model_fingerprint`); never holds credentials or locations.
    pub fingerprint: String,
    /// The capflow version that writes the job.
    pub capflow_version: String,
    /// The table schema version.
    pub schema_version: u32,
}

impl Job {
    /// A job of this capflow build with the given settings fingerprint.
    pub fn new(fingerprint: impl Into<String>) -> Self {
        Job {
            fingerprint: fingerprint.into(),
            capflow_version: env!("CARGO_PKG_VERSION").to_string(),
            schema_version: SCHEMA_VERSION,
        }
    }
}

impl Default for Job {
    /// A job without a settings fingerprint (library use and tests).
    fn default() -> Self {
        Job::new("")
    }
}

/// The commit marker of one part, `_capflow/commits/<part path>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The part file, relative to the output root (`frames/patient_id=…/date=…/part-….parquet`).
    pub path: String,
    /// The table.
    pub table: String,
    /// Rows in the part.
    pub rows: u64,
    /// Size of the part file in bytes.
    pub bytes: u64,
    /// SHA-256 of the part file, hex.
    pub sha256: String,
    /// The job's settings fingerprint.
    pub fingerprint: String,
    /// The capflow version that wrote the part.
    pub capflow_version: String,
}

/// What [`open_job`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    /// Whether the output already held this job (a re-run or resume) rather than being started now.
    pub existed: bool,
    /// Parts already committed, over all tables.
    pub committed_parts: usize,
}

/// Starts `job` in `output`, or checks that the output already holds the same job.
///
/// * no `_capflow/job.json`: with `resume`, [`SinkError::NothingToResume`]; else the manifest is created (only if
///   absent, so concurrent processes of one cluster agree);
/// * a manifest of the same job: fine; its committed parts will be skipped;
/// * a manifest of another job: [`SinkError::JobMismatch`], before anything is written.
pub async fn open_job(output: &Output, job: &Job, resume: bool) -> Result<JobState, SinkError> {
    let path = output.root.clone().join(CONTROL_DIR).join(JOB_FILE);
    let found = match get_json::<Job>(output, &path).await? {
        Some(found) => found,
        None if resume => {
            return Err(SinkError::NothingToResume {
                url: output.url.clone(),
            })
        }
        None => {
            let body = serde_json::to_vec_pretty(job).map_err(|e| SinkError::External(e.into()))?;
            let opts = PutOptions::from(PutMode::Create);
            match output
                .store
                .put_opts(&path, PutPayload::from(body), opts)
                .await
            {
                Ok(_) => {
                    return Ok(JobState {
                        existed: false,
                        committed_parts: 0,
                    })
                }
                // Another process of the same cluster created it first: compare with theirs.
                Err(object_store::Error::AlreadyExists { .. }) => get_json::<Job>(output, &path)
                    .await?
                    .ok_or_else(|| SinkError::BadCommit {
                        path: path.to_string(),
                        reason: "reported as existing but cannot be read".into(),
                    })?,
                Err(source) => {
                    return Err(SinkError::Store {
                        path: path.to_string(),
                        source,
                    })
                }
            }
        }
    };
    let mismatch = |what, found: String, expected: String| SinkError::JobMismatch {
        url: output.url.clone(),
        what,
        found,
        expected,
    };
    if found.schema_version != job.schema_version {
        return Err(mismatch(
            "schema version",
            found.schema_version.to_string(),
            job.schema_version.to_string(),
        ));
    }
    if found.capflow_version != job.capflow_version {
        return Err(mismatch(
            "capflow version",
            found.capflow_version,
            job.capflow_version.clone(),
        ));
    }
    if found.fingerprint != job.fingerprint {
        return Err(mismatch(
            "settings and model fingerprint",
            found.fingerprint,
            job.fingerprint.clone(),
        ));
    }
    // Count by listing only: a long job has thousands of markers, and their contents are not needed here.
    let commits = output.root.clone().join(CONTROL_DIR).join(COMMITS_DIR);
    let committed_parts = {
        use futures::TryStreamExt;
        output
            .store
            .list(Some(&commits))
            .try_fold(0usize, |n, meta| async move {
                Ok(n + usize::from(meta.location.as_ref().ends_with(".parquet.json")))
            })
            .await
            .map_err(|source| SinkError::Store {
                path: format!("{commits}/"),
                source,
            })?
    };
    Ok(JobState {
        existed: true,
        committed_parts,
    })
}

/// Reads and parses a JSON object; `None` if it does not exist.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    output: &Output,
    path: &Path,
) -> Result<Option<T>, SinkError> {
    let result = match output.store.get(path).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(source) => {
            return Err(SinkError::Store {
                path: path.to_string(),
                source,
            })
        }
    };
    let bytes = result.bytes().await.map_err(|source| SinkError::Store {
        path: path.to_string(),
        source,
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| SinkError::BadCommit {
            path: path.to_string(),
            reason: e.to_string(),
        })
}

/// The commit markers of `table`, each with the part path it commits, sorted by part path.
///
/// Each marker must sit at the mirror of its part's path and name the same path inside; anything else under the
/// commits folder of the table is an error ([`SinkError::BadCommit`]).
pub async fn list_markers(output: &Output, table: Table) -> Result<Vec<(Path, Marker)>, SinkError> {
    use futures::{StreamExt, TryStreamExt};
    let commits = output.root.clone().join(CONTROL_DIR).join(COMMITS_DIR);
    let prefix = commits.clone().join(table.name());
    let objects: Vec<object_store::ObjectMeta> = output
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|source| SinkError::Store {
            path: format!("{prefix}/"),
            source,
        })?;
    let mut markers: Vec<(Path, Marker)> = futures::stream::iter(objects)
        .map(|meta| {
            let commits = commits.clone();
            async move {
                let bad = |reason: String| SinkError::BadCommit {
                    path: meta.location.to_string(),
                    reason,
                };
                let relative: Vec<String> = meta
                    .location
                    .prefix_match(&commits)
                    .ok_or_else(|| bad("outside the commits folder".into()))?
                    .map(|part| part.as_ref().to_string())
                    .collect();
                let Some(last) = relative.last() else {
                    return Err(bad("empty marker path".into()));
                };
                let Some(file) = last.strip_suffix(".json") else {
                    return Err(bad(
                        "a commit marker's name must end in .parquet.json".into()
                    ));
                };
                let mut part_relative = relative.clone();
                *part_relative.last_mut().expect("checked above") = file.to_string();
                let part_path = join(output.root.clone(), part_relative.iter().cloned())?;
                let marker: Marker = get_json(output, &meta.location)
                    .await?
                    .ok_or_else(|| bad("listed but gone".into()))?;
                if marker.path != part_relative.join("/") || marker.table != table.name() {
                    return Err(bad(format!(
                        "it names {} (table {}) but sits at the marker of {}",
                        marker.path,
                        marker.table,
                        part_relative.join("/")
                    )));
                }
                Ok((part_path, marker))
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    markers.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(markers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_mirror_each_other_and_escape_the_patient() {
        let id = PartId::new(Table::Sites, "../x", 1_772_352_000_000, "part-0");
        let root = Path::from("out");
        assert_eq!(
            id.path(&root).unwrap().as_ref(),
            "out/sites/patient_id=..%2Fx/date=2026-03-01/part-0.parquet"
        );
        assert_eq!(
            id.marker_path(&root).unwrap().as_ref(),
            "out/_capflow/commits/sites/patient_id=..%2Fx/date=2026-03-01/part-0.parquet.json"
        );
        let bad_date = PartId {
            date: "../../x".into(),
            ..id.clone()
        };
        assert!(bad_date.path(&root).is_err());
        let bad_name = PartId {
            name: "a/b".into(),
            ..id
        };
        assert!(bad_name.path(&root).is_err());
    }

    #[test]
    fn job_is_of_this_build() {
        let job = Job::new("abc");
        assert_eq!(job.schema_version, SCHEMA_VERSION);
        assert_eq!(job.capflow_version, env!("CARGO_PKG_VERSION"));
    }
}
