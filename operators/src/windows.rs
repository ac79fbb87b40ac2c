//! Per-patient tumbling event-time windows, aggregated with differential dataflow.
//!
//! Each frame's measures become one record keyed by `(patient, window start)`; `reduce` exchanges records by key, so
//! a patient's streams meet on one worker whichever workers ingested them, and recomputes a window's statistics as
//! frames arrive. Timely times are event times floored to the window grid, so each window is reduced once per key.

use differential_dataflow::collection::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

use crate::records::{FrameMetrics, Stats};
use crate::OrdF64;

/// Key of a window: patient id and window start (ms since the Unix epoch).
pub type WindowKey = (String, i64);

/// The measures of one frame inside a window, totally ordered for differential.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowSample {
    /// Contributing stream.
    pub stream_id: String,
    /// Frame index within the stream.
    pub frame_index: u64,
    /// Capillary count.
    pub capillary_count: u32,
    /// Area fraction.
    pub area_fraction: OrdF64,
    /// Density per mm².
    pub density_per_mm2: OrdF64,
    /// Mean capillary probability.
    pub mean_probability: OrdF64,
}

/// Aggregate of one window (values totally ordered so differential can hold them).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowSummary {
    /// Frames in the window.
    pub n_frames: u64,
    /// Distinct contributing streams.
    pub n_streams: u32,
    /// Count statistics: mean, median, p10, p90.
    pub capillary_count: [OrdF64; 4],
    /// Area-fraction statistics.
    pub area_fraction: [OrdF64; 4],
    /// Density statistics.
    pub density_per_mm2: [OrdF64; 4],
    /// Mean-probability statistics.
    pub mean_probability: [OrdF64; 4],
}

/// Window start containing `event_ms` for windows of `length_ms` aligned to the Unix epoch.
pub fn window_start(event_ms: i64, length_ms: i64) -> i64 {
    event_ms.div_euclid(length_ms) * length_ms
}

/// Mean, median and 10th/90th percentiles (linear interpolation between closest ranks) of `values`.
pub fn stats(values: &mut [f64]) -> Stats {
    if values.is_empty() {
        return Stats::default();
    }
    values.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let pos = q * (values.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
    };
    Stats {
        mean: values.iter().sum::<f64>() / values.len() as f64,
        median: quantile(0.5),
        p10: quantile(0.1),
        p90: quantile(0.9),
    }
}

fn ord4(s: Stats) -> [OrdF64; 4] {
    [
        OrdF64(s.mean),
        OrdF64(s.median),
        OrdF64(s.p10),
        OrdF64(s.p90),
    ]
}

/// Stats back from their ordered form.
pub fn stats_of(v: &[OrdF64; 4]) -> Stats {
    Stats {
        mean: v[0].0,
        median: v[1].0,
        p10: v[2].0,
        p90: v[3].0,
    }
}

/// Aggregates the samples of one window; multiplicities (`diff`) weight each sample.
pub fn summarize(samples: &[(&WindowSample, isize)]) -> WindowSummary {
    let mut columns: [Vec<f64>; 4] = Default::default();
    let mut streams: Vec<&str> = Vec::new();
    for (sample, diff) in samples {
        for _ in 0..(*diff).max(0) {
            columns[0].push(sample.capillary_count as f64);
            columns[1].push(sample.area_fraction.0);
            columns[2].push(sample.density_per_mm2.0);
            columns[3].push(sample.mean_probability.0);
        }
        if *diff > 0 {
            streams.push(&sample.stream_id);
        }
    }
    streams.sort_unstable();
    streams.dedup();
    let [mut count, mut area, mut density, mut prob] = columns;
    WindowSummary {
        n_frames: count.len() as u64,
        n_streams: streams.len() as u32,
        capillary_count: ord4(stats(&mut count)),
        area_fraction: ord4(stats(&mut area)),
        density_per_mm2: ord4(stats(&mut density)),
        mean_probability: ord4(stats(&mut prob)),
    }
}

/// Extension trait: per-patient windows over a stream of frame measures.
pub trait PatientWindows<'scope> {
    /// Aggregates frames into tumbling windows of `length_ms` per patient.
    ///
    /// The stream's timely times must be event times floored to a grid that divides `length_ms`.
    fn patient_windows(
        self,
        length_ms: i64,
    ) -> VecCollection<'scope, u64, (WindowKey, WindowSummary), isize>;
}

impl<'scope> PatientWindows<'scope> for Stream<'scope, u64, Vec<FrameMetrics>> {
    fn patient_windows(
        self,
        length_ms: i64,
    ) -> VecCollection<'scope, u64, (WindowKey, WindowSummary), isize> {
        self.unary(Pipeline, "WindowSamples", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let time = *cap.time();
                    let mut session = output.session(&cap);
                    for batch in data {
                        for m in batch.drain(..) {
                            let key = (m.patient_id, window_start(m.event_time_ms, length_ms));
                            let sample = WindowSample {
                                stream_id: m.stream_id,
                                frame_index: m.frame_index,
                                capillary_count: m.capillary_count,
                                area_fraction: OrdF64(m.area_fraction),
                                density_per_mm2: OrdF64(m.density_per_mm2),
                                mean_probability: OrdF64(m.mean_probability),
                            };
                            session.give(((key, sample), time, 1isize));
                        }
                    }
                });
            }
        })
        .as_collection()
        .reduce(|_key, samples, output| output.push((summarize(samples), 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_to_the_epoch_also_before_it() {
        assert_eq!(window_start(1_999, 1_000), 1_000);
        assert_eq!(window_start(2_000, 1_000), 2_000);
        assert_eq!(window_start(-1, 1_000), -1_000);
    }

    #[test]
    fn stats_interpolate_percentiles() {
        let s = stats(&mut [4.0, 1.0, 3.0, 2.0, 5.0]);
        assert_eq!(s.mean, 3.0);
        assert_eq!(s.median, 3.0);
        assert!((s.p10 - 1.4).abs() < 1e-12);
        assert!((s.p90 - 4.6).abs() < 1e-12);
        assert_eq!(stats(&mut []), Stats::default());
        let s = stats(&mut [1.0, 2.0]);
        assert_eq!(s.median, 1.5);
    }

    #[test]
    fn summarize_counts_frames_and_distinct_streams() {
        let sample = |stream: &str, count: u32| WindowSample {
            stream_id: stream.into(),
            frame_index: 0,
            capillary_count: count,
            area_fraction: OrdF64(0.01),
            density_per_mm2: OrdF64(10.0),
            mean_probability: OrdF64(0.8),
        };
        let (a, b, c) = (sample("a", 10), sample("a", 20), sample("b", 30));
        let summary = summarize(&[(&a, 1), (&b, 1), (&c, 1)]);
        assert_eq!(summary.n_frames, 3);
        assert_eq!(summary.n_streams, 2);
        assert_eq!(stats_of(&summary.capillary_count).mean, 20.0);
    }
}
