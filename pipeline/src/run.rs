//! Graph assembly: sources → stabilise → segment → flow → `frames` table, and → per-site and per-patient windows →
//! `sites` and `patients` tables.
//!
//! Every worker builds the same dataflow. A stream is decoded by the worker [`Placement`] gives it; its frames stay on that worker
//! through stabilisation, segmentation and flow analysis (pixels never cross workers or processes); frame rows are
//! routed by patient, one part per stream and chunk of frames; window records are exchanged by patient inside
//! `reduce`, and the worker that owns a patient writes its site and patient parts. Part names depend only on the data, so output is identical whatever the
//! worker or process count.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use arrow::record_batch::RecordBatch;
use capflow_ingest::reader::now_ms;
use capflow_ingest::{
    Backoff, DropPolicy, Frame, PixelFormat, Popped, ReaderOptions, Resize, SourceOptions,
    StreamInfo, StreamMode, StreamReader,
};
use capflow_operators::metrics::MetricParams;
use capflow_operators::model::Model;
use capflow_operators::preprocess::check_working_size;
use capflow_operators::records::{
    Edge, EventKind, FrameMetrics, PatientWindow, SiteWindow, StreamEdge, StreamEvent, StreamRecord,
};
use capflow_operators::segment::InferenceFailure;
use capflow_operators::windows::{window_start, PatientKey, SiteKey};
use capflow_operators::{
    ort_environment, AnalyseFlow, CloseWindows, Evidence, EvidenceImage, Exact, Part, PartKey,
    PatientWindows, Segment, SegmentParams, SegmentShared, Segmenter, Stabilise, WriteParts,
};
use capflow_sinks::partition::date_of;
use capflow_sinks::{
    frames_batch, open_job, open_output, patients_batch, sites_batch, stream_events_batch, Job,
    PartId, Pseudonymiser, RetryPolicy, Table, TableWriter,
};
use ort::environment::Environment;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

pub use crate::cluster::ClusterArgs;
use crate::cluster::Placement;
use crate::config::{Config, DropPolicyName, StreamConfig};
use crate::http::HttpOptions;
use crate::model::{load_model, model_fingerprint, ort_library};
use crate::monitor::Monitor;

/// What happened to one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamOutcome {
    /// Stream id.
    pub stream_id: String,
    /// Patient id.
    pub patient_id: String,
    /// The source as configured.
    pub source: String,
    /// Frames decoded and sent for analysis.
    pub frames: u64,
    /// Followed live (dropping when behind, reconnecting when lost) rather than replayed.
    pub live: bool,
    /// Frames a live stream dropped because processing fell behind.
    pub dropped: u64,
    /// Times a live source was lost and came back.
    pub reconnects: u64,
    /// Why the stream failed, if it did (frames before the failure are still analysed and written).
    pub error: Option<String>,
}

/// One part a run committed, or found committed already.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartOutcome {
    /// Table name.
    pub table: String,
    /// Object path.
    pub path: String,
    /// Rows.
    pub rows: u64,
    /// Already committed by an earlier run of the same job (not written again).
    pub skipped: bool,
}

/// How to start a run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue a job in an output that already holds it (else it is an error); without it, an output holding
    /// the same job is re-run idempotently, one holding another job is refused.
    pub resume: bool,
    /// Testing hook: abort the process (as `kill -9` would) after uploading this many parts but before
    /// committing the last one. `CAPFLOW_FAILPOINT=abort-before-commit:N` on the command line.
    pub abort_before_commit: Option<u64>,
    /// Testing hook: this worker panics after its first frame (`CAPFLOW_FAILPOINT=panic-worker:I`), to check that
    /// its peers then stop instead of waiting for it forever.
    pub panic_worker: Option<usize>,
    /// Ends the run cleanly once set (Ctrl-C, SIGTERM): sources stop, frames already decoded are analysed, open
    /// windows are closed and written with the frames they have, and everything committed stays readable.
    pub stop: Option<Arc<AtomicBool>>,
    /// Ends the run the same way after this long (`--duration`), for scripts and live smoke tests.
    pub duration: Option<Duration>,
    /// Re-read the config's streams whenever this generation changes (SIGHUP): add and remove streams at run time.
    pub reload: Option<Reload>,
    /// Where the run reports its state (progress bars, the HTTP endpoints); a private one when `None`.
    pub monitor: Option<Arc<Monitor>>,
    /// Serve `/healthz`, `/metrics`, `/status` and the dashboard while the run goes on.
    pub http: Option<HttpOptions>,
}

/// Where and when to reload the streams of a running job.
#[derive(Clone, Debug)]
pub struct Reload {
    /// The config file to read again.
    pub path: PathBuf,
    /// Bumped on each reload request (SIGHUP); workers compare it with the generation they last applied.
    pub generation: Arc<std::sync::atomic::AtomicU64>,
    /// Keep running when every stream has ended, waiting for streams a reload adds, until stopped.
    pub follow: bool,
}

/// What a run did, gathered from all workers of this process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOutcome {
    /// Streams decoded by this process's workers.
    pub streams: Vec<StreamOutcome>,
    /// Parts committed by this process, or skipped because an earlier run of the job committed them.
    pub parts: Vec<PartOutcome>,
    /// Parts committed before this run started (a re-run or resume), over all tables.
    pub previously_committed: usize,
    /// Failed store requests that were retried.
    pub retries: u64,
    /// The output store stayed unreachable past `output.retry_timeout_s`, so the run stopped early.
    pub store_gave_up: bool,
    /// Parts and images not even tried after the store was given up on (the first failure is in `errors`).
    pub not_written: usize,
    /// Errors while segmenting or writing.
    pub errors: Vec<String>,
    /// The output location.
    pub output: String,
}

impl RunOutcome {
    /// Whether any input or write failed.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty() || self.streams.iter().any(|s| s.error.is_some())
    }
}

struct RunContext {
    config: Config,
    model: Model,
    env: Environment,
    writer: TableWriter,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
    reload: Option<Reload>,
    io: tokio::runtime::Handle,
    /// Set when a worker of this process panicked: the others stop too, instead of waiting for its progress.
    worker_failed: AtomicBool,
    /// What the first panicking worker said.
    panic_message: std::sync::Mutex<Option<String>>,
    /// When this process started the run, ms since the Unix epoch: tags a live run's part names.
    started_ms: i64,
    /// Worker threads of every process on this host (they share its cores for inference).
    local_workers: usize,
    panic_worker: Option<usize>,
    monitor: Arc<Monitor>,
}

