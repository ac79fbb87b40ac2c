//! The `capflow` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use capflow::config::{self, Config, StreamConfig, DEFAULT_CONFIG};
use capflow::logging::{LogFormat, Redactor};
use capflow::progress::{Progress, ProgressMode};
use capflow::run::{patient_summary, run, ClusterArgs, RunOptions, RunOutcome};
use capflow::synth_cmd::SynthArgs;
use clap::{ArgAction, Parser, Subcommand};

/// mimalloc instead of the system allocator: the per-patient windows allocate and free many small rows across worker
/// threads, where glibc's malloc spent about a third of the aggregation's time (see `docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Streaming capillary microscopy analysis: video in, per-frame and per-patient Parquet tables out.
#[derive(Parser, Debug)]
#[command(name = "capflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or JSON (level from CAPFLOW_LOG, default warn); patient ids appear only as per-run tags.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CAPFLOW_LOG_FORMAT",
        default_value_t
    )]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Print a model's card and the input/output tensors of its ONNX file, checked the way a run checks them.
    Inspect {
        /// `builtin` (the learned model), `classical`, a built-in name, or a model card .toml.
        card: String,
        /// ONNX Runtime library (default: ORT_DYLIB_PATH, else what `make setup` installed).
        #[arg(long)]
        ort_library: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Analyse the streams of a config (default: the bundled demo) or ad-hoc --input/--patient pairs.
    Run(RunArgs),
    /// Render a synthetic capillary clip with exact ground truth.
    Synth(SynthArgs),
    /// Validate a config and print it resolved.
    Check {
        /// Config file (default: the embedded default).
        config: Option<PathBuf>,
    },
    /// Inspect a model (`capflow model inspect builtin|classical|CARD.toml`).
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Measure decode-only, inference-only and end-to-end throughput on a generated 1080p clip.
    Bench(capflow::bench::BenchArgs),
    /// Score a model against truth masks (an image folder, or a generated held-out set) and write a report.
    Eval(capflow::eval::EvalArgs),
    /// Segment unlabelled images and draw the capillaries found (overlays + counts.csv).
    Annotate(capflow::annotate::AnnotateArgs),
    /// Plots and a self-contained HTML report of a patient (or --all) from the tables of a capflow output.
    Report(capflow::report::ReportArgs),
}

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
struct RunArgs {
    /// Config file (TOML). Without it the embedded default (configs/default.toml) runs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A video file, image folder or URI to analyse (repeatable; pairs with --patient). File names need not be
    /// UTF-8.
    #[arg(long = "input", action = ArgAction::Append)]
    inputs: Vec<std::ffi::OsString>,
    /// A study manifest (CSV, or Parquet named *.parquet: source, patient and optionally site, recorded_at, profile,
    /// um_per_px, fps, id, mode; one recording per row; sources may be files, folders, URIs or s3://bucket/key)
    /// whose rows are analysed too.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Patient id of each --input, in order (one --patient applies to all inputs).
    #[arg(long = "patient", action = ArgAction::Append)]
    patients: Vec<String>,
    /// Continue the job already in the output (after a crash, kill or outage): parts it committed are kept and
    /// not written again, the rest is written, so the output ends up exactly as one clean run's.
    #[arg(long)]
    resume: bool,
    /// End the run cleanly after this long, e.g. `30s` or `2h` (live streams otherwise run until Ctrl-C/SIGTERM).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Keep running after every stream has ended, waiting for streams that a config reload adds (SIGHUP re-reads
    /// --config: new streams start, removed ones stop, the others go on), until Ctrl-C, SIGTERM or --duration.
    #[arg(long)]
    follow: bool,
    /// Pixel size of the --input streams, µm per pixel (default: the --profile's, else 2.2).
    #[arg(long)]
    um_per_px: Option<f64>,
    /// Device profile of the --input streams: a `[profiles.<name>]` of the config, or built in (`hdmia-skin`).
    #[arg(long)]
    profile: Option<String>,
    /// The --input streams come from a grayscale camera (sublingual SDF/IDF): decode them to luma, not RGB.
    #[arg(long)]
    grayscale: bool,
    /// Output folder or s3://bucket/prefix (overrides output.location).
    #[arg(long)]
    output: Option<String>,
    /// Model card .toml (overrides model.card).
    #[arg(long)]
    model: Option<String>,
    /// Worker threads per process (default: `cluster.workers`, else 1).
    #[arg(short = 'w', long = "workers")]
    workers: Option<usize>,
    /// Number of processes in a timely cluster (default: `cluster.processes`, else 1).
    #[arg(short = 'n', long = "processes")]
    processes: Option<usize>,
    /// This process's index in the cluster, 0 to n-1.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    process: usize,
    /// Hostfile: one host:port per process, in process order (default: `cluster.hosts`, else localhost:2101, 2102, …).
    #[arg(short = 'h', long = "hostfile")]
    hostfile: Option<PathBuf>,
    /// How long to wait for the other processes to connect, e.g. `30s` (default: `cluster.peer_timeout_s`, 60 s).
    #[arg(long, value_parser = humantime::parse_duration)]
    peer_timeout: Option<std::time::Duration>,
    /// Serve the dashboard, /status, /metrics and /healthz on IP:PORT, or PORT on 127.0.0.1, while the run goes on
    /// (overrides http.listen; port 0 picks a free port, printed at start). Off loopback, a bearer token is required
    /// (http.token_env, default CAPFLOW_HTTP_TOKEN).
    #[arg(long, value_name = "[IP:]PORT")]
    http: Option<String>,
    /// Progress display: bars on a terminal, else a line every --progress-every (auto), or always one of them, or
    /// off.
    #[arg(long, value_enum, default_value_t)]
    progress: ProgressMode,
    /// How often a progress line is printed when not drawing bars, e.g. `10s`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    progress_every: std::time::Duration,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => config::load_file(path).map_err(anyhow::Error::msg),
        None => {
            let mut config = config::parse(DEFAULT_CONFIG, "embedded configs/default.toml")
                .map_err(anyhow::Error::msg)?;
            config.resolve_paths(Path::new("configs"));
            Ok(config)
        }
    }
}

