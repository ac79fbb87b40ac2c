//! One decoding thread per stream, ahead of its timely worker, joined by a bounded [`FrameQueue`].
//!
//! A worker serves many streams; none of them may block it. The reader thread owns the GStreamer [`Source`],
//! decodes into the queue and records [`StreamEvent`]s. Replays block when the queue is full and stop at their end
//! or first error. Live sources never block: when the worker falls behind, frames are dropped by the stream's
//! [`DropPolicy`] and counted; when the source is lost (error, silent sender, refused connection) the reader
//! reconnects with exponential backoff and jitter and records the gap, and its own end of stream ends it cleanly.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backoff::{Backoff, Jitter};
use crate::events::{EventKind, StreamEvent};
use crate::queue::{DropPolicy, FrameQueue, Popped, Pushed};
use crate::{Frame, IngestError, Source, SourceOptions, StreamInfo};

/// Whether a stream is an archive to replay in full or a live feed to keep up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamMode {
    /// Files, folders, HTTP downloads: never drop (block instead), stop at the end or the first error.
    Replay,
    /// Cameras and network streams: drop by policy when behind, reconnect when lost.
    Live,
}

impl StreamMode {
    /// The mode a source location implies: RTSP, RTP/UDP, SRT, V4L2 devices and the generator (`synth://`) are live,
    /// everything else replays.
    pub fn detect(location: &str) -> StreamMode {
        let lower = location.to_ascii_lowercase();
        let live = [
            "rtsp://", "rtsps://", "rtspt://", "udp://", "rtp://", "srt://",
        ]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
            || lower.starts_with("/dev/video")
            || lower.starts_with("v4l2://")
            || lower.starts_with(crate::synthetic::SCHEME);
        if live {
            StreamMode::Live
        } else {
            StreamMode::Replay
        }
    }
}

/// How a [`StreamReader`] queues, drops and reconnects.
#[derive(Clone, Debug, PartialEq)]
pub struct ReaderOptions {
    /// Decoding options of every connection.
    pub source: SourceOptions,
    /// Replay or live.
    pub mode: StreamMode,
    /// Decoded frames held for the worker.
    pub queue_frames: usize,
    /// Which frames a live stream drops when its queue is full.
    pub drop_policy: DropPolicy,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// A live source away for longer than this is given up as failed (`None`: keep trying until stopped).
    pub give_up_after: Option<Duration>,
    /// The stream's nominal frame rate, to count the frames a gap cost.
    pub nominal_fps: f64,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            source: SourceOptions::default(),
            mode: StreamMode::Replay,
            queue_frames: 4,
            drop_policy: DropPolicy::DropOldest,
            backoff: Backoff::default(),
            give_up_after: None,
            nominal_fps: 25.0,
        }
    }
}

struct Shared {
    queue: FrameQueue<Frame>,
    events: Mutex<Vec<StreamEvent>>,
    error: Mutex<Option<IngestError>>,
    stop: Arc<AtomicBool>,
    decoded: AtomicU64,
    reconnects: AtomicU64,
    /// The media's length in ms once known, else -1.
    duration_ms: AtomicI64,
}