impl RunContext {
    fn sink(&self) -> Sink {
        Sink {
            writer: self.writer.clone(),
            monitor: Arc::clone(&self.monitor),
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
            || self.peer_failed()
    }

    fn peer_failed(&self) -> bool {
        self.worker_failed.load(Ordering::SeqCst)
    }
}

/// Replaces every stream's patient id by its keyed pseudonym when `output.pseudonymise` is on; a no-op otherwise.
/// Called before anything else sees the config, so that identifiers never reach paths, rows or logs.
pub fn pseudonymise(config: &mut Config) -> anyhow::Result<()> {
    if !config.output.pseudonymise {
        return Ok(());
    }
    let pseudonymiser = Pseudonymiser::from_env(&config.output.pseudonym_key_env)?;
    for stream in &mut config.streams {
        stream.patient = pseudonymiser.pseudonym(&stream.patient);
    }
    Ok(())
}

/// Runs a validated config to completion on this process's workers.
pub fn run(
    config: &Config,
    cluster: &ClusterArgs,
    options: &RunOptions,
) -> anyhow::Result<RunOutcome> {
    let mut config = config.clone();
    pseudonymise(&mut config)?;
    config.apply_profiles();
    let config = &config;
    let problems = config.problems();
    if !problems.is_empty() {
        bail!("invalid config:\n  {}", problems.join("\n  "));
    }
    cluster.timely_config()?;
    let model = load_model(&config.model.card)?;
    let library = ort_library(config.model.ort_library.as_deref())?;
    let env = ort_environment(&library)?;
    // Check the model against its card once, before any worker depends on it.
    Segmenter::new(&env, &model, 1)?;
    capflow_ingest::init()?;
    // Before the output is touched: a process that cannot reach its peers changes nothing.
    let connected = cluster.connect()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("capflow-io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let started_ms = now_ms();
    let monitor = options.monitor.clone().unwrap_or_else(|| {
        Arc::new(Monitor::new(
            started_ms,
            Duration::from_secs_f64(config.http.trend_hours * 3600.0),
        ))
    });
    if let Some(http) = &options.http {
        let bound = crate::http::start(runtime.handle(), http, Arc::clone(&monitor))?;
        tracing::info!(address = %bound, "serving status");
        eprintln!("capflow: dashboard at http://{bound}/ (also /status, /metrics, /healthz)");
    }
    let mut config = config.clone();
    sign_s3_sources(&mut config, runtime.handle())?;
    let config = &config;
    let output = open_output(&config.output.location, &config.output.s3)
        .with_context(|| format!("opening output {}", config.output.location))?;
    let url = output.url.clone();
    // The settings and the model's contents: a card or ONNX file changed under the same name is another job.
    let job = Job::new(capflow_sinks::commit::sha256_hex(
        format!("{}:{}", config.fingerprint(), model_fingerprint(&model)).as_bytes(),
    ));
    let state = runtime
        .block_on(open_job(&output, &job, options.resume))
        .with_context(|| format!("opening the job in output {url}"))?;
    if state.existed {
        tracing::info!(
            output = %url,
            committed_parts = state.committed_parts,
            "output already holds this job; committed parts are kept and not written again"
        );
    }
    let retry = RetryPolicy {
        timeout: std::time::Duration::from_secs_f64(config.output.retry_timeout_s),
        ..RetryPolicy::default()
    };
    let mut writer = TableWriter::new(output, runtime.handle().clone())
        .with_job(job)
        .with_retry(retry);
    if let Some(n) = options.abort_before_commit {
        writer = writer.with_abort_before_commit(n);
    }
    let ctx = Arc::new(RunContext {
        config: config.clone(),
        model,
        env,
        writer,
        stop: options.stop.clone().unwrap_or_default(),
        deadline: options.duration.map(|d| Instant::now() + d),
        reload: options.reload.clone(),
        io: runtime.handle().clone(),
        worker_failed: AtomicBool::new(false),
        panic_message: Default::default(),
        started_ms,
        local_workers: cluster.workers_on_this_host(),
        panic_worker: options.panic_worker,
        monitor: Arc::clone(&monitor),
    });
    let ctx_panics = Arc::clone(&ctx);

    let ctx_retries = ctx.writer.clone();
    let guards = timely::execute::execute_from(
        connected.builders,
        connected.guard,
        connected.worker,
        move |worker| {
            // A panicking worker (a bug) flags its peers, which then stop and return instead of waiting for its
            // progress forever; the run then fails with the panic's message.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                worker_main(worker, &ctx)
            }));
            ran.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into());
                let index = worker.index();
                if let Ok(mut first) = ctx.panic_message.lock() {
                    first.get_or_insert(format!("worker {index}: {message}"));
                }
                ctx.worker_failed.store(true, Ordering::SeqCst);
                std::panic::resume_unwind(panic)
            })
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "starting timely workers: {e} (check -n/-p/-h and that peers are reachable)"
        )
    })?;
    let mut outcome = RunOutcome {
        output: url,
        previously_committed: state.committed_parts,
        ..Default::default()
    };
    for result in guards.join() {
        let report = result.map_err(|e| {
            let said = ctx_panics
                .panic_message
                .lock()
                .ok()
                .and_then(|m| m.clone())
                .unwrap_or(e);
            anyhow::anyhow!(
                "a worker failed ({said}); its peers stopped, committed parts are intact (rerun with --resume; \
                 please report the panic)"
            )
        })?;
        outcome.streams.extend(report.streams);
        outcome.parts.extend(report.parts);
        outcome.errors.extend(report.errors);
        outcome.not_written += report.not_written;
    }
    monitor.finished();
    outcome
        .streams
        .sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
    outcome.parts.sort();
    outcome.retries = ctx_retries.retries();
    outcome.store_gave_up = ctx_retries.gave_up();
    drop(runtime);
    Ok(outcome)
}

#[derive(Default)]
struct WorkerReport {
    streams: Vec<StreamOutcome>,
    parts: Vec<PartOutcome>,
    errors: Vec<String>,
    not_written: usize,
}

/// Where a worker's parts and images go: the store, and the monitor that counts them.
#[derive(Clone)]
struct Sink {
    writer: TableWriter,
    monitor: Arc<Monitor>,
}

