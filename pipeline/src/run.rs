//! Graph assembly: sources → segment → frames table, and → per-patient windows → windows table.
//!
//! Every worker builds the same dataflow. Stream `i` is decoded by worker `i % peers`; its frames stay on that worker
//! through segmentation (pixels never cross workers or processes); frame rows are written by the same worker, one
//! part per stream and chunk of frames; window records are exchanged by patient inside `reduce`, and the worker that
//! owns a patient writes its window parts. Part names depend only on the data, so output is identical whatever the
//! worker or process count.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use arrow::record_batch::RecordBatch;
use capflow_ingest::{Frame, PixelFormat, Source, SourceOptions, StreamInfo};
use capflow_operators::metrics::MetricParams;
use capflow_operators::model::Model;
use capflow_operators::records::{FrameMetrics, WindowAggregate};
use capflow_operators::windows::window_start;
use capflow_operators::{
    ort_environment, CloseWindows, Part, PartKey, PatientWindows, Segment, SegmentParams,
    SegmentShared, Segmenter, WriteParts,
};
use capflow_sinks::{frames_batch, open_output, windows_batch, Table, TableWriter};
use ort::environment::Environment;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::{CommunicationConfig, WorkerConfig};

use crate::config::{Config, StreamConfig};
use crate::model::{load_model, ort_library};

/// Timely's process settings, as `-w`, `-n`, `-p`, `-h` on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterArgs {
    /// Worker threads per process.
    pub workers: usize,
    /// Number of processes.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// File with one `host:port` per process (default: localhost:2101, 2102, ...).
    pub hostfile: Option<PathBuf>,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        ClusterArgs {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }
}

impl ClusterArgs {
    /// The timely configuration these settings describe.
    pub fn timely_config(&self) -> anyhow::Result<timely::Config> {
        if self.workers == 0 || self.processes == 0 || self.process >= self.processes {
            bail!(
                "cluster settings need -w >= 1, -n >= 1 and 0 <= -p < -n (got -w {} -n {} -p {})",
                self.workers,
                self.processes,
                self.process
            );
        }
        let communication = if self.processes > 1 {
            let addresses = match &self.hostfile {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading hostfile {}", path.display()))?;
                    let lines: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect();
                    if lines.len() < self.processes {
                        bail!(
                            "hostfile {} lists {} addresses but -n is {}",
                            path.display(),
                            lines.len(),
                            self.processes
                        );
                    }
                    lines.into_iter().take(self.processes).collect()
                }
                None => (0..self.processes)
                    .map(|i| format!("localhost:{}", 2101 + i))
                    .collect(),
            };
            CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses,
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            CommunicationConfig::Process(self.workers)
        } else {
            CommunicationConfig::Thread
        };
        Ok(timely::Config {
            communication,
            worker: WorkerConfig::default(),
        })
    }
}

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
    /// Why the stream failed, if it did (frames before the failure are still analysed and written).
    pub error: Option<String>,
}

/// What a run did, gathered from all workers of this process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOutcome {
    /// Streams decoded by this process's workers.
    pub streams: Vec<StreamOutcome>,
    /// Parts written by this process: (table, object path, rows).
    pub parts: Vec<(String, String, usize)>,
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
    pixel_format: PixelFormat,
}

