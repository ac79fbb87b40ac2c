//! Progress of a run on the terminal: a bar per stream and one overall, with frames/s and an ETA (indicatif), or
//! one plain line every few seconds when stderr is not a terminal (logs, CI), or nothing.
//!
//! It reads the run's [`Monitor`] from its own thread, so drawing never slows a worker.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::monitor::{Monitor, Status, StreamState, StreamStatus};

/// How progress is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    #[default]
    Auto,
    /// Bars (redrawn in place).
    Bars,
    /// A line every `--progress-every` seconds.
    Lines,
    /// Nothing.
    Off,
}

/// Overall progress of the replays whose length is known.
#[derive(Clone, Debug, PartialEq)]
pub struct Overall {
    /// Frames passed to analysis, all streams.
    pub frames: u64,
    /// Frames per second over all streams since the run started.
    pub frames_per_s: f64,
    /// Streams done (ended, stopped or failed) and in all.
    pub done: usize,
    /// See `done`.
    pub streams: usize,
    /// Share of the known media analysed, 0–1, when any stream's length is known.
    pub fraction: Option<f64>,
    /// Time left at the rate so far, when `fraction` is known and above 0.
    pub eta: Option<Duration>,
}

/// Sums a status up: frames, rate, share of media done (weighted by each stream's length) and time left.
pub fn overall(status: &Status) -> Overall {
    let frames = status.streams.iter().map(|s| s.frames_analysed).sum();
    let (mut known, mut done_ms) = (0i64, 0f64);
    for s in &status.streams {
        if let Some(length) = s.duration_ms.filter(|&d| d > 0) {
            known += length;
            let fraction = if s.state.is_done() {
                1.0
            } else {
                s.fraction_done().unwrap_or(0.0)
            };
            done_ms += fraction * length as f64;
        }
    }
    let fraction = (known > 0).then(|| done_ms / known as f64);
    let eta = fraction
        .filter(|&f| f > 0.0 && f < 1.0)
        .map(|f| Duration::from_secs_f64(status.uptime_s * (1.0 - f) / f));
    Overall {
        frames,
        frames_per_s: if status.uptime_s > 0.0 {
            frames as f64 / status.uptime_s
        } else {
            0.0
        },
        done: status.streams.iter().filter(|s| s.state.is_done()).count(),
        streams: status.streams.len(),
        fraction,
        eta,
    }
}

/// One line of progress, for logs.
pub fn line(status: &Status) -> String {
    let o = overall(status);
    let mut text = format!(
        "progress: {}/{} stream(s) done, {} frames, {:.1} frames/s",
        o.done, o.streams, o.frames, o.frames_per_s
    );
    if let Some(f) = o.fraction {
        text += &format!(", {:.0}% of the media", f * 100.0);
    }
    if let Some(eta) = o.eta {
        text += &format!(", about {} left", humantime::format_duration(round_s(eta)));
    }
    text
}

fn round_s(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round() as u64)
}

/// The progress display of one run; [`Progress::finish`] removes the bars.
#[derive(Debug)]
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing the monitor's progress in `mode` (lines every `every`).
    pub fn start(monitor: Arc<Monitor>, mode: ProgressMode, every: Duration) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
            ProgressMode::Auto => ProgressMode::Lines,
            other => other,
        };
        let done = Arc::new(AtomicBool::new(false));
        let thread = match mode {
            ProgressMode::Off | ProgressMode::Auto => None,
            ProgressMode::Lines => {
                let done = Arc::clone(&done);
                std::thread::Builder::new()
                    .name("capflow-progress".into())
                    .spawn(move || lines(&monitor, &done, every))
                    .ok()
            }
            ProgressMode::Bars => {
                let done = Arc::clone(&done);
                std::thread::Builder::new()
                    .name("capflow-progress".into())
                    .spawn(move || bars(&monitor, &done))
                    .ok()
            }
        };
        Progress { done, thread }
    }

    /// Stops the display (the bars are cleared; the run's summary follows).
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps up to `total` in short steps, returning early once `done` is set.
fn wait(done: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !done.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50).min(total));
    }
}

/// A line every `every`, and a last one when the run is over (so even a short run says how it went).
fn lines(monitor: &Monitor, done: &AtomicBool, every: Duration) {
    loop {
        wait(done, every);
        let status = monitor.status();
        if !status.streams.is_empty() {
            eprintln!("capflow: {}", line(&status));
        }
        if done.load(Ordering::SeqCst) {
            return;
        }
    }
}