/// Writes and commits one part and records the result.
fn write_part<R>(
    sink: &Sink,
    log: &RefCell<WorkerReport>,
    table: Table,
    part: Part<R>,
    batch: impl FnOnce(&[R]) -> Result<RecordBatch, capflow_sinks::SinkError>,
) {
    let id = PartId {
        table,
        patient_id: part.patient_id,
        date: part.date,
        name: part.name,
    };
    let started = Instant::now();
    let result = batch(&part.rows).and_then(|b| sink.writer.commit(&id, &b));
    sink.monitor.commit(
        table.name(),
        part.rows.len() as u64,
        started.elapsed(),
        result.is_ok(),
    );
    let mut log = log.borrow_mut();
    match result {
        Ok(commit) => {
            tracing::debug!(table = table.name(), part = %id.name, rows = commit.rows, skipped = commit.skipped, "part committed");
            log.parts.push(PartOutcome {
                table: table.name().to_owned(),
                path: commit.path.to_string(),
                rows: commit.rows,
                skipped: commit.skipped,
            })
        }
        Err(capflow_sinks::SinkError::GaveUp { .. }) => log.not_written += 1,
        Err(e) => {
            tracing::error!(table = table.name(), part = %id.name, error = %e, "writing a part failed");
            log.errors
                .push(format!("writing {} part {}: {e}", table.name(), id.name))
        }
    }
}

/// Encodes and stores one evidence image and records a failure.
fn write_evidence(sink: &Sink, log: &RefCell<WorkerReport>, image: EvidenceImage) {
    let result =
        crate::imageio::encode_rgb_png(image.image.width, image.image.height, &image.image.data)
            .and_then(|png| {
                sink.monitor.evidence(
                    &image.patient_id,
                    &image.stream_id,
                    image.window_start_ms,
                    &png,
                );
                Ok(sink.writer.put_evidence(
                    &image.patient_id,
                    &image.stream_id,
                    image.window_start_ms,
                    png,
                )?)
            });
    if let Err(e) = result {
        if let Some(capflow_sinks::SinkError::GaveUp { .. }) = e.downcast_ref() {
            log.borrow_mut().not_written += 1;
            return;
        }
        tracing::error!(stream = %image.stream_id, window_start_ms = image.window_start_ms, error = %e, "writing an evidence image failed");
        log.borrow_mut().errors.push(format!(
            "writing the evidence image of stream {} window {}: {e:#}",
            image.stream_id, image.window_start_ms
        ));
    }
}

/// Fails the stream `failure` concerns: its outcome gets the error (unless it failed already) and a `failed` event
/// is written at once, in a part of its own (its other events may already be written under the same start time).
fn fail_segmentation(
    sink: &Sink,
    log: &RefCell<WorkerReport>,
    outcome: &mut StreamOutcome,
    failure: &InferenceFailure,
) {
    let message = failure.to_string();
    tracing::warn!(stream = %outcome.stream_id, frames = failure.frames, error = %message, "stream failed");
    outcome.error.get_or_insert_with(|| message.clone());
    let at = failure.first_event_ms;
    let event = StreamEvent {
        stream_id: outcome.stream_id.clone(),
        patient_id: failure.patient_id.clone(),
        site: failure.site.clone(),
        kind: EventKind::Failed,
        start_ms: at,
        end_ms: at,
        frames_lost: 0,
        attempts: 0,
        detail: Some(message),
    };
    let part = Part {
        patient_id: event.patient_id.clone(),
        date: date_of(at),
        name: format!("part-{}-{at}-segmentation", event.stream_id),
        rows: vec![event],
    };
    write_part(sink, log, Table::StreamEvents, part, stream_events_batch);
}

/// Writes a stream's events, one part per UTC day, named after the stream and the first event's start.
fn write_events(sink: &Sink, log: &RefCell<WorkerReport>, events: Vec<StreamEvent>) {
    let mut by_day: BTreeMap<(String, String), Vec<StreamEvent>> = BTreeMap::new();
    for event in events {
        by_day
            .entry((event.patient_id.clone(), date_of(event.start_ms)))
            .or_default()
            .push(event);
    }
    for ((patient_id, date), rows) in by_day {
        let name = format!("part-{}-{}", rows[0].stream_id, rows[0].start_ms);
        let part = Part {
            patient_id,
            date,
            name,
            rows,
        };
        write_part(sink, log, Table::StreamEvents, part, stream_events_batch);
    }
}

struct Running {
    stream: StreamConfig,
    reader: StreamReader,
    head: Option<Frame>,
    /// The reader has closed and its queue is drained.
    closed: bool,
    outcome: StreamOutcome,
    /// Events not written yet, and when they were last written.
    events: Vec<StreamEvent>,
    flushed_at: Instant,
    /// Index of the first frame (frames this stream id had before it was removed and added again).
    first_index: u64,
    /// Event times of the last two frames sent, ms: where the stream's data ends when it finishes.
    last_event_ms: Option<i64>,
    last_interval_ms: i64,
}

impl Running {
    /// Pops the stream's next frame, waiting up to `timeout`; notes when the stream has ended.
    fn pop(&mut self, timeout: Duration) -> Option<Frame> {
        match self.reader.pop_timeout(timeout) {
            Popped::Item(frame) => Some(frame),
            Popped::Empty => None,
            Popped::Closed => {
                self.close();
                None
            }
        }
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.reader.join();
        if let Some(e) = self.reader.take_error() {
            tracing::warn!(stream = %self.outcome.stream_id, frames = self.outcome.frames, error = %e, "stream failed");
            self.outcome.error = Some(scrub(&self.stream, e.to_string()));
        }
        self.outcome.dropped = self.reader.dropped();
        self.outcome.reconnects = self.reader.reconnects();
    }

    /// Collects the reader's new events; returns those due for writing (all at the end, else every `every`).
    fn due_events(&mut self, every: Duration) -> Option<Vec<StreamEvent>> {
        let stream = &self.stream;
        self.events
            .extend(self.reader.take_events().into_iter().map(|mut e| {
                e.detail = e.detail.map(|d| scrub(stream, d));
                e
            }));
        let due = self.closed || (self.outcome.live && self.flushed_at.elapsed() >= every);
        if !due || self.events.is_empty() {
            return None;
        }
        self.flushed_at = Instant::now();
        Some(std::mem::take(&mut self.events))
    }

    /// An edge of the stream's recording at `event_time_ms`, by frame `frame`.
    fn edge(&self, edge: Edge, frame: u64, event_time_ms: i64) -> StreamRecord {
        StreamRecord::Edge(StreamEdge {
            stream_id: self.stream.id.clone(),
            patient_id: self.stream.patient.clone(),
            site: self.stream.site.clone(),
            edge,
            frame,
            event_time_ms,
        })
    }

