//! Per-site and per-patient event-time windows, tumbling or sliding, aggregated with differential dataflow.
//!
//! Each stream record (a segmented frame's row or a flow sample) goes into every window that contains its event
//! time, keyed by `(patient, window start, stream)`. A first `reduce` turns a stream's records into its `sites` row
//! (means, flow, MIQS-style quality); a second, keyed by `(patient, window start)`, combines the sites of a patient
//! into its `patients` row, averaging only sites whose quality passed. Both reductions exchange records by key, so a
//! patient's streams meet on one worker whichever workers decoded them, and both recompute (retracting the old value)
//! when a record arrives late but within the allowed lateness.
//!
//! Records are not handed to differential one by one. The routing operator holds each timely time's records, per
//! stream and window, until the frontier passes that time, then sends them as one shared [`SiteBatch`]: a window's
//! records mostly share one time (times are floored to the window grid), so the arrangements hold a few batches per
//! window instead of one entry per frame, and keys and rows are shared (`Arc`) rather than copied as differential
//! merges them. The rows are the same as record-by-record routing; only the work per record shrinks.
//!
//! A stream's [`StreamEdge`](crate::records::StreamEdge) records (its start and end) go into the windows containing
//! them too: a site window they cut is marked `partial` (and so is its patient window), and a window holding nothing
//! else gets no row.
//!
//! Timely times are the workers' event-time watermarks. A window closes (see [`crate::CloseWindows`]) when the
//! watermark passes its end plus the allowed lateness, and every record routed into it is retracted at that moment,
//! so the reductions' state stays bounded by the open windows over a run of days. A frame that arrives after every
//! window it belongs to has closed is not dropped silently: it is logged and counted in `late_frames` of the
//! patient's windows open at the time it arrived.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use differential_dataflow::collection::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

use crate::quality::{score, QualityConfig, SiteEvidence};
use crate::records::{PatientWindow, SiteWindow, StreamRecord};
use crate::Exact;

/// Window length, hop and allowed lateness, in milliseconds of event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    /// Window length.
    pub length_ms: i64,
    /// Distance between window starts: equal to the length for tumbling windows, shorter for sliding ones.
    pub hop_ms: i64,
    /// How long after its end a window still accepts frames.
    pub lateness_ms: i64,
}

impl WindowSpec {
    /// Tumbling windows of `length_ms` without lateness.
    pub fn tumbling(length_ms: i64) -> Self {
        WindowSpec {
            length_ms,
            hop_ms: length_ms,
            lateness_ms: 0,
        }
    }

    /// Starts of every window containing `event_ms`, ascending; windows align to the Unix epoch.
    pub fn starts(&self, event_ms: i64) -> Vec<i64> {
        self.each_start(event_ms).collect()
    }

    /// [`WindowSpec::starts`] without allocating (it runs once per record).
    fn each_start(&self, event_ms: i64) -> impl DoubleEndedIterator<Item = i64> {
        let hop = self.hop_ms.max(1);
        let last = event_ms.div_euclid(hop) * hop;
        // Starts `last - k·hop` with `start > event_ms - length_ms`, i.e. `k·hop < last - event_ms + length_ms`.
        let span = last - event_ms + self.length_ms;
        let count = if span > 0 { (span + hop - 1) / hop } else { 0 };
        (0..count).rev().map(move |k| last - k * hop)
    }

    /// The watermark (timely time) at which the window starting at `start` closes.
    pub fn close_time(&self, start: i64) -> u64 {
        (start + self.length_ms + self.lateness_ms).max(0) as u64
    }

    /// The grid timely times are floored to: it divides every window start, end and close time.
    pub fn tick(&self) -> i64 {
        fn gcd(a: i64, b: i64) -> i64 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        gcd(
            gcd(self.length_ms.max(1), self.hop_ms.max(1)),
            if self.lateness_ms > 0 {
                self.lateness_ms
            } else {
                0
            },
        )
        .max(1)
    }
}