fn stream_message(s: &StreamStatus) -> String {
    let mut text = format!("{} frames, {:.1}/s", s.frames_analysed, s.frames_per_s);
    if s.frames_dropped > 0 {
        text += &format!(", {} dropped", s.frames_dropped);
    }
    if let Some(lag) = s.lag_s {
        text += &format!(", {lag:.1} s behind");
    }
    if s.state != StreamState::Running {
        text += &format!(" [{}]", s.state.name());
    }
    text
}

fn bars(monitor: &Monitor, done: &AtomicBool) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
    let bar_style =
        ProgressStyle::with_template("{prefix:<32!} [{bar:30}] {percent:>3}% {msg} (ETA {eta})")
            .expect("a valid template")
            .progress_chars("=> ");
    let spin_style =
        ProgressStyle::with_template("{prefix:<32!} {spinner} {msg}").expect("a valid template");
    let total = multi.add(ProgressBar::new(1000));
    total.set_style(bar_style.clone());
    total.set_prefix("all streams");
    let mut per_stream: Vec<(String, ProgressBar)> = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let status = monitor.status();
        for s in &status.streams {
            let bar = match per_stream.iter().find(|(id, _)| *id == s.stream_id) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = multi.insert_before(&total, ProgressBar::new(1000));
                    bar.set_prefix(format!("{} ({})", s.stream_id, s.site));
                    bar.set_style(spin_style.clone());
                    per_stream.push((s.stream_id.clone(), bar.clone()));
                    bar
                }
            };
            match (s.fraction_done(), s.state.is_done()) {
                (_, true) => {
                    bar.set_style(bar_style.clone());
                    bar.set_position(1000);
                }
                (Some(f), false) => {
                    bar.set_style(bar_style.clone());
                    bar.set_position((f * 1000.0) as u64);
                }
                (None, false) => bar.tick(),
            }
            bar.set_message(stream_message(s));
        }
        let o = overall(&status);
        total.set_position(o.fraction.map_or(0, |f| (f * 1000.0) as u64));
        total.set_message(format!(
            "{}/{} done, {} frames, {:.1}/s",
            o.done, o.streams, o.frames, o.frames_per_s
        ));
        wait(done, Duration::from_millis(200));
    }
    let _ = multi.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(
        id: &str,
        first: i64,
        last: i64,
        length: Option<i64>,
        state: StreamState,
    ) -> StreamStatus {
        StreamStatus {
            stream_id: id.into(),
            patient_id: "p".into(),
            site: "s".into(),
            live: false,
            state,
            frames_decoded: 10,
            frames_analysed: 10,
            frames_dropped: 0,
            reconnects: 0,
            first_event_ms: Some(first),
            last_event_ms: Some(last),
            duration_ms: length,
            frames_per_s: 5.0,
            lag_s: None,
            error: None,
        }
    }

    fn status(streams: Vec<StreamStatus>, uptime_s: f64) -> Status {
        Status {
            started_ms: 0,
            uptime_s,
            state: "running",
            streams,
            patients: Vec::new(),
        }
    }

    #[test]
    fn overall_progress_weighs_streams_by_length_and_projects_the_rest() {
        // 1 s of a 4 s clip, and a finished 4 s clip: 5 of 8 s done after 10 s → 6 s left.
        let s = status(
            vec![
                stream("a", 0, 1_000, Some(4_000), StreamState::Running),
                stream("b", 0, 3_960, Some(4_000), StreamState::Ended),
                stream("c", 0, 500, None, StreamState::Running),
            ],
            10.0,
        );
        let o = overall(&s);
        assert_eq!(o.fraction, Some(5.0 / 8.0));
        assert_eq!(o.eta.map(|d| d.as_secs()), Some(6));
        assert_eq!((o.done, o.streams, o.frames), (1, 3, 30));
        assert_eq!(o.frames_per_s, 3.0);
        let text = line(&s);
        assert!(
            text.contains(
                "1/3 stream(s) done, 30 frames, 3.0 frames/s, 62% of the media, about 6s left"
            ),
            "{text}"
        );
    }

    #[test]
    fn without_known_lengths_there_is_no_eta() {
        let o = overall(&status(
            vec![stream("c", 0, 500, None, StreamState::Running)],
            1.0,
        ));
        assert_eq!((o.fraction, o.eta), (None, None));
    }
}
