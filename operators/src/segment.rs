//! Stabilised frames → segmented frames: batched ONNX inference at the configured rate, then per-frame measures
//! (count, area, TVD, diameter) and the vessel map flow analysis samples.
//!
//! Frames stay on the worker that decoded them (pipeline channel: raw pixels never cross workers or processes). The
//! segmentation rate is explicit: every frame, every Nth frame, or the mean of each block of N stabilised frames
//! (less noise and red-cell texture, so faint vessels show, at 1/N of the inference cost); every frame still passes
//! on to flow analysis, in stream order. Frames are buffered until a batch of jobs is full, event time moves past
//! them or the oldest has waited `max_wait`; the batch then goes to the worker's [`InferenceThreads`], and the
//! operator measures it when a thread wakes it, while the worker goes on with other frames. The shared `pending`
//! counter (frames on their way here plus inference jobs not yet measured) lets the input loop hold back decoding
//! (timely itself has no backpressure between operators).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

use crate::components::kept_components;
use crate::flow::{background_points, FlowMap};
use crate::inference::{Finished, InferenceThreads};
use crate::metrics::{measure, MetricParams};
use crate::model::InputSpec;
use crate::preprocess::{preprocess_with_green, ModelInput, Reuse};
use crate::records::FrameMetrics;
use crate::segmenter::Segmenter;
use crate::stabilise::StableFrame;
use crate::vessels::{vessel_map, VesselParams};

/// How often frames are segmented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentationMode {
    /// Every frame: best accuracy, full inference cost.
    #[default]
    EveryFrame,
    /// Frames whose index is a multiple of `n`: 1/n of the cost, each row stands for n frames.
    EveryNth,
    /// The mean of each block of `n` stabilised frames: 1/n of the cost, less noise.
    BlockMean,
}

/// The `[segmentation]` table of the capflow config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentationConfig {
    /// `every_frame`, `every_nth` or `block_mean`.
    pub mode: SegmentationMode,
    /// N for `every_nth` and `block_mean`.
    pub n: u32,
}

impl Default for SegmentationConfig {
    fn default() -> Self {
        SegmentationConfig {
            mode: SegmentationMode::EveryFrame,
            n: 5,
        }
    }
}

impl SegmentationConfig {
    /// Human-readable problems (empty = valid), each naming the key.
    pub fn problems(&self) -> Vec<String> {
        if self.mode != SegmentationMode::EveryFrame && !(1..=1000).contains(&self.n) {
            vec![format!(
                "segmentation.n = {} must be between 1 and 1000 for mode {}",
                self.n,
                self.label()
            )]
        } else {
            Vec::new()
        }
    }

    /// The mode's name as written in the `segmentation` column.
    pub fn label(&self) -> &'static str {
        match self.mode {
            SegmentationMode::EveryFrame => "every_frame",
            SegmentationMode::EveryNth => "every_nth",
            SegmentationMode::BlockMean => "block_mean",
        }
    }

    /// Frames one row stands for.
    pub fn frames_per_row(&self) -> u32 {
        match self.mode {
            SegmentationMode::EveryFrame => 1,
            _ => self.n.max(1),
        }
    }
}

/// Everything the segment operator needs besides the session.
#[derive(Clone, Debug)]
pub struct SegmentParams {
    /// The model's input contract.
    pub input: InputSpec,
    /// Post-processing thresholds.
    pub metrics: MetricParams,
    /// Vessel geometry settings (TVD, diameters).
    pub vessels: VesselParams,
    /// Frames inferred together (same size only).
    pub batch_size: usize,
    /// Longest an inference job waits (wall clock) for its batch to fill, like a stream muxer's push timeout; `None`:
    /// until the batch is full or event time moves on. Live streams at a low segmentation rate need it: with windows
    /// of 10 s, event time moves on only every 10 s.
    pub max_wait: Option<std::time::Duration>,
    /// Segmentation rate.
    pub segmentation: SegmentationConfig,
}