/// Window start containing `event_ms` for tumbling windows of `length_ms` aligned to the Unix epoch.
pub fn window_start(event_ms: i64, length_ms: i64) -> i64 {
    event_ms.div_euclid(length_ms) * length_ms
}

/// Key of a site window: patient, window start, stream. The ids are shared strings: keys are cloned and compared
/// at every step of differential's arrangements, and a shared clone is a reference count, not an allocation.
pub type SiteKey = (Arc<str>, i64, Arc<str>);
/// Key of a patient window: patient, window start.
pub type PatientKey = (Arc<str>, i64);

/// The records of one stream that reached one window within one timely time (a tick of the window grid), sorted by
/// identity (kind, frame). Differential holds one such batch per site window and tick instead of one entry per
/// record: a window's records usually share a tick, so its arrangements see a handful of updates however many frames
/// the window holds.
///
/// The records are shared: differential clones values freely (an update and its expiry, merges, the reduction's
/// input), and a clone here is a reference count, not a copy of every record.
#[derive(Clone, Debug)]
pub struct SiteBatch(pub Arc<[StreamRecord]>);

impl Serialize for SiteBatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SiteBatch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<StreamRecord>::deserialize(deserializer).map(|records| SiteBatch(records.into()))
    }
}

impl SiteBatch {
    fn identity(record: &StreamRecord) -> (u8, u64) {
        match record {
            StreamRecord::Frame(f) => (0, f.frame_index),
            StreamRecord::Flow(f) => (1, f.last_frame),
            StreamRecord::Edge(e) => (2 + e.edge as u8, e.frame),
        }
    }

    /// Seals a batch: sorted by identity, so its order (and its place among the window's batches) does not depend
    /// on the order records arrived in.
    fn sealed(mut records: Vec<StreamRecord>) -> Self {
        records.sort_by_key(Self::identity);
        SiteBatch(records.into())
    }

    fn identities(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.0.iter().map(Self::identity)
    }
}

impl PartialEq for SiteBatch {
    fn eq(&self, other: &Self) -> bool {
        self.identities().eq(other.identities())
    }
}
impl Eq for SiteBatch {}
impl PartialOrd for SiteBatch {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SiteBatch {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.identities().cmp(other.identities())
    }
}
impl std::hash::Hash for SiteBatch {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for identity in self.identities() {
            identity.hash(state);
        }
    }
}

