"""Independent reader for the sink tests: pyarrow (schemas, metadata) and DuckDB (hive partitions, nulls, README).

Usage: independent_readers.py ROOT README → prints one JSON object with
  schemas:   per table, [name, pyarrow type, nullable] for every column of the first file, as pyarrow reads it;
  metadata:  per file (relative path), its capflow.* key-value metadata;
  duckdb_types: per table, the DuckDB type of every column (hive partition column included);
  patients / sites / frames / stream_events: selected columns of every row as DuckDB reads them, nulls as null;
  readme:    every statement of the README's ```sql blocks, run with 'capflow-out/' replaced by ROOT: its first
             comment line, the row count, or the error.
Used by sinks/tests/independent_readers.rs.
"""
import glob
import json
import os
import re
import sys

import duckdb
import pyarrow.parquet as pq

TABLES = ["frames", "sites", "patients", "stream_events"]


def scan(root: str, table: str) -> str:
    path = os.path.join(root, table, "*", "*", "*.parquet")
    return f"read_parquet('{path}', hive_partitioning = true)"


def main(root: str, readme: str) -> None:
    con = duckdb.connect()
    out = {"schemas": {}, "metadata": {}, "duckdb_types": {}}
    for table in TABLES:
        files = sorted(glob.glob(os.path.join(root, table, "*", "*", "*.parquet")))
        schema = pq.read_schema(files[0])
        out["schemas"][table] = [[f.name, str(f.type), f.nullable] for f in schema]
        for path in files:
            kv = pq.ParquetFile(path).metadata.metadata or {}
            out["metadata"][os.path.relpath(path, root)] = {
                k.decode(): v.decode() for k, v in kv.items() if k.startswith(b"capflow.")
            }
        described = con.execute(f"DESCRIBE SELECT * FROM {scan(root, table)}").fetchall()
        out["duckdb_types"][table] = {row[0]: row[1] for row in described}

    out["patients"] = con.execute(
        f"""SELECT patient_id, epoch_ms(window_start), epoch_ms(window_end), n_valid_sites, late_frames,
                   tvd_mm_per_mm2, ppv_percent, mfi, hi, rbc_velocity_um_s
            FROM {scan(root, 'patients')} ORDER BY 1, 2"""
    ).fetchall()
    out["sites"] = con.execute(
        f"""SELECT patient_id, stream_id, epoch_ms(window_start), quality_ok, q_focus, quality_score, ppv_percent, mfi,
                   partial
            FROM {scan(root, 'sites')} ORDER BY 1, 2, 3"""
    ).fetchall()
    out["frames"] = con.execute(
        f"""SELECT patient_id, stream_id, frame_index, epoch_ms(event_time), segmentation, capillary_density_per_mm2,
                   tvd_mm_per_mm2
            FROM {scan(root, 'frames')} ORDER BY 1, 2, 3"""
    ).fetchall()
    out["stream_events"] = con.execute(
        f"""SELECT patient_id, stream_id, kind, epoch_ms(start_time), epoch_ms(end_time), frames_lost, detail
            FROM {scan(root, 'stream_events')} ORDER BY 1, 2, 4"""
    ).fetchall()

    text = open(readme, encoding="utf-8").read()
    statements = []
    for block in re.findall(r"```sql\n(.*?)```", text, flags=re.S):
        statements += [s.strip() for s in block.split(";") if s.strip()]
    results = []
    for sql in statements:
        title = sql.splitlines()[0]
        try:
            rows = con.execute(sql.replace("'capflow-out/", f"'{root}/")).fetchall()
            results.append({"query": title, "rows": len(rows)})
        except Exception as e:  # noqa: BLE001 - reported to the Rust test, which names the query
            results.append({"query": title, "error": str(e)})
    out["readme"] = results
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    # Exit at once, as tests/read_tables.py does, without waiting for the libraries to tear down.
    os._exit(0)
