//! Frame buffers reused from frame to frame.
//!
//! A 1080p RGB frame is 6 MB. Allocated afresh for every frame, each one is a new block whose pages the kernel
//! faults in and zeroes before the decoder's copy overwrites them. A [`Source`](crate::Source) instead keeps a few
//! buffers of frames already consumed and packs the next frame into one of them: [`FrameData`] returns its bytes to
//! the pool they came from when the frame is dropped, whichever thread drops it. The pool holds at most a few idle
//! buffers, so memory stays bounded by the frames in flight plus that handful.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// Idle frame buffers of one source.
#[derive(Debug)]
pub struct FramePool {
    idle: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl FramePool {
    /// A pool that keeps at most `keep` idle buffers (more are freed).
    pub fn new(keep: usize) -> Arc<Self> {
        Arc::new(FramePool {
            idle: Mutex::new(Vec::with_capacity(keep)),
            keep,
        })
    }

    /// An empty buffer with room for `len` bytes: an idle one when one is large enough, otherwise a new one. It goes
    /// back to this pool when dropped.
    pub fn take(self: &Arc<Self>, len: usize) -> FrameData {
        let reused = {
            let mut idle = self.lock();
            idle.iter()
                .position(|b| b.capacity() >= len)
                .map(|i| idle.swap_remove(i))
        };
        let mut bytes = reused.unwrap_or_else(|| Vec::with_capacity(len));
        bytes.clear();
        FrameData {
            bytes,
            home: Some(Arc::clone(self)),
        }
    }

    /// Idle buffers held now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn give_back(&self, bytes: Vec<u8>) {
        let mut idle = self.lock();
        if idle.len() < self.keep && bytes.capacity() > 0 {
            idle.push(bytes);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding the lock leaves only a list of spare buffers behind: still usable.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pixel bytes of a [`Frame`](crate::Frame): a `Vec<u8>` that returns to its [`FramePool`] when dropped.
///
/// It dereferences to `[u8]`; [`FrameData::bytes_mut`] gives the `Vec` to fill. Bytes made elsewhere (tests, still
/// images) convert with `From<Vec<u8>>` and belong to no pool. A clone is a plain copy that belongs to no pool.
#[derive(Default)]
pub struct FrameData {
    bytes: Vec<u8>,
    home: Option<Arc<FramePool>>,
}

impl FrameData {
    /// The underlying vector, to fill or resize.
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Whether the bytes go back to a pool when dropped.
    pub fn pooled(&self) -> bool {
        self.home.is_some()
    }

    /// The bytes as a plain vector; they leave the pool for good.
    pub fn into_vec(mut self) -> Vec<u8> {
        self.home = None;
        std::mem::take(&mut self.bytes)
    }
}

impl Drop for FrameData {
    fn drop(&mut self) {
        if let Some(pool) = self.home.take() {
            pool.give_back(std::mem::take(&mut self.bytes));
        }
    }
}

impl From<Vec<u8>> for FrameData {
    fn from(bytes: Vec<u8>) -> Self {
        FrameData { bytes, home: None }
    }
}

impl Clone for FrameData {
    fn clone(&self) -> Self {
        FrameData::from(self.bytes.clone())
    }
}

impl Deref for FrameData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for FrameData {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl PartialEq for FrameData {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl fmt::Debug for FrameData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Millions of pixel values say nothing in a log line.
        write!(f, "FrameData({} bytes)", self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_handed_out_again_without_a_new_allocation() {
        let pool = FramePool::new(2);
        let mut first = pool.take(1000);
        first.bytes_mut().extend_from_slice(&[7; 1000]);
        let address = first.as_ptr();
        drop(first);
        assert_eq!(pool.idle(), 1);
        let second = pool.take(800);
        assert_eq!(second.as_ptr(), address, "the idle buffer is reused");
        assert!(second.is_empty(), "a reused buffer starts empty");
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit_and_never_hands_out_a_small_buffer() {
        let pool = FramePool::new(2);
        let buffers: Vec<FrameData> = (0..4).map(|_| pool.take(100)).collect();
        drop(buffers);
        assert_eq!(pool.idle(), 2);
        let big = pool.take(10_000);
        assert!(big.bytes.capacity() >= 10_000);
        assert_eq!(
            pool.idle(),
            2,
            "the small idle buffers stay for small frames"
        );
    }

    #[test]
    fn clones_and_plain_vectors_belong_to_no_pool() {
        let pool = FramePool::new(4);
        let mut data = pool.take(3);
        data.bytes_mut().extend_from_slice(&[1, 2, 3]);
        let copy = data.clone();
        assert_eq!(copy, data);
        assert!(data.pooled() && !copy.pooled());
        drop(copy);
        assert_eq!(pool.idle(), 0);
        let bytes = data.into_vec();
        assert_eq!(bytes, vec![1, 2, 3]);
        assert_eq!(pool.idle(), 0, "bytes taken out of a pool do not come back");
        drop(FrameData::from(vec![0; 10]));
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_buffer_dropped_on_another_thread_returns_to_its_pool() {
        let pool = FramePool::new(1);
        let data = pool.take(64);
        std::thread::spawn(move || drop(data)).join().unwrap();
        assert_eq!(pool.idle(), 1);
    }
}