/// What a patient window is built from: its sites' rows and the late frames counted in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatientInput {
    /// One site's row.
    Site(Exact<SiteWindow>),
    /// A frame (stream, index) that arrived after its own windows had closed.
    Late(String, u64),
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += v;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// The `sites` row of one stream's records in one window (records of other streams must not be passed); `None`
/// when the window holds only the stream's edges (it ended exactly on the window's start).
pub fn site_window(
    key: &SiteKey,
    spec: &WindowSpec,
    records: &[&StreamRecord],
    quality: &QualityConfig,
) -> Option<SiteWindow> {
    let mut frames: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            StreamRecord::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    frames.sort_by_key(|f| f.frame_index);
    let flows: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            StreamRecord::Flow(f) => Some(f),
            _ => None,
        })
        .collect();
    if frames.is_empty() && flows.is_empty() {
        return None;
    }
    let partial = records
        .iter()
        .any(|r| matches!(r, StreamRecord::Edge(e) if e.cuts(key.1, key.1 + spec.length_ms)));
    let n = frames.len();
    let avg = |f: fn(&crate::records::FrameMetrics) -> f64| {
        mean(frames.iter().map(|r| f(r))).unwrap_or(0.0)
    };
    // Time covered: the span of the rows plus one row interval (n rows cover n intervals).
    let duration_s = match (frames.first(), frames.last()) {
        (Some(a), Some(b)) if n >= 2 => {
            let span = b.pts_ns.saturating_sub(a.pts_ns) as f64 / 1e9;
            span * n as f64 / (n - 1) as f64
        }
        _ => 0.0,
    };
    let extent = |f: fn(&crate::records::FrameMetrics) -> f64| {
        let lo = frames.iter().map(|r| f(r)).fold(f64::INFINITY, f64::min);
        let hi = frames
            .iter()
            .map(|r| f(r))
            .fold(f64::NEG_INFINITY, f64::max);
        if n > 0 {
            hi - lo
        } else {
            0.0
        }
    };
    let max_drift_fraction = frames.first().map_or(0.0, |f| {
        (extent(|r| r.drift_x_px) / f.width.max(1) as f64)
            .max(extent(|r| r.drift_y_px) / f.height.max(1) as f64)
    });
    let mut focus: Vec<f64> = frames.iter().map(|f| f.focus).collect();
    focus.sort_by(f64::total_cmp);
    let focus = match focus.len() {
        0 => 0.0,
        m if m % 2 == 1 => focus[m / 2],
        m => 0.5 * (focus[m / 2 - 1] + focus[m / 2]),
    };
    let evidence = SiteEvidence {
        duration_s,
        mean_luma: avg(|f| f.mean_luma),
        saturated_fraction: avg(|f| f.saturated_fraction),
        dark_fraction: avg(|f| f.dark_fraction),
        focus,
        tvd_mm_per_mm2: avg(|f| f.tvd_mm_per_mm2),
        max_drift_fraction,
    };
    let q = score(&evidence, quality);
    let first = frames.first();
    Some(SiteWindow {
        patient_id: key.0.to_string(),
        stream_id: key.2.to_string(),
        site: first
            .map(|f| f.site.clone())
            .or_else(|| flows.first().map(|f| f.site.clone()))
            .unwrap_or_default(),
        window_start_ms: key.1,
        window_end_ms: key.1 + spec.length_ms,
        n_frames: n as u64,
        duration_s,
        segmentation: first.map(|f| f.segmentation.clone()).unwrap_or_default(),
        capillary_count: avg(|f| f.capillary_count as f64),
        capillary_density_per_mm2: avg(|f| f.capillary_density_per_mm2),
        area_fraction: avg(|f| f.area_fraction),
        tvd_mm_per_mm2: evidence.tvd_mm_per_mm2,
        tvd_small_mm_per_mm2: avg(|f| f.tvd_small_mm_per_mm2),
        mean_diameter_um: avg(|f| f.mean_diameter_um),
        n_flow_windows: flows.len() as u32,
        ppv_percent: mean(flows.iter().map(|f| f.ppv_percent)),
        pvd_mm_per_mm2: mean(flows.iter().map(|f| f.pvd_mm_per_mm2)),
        mfi: mean(flows.iter().map(|f| f.mfi)),
        rbc_velocity_um_s: mean(flows.iter().filter_map(|f| f.rbc_velocity_um_s)),
        max_drift_fraction,
        mean_luma: evidence.mean_luma,
        focus,
        q_illumination: q.illumination,
        q_duration: q.duration,
        q_focus: q.focus,
        q_content: q.content,
        q_stability: q.stability,
        quality_score: q.total,
        quality_ok: q.quality_ok,
        partial,
        evidence_path: None,
    })
}

