//! Running the `capflow` binary from the tests of the `capflow` package, with its output echoed for failures.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
pub const CAPFLOW: &str = env!("CARGO_BIN_EXE_capflow");

/// Runs `capflow args` and echoes what it printed.
pub fn capflow(args: &[&str]) -> Output {
    capflow_env(args, &[])
}

/// Runs `capflow args` with extra environment variables and echoes what it printed.
pub fn capflow_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(CAPFLOW)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("capflow runs");
    eprintln!(
        "$ capflow {}\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// stdout and stderr together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Python with DuckDB and pyarrow: `$CAPFLOW_PYTHON`, else the workspace's `.venv/` (`make setup`).
pub fn python() -> Option<String> {
    std::env::var("CAPFLOW_PYTHON").ok().or_else(|| {
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        local.is_file().then(|| local.display().to_string())
    })
}

/// The output tables under `root` as DuckDB and pyarrow read them (`tests/read_tables.py`).
pub fn duckdb_view(root: &Path) -> serde_json::Value {
    let py = python()
        .expect("the Python readers are installed by `make setup` (.venv) or CAPFLOW_PYTHON");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/read_tables.py");
    let out = Command::new(py)
        .arg(script)
        .arg(root)
        .output()
        .expect("python runs");
    assert!(
        !out.stdout.is_empty(),
        "reader printed nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}
