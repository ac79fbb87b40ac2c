//! Write + read round trip against a real S3-compatible server (s3s-fs), including a multipart upload.
//!
//! The server binary comes from `tools/setup-s3.sh` (`.deps/s3s/bin/s3s-fs`) or `$CAPFLOW_S3S_FS`. Without it the
//! tests print a skip message, unless `CAPFLOW_REQUIRE_S3=1`, which turns the absence into a failure.

mod common;
#[path = "../../tests/support/s3_server.rs"]
mod s3_server;

use capflow_sinks::{
    frames_batch, open_output, patients_batch, read_frames, read_patients, read_sites, sites_batch,
    PartId, Table, TableWriter,
};
use common::{assert_capflow_metadata, frame, patient, site};
use s3_server::{start_server, BUCKET, SECRET_KEY};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn s3_round_trip_against_s3s_fs() {
    let Some(server) = start_server() else { return };
    let rt = runtime();
    let output = open_output(
        &format!("s3://{BUCKET}/runs/r1"),
        &server.options(SECRET_KEY),
    )
    .unwrap();
    assert_eq!(output.url, format!("s3://{BUCKET}/runs/r1"));
    let writer = TableWriter::new(output.clone(), rt.handle().clone());

    let p1: Vec<_> = (0..20).map(|i| frame("P1", "s1", i)).collect();
    let odd: Vec<_> = (0..3).map(|i| frame("a/b c", "s7", i)).collect();
    let path = writer
        .commit(
            &PartId::new(Table::Frames, "P1", 0, "w0-e0"),
            &frames_batch(&p1).unwrap(),
        )
        .unwrap()
        .path;
    assert_eq!(
        path.as_ref(),
        "runs/r1/frames/patient_id=P1/date=1970-01-01/w0-e0.parquet"
    );
    let odd_path = writer
        .commit(
            &PartId::new(Table::Frames, "a/b c", 0, "w0-e0"),
            &frames_batch(&odd).unwrap(),
        )
        .unwrap()
        .path;
    let sites = vec![site("P1", "s1", 0, true), site("P1", "s1", 5_000, false)];
    let sites_path = writer
        .commit(
            &PartId::new(Table::Sites, "P1", 0, "w0-final"),
            &sites_batch(&sites).unwrap(),
        )
        .unwrap()
        .path;
    let patients = vec![patient("P1", 0, true), patient("P1", 5_000, false)];
    writer
        .commit(
            &PartId::new(Table::Patients, "P1", 0, "w0-final"),
            &patients_batch(&patients).unwrap(),
        )
        .unwrap();

    let file = server.on_disk(path.as_ref());
    assert!(
        file.is_file(),
        "{} missing on the server's disk",
        file.display()
    );
    assert_capflow_metadata(&file, "frames");
    assert!(server.on_disk(odd_path.as_ref()).is_file(), "{odd_path}");
    assert_capflow_metadata(&server.on_disk(sites_path.as_ref()), "sites");

    let mut expected = [odd, p1].concat();
    expected.sort_by(|a, b| a.patient_id.cmp(&b.patient_id));
    assert_eq!(read_frames(&output, rt.handle()).unwrap(), expected);
    assert_eq!(read_sites(&output, rt.handle()).unwrap(), sites);
    assert_eq!(read_patients(&output, rt.handle()).unwrap(), patients);
}

#[test]
fn s3_multipart_upload_of_a_large_part() {
    let Some(server) = start_server() else { return };
    let rt = runtime();
    let output = open_output(&format!("s3://{BUCKET}/big"), &server.options(SECRET_KEY)).unwrap();
    let writer = TableWriter::new(output.clone(), rt.handle().clone())
        .with_upload_chunk_size(5 * 1024 * 1024);
    // Pseudo-random floats do not compress, so the file is well over one 5 MiB chunk.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let rows: Vec<_> = (0..200_000)
        .map(|i| {
            let mut row = frame("P", "s", i);
            row.area_fraction = next();
            row.capillary_density_per_mm2 = next();
            row.mean_probability = next();
            row.um_per_px = next();
            row.field_area_mm2 = next();
            row.tvd_mm_per_mm2 = next();
            row.focus = next();
            row
        })
        .collect();
    let path = writer
        .commit(
            &PartId::new(Table::Frames, "P", 0, "big"),
            &frames_batch(&rows).unwrap(),
        )
        .unwrap()
        .path;
    let size = std::fs::metadata(server.on_disk(path.as_ref()))
        .unwrap()
        .len();
    assert!(
        size > 5 * 1024 * 1024,
        "only {size} bytes: no multipart upload happened"
    );
    assert_eq!(read_frames(&output, rt.handle()).unwrap(), rows);
}

#[test]
fn s3_wrong_secret_fails_without_leaking_it() {
    let Some(server) = start_server() else { return };
    let rt = runtime();
    let secret = "not-the-secret-XYZZY";
    let output = open_output(&format!("s3://{BUCKET}/x"), &server.options(secret)).unwrap();
    let writer = TableWriter::new(output, rt.handle().clone());
    let err = writer
        .commit(
            &PartId::new(Table::Frames, "P", 0, "p0"),
            &frames_batch(&[frame("P", "s", 0)]).unwrap(),
        )
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("XYZZY"), "{text}");
    assert!(
        text.contains("patient_id=P/date=1970-01-01/p0.parquet"),
        "{text}"
    );
}
