//! Frames → stabilised frames: the working-resolution luma plane, the drift since the stream's first frame and the
//! per-frame image-quality evidence.
//!
//! Everything downstream that compares frames over time (block-mean segmentation, flow) needs each frame's
//! displacement, and the quality score needs brightness and sharpness; both come from the same small luma plane, so
//! it is computed once here. Frames stay on the worker that decoded them (pipeline channel); the drift state is per
//! stream.

use std::collections::HashMap;

use capflow_ingest::Frame;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

use crate::drift::{DriftTracker, Shift};
use crate::model::{Channel, InputSpec};
use crate::preprocess::{channel_resized, model_size};
use crate::quality::{frame_quality, FrameQuality};

/// Largest side of the window phase correlation works on (larger planes are downsampled first).
pub const DRIFT_WINDOW: usize = 256;

/// A frame with its luma plane at the model's working resolution, its drift and its quality evidence.
#[derive(Clone, Debug)]
pub struct StableFrame {
    /// The decoded frame.
    pub frame: Frame,
    /// Green (colour) or grey (monochrome) plane at the working resolution, values 0..=255.
    pub luma: Vec<f32>,
    /// Width of `luma`.
    pub luma_width: usize,
    /// Height of `luma`.
    pub luma_height: usize,
    /// Pixel size of `luma`, µm.
    pub luma_um_per_px: f64,
    /// Displacement of the content since the stream's first frame, in `luma` pixels.
    pub shift: Shift,
    /// Brightness, saturation and sharpness of `luma`.
    pub quality: FrameQuality,
}

impl StableFrame {
    /// Lets go of the decoded pixels once the model input is made: everything after segmentation works on `luma`, and
    /// a 1080p frame's 6 MB then go back to its source's buffer pool at once instead of riding along through
    /// inference and flow analysis. `frame.data` is empty afterwards; the frame's size and metadata stay.
    pub fn release_pixels(&mut self) {
        self.frame.data = capflow_ingest::FrameData::default();
    }

    /// The drift in pixels of the decoded frame.
    pub fn drift_frame_px(&self) -> [f64; 2] {
        let scale = self.luma_um_per_px / self.frame.stream.um_per_px;
        [self.shift.dx * scale, self.shift.dy * scale]
    }
}

/// Per-stream stabiliser: one drift tracker per plane size.
#[derive(Default)]
pub struct Stabiliser {
    trackers: HashMap<String, (usize, usize, DriftTracker)>,
}

impl Stabiliser {
    /// Computes the working-resolution plane of `frame` (sized as the model `spec` would resize it), its drift and
    /// quality.
    pub fn stabilise(&mut self, frame: Frame, spec: &InputSpec) -> StableFrame {
        let (w, h) = (frame.width as usize, frame.height as usize);
        // The frame's own pixel size: its source may have resized it to this working size already.
        let um = frame.um_per_px();
        let (ow, oh) = model_size(w, h, um, spec);
        let luma = channel_resized(&frame.data, frame.format, Channel::Green, w, h, ow, oh);
        let luma_um = um * w as f64 / ow as f64;
        let entry = self
            .trackers
            .entry(frame.stream.stream_id.clone())
            .or_insert_with(|| (ow, oh, DriftTracker::new(ow, oh, DRIFT_WINDOW)));
        if (entry.0, entry.1) != (ow, oh) {
            // A stream that changes size mid-way restarts its drift track.
            *entry = (ow, oh, DriftTracker::new(ow, oh, DRIFT_WINDOW));
        }
        let shift = entry.2.track(&luma);
        let quality = frame_quality(&luma, ow, oh, luma_um);
        StableFrame {
            frame,
            luma,
            luma_width: ow,
            luma_height: oh,
            luma_um_per_px: luma_um,
            shift,
            quality,
        }
    }
}

/// Extension trait: stabilise a stream of frames.
pub trait Stabilise<'scope> {
    /// Stabilises every frame; `spec` is the model's input contract, which fixes the working resolution.
    fn stabilise(self, spec: InputSpec) -> Stream<'scope, u64, Vec<StableFrame>>;
}

impl<'scope> Stabilise<'scope> for Stream<'scope, u64, Vec<Frame>> {
    fn stabilise(self, spec: InputSpec) -> Stream<'scope, u64, Vec<StableFrame>> {
        let mut stabiliser = Stabiliser::default();
        self.unary(Pipeline, "Stabilise", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let mut session = output.session(&cap);
                    for batch in data {
                        for frame in batch.drain(..) {
                            session.give(stabiliser.stabilise(frame, &spec));
                        }
                    }
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use capflow_ingest::{FramePool, PixelFormat, StreamInfo};

    use super::*;

    #[test]
    fn released_pixels_go_back_to_their_pool_and_the_rest_stays() {
        let pool = FramePool::new(2);
        let mut data = pool.take(16);
        data.bytes_mut().extend_from_slice(&[7; 16]);
        let mut stable = StableFrame {
            frame: Frame {
                stream: Arc::new(StreamInfo::new("s", "p", "site", 2.0)),
                index: 3,
                pts_ns: 120_000_000,
                width: 4,
                height: 4,
                source_width: 4,
                source_height: 4,
                format: PixelFormat::Gray8,
                data,
            },
            luma: vec![7.0; 16],
            luma_width: 4,
            luma_height: 4,
            luma_um_per_px: 2.0,
            shift: Shift::default(),
            quality: FrameQuality::default(),
        };
        stable.release_pixels();
        assert!(stable.frame.data.is_empty());
        assert_eq!(pool.idle(), 1, "the buffer is back in its pool");
        assert_eq!(
            (stable.frame.index, stable.frame.width, stable.luma.len()),
            (3, 4, 16)
        );
    }
}
