//! The files read back by independent readers: pyarrow (schema, nullability, metadata) and DuckDB (hive partition,
//! types, nulls, and every query of the README).
//!
//! Python with `duckdb` and `pyarrow` comes from `$CAPFLOW_PYTHON` or the workspace's `.venv/` (`make setup`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use capflow_operators::records::{EventKind, StreamEvent};
use capflow_sinks::{
    columns, frames_batch, open_output, patients_batch, sites_batch, stream_events_batch, PartId,
    S3Options, Table, TableWriter, SCHEMA_VERSION,
};
use common::{frame, patient, site};
use serde_json::{json, Value};

const T0: i64 = 1_700_000_000_000;

fn python() -> PathBuf {
    std::env::var_os("CAPFLOW_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
            local.is_file().then_some(local)
        })
        .expect("the Python readers (duckdb, pyarrow) are installed by `make setup` (.venv) or CAPFLOW_PYTHON")
}

/// Writes two patients' rows of every table under `root`: p001 has a window whose sites all failed the quality
/// check (null means, null `hi`) and a site window without flow (null PPV/MFI).
fn write_tables(root: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let output = open_output(root.to_str().unwrap(), &S3Options::default()).unwrap();
    let writer = TableWriter::new(output, rt.handle().clone());
    let frames = [
        (0..3).map(|i| frame("p001", "s1", i)).collect::<Vec<_>>(),
        (0..2).map(|i| frame("p001", "s2", i)).collect(),
        (0..2).map(|i| frame("p002", "s3", i)).collect(),
    ];
    for (n, rows) in frames.iter().enumerate() {
        let patient = &rows[0].patient_id;
        writer
            .commit(
                &PartId::new(Table::Frames, patient, 0, format!("part-{n}")),
                &frames_batch(rows).unwrap(),
            )
            .unwrap();
    }
    let p001_sites = [
        site("p001", "s1", T0, true),
        site("p001", "s2", T0, true),
        site("p001", "s1", T0 + 5_000, false),
        site("p001", "s2", T0 + 5_000, false),
    ];
    let p002_sites = [site("p002", "s3", T0, true)];
    let p001 = [
        patient("p001", T0, true),
        patient("p001", T0 + 5_000, false),
    ];
    let p002 = [patient("p002", T0, true)];
    for (id, sites, patients) in [
        ("p001", &p001_sites[..], &p001[..]),
        ("p002", &p002_sites, &p002),
    ] {
        let sites = sites_batch(sites).unwrap();
        writer
            .commit(&PartId::new(Table::Sites, id, 0, "part-0"), &sites)
            .unwrap();
        let patients = patients_batch(patients).unwrap();
        writer
            .commit(&PartId::new(Table::Patients, id, 0, "part-0"), &patients)
            .unwrap();
    }
    let event = |kind, start_ms, end_ms, frames_lost, detail: Option<&str>| StreamEvent {
        stream_id: "s1".into(),
        patient_id: "p001".into(),
        site: "sublingual".into(),
        kind,
        start_ms,
        end_ms,
        frames_lost,
        attempts: u32::from(detail.is_some()),
        detail: detail.map(String::from),
    };
    let events = [
        event(EventKind::Started, T0, T0, 0, None),
        event(EventKind::Gap, T0 + 2_000, T0 + 4_000, 49, Some("lost")),
        event(EventKind::Stopped, T0 + 9_000, T0 + 9_000, 0, None),
    ];
    writer
        .commit(
            &PartId::new(Table::StreamEvents, "p001", T0, "part-s1-0"),
            &stream_events_batch(&events).unwrap(),
        )
        .unwrap();
}