    /// Where the stream's data ends (one frame interval past its last frame), once it has sent a frame.
    fn end(&self) -> Option<StreamRecord> {
        let last = self.last_event_ms?;
        let frame = (self.first_index + self.outcome.frames).saturating_sub(1);
        Some(self.edge(Edge::End, frame, last + self.last_interval_ms))
    }
}

/// The dataflow's two inputs: decoded frames, and the starts and ends of streams (which mark the windows they cut
/// `partial`). They advance together, so neither holds the watermark back.
struct Inputs {
    frames: InputHandle<u64, CapacityContainerBuilder<Vec<Frame>>>,
    ends: InputHandle<u64, CapacityContainerBuilder<Vec<StreamRecord>>>,
}

impl Inputs {
    fn time(&self) -> u64 {
        *self.frames.time()
    }

    /// Moves both inputs' watermark to `time` (never back).
    fn advance_to(&mut self, time: u64) {
        if time > self.time() {
            self.frames.advance_to(time);
            self.ends.advance_to(time);
        }
    }

    /// Sends the end of a stream that has finished (a stream that never sent a frame has none), at the current
    /// watermark: moving it to the end's own time would overtake frames that other streams of this worker have not
    /// sent yet, and they would arrive late (a replay's output would then depend on which streams share a worker).
    fn send_end(&mut self, r: &Running) {
        if let Some(end) = r.end() {
            self.ends.send(end);
            self.ends.flush();
        }
    }
}

