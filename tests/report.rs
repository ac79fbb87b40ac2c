//! `capflow report` end to end: a small run with evidence images (two patients, one with two sites and windows that
//! fail the quality check), then reports from its output. The charts must decode at their size and show the site
//! lines and the shading; the pages must be self-contained and hold every evidence image; the summary numbers must
//! equal what DuckDB computes from the same Parquet files; bad inputs must name the input and the fix; and the same
//! report must come out of an S3-compatible server.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/s3_server.rs"]
mod s3_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use cli::{capflow, capflow_env, python, text};
use serde_json::Value;

/// The run every test reports on: made once per test binary.
struct Fixture {
    _dir: tempfile::TempDir,
    /// The run's output root.
    out: PathBuf,
    /// A scratch folder for reports.
    scratch: PathBuf,
}

/// Window starts of the fixture: 1 s windows from 08:00:00 UTC on 2026-03-01.
const T0_MS: i64 = 1_772_352_000_000;

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let synth = |name: &str, preset: &str, frames: &str, seed: &str| {
            let out = capflow(&[
                "synth", "--out", d.to_str().unwrap(), "--name", name, "--preset", preset, "--width", "320",
                "--height", "240", "--frames", frames, "--fps", "10", "--seed", seed,
            ]);
            assert!(out.status.success(), "synth failed: {}", text(&out));
            d.join(format!("{name}.mp4"))
        };
        // 2.5 s clips at 10 fps in 1 s windows: the last window of each holds 0.5 s and fails the duration check.
        let sub1 = synth("sub1", "sublingual", "25", "31");
        let sub2 = synth("sub2", "sublingual", "25", "32");
        let skin = synth("skin", "skin", "20", "33");
        let out = d.join("out");
        let mut toml = format!(
            "[output]\nlocation = {:?}\nevidence = true\n\n[windows]\nlength_s = 1.0\n\n\
             [flow]\nwindow_frames = 8\nhop_frames = 4\n\n\
             [quality]\nduration_optimal_s = 0.8\nduration_acceptable_s = 0.6\n\n",
            out.display().to_string()
        );
        for (id, patient, site, clip, um) in [
            ("p1-sub-1", "P1", "sublingual-1", &sub1, 1.5),
            ("p1-sub-2", "P1", "sublingual-2", &sub2, 1.5),
            ("p2-skin", "P2", "forearm", &skin, 2.2),
        ] {
            toml += &format!(
                "[[streams]]\nid = {id:?}\npatient = {patient:?}\nsite = {site:?}\nsource = {:?}\num_per_px = {um}\n\
                 recorded_at = \"2026-03-01T08:00:00Z\"\n\n",
                clip.display().to_string()
            );
        }
        let config = d.join("capflow.toml");
        std::fs::write(&config, toml).unwrap();
        let run = capflow(&["run", "--config", config.to_str().unwrap()]);
        assert!(run.status.success(), "{}", text(&run));
        let scratch = d.join("reports");
        std::fs::create_dir(&scratch).unwrap();
        Fixture {
            out,
            scratch,
            _dir: dir,
        }
    })
}

/// DuckDB's view of the summary numbers (`tests/report_tables.py`), optionally for windows starting in a range.
fn duckdb_summary(root: &Path, range: Option<(i64, i64)>) -> Value {
    let py = python()
        .expect("the Python readers are installed by `make setup` (.venv) or CAPFLOW_PYTHON");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/report_tables.py");
    let mut cmd = Command::new(py);
    cmd.arg(script).arg(root);
    if let Some((from, to)) = range {
        cmd.arg(from.to_string()).arg(to.to_string());
    }
    let out = cmd.output().expect("python runs");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}

/// The `data-key` → `data-value` pairs of the table row whose line starts with `prefix`.
fn row_cells(html: &str, prefix: &str) -> BTreeMap<String, String> {
    let line = html
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row starting with {prefix}"));
    let mut cells = BTreeMap::new();
    let mut rest = line;
    while let Some(i) = rest.find("data-key=\"") {
        rest = &rest[i + 10..];
        let key = &rest[..rest.find('"').unwrap()];
        let j = rest.find("data-value=\"").unwrap() + 12;
        let value = &rest[j..j + rest[j..].find('"').unwrap()];
        cells.insert(key.to_string(), value.to_string());
        rest = &rest[j..];
    }
    cells
}

