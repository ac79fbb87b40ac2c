//! What a running job looks like from outside: each stream's state and counters, each patient's latest windows and
//! trend, and the latency of inference and of the store.
//!
//! Workers write into one [`Monitor`] per process (a mutex taken a few times per frame, nothing on the pixel path);
//! the HTTP endpoints (`/status`, `/metrics`, the dashboard) and the progress display read snapshots of it. Nothing
//! here feeds back into the dataflow, so output is the same with or without anyone watching.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use capflow_operators::records::{PatientWindow, SiteWindow};
use serde::Serialize;

/// Upper bounds (seconds) of the latency histograms: inference of one batch and one part's commit.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the batch-size histogram.
const BATCH_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
/// A live stream that has sent nothing for this long shows as `waiting` (its source is away or reconnecting).
const WAITING_AFTER: Duration = Duration::from_secs(3);

/// Where a stream is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Opened, no frame yet.
    Opening,
    /// Frames are flowing.
    Running,
    /// A live stream with no frame for a few seconds (source away, reconnecting).
    Waiting,
    /// Reached the end of its recording.
    Ended,
    /// Stopped by the run (Ctrl-C, SIGTERM, `--duration`, removed by a reload).
    Stopped,
    /// Failed for good; `error` says why.
    Failed,
}

impl StreamState {
    /// The state's name as `/status` and `/metrics` spell it.
    pub fn name(self) -> &'static str {
        match self {
            StreamState::Opening => "opening",
            StreamState::Running => "running",
            StreamState::Waiting => "waiting",
            StreamState::Ended => "ended",
            StreamState::Stopped => "stopped",
            StreamState::Failed => "failed",
        }
    }

    /// Whether the stream is done (ended, stopped or failed).
    pub fn is_done(self) -> bool {
        matches!(
            self,
            StreamState::Ended | StreamState::Stopped | StreamState::Failed
        )
    }
}

/// One stream as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamStatus {
    /// Stream id.
    pub stream_id: String,
    /// Patient id (a pseudonym when `output.pseudonymise` is on).
    pub patient_id: String,
    /// Recording site.
    pub site: String,
    /// Followed live rather than replayed.
    pub live: bool,
    /// Where the stream is in its life.
    pub state: StreamState,
    /// Frames decoded by its reader.
    pub frames_decoded: u64,
    /// Frames that went through analysis (a `frames` row each, or folded into a block).
    pub frames_analysed: u64,
    /// Frames a live stream dropped because processing fell behind.
    pub frames_dropped: u64,
    /// Times a live source was lost and came back.
    pub reconnects: u64,
    /// Event time of the first and the latest analysed frame, ms since the Unix epoch.
    pub first_event_ms: Option<i64>,
    /// See `first_event_ms`.
    pub last_event_ms: Option<i64>,
    /// Length of a replayed file, when its container says (progress and ETA count towards it).
    pub duration_ms: Option<i64>,
    /// Analysed frames per second since the stream's first frame.
    pub frames_per_s: f64,
    /// Live streams: how far the latest analysed frame is behind the wall clock, seconds.
    pub lag_s: Option<f64>,
    /// Why the stream failed.
    pub error: Option<String>,
}

impl StreamStatus {
    /// Share of a replay done, 0 to 1, when its length is known.
    pub fn fraction_done(&self) -> Option<f64> {
        let (first, last, length) = (self.first_event_ms?, self.last_event_ms?, self.duration_ms?);
        (length > 0).then(|| ((last - first) as f64 / length as f64).clamp(0.0, 1.0))
    }
}

/// The numbers of one window that a bedside view needs, from a `sites` or `patients` row.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WindowNumbers {
    /// Window start and end, ms since the Unix epoch.
    pub window_start_ms: i64,
    /// See `window_start_ms`.
    pub window_end_ms: i64,
    /// Capillaries per mm².
    pub capillary_density_per_mm2: Option<f64>,
    /// Total vessel density, mm/mm².
    pub tvd_mm_per_mm2: Option<f64>,
    /// Perfused vessel density, mm/mm².
    pub pvd_mm_per_mm2: Option<f64>,
    /// Proportion of perfused vessels, %.
    pub ppv_percent: Option<f64>,
    /// Microvascular flow index, 0–3.
    pub mfi: Option<f64>,
    /// The window passed the quality check (a site's own check; for a patient, at least one site passed).
    pub quality_ok: bool,
    /// The window was cut short by a stream's start or end, or by a stop.
    pub partial: bool,
}