/// A stream decoded on its own thread; the worker pops frames without blocking on the source.
pub struct StreamReader {
    location: String,
    info: StreamInfo,
    mode: StreamMode,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("location", &self.location)
            .field("stream", &self.info.stream_id)
            .field("mode", &self.mode)
            .field("queue", &self.shared.queue)
            .finish()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl StreamReader {
    /// Starts reading `location` for the stream `info`. A replay's source is opened here, so a missing file is an
    /// immediate error; a live source is opened (and re-opened) by the thread, since a camera may come up later.
    pub fn spawn(
        location: &str,
        info: StreamInfo,
        options: ReaderOptions,
    ) -> Result<StreamReader, IngestError> {
        let shared = Arc::new(Shared {
            queue: FrameQueue::new(options.queue_frames),
            events: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            stop: Arc::new(AtomicBool::new(false)),
            decoded: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            duration_ms: AtomicI64::new(-1),
        });
        let name = format!("capflow-read-{}", info.stream_id);
        let mode = options.mode;
        let thread = match mode {
            StreamMode::Replay => {
                let mut source = Source::open(location, Arc::new(info.clone()), &options.source)?;
                source.set_cancel(Arc::clone(&shared.stop));
                let state = Arc::clone(&shared);
                let stream = info.clone();
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || replay(source, &stream, &state))
            }
            StreamMode::Live => {
                let state = Arc::clone(&shared);
                let (location, stream) = (location.to_owned(), info.clone());
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || live(&location, &stream, &options, &state))
            }
        }
        .map_err(|e| IngestError::Pipeline {
            input: location.to_owned(),
            message: format!("cannot start the reader thread: {e}"),
        })?;
        Ok(StreamReader {
            location: location.to_owned(),
            info,
            mode,
            shared,
            thread: Some(thread),
        })
    }

    /// The source location.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The stream as configured.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// Replay or live.
    pub fn mode(&self) -> StreamMode {
        self.mode
    }

    /// The next decoded frame, waiting up to `timeout`.
    pub fn pop_timeout(&self, timeout: Duration) -> Popped<Frame> {
        self.shared.queue.pop_timeout(timeout)
    }

    /// The next decoded frame if one is queued.
    pub fn try_pop(&self) -> Popped<Frame> {
        self.shared.queue.try_pop()
    }

    /// Events recorded since the last call.
    pub fn take_events(&self) -> Vec<StreamEvent> {
        std::mem::take(&mut *lock(&self.shared.events))
    }

    /// Why the stream failed, once it has (taken once).
    pub fn take_error(&self) -> Option<IngestError> {
        lock(&self.shared.error).take()
    }

    /// Asks the thread to stop: the source is closed, queued frames stay poppable, a `stopped` event is recorded.
    /// Closing the queue also wakes a replay blocked on a full queue.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.queue.close();
    }

    /// Frames decoded so far.
    pub fn decoded(&self) -> u64 {
        self.shared.decoded.load(Ordering::Relaxed)
    }

    /// Frames dropped because the worker fell behind (live only).
    pub fn dropped(&self) -> u64 {
        self.shared.queue.dropped()
    }

    /// Length of the media being replayed, once the source knows it (files; not live sources or image folders).
    pub fn duration_ms(&self) -> Option<i64> {
        let ms = self.shared.duration_ms.load(Ordering::Relaxed);
        (ms >= 0).then_some(ms)
    }

    /// Successful reconnects (live only).
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Waits for the thread to finish (after the end, a failure or [`StreamReader::stop`]).
    pub fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.stop();
        self.shared.queue.close();
        self.join();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records events with the stream's identity filled in.
struct Recorder<'a> {
    stream: &'a StreamInfo,
    shared: &'a Shared,
}

impl Recorder<'_> {
    fn record(
        &self,
        kind: EventKind,
        (start_ms, end_ms): (i64, i64),
        frames_lost: u64,
        attempts: u32,
        detail: Option<String>,
    ) {
        tracing::info!(stream = %self.stream.stream_id, kind = kind.name(), start_ms, end_ms, frames_lost, attempts, detail = detail.as_deref().unwrap_or(""), "stream event");
        lock(&self.shared.events).push(StreamEvent {
            stream_id: self.stream.stream_id.clone(),
            patient_id: self.stream.patient_id.clone(),
            site: self.stream.site.clone(),
            kind,
            start_ms,
            end_ms,
            frames_lost,
            attempts,
            detail,
        });
    }

    fn at(&self, kind: EventKind, ms: i64) {
        self.record(kind, (ms, ms), 0, 0, None);
    }

    fn fail(&self, error: IngestError, (start_ms, end_ms): (i64, i64), attempts: u32) {
        self.record(
            EventKind::Failed,
            (start_ms, end_ms),
            0,
            attempts,
            Some(error.to_string()),
        );
        *lock(&self.shared.error) = Some(error);
    }
}

fn replay(mut source: Source, stream: &StreamInfo, shared: &Shared) {
    let events = Recorder { stream, shared };
    let mut last_ms = None;
    loop {
        match source.next_frame() {
            Ok(Some(frame)) => {
                let t = frame.event_time_ms();
                if last_ms.is_none() {
                    events.at(EventKind::Started, t);
                    if let Some(ms) = source.duration_ms() {
                        shared.duration_ms.store(ms, Ordering::Relaxed);
                    }
                }
                last_ms = Some(t);
                shared.decoded.fetch_add(1, Ordering::Relaxed);
                if shared.queue.push_blocking(frame).is_err() {
                    // Stopped while waiting for room.
                    events.at(EventKind::Stopped, t);
                    break;
                }
            }
            Ok(None) => {
                let stopped = shared.stop.load(Ordering::SeqCst);
                let kind = if stopped {
                    EventKind::Stopped
                } else {
                    EventKind::Ended
                };
                events.at(kind, last_ms.unwrap_or(stream.recorded_at_ms));
                break;
            }
            Err(error) => {
                let t = last_ms.unwrap_or(stream.recorded_at_ms);
                events.fail(error, (t, t), 0);
                break;
            }
        }
    }
    shared.queue.close();
}