fn run_config(args: &RunArgs) -> anyhow::Result<Config> {
    let mut config =
        if args.config.is_none() && (!args.inputs.is_empty() || args.manifest.is_some()) {
            Config::default()
        } else {
            load_config(args.config.as_deref())?
        };
    if !args.inputs.is_empty() {
        let patients: Vec<&String> = match args.patients.len() {
            1 => vec![&args.patients[0]; args.inputs.len()],
            n if n == args.inputs.len() => args.patients.iter().collect(),
            n => bail!(
                "{} --input but {n} --patient: give one --patient per --input, or one for all",
                args.inputs.len()
            ),
        };
        config.streams = args
            .inputs
            .iter()
            .zip(patients)
            .enumerate()
            .map(|(i, (input, patient))| {
                Ok(StreamConfig {
                    id: format!("input-{i}"),
                    patient: patient.clone(),
                    site: Path::new(input)
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    source: source_text(input)?,
                    profile: args.profile.clone(),
                    um_per_px: args.um_per_px,
                    fps: None,
                    grayscale: args.grayscale.then_some(true),
                    recorded_at: None,
                    mode: Default::default(),
                    fetch_url: None,
                })
            })
            .collect::<anyhow::Result<_>>()?;
    } else if !args.patients.is_empty() {
        bail!("--patient needs --input");
    }
    if let Some(manifest) = &args.manifest {
        config
            .streams
            .extend(config::load_manifest(manifest).map_err(anyhow::Error::msg)?);
    }
    if let Some(output) = &args.output {
        config.output.location = output.clone();
    }
    if let Some(model) = &args.model {
        config.model.card = model.clone();
    }
    Ok(config)
}

/// An `--input` as a source string: UTF-8 text as it is; a local path with other bytes in its name as a `file://`
/// URI whose percent-escapes carry those bytes to GStreamer unchanged.
fn source_text(input: &std::ffi::OsStr) -> anyhow::Result<String> {
    if let Some(text) = input.to_str() {
        return Ok(text.to_string());
    }
    let path = std::path::absolute(input)
        .with_context(|| format!("resolving --input {}", Path::new(input).display()))?;
    url::Url::from_file_path(&path)
        .map(String::from)
        .map_err(|()| anyhow::anyhow!("--input {} is not a usable file path", path.display()))
}

/// The testing failpoint from `CAPFLOW_FAILPOINT` (`abort-before-commit:N`), if set.
/// The testing failpoints from `CAPFLOW_FAILPOINT`: `abort-before-commit:N` or `panic-worker:I`.
fn failpoint() -> anyhow::Result<(Option<u64>, Option<usize>)> {
    let Ok(value) = std::env::var("CAPFLOW_FAILPOINT") else {
        return Ok((None, None));
    };
    let number = |prefix: &str| {
        value
            .strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    if let Some(n) = number("abort-before-commit:") {
        return Ok((Some(n), None));
    }
    if let Some(i) = number("panic-worker:") {
        return Ok((None, Some(i as usize)));
    }
    bail!("CAPFLOW_FAILPOINT={value:?}: expected abort-before-commit:N or panic-worker:I")
}

/// A flag set by the first Ctrl-C or SIGTERM, which ends the run cleanly (sources stop, open windows are flushed,
/// committed output stays); a second Ctrl-C or SIGTERM exits at once with status 130.
fn stop_on_signals() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // The conditional shutdown is registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, std::sync::Arc::clone(&stop))
            .context("installing the Ctrl-C/SIGTERM handler")?;
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))
            .context("installing the Ctrl-C/SIGTERM handler")?;
    }
    Ok(stop)
}

