//! Parquet on object storage that data engineers can trust: `kill -9` at many points then `--resume`, the same
//! on a real S3 server, an S3 outage of 30 s in the middle of a run, a store that never comes back, and hostile
//! patient ids. Every check compares with the rows and the bytes of one clean run of the same job.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/s3_server.rs"]
mod s3_server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use capflow_operators::records::{FrameMetrics, PatientWindow, SiteWindow};
use cli::{capflow_env, text, CAPFLOW};

/// A 6 s, 320×240 skin clip at 10 fps: with the small parts of [`config`] a run commits 48 parts.
fn clip(dir: &Path) -> PathBuf {
    let out = capflow_env(
        &[
            "synth",
            "--out",
            dir.to_str().unwrap(),
            "--name",
            "clip",
            "--preset",
            "skin",
            "--width",
            "320",
            "--height",
            "240",
            "--frames",
            "60",
            "--fps",
            "10",
        ],
        &[],
    );
    assert!(out.status.success(), "synth failed: {}", text(&out));
    dir.join("clip.mp4")
}

/// Two patients on the same clip; parts of 5 frames and of one 1 s window, so a run commits many parts and a
/// kill lands between them.
fn config(
    dir: &Path,
    name: &str,
    location: &str,
    extra_output: &str,
    clip: &Path,
    patients: [&str; 2],
) -> PathBuf {
    let mut toml = format!(
        "[output]\nlocation = {location:?}\nframes_per_part = 5\nwindows_per_part = 1\nevidence = true\n{extra_output}\n\n\
         [windows]\nlength_s = 1.0\n\n"
    );
    for (i, patient) in patients.iter().enumerate() {
        toml += &format!(
            "[[streams]]\nid = \"s{i}\"\npatient = {patient:?}\nsite = \"forearm\"\nsource = {:?}\num_per_px = 2.2\n\
             recorded_at = \"2026-03-01T23:59:57Z\"\n\n",
            clip.display().to_string()
        );
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

type Tables = (Vec<FrameMetrics>, Vec<SiteWindow>, Vec<PatientWindow>);

/// The three tables as capflow's reader sees them (committed parts only).
fn read_tables(location: &str, s3: &capflow_sinks::S3Options) -> Tables {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let output = capflow_sinks::open_output(location, s3).unwrap();
    (
        capflow_sinks::read_frames(&output, runtime.handle()).unwrap(),
        capflow_sinks::read_sites(&output, runtime.handle()).unwrap(),
        capflow_sinks::read_patients(&output, runtime.handle()).unwrap(),
    )
}

/// Every file under `root` by relative path, with its bytes; `*.parquet`, `*.json` and `*.png` only (a local store's
/// `name#N` staging files and the S3 server's own bookkeeping are left out).
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path
                .extension()
                .is_some_and(|e| e == "parquet" || e == "json")
            {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The part files and evidence images (no markers, no manifest).
fn parts(root: &Path) -> BTreeMap<String, Vec<u8>> {
    files(root)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("_capflow"))
        .collect()
}

fn markers(root: &Path) -> usize {
    files(&root.join("_capflow/commits")).len()
}

/// Checks that an output holds exactly the clean run's parts, byte for byte, each with a marker, and the same rows.
fn assert_same_as_clean(
    root: &Path,
    clean_root: &Path,
    rows: &Tables,
    clean_rows: &Tables,
    label: &str,
) {
    let (got, want) = (parts(root), parts(clean_root));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{label}: part files differ from the clean run's"
    );
    for (name, bytes) in &got {
        assert!(
            bytes == &want[name],
            "{label}: {name} differs from the clean run's bytes"
        );
        assert!(
            root.join("_capflow/commits")
                .join(format!("{name}.json"))
                .is_file(),
            "{label}: {name} has no commit marker"
        );
    }
    assert_eq!(markers(root), want.len(), "{label}: markers without a part");
    assert!(
        rows == clean_rows,
        "{label}: rows differ from the clean run's"
    );
}

/// Runs capflow in the background with its output captured.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(CAPFLOW)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capflow starts")
}

