"""Runs the README's query examples against a real run's output.

Usage: readme_examples.py README WORKDIR, where WORKDIR holds the run's output as `capflow-out/` (the examples use
that relative path, as a reader following the README would). Prints one JSON list: per example its kind (sql or
python), its first line, and the number of rows it returned or the error. Every ```sql block is split into
statements and run with DuckDB; every ```python block is executed and must leave its answer in `result`.
Used by tests/end_to_end.rs.
"""
import json
import os
import re
import sys

import duckdb


def main(readme: str, workdir: str) -> None:
    text = open(readme, encoding="utf-8").read()
    os.chdir(workdir)
    results = []
    con = duckdb.connect()
    for block in re.findall(r"```sql\n(.*?)```", text, flags=re.S):
        for sql in (s.strip() for s in block.split(";")):
            if not sql:
                continue
            entry = {"kind": "sql", "example": sql.splitlines()[0]}
            try:
                entry["rows"] = len(con.execute(sql).fetchall())
            except Exception as e:  # noqa: BLE001 - reported to the Rust test, which names the example
                entry["error"] = str(e)
            results.append(entry)
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        entry = {"kind": "python", "example": block.splitlines()[0]}
        scope = {}
        try:
            exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the README's own examples
            entry["rows"] = len(scope["result"])
        except Exception as e:  # noqa: BLE001
            entry["error"] = f"{type(e).__name__}: {e}"
        results.append(entry)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    os._exit(0)