/// Runs a validated config to completion on this process's workers.
pub fn run(config: &Config, cluster: &ClusterArgs) -> anyhow::Result<RunOutcome> {
    let problems = config.problems();
    if !problems.is_empty() {
        bail!("invalid config:\n  {}", problems.join("\n  "));
    }
    let timely_config = cluster.timely_config()?;
    let model = load_model(&config.model.card)?;
    let library = ort_library(config.model.ort_library.as_deref())?;
    let env = ort_environment(&library)?;
    // Check the model against its card once, before any worker depends on it.
    Segmenter::new(&env, &model, 1)?;
    capflow_ingest::init()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("capflow-io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let output = open_output(&config.output.location, &config.output.s3)
        .with_context(|| format!("opening output {}", config.output.location))?;
    let url = output.url.clone();
    let writer = TableWriter::new(output, runtime.handle().clone());
    // The card's channels (green, luma) are both cut from RGB; a luma-only path is a later optimisation.
    let pixel_format = PixelFormat::Rgb8;
    let ctx = Arc::new(RunContext {
        config: config.clone(),
        model,
        env,
        writer,
        pixel_format,
    });

    let guards =
        timely::execute(timely_config, move |worker| worker_main(worker, &ctx)).map_err(|e| {
            anyhow::anyhow!(
                "starting timely workers: {e} (check -n/-p/-h and that peers are reachable)"
            )
        })?;
    let mut outcome = RunOutcome {
        output: url,
        ..Default::default()
    };
    for result in guards.join() {
        let report = result.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
        outcome.streams.extend(report.streams);
        outcome.parts.extend(report.parts);
        outcome.errors.extend(report.errors);
    }
    outcome
        .streams
        .sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
    outcome.parts.sort();
    drop(runtime);
    Ok(outcome)
}

#[derive(Default)]
struct WorkerReport {
    streams: Vec<StreamOutcome>,
    parts: Vec<(String, String, usize)>,
    errors: Vec<String>,
}

/// Writes one part and records the result.
fn write_part<R>(
    writer: &TableWriter,
    log: &RefCell<WorkerReport>,
    table: Table,
    part: Part<R>,
    batch: impl FnOnce(&[R]) -> Result<RecordBatch, capflow_sinks::SinkError>,
) {
    let rows = part.rows.len();
    let result =
        batch(&part.rows).and_then(|b| writer.write_part(table, &part.patient_id, &part.name, &b));
    let mut log = log.borrow_mut();
    match result {
        Ok(path) => {
            tracing::debug!(table = table.name(), part = %part.name, rows, "part written");
            log.parts
                .push((table.name().to_owned(), path.to_string(), rows))
        }
        Err(e) => {
            tracing::error!(table = table.name(), part = %part.name, error = %e, "writing a part failed");
            log.errors
                .push(format!("writing {} part {}: {e}", table.name(), part.name))
        }
    }
}

struct Running {
    source: Source,
    head: Option<Frame>,
    outcome: StreamOutcome,
}

fn worker_main(worker: &mut timely::worker::Worker, ctx: &RunContext) -> WorkerReport {
    let (index, peers) = (worker.index(), worker.peers());
    let config = &ctx.config;
    let length_ms = config.windows.length_ms();
    let card = &ctx.model.card;
    let mut input = card.input.clone();
    if let Some(mp) = config.model.max_megapixels {
        input.max_megapixels = Some(mp);
    }
    let params = SegmentParams {
        input,
        metrics: MetricParams {
            threshold: config.model.threshold.unwrap_or(card.output.threshold),
            min_area_um2: config
                .model
                .min_area_um2
                .unwrap_or(card.postprocess.min_area_um2),
            max_area_um2: config
                .model
                .max_area_um2
                .unwrap_or(card.postprocess.max_area_um2),
        },
        batch_size: config.model.batch_size,
    };
    let segmenter = Segmenter::new(&ctx.env, &ctx.model, config.model.intra_threads)
        .expect("the model was checked before the workers started");
    let shared = SegmentShared::default();
    let log = Rc::new(RefCell::new(WorkerReport::default()));
    let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<Frame>>> = InputHandle::new();
    let probe = ProbeHandle::new();

    let frames_per_part = config.output.frames_per_part;
    let chunk_ms = length_ms * config.output.windows_per_part as i64;
    worker.dataflow::<u64, _, _>(|scope| {
        let metrics = input
            .to_stream(scope)
            .segment(segmenter, params, shared.clone());
        let (writer, log_frames) = (ctx.writer.clone(), Rc::clone(&log));
        metrics.clone().write_parts(
            "WriteFrames",
            move |row: &FrameMetrics| PartKey {
                patient_id: row.patient_id.clone(),
                name: format!(
                    "part-{}-{:06}",
                    row.stream_id,
                    row.frame_index / frames_per_part as u64
                ),
                complete_rows: Some(frames_per_part),
                complete_at: None,
            },
            |a, b| a.frame_index.cmp(&b.frame_index),
            move |part| write_part(&writer, &log_frames, Table::Frames, part, frames_batch),
        );
        let windows = metrics
            .patient_windows(length_ms)
            .close_windows(length_ms)
            .probe_with(&probe);
        let (writer, log_windows) = (ctx.writer.clone(), Rc::clone(&log));
        windows.write_parts(
            "WriteWindows",
            move |row: &WindowAggregate| {
                let chunk = window_start(row.window_start_ms, chunk_ms);
                PartKey {
                    patient_id: row.patient_id.clone(),
                    name: format!("part-{chunk}"),
                    complete_rows: None,
                    complete_at: Some((chunk + chunk_ms).max(0) as u64),
                }
            },
            |a, b| a.window_start_ms.cmp(&b.window_start_ms),
            move |part| write_part(&writer, &log_windows, Table::Windows, part, windows_batch),
        );
    });

    let options = SourceOptions {
        format: ctx.pixel_format,
        queue_frames: config.ingest.queue_frames,
        sequence_fps: 25.0,
    };
    let mut running: Vec<Running> = Vec::new();
    let mut finished: Vec<StreamOutcome> = Vec::new();
    for (i, stream) in config.streams.iter().enumerate() {
        if i % peers != index {
            continue;
        }
        let outcome = StreamOutcome {
            stream_id: stream.id.clone(),
            patient_id: stream.patient.clone(),
            source: stream.source.clone(),
            frames: 0,
            error: None,
        };
        match open_stream(stream, &options) {
            Ok(source) => {
                tracing::info!(stream = %stream.id, worker = index, "stream opened");
                running.push(Running {
                    source,
                    head: None,
                    outcome,
                })
            }
            Err(e) => {
                tracing::warn!(stream = %stream.id, error = %e, "stream could not be opened");
                finished.push(StreamOutcome {
                    error: Some(e),
                    ..outcome
                })
            }
        }
    }

    // Merge this worker's streams in event-time order, so the input's time only moves forward.
    let tick = length_ms.max(1);
    loop {
        for r in running
            .iter_mut()
            .filter(|r| r.head.is_none() && r.outcome.error.is_none())
        {
            match r.source.next_frame() {
                Ok(Some(frame)) => r.head = Some(frame),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(stream = %r.outcome.stream_id, frames = r.outcome.frames, error = %e, "stream failed");
                    r.outcome.error = Some(e.to_string());
                }
            }
        }
        let next = running
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.head.as_ref().map(|f| (f.event_time_ms(), i)))
            .min();
        let Some((event_ms, i)) = next else { break };
        let frame = running[i]
            .head
            .take()
            .expect("chosen stream has a head frame");
        running[i].outcome.frames += 1;
        let time = window_start(event_ms.max(0), tick) as u64;
        if time > *input.time() {
            input.advance_to(time);
        }
        input.send(frame);
        // The handle buffers sends; push each frame on so the operator sees it now.
        input.flush();
        shared.pending.set(shared.pending.get() + 1);
        while shared.pending.get() > config.ingest.max_pending_frames {
            worker.step();
        }
    }
    finished.extend(running.into_iter().map(|r| r.outcome));
    drop(input);
    while worker.has_dataflows() {
        worker.step_or_park(None);
    }
    let mut report = log.take();
    report.errors.extend(shared.errors.take());
    report.streams = finished;
    report
}