/// Asserts that every key of `expected` (a DuckDB row) that the page shows has the same value in `cells`.
fn assert_same(cells: &BTreeMap<String, String>, expected: &Value, keys: &[&str], what: &str) {
    for key in keys {
        let shown = cells
            .get(*key)
            .unwrap_or_else(|| panic!("{what}: no cell {key} in {cells:?}"));
        match expected[*key].as_f64() {
            None => assert_eq!(shown, "", "{what} {key}: DuckDB has no value"),
            Some(want) => {
                let got: f64 = shown.parse().unwrap_or_else(|_| {
                    panic!("{what} {key}: {shown:?} is not a number (DuckDB: {want})")
                });
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                    "{what} {key}: page {got}, DuckDB {want}"
                );
            }
        }
    }
}

const METRIC_KEYS: [&str; 5] = ["capillary_density", "tvd", "pvd", "ppv", "mfi"];

/// A chart: decodes as 8-bit RGB of the report's size and is not blank.
fn decode_chart(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn has_colour(rgb: &[u8], colour: [u8; 3]) -> usize {
    rgb.chunks_exact(3).filter(|p| *p == colour).count()
}

fn report(args: &[&str]) -> std::process::Output {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    capflow(&all)
}

#[test]
fn patient_report_has_readable_charts_every_evidence_image_and_the_numbers_duckdb_computes() {
    let f = fixture();
    let dir = f.scratch.join("p1");
    let started = std::time::Instant::now();
    let out = report(&[
        "--patient",
        "P1",
        "--input",
        f.out.to_str().unwrap(),
        "--output",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("report of P1 took {:.2} s", started.elapsed().as_secs_f64());

    // Charts: one per metric with values (capillary density and TVD always; the flow metrics when a flow window
    // ended in some window), each 1000×420, with both site colours and the failed-quality shading.
    let charts: Vec<PathBuf> = ["capillary_density", "tvd", "pvd", "ppv", "mfi"]
        .iter()
        .map(|k| dir.join("patient-P1").join(format!("{k}.png")))
        .filter(|p| p.exists())
        .collect();
    assert!(charts.len() >= 2, "charts: {charts:?}");
    for chart in &charts {
        let (w, h, rgb) = decode_chart(chart);
        assert_eq!((w, h), (1000, 420), "{}", chart.display());
        let non_white = rgb
            .chunks_exact(3)
            .filter(|p| *p != [255, 255, 255])
            .count();
        assert!(
            non_white > 1000 * 420 / 50,
            "{} is nearly blank",
            chart.display()
        );
        assert!(
            has_colour(&rgb, [0, 114, 178]) > 20,
            "{}: first site's colour",
            chart.display()
        );
        assert!(
            has_colour(&rgb, [230, 159, 0]) > 20,
            "{}: second site's colour",
            chart.display()
        );
        assert!(
            has_colour(&rgb, [250, 205, 205]) > 500,
            "{}: failed windows shaded",
            chart.display()
        );
    }

    let html = std::fs::read_to_string(dir.join("patient-P1.html")).unwrap();
    // Self-contained: every image is a data URI, nothing points outside.
    assert_eq!(
        html.matches("src=\"").count(),
        html.matches("src=\"data:image/png;base64,").count()
    );
    for forbidden in ["http://", "https://", "href=", "<script", "<link"] {
        assert!(!html.contains(forbidden), "{forbidden} in the page");
    }
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    for chart in &charts {
        assert!(
            html.contains(&b64(&std::fs::read(chart).unwrap())),
            "{} embedded",
            chart.display()
        );
    }
    // Every evidence image of P1 (2 sites × 3 windows, fewer than the 4 per site shown) is embedded, byte for byte.
    let mut evidence = Vec::new();
    for day in std::fs::read_dir(f.out.join("evidence/patient_id=P1")).unwrap() {
        for image in std::fs::read_dir(day.unwrap().path()).unwrap() {
            evidence.push(image.unwrap().path());
        }
    }
    assert_eq!(evidence.len(), 6, "{evidence:?}");
    for image in &evidence {
        assert!(
            html.contains(&b64(&std::fs::read(image).unwrap())),
            "{} embedded",
            image.display()
        );
    }
    assert_eq!(html.matches("<img ").count(), charts.len() + evidence.len());

    // Summary numbers: what DuckDB computes from the same files.
    let truth = duckdb_summary(&f.out, None);
    let sites: Vec<&Value> = truth["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["patient_id"] == "P1")
        .collect();
    assert_eq!(sites.len(), 2);
    let mut keys = vec![
        "windows".to_string(),
        "good_share".into(),
        "partial_windows".into(),
    ];
    for m in METRIC_KEYS {
        keys.push(format!("{m}_median"));
        keys.push(format!("{m}_mean"));
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut failed = 0.0;
    for row in &sites {
        let site = row["site"].as_str().unwrap();
        let cells = row_cells(&html, &format!("<tr data-site=\"{site}\""));
        assert_same(&cells, row, &keys, site);
        failed += row["windows"].as_f64().unwrap() * (1.0 - row["good_share"].as_f64().unwrap());
    }
    assert!(
        failed >= 2.0,
        "each clip's cut last window fails the duration check"
    );
    assert!(
        sites.iter().any(|r| r["tvd_mean"].as_f64().is_some()),
        "some window passed the quality check: {sites:?}"
    );
    let patient = truth["patients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["patient_id"] == "P1")
        .unwrap();
    let cells = row_cells(&html, "<tr data-site=\"\" class=\"patient\"");
    let patient_keys: Vec<String> = METRIC_KEYS.iter().map(|m| format!("{m}_mean")).collect();
    let mut keys: Vec<&str> = patient_keys.iter().map(String::as_str).collect();
    keys.extend(["windows", "valid_share"]);
    assert_same(&cells, patient, &keys, "P1 patient row");
}

#[test]
fn all_writes_a_page_per_patient_and_a_cohort_summary_duckdb_agrees_with() {
    let f = fixture();
    let dir = f.scratch.join("all");
    let out = report(&[
        "--all",
        "--input",
        f.out.to_str().unwrap(),
        "--output",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let index = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let truth = duckdb_summary(&f.out, None);
    let patients = truth["patients"].as_array().unwrap();
    assert_eq!(patients.len(), 2);
    for row in patients {
        let id = row["patient_id"].as_str().unwrap();
        assert!(
            index.contains(&format!("<a href=\"patient-{id}.html\">{id}</a>")),
            "{id} linked"
        );
        let page = std::fs::read_to_string(dir.join(format!("patient-{id}.html"))).unwrap();
        assert!(page.contains(&format!("patient {id}")));
        let cells = row_cells(&index, &format!("<tr data-patient=\"{id}\""));
        let mut keys: Vec<String> = METRIC_KEYS.iter().map(|m| format!("{m}_mean")).collect();
        keys.extend(["sites", "windows", "valid_share", "good_share"].map(String::from));
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_same(&cells, row, &keys, id);
    }
    assert_eq!(
        index.matches("href=").count(),
        2,
        "links to the patient pages only"
    );
    assert!(!index.contains("http"));
    assert!(text(&out).contains("cohort summary"));
}

#[test]
fn from_and_to_keep_the_windows_starting_in_range() {
    let f = fixture();
    let dir = f.scratch.join("range");
    // Windows start at 08:00:00, :01 and :02; keep the middle one only.
    let out = report(&[
        "--patient",
        "P1",
        "--from",
        "2026-03-01T08:00:01Z",
        "--to",
        "2026-03-01T08:00:02Z",
        "--input",
        f.out.to_str().unwrap(),
        "--output",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let html = std::fs::read_to_string(dir.join("patient-P1.html")).unwrap();
    let truth = duckdb_summary(&f.out, Some((T0_MS + 1000, T0_MS + 2000)));
    for row in truth["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["patient_id"] == "P1")
    {
        assert_eq!(row["windows"].as_i64(), Some(1));
        let site = row["site"].as_str().unwrap();
        let cells = row_cells(&html, &format!("<tr data-site=\"{site}\""));
        assert_same(
            &cells,
            row,
            &["windows", "good_share", "tvd_mean", "ppv_mean"],
            site,
        );
    }
    assert!(html.contains("2026-03-01 08:00:01 UTC"));

    // A range without windows names the windows that exist.
    let out = report(&[
        "--patient",
        "P1",
        "--from",
        "2026-03-02T00:00:00Z",
        "--input",
        f.out.to_str().unwrap(),
        "--output",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(
        msg.contains("2026-03-01 08:00:00 UTC") && msg.contains("widen --from/--to"),
        "{msg}"
    );
    // Not a time.
    let out = report(&[
        "--all",
        "--from",
        "yesterday",
        "--input",
        "x",
        "--output",
        "y",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("RFC 3339"), "{}", text(&out));
}

#[test]
fn bad_inputs_name_the_input_and_the_fix() {
    let f = fixture();
    let dir = f.scratch.join("errors");
    let input = f.out.to_str().unwrap();
    let out = report(&[
        "--patient",
        "P9",
        "--input",
        input,
        "--output",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(msg.contains("\"P9\"") && msg.contains(input), "{msg}");
    assert!(msg.contains("patients present: \"P1\", \"P2\""), "{msg}");
    assert!(!dir.join("patient-P9.html").exists());

    let missing = f.scratch.join("no-such-output");
    let out = report(&[
        "--all",
        "--input",
        missing.to_str().unwrap(),
        "--output",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(
        msg.contains(missing.to_str().unwrap()) && msg.contains("no such folder"),
        "{msg}"
    );
    assert!(!missing.exists(), "a missing input is not created");

    let empty = f.scratch.join("empty-output");
    std::fs::create_dir_all(&empty).unwrap();
    let out = report(&[
        "--all",
        "--input",
        empty.to_str().unwrap(),
        "--output",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(
        msg.contains("no committed sites or patients rows") && msg.contains("capflow run"),
        "{msg}"
    );

    let out = report(&[
        "--all",
        "--input",
        input,
        "--output",
        dir.to_str().unwrap(),
        "--font",
        "/no/font.ttf",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("fonts-dejavu-core"), "{}", text(&out));
}

#[test]
fn the_same_report_comes_from_an_s3_compatible_server() {
    let Some(server) = s3_server::start_server() else {
        return;
    };
    let f = fixture();
    // The run's output, object by object, in the server's bucket under the prefix `study`.
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }
    copy(&f.out, &server.on_disk("study"));
    let endpoint = server.endpoint();
    let env = |secret: &'static str| {
        [
            ("AWS_ENDPOINT", endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", s3_server::ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    };
    let s3_dir = f.scratch.join("s3");
    let local_dir = f.scratch.join("s3-local");
    let run = |input: &str, dir: &Path, secret: &'static str| {
        let env = env(secret);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        capflow_env(
            &[
                "report",
                "--patient",
                "P1",
                "--input",
                input,
                "--output",
                dir.to_str().unwrap(),
            ],
            &env,
        )
    };
    let from_s3 = run(
        &format!("s3://{}/study", s3_server::BUCKET),
        &s3_dir,
        s3_server::SECRET_KEY,
    );
    assert!(from_s3.status.success(), "{}", text(&from_s3));
    let local = run(f.out.to_str().unwrap(), &local_dir, s3_server::SECRET_KEY);
    assert!(local.status.success(), "{}", text(&local));
    // The same page but for the source line.
    let page = |dir: &Path| {
        std::fs::read_to_string(dir.join("patient-P1.html"))
            .unwrap()
            .lines()
            .filter(|l| !l.contains("Source: <code>"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(page(&s3_dir), page(&local_dir));
    for chart in ["capillary_density.png", "tvd.png"] {
        assert_eq!(
            std::fs::read(s3_dir.join("patient-P1").join(chart)).unwrap(),
            std::fs::read(local_dir.join("patient-P1").join(chart)).unwrap()
        );
    }
    // [output.s3] of --config wins over the environment, as for `capflow run`.
    let config = f.scratch.join("s3.toml");
    std::fs::write(&config, server.output_s3_section()).unwrap();
    let config_dir = f.scratch.join("s3-config");
    let with_config = capflow_env(
        &[
            "report",
            "--patient",
            "P1",
            "--input",
            &format!("s3://{}/study", s3_server::BUCKET),
            "--config",
            config.to_str().unwrap(),
            "--output",
            config_dir.to_str().unwrap(),
        ],
        &[("AWS_SECRET_ACCESS_KEY", "S3cr3t-wr0ng")],
    );
    assert!(with_config.status.success(), "{}", text(&with_config));
    assert_eq!(page(&config_dir), page(&local_dir));
    // Wrong credentials: the message names the location and where credentials come from.
    let denied = run(
        &format!("s3://{}/study", s3_server::BUCKET),
        &s3_dir,
        "S3cr3t-wr0ng",
    );
    assert_eq!(denied.status.code(), Some(2));
    let msg = text(&denied);
    assert!(
        msg.contains("s3://capflow-test/study") && msg.contains("AWS_*"),
        "{msg}"
    );
    assert!(
        !msg.contains("S3cr3t-wr0ng"),
        "the secret is never echoed: {msg}"
    );
}