/// A site's latest window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SiteStatus {
    /// Stream id.
    pub stream_id: String,
    /// Recording site.
    pub site: String,
    /// The window's numbers.
    #[serde(flatten)]
    pub window: WindowNumbers,
    /// MIQS-style quality total: each criterion scores 0 (optimal), 1 or 10 (unacceptable); from
    /// `quality.reject_total` (10) the window fails.
    pub quality_score: u32,
    /// Where the window's evidence image is served (`/evidence/<patient>/<stream>`), when one was written.
    pub evidence_url: Option<String>,
}

/// A patient's latest windows and trend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatientStatus {
    /// Patient id (a pseudonym when `output.pseudonymise` is on).
    pub patient_id: String,
    /// The latest closed patient window.
    pub latest: Option<WindowNumbers>,
    /// Each site's latest closed window.
    pub sites: Vec<SiteStatus>,
    /// Patient windows over the trend period (`http.trend_hours`), oldest first.
    pub trend: Vec<WindowNumbers>,
}

/// What `/status` returns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// When the run started, ms since the Unix epoch.
    pub started_ms: i64,
    /// Seconds since the run started.
    pub uptime_s: f64,
    /// `running`, `stopping` or `finished`.
    pub state: &'static str,
    /// Every stream this process runs or ran, by id.
    pub streams: Vec<StreamStatus>,
    /// Every patient with a closed window on this process, by id.
    pub patients: Vec<PatientStatus>,
}

