//! Segmented frames → stream records: each segmented frame's row, plus one flow sample per sliding window of
//! consecutive frames of a stream.
//!
//! Flow needs every frame (red cells move between frames), not only the segmented ones, so this operator sees all of
//! them, in stream order, on the worker that decoded them. A window starts every `hop_frames` frames with the latest
//! vessel map and samples each frame's stabilised plane along its centre lines until it holds `window_frames`
//! frames; the sample is then emitted at that last frame's time. Windows shorter than that at the end of a stream
//! are not reported (the duration score already flags short clips).

use std::collections::HashMap;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

use crate::flow::{FlowConfig, FlowMap, FlowWindow};
use crate::records::{FlowSample, StreamRecord};
use crate::segment::Analysed;

/// One open flow window and the timestamp of its first frame.
struct Open {
    window: FlowWindow,
    first_pts_ns: u64,
}

/// Per-stream flow state.
#[derive(Default)]
struct StreamFlow {
    map: Option<Arc<FlowMap>>,
    /// Index of the first frame that had a map: windows start every hop from there.
    origin: Option<u64>,
    open: Vec<Open>,
}

/// Flow analysis of every stream a worker sees, fed frame by frame in stream order.
pub struct FlowAnalyser {
    config: FlowConfig,
    streams: HashMap<String, StreamFlow>,
}

impl FlowAnalyser {
    /// An analyser with `config`.
    pub fn new(config: FlowConfig) -> Self {
        FlowAnalyser {
            config,
            streams: HashMap::new(),
        }
    }

    /// Feeds one frame; returns the frame's row (if segmented) and any flow sample that completed with it.
    pub fn push(&mut self, analysed: Analysed) -> Vec<StreamRecord> {
        let mut out = Vec::new();
        let Analysed { stable, row, map } = analysed;
        if let Some(row) = row {
            out.push(StreamRecord::Frame(row));
        }
        if !self.config.enabled {
            return out;
        }
        let frame = &stable.frame;
        let state = self
            .streams
            .entry(frame.stream.stream_id.clone())
            .or_default();
        if let Some(map) = map {
            state.map = Some(map);
        }
        let Some(map) = &state.map else {
            return out;
        };
        let origin = *state.origin.get_or_insert(frame.index);
        if (frame.index - origin).checked_rem(self.config.hop_frames.max(1) as u64) == Some(0) {
            state.open.push(Open {
                window: FlowWindow::new(Arc::clone(map), frame.index),
                first_pts_ns: frame.pts_ns,
            });
        }
        for open in &mut state.open {
            open.window.push(
                &stable.luma,
                stable.luma_width,
                stable.luma_height,
                [stable.shift.dx, stable.shift.dy],
            );
        }
        let full = self.config.window_frames as usize;
        let (done, open): (Vec<Open>, Vec<Open>) = state
            .open
            .drain(..)
            .partition(|o| o.window.frames() >= full);
        state.open = open;
        for o in done {
            let span_s = frame.pts_ns.saturating_sub(o.first_pts_ns) as f64 / 1e9;
            let fps = if span_s > 0.0 {
                (o.window.frames() - 1) as f64 / span_s
            } else {
                25.0
            };
            let result = o.window.analyse(fps, &self.config);
            out.push(StreamRecord::Flow(FlowSample {
                stream_id: frame.stream.stream_id.clone(),
                patient_id: frame.stream.patient_id.clone(),
                site: frame.stream.site.clone(),
                first_frame: o.window.first_frame,
                last_frame: frame.index,
                event_time_ms: frame.event_time_ms(),
                n_segments: result.segments.len() as u32,
                ppv_percent: result.ppv_percent,
                pvd_mm_per_mm2: result.pvd_mm_per_mm2,
                mfi: result.mfi,
                rbc_velocity_um_s: result.rbc_velocity_um_s,
            }));
        }
        out
    }
}

/// Extension trait: flow analysis over a stream of segmented frames.
pub trait AnalyseFlow<'scope> {
    /// Emits every segmented frame's row and each completed flow window's sample.
    fn analyse_flow(self, config: FlowConfig) -> Stream<'scope, u64, Vec<StreamRecord>>;
}

