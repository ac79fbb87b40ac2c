"""Independent reader for `capflow report`'s summary numbers, with DuckDB straight from the Parquet files.

Usage: report_tables.py ROOT [FROM_MS TO_MS] → prints one JSON object:
  sites:    per patient and site, over the windows starting in [FROM_MS, TO_MS): windows, the share that passed the
            quality check, partial windows, and the median and mean of each metric over the windows that passed;
  patients: per patient: distinct sites, site windows and the share that passed, patient windows, the share with a
            valid site, and the mean of each metric over the patient windows.
Used by tests/report.rs.
"""
import json
import os
import sys

import duckdb

METRICS = {
    "capillary_density": "capillary_density_per_mm2",
    "tvd": "tvd_mm_per_mm2",
    "pvd": "pvd_mm_per_mm2",
    "ppv": "ppv_percent",
    "mfi": "mfi",
}


def main(root: str, from_ms: int, to_ms: int) -> None:
    con = duckdb.connect()
    src = "read_parquet('{}', hive_partitioning = true, hive_types = {{'patient_id': VARCHAR}})"
    sites = src.format(os.path.join(root, "sites", "*", "*", "*.parquet"))
    patients = src.format(os.path.join(root, "patients", "*", "*", "*.parquet"))
    where = f"epoch_ms(window_start) >= {from_ms} AND epoch_ms(window_start) < {to_ms}"

    stats = ", ".join(
        f"median({col}) FILTER (WHERE quality_ok) AS {key}_median, avg({col}) FILTER (WHERE quality_ok) AS {key}_mean"
        for key, col in METRICS.items()
    )
    cur = con.execute(
        f"""SELECT patient_id, site, count(*) AS windows, avg(quality_ok::INTEGER) AS good_share,
                   count(*) FILTER (WHERE partial) AS partial_windows, {stats}
            FROM {sites} WHERE {where} GROUP BY ALL ORDER BY ALL"""
    )
    names = [d[0] for d in cur.description]
    out = {"sites": [dict(zip(names, r)) for r in cur.fetchall()]}

    means = ", ".join(f"avg({col}) AS {key}_mean" for key, col in METRICS.items())
    cur = con.execute(
        f"""WITH p AS (
                SELECT patient_id, count(*) AS windows, avg((n_valid_sites > 0)::INTEGER) AS valid_share, {means}
                FROM {patients} WHERE {where} GROUP BY ALL),
            s AS (
                SELECT patient_id, count(DISTINCT site) AS sites, count(*) AS site_windows,
                       avg(quality_ok::INTEGER) AS good_share
                FROM {sites} WHERE {where} GROUP BY ALL)
            SELECT * FROM p FULL JOIN s USING (patient_id) ORDER BY patient_id"""
    )
    names = [d[0] for d in cur.description]
    out["patients"] = [dict(zip(names, r)) for r in cur.fetchall()]
    print(json.dumps(out))


if __name__ == "__main__":
    lo = int(sys.argv[2]) if len(sys.argv) > 2 else -(2**62)
    hi = int(sys.argv[3]) if len(sys.argv) > 3 else 2**62
    main(sys.argv[1], lo, hi)
    sys.stdout.flush()
    os._exit(0)