/// Frames a gap from `start_ms` to `end_ms` cost at `fps` (the frame at `end_ms` itself arrived).
pub fn frames_in_gap(start_ms: i64, end_ms: i64, fps: f64) -> u64 {
    if !(fps.is_finite() && fps > 0.0) || end_ms <= start_ms {
        return 0;
    }
    let intervals = ((end_ms - start_ms) as f64 * fps / 1000.0).round() as u64;
    intervals.saturating_sub(1)
}

struct Loss {
    since_ms: i64,
    since: Instant,
    attempts: u32,
    error: IngestError,
}

#[derive(Default)]
struct DropEpisode {
    start_ms: i64,
    last_ms: i64,
    frames: u64,
}

fn live(location: &str, stream: &StreamInfo, options: &ReaderOptions, shared: &Shared) {
    let events = Recorder { stream, shared };
    let seed = stream
        .stream_id
        .bytes()
        .fold(now_ms() as u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut jitter = Jitter::new(seed);
    let mut next_index = 0u64;
    let mut last_ms: Option<i64> = None;
    let mut loss: Option<Loss> = None;
    let mut episode: Option<DropEpisode> = None;
    let flush_episode = |episode: &mut Option<DropEpisode>| {
        if let Some(e) = episode.take() {
            events.record(
                EventKind::Dropped,
                (e.start_ms, e.last_ms),
                e.frames,
                0,
                None,
            );
        }
    };
    let stop = || shared.stop.load(Ordering::SeqCst);
    'connect: while !stop() {
        let error = match Source::open(location, Arc::new(stream.clone()), &options.source) {
            Err(e) => e,
            Ok(mut source) => {
                source.set_cancel(Arc::clone(&shared.stop));
                let mut anchored: Option<Arc<StreamInfo>> = None;
                let mut sender_clock = false;
                loop {
                    match source.next_frame() {
                        Ok(Some(mut frame)) => {
                            // The stream's PTS (from RTP timestamps) anchored at the receive wall clock of the
                            // connection's first frame, until the sender reports its own (NTP) wall clock: then at
                            // that, once, so event times are the sender's capture times from there on.
                            let pts_ms = (frame.pts_ns / 1_000_000) as i64;
                            if let (false, Some(sender_ms)) =
                                (sender_clock, source.sender_time_ms())
                            {
                                sender_clock = true;
                                let receive_ms = anchored
                                    .as_ref()
                                    .map_or(now_ms() - pts_ms, |a| a.recorded_at_ms);
                                tracing::info!(
                                    stream = %stream.stream_id,
                                    sender_minus_receive_ms = sender_ms - pts_ms - receive_ms,
                                    "event time now follows the sender's clock (RTCP sender reports)"
                                );
                                anchored = Some(Arc::new(StreamInfo {
                                    recorded_at_ms: sender_ms - pts_ms,
                                    ..stream.clone()
                                }));
                            }
                            let info = anchored.get_or_insert_with(|| {
                                Arc::new(StreamInfo {
                                    recorded_at_ms: now_ms() - pts_ms,
                                    ..stream.clone()
                                })
                            });
                            frame.stream = Arc::clone(info);
                            frame.index = next_index;
                            next_index += 1;
                            shared.decoded.fetch_add(1, Ordering::Relaxed);
                            let t = frame.event_time_ms();
                            if let Some(l) = loss.take() {
                                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                                let lost = frames_in_gap(l.since_ms, t, options.nominal_fps);
                                events.record(
                                    EventKind::Gap,
                                    (l.since_ms, t),
                                    lost,
                                    l.attempts,
                                    Some(l.error.to_string()),
                                );
                            }
                            if last_ms.is_none() {
                                events.at(EventKind::Started, t);
                            }
                            last_ms = Some(t);
                            let index = frame.index;
                            match shared.queue.push_lossy(frame, index, options.drop_policy) {
                                Pushed::Queued => {
                                    if episode.as_ref().is_some_and(|e| t - e.last_ms > 1000) {
                                        flush_episode(&mut episode);
                                    }
                                }
                                Pushed::Dropped(dropped) => {
                                    let d = dropped.event_time_ms();
                                    let e = episode.get_or_insert(DropEpisode {
                                        start_ms: d,
                                        ..Default::default()
                                    });
                                    e.last_ms = e.last_ms.max(d);
                                    e.frames += 1;
                                }
                                Pushed::Closed => break 'connect,
                            }
                        }
                        Ok(None) if stop() => break 'connect,
                        Ok(None) => {
                            flush_episode(&mut episode);
                            events.at(EventKind::Ended, last_ms.unwrap_or_else(now_ms));
                            shared.queue.close();
                            return;
                        }
                        Err(e) => break e,
                    }
                }
            }
        };
        if stop() {
            break;
        }
        if matches!(error, IngestError::FrameLimit { .. }) {
            // The source works but sends frames outside the limits: reconnecting would only get the same frames.
            flush_episode(&mut episode);
            let since = last_ms.unwrap_or_else(now_ms);
            events.fail(error, (since, now_ms()), 0);
            shared.queue.close();
            return;
        }
        tracing::warn!(stream = %stream.stream_id, error = %error, "live source lost; reconnecting");
        let l = match &mut loss {
            Some(l) => {
                l.error = error;
                l
            }
            None => loss.insert(Loss {
                since_ms: last_ms.unwrap_or_else(now_ms),
                since: Instant::now(),
                attempts: 0,
                error,
            }),
        };
        l.attempts += 1;
        if options
            .give_up_after
            .is_some_and(|limit| l.since.elapsed() > limit)
        {
            let l = loss.take().expect("a loss is recorded");
            flush_episode(&mut episode);
            events.fail(l.error, (l.since_ms, now_ms()), l.attempts);
            shared.queue.close();
            return;
        }
        let delay = options.backoff.delay(l.attempts, jitter.next_unit());
        let until = Instant::now() + delay;
        while Instant::now() < until && !stop() {
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
    }
    flush_episode(&mut episode);
    if let Some(l) = loss.take() {
        // Stopped while the source was away: the gap has no end yet; record it up to now.
        let end = now_ms();
        events.record(
            EventKind::Gap,
            (l.since_ms, end),
            frames_in_gap(l.since_ms, end, options.nominal_fps),
            l.attempts,
            Some(l.error.to_string()),
        );
    }
    events.at(EventKind::Stopped, last_ms.unwrap_or_else(now_ms));
    shared.queue.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_schemes_and_devices_are_detected() {
        for live in [
            "rtsp://cam/1",
            "RTSP://cam",
            "udp://0.0.0.0:5000",
            "/dev/video0",
            "srt://h:1",
        ] {
            assert_eq!(StreamMode::detect(live), StreamMode::Live, "{live}");
        }
        for replay in ["clip.mp4", "file:///a.mkv", "https://x/y.mp4", "frames/"] {
            assert_eq!(StreamMode::detect(replay), StreamMode::Replay, "{replay}");
        }
    }

    #[test]
    fn a_gap_costs_the_frames_the_nominal_rate_puts_in_it() {
        assert_eq!(frames_in_gap(0, 40, 25.0), 0, "the next frame on time");
        assert_eq!(frames_in_gap(0, 1000, 25.0), 24);
        assert_eq!(frames_in_gap(1000, 0, 25.0), 0);
        assert_eq!(frames_in_gap(0, 1000, 0.0), 0);
    }

    #[test]
    fn a_live_source_breaking_a_frame_limit_fails_at_once_instead_of_reconnecting() {
        let info = StreamInfo::new("tiny", "p", "site", 2.0);
        let options = ReaderOptions {
            mode: StreamMode::Live,
            source: SourceOptions {
                limits: crate::FrameLimits {
                    max_width: 100,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..ReaderOptions::default()
        };
        let location = "synth://skin?width=160&height=120&fps=10&length_s=1";
        let mut reader = StreamReader::spawn(location, info, options).unwrap();
        let start = Instant::now();
        while !matches!(
            reader.pop_timeout(Duration::from_millis(100)),
            Popped::Closed
        ) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "still reconnecting"
            );
        }
        reader.join();
        let err = reader.take_error().expect("the stream failed").to_string();
        assert!(
            err.contains("160x120") && err.contains("limits.max_width = 100"),
            "{err}"
        );
        assert_eq!(reader.reconnects(), 0);
        let kinds: Vec<_> = reader.take_events().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Failed]);
    }

    #[test]
    fn a_missing_replay_file_fails_at_spawn_naming_it() {
        let info = StreamInfo::new("s", "p", "site", 2.0);
        let err =
            StreamReader::spawn("/nonexistent/x.mp4", info, ReaderOptions::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.mp4"));
    }
}