fn worker_main(worker: &mut timely::worker::Worker, ctx: &RunContext) -> WorkerReport {
    let (index, peers) = (worker.index(), worker.peers());
    let config = &ctx.config;
    let spec = config.windows.spec();
    let card = &ctx.model.card;
    let mut input_spec = card.input.clone();
    if let Some(mp) = config.model.max_megapixels {
        input_spec.max_megapixels = Some(mp);
    }
    let threshold = config.model.threshold.unwrap_or(card.output.threshold);
    let params = SegmentParams {
        input: input_spec.clone(),
        metrics: MetricParams {
            threshold,
            // Linking stays off unless the card or the config asks for it, and never reaches above the threshold.
            link_threshold: config
                .model
                .link_threshold
                .or(card.postprocess.link_threshold)
                .map_or(threshold, |link| link.min(threshold)),
            min_area_um2: config
                .model
                .min_area_um2
                .unwrap_or(card.postprocess.min_area_um2),
            max_area_um2: config
                .model
                .max_area_um2
                .unwrap_or(card.postprocess.max_area_um2),
        },
        vessels: config.vessels.params(),
        batch_size: config.model.batch_size,
        max_wait: Some(std::time::Duration::from_millis(
            config.model.batch_max_wait_ms,
        )),
        segmentation: config.segmentation,
    };
    let (threads, settings) = config.model.session_settings(ctx.local_workers);
    let segmenters: Vec<Segmenter> = (0..threads)
        .map(|_| {
            Segmenter::with_settings(&ctx.env, &ctx.model, settings)
                .expect("the model was checked before the workers started")
        })
        .collect();
    let shared = SegmentShared::default();
    let log = Rc::new(RefCell::new(WorkerReport::default()));
    let mut inputs = Inputs {
        frames: InputHandle::new(),
        ends: InputHandle::new(),
    };
    let probe = ProbeHandle::new();

    let frames_per_part = config.output.frames_per_part;
    // Row indices step by N in `every_nth`/`block_mean`, so a part spans N times as many frames.
    let frames_per_chunk = (frames_per_part * config.segmentation.frames_per_row() as usize) as u64;
    let chunk_ms = spec.hop_ms * config.output.windows_per_part as i64;
    // A chunk of windows is complete once its last window has closed.
    let chunk_complete = move |chunk: i64| spec.close_time(chunk + chunk_ms - spec.hop_ms);
    worker.dataflow::<u64, _, _>(|scope| {
        let mut analysed = inputs
            .frames
            .to_stream(scope)
            .stabilise(input_spec.clone())
            .segment(segmenters, params, shared.clone());
        if config.output.evidence {
            let (sink, log_evidence) = (ctx.sink(), Rc::clone(&log));
            analysed = analysed.evidence(spec, config.vessels.small_diameter_um, move |image| {
                write_evidence(&sink, &log_evidence, image)
            });
        }
        let records = analysed.analyse_flow(config.flow.clone());
        let (sink, log_frames) = (ctx.sink(), Rc::clone(&log));
        // Replays cut frame parts by frame index (the same files on every run); live runs by event time, so a part
        // is written minutes, not hours, after its frames (a crash loses at most one part's rows per stream).
        let live = config.streams.iter().any(|s| s.is_live());
        let live_part_ms = live.then(|| (config.output.live_frames_part_s * 1000.0).round() as i64);
        // A live run's parts carry the run's start: a restarted monitor writes new parts next to the old ones
        // instead of finding their names committed (a replay's names are the same on every run, by design).
        let run_tag = if live {
            format!("-r{}", ctx.started_ms)
        } else {
            String::new()
        };
        let (tag_frames, tag_sites, tag_patients) = (run_tag.clone(), run_tag.clone(), run_tag);
        // A live frame arriving after its part was written goes into a part of its own (`-late-N`).
        let mut written: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        records
            .clone()
            .flat_map(|r| match r {
                StreamRecord::Frame(f) => Some(f),
                _ => None,
            })
            .write_parts(
                "WriteFrames",
                move |row: &FrameMetrics| match live_part_ms {
                    None => PartKey {
                        patient_id: row.patient_id.clone(),
                        date: date_of(row.event_time_ms),
                        name: format!(
                            "part-{}-{:06}",
                            row.stream_id,
                            row.frame_index / frames_per_chunk
                        ),
                        complete_rows: Some(frames_per_part),
                        complete_at: None,
                    },
                    Some(part_ms) => {
                        let start = window_start(row.event_time_ms, part_ms);
                        PartKey {
                            patient_id: row.patient_id.clone(),
                            date: date_of(row.event_time_ms),
                            name: format!("part-{}-t{start}{tag_frames}", row.stream_id),
                            complete_rows: None,
                            complete_at: Some((start + part_ms).max(0) as u64),
                        }
                    }
                },
                |a, b| a.frame_index.cmp(&b.frame_index),
                move |mut part: Part<FrameMetrics>| {
                    if live_part_ms.is_some() {
                        let key = (
                            part.patient_id.clone(),
                            part.date.clone(),
                            part.name.clone(),
                        );
                        let seen = written.entry(key).or_default();
                        if *seen > 0 {
                            part.name = format!("{}-late-{seen}", part.name);
                        }
                        *seen += 1;
                    }
                    write_part(&sink, &log_frames, Table::Frames, part, frames_batch)
                },
            );
        let (sites, patients) = records
            .concat(inputs.ends.to_stream(scope))
            .patient_windows(spec, config.quality.clone());
        let (sink, log_sites) = (ctx.sink(), Rc::clone(&log));
        let (monitor_sites, monitor_patients) =
            (Arc::clone(&ctx.monitor), Arc::clone(&ctx.monitor));
        let evidence = config.output.evidence;
        sites
            .close_windows(
                "CloseSites",
                move |k: &SiteKey| spec.close_time(k.1),
                // The monitor (dashboard, /status) sees each window as it closes; its part is written later.
                move |_, v: Exact<SiteWindow>| {
                    let row = v.into_inner();
                    monitor_sites.site_windows(std::slice::from_ref(&row));
                    row
                },
            )
            .write_parts(
                "WriteSites",
                move |row: &SiteWindow| {
                    let chunk = window_start(row.window_start_ms, chunk_ms);
                    PartKey {
                        patient_id: row.patient_id.clone(),
                        date: date_of(row.window_start_ms),
                        name: format!("part-{chunk}{tag_sites}"),
                        complete_rows: None,
                        complete_at: Some(chunk_complete(chunk)),
                    }
                },
                |a, b| (a.window_start_ms, &a.stream_id).cmp(&(b.window_start_ms, &b.stream_id)),
                move |mut part: Part<SiteWindow>| {
                    if evidence {
                        // The evidence operator wrote an image for every window with a segmented frame.
                        for row in part.rows.iter_mut().filter(|r| r.n_frames > 0) {
                            row.evidence_path = capflow_sinks::evidence_path(
                                &row.patient_id,
                                &row.stream_id,
                                row.window_start_ms,
                            )
                            .ok();
                        }
                    }
                    write_part(&sink, &log_sites, Table::Sites, part, sites_batch)
                },
            );
        let (sink, log_patients) = (ctx.sink(), Rc::clone(&log));
        patients
            .close_windows(
                "ClosePatients",
                move |k: &PatientKey| spec.close_time(k.1),
                move |_, v: Exact<PatientWindow>| {
                    let row = v.into_inner();
                    monitor_patients.patient_windows(std::slice::from_ref(&row));
                    row
                },
            )
            .probe_with(&probe)
            .write_parts(
                "WritePatients",
                move |row: &PatientWindow| {
                    let chunk = window_start(row.window_start_ms, chunk_ms);
                    PartKey {
                        patient_id: row.patient_id.clone(),
                        date: date_of(row.window_start_ms),
                        name: format!("part-{chunk}{tag_patients}"),
                        complete_rows: None,
                        complete_at: Some(chunk_complete(chunk)),
                    }
                },
                |a, b| a.window_start_ms.cmp(&b.window_start_ms),
                move |part: Part<PatientWindow>| {
                    write_part(&sink, &log_patients, Table::Patients, part, patients_batch)
                },
            );
    });

    let placement = Placement::new(config, peers);
    let mut running: Vec<Running> = Vec::new();
    let mut finished: Vec<StreamOutcome> = Vec::new();
    // Frames analysed per stream id over the run, so a stream removed and added again goes on numbering.
    let mut numbered: BTreeMap<String, u64> = BTreeMap::new();
    for stream in config
        .streams
        .iter()
        .filter(|s| placement.owner(&s.id) == index)
    {
        match start_stream(stream, ctx, index, &log, 0) {
            Ok(r) => running.push(r),
            Err(outcome) => finished.push(*outcome),
        }
    }
    let mut generation = ctx
        .reload
        .as_ref()
        .map(|r| r.generation.load(Ordering::SeqCst));

    // Replays are merged in event-time order, so the input's time (the watermark) only moves forward and the
    // output is the same on every run. Live streams are served round-robin, one frame each per round, and the
    // watermark follows the wall clock (minus a delay), so windows close on time even while a source is away.
    let tick = spec.tick();
    let live_config = &config.ingest.live;
    let delay_ms = (live_config.watermark_delay_s * 1000.0).round() as i64;
    let flush_every = Duration::from_secs_f64(live_config.events_flush_s);
    let mut stopping = false;
    let mut refreshed = Instant::now();
    // Streams failed because their frames could not be segmented.
    let mut failed_segmentation: BTreeSet<String> = BTreeSet::new();
    let working_spec = input_spec.clone();
    let send = |inputs: &mut Inputs, r: &mut Running, mut frame: Frame| {
        // A frame that cannot be segmented at all (its pixel size would enlarge it past memory) fails its stream
        // like a model failure, before it costs anything.
        let (w, h) = (frame.width as usize, frame.height as usize);
        if let Err(e) = check_working_size(w, h, frame.um_per_px(), &working_spec) {
            let mut failed = shared.failed_streams.borrow_mut();
            let failure = failed
                .entry(frame.stream.stream_id.clone())
                .or_insert_with(|| InferenceFailure {
                    patient_id: frame.stream.patient_id.clone(),
                    site: frame.stream.site.clone(),
                    first_frame: r.first_index + r.outcome.frames,
                    first_event_ms: frame.event_time_ms(),
                    frames: 0,
                    error: e.to_string(),
                });
            failure.frames += 1;
            return;
        }
        // Numbered as analysed: a live stream's dropped frames leave no holes in the `frames` table's chunks.
        frame.index = r.first_index + r.outcome.frames;
        r.outcome.frames += 1;
        let event_ms = frame.event_time_ms();
        ctx.monitor.frame_analysed(&r.stream.id, event_ms);
        let time = (window_start(event_ms.max(0), tick) as u64).max(inputs.time());
        inputs.advance_to(time);
        match r.last_event_ms.replace(event_ms) {
            Some(last) => r.last_interval_ms = (event_ms - last).max(0),
            None => {
                inputs.ends.send(r.edge(Edge::Start, frame.index, event_ms));
                inputs.ends.flush();
            }
        }
        inputs.frames.send(frame);
        // The handle buffers sends; push each frame on so the operator sees it now.
        inputs.frames.flush();
        if ctx.panic_worker == Some(index) {
            panic!("CAPFLOW_FAILPOINT=panic-worker:{index}");
        }
        shared.pending.set(shared.pending.get() + 1);
    };
    loop {
        if ctx.writer.gave_up() {
            // The store stayed down past the retry period: stop reading; what is committed stays as it is.
            for r in running.iter_mut().filter(|r| r.outcome.error.is_none()) {
                r.reader.stop();
                r.outcome.error = Some("not finished: the output store was unreachable".into());
            }
            break;
        }
        if !stopping && ctx.stop_requested() {
            stopping = true;
            ctx.monitor.stopping();
            tracing::info!(
                worker = index,
                "stopping: sources close, open windows are flushed"
            );
            for r in &running {
                r.reader.stop();
            }
        }
        if let Some(reload) = &ctx.reload {
            let now = reload.generation.load(Ordering::SeqCst);
            if generation != Some(now) && !stopping {
                generation = Some(now);
                apply_reload(
                    ctx,
                    reload,
                    index,
                    &placement,
                    &mut running,
                    &mut numbered,
                    &log,
                );
            }
        }
        // A stream whose frames could not be segmented (broken model, NaN output) fails and stops; the others go on.
        for r in &mut running {
            if failed_segmentation.contains(&r.stream.id) {
                continue;
            }
            if let Some(failure) = shared.failed_streams.borrow().get(&r.stream.id) {
                failed_segmentation.insert(r.stream.id.clone());
                r.reader.stop();
                fail_segmentation(&ctx.sink(), &log, &mut r.outcome, failure);
            }
        }
        // Finished streams leave the loop before any index into `running` is taken below (their last events are
        // written now); their counts are kept for a stream added again later.
        if running.iter().any(|r| r.closed && r.head.is_none()) {
            let (done, open): (Vec<Running>, Vec<Running>) = std::mem::take(&mut running)
                .into_iter()
                .partition(|r| r.closed && r.head.is_none());
            running = open;
            for mut r in done {
                refresh_monitor(ctx, std::slice::from_ref(&r), &shared);
                ctx.monitor
                    .stream_closed(&r.stream.id, stopping, r.outcome.error.as_deref());
                inputs.send_end(&r);
                if let Some(events) = r.due_events(flush_every) {
                    write_events(&ctx.sink(), &log, events);
                }
                numbered.insert(r.stream.id.clone(), r.first_index + r.outcome.frames);
                finished.push(r.outcome);
            }
        }
        let follow = ctx.reload.as_ref().is_some_and(|r| r.follow) && !stopping;
        if running.is_empty() && !follow {
            break;
        }
        let mut progressed = false;
        for r in running.iter_mut().filter(|r| r.outcome.live && !r.closed) {
            if let Some(frame) = r.pop(Duration::ZERO) {
                send(&mut inputs, r, frame);
                progressed = true;
            }
        }
        let mut waiting = None;
        for (i, r) in running.iter_mut().enumerate() {
            if !r.outcome.live && !r.closed && r.head.is_none() {
                r.head = r.pop(Duration::ZERO);
                if r.head.is_none() && !r.closed {
                    waiting = Some(i);
                }
            }
        }
        if waiting.is_none() {
            let next = running
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.head.as_ref().map(|f| (f.event_time_ms(), i)))
                .min();
            if let Some((_, i)) = next {
                let frame = running[i]
                    .head
                    .take()
                    .expect("chosen stream has a head frame");
                send(&mut inputs, &mut running[i], frame);
                progressed = true;
            }
        }
        let replaying = running.iter().any(|r| !r.outcome.live && !r.closed);
        if !replaying && running.iter().any(|r| r.outcome.live && !r.closed) {
            inputs.advance_to(window_start((now_ms() - delay_ms).max(0), tick) as u64);
        }
        for r in &mut running {
            if let Some(events) = r.due_events(flush_every) {
                write_events(&ctx.sink(), &log, events);
            }
        }
        if refreshed.elapsed() >= MONITOR_REFRESH {
            refreshed = Instant::now();
            refresh_monitor(ctx, &running, &shared);
        }
        while shared.pending.get() > config.ingest.max_pending_frames {
            // Frames wait for inference on the worker's inference thread, which wakes the worker when a batch is
            // done; parking (bounded) instead of spinning leaves the cores to it.
            worker.step_or_park(Some(Duration::from_millis(2)));
        }
        if !progressed {
            // Nothing to send: analyse what is pending, then wait briefly for the stream the merge needs.
            worker.step_or_park(Some(Duration::from_millis(if waiting.is_some() {
                0
            } else {
                5
            })));
            if let Some(i) = waiting {
                running[i].head = running[i].pop(Duration::from_millis(10));
            }
        }
    }
    for mut r in running {
        r.close();
        refresh_monitor(ctx, std::slice::from_ref(&r), &shared);
        ctx.monitor
            .stream_closed(&r.stream.id, stopping, r.outcome.error.as_deref());
        inputs.send_end(&r);
        if let Some(events) = r.due_events(flush_every) {
            write_events(&ctx.sink(), &log, events);
        }
        finished.push(r.outcome);
    }
    drop(inputs);
    // Bounded parks: a CI run once left a worker parked for good here after its peer had finished (a wake-up that
    // never came); waking every 50 ms costs nothing and lets it see the dataflow complete.
    while worker.has_dataflows() && !ctx.peer_failed() {
        worker.step_or_park(Some(Duration::from_millis(50)));
        refresh_monitor(ctx, &[], &shared);
    }
    refresh_monitor(ctx, &[], &shared);
    if ctx.peer_failed() {
        // The failed peer's progress never comes: drop the dataflow (what it had not written is lost to this run;
        // committed parts are intact) so this worker can return.
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
    }
    // Frames still in flight when their stream finished are segmented only now.
    for outcome in &mut finished {
        if failed_segmentation.contains(&outcome.stream_id) {
            continue;
        }
        if let Some(failure) = shared.failed_streams.borrow().get(&outcome.stream_id) {
            fail_segmentation(&ctx.sink(), &log, outcome, failure);
        }
    }
    let mut report = log.take();
    report.errors.extend(shared.errors.take());
    report.streams.extend(finished);
    report
}