/// Shared per-worker state between the input loop and the operator.
#[derive(Clone, Debug, Default)]
pub struct SegmentShared {
    /// Frames sent into the dataflow and not yet seen by the segment operator, plus inference jobs waiting in it.
    pub pending: Rc<Cell<usize>>,
    /// Errors met while segmenting that concern no stream in particular, one line each.
    pub errors: Rc<RefCell<Vec<String>>>,
    /// Each model call since the worker last took them: frames in the batch and how long inference took.
    /// The worker drains it into the run's metrics (`/metrics`' latency and batch-size histograms).
    pub inferences: Rc<RefCell<Vec<(usize, std::time::Duration)>>>,
    /// Streams whose frames could not be segmented (ONNX Runtime failed, or the model's output held NaN or infinite
    /// values), by stream id: the input loop fails and stops each one.
    pub failed_streams: Rc<RefCell<BTreeMap<String, InferenceFailure>>>,
}

/// Why a stream's frames could not be segmented: the first failure, and how many frames failed so far.
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceFailure {
    /// Patient of the stream.
    pub patient_id: String,
    /// Recording site of the stream.
    pub site: String,
    /// Index of the first frame that failed.
    pub first_frame: u64,
    /// Event time of that frame, ms since the Unix epoch.
    pub first_event_ms: i64,
    /// Frames that failed so far (no `frames` row is written for them).
    pub frames: u64,
    /// The first error, naming the model.
    pub error: String,
}

impl std::fmt::Display for InferenceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "segmentation failed at frame {}, so the stream was stopped (no rows for its frames from there): {}",
            self.first_frame, self.error
        )
    }
}

/// A stabilised frame after segmentation: its row and vessel map when it was segmented.
#[derive(Clone, Debug)]
pub struct Analysed {
    /// The frame, its working plane and drift.
    pub stable: StableFrame,
    /// The `frames` table row, for segmented frames (the first frame of a block in `block_mean`).
    pub row: Option<FrameMetrics>,
    /// The vessels found, for flow analysis (same frames as `row`).
    pub map: Option<Arc<FlowMap>>,
}

/// The model input of a stabilised frame, reusing the green plane the stabiliser already resized and `buffer` (a
/// spent input's planes, or empty).
fn preprocess(stable: &StableFrame, spec: &InputSpec, buffer: Vec<f32>) -> ModelInput {
    let f = &stable.frame;
    preprocess_with_green(
        &f.data,
        f.format,
        f.width as usize,
        f.height as usize,
        f.um_per_px(),
        spec,
        Reuse {
            green: Some(&stable.luma),
            buffer,
        },
    )
}

/// The valid (unpadded) region of a model-sized plane.
fn valid_region<'a>(input: &ModelInput, prob: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
    let (vw, vh) = (input.valid_width, input.valid_height);
    if vw == input.width && vh == input.height {
        std::borrow::Cow::Borrowed(prob)
    } else {
        // Sized once: a flat_map collect cannot know its length and regrows (copying) several times per frame.
        let mut valid = Vec::with_capacity(vw * vh);
        for row in prob.chunks_exact(input.width).take(vh) {
            valid.extend_from_slice(&row[..vw]);
        }
        std::borrow::Cow::Owned(valid)
    }
}

