//! Write + read round trips through the local file system and the in-memory store.

mod common;

use capflow_sinks::{
    frames_batch, open_output, patients_batch, read_frames, read_patients, read_sites, sites_batch,
    PartId, S3Options, SinkError, Table, TableWriter,
};
use common::{assert_capflow_metadata, frame, patient, site};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn local_fs_round_trip_writes_hive_paths_with_metadata() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let output = open_output(out_dir.to_str().unwrap(), &S3Options::default()).unwrap();
    let writer = TableWriter::new(output.clone(), rt.handle().clone());

    // Two parts for one patient, one for a patient whose id needs escaping.
    let p1a: Vec<_> = (0..5).map(|i| frame("P1", "s2", i)).collect();
    let p1b: Vec<_> = (0..3).map(|i| frame("P1", "s1", i)).collect();
    let evil: Vec<_> = (0..2).map(|i| frame("../etc/passwd", "s9", i)).collect();
    let path = writer
        .commit(
            &PartId::new(Table::Frames, "P1", 0, "w0-e0"),
            &frames_batch(&p1a).unwrap(),
        )
        .unwrap()
        .path;
    assert_eq!(
        path.as_ref(),
        "frames/patient_id=P1/date=1970-01-01/w0-e0.parquet"
    );
    writer
        .commit(
            &PartId::new(Table::Frames, "P1", 0, "w1-e0"),
            &frames_batch(&p1b).unwrap(),
        )
        .unwrap();
    let path = writer
        .commit(
            &PartId::new(Table::Frames, "../etc/passwd", 0, "w0-e0"),
            &frames_batch(&evil).unwrap(),
        )
        .unwrap()
        .path;
    assert_eq!(
        path.as_ref(),
        "frames/patient_id=..%2Fetc%2Fpasswd/date=1970-01-01/w0-e0.parquet"
    );
    // Window rows out of order, with and without flow / valid sites (null columns) and both quality verdicts.
    let sites = vec![
        site("P1", "s2", 0, true),
        site("P1", "s1", 5_000, false),
        site("P1", "s1", 0, true),
    ];
    writer
        .commit(
            &PartId::new(Table::Sites, "P1", 0, "final"),
            &sites_batch(&sites).unwrap(),
        )
        .unwrap();
    let patients = vec![patient("P1", 5_000, false), patient("P1", 0, true)];
    writer
        .commit(
            &PartId::new(Table::Patients, "P1", 0, "final"),
            &patients_batch(&patients).unwrap(),
        )
        .unwrap();

    let file = out_dir.join("frames/patient_id=P1/date=1970-01-01/w0-e0.parquet");
    assert!(file.is_file(), "{} missing", file.display());
    assert!(out_dir
        .join("frames/patient_id=..%2Fetc%2Fpasswd/date=1970-01-01/w0-e0.parquet")
        .is_file());
    assert_capflow_metadata(&file, "frames");
    for table in ["sites", "patients"] {
        assert_capflow_metadata(
            &out_dir.join(format!(
                "{table}/patient_id=P1/date=1970-01-01/final.parquet"
            )),
            table,
        );
    }
    // Nothing escaped the output folder, and no staging files were left behind.
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1);
    let names: Vec<String> =
        std::fs::read_dir(out_dir.join("frames/patient_id=P1/date=1970-01-01"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");

    let mut expected = [evil, p1b, p1a].concat();
    expected.sort_by(|a, b| {
        (&a.patient_id, &a.stream_id, a.frame_index).cmp(&(
            &b.patient_id,
            &b.stream_id,
            b.frame_index,
        ))
    });
    assert_eq!(read_frames(&output, rt.handle()).unwrap(), expected);
    // Sorted by patient, stream and window start.
    let expected_sites = vec![sites[2].clone(), sites[1].clone(), sites[0].clone()];
    assert_eq!(read_sites(&output, rt.handle()).unwrap(), expected_sites);
    let read_back = read_patients(&output, rt.handle()).unwrap();
    assert_eq!(read_back, vec![patients[1].clone(), patients[0].clone()]);
    assert_eq!(read_back[1].hi, None);
    assert_eq!(read_back[0].hi, Some(0.4));

    // Reopening the same folder reads the same data.
    let again = open_output(
        &format!("file://{}", out_dir.display()),
        &S3Options::default(),
    )
    .unwrap();
    assert_eq!(read_frames(&again, rt.handle()).unwrap(), expected);
}

#[test]
fn in_memory_round_trip_under_a_prefix() {
    let rt = runtime();
    let output = open_output("memory://runs/r1", &S3Options::default()).unwrap();
    let writer = TableWriter::new(output.clone(), rt.handle().clone());
    let rows: Vec<_> = (0..1000).map(|i| frame("π", "s", i)).collect();
    let path = writer
        .commit(
            &PartId::new(Table::Frames, "π", 0, "part-0"),
            &frames_batch(&rows).unwrap(),
        )
        .unwrap()
        .path;
    assert_eq!(
        path.as_ref(),
        "runs/r1/frames/patient_id=%CF%80/date=1970-01-01/part-0.parquet"
    );
    // Committing a part again skips it: the first commit stands.
    let again = writer
        .commit(
            &PartId::new(Table::Frames, "π", 0, "part-0"),
            &frames_batch(&rows).unwrap(),
        )
        .unwrap();
    assert!(again.skipped && again.rows == 1000, "{again:?}");
    assert_eq!(read_frames(&output, rt.handle()).unwrap(), rows);
    assert!(read_sites(&output, rt.handle()).unwrap().is_empty());
    assert!(read_patients(&output, rt.handle()).unwrap().is_empty());
}

#[test]
fn writer_rejects_bad_input_with_typed_errors() {
    let rt = runtime();
    let output = open_output("memory://", &S3Options::default()).unwrap();
    let writer = TableWriter::new(output, rt.handle().clone());
    let batch = frames_batch(&[frame("p", "s", 0)]).unwrap();
    assert!(matches!(
        writer.commit(&PartId::new(Table::Frames, "p", 0, "x#1"), &batch),
        Err(SinkError::InvalidPartName { .. })
    ));
    assert!(matches!(
        writer.commit(&PartId::new(Table::Frames, "", 0, "x"), &batch),
        Err(SinkError::InvalidPatientId { .. })
    ));
    for table in [Table::Sites, Table::Patients] {
        assert!(matches!(
            writer.commit(&PartId::new(table, "p", 0, "x"), &batch),
            Err(SinkError::SchemaMismatch { .. })
        ));
    }
}

#[test]
fn blocking_calls_inside_the_runtime_error_instead_of_panicking() {
    let rt = runtime();
    let output = open_output("memory://", &S3Options::default()).unwrap();
    let writer = TableWriter::new(output.clone(), rt.handle().clone());
    let batch = frames_batch(&[frame("p", "s", 0)]).unwrap();
    let handle = rt.handle().clone();
    let (blocking, read) = rt.block_on(async move {
        let w = writer.commit(&PartId::new(Table::Frames, "p", 0, "x"), &batch);
        let r = read_frames(&output, &handle);
        (w, r)
    });
    assert!(matches!(blocking, Err(SinkError::InsideRuntime { .. })));
    assert!(matches!(read, Err(SinkError::InsideRuntime { .. })));
}

#[test]
fn writers_work_from_many_plain_threads() {
    let rt = runtime();
    let output = open_output("memory://", &S3Options::default()).unwrap();
    let writer = TableWriter::new(output.clone(), rt.handle().clone());
    std::thread::scope(|scope| {
        for w in 0..4u64 {
            let writer = writer.clone();
            scope.spawn(move || {
                let rows: Vec<_> = (0..10).map(|i| frame("P", &format!("s{w}"), i)).collect();
                writer
                    .commit(
                        &PartId::new(Table::Frames, "P", 0, format!("w{w}")),
                        &frames_batch(&rows).unwrap(),
                    )
                    .unwrap();
            });
        }
    });
    assert_eq!(read_frames(&output, rt.handle()).unwrap().len(), 40);
}

#[test]
fn only_committed_parts_are_read_and_damaged_markers_are_reported() {
    use object_store::{path::Path, ObjectStoreExt};
    let rt = runtime();
    let output = open_output("memory://", &S3Options::default()).unwrap();
    rt.block_on(output.store.put(&Path::from("frames/_SUCCESS"), "".into()))
        .unwrap();
    // A part without a marker, as a crash between the put and the commit leaves it: not read.
    rt.block_on(output.store.put(
        &Path::from("frames/patient_id=P/date=1970-01-01/loose.parquet"),
        "x".into(),
    ))
    .unwrap();
    assert!(read_frames(&output, rt.handle()).unwrap().is_empty());
    // A marker that names another part than the one it mirrors.
    rt.block_on(output.store.put(
        &Path::from("_capflow/commits/frames/patient_id=P/date=1970-01-01/a.parquet.json"),
        r#"{"path": "frames/patient_id=Q/date=1970-01-01/a.parquet", "table": "frames", "rows": 1, "bytes": 1,
            "sha256": "", "fingerprint": "", "capflow_version": ""}"#
            .into(),
    ))
    .unwrap();
    let err = read_frames(&output, rt.handle()).unwrap_err();
    assert!(matches!(err, SinkError::BadCommit { .. }), "{err}");
    // A marker whose part is gone.
    let output = open_output("memory://", &S3Options::default()).unwrap();
    rt.block_on(output.store.put(
        &Path::from("_capflow/commits/frames/patient_id=P/date=1970-01-01/a.parquet.json"),
        r#"{"path": "frames/patient_id=P/date=1970-01-01/a.parquet", "table": "frames", "rows": 1, "bytes": 1,
            "sha256": "", "fingerprint": "", "capflow_version": ""}"#
            .into(),
    ))
    .unwrap();
    let err = read_frames(&output, rt.handle()).unwrap_err().to_string();
    assert!(
        err.contains("missing") && err.contains("a.parquet"),
        "{err}"
    );
}

