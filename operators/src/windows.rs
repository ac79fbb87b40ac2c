//! Per-site and per-patient event-time windows, tumbling or sliding, aggregated with differential dataflow.
//!
//! Each stream record (a segmented frame's row or a flow sample) goes into every window that contains its event
//! time, keyed by `(patient, window start, stream)`. A first `reduce` turns a stream's records into its `sites` row
//! (means, flow, MIQS-style quality); a second, keyed by `(patient, window start)`, combines the sites of a patient
//! into its `patients` row, averaging only sites whose quality passed. Both reductions exchange records by key, so a
//! patient's streams meet on one worker whichever workers decoded them, and both recompute (retracting the old value)
//! when a record arrives late but within the allowed lateness.
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

use differential_dataflow::collection::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
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
        let hop = self.hop_ms.max(1);
        let mut start = event_ms.div_euclid(hop) * hop;
        let mut out = Vec::new();
        while start > event_ms - self.length_ms {
            out.push(start);
            start -= hop;
        }
        out.reverse();
        out
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

/// Key of a site window: patient, window start, stream.
pub type SiteKey = (String, i64, String);
/// Key of a patient window: patient, window start.
pub type PatientKey = (String, i64);

/// A stream record inside a window, ordered by identity (stream, kind, frame) so differential can hold it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteSample(pub StreamRecord);

impl SiteSample {
    fn identity(&self) -> (&str, u8, u64) {
        match &self.0 {
            StreamRecord::Frame(f) => (&f.stream_id, 0, f.frame_index),
            StreamRecord::Flow(f) => (&f.stream_id, 1, f.last_frame),
            StreamRecord::Edge(e) => (&e.stream_id, 2 + e.edge as u8, e.frame),
        }
    }
}

impl PartialEq for SiteSample {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}
impl Eq for SiteSample {}
impl PartialOrd for SiteSample {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SiteSample {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.identity().cmp(&other.identity())
    }
}
impl std::hash::Hash for SiteSample {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

/// What a patient window is built from: its sites' rows and the late frames counted in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatientInput {
    /// One site's row.
    Site(Box<Exact<SiteWindow>>),
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
        patient_id: key.0.clone(),
        stream_id: key.2.clone(),
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
        patient_id: key.0.clone(),
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

/// Where one record goes: a site window, or a late-frame mark in a patient window.
// The large variant is the common one (every record); boxing it would only add an allocation per record.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Routed {
    Site(SiteKey, SiteSample),
    Late(PatientKey, PatientInput),
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
            .unary(Pipeline, "WindowRecords", move |_, _| {
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        let Some(cap) = cap.retain_least(output.output_index()) else {
                            return;
                        };
                        let time = *cap.time();
                        let mut session = output.session(&cap);
                        for batch in data {
                            for record in batch.drain(..) {
                                let patient = record.patient_id().to_owned();
                                let starts = spec.starts(record.event_time_ms());
                                let missed = starts
                                    .iter()
                                    .filter(|&&s| spec.close_time(s) <= time)
                                    .count();
                                if missed > 0 {
                                    if let StreamRecord::Frame(f) = &record {
                                        tracing::warn!(
                                            stream = %f.stream_id, frame = f.frame_index,
                                            event_time_ms = f.event_time_ms, watermark_ms = time,
                                            "frame arrived after its window closed; counted in late_frames"
                                        );
                                        for s in spec.starts(time as i64) {
                                            let mark = PatientInput::Late(
                                                f.stream_id.clone(),
                                                f.frame_index,
                                            );
                                            let routed = Routed::Late((patient.clone(), s), mark);
                                            session.give((routed.clone(), time, 1isize));
                                            session.give((routed, spec.close_time(s), -1isize));
                                        }
                                    } else if let StreamRecord::Flow(_) = &record {
                                        tracing::warn!(
                                            stream = ?record, watermark_ms = time,
                                            "flow sample arrived after its window closed; dropped from that window"
                                        );
                                    }
                                }
                                let stream = record.stream_id().to_owned();
                                for s in starts.into_iter().filter(|&s| spec.close_time(s) > time) {
                                    let routed = Routed::Site(
                                        (patient.clone(), s, stream.clone()),
                                        SiteSample(record.clone()),
                                    );
                                    session.give((routed.clone(), time, 1isize));
                                    // Expires when the window closes: the reductions then forget it, so their
                                    // state holds only open windows however long a run lasts.
                                    session.give((routed, spec.close_time(s), -1isize));
                                }
                            }
                        }
                    });
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
                let records: Vec<&StreamRecord> = samples
                    .iter()
                    .filter(|(_, diff)| *diff > 0)
                    .map(|(s, _)| &s.0)
                    .collect();
                if let Some(row) = site_window(key, &spec, &records, &quality) {
                    output.push((Exact::new(row), 1));
                }
            });
        let late = routed.flat_map(|r| match r {
            Routed::Late(k, v) => Some((k, v)),
            Routed::Site(..) => None,
        });
        let patients = sites
            .clone()
            .map(|((patient, start, _), site)| {
                ((patient, start), PatientInput::Site(Box::new(site)))
            })
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