/// The `patients` row of one patient window from its sites' rows and the count of late frames.
pub fn patient_window(
    key: &PatientKey,
    spec: &WindowSpec,
    sites: &[&SiteWindow],
    late_frames: u64,
) -> PatientWindow {
    let valid: Vec<&&SiteWindow> = sites.iter().filter(|s| s.quality_ok).collect();
    let over = |f: fn(&SiteWindow) -> f64| mean(valid.iter().map(|s| f(s)));
    let over_flow = |f: fn(&SiteWindow) -> Option<f64>| mean(valid.iter().filter_map(|s| f(s)));
    let mfis: Vec<f64> = valid.iter().filter_map(|s| s.mfi).collect();
    let hi = mean(mfis.iter().copied()).and_then(|m| {
        let max = mfis.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = mfis.iter().copied().fold(f64::INFINITY, f64::min);
        (m > 0.0).then(|| (max - min) / m)
    });
    PatientWindow {
        patient_id: key.0.to_string(),
        window_start_ms: key.1,
        window_end_ms: key.1 + spec.length_ms,
        n_sites: sites.len() as u32,
        n_valid_sites: valid.len() as u32,
        n_frames: sites.iter().map(|s| s.n_frames).sum(),
        late_frames,
        capillary_count: over(|s| s.capillary_count),
        capillary_density_per_mm2: over(|s| s.capillary_density_per_mm2),
        area_fraction: over(|s| s.area_fraction),
        tvd_mm_per_mm2: over(|s| s.tvd_mm_per_mm2),
        tvd_small_mm_per_mm2: over(|s| s.tvd_small_mm_per_mm2),
        mean_diameter_um: over(|s| s.mean_diameter_um),
        ppv_percent: over_flow(|s| s.ppv_percent),
        pvd_mm_per_mm2: over_flow(|s| s.pvd_mm_per_mm2),
        mfi: mean(mfis.iter().copied()),
        hi,
        rbc_velocity_um_s: over_flow(|s| s.rbc_velocity_um_s),
        partial: sites.iter().any(|s| s.partial),
    }
}

/// The `sites` row of a window from the batches differential holds for it (those with a positive count).
fn site_row(
    key: &SiteKey,
    spec: &WindowSpec,
    batches: &[(&SiteBatch, isize)],
    quality: &QualityConfig,
) -> Option<SiteWindow> {
    let mut records: Vec<&StreamRecord> = batches
        .iter()
        .filter(|(_, diff)| *diff > 0)
        .flat_map(|(batch, _)| batch.0.iter())
        .collect();
    // Which tick a record came in depends on its worker's progress; its place in the row's sums must not
    // (floating-point sums depend on order), so the window's records are put in identity order.
    records.sort_by_key(|r| SiteBatch::identity(r));
    site_window(key, spec, &records, quality)
}

/// Where one record goes: a site window, or a late-frame mark in a patient window.
// The large variant is the common one (every record); boxing it would only add an allocation per record.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Routed {
    Site(SiteKey, SiteBatch),
    Late(PatientKey, PatientInput),
}

/// One stream's records of one tick, per window start.
type WindowLists = BTreeMap<i64, Vec<StreamRecord>>;

/// What one timely time has brought so far, held until the time is complete.
#[derive(Default)]
struct Tick {
    /// Per patient and stream: the records per window start.
    held: HashMap<Arc<str>, HashMap<Arc<str>, WindowLists>>,
    /// Late-frame marks per patient window.
    late: Vec<(PatientKey, PatientInput)>,
}

impl Tick {
    /// Files `record`, arriving at watermark `time`, under every window of `spec` still open for it; a frame too
    /// late for all of them is logged and marked in the patient's windows open now.
    fn route(&mut self, record: StreamRecord, spec: &WindowSpec, time: u64) {
        let event_ms = record.event_time_ms();
        let missed = spec
            .each_start(event_ms)
            .filter(|&s| spec.close_time(s) <= time)
            .count();
        if missed > 0 {
            match &record {
                StreamRecord::Frame(f) => {
                    tracing::warn!(
                        stream = %f.stream_id, frame = f.frame_index,
                        event_time_ms = f.event_time_ms, watermark_ms = time,
                        "frame arrived after its window closed; counted in late_frames"
                    );
                    for s in spec.each_start(time as i64) {
                        let mark = PatientInput::Late(f.stream_id.clone(), f.frame_index);
                        self.late.push(((f.patient_id.as_str().into(), s), mark));
                    }
                }
                StreamRecord::Flow(_) => tracing::warn!(
                    stream = ?record, watermark_ms = time,
                    "flow sample arrived after its window closed; dropped from that window"
                ),
                StreamRecord::Edge(_) => {}
            }
        }
        let mut open = spec
            .each_start(event_ms)
            .filter(|&s| spec.close_time(s) > time);
        // The last open window takes the record itself; earlier ones (sliding windows) take copies.
        let Some(last) = open.next_back() else {
            return;
        };
        let streams = match self.held.get_mut(record.patient_id()) {
            Some(streams) => streams,
            None => self.held.entry(record.patient_id().into()).or_default(),
        };
        let windows = match streams.get_mut(record.stream_id()) {
            Some(windows) => windows,
            None => streams.entry(record.stream_id().into()).or_default(),
        };
        // Records are large: start each window's list with room for a few, not one (growth copies them).
        fn list(windows: &mut WindowLists, start: i64) -> &mut Vec<StreamRecord> {
            windows
                .entry(start)
                .or_insert_with(|| Vec::with_capacity(16))
        }
        for start in open {
            list(windows, start).push(record.clone());
        }
        list(windows, last).push(record);
    }