fn read_independently(root: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent_readers.py");
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let out = Command::new(python())
        .arg(script)
        .arg(root)
        .arg(readme)
        .output()
        .expect("python runs");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "reader failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}

/// How pyarrow names the type of a column of [`columns`], and whether it is nullable.
fn pyarrow_type(type_name: &str) -> (&'static str, bool) {
    match type_name {
        "utf8" => ("string", false),
        "bool" => ("bool", false),
        "uint8" => ("uint8", false),
        "uint32" => ("uint32", false),
        "uint64" => ("uint64", false),
        "float64" => ("double", false),
        "float64 (nullable)" => ("double", true),
        "utf8 (nullable)" => ("string", true),
        "timestamp[ms, UTC]" => ("timestamp[ms, tz=UTC]", false),
        other => panic!("no pyarrow type for {other}"),
    }
}

#[test]
fn pyarrow_and_duckdb_read_every_table_with_types_and_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    write_tables(&root);
    let view = read_independently(&root);

    for table in Table::ALL {
        let expected: Vec<Value> = columns(table)
            .iter()
            .map(|(name, ty, _)| {
                let (ty, nullable) = pyarrow_type(ty);
                json!([name, ty, nullable])
            })
            .collect();
        assert_eq!(view["schemas"][table.name()], json!(expected), "{table}");
        let types = &view["duckdb_types"][table.name()];
        assert_eq!(types["patient_id"], "VARCHAR", "{table}: {types}");
        assert_eq!(types["date"], "DATE", "{table}: {types}");
    }
    let sites = &view["duckdb_types"]["sites"];
    assert_eq!(sites["quality_ok"], "BOOLEAN");
    assert_eq!(sites["partial"], "BOOLEAN");
    assert_eq!(sites["q_focus"], "UTINYINT");
    assert_eq!(sites["window_start"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(view["duckdb_types"]["patients"]["hi"], "DOUBLE");

    let metadata = view["metadata"].as_object().unwrap();
    assert_eq!(metadata.len(), 3 + 2 + 2 + 1, "{metadata:?}");
    for (path, kv) in metadata {
        let table = path.split('/').next().unwrap();
        assert_eq!(kv["capflow.table"], table, "{path}");
        assert_eq!(
            kv["capflow.schema_version"],
            SCHEMA_VERSION.to_string(),
            "{path}"
        );
    }

    // patient_id, window_start, window_end, n_valid_sites, late_frames, tvd, ppv, mfi, hi, rbc velocity.
    assert_eq!(
        view["patients"],
        json!([
            ["p001", T0, T0 + 5_000, 2, 0, 16.5, 87.5, 2.5, 0.4, 640.0],
            [
                "p001",
                T0 + 5_000,
                T0 + 10_000,
                0,
                2,
                null,
                null,
                null,
                null,
                null
            ],
            ["p002", T0, T0 + 5_000, 2, 0, 16.5, 87.5, 2.5, 0.4, 640.0],
        ])
    );
    // patient_id, stream_id, window_start, quality_ok, q_focus, quality_score, ppv, mfi, partial.
    assert_eq!(
        view["sites"],
        json!([
            ["p001", "s1", T0, true, 0, 2, 87.5, 2.5, false],
            ["p001", "s1", T0 + 5_000, false, 10, 12, null, null, true],
            ["p001", "s2", T0, true, 0, 2, 87.5, 2.5, false],
            ["p001", "s2", T0 + 5_000, false, 10, 12, null, null, true],
            ["p002", "s3", T0, true, 0, 2, 87.5, 2.5, false],
        ])
    );
    let frames = view["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 7);
    let f = frame("p001", "s1", 2);
    assert_eq!(
        frames[2],
        json!([
            "p001",
            "s1",
            2,
            f.event_time_ms,
            "every_frame",
            f.capillary_density_per_mm2,
            f.tvd_mm_per_mm2
        ])
    );

    // stream_id, kind, start, end, frames_lost, detail.
    assert_eq!(
        view["stream_events"],
        json!([
            ["p001", "s1", "started", T0, T0, 0, null],
            ["p001", "s1", "gap", T0 + 2_000, T0 + 4_000, 49, "lost"],
            ["p001", "s1", "stopped", T0 + 9_000, T0 + 9_000, 0, null],
        ])
    );

    // Every README query runs against these tables and finds rows.
    let queries = view["readme"].as_array().unwrap();
    assert!(
        queries.len() >= 4,
        "README has too few DuckDB queries: {queries:?}"
    );
    // Here the README's queries only have to run on every type and null pattern; what they find is checked
    // against a real run's output in tests/end_to_end.rs.
    for query in queries {
        assert!(query.get("error").is_none(), "README query fails: {query}");
    }
}