/// Measures one segmented frame (or block, `frames` long, starting at `first`) from its probability plane.
pub fn frame_metrics(
    frames: &[StableFrame],
    input: &ModelInput,
    prob: &[f32],
    params: &SegmentParams,
) -> (FrameMetrics, Arc<FlowMap>) {
    let first = &frames[0];
    let frame = &first.frame;
    let (vw, vh) = (input.valid_width, input.valid_height);
    let valid = valid_region(input, prob);
    let m = measure(&valid, vw, vh, input.um_per_px, &params.metrics);
    // Vessels for TVD: every component above the noise floor, large venules included (no upper area limit).
    let raw: Vec<bool> = valid
        .iter()
        .map(|&p| p > params.metrics.threshold)
        .collect();
    let px_um2 = input.um_per_px * input.um_per_px;
    let mask = kept_components(&raw, &valid, vw, vh, |c| {
        c.area_px as f64 * px_um2 >= params.metrics.min_area_um2
    });
    let vessels = vessel_map(&mask, vw, vh, input.um_per_px, &params.vessels);
    let v = vessels.measures(&params.vessels);
    let background = background_points(&raw, vw, vh, 8, 3);
    let map = Arc::new(FlowMap {
        vessels,
        background,
        shift: [first.shift.dx, first.shift.dy],
    });
    let n = frames.len() as f64;
    let mean = |f: fn(&StableFrame) -> f64| frames.iter().map(f).sum::<f64>() / n;
    let [drift_x_px, drift_y_px] = first.drift_frame_px();
    let row = FrameMetrics {
        stream_id: frame.stream.stream_id.clone(),
        patient_id: frame.stream.patient_id.clone(),
        site: frame.stream.site.clone(),
        frame_index: frame.index,
        pts_ns: frame.pts_ns,
        event_time_ms: frame.event_time_ms(),
        width: frame.source_width,
        height: frame.source_height,
        um_per_px: frame.stream.um_per_px,
        segmentation: params.segmentation.label().to_owned(),
        segmented_frames: params.segmentation.frames_per_row(),
        capillary_count: m.capillary_count,
        capillary_density_per_mm2: m.density_per_mm2,
        area_fraction: m.area_fraction,
        tvd_mm_per_mm2: v.tvd_mm_per_mm2,
        tvd_small_mm_per_mm2: v.tvd_small_mm_per_mm2,
        mean_diameter_um: v.mean_diameter_um,
        mean_probability: m.mean_probability,
        field_area_mm2: m.field_area_mm2,
        drift_x_px,
        drift_y_px,
        mean_luma: mean(|s| s.quality.mean_luma),
        saturated_fraction: mean(|s| s.quality.saturated_fraction),
        dark_fraction: mean(|s| s.quality.dark_fraction),
        focus: mean(|s| s.quality.focus),
    };
    (row, map)
}

/// The mean of model inputs of one size, each moved by its integer offset so the content lines up with the first.
///
/// `offsets[i]` is where frame `i`'s content sits relative to the first frame (its drift minus the first's, in
/// model pixels); samples that fall outside the valid region are clamped to its edge.
pub fn block_mean(inputs: &[ModelInput], offsets: &[(isize, isize)]) -> ModelInput {
    let base = &inputs[0];
    let (w, h) = (base.width, base.height);
    let (vw, vh) = (base.valid_width as isize, base.valid_height as isize);
    let planes = base.data.len() / (w * h).max(1);
    let mut out = base.clone();
    out.data.iter_mut().for_each(|v| *v = 0.0);
    for (input, &(ox, oy)) in inputs.iter().zip(offsets) {
        for c in 0..planes {
            let src = &input.data[c * w * h..(c + 1) * w * h];
            let dst = &mut out.data[c * w * h..(c + 1) * w * h];
            for y in 0..h as isize {
                let sy = (y + oy).clamp(0, vh - 1) as usize;
                for x in 0..w as isize {
                    let sx = (x + ox).clamp(0, vw - 1) as usize;
                    dst[y as usize * w + x as usize] += src[sy * w + sx];
                }
            }
        }
    }
    let n = inputs.len() as f32;
    out.data.iter_mut().for_each(|v| *v /= n);
    out
}

/// Frames that leave the operator together, in stream order, and what to infer for them.
struct Unit {
    cap: Capability<u64>,
    frames: Vec<StableFrame>,
    job: Option<ModelInput>,
    /// When the unit started waiting for a batch.
    queued: Instant,
}