    /// The updates of a complete tick at `time`: each record batch and late mark enters its window now and
    /// expires when the window closes, so the reductions then forget it and their state holds only open windows
    /// however long a run lasts.
    fn seal(self, time: u64, spec: &WindowSpec, mut give: impl FnMut((Routed, u64, isize))) {
        for (key, mark) in self.late {
            let close = spec.close_time(key.1);
            let routed = Routed::Late(key, mark);
            give((routed.clone(), time, 1));
            give((routed, close, -1));
        }
        for (patient, streams) in self.held {
            for (stream, windows) in streams {
                for (start, records) in windows {
                    let key = (Arc::clone(&patient), start, Arc::clone(&stream));
                    let routed = Routed::Site(key, SiteBatch::sealed(records));
                    give((routed.clone(), time, 1));
                    give((routed, spec.close_time(start), -1));
                }
            }
        }
    }
}

/// Site rows and patient rows, as differential collections (revised as records arrive).
pub type SiteCollection<'scope> = VecCollection<'scope, u64, (SiteKey, Exact<SiteWindow>), isize>;
/// Patient rows, as a differential collection.
pub type PatientCollection<'scope> =
    VecCollection<'scope, u64, (PatientKey, Exact<PatientWindow>), isize>;

/// Extension trait: per-site and per-patient windows over a stream of records.
pub trait PatientWindows<'scope> {
    /// Aggregates records into the windows of `spec`, scoring site quality with `quality`.
    ///
    /// The stream's timely times are watermarks on the grid of [`WindowSpec::tick`].
    fn patient_windows(
        self,
        spec: WindowSpec,
        quality: QualityConfig,
    ) -> (SiteCollection<'scope>, PatientCollection<'scope>);
}

