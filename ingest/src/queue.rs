//! The bounded queue between a stream's decoding thread and its timely worker.
//!
//! Replay pushes block when the queue is full, so archived video is never dropped and the decoder simply waits.
//! Live pushes never block: a camera does not pause, so when processing falls behind frames are dropped by the
//! stream's [`DropPolicy`] and counted. Either way the queue holds at most its capacity, so memory does not grow
//! with lag.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Which frames a live stream gives up when its queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DropPolicy {
    /// Evict the oldest queued frame for the new one: analysis always works on the freshest frames.
    #[default]
    DropOldest,
    /// While the queue is full, admit only frames whose decode index is a multiple of `n` (each evicting the oldest
    /// queued frame): under overload the stream is thinned evenly to every n-th frame instead of in bursts.
    KeepEveryNth(u32),
}

/// What [`FrameQueue::push_lossy`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// The item was queued without dropping anything.
    Queued,
    /// The queue was full; this item was dropped (the new one, or the evicted oldest).
    Dropped(T),
    /// The queue is closed; the item was not queued.
    Closed,
}

/// What [`FrameQueue::pop_timeout`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped<T> {
    /// The next item.
    Item(T),
    /// Nothing yet; the producer is still running.
    Empty,
    /// Nothing left and the producer has finished.
    Closed,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    dropped: u64,
}

/// A bounded multi-threaded FIFO with a blocking and a lossy push.
pub struct FrameQueue<T> {
    capacity: usize,
    state: Mutex<State<T>>,
    changed: Condvar,
}

impl<T> std::fmt::Debug for FrameQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("FrameQueue")
            .field("capacity", &self.capacity)
            .field("len", &state.items.len())
            .field("closed", &state.closed)
            .field("dropped", &state.dropped)
            .finish()
    }
}

impl<T> FrameQueue<T> {
    /// A queue holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        FrameQueue {
            capacity,
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: false,
                dropped: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panicking producer leaves consistent state behind (every mutation is a single call).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`, waiting while the queue is full (replay: nothing is ever dropped). Returns the item back if
    /// the queue was closed meanwhile.
    pub fn push_blocking(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        while state.items.len() >= self.capacity && !state.closed {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        self.changed.notify_all();
        Ok(())
    }

    /// Queues `item` without waiting; when the queue is full one item is dropped by `policy` and counted.
    /// `index` is the item's position in its stream, used by [`DropPolicy::KeepEveryNth`].
    pub fn push_lossy(&self, item: T, index: u64, policy: DropPolicy) -> Pushed<T> {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Closed;
        }
        let result = if state.items.len() < self.capacity {
            state.items.push_back(item);
            Pushed::Queued
        } else {
            let keep_new = match policy {
                DropPolicy::DropOldest => true,
                DropPolicy::KeepEveryNth(n) => index.is_multiple_of(u64::from(n.max(1))),
            };
            state.dropped += 1;
            if keep_new {
                let oldest = state.items.pop_front().expect("a full queue has items");
                state.items.push_back(item);
                Pushed::Dropped(oldest)
            } else {
                Pushed::Dropped(item)
            }
        };
        self.changed.notify_all();
        result
    }

    /// Takes the next item, waiting up to `timeout` for one.
    pub fn pop_timeout(&self, timeout: Duration) -> Popped<T> {
        let mut state = self.lock();
        if state.items.is_empty() && !state.closed && !timeout.is_zero() {
            state = self
                .changed
                .wait_timeout_while(state, timeout, |s| s.items.is_empty() && !s.closed)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match state.items.pop_front() {
            Some(item) => {
                self.changed.notify_all();
                Popped::Item(item)
            }
            None if state.closed => Popped::Closed,
            None => Popped::Empty,
        }
    }

    /// Takes the next item if there is one.
    pub fn try_pop(&self) -> Popped<T> {
        self.pop_timeout(Duration::ZERO)
    }

    /// Marks the producer finished: queued items can still be popped, pushes fail, blocked pushers wake.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Items dropped by [`FrameQueue::push_lossy`] so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn drain(q: &FrameQueue<u64>) -> Vec<u64> {
        std::iter::from_fn(|| match q.try_pop() {
            Popped::Item(i) => Some(i),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn drop_oldest_keeps_the_newest_frames_and_counts_every_drop() {
        let q = FrameQueue::new(3);
        for i in 0..10 {
            q.push_lossy(i, i, DropPolicy::DropOldest);
        }
        assert_eq!(q.dropped(), 7);
        assert_eq!(drain(&q), vec![7, 8, 9]);
    }

    #[test]
    fn keep_every_nth_thins_evenly_under_overload() {
        let q = FrameQueue::new(2);
        let mut dropped = Vec::new();
        for i in 0..12 {
            if let Pushed::Dropped(d) = q.push_lossy(i, i, DropPolicy::KeepEveryNth(3)) {
                dropped.push(d);
            }
        }
        // Queue full after 0, 1: only multiples of 3 get in from then on, each evicting the oldest.
        assert_eq!(drain(&q), vec![6, 9]);
        assert_eq!(q.dropped(), 10);
        assert_eq!(dropped.len(), 10);
    }

    #[test]
    fn blocking_push_waits_for_the_consumer_and_never_drops() {
        let q = Arc::new(FrameQueue::new(2));
        let producer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    q.push_blocking(i).unwrap();
                }
                q.close();
            })
        };
        let mut got = Vec::new();
        loop {
            match q.pop_timeout(Duration::from_millis(100)) {
                Popped::Item(i) => got.push(i),
                Popped::Empty => {}
                Popped::Closed => break,
            }
            assert!(q.len() <= 2);
        }
        producer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn closing_wakes_a_blocked_producer_and_keeps_queued_items() {
        let q = Arc::new(FrameQueue::new(1));
        q.push_blocking(1).unwrap();
        let producer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || q.push_blocking(2))
        };
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        assert_eq!(producer.join().unwrap(), Err(2));
        assert_eq!(q.try_pop(), Popped::Item(1));
        assert_eq!(q.try_pop(), Popped::Closed);
        assert_eq!(q.push_lossy(3, 3, DropPolicy::DropOldest), Pushed::Closed);
    }
}