/// Counts SIGHUPs, each asking the workers to re-read the streams of `path`.
fn reload_on_hangup(path: &Path, follow: bool) -> anyhow::Result<capflow::run::Reload> {
    use signal_hook::consts::SIGHUP;
    let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP])
        .context("installing the SIGHUP (config reload) handler")?;
    let counter = std::sync::Arc::clone(&generation);
    std::thread::Builder::new()
        .name("capflow-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .context("starting the SIGHUP thread")?;
    Ok(capflow::run::Reload {
        path: path.to_owned(),
        generation,
        follow,
    })
}

/// Prints what this process did; with one process, also the per-patient numbers read back from the table (in a
/// cluster other processes may still be writing, so each prints only its own part).
fn print_summary(config: &Config, outcome: &RunOutcome, read_back: bool) {
    println!(
        "capflow: {} stream(s) on this process",
        outcome.streams.len()
    );
    for s in &outcome.streams {
        let live = if s.live {
            format!(
                "  (live: {} dropped, {} reconnect(s))",
                s.dropped, s.reconnects
            )
        } else {
            String::new()
        };
        match &s.error {
            None => println!(
                "  ok     {:<24} patient {:<10} {:>6} frames  {}{live}",
                s.stream_id, s.patient_id, s.frames, s.source
            ),
            Some(e) => println!(
                "  FAILED {:<24} patient {:<10} {:>6} frames  {e}",
                s.stream_id, s.patient_id, s.frames
            ),
        }
    }
    for e in &outcome.errors {
        println!("  error: {e}");
    }
    if outcome.not_written > 0 {
        println!(
            "  {} more part(s) or image(s) were not written: the store was given up on",
            outcome.not_written
        );
    }
    let rows = |table: &str| -> (u64, usize) {
        let parts: Vec<_> = outcome.parts.iter().filter(|p| p.table == table).collect();
        (parts.iter().map(|p| p.rows).sum(), parts.len())
    };
    let ((frames, frame_parts), (sites, site_parts), (patients, patient_parts), (events, _)) = (
        rows("frames"),
        rows("sites"),
        rows("patients"),
        rows("stream_events"),
    );
    println!(
        "committed {frames} frame rows ({frame_parts} part(s)), {sites} site rows ({site_parts}), {patients} patient rows ({patient_parts}) and {events} stream events to {}",
        outcome.output
    );
    let skipped = outcome.parts.iter().filter(|p| p.skipped).count();
    if outcome.previously_committed > 0 || skipped > 0 {
        println!(
            "  the output already held {} committed part(s) of this job; {skipped} of them were due again and kept as they were",
            outcome.previously_committed
        );
    }
    if outcome.retries > 0 {
        println!("  {} failed store request(s) were retried", outcome.retries);
    }
    if !read_back {
        return;
    }
    // Read the committed patients table back so the summary shows what a reader of the table would see.
    let read = (|| -> anyhow::Result<_> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let output = capflow_sinks::open_output(&config.output.location, &config.output.s3)?;
        Ok(capflow_sinks::read_patients(&output, runtime.handle())?)
    })();
    let show = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    };
    match read {
        Ok(windows) => {
            println!(
                "per patient ({} s windows; means over windows that passed the quality check):",
                config.windows.length_s
            );
            println!(
                "  {:<12} {:>7} {:>6} {:>7} {:>11} {:>9} {:>11} {:>7} {:>5}",
                "patient",
                "windows",
                "valid",
                "frames",
                "capillaries",
                "area",
                "TVD mm/mm²",
                "PPV %",
                "MFI"
            );
            for (patient, p) in patient_summary(&windows) {
                println!(
                    "  {patient:<12} {:>7} {:>6} {:>7} {:>11} {:>9} {:>11} {:>7} {:>5}",
                    p.windows,
                    p.valid_windows,
                    p.frames,
                    show(p.capillary_count, 1),
                    show(p.area_fraction, 4),
                    show(p.tvd_mm_per_mm2, 1),
                    show(p.ppv_percent, 0),
                    show(p.mfi, 2)
                );
            }
        }
        Err(e) => println!("(could not read the patients table back: {e:#})"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let redactor = Redactor::default();
    capflow::logging::init(cli.log_format, &redactor);
    match real_main(cli, &redactor) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("capflow: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Keeps the run's patient ids and every credential it may see out of the logs.
fn redact_run(redactor: &Redactor, config: &Config) {
    redactor.patients(config.streams.iter().map(|s| s.patient.as_str()));
    let from_env = |name: &str| std::env::var(name).ok();
    let secrets: Vec<String> = [
        from_env(&config.http.token_env),
        from_env(&config.output.pseudonym_key_env),
        from_env("AWS_SECRET_ACCESS_KEY"),
        from_env("AWS_SESSION_TOKEN"),
        config.output.s3.secret_access_key.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    redactor.secrets(secrets.iter().map(String::as_str));
}

fn real_main(cli: Cli, redactor: &Redactor) -> anyhow::Result<ExitCode> {
    let log_format = cli.log_format;
    match cli.command {
        Command::Run(args) => {
            let config = run_config(&args)?;
            redact_run(redactor, &config);
            let http = match args.http.as_ref().or(config.http.listen.as_ref()) {
                Some(listen) => Some(capflow::http::HttpOptions::new(
                    listen,
                    &config.http.token_env,
                )?),
                None => None,
            };
            let monitor = std::sync::Arc::new(capflow::monitor::Monitor::new(
                capflow_ingest::reader::now_ms(),
                std::time::Duration::from_secs_f64(config.http.trend_hours * 3600.0),
            ));
            let mut cluster = ClusterArgs::from_config(&config.cluster);
            cluster.workers = args.workers.unwrap_or(cluster.workers);
            cluster.processes = args.processes.unwrap_or(cluster.processes);
            cluster.process = args.process;
            cluster.hostfile = args.hostfile.clone();
            cluster.peer_timeout = args.peer_timeout.unwrap_or(cluster.peer_timeout);
            let (abort_before_commit, panic_worker) = failpoint()?;
            let options = RunOptions {
                resume: args.resume,
                abort_before_commit,
                panic_worker,
                stop: Some(stop_on_signals()?),
                duration: args.duration,
                reload: match &args.config {
                    Some(path) => Some(reload_on_hangup(path, args.follow)?),
                    None if args.follow => {
                        bail!("--follow needs --config (the file a reload re-reads)")
                    }
                    None => None,
                },
                monitor: Some(std::sync::Arc::clone(&monitor)),
                http,
            };
            // JSON logs are for collectors: plain progress lines would break them unless asked for.
            let progress_mode = match (args.progress, log_format) {
                (ProgressMode::Auto, LogFormat::Json) => ProgressMode::Off,
                (mode, _) => mode,
            };
            let progress = Progress::start(monitor, progress_mode, args.progress_every);
            let outcome = run(&config, &cluster, &options);
            progress.finish();
            let outcome = outcome?;
            print_summary(
                &config,
                &outcome,
                cluster.processes == 1 && !outcome.store_gave_up,
            );
            if outcome.store_gave_up {
                eprintln!(
                    "capflow: the output {} stayed unreachable for output.retry_timeout_s ({} s), so the run stopped; \
                     parts committed before are intact. Once it is reachable, rerun the same command with --resume",
                    outcome.output, config.output.retry_timeout_s
                );
                return Ok(ExitCode::from(3));
            }
            if outcome.failed() {
                eprintln!(
                    "capflow: some inputs failed (see above); the output of the others is complete"
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Synth(args) => {
            let written = args.run()?;
            let mean_count = written
                .truth
                .iter()
                .map(|t| t.capillary_count as f64)
                .sum::<f64>()
                / written.truth.len().max(1) as f64;
            let vessels = if args.dataset.is_some() {
                String::new()
            } else {
                format!("{} vessels, ", written.vessels.len())
            };
            println!(
                "wrote {} frames ({vessels}mean {:.1} capillaries per frame){}, truth in {}",
                written.frames,
                mean_count,
                written
                    .mp4
                    .as_ref()
                    .map(|p| format!(", video {}", p.display()))
                    .unwrap_or_default(),
                written.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let mut config = load_config(config.as_deref())?;
            config.apply_profiles();
            let problems = config.problems();
            print!(
                "{}",
                toml::to_string_pretty(&config).context("printing the config")?
            );
            if problems.is_empty() {
                eprintln!("config is valid");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("invalid config:\n  {}", problems.join("\n  "))
            }
        }
        Command::Model {
            command: ModelCommand::Inspect { card, ort_library },
        } => {
            print!(
                "{}",
                capflow::model::inspect(&card, ort_library.as_deref())
                    .with_context(|| format!("inspecting model {card}"))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            capflow::bench::bench(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Annotate(args) => {
            let rows = capflow::annotate::annotate(&args)?;
            for r in &rows {
                println!(
                    "{:<32} {:>5} capillaries  area fraction {:.4}",
                    r.file, r.capillary_count, r.area_fraction
                );
            }
            println!("overlays and counts.csv in {}", args.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            capflow::report::print_outcome(&capflow::report::report(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => {
            let report = capflow::eval::eval(&args)?;
            capflow::eval::print_summary(&report, &args.report);
            Ok(ExitCode::SUCCESS)
        }
    }
}