impl Unit {
    /// A unit whose model input (if any) is already made: its frames let go of their decoded pixels here, the one
    /// place every segmentation mode passes through.
    fn new(cap: Capability<u64>, mut frames: Vec<StableFrame>, job: Option<ModelInput>) -> Unit {
        frames.iter_mut().for_each(StableFrame::release_pixels);
        Unit {
            cap,
            frames,
            job,
            queued: Instant::now(),
        }
    }
}

fn block_unit(cap: Capability<u64>, frames: Vec<StableFrame>, spec: &InputSpec) -> Unit {
    let inputs: Vec<ModelInput> = frames
        .iter()
        .map(|s| preprocess(s, spec, Vec::new()))
        .collect();
    let same_size = inputs
        .iter()
        .all(|i| (i.width, i.height) == (inputs[0].width, inputs[0].height));
    let job = if same_size {
        let (x0, y0) = (frames[0].shift.dx, frames[0].shift.dy);
        let offsets: Vec<(isize, isize)> = frames
            .iter()
            .map(|s| {
                (
                    (s.shift.dx - x0).round() as isize,
                    (s.shift.dy - y0).round() as isize,
                )
            })
            .collect();
        block_mean(&inputs, &offsets)
    } else {
        inputs.into_iter().next().expect("a block has frames")
    };
    Unit::new(cap, frames, Some(job))
}

/// Extension trait: segment a stream of stabilised frames.
pub trait Segment<'scope> {
    /// Segments frames at the configured rate with `segmenters` (one inference thread each) and passes every frame
    /// on, in order.
    fn segment(
        self,
        segmenters: Vec<Segmenter>,
        params: SegmentParams,
        shared: SegmentShared,
    ) -> Stream<'scope, u64, Vec<Analysed>>;
}

/// Batches a worker may have at its inference threads at once: one running on each and one queued behind them, so
/// no thread waits for the worker between batches.
fn max_in_flight(threads: usize) -> usize {
    threads + 1
}

/// Planes of model inputs already measured, kept for the next frames' inputs (at most `keep`; more are freed).
struct Spare {
    planes: Vec<Vec<f32>>,
    keep: usize,
}

impl Spare {
    fn new(keep: usize) -> Spare {
        Spare {
            planes: Vec::with_capacity(keep),
            keep,
        }
    }

    /// A kept buffer, or an empty one.
    fn take(&mut self) -> Vec<f32> {
        self.planes.pop().unwrap_or_default()
    }

    fn keep(&mut self, planes: Vec<f32>) {
        if self.planes.len() < self.keep && planes.capacity() > 0 {
            self.planes.push(planes);
        }
    }
}

/// Units in stream order whose batch is at the inference thread, or that wait behind one (no jobs, `finished` set).
struct Flight {
    units: Vec<Unit>,
    had_job: Vec<bool>,
    finished: Option<Finished>,
}