/// A Prometheus histogram: cumulative counts per upper bound, their sum and count.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds one observation.
    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes the histogram in the Prometheus text format, with `labels` (`key="value"` pairs, may be empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

struct StreamEntry {
    status: StreamStatus,
    /// Wall time of the first and latest analysed frame (rate, waiting).
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

#[derive(Default)]
struct PatientEntry {
    latest: Option<WindowNumbers>,
    sites: BTreeMap<String, SiteStatus>,
    trend: VecDeque<WindowNumbers>,
}

/// A site's latest evidence image: its window's start and the PNG bytes.
type Evidence = (i64, Arc<Vec<u8>>);

/// A per-stream counter of `/metrics`: name, help text and how to read it.
type Counter = (&'static str, &'static str, fn(&StreamStatus) -> u64);

struct State {
    streams: BTreeMap<String, StreamEntry>,
    patients: BTreeMap<String, PatientEntry>,
    /// The latest evidence image per (patient, stream): window start and PNG bytes.
    evidence: BTreeMap<(String, String), Evidence>,
    inference_s: Histogram,
    batch_size: Histogram,
    commit_s: BTreeMap<&'static str, Histogram>,
    parts: BTreeMap<&'static str, u64>,
    rows: BTreeMap<&'static str, u64>,
    commit_failures: u64,
    store_retries: u64,
    stopping: bool,
    finished: bool,
}

/// The process's view of its run, shared by its workers, the HTTP server and the progress display.
pub struct Monitor {
    state: Mutex<State>,
    started: Instant,
    started_ms: i64,
    trend: Duration,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("started_ms", &self.started_ms)
            .finish_non_exhaustive()
    }
}

fn numbers_of_site(row: &SiteWindow) -> WindowNumbers {
    WindowNumbers {
        window_start_ms: row.window_start_ms,
        window_end_ms: row.window_end_ms,
        capillary_density_per_mm2: Some(row.capillary_density_per_mm2),
        tvd_mm_per_mm2: Some(row.tvd_mm_per_mm2),
        pvd_mm_per_mm2: row.pvd_mm_per_mm2,
        ppv_percent: row.ppv_percent,
        mfi: row.mfi,
        quality_ok: row.quality_ok,
        partial: row.partial,
    }
}

fn numbers_of_patient(row: &PatientWindow) -> WindowNumbers {
    WindowNumbers {
        window_start_ms: row.window_start_ms,
        window_end_ms: row.window_end_ms,
        capillary_density_per_mm2: row.capillary_density_per_mm2,
        tvd_mm_per_mm2: row.tvd_mm_per_mm2,
        pvd_mm_per_mm2: row.pvd_mm_per_mm2,
        ppv_percent: row.ppv_percent,
        mfi: row.mfi,
        quality_ok: row.n_valid_sites > 0,
        partial: row.partial,
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Monitor {
    /// A monitor for a run started now, keeping `trend` of patient windows.
    pub fn new(started_ms: i64, trend: Duration) -> Self {
        Monitor {
            state: Mutex::new(State {
                streams: BTreeMap::new(),
                patients: BTreeMap::new(),
                evidence: BTreeMap::new(),
                inference_s: Histogram::new(&LATENCY_BUCKETS_S),
                batch_size: Histogram::new(&BATCH_BUCKETS),
                commit_s: BTreeMap::new(),
                parts: BTreeMap::new(),
                rows: BTreeMap::new(),
                commit_failures: 0,
                store_retries: 0,
                stopping: false,
                finished: false,
            }),
            started: Instant::now(),
            started_ms,
            trend,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked while holding the lock left counters, not invariants: keep serving them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream was opened (or failed to open, with `error`).
    pub fn stream_opened(&self, stream_id: &str, patient_id: &str, site: &str, live: bool) {
        let mut state = self.lock();
        let entry = state
            .streams
            .entry(stream_id.to_owned())
            .or_insert_with(|| StreamEntry {
                status: StreamStatus {
                    stream_id: stream_id.to_owned(),
                    patient_id: patient_id.to_owned(),
                    site: site.to_owned(),
                    live,
                    state: StreamState::Opening,
                    frames_decoded: 0,
                    frames_analysed: 0,
                    frames_dropped: 0,
                    reconnects: 0,
                    first_event_ms: None,
                    last_event_ms: None,
                    duration_ms: None,
                    frames_per_s: 0.0,
                    lag_s: None,
                    error: None,
                },
                first_at: None,
                last_at: None,
            });
        // A stream added again by a reload opens anew; its counters go on.
        entry.status.state = StreamState::Opening;
        entry.status.error = None;
    }

    /// The reader's counters of a stream, refreshed by its worker a few times a second.
    pub fn stream_counters(
        &self,
        stream_id: &str,
        decoded: u64,
        dropped: u64,
        reconnects: u64,
        duration_ms: Option<i64>,
    ) {
        if let Some(entry) = self.lock().streams.get_mut(stream_id) {
            let s = &mut entry.status;
            s.frames_decoded = decoded;
            s.frames_dropped = dropped;
            s.reconnects = reconnects;
            s.duration_ms = duration_ms.or(s.duration_ms);
        }
    }

    /// A frame of the stream went through analysis.
    pub fn frame_analysed(&self, stream_id: &str, event_time_ms: i64) {
        let now = Instant::now();
        if let Some(entry) = self.lock().streams.get_mut(stream_id) {
            let s = &mut entry.status;
            s.frames_analysed += 1;
            s.first_event_ms.get_or_insert(event_time_ms);
            s.last_event_ms = Some(
                s.last_event_ms
                    .map_or(event_time_ms, |l| l.max(event_time_ms)),
            );
            if !s.state.is_done() {
                s.state = StreamState::Running;
            }
            entry.first_at.get_or_insert(now);
            entry.last_at = Some(now);
        }
    }

    /// The stream is done: ended on its own, stopped by the run, or failed with `error`.
    pub fn stream_closed(&self, stream_id: &str, stopped: bool, error: Option<&str>) {
        if let Some(entry) = self.lock().streams.get_mut(stream_id) {
            entry.status.state = match (error, stopped) {
                (Some(_), _) => StreamState::Failed,
                (None, true) => StreamState::Stopped,
                (None, false) => StreamState::Ended,
            };
            entry.status.error = error.map(str::to_owned);
        }
    }

    /// Site windows closed and written (or about to be).
    pub fn site_windows(&self, rows: &[SiteWindow]) {
        let mut state = self.lock();
        for row in rows {
            let has_image = state
                .evidence
                .contains_key(&(row.patient_id.clone(), row.stream_id.clone()));
            let patient = state.patients.entry(row.patient_id.clone()).or_default();
            let newer = patient
                .sites
                .get(&row.stream_id)
                .is_none_or(|s| s.window.window_start_ms <= row.window_start_ms);
            if newer {
                patient.sites.insert(
                    row.stream_id.clone(),
                    SiteStatus {
                        stream_id: row.stream_id.clone(),
                        site: row.site.clone(),
                        window: numbers_of_site(row),
                        quality_score: row.quality_score,
                        evidence_url: has_image.then(|| {
                            format!(
                                "/evidence/{}/{}",
                                url_segment(&row.patient_id),
                                url_segment(&row.stream_id)
                            )
                        }),
                    },
                );
            }
        }
    }

    /// Patient windows closed and written (or about to be).
    pub fn patient_windows(&self, rows: &[PatientWindow]) {
        let mut state = self.lock();
        let keep_ms = self.trend.as_millis() as i64;
        for row in rows {
            let numbers = numbers_of_patient(row);
            let patient = state.patients.entry(row.patient_id.clone()).or_default();
            if patient
                .latest
                .as_ref()
                .is_none_or(|l| l.window_start_ms <= row.window_start_ms)
            {
                patient.latest = Some(numbers.clone());
            }
            // Windows close in order per patient; one closing out of order (a late reload) is placed by time.
            let at = patient
                .trend
                .iter()
                .rposition(|w| w.window_start_ms <= numbers.window_start_ms)
                .map_or(0, |i| i + 1);
            patient.trend.insert(at, numbers);
            let newest = patient.trend.back().map_or(0, |w| w.window_start_ms);
            while patient
                .trend
                .front()
                .is_some_and(|w| w.window_start_ms < newest - keep_ms)
            {
                patient.trend.pop_front();
            }
        }
    }

    /// A window's evidence image was written: kept (the latest per site) for the dashboard.
    pub fn evidence(&self, patient_id: &str, stream_id: &str, window_start_ms: i64, png: &[u8]) {
        let mut state = self.lock();
        let key = (patient_id.to_owned(), stream_id.to_owned());
        if state
            .evidence
            .get(&key)
            .is_none_or(|(start, _)| *start <= window_start_ms)
        {
            state
                .evidence
                .insert(key, (window_start_ms, Arc::new(png.to_vec())));
        }
    }

    /// The latest evidence image of a patient's site (PNG).
    pub fn evidence_png(&self, patient_id: &str, stream_id: &str) -> Option<Arc<Vec<u8>>> {
        self.lock()
            .evidence
            .get(&(patient_id.to_owned(), stream_id.to_owned()))
            .map(|(_, png)| Arc::clone(png))
    }

    /// One model call: frames in the batch and how long it took.
    pub fn inference(&self, batch: usize, took: Duration) {
        let mut state = self.lock();
        state.inference_s.observe(took.as_secs_f64());
        state.batch_size.observe(batch as f64);
    }

    /// One part written to the store: its table, rows, how long the write and commit took, and whether it failed.
    pub fn commit(&self, table: &'static str, rows: u64, took: Duration, ok: bool) {
        let mut state = self.lock();
        state
            .commit_s
            .entry(table)
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS_S))
            .observe(took.as_secs_f64());
        if ok {
            *state.parts.entry(table).or_default() += 1;
            *state.rows.entry(table).or_default() += rows;
        } else {
            state.commit_failures += 1;
        }
    }

    /// Failed store requests retried so far (the writer's own count).
    pub fn store_retries(&self, retries: u64) {
        let mut state = self.lock();
        state.store_retries = state.store_retries.max(retries);
    }

    /// The run is stopping (signal, `--duration`); open windows are being flushed.
    pub fn stopping(&self) {
        self.lock().stopping = true;
    }

    /// Every worker has returned.
    pub fn finished(&self) {
        self.lock().finished = true;
    }

    /// Whether the run still has streams to analyse or output to write.
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// A consistent copy of everything, for `/status`, the dashboard and progress bars.
    pub fn status(&self) -> Status {
        let state = self.lock();
        let now = Instant::now();
        let now_ms = self.started_ms + self.started.elapsed().as_millis() as i64;
        let streams = state
            .streams
            .values()
            .map(|e| {
                let mut s = e.status.clone();
                if let (Some(first), Some(last)) = (e.first_at, e.last_at) {
                    let secs = last.duration_since(first).as_secs_f64();
                    if secs > 0.0 {
                        s.frames_per_s = (s.frames_analysed.saturating_sub(1)) as f64 / secs;
                    }
                }
                if s.live {
                    // A sender whose clock runs slightly ahead would show a negative lag: none, then.
                    s.lag_s = s
                        .last_event_ms
                        .map(|l| ((now_ms - l) as f64 / 1000.0).max(0.0));
                    let quiet = e
                        .last_at
                        .is_none_or(|t| now.duration_since(t) > WAITING_AFTER);
                    if s.state == StreamState::Running && quiet {
                        s.state = StreamState::Waiting;
                    }
                }
                s
            })
            .collect();
        let patients = state
            .patients
            .iter()
            .map(|(id, p)| PatientStatus {
                patient_id: id.clone(),
                latest: p.latest.clone(),
                sites: p.sites.values().cloned().collect(),
                trend: p.trend.iter().cloned().collect(),
            })
            .collect();
        Status {
            started_ms: self.started_ms,
            uptime_s: self.started.elapsed().as_secs_f64(),
            state: if state.finished {
                "finished"
            } else if state.stopping {
                "stopping"
            } else {
                "running"
            },
            streams,
            patients,
        }
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4). Labels carry stream ids and table
    /// names, never patient ids.
    pub fn prometheus(&self) -> String {
        let status = self.status();
        let state = self.lock();
        let mut out = String::new();
        let counters: [Counter; 4] = [
            (
                "capflow_frames_decoded_total",
                "Frames decoded by a stream's reader.",
                |s| s.frames_decoded,
            ),
            (
                "capflow_frames_analysed_total",
                "Frames that went through analysis.",
                |s| s.frames_analysed,
            ),
            (
                "capflow_frames_dropped_total",
                "Frames a live stream dropped because processing fell behind.",
                |s| s.frames_dropped,
            ),
            (
                "capflow_reconnects_total",
                "Times a live source was lost and came back.",
                |s| s.reconnects,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for s in &status.streams {
                let _ = writeln!(
                    out,
                    "{name}{{stream=\"{}\"}} {}",
                    label(&s.stream_id),
                    value(s)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP capflow_stream_state 1 for the state each stream is in.\n# TYPE capflow_stream_state gauge"
        );
        for s in &status.streams {
            for st in [
                StreamState::Opening,
                StreamState::Running,
                StreamState::Waiting,
                StreamState::Ended,
                StreamState::Stopped,
                StreamState::Failed,
            ] {
                let _ = writeln!(
                    out,
                    "capflow_stream_state{{stream=\"{}\",state=\"{}\"}} {}",
                    label(&s.stream_id),
                    st.name(),
                    u8::from(s.state == st)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP capflow_lag_seconds How far a live stream's latest analysed frame is behind the wall clock.\n# TYPE capflow_lag_seconds gauge"
        );
        for s in &status.streams {
            if let Some(lag) = s.lag_s {
                let _ = writeln!(
                    out,
                    "capflow_lag_seconds{{stream=\"{}\"}} {lag}",
                    label(&s.stream_id)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP capflow_inference_seconds Time of one model call (one batch).\n# TYPE capflow_inference_seconds histogram"
        );
        state
            .inference_s
            .render(&mut out, "capflow_inference_seconds", "");
        let _ = writeln!(
            out,
            "# HELP capflow_batch_size Frames per model call.\n# TYPE capflow_batch_size histogram"
        );
        state.batch_size.render(&mut out, "capflow_batch_size", "");
        let _ = writeln!(
            out,
            "# HELP capflow_sink_commit_seconds Time to write and commit one part, retries included.\n# TYPE capflow_sink_commit_seconds histogram"
        );
        for (table, h) in &state.commit_s {
            h.render(
                &mut out,
                "capflow_sink_commit_seconds",
                &format!("table=\"{table}\""),
            );
        }
        let _ = writeln!(
            out,
            "# HELP capflow_parts_committed_total Parts committed per table.\n# TYPE capflow_parts_committed_total counter"
        );
        for (table, n) in &state.parts {
            let _ = writeln!(
                out,
                "capflow_parts_committed_total{{table=\"{table}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP capflow_rows_committed_total Rows committed per table.\n# TYPE capflow_rows_committed_total counter"
        );
        for (table, n) in &state.rows {
            let _ = writeln!(out, "capflow_rows_committed_total{{table=\"{table}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP capflow_sink_commit_failures_total Parts whose write failed for good.\n# TYPE capflow_sink_commit_failures_total counter\ncapflow_sink_commit_failures_total {}",
            state.commit_failures
        );
        let _ = writeln!(
            out,
            "# HELP capflow_sink_retries_total Failed store requests that were retried.\n# TYPE capflow_sink_retries_total counter\ncapflow_sink_retries_total {}",
            state.store_retries
        );
        let _ = writeln!(
            out,
            "# HELP capflow_uptime_seconds Seconds since the run started.\n# TYPE capflow_uptime_seconds gauge\ncapflow_uptime_seconds {}",
            status.uptime_s
        );
        out
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
pub fn url_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(stream: &str, start: i64, density: f64, ok: bool) -> SiteWindow {
        SiteWindow {
            patient_id: "p1".into(),
            stream_id: stream.into(),
            site: "arm".into(),
            window_start_ms: start,
            window_end_ms: start + 10_000,
            capillary_density_per_mm2: density,
            quality_ok: ok,
            quality_score: if ok { 9 } else { 3 },
            ..Default::default()
        }
    }

    fn patient(start: i64, density: f64) -> PatientWindow {
        PatientWindow {
            patient_id: "p1".into(),
            window_start_ms: start,
            window_end_ms: start + 10_000,
            n_sites: 1,
            n_valid_sites: 1,
            capillary_density_per_mm2: Some(density),
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_goes_from_opening_through_running_to_its_end() {
        let m = Monitor::new(0, Duration::from_secs(3600));
        m.stream_opened("s1", "p1", "arm", false);
        assert_eq!(m.status().streams[0].state, StreamState::Opening);
        m.frame_analysed("s1", 1_000);
        m.frame_analysed("s1", 1_040);
        m.stream_counters("s1", 5, 0, 0, Some(4_000));
        let s = &m.status().streams[0];
        assert_eq!(
            (s.state, s.frames_analysed, s.frames_decoded),
            (StreamState::Running, 2, 5)
        );
        assert_eq!(s.fraction_done(), Some(0.01));
        m.stream_closed("s1", false, Some("broken file"));
        let s = &m.status().streams[0];
        assert_eq!(s.state, StreamState::Failed);
        assert_eq!(s.error.as_deref(), Some("broken file"));
    }

    #[test]
    fn the_latest_window_wins_and_the_trend_keeps_only_its_period() {
        let m = Monitor::new(0, Duration::from_secs(30));
        m.patient_windows(&[patient(0, 1.0), patient(10_000, 2.0)]);
        m.patient_windows(&[patient(50_000, 5.0)]);
        // Out of order: placed by time, and not the latest.
        m.patient_windows(&[patient(40_000, 4.0)]);
        m.site_windows(&[
            site("s1", 50_000, 5.0, true),
            site("s1", 40_000, 4.0, false),
        ]);
        let p = &m.status().patients[0];
        assert_eq!(p.latest.as_ref().unwrap().window_start_ms, 50_000);
        let starts: Vec<i64> = p.trend.iter().map(|w| w.window_start_ms).collect();
        assert_eq!(starts, [40_000, 50_000]);
        assert_eq!(p.sites[0].window.capillary_density_per_mm2, Some(5.0));
        assert!(p.sites[0].evidence_url.is_none());
    }

    #[test]
    fn evidence_urls_appear_once_an_image_is_kept_and_escape_their_ids() {
        let m = Monitor::new(0, Duration::from_secs(3600));
        m.evidence("p 1", "s/1", 0, b"png");
        let mut row = site("s/1", 0, 1.0, true);
        row.patient_id = "p 1".into();
        m.site_windows(&[row]);
        let p = &m.status().patients[0];
        assert_eq!(
            p.sites[0].evidence_url.as_deref(),
            Some("/evidence/p%201/s%2F1")
        );
        assert_eq!(m.evidence_png("p 1", "s/1").unwrap().as_slice(), b"png");
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let m = Monitor::new(0, Duration::from_secs(3600));
        m.inference(4, Duration::from_millis(30));
        m.inference(1, Duration::from_millis(3));
        m.commit("frames", 10, Duration::from_millis(20), true);
        let text = m.prometheus();
        assert!(text.contains("capflow_inference_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("capflow_inference_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("capflow_inference_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("capflow_batch_size_bucket{le=\"4\"} 2\n"));
        assert!(text.contains("capflow_sink_commit_seconds_count{table=\"frames\"} 1\n"));
        assert!(text.contains("capflow_rows_committed_total{table=\"frames\"} 10\n"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