#[test]
fn files_of_another_schema_version_are_refused() {
    use object_store::{path::Path, ObjectStoreExt};
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;

    let rt = runtime();
    let output = open_output("memory://", &S3Options::default()).unwrap();
    // A version-1 file: the frames table before the sites/patients split, as an older capflow wrote it.
    let batch = frames_batch(&[frame("P", "s", 0)]).unwrap();
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![
            KeyValue::new("capflow.schema_version".into(), "1".to_string()),
            KeyValue::new("capflow.table".into(), "frames".to_string()),
        ]))
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let size = bytes.len();
    rt.block_on(output.store.put(
        &Path::from("frames/patient_id=P/date=1970-01-01/old.parquet"),
        bytes.into(),
    ))
    .unwrap();
    let marker = format!(
        r#"{{"path": "frames/patient_id=P/date=1970-01-01/old.parquet", "table": "frames", "rows": 1,
            "bytes": {size}, "sha256": "", "fingerprint": "", "capflow_version": "0.0.1"}}"#
    );
    rt.block_on(output.store.put(
        &Path::from("_capflow/commits/frames/patient_id=P/date=1970-01-01/old.parquet.json"),
        marker.into(),
    ))
    .unwrap();
    let err = read_frames(&output, rt.handle()).unwrap_err();
    assert!(
        matches!(&err, SinkError::SchemaVersion { found, supported, .. }
            if found == "1" && *supported == capflow_sinks::SCHEMA_VERSION),
        "{err}"
    );
}
