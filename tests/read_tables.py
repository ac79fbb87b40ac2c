"""Independent reader for capflow's Parquet output: DuckDB (hive partitions) and pyarrow (file metadata).

Usage: read_tables.py ROOT  → prints one JSON object: per-patient frame/site/patient-window counts, all frame rows and
stream events, as DuckDB
sees them, plus the capflow key-value metadata pyarrow finds in every file. Used by tests/end_to_end.rs.
"""
import glob
import json
import os
import sys

import duckdb
import pyarrow.parquet as pq


def main(root: str) -> None:
    con = duckdb.connect()
    out = {}
    frames = os.path.join(root, "frames", "*", "*", "*.parquet")
    patients = os.path.join(root, "patients", "*", "*", "*.parquet")
    sites = os.path.join(root, "sites", "*", "*", "*.parquet")
    out["frames_per_patient"] = dict(
        con.execute(
            f"SELECT patient_id, count(*) FROM read_parquet('{frames}', hive_partitioning = true) GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
    for name, glob_ in [("patients", patients), ("sites", sites)]:
        out[f"{name}_per_patient"] = dict(
            con.execute(
                f"SELECT patient_id, count(*) FROM read_parquet('{glob_}', hive_partitioning = true) GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
    rows = con.execute(
        f"""SELECT patient_id, stream_id, frame_index, capillary_count, area_fraction, epoch_ms(event_time) AS event_ms,
                   um_per_px
            FROM read_parquet('{frames}', hive_partitioning = true) ORDER BY stream_id, frame_index"""
    ).fetchall()
    out["frames"] = [
        dict(
            zip(["patient_id", "stream_id", "frame_index", "capillary_count", "area_fraction", "event_ms", "um_per_px"], r)
        )
        for r in rows
    ]
    columns = ["patient_id", "window_start_ms", "n_frames", "n_sites", "n_valid_sites", "late_frames", "tvd_mm_per_mm2", "ppv_percent", "mfi", "hi", "partial", "capillary_density_per_mm2"]
    wrows = con.execute(
        f"""SELECT patient_id, epoch_ms(window_start), n_frames, n_sites, n_valid_sites, late_frames, tvd_mm_per_mm2,
                   ppv_percent, mfi, hi, partial, capillary_density_per_mm2
            FROM read_parquet('{patients}', hive_partitioning = true) ORDER BY 1, 2"""
    ).fetchall()
    out["patients"] = [dict(zip(columns, r)) for r in wrows]
    events = os.path.join(root, "stream_events", "*", "*", "*.parquet")
    out["stream_events"] = []
    if glob.glob(events):
        erows = con.execute(
            f"""SELECT patient_id, stream_id, kind, epoch_ms(start_time), epoch_ms(end_time), frames_lost, attempts, detail
                FROM read_parquet('{events}', hive_partitioning = true) ORDER BY 1, 2, 4, 3"""
        ).fetchall()
        columns = ["patient_id", "stream_id", "kind", "start_ms", "end_ms", "frames_lost", "attempts", "detail"]
        out["stream_events"] = [dict(zip(columns, r)) for r in erows]
    metadata = []
    for path in sorted(glob.glob(os.path.join(root, "*", "*", "*", "*.parquet"))):
        kv = pq.ParquetFile(path).metadata.metadata or {}
        metadata.append({k.decode(): v.decode() for k, v in kv.items() if k.startswith(b"capflow.")})
    out["file_metadata"] = metadata
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)