/// How often a worker copies its readers' counters and its inference timings into the monitor.
const MONITOR_REFRESH: Duration = Duration::from_millis(250);

/// Copies the readers' counters, the model calls timed since the last refresh and the store's retries into the
/// monitor.
fn refresh_monitor(ctx: &RunContext, running: &[Running], shared: &SegmentShared) {
    for r in running {
        ctx.monitor.stream_counters(
            &r.stream.id,
            r.reader.decoded(),
            r.reader.dropped(),
            r.reader.reconnects(),
            r.reader.duration_ms(),
        );
    }
    for (batch, took) in shared.inferences.take() {
        ctx.monitor.inference(batch, took);
    }
    ctx.monitor.store_retries(ctx.writer.retries());
}

/// Opens a stream's reader; a stream that cannot be opened gets a `failed` event and its (boxed) outcome back.
fn start_stream(
    stream: &StreamConfig,
    ctx: &RunContext,
    worker: usize,
    log: &RefCell<WorkerReport>,
    first_index: u64,
) -> Result<Running, Box<StreamOutcome>> {
    let outcome = StreamOutcome {
        stream_id: stream.id.clone(),
        patient_id: stream.patient.clone(),
        source: stream.source.clone(),
        frames: 0,
        live: stream.is_live(),
        dropped: 0,
        reconnects: 0,
        error: None,
    };
    ctx.monitor
        .stream_opened(&stream.id, &stream.patient, &stream.site, outcome.live);
    let resize = ctx
        .config
        .ingest
        .resize_in_decoder
        .then(|| working_size(stream.um_per_px(), &ctx.model.card.input));
    // The model reads green and redness from colour frames and luma from grayscale ones (redness 0): a grayscale
    // camera's frames need no RGB.
    let format = if stream.grayscale() {
        PixelFormat::Gray8
    } else {
        PixelFormat::Rgb8
    };
    match open_stream(stream, &ctx.config, format, resize) {
        Ok(reader) => {
            let pixels = format.gst_name();
            tracing::info!(stream = %stream.id, patient = %stream.patient, worker, live = outcome.live, pixels, "stream opened");
            Ok(Running {
                stream: stream.clone(),
                reader,
                head: None,
                closed: false,
                outcome,
                events: Vec::new(),
                flushed_at: Instant::now(),
                first_index,
                last_event_ms: None,
                last_interval_ms: 0,
            })
        }
        Err(e) => {
            tracing::warn!(stream = %stream.id, error = %e, "stream could not be opened");
            ctx.monitor.stream_closed(&stream.id, false, Some(&e));
            let at = stream.recorded_at_ms().unwrap_or(0);
            let event = StreamEvent {
                stream_id: stream.id.clone(),
                patient_id: stream.patient.clone(),
                site: stream.site.clone(),
                kind: EventKind::Failed,
                start_ms: at,
                end_ms: at,
                frames_lost: 0,
                attempts: 0,
                detail: Some(e.clone()),
            };
            write_events(&ctx.sink(), log, vec![event]);
            Err(Box::new(StreamOutcome {
                error: Some(e),
                ..outcome
            }))
        }
    }
}

