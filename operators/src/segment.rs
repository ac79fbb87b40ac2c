//! Frames → per-frame capillary measures: preprocess, batched ONNX inference, post-process.
//!
//! Frames stay on the worker that decoded them (pipeline channel: raw pixels never cross workers or processes).
//! They are buffered until a batch is full or event time moves past them, then inferred together; the shared
//! `pending` counter drops as frames are consumed so the input loop can hold back decoding (timely itself has no
//! backpressure between operators).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use capflow_ingest::Frame;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

use crate::metrics::{measure, MetricParams};
use crate::model::InputSpec;
use crate::preprocess::{preprocess, ModelInput};
use crate::records::FrameMetrics;
use crate::segmenter::Segmenter;

/// Everything the segment operator needs besides the session.
#[derive(Clone, Debug)]
pub struct SegmentParams {
    /// The model's input contract.
    pub input: InputSpec,
    /// Post-processing thresholds.
    pub metrics: MetricParams,
    /// Frames inferred together (same size only).
    pub batch_size: usize,
}

/// Shared per-worker state between the input loop and the operator.
#[derive(Clone, Debug, Default)]
pub struct SegmentShared {
    /// Frames sent into the dataflow and not yet segmented.
    pub pending: Rc<Cell<usize>>,
    /// Errors met while segmenting, one line each, naming the stream.
    pub errors: Rc<RefCell<Vec<String>>>,
}

/// Measures one frame from its probability plane.
pub fn frame_metrics(
    frame: &Frame,
    input: &ModelInput,
    prob: &[f32],
    params: &MetricParams,
) -> FrameMetrics {
    // Measure only the valid (unpadded) region.
    let (vw, vh) = (input.valid_width, input.valid_height);
    // Unpadded maps (the common case) are measured in place; only padded ones are cropped into a copy.
    let valid: std::borrow::Cow<'_, [f32]> = if vw == input.width && vh == input.height {
        std::borrow::Cow::Borrowed(prob)
    } else {
        prob.chunks_exact(input.width)
            .take(vh)
            .flat_map(|row| row[..vw].iter().copied())
            .collect()
    };
    let m = measure(&valid, vw, vh, input.um_per_px, params);
    FrameMetrics {
        stream_id: frame.stream.stream_id.clone(),
        patient_id: frame.stream.patient_id.clone(),
        site: frame.stream.site.clone(),
        frame_index: frame.index,
        pts_ns: frame.pts_ns,
        event_time_ms: frame.event_time_ms(),
        width: frame.width,
        height: frame.height,
        um_per_px: frame.stream.um_per_px,
        capillary_count: m.capillary_count,
        area_fraction: m.area_fraction,
        density_per_mm2: m.density_per_mm2,
        mean_probability: m.mean_probability,
        field_area_mm2: m.field_area_mm2,
    }
}

/// Extension trait: segment a stream of frames.
pub trait Segment<'scope> {
    /// Segments every frame with `segmenter` and emits its measures at the frame's time.
    fn segment(
        self,
        segmenter: Segmenter,
        params: SegmentParams,
        shared: SegmentShared,
    ) -> Stream<'scope, u64, Vec<FrameMetrics>>;
}

impl<'scope> Segment<'scope> for Stream<'scope, u64, Vec<Frame>> {
    fn segment(
        self,
        mut segmenter: Segmenter,
        params: SegmentParams,
        shared: SegmentShared,
    ) -> Stream<'scope, u64, Vec<FrameMetrics>> {
        let batch_size = params.batch_size.max(1);
        self.unary_frontier(Pipeline, "Segment", move |_, _| {
            let mut buffered: Vec<(Capability<u64>, Frame)> = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    for batch in data {
                        buffered.extend(batch.drain(..).map(|frame| (cap.clone(), frame)));
                    }
                });
                loop {
                    let passed = buffered
                        .first()
                        .is_some_and(|(cap, _)| !frontier.less_equal(cap.time()));
                    if buffered.is_empty() || (buffered.len() < batch_size && !passed) {
                        break;
                    }
                    let take = buffered.len().min(batch_size);
                    let batch: Vec<(Capability<u64>, Frame)> = buffered.drain(..take).collect();
                    shared
                        .pending
                        .set(shared.pending.get().saturating_sub(batch.len()));
                    let inputs: Vec<ModelInput> = batch
                        .iter()
                        .map(|(_, f)| preprocess(f, &params.input))
                        .collect();
                    // Same-sized inputs are inferred together; a batch mixing sizes runs as one call per size.
                    let mut done = vec![false; batch.len()];
                    for i in 0..batch.len() {
                        if done[i] {
                            continue;
                        }
                        let group: Vec<usize> = (i..batch.len())
                            .filter(|&j| {
                                !done[j]
                                    && inputs[j].width == inputs[i].width
                                    && inputs[j].height == inputs[i].height
                            })
                            .collect();
                        let refs: Vec<&ModelInput> = group.iter().map(|&j| &inputs[j]).collect();
                        match segmenter.run(&refs) {
                            Ok(probs) => {
                                for (&j, prob) in group.iter().zip(probs) {
                                    let (cap, frame) = &batch[j];
                                    let row =
                                        frame_metrics(frame, &inputs[j], &prob, &params.metrics);
                                    output.session(cap).give(row);
                                }
                            }
                            Err(error) => {
                                for &j in &group {
                                    let frame = &batch[j].1;
                                    shared.errors.borrow_mut().push(format!(
                                        "stream {}: frame {}: {error}",
                                        frame.stream.stream_id, frame.index
                                    ));
                                }
                            }
                        }
                        for &j in &group {
                            done[j] = true;
                        }
                    }
                }
            }
        })
    }
}