impl<'scope> Segment<'scope> for Stream<'scope, u64, Vec<StableFrame>> {
    fn segment(
        self,
        segmenters: Vec<Segmenter>,
        params: SegmentParams,
        shared: SegmentShared,
    ) -> Stream<'scope, u64, Vec<Analysed>> {
        let batch_size = params.batch_size.max(1);
        let mode = params.segmentation;
        let max_wait = params.max_wait;
        let scope = self.scope();
        self.unary_frontier(Pipeline, "Segment", move |_, info| {
            // Wakes the operator when the oldest waiting job's time is up, even if nothing else happens.
            let activator = scope.activator_for(Rc::clone(&info.address));
            // Wakes it from the inference thread when a batch is done.
            let wake = scope.worker().sync_activator_for(info.address.to_vec());
            let mut inference = InferenceThreads::spawn(
                segmenters,
                // `infer:<worker>.<thread>`, like timely's `timely:work-<worker>`.
                format!("infer:{}", scope.index()),
                move || {
                    // Fails only once the worker has dropped the dataflow; then nobody waits for the batch.
                    let _ = wake.activate();
                },
            )
            .unwrap_or_else(|e| {
                panic!(
                    "could not start the inference thread of worker {}: {e}",
                    scope.index()
                )
            });
            let mut flights: VecDeque<Flight> = VecDeque::new();
            let mut buffered: Vec<Unit> = Vec::new();
            // Planes of inputs already measured, for the next frames' inputs: as many as can be out at once.
            let mut spare = Spare::new(max_in_flight(inference.threads()) * batch_size + 1);
            // Open blocks of `block_mean`, per stream: the capability of their first frame and the frames so far.
            let mut blocks: HashMap<String, (Capability<u64>, Vec<StableFrame>)> = HashMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    for batch in data {
                        for stable in batch.drain(..) {
                            // `pending` counts inference jobs waiting here, not frames: frames that are only
                            // passed on, or held for a block, must not hold back the input (a batch of n-th
                            // frames spans n × batch_size frames).
                            shared.pending.set(shared.pending.get().saturating_sub(1));
                            let unit = match mode.mode {
                                SegmentationMode::EveryFrame => {
                                    let job = preprocess(&stable, &params.input, spare.take());
                                    Some(Unit::new(cap.clone(), vec![stable], Some(job)))
                                }
                                SegmentationMode::EveryNth => {
                                    let job = stable
                                        .frame
                                        .index
                                        .checked_rem(mode.n.max(1) as u64)
                                        .filter(|r| *r == 0)
                                        .map(|_| preprocess(&stable, &params.input, spare.take()));
                                    Some(Unit::new(cap.clone(), vec![stable], job))
                                }
                                SegmentationMode::BlockMean => {
                                    let id = stable.frame.stream.stream_id.clone();
                                    let entry = blocks
                                        .entry(id.clone())
                                        .or_insert_with(|| (cap.clone(), Vec::new()));
                                    entry.1.push(stable);
                                    if entry.1.len() >= mode.n.max(1) as usize {
                                        let (held, frames) =
                                            blocks.remove(&id).expect("block just filled");
                                        Some(block_unit(held, frames, &params.input))
                                    } else {
                                        None
                                    }
                                }
                            };
                            if let Some(unit) = unit {
                                if unit.job.is_some() {
                                    shared.pending.set(shared.pending.get() + 1);
                                }
                                buffered.push(unit);
                            }
                        }
                    }
                });
                // At the end of input, partial blocks are segmented as they are (nothing is dropped).
                if frontier.is_empty() && !blocks.is_empty() {
                    let mut open: Vec<_> = blocks.drain().collect();
                    open.sort_by(|a, b| a.0.cmp(&b.0));
                    for (_, (held, frames)) in open {
                        shared.pending.set(shared.pending.get() + 1);
                        buffered.push(block_unit(held, frames, &params.input));
                    }
                }
                // Batches done since the last call, matched to their flights in order.
                while let Some(finished) = inference.try_finished() {
                    let flight = flights
                        .iter_mut()
                        .find(|f| f.finished.is_none())
                        .expect("every batch at the inference thread has its flight");
                    flight.finished = Some(finished);
                }
                // Hand full batches on first, so the thread works while this worker measures the finished ones.
                loop {
                    if buffered.is_empty() {
                        break;
                    }
                    let jobs = buffered.iter().filter(|u| u.job.is_some()).count();
                    let take = if buffered[0].job.is_none() {
                        // Leading frames without inference leave at once, in order.
                        buffered.iter().take_while(|u| u.job.is_none()).count()
                    } else if inference.in_flight() >= max_in_flight(inference.threads()) {
                        // The threads have enough; the operator runs again when a batch is done.
                        break;
                    } else if jobs >= batch_size {
                        let mut seen = 0;
                        buffered
                            .iter()
                            .position(|u| {
                                seen += usize::from(u.job.is_some());
                                seen == batch_size
                            })
                            .map_or(buffered.len(), |i| i + 1)
                    } else if !frontier.less_equal(buffered[0].cap.time()) {
                        buffered
                            .iter()
                            .take_while(|u| !frontier.less_equal(u.cap.time()))
                            .count()
                    } else if max_wait.is_some_and(|wait| buffered[0].queued.elapsed() >= wait) {
                        // The oldest job has waited long enough: a partial batch of what is here.
                        buffered.len()
                    } else {
                        if let Some(wait) = max_wait {
                            activator
                                .activate_after(wait.saturating_sub(buffered[0].queued.elapsed()));
                        }
                        break;
                    };
                    let mut units: Vec<Unit> = buffered.drain(..take).collect();
                    let jobs: Vec<Option<ModelInput>> =
                        units.iter_mut().map(|u| u.job.take()).collect();
                    let had_job: Vec<bool> = jobs.iter().map(Option::is_some).collect();
                    let finished = if had_job.iter().any(|&h| h) {
                        inference.submit(jobs);
                        None
                    } else {
                        Some(Finished {
                            jobs,
                            probs: units.iter().map(|_| None).collect(),
                            calls: Vec::new(),
                        })
                    };
                    flights.push_back(Flight {
                        units,
                        had_job,
                        finished,
                    });
                }
                // Finished flights leave in order: measured, then passed on with every frame they hold.
                while flights.front().is_some_and(|f| f.finished.is_some()) {
                    let flight = flights.pop_front().expect("front checked");
                    let finished = flight.finished.expect("front checked");
                    shared.inferences.borrow_mut().extend(finished.calls);
                    let jobs = flight.had_job.iter().filter(|&&h| h).count();
                    shared
                        .pending
                        .set(shared.pending.get().saturating_sub(jobs));
                    let results = finished
                        .jobs
                        .into_iter()
                        .zip(finished.probs)
                        .zip(&flight.had_job);
                    for (unit, ((job, probs), &had_job)) in flight.units.into_iter().zip(results) {
                        let (mut row, mut map) = match (job, probs) {
                            (Some(job), Some(Ok(prob))) if had_job => {
                                let (row, map) = frame_metrics(&unit.frames, &job, &prob, &params);
                                spare.keep(job.data);
                                (Some(row), Some(map))
                            }
                            (_, Some(Err(error))) if had_job => {
                                record_failure(&shared, &unit, error);
                                (None, None)
                            }
                            _ => (None, None),
                        };
                        let mut session = output.session(&unit.cap);
                        for stable in unit.frames {
                            session.give(Analysed {
                                stable,
                                row: row.take(),
                                map: map.take(),
                            });
                        }
                    }
                }
            }
        })
    }
}