/// The streams of the config file as it is now, checked and ready to open (pseudonymised, S3 sources signed).
fn reloaded_streams(ctx: &RunContext, reload: &Reload) -> anyhow::Result<Vec<StreamConfig>> {
    let mut config = crate::config::load_file(&reload.path).map_err(anyhow::Error::msg)?;
    pseudonymise(&mut config)?;
    config.apply_profiles();
    let problems = config.problems();
    if !problems.is_empty() {
        bail!("invalid config:\n  {}", problems.join("\n  "));
    }
    if config.streams.iter().any(|s| s.is_live()) != ctx.config.streams.iter().any(|s| s.is_live())
        && !ctx.config.streams.is_empty()
    {
        bail!("a live run cannot switch to replays (or back) on reload; start another run");
    }
    sign_s3_sources(&mut config, &ctx.io)?;
    Ok(config.streams)
}

/// Applies a config reload to this worker's streams: streams no longer listed stop (their frames so far are
/// analysed and written), new ones start; the others go on untouched. Other settings need a restart.
fn apply_reload(
    ctx: &RunContext,
    reload: &Reload,
    worker: usize,
    placement: &Placement,
    running: &mut Vec<Running>,
    numbered: &mut BTreeMap<String, u64>,
    log: &RefCell<WorkerReport>,
) {
    let streams = match reloaded_streams(ctx, reload) {
        Ok(streams) => streams,
        Err(e) => {
            // Every worker reads the file; one says so.
            if worker == 0 {
                tracing::error!(config = %reload.path.display(), error = %format!("{e:#}"), "config reload refused; the running streams go on");
            }
            return;
        }
    };
    let wanted: BTreeMap<&str, &StreamConfig> = streams
        .iter()
        .filter(|s| placement.owner(&s.id) == worker)
        .map(|s| (s.id.as_str(), s))
        .collect();
    for r in running
        .iter()
        .filter(|r| !wanted.contains_key(r.stream.id.as_str()))
    {
        tracing::info!(stream = %r.stream.id, "stream removed from the config; stopping it");
        r.reader.stop();
    }
    for (id, stream) in wanted {
        if running.iter().any(|r| r.stream.id == id) {
            continue;
        }
        let first = numbered.get(id).copied().unwrap_or(0);
        match start_stream(stream, ctx, worker, log, first) {
            Ok(r) => running.push(r),
            Err(outcome) => log.borrow_mut().streams.push(*outcome),
        }
    }
}

/// The size the analyses work at, as a source resize: the model input's size for frames of `um_per_px` (the
/// stabiliser and preprocessing then find the frame at that size already and resize nothing). Only shrinking
/// happens in the decoder: a frame the model would enlarge arrives as decoded, so capflow's own checks see it
/// (an absurd pixel size is then refused with its key instead of failing GStreamer's negotiation).
pub(crate) fn working_size(um_per_px: f64, spec: &capflow_operators::model::InputSpec) -> Resize {
    let spec = spec.clone();
    Resize::new(move |w, h| {
        let (ow, oh) =
            capflow_operators::preprocess::model_size(w as usize, h as usize, um_per_px, &spec);
        if ow > w as usize || oh > h as usize {
            return (w, h);
        }
        (ow as u32, oh as u32)
    })
}

