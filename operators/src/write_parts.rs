//! Groups rows into deterministic output parts and hands each complete part to a writer.
//!
//! Which rows form a part, and the part's name, depend only on the rows themselves (stream and frame index, or
//! patient and window start), never on worker count or scheduling, so every run over the same input writes the same
//! files. The writer does the I/O; this operator only decides when a part is complete.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

/// Where a row belongs and when its part is complete.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartKey {
    /// Partition value (patient id).
    pub patient_id: String,
    /// Second partition value: the rows' UTC day, `yyyy-mm-dd`.
    pub date: String,
    /// Part name, unique within the partition.
    pub name: String,
    /// The part is complete once it holds this many rows.
    pub complete_rows: Option<usize>,
    /// The part is complete once event time has passed this (timely time).
    pub complete_at: Option<u64>,
}

/// A complete part, rows in a deterministic order.
#[derive(Clone, Debug, PartialEq)]
pub struct Part<R> {
    /// Partition value (patient id).
    pub patient_id: String,
    /// The rows' UTC day, `yyyy-mm-dd`.
    pub date: String,
    /// Part name.
    pub name: String,
    /// The rows.
    pub rows: Vec<R>,
}

/// Extension trait: write a stream of rows as parts.
pub trait WriteParts<R> {
    /// Assigns rows to parts with `key` (a pure function of the row), orders each part's rows by `order`, and calls `write` once per complete
    /// part; all remaining parts are written when the input ends.
    fn write_parts<K, O, W>(self, name: &str, key: K, order: O, write: W)
    where
        K: Fn(&R) -> PartKey + Clone + 'static,
        O: FnMut(&R, &R) -> std::cmp::Ordering + 'static,
        W: FnMut(Part<R>) + 'static;
}

/// A stable 64-bit FNV-1a hash, identical in every process, for routing rows by partition.
pub fn route(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl<R> WriteParts<R> for Stream<'_, u64, Vec<R>>
where
    R: Clone + Send + Serialize + DeserializeOwned + 'static,
{
    fn write_parts<K, O, W>(self, name: &str, key: K, mut order: O, mut write: W)
    where
        K: Fn(&R) -> PartKey + Clone + 'static,
        O: FnMut(&R, &R) -> std::cmp::Ordering + 'static,
        W: FnMut(Part<R>) + 'static,
    {
        let mut open: BTreeMap<PartKey, Vec<R>> = BTreeMap::new();
        let route_key = key.clone();
        let pact = Exchange::new(move |row: &R| route(&route_key(row).patient_id));
        self.sink(pact, name, move |(input, frontier)| {
            input.for_each_stamp(|_cap, data| {
                for batch in data {
                    for row in batch.drain(..) {
                        open.entry(key(&row)).or_default().push(row);
                    }
                }
            });
            let done = frontier.is_empty();
            let complete: Vec<PartKey> = open
                .iter()
                .filter(|(k, rows)| {
                    done || k.complete_rows.is_some_and(|n| rows.len() >= n)
                        || k.complete_at
                            .is_some_and(|t| frontier.frontier().iter().all(|f| *f >= t))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in complete {
                if let Some(mut rows) = open.remove(&k) {
                    rows.sort_by(&mut order);
                    write(Part {
                        patient_id: k.patient_id,
                        date: k.date,
                        name: k.name,
                        rows,
                    });
                }
            }
        });
    }
}