/// Notes that a unit's frames could not be segmented: the input loop stops its stream.
fn record_failure(shared: &SegmentShared, unit: &Unit, error: String) {
    let frame = &unit.frames[0].frame;
    tracing::warn!(stream = %frame.stream.stream_id, frame = frame.index, error = %error, "segmentation failed");
    shared
        .failed_streams
        .borrow_mut()
        .entry(frame.stream.stream_id.clone())
        .or_insert_with(|| InferenceFailure {
            patient_id: frame.stream.patient_id.clone(),
            site: frame.stream.site.clone(),
            first_frame: frame.index,
            first_event_ms: frame.event_time_ms(),
            frames: 0,
            error,
        })
        .frames += 1;
}

#[cfg(test)]
mod tests {
    use super::Spare;

    #[test]
    fn spare_planes_are_handed_out_again_and_bounded() {
        let mut spare = Spare::new(2);
        assert!(
            spare.take().is_empty(),
            "nothing kept yet: a new, empty buffer"
        );
        let planes: Vec<Vec<f32>> = (0..3).map(|_| Vec::with_capacity(1000)).collect();
        let addresses: Vec<*const f32> = planes.iter().map(|p| p.as_ptr()).collect();
        for p in planes {
            spare.keep(p);
        }
        spare.keep(Vec::new());
        assert_eq!(
            spare.planes.len(),
            2,
            "at most `keep`, and no empty buffers"
        );
        let again = spare.take();
        assert!(again.capacity() >= 1000 && addresses[..2].contains(&again.as_ptr()));
    }
}