fn open_stream(
    stream: &StreamConfig,
    config: &Config,
    format: PixelFormat,
    resize: Option<Resize>,
) -> Result<StreamReader, String> {
    let recorded_at_ms = stream.recorded_at_ms()?;
    let info = StreamInfo {
        stream_id: stream.id.clone(),
        patient_id: stream.patient.clone(),
        site: stream.site.clone(),
        um_per_px: stream.um_per_px(),
        recorded_at_ms,
    };
    let ingest = &config.ingest;
    let live = &ingest.live;
    let options = if stream.is_live() {
        ReaderOptions {
            source: SourceOptions {
                format,
                queue_frames: ingest.queue_frames,
                sequence_fps: stream.fps(),
                stall_timeout: Duration::from_secs_f64(live.stall_timeout_s),
                live: true,
                limits: config.limits.frame(),
                resize: resize.clone(),
            },
            mode: StreamMode::Live,
            queue_frames: live.queue_frames as usize,
            drop_policy: match live.drop_policy {
                DropPolicyName::DropOldest => DropPolicy::DropOldest,
                DropPolicyName::KeepEveryNth => DropPolicy::KeepEveryNth(live.keep_every_nth),
            },
            backoff: Backoff {
                initial: Duration::from_secs_f64(live.reconnect_initial_s),
                max: Duration::from_secs_f64(live.reconnect_max_s),
                factor: 2.0,
            },
            give_up_after: live.give_up_after_s.map(Duration::from_secs_f64),
            nominal_fps: stream.fps(),
        }
    } else {
        ReaderOptions {
            source: SourceOptions {
                format,
                queue_frames: ingest.queue_frames,
                sequence_fps: stream.fps(),
                stall_timeout: Duration::from_secs_f64(ingest.stall_timeout_s),
                live: false,
                limits: config.limits.frame(),
                resize,
            },
            mode: StreamMode::Replay,
            queue_frames: ingest.queue_frames as usize,
            nominal_fps: stream.fps(),
            ..ReaderOptions::default()
        }
    };
    let location = stream.fetch_url.as_deref().unwrap_or(&stream.source);
    StreamReader::spawn(location, info, options).map_err(|e| scrub(stream, e.to_string()))
}

/// Archived recordings on S3 are streamed over presigned HTTP URLs (GStreamer reads them with range requests).
fn sign_s3_sources(config: &mut Config, io: &tokio::runtime::Handle) -> anyhow::Result<()> {
    for stream in &mut config.streams {
        if stream.source.starts_with("s3://") || stream.source.starts_with("s3a://") {
            let url = io
                .block_on(capflow_sinks::presign_s3_get(
                    &stream.source,
                    &config.ingest.s3,
                    Duration::from_secs(7 * 24 * 3600),
                ))
                .with_context(|| format!("stream {}: signing {}", stream.id, stream.source))?;
            stream.fetch_url = Some(url);
        }
    }
    Ok(())
}

/// `text` with a stream's presigned URL (a temporary credential) replaced by its `s3://` source.
fn scrub(stream: &StreamConfig, text: String) -> String {
    match &stream.fetch_url {
        Some(url) => text.replace(url.as_str(), &stream.source),
        None => text,
    }
}

/// One patient's numbers over a whole run: frame-weighted means of the window values that exist.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatientSummary {
    /// Windows written.
    pub windows: usize,
    /// Windows with at least one site that passed the quality check.
    pub valid_windows: usize,
    /// Frames over all windows and sites.
    pub frames: u64,
    /// Mean capillaries per frame.
    pub capillary_count: Option<f64>,
    /// Mean area fraction.
    pub area_fraction: Option<f64>,
    /// Mean total vessel density, mm/mm².
    pub tvd_mm_per_mm2: Option<f64>,
    /// Mean proportion of perfused vessels, %.
    pub ppv_percent: Option<f64>,
    /// Mean microvascular flow index.
    pub mfi: Option<f64>,
}

/// Per-patient summary of a run, from the rows of the `patients` table.
pub fn patient_summary(windows: &[PatientWindow]) -> BTreeMap<String, PatientSummary> {
    #[derive(Default)]
    struct Acc {
        summary: PatientSummary,
        sums: [(f64, f64); 5],
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for w in windows {
        let e = acc.entry(w.patient_id.clone()).or_default();
        e.summary.windows += 1;
        e.summary.frames += w.n_frames;
        e.summary.valid_windows += usize::from(w.n_valid_sites > 0);
        let n = w.n_frames as f64;
        let values = [
            w.capillary_count,
            w.area_fraction,
            w.tvd_mm_per_mm2,
            w.ppv_percent,
            w.mfi,
        ];
        for (sum, value) in e.sums.iter_mut().zip(values) {
            if let Some(v) = value {
                sum.0 += v * n;
                sum.1 += n;
            }
        }
    }
    acc.into_iter()
        .map(|(patient, a)| {
            let mean = |i: usize| (a.sums[i].1 > 0.0).then(|| a.sums[i].0 / a.sums[i].1);
            let summary = PatientSummary {
                capillary_count: mean(0),
                area_fraction: mean(1),
                tvd_mm_per_mm2: mean(2),
                ppv_percent: mean(3),
                mfi: mean(4),
                ..a.summary
            };
            (patient, summary)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_shrink_to_the_working_size_and_never_enlarge() {
        let card = crate::model::load_model("builtin").unwrap().card.input;
        // A 1080p skin frame at 2.2 µm/px is segmented at about half its size: the decoder delivers that size.
        let skin = working_size(2.2, &card);
        assert_eq!(skin.size(1920, 1080), {
            let (w, h) = capflow_operators::preprocess::model_size(1920, 1080, 2.2, &card);
            (w as u32, h as u32)
        });
        assert!(skin.size(1920, 1080).0 < 1920);
        // A pixel size the model would enlarge (here absurdly) arrives as decoded, for capflow's own checks.
        assert_eq!(working_size(900.0, &card).size(64, 48), (64, 48));
    }

    #[test]
    fn patient_summary_weights_windows_by_frames_and_skips_missing_values() {
        let window = |frames: u64, count: Option<f64>| PatientWindow {
            patient_id: "p".into(),
            n_frames: frames,
            n_valid_sites: u32::from(count.is_some()),
            capillary_count: count,
            ..Default::default()
        };
        let summary = patient_summary(&[
            window(1, Some(10.0)),
            window(3, Some(30.0)),
            window(5, None),
        ]);
        let p = &summary["p"];
        assert_eq!((p.windows, p.valid_windows, p.frames), (3, 2, 9));
        assert_eq!(p.capillary_count, Some(25.0));
        assert_eq!(p.mfi, None);
    }
}