/// Waits until `ready` holds or the child exits; true if `ready` held first.
fn wait_for(child: &mut Child, timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return ready();
        }
        assert!(Instant::now() < deadline, "timed out waiting for the run");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn finish(child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn kill_9(mut child: Child) {
    // `Child::kill` sends SIGKILL: no destructor, no flush, no cleanup runs.
    child.kill().unwrap();
    let _ = child.wait();
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One clean run into a local folder: the reference every other output must equal.
fn clean_run(dir: &Path, clip: &Path) -> (PathBuf, Tables) {
    let root = dir.join("clean");
    let cfg = config(
        dir,
        "clean",
        root.to_str().unwrap(),
        "",
        clip,
        ["p-a", "p-b"],
    );
    let out = capflow_env(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let rows = read_tables(root.to_str().unwrap(), &Default::default());
    let n_parts = parts(&root).len();
    assert!(
        n_parts >= 40,
        "only {n_parts} parts: the kill points need more"
    );
    // The clip crosses midnight UTC, so each table has parts in two date= folders.
    let dates: std::collections::BTreeSet<String> = parts(&root)
        .keys()
        .filter_map(|k| k.split('/').nth(2).map(String::from))
        .collect();
    assert_eq!(
        dates.into_iter().collect::<Vec<_>>(),
        ["date=2026-03-01", "date=2026-03-02"]
    );
    assert!(!rows.0.is_empty() && !rows.1.is_empty() && !rows.2.is_empty());
    (root, rows)
}

/// A real S3 server, the clean local reference run, and a config writing the same job to the server.
struct S3Case {
    server: s3_server::S3Server,
    /// Holds the clip, the clean run and the configs.
    _dir: tempfile::TempDir,
    clean_root: PathBuf,
    clean_rows: Tables,
    location: String,
    cfg: String,
    /// Where the server keeps the output on its disk.
    on_disk: PathBuf,
}

impl S3Case {
    /// `None` when no S3 server is installed and `CAPFLOW_REQUIRE_S3` is not set.
    fn new(extra_output: &str) -> Option<S3Case> {
        let server = s3_server::start_server()?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let clip = clip(d);
        let (clean_root, clean_rows) = clean_run(d, &clip);
        let location = format!("s3://{}/study", s3_server::BUCKET);
        let extra = format!("{extra_output}\n{}", server.output_s3_section());
        let cfg = config(d, "s3", &location, &extra, &clip, ["p-a", "p-b"]);
        let on_disk = server.on_disk("study");
        Some(S3Case {
            server,
            _dir: dir,
            clean_root,
            clean_rows,
            location,
            cfg: cfg.to_str().unwrap().to_string(),
            on_disk,
        })
    }

    fn markers(&self) -> usize {
        markers(&self.on_disk)
    }

    /// Checks the output on the server against the clean run, rows (through the S3 reader) and bytes.
    fn assert_same_as_clean(&self, label: &str) {
        let rows = read_tables(&self.location, &self.server.options(s3_server::SECRET_KEY));
        assert_same_as_clean(
            &self.on_disk,
            &self.clean_root,
            &rows,
            &self.clean_rows,
            label,
        );
    }
}

#[test]
fn kill_9_at_many_points_then_resume_writes_exactly_the_clean_runs_rows_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clip = clip(d);
    let (clean_root, clean_rows) = clean_run(d, &clip);
    let root = d.join("crashy");
    let cfg = config(
        d,
        "crashy",
        root.to_str().unwrap(),
        "",
        &clip,
        ["p-a", "p-b"],
    );
    let cfg = cfg.to_str().unwrap();

    // Nothing to resume yet: a clear error, nothing written.
    let out = capflow_env(&["run", "--config", cfg, "--resume"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing to resume"), "{}", text(&out));

    // A chain of crashes into one output, each resumed by the next run; the points cover: before anything is
    // committed, between a part's upload and its commit (failpoints), and timed kill -9s after some commits.
    let mut log = Vec::new();
    let first = spawn(&["run", "--config", cfg], &[]);
    std::thread::sleep(Duration::from_millis(300));
    kill_9(first);
    log.push(format!("kill -9 at 0.3 s: {} markers", markers(&root)));
    for n in [1u64, 17] {
        let failpoint = format!("abort-before-commit:{n}");
        // The 0.3 s kill may land before the job exists, so the first restart is a plain run (idempotent too).
        let mut args = vec!["run", "--config", cfg];
        if n > 1 {
            args.push("--resume");
        }
        let out = capflow_env(&args, &[("CAPFLOW_FAILPOINT", &failpoint)]);
        assert!(
            !out.status.success(),
            "the failpoint {failpoint} did not fire"
        );
        log.push(format!(
            "{failpoint}: {} markers, {} parts",
            markers(&root),
            parts(&root).len()
        ));
    }
    for k in [20usize, 33, 44] {
        // Resumes may use another worker count: output is identical whatever the workers.
        let workers = if k == 33 { "2" } else { "1" };
        let mut child = spawn(&["run", "--config", cfg, "--resume", "-w", workers], &[]);
        let reached = wait_for(&mut child, Duration::from_secs(120), || markers(&root) >= k);
        kill_9(child);
        log.push(format!(
            "kill -9 after {k} markers (reached {reached}): {} markers",
            markers(&root)
        ));
    }
    // Readers that go through the markers never see a duplicate, even now.
    let partial = read_tables(root.to_str().unwrap(), &Default::default());
    let mut keys: Vec<_> = partial
        .0
        .iter()
        .map(|f| (&f.stream_id, f.frame_index))
        .collect();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "duplicate frame rows after crashes");

    let out = capflow_env(&["run", "--config", cfg, "--resume"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already held"), "{}", text(&out));
    let rows = read_tables(root.to_str().unwrap(), &Default::default());
    assert_same_as_clean(
        &root,
        &clean_root,
        &rows,
        &clean_rows,
        "after the crash chain",
    );
    eprintln!("crash chain: {}", log.join("; "));

    // Re-running the finished job (with or without --resume) writes nothing and changes nothing.
    let before = files(&root);
    let out = capflow_env(&["run", "--config", cfg], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files(&root), before, "a re-run changed the output");

    // Another job (other windows) is refused before anything is written.
    let other = std::fs::read_to_string(cfg)
        .unwrap()
        .replace("length_s = 1.0", "length_s = 2.0");
    let other_cfg = d.join("other.toml");
    std::fs::write(&other_cfg, other).unwrap();
    let out = capflow_env(
        &["run", "--config", other_cfg.to_str().unwrap(), "--resume"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("settings and model fingerprint"),
        "{}",
        text(&out)
    );
    assert_eq!(files(&root), before, "a refused job changed the output");
}

#[test]
fn kill_9_then_resume_on_a_real_s3_server() {
    let Some(case) = S3Case::new("") else { return };
    let cfg = case.cfg.as_str();
    let out = capflow_env(
        &["run", "--config", cfg],
        &[("CAPFLOW_FAILPOINT", "abort-before-commit:5")],
    );
    assert!(!out.status.success());
    let mut child = spawn(&["run", "--config", cfg, "--resume"], &[]);
    wait_for(&mut child, Duration::from_secs(120), || {
        case.markers() >= 25
    });
    kill_9(child);
    eprintln!("after the kills: {} markers on the server", case.markers());
    let out = capflow_env(&["run", "--config", cfg, "--resume"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    case.assert_same_as_clean("S3 after kills");
}

#[test]
fn an_s3_outage_of_30_s_mid_run_is_ridden_out_with_bounded_memory() {
    let Some(mut case) = S3Case::new("") else {
        return;
    };
    let mut child = spawn(&["run", "--config", &case.cfg], &[("CAPFLOW_LOG", "warn")]);
    assert!(
        wait_for(&mut child, Duration::from_secs(120), || case.markers() >= 3),
        "the run ended before the outage could start"
    );
    case.server.stop();
    let committed_at_stop = case.markers();
    let pid = child.id();
    let rss_start = rss_kib(pid).expect("the run is still going");
    let mut rss_peak = rss_start;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run gave up during a 30 s outage"
        );
        rss_peak = rss_peak.max(rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(250));
    }
    case.server.restart();
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    let retries = stderr.matches("retrying").count();
    eprintln!(
        "outage: {committed_at_stop} markers when the server stopped, {retries} retry warnings, RSS {} MiB at the \
         stop, peak {} MiB during 30 s",
        rss_start / 1024,
        rss_peak / 1024
    );
    assert!(retries >= 3, "no retries logged: {stderr}");
    assert!(
        rss_peak < rss_start + 64 * 1024,
        "memory grew from {rss_start} KiB to {rss_peak} KiB while the store was down"
    );
    case.assert_same_as_clean("S3 after the outage");
}

#[test]
fn a_store_that_never_returns_fails_clearly_and_keeps_what_was_committed() {
    let Some(mut case) = S3Case::new("retry_timeout_s = 3") else {
        return;
    };
    let cfg = case.cfg.clone();
    let (cfg, on_disk) = (cfg.as_str(), case.on_disk.clone());
    let mut child = spawn(&["run", "--config", cfg], &[]);
    assert!(wait_for(&mut child, Duration::from_secs(120), || case
        .markers()
        >= 3));
    case.server.stop();
    let stopped = Instant::now();
    let out = finish(child);
    let message = text(&out);
    assert_eq!(out.status.code(), Some(3), "{message}");
    assert!(
        stopped.elapsed() < Duration::from_secs(90),
        "took {:?} to give up",
        stopped.elapsed()
    );
    for needle in ["gave up writing", "--resume", "unreachable"] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from: {message}"
        );
    }
    // What was committed is intact: every committed part equals the clean run's.
    let committed: BTreeMap<_, _> = parts(&on_disk)
        .into_iter()
        .filter(|(k, _)| k.ends_with(".parquet"))
        .collect();
    let clean = parts(&case.clean_root);
    assert!(!committed.is_empty() && committed.len() < clean.len());
    for (name, bytes) in &committed {
        if on_disk
            .join("_capflow/commits")
            .join(format!("{name}.json"))
            .is_file()
        {
            assert!(bytes == &clean[name], "{name} differs from the clean run's");
        }
    }
    case.server.restart();
    let out = capflow_env(&["run", "--config", cfg, "--resume"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    case.assert_same_as_clean("S3 resumed after giving up");
}

#[test]
fn hostile_patient_ids_stay_inside_the_output_or_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clip = clip(d);
    let root = d.join("out");

    // Traversal and separators are escaped into one folder level each, and read back as they were.
    let cfg = config(
        d,
        "evil",
        root.to_str().unwrap(),
        "",
        &clip,
        ["../x", "a/b"],
    );
    let out = capflow_env(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let entries: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.contains(&"x".to_string()), "{entries:?}");
    for table in ["frames", "sites", "patients"] {
        let mut folders: Vec<String> = std::fs::read_dir(root.join(table))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        folders.sort();
        assert_eq!(
            folders,
            ["patient_id=..%2Fx", "patient_id=a%2Fb"],
            "{table}"
        );
    }
    let (frames, _, patients) = read_tables(root.to_str().unwrap(), &Default::default());
    let ids: std::collections::BTreeSet<&str> =
        frames.iter().map(|f| f.patient_id.as_str()).collect();
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["../x", "a/b"]);
    assert!(patients.iter().any(|p| p.patient_id == "../x"));

    // An empty id and a 10 kB id are config errors that name the key and the fix.
    let long = "0123456789".repeat(1024);
    let cfg = config(
        d,
        "bad",
        d.join("bad").to_str().unwrap(),
        "",
        &clip,
        ["", &long],
    );
    let out = capflow_env(&["run", "--config", cfg.to_str().unwrap()], &[]);
    let message = text(&out);
    assert!(!out.status.success());
    assert!(
        message.contains("streams[0].patient must not be empty"),
        "{message}"
    );
    assert!(
        message.contains("streams[1].patient") && message.contains("pseudonymise"),
        "{message}"
    );
    assert!(
        message.len() < 4000,
        "the 10 kB id was echoed: {} bytes",
        message.len()
    );
    assert!(!d.join("bad").join("frames").exists());

    // Pseudonymised, the same ids (and a real-looking one) never reach object names, file bytes or logs.
    let secret_id = "MRN-4711-Doe";
    let cfg = config(
        d,
        "pseudo",
        d.join("pseudo").to_str().unwrap(),
        "pseudonymise = true",
        &clip,
        [secret_id, &long],
    );
    let out = capflow_env(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("CAPFLOW_PSEUDONYM_KEY"),
        "{}",
        text(&out)
    );
    let key = [
        ("CAPFLOW_PSEUDONYM_KEY", "test-key-0123456789abcdef"),
        ("CAPFLOW_LOG", "debug"),
    ];
    let out = capflow_env(&["run", "--config", cfg.to_str().unwrap()], &key);
    assert!(out.status.success(), "{}", text(&out));
    let logs = text(&out);
    let written = files(&d.join("pseudo"));
    for id in [secret_id, &long[..40]] {
        assert!(!logs.contains(id), "{id} in the logs");
        for (name, bytes) in &written {
            assert!(!name.contains(id), "{id} in {name}");
            assert!(
                !bytes.windows(id.len()).any(|w| w == id.as_bytes()),
                "{id} inside {name}"
            );
        }
    }
    let (_, _, patients) = read_tables(d.join("pseudo").to_str().unwrap(), &Default::default());
    assert!(patients
        .iter()
        .all(|p| p.patient_id.starts_with("pid-") && p.patient_id.len() == 36));
    // The same key gives the same pseudonyms: a second run of the job is the same job.
    let out = capflow_env(
        &["run", "--config", cfg.to_str().unwrap(), "--resume"],
        &key,
    );
    assert!(out.status.success(), "{}", text(&out));

    // A video whose file name is not UTF-8 runs from the command line.
    use std::os::unix::ffi::OsStrExt;
    let odd_name = d.join(std::ffi::OsStr::from_bytes(b"clip-\xff\xfe.mp4"));
    std::fs::copy(&clip, &odd_name).unwrap();
    let out = Command::new(CAPFLOW)
        .arg("run")
        .arg("--input")
        .arg(&odd_name)
        .args([
            "--patient",
            "p-odd",
            "--output",
            d.join("odd").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (frames, _, _) = read_tables(d.join("odd").to_str().unwrap(), &Default::default());
    assert_eq!(frames.len(), 60);
    assert_eq!(frames[0].site, "clip-\u{fffd}\u{fffd}");
}