impl<'scope> AnalyseFlow<'scope> for Stream<'scope, u64, Vec<Analysed>> {
    fn analyse_flow(self, config: FlowConfig) -> Stream<'scope, u64, Vec<StreamRecord>> {
        let mut analyser = FlowAnalyser::new(config);
        self.unary(Pipeline, "AnalyseFlow", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let mut session = output.session(&cap);
                    for batch in data {
                        for analysed in batch.drain(..) {
                            for record in analyser.push(analysed) {
                                session.give(record);
                            }
                        }
                    }
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use capflow_ingest::{Frame, PixelFormat, StreamInfo};

    use super::*;
    use crate::drift::Shift;
    use crate::quality::FrameQuality;
    use crate::records::FrameMetrics;
    use crate::stabilise::StableFrame;
    use crate::vessels::{VesselMap, VesselSegment};

    /// Frame `i` of a still 32×32 field (no flow anywhere), with a row and a map on frame 0 only.
    fn analysed(info: &Arc<StreamInfo>, i: u64) -> Analysed {
        let frame = Frame {
            stream: Arc::clone(info),
            index: i,
            pts_ns: i * 40_000_000,
            width: 32,
            height: 32,
            source_width: 32,
            source_height: 32,
            format: PixelFormat::Gray8,
            data: vec![100; 32 * 32].into(),
        };
        let map = FlowMap {
            vessels: VesselMap {
                width: 32,
                height: 32,
                um_per_px: 2.0,
                segments: vec![VesselSegment {
                    points: (4..28).map(|x| (x, 16)).collect(),
                    length_um: 48.0,
                    diameter_um: 6.0,
                }],
            },
            background: vec![(4, 4), (20, 4), (4, 28)],
            shift: [0.0, 0.0],
        };
        let mut luma = vec![100.0f32; 32 * 32];
        for x in 0..32 {
            luma[16 * 32 + x] = 40.0 + (x % 5) as f32;
        }
        Analysed {
            stable: StableFrame {
                frame,
                luma,
                luma_width: 32,
                luma_height: 32,
                luma_um_per_px: 2.0,
                shift: Shift::default(),
                quality: FrameQuality::default(),
            },
            row: (i == 0).then(|| FrameMetrics {
                stream_id: "s".into(),
                frame_index: 0,
                ..Default::default()
            }),
            map: (i == 0).then(|| Arc::new(map)),
        }
    }

    #[test]
    fn sliding_flow_windows_emit_one_sample_per_hop_once_full() {
        let info = Arc::new(StreamInfo::new("s", "p", "site", 2.0));
        let mut analyser = FlowAnalyser::new(FlowConfig::default());
        let mut rows = 0;
        let mut samples = Vec::new();
        for i in 0..100 {
            for record in analyser.push(analysed(&info, i)) {
                match record {
                    StreamRecord::Frame(_) => rows += 1,
                    StreamRecord::Flow(f) => samples.push(f),
                    StreamRecord::Edge(_) => unreachable!("the analyser marks no stream edge"),
                }
            }
        }
        assert_eq!(rows, 1, "the one segmented frame's row passes through");
        // Windows of 50 frames every 25: frames 0-49, 25-74, 50-99.
        let spans: Vec<(u64, u64)> = samples
            .iter()
            .map(|f| (f.first_frame, f.last_frame))
            .collect();
        assert_eq!(spans, [(0, 49), (25, 74), (50, 99)]);
        for f in &samples {
            assert_eq!(
                (f.ppv_percent, f.mfi),
                (0.0, 0.0),
                "a still field has no flow"
            );
            assert_eq!(f.event_time_ms, f.last_frame as i64 * 40);
        }
        // With flow analysis off only the rows pass.
        let mut off = FlowAnalyser::new(FlowConfig {
            enabled: false,
            ..Default::default()
        });
        let out: Vec<StreamRecord> = (0..60).flat_map(|i| off.push(analysed(&info, i))).collect();
        assert_eq!(out.len(), 1);
    }
}
