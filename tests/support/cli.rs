//! Running the `capflow` binary from the tests of the `capflow` package, with its output echoed for failures.
#![allow(dead_code)]

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