impl<'scope> PatientWindows<'scope> for Stream<'scope, u64, Vec<StreamRecord>> {
    fn patient_windows(
        self,
        spec: WindowSpec,
        quality: QualityConfig,
    ) -> (SiteCollection<'scope>, PatientCollection<'scope>) {
        let routed = self
            .unary_frontier(Pipeline, "WindowRecords", move |_, _| {
                let mut pending: BTreeMap<u64, (Capability<u64>, Tick)> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        let Some(&time) = cap.least() else {
                            return;
                        };
                        let (_, tick) = pending.entry(time).or_insert_with(|| {
                            (cap.delayed(&time, output.output_index()), Tick::default())
                        });
                        for batch in data {
                            for record in batch.drain(..) {
                                tick.route(record, &spec, time);
                            }
                        }
                    });
                    // A tick is complete once the frontier has passed it: no record of it can still arrive.
                    while let Some(entry) = pending.first_entry() {
                        let time = *entry.key();
                        if frontier.frontier().iter().any(|t| *t <= time) {
                            break;
                        }
                        let (cap, tick) = entry.remove();
                        let mut session = output.session(&cap);
                        tick.seal(time, &spec, |update| session.give(update));
                    }
                }
            })
            .as_collection();
        let sites = routed
            .clone()
            .flat_map(|r| match r {
                Routed::Site(k, v) => Some((k, v)),
                Routed::Late(..) => None,
            })
            .reduce(move |key, samples, output| {
                if let Some(row) = site_row(key, &spec, samples, &quality) {
                    output.push((Exact::new(row), 1));
                }
            });
        let late = routed.flat_map(|r| match r {
            Routed::Late(k, v) => Some((k, v)),
            Routed::Site(..) => None,
        });
        let patients = sites
            .clone()
            .map(|((patient, start, _), site)| ((patient, start), PatientInput::Site(site)))
            .concat(late)
            .reduce(move |key, inputs, output| {
                let mut sites = Vec::new();
                let mut late = 0u64;
                for (input, diff) in inputs {
                    match input {
                        PatientInput::Site(s) => {
                            for _ in 0..(*diff).max(0) {
                                sites.push(s.get());
                            }
                        }
                        PatientInput::Late(..) => late += (*diff).max(0) as u64,
                    }
                }
                output.push((Exact::new(patient_window(key, &spec, &sites, late)), 1));
            });
        (sites, patients)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::FrameMetrics;

    fn frame(stream: &str, index: u64, event_ms: i64) -> StreamRecord {
        StreamRecord::Frame(FrameMetrics {
            stream_id: stream.into(),
            patient_id: "p".into(),
            frame_index: index,
            event_time_ms: event_ms,
            ..Default::default()
        })
    }

    fn sealed(tick: Tick, time: u64, spec: &WindowSpec) -> Vec<(Routed, u64, isize)> {
        let mut updates = Vec::new();
        tick.seal(time, spec, |u| updates.push(u));
        updates.sort();
        updates
    }

    fn identities(routed: &Routed) -> Vec<(u8, u64)> {
        match routed {
            Routed::Site(_, batch) => batch.identities().collect(),
            Routed::Late(..) => Vec::new(),
        }
    }

    #[test]
    fn each_start_matches_the_definition_for_tumbling_sliding_and_gapped_windows() {
        for (length_ms, hop_ms) in [
            (10_000, 10_000),
            (20_000, 5_000),
            (3_000, 2_000),
            (1_000, 4_000),
        ] {
            let spec = WindowSpec {
                length_ms,
                hop_ms,
                lateness_ms: 0,
            };
            for event in [-25_001, -1, 0, 1, 999, 1_000, 3_999, 7_000, 19_999, 20_000] {
                let brute: Vec<i64> = (-40..40)
                    .map(|k| k * hop_ms)
                    .filter(|&s| s <= event && event < s + length_ms)
                    .collect();
                assert_eq!(spec.starts(event), brute, "{spec:?} at {event}");
            }
        }
    }

    #[test]
    fn a_tick_holds_one_sorted_batch_per_stream_and_window_entering_now_and_expiring_at_close() {
        let spec = WindowSpec::tumbling(10_000);
        let mut tick = Tick::default();
        // Out of order, two streams, two windows.
        for (stream, index, at) in [
            ("a", 2, 2_000),
            ("b", 0, 500),
            ("a", 0, 0),
            ("a", 1, 1_000),
            ("a", 3, 11_000),
        ] {
            tick.route(frame(stream, index, at), &spec, 0);
        }
        let updates = sealed(tick, 0, &spec);
        type Batch = (SiteKey, Vec<(u8, u64)>, u64, isize);
        let batches: Vec<Batch> = updates
            .iter()
            .map(|(r, t, d)| match r {
                Routed::Site(k, _) => (k.clone(), identities(r), *t, *d),
                Routed::Late(..) => panic!("nothing is late"),
            })
            .collect();
        let key = |s: &str, start| -> SiteKey { ("p".into(), start, s.into()) };
        assert_eq!(
            batches,
            [
                (key("a", 0), vec![(0, 0), (0, 1), (0, 2)], 0, 1),
                (key("a", 0), vec![(0, 0), (0, 1), (0, 2)], 10_000, -1),
                (key("b", 0), vec![(0, 0)], 0, 1),
                (key("b", 0), vec![(0, 0)], 10_000, -1),
                (key("a", 10_000), vec![(0, 3)], 0, 1),
                (key("a", 10_000), vec![(0, 3)], 20_000, -1),
            ]
        );
    }

    #[test]
    fn sliding_windows_each_get_the_record_and_a_frame_past_every_close_is_only_marked_late() {
        let spec = WindowSpec {
            length_ms: 20_000,
            hop_ms: 10_000,
            lateness_ms: 0,
        };
        let mut tick = Tick::default();
        tick.route(frame("a", 7, 15_000), &spec, 10_000);
        let starts: Vec<i64> = sealed(tick, 10_000, &spec)
            .iter()
            .filter(|(_, _, d)| *d > 0)
            .map(|(r, _, _)| match r {
                Routed::Site(k, _) => k.1,
                Routed::Late(..) => panic!("not late"),
            })
            .collect();
        assert_eq!(starts, [0, 10_000]);

        let mut tick = Tick::default();
        tick.route(frame("a", 8, 5_000), &spec, 30_000);
        let updates = sealed(tick, 30_000, &spec);
        let late: Vec<(PatientKey, u64, isize)> = updates
            .iter()
            .map(|(r, t, d)| match r {
                Routed::Late(k, PatientInput::Late(s, 8)) if s == "a" => (k.clone(), *t, *d),
                other => panic!("only late marks: {other:?}"),
            })
            .collect();
        // Marked in the two windows open at watermark 30 s, each expiring at its close.
        let key = |start| -> PatientKey { ("p".into(), start) };
        assert_eq!(
            late,
            [
                (key(20_000), 30_000, 1),
                (key(20_000), 40_000, -1),
                (key(30_000), 30_000, 1),
                (key(30_000), 50_000, -1),
            ]
        );
    }

    #[test]
    fn a_site_row_does_not_depend_on_how_its_records_were_split_into_ticks() {
        let flow = |last: u64, ppv: f64| {
            StreamRecord::Flow(crate::records::FlowSample {
                stream_id: "a".into(),
                patient_id: "p".into(),
                last_frame: last,
                event_time_ms: last as i64 * 100,
                ppv_percent: ppv,
                ..Default::default()
            })
        };
        // Sums of these depend on order: (1e16 + 1) - 1e16 = 0, (-1e16 + 1e16) + 1 = 1.
        let records = [
            flow(10, 1e16),
            flow(20, 1.0),
            flow(30, -1e16),
            frame("a", 1, 100),
        ];
        let spec = WindowSpec::tumbling(10_000);
        let key: SiteKey = ("p".into(), 0, "a".into());
        let quality = QualityConfig::default();
        let row = |parts: &[&[usize]]| {
            let batches: Vec<SiteBatch> = parts
                .iter()
                .map(|idx| SiteBatch::sealed(idx.iter().map(|&i| records[i].clone()).collect()))
                .collect();
            let mut held: Vec<(&SiteBatch, isize)> = batches.iter().map(|b| (b, 1)).collect();
            held.sort();
            Exact::new(site_row(&key, &spec, &held, &quality).unwrap())
        };
        let whole = row(&[&[0, 1, 2, 3]]);
        assert_eq!(row(&[&[2, 3], &[0, 1]]), whole);
        assert_eq!(row(&[&[1], &[0, 2], &[3]]), whole);
        assert_eq!(whole.get().ppv_percent, Some(0.0));
    }

    #[test]
    fn batches_order_by_their_records_whatever_order_they_arrived_in() {
        let a = SiteBatch::sealed(vec![frame("a", 2, 0), frame("a", 1, 0)]);
        let b = SiteBatch::sealed(vec![frame("a", 1, 0), frame("a", 2, 0)]);
        let c = SiteBatch::sealed(vec![frame("a", 3, 0)]);
        assert_eq!(a, b);
        assert!(a < c);
    }
}