fn open_stream(stream: &StreamConfig, options: &SourceOptions) -> Result<Source, String> {
    let recorded_at_ms = stream.recorded_at_ms()?;
    let info = StreamInfo {
        stream_id: stream.id.clone(),
        patient_id: stream.patient.clone(),
        site: stream.site.clone(),
        um_per_px: stream.um_per_px,
        recorded_at_ms,
    };
    let options = SourceOptions {
        sequence_fps: stream.fps,
        ..options.clone()
    };
    Source::open(&stream.source, Arc::new(info), &options).map_err(|e| e.to_string())
}

/// One patient's numbers over a whole run: frame-weighted means of the window means.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatientSummary {
    /// Windows written.
    pub windows: usize,
    /// Frames over all windows and streams.
    pub frames: u64,
    /// Mean capillaries per frame.
    pub capillary_count: f64,
    /// Mean area fraction.
    pub area_fraction: f64,
    /// Mean capillaries per mm².
    pub density_per_mm2: f64,
}

/// Per-patient summary of a run, from the rows of the `windows` table.
pub fn patient_summary(windows: &[WindowAggregate]) -> BTreeMap<String, PatientSummary> {
    let mut out: BTreeMap<String, PatientSummary> = BTreeMap::new();
    for w in windows {
        let e = out.entry(w.patient_id.clone()).or_default();
        let n = w.n_frames as f64;
        e.windows += 1;
        e.frames += w.n_frames;
        e.capillary_count += w.capillary_count.mean * n;
        e.area_fraction += w.area_fraction.mean * n;
        e.density_per_mm2 += w.density_per_mm2.mean * n;
    }
    for e in out.values_mut() {
        let n = (e.frames as f64).max(1.0);
        e.capillary_count /= n;
        e.area_fraction /= n;
        e.density_per_mm2 /= n;
    }
    out
}

#[cfg(test)]
mod tests {
    use capflow_operators::records::Stats;

    use super::*;

    #[test]
    fn patient_summary_weights_windows_by_frames() {
        let window = |frames: u64, count: f64| WindowAggregate {
            patient_id: "p".into(),
            window_start_ms: 0,
            window_end_ms: 1000,
            n_frames: frames,
            n_streams: 1,
            capillary_count: Stats {
                mean: count,
                ..Default::default()
            },
            area_fraction: Stats::default(),
            density_per_mm2: Stats::default(),
            mean_probability: Stats::default(),
        };
        let summary = patient_summary(&[window(1, 10.0), window(3, 30.0)]);
        let p = &summary["p"];
        assert_eq!((p.windows, p.frames), (2, 4));
        assert_eq!(p.capillary_count, 25.0);
    }

    #[test]
    fn cluster_settings_are_checked_and_default_to_local_ports() {
        assert!(ClusterArgs {
            process: 2,
            processes: 2,
            ..Default::default()
        }
        .timely_config()
        .is_err());
        let config = ClusterArgs {
            processes: 2,
            ..Default::default()
        }
        .timely_config()
        .unwrap();
        match config.communication {
            CommunicationConfig::Cluster { addresses, .. } => {
                assert_eq!(addresses, ["localhost:2101", "localhost:2102"])
            }
            other => panic!("{other:?}"),
        }
    }
}
