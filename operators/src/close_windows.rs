//! Emits each window once, final, when the watermark has passed its end plus the allowed lateness.
//!
//! `reduce` revises a window's row as records arrive (retracting the old value); tables want one row per window, so
//! this operator accumulates the revisions and releases the consolidated value only when no record of the window can
//! still arrive. Updates timed at or after a window's close (its records expiring, see [`crate::windows`]) are not
//! part of its value and are dropped.

use std::collections::BTreeMap;

use differential_dataflow::collection::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

/// Consolidates the revisions of one window into its final value, if any remains.
pub fn final_value<V: Ord>(updates: Vec<(V, isize)>) -> Option<V> {
    let mut totals: BTreeMap<V, isize> = BTreeMap::new();
    for (value, diff) in updates {
        *totals.entry(value).or_default() += diff;
    }
    totals
        .into_iter()
        .find(|(_, diff)| *diff > 0)
        .map(|(value, _)| value)
}

type Pending<K, V> = BTreeMap<K, (Capability<u64>, Vec<(V, isize)>)>;

/// Extension trait turning a collection of window values into a stream of final rows.
pub trait CloseWindows<'scope, K, V> {
    /// Emits `row(key, value)` for every window once the watermark reaches `close_at(key)` (or the input ends).
    fn close_windows<R: Clone + 'static>(
        self,
        name: &str,
        close_at: impl Fn(&K) -> u64 + 'static,
        row: impl Fn(K, V) -> R + 'static,
    ) -> Stream<'scope, u64, Vec<R>>;
}

impl<'scope, K, V> CloseWindows<'scope, K, V> for VecCollection<'scope, u64, (K, V), isize>
where
    K: Ord + Clone + 'static,
    V: Ord + Clone + 'static,
{
    fn close_windows<R: Clone + 'static>(
        self,
        name: &str,
        close_at: impl Fn(&K) -> u64 + 'static,
        row: impl Fn(K, V) -> R + 'static,
    ) -> Stream<'scope, u64, Vec<R>> {
        self.inner.unary_frontier(Pipeline, name, move |_, _| {
            let mut pending: Pending<K, V> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    for batch in data {
                        for ((key, value), time, diff) in batch.drain(..) {
                            // Updates at or after the close are the window's records expiring, not its value.
                            if time >= close_at(&key) {
                                continue;
                            }
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
                let closed: Vec<K> = pending
                    .keys()
                    .filter(|key| {
                        let at = close_at(key);
                        frontier.frontier().iter().all(|t| *t >= at)
                    })
                    .cloned()
                    .collect();
                for key in closed {
                    if let Some((cap, updates)) = pending.remove(&key) {
                        if let Some(value) = final_value(updates) {
                            output.session(&cap).give(row(key, value));
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

    #[test]
    fn revisions_consolidate_to_the_last_value() {
        let updates = vec![(1, 1), (1, -1), (2, 1)];
        assert_eq!(final_value(updates), Some(2));
        assert_eq!(final_value(vec![(1, 1), (1, -1)]), None);
    }
}
