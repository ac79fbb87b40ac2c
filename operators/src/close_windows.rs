//! Emits each window once, final, when the event-time frontier has passed its end.
//!
//! `reduce` revises a window's aggregate as frames arrive (retracting the old value); downstream tables want one
//! row per window, so this operator accumulates the revisions and releases the consolidated value only when no
//! frame of the window can still arrive.

use std::collections::BTreeMap;

use differential_dataflow::collection::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

use crate::records::WindowAggregate;
use crate::windows::{stats_of, WindowKey, WindowSummary};

/// Consolidates the revisions of one window into its final value, if any remains.
pub fn final_value(updates: Vec<(WindowSummary, isize)>) -> Option<WindowSummary> {
    let mut totals: BTreeMap<WindowSummary, isize> = BTreeMap::new();
    for (value, diff) in updates {
        *totals.entry(value).or_default() += diff;
    }
    totals
        .into_iter()
        .find(|(_, diff)| *diff > 0)
        .map(|(value, _)| value)
}

/// The table row of a final window.
pub fn to_row(key: WindowKey, length_ms: i64, summary: &WindowSummary) -> WindowAggregate {
    WindowAggregate {
        patient_id: key.0,
        window_start_ms: key.1,
        window_end_ms: key.1 + length_ms,
        n_frames: summary.n_frames,
        n_streams: summary.n_streams,
        capillary_count: stats_of(&summary.capillary_count),
        area_fraction: stats_of(&summary.area_fraction),
        density_per_mm2: stats_of(&summary.density_per_mm2),
        mean_probability: stats_of(&summary.mean_probability),
    }
}

/// Extension trait turning a window collection into a stream of final rows.
pub trait CloseWindows<'scope> {
    /// Emits every window of `length_ms` once its end has passed in event time (or the input has ended).
    fn close_windows(self, length_ms: i64) -> Stream<'scope, u64, Vec<WindowAggregate>>;
}

type Pending = BTreeMap<WindowKey, (Capability<u64>, Vec<(WindowSummary, isize)>)>;

impl<'scope> CloseWindows<'scope>
    for VecCollection<'scope, u64, (WindowKey, WindowSummary), isize>
{
    fn close_windows(self, length_ms: i64) -> Stream<'scope, u64, Vec<WindowAggregate>> {
        self.inner
            .unary_frontier(Pipeline, "CloseWindows", move |_, _| {
                let mut pending: Pending = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        for batch in data {
                            for ((key, value), time, diff) in batch.drain(..) {
                                match pending.get_mut(&key) {
                                    Some((held, updates)) => {
                                        if time < *held.time() {
                                            *held = cap.delayed(&time, output.output_index());
                                        }
                                        updates.push((value, diff));
                                    }
                                    None => {
                                        let held = cap.delayed(&time, output.output_index());
                                        pending.insert(key, (held, vec![(value, diff)]));
                                    }
                                }
                            }
                        }
                    });
                    let closed: Vec<WindowKey> = pending
                        .keys()
                        .filter(|(_, start)| {
                            let end = (start + length_ms).max(0) as u64;
                            frontier.frontier().iter().all(|t| *t >= end)
                        })
                        .cloned()
                        .collect();
                    for key in closed {
                        if let Some((cap, updates)) = pending.remove(&key) {
                            if let Some(value) = final_value(updates) {
                                output.session(&cap).give(to_row(key, length_ms, &value));
                            }
                        }
                    }
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrdF64;

    fn summary(n: u64) -> WindowSummary {
        WindowSummary {
            n_frames: n,
            n_streams: 1,
            capillary_count: [OrdF64(n as f64); 4],
            area_fraction: [OrdF64(0.0); 4],
            density_per_mm2: [OrdF64(0.0); 4],
            mean_probability: [OrdF64(0.0); 4],
        }
    }

    #[test]
    fn revisions_consolidate_to_the_last_value() {
        let updates = vec![(summary(1), 1), (summary(1), -1), (summary(2), 1)];
        assert_eq!(final_value(updates), Some(summary(2)));
        assert_eq!(final_value(vec![(summary(1), 1), (summary(1), -1)]), None);
    }

    #[test]
    fn rows_carry_the_window_bounds() {
        let row = to_row(("p".into(), 5_000), 1_000, &summary(3));
        assert_eq!(
            (row.window_start_ms, row.window_end_ms, row.n_frames),
            (5_000, 6_000, 3)
        );
    }
}
