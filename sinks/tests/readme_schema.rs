//! The README's schema tables are generated from [`capflow_sinks::columns`]: this test fails when they differ and
//! prints the tables to paste.

use std::path::Path;

use capflow_sinks::partition::{DATE_COLUMN, PARTITION_COLUMN};
use capflow_sinks::{columns, Table};

/// The Markdown table of `table`'s columns, as the README has it: the partition columns first, then the file columns.
fn markdown(table: Table) -> String {
    let mut text = String::from("| column | type | meaning / unit |\n|---|---|---|\n");
    text += &format!(
        "| `{PARTITION_COLUMN}` | utf8 (partition) | patient id from the config, or its pseudonym |\n"
    );
    text += &format!(
        "| `{DATE_COLUMN}` | date (partition) | UTC day of the event time (frames), of the window start (sites, \
         patients) or of the event start (stream_events) |\n"
    );
    for (name, ty, meaning) in columns(table) {
        text += &format!("| `{name}` | {ty} | {meaning} |\n");
    }
    text
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

/// The README's `## Output tables` section, up to the next `## ` heading.
fn output_section(readme: &str) -> &str {
    let start = readme
        .find("\n## Output tables\n")
        .expect("README has an `## Output tables` section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

#[test]
fn readme_schema_tables_are_generated_from_columns() {
    let readme = readme();
    let section = output_section(&readme);
    let missing: Vec<Table> = Table::ALL
        .into_iter()
        .filter(|&table| !section.contains(&markdown(table)))
        .collect();
    let expected: String = Table::ALL
        .into_iter()
        .map(|table| format!("### `{table}`\n\n{}\n", markdown(table)))
        .collect();
    assert!(
        missing.is_empty(),
        "the README's schema tables for {missing:?} differ from capflow_sinks::columns(); expected:\n\n{expected}"
    );
    for table in Table::ALL {
        assert!(
            section.contains(&format!("### `{table}`: ")),
            "README lacks a `### `{table}`: ...` heading"
        );
    }
}

#[test]
fn readme_schema_section_names_no_removed_table() {
    let readme = readme();
    let section = output_section(&readme);
    for stale in ["`windows`", "windows/"] {
        assert!(
            !section.contains(stale),
            "the README's output tables section still mentions {stale}"
        );
    }
}
