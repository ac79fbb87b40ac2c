//! The segment operator inside a timely dataflow, on generated frames with known ground truth, against the shipped
//! classical model and the real ONNX Runtime (`make setup` provides it; ORT_DYLIB_PATH points at it).

use std::sync::{Arc, Mutex};

use capflow_ingest::{Frame, PixelFormat, StreamInfo};
use capflow_operators::model::Model;
use capflow_operators::preprocess::preprocess;
use capflow_operators::records::FrameMetrics;
use capflow_operators::segment::{frame_metrics, Analysed, SegmentationMode};
use capflow_operators::stabilise::Stabiliser;
use capflow_operators::vessels::VesselParams;
use capflow_operators::{
    ort_environment, Segment, SegmentParams, SegmentShared, SegmentationConfig, Segmenter,
    Stabilise,
};
use capflow_synth::{Renderer, SynthSpec};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Inspect;
use timely::dataflow::InputHandle;

mod common;
use common::{classical_model, ort_library, skin_frame};

#[test]
fn segmenting_in_a_dataflow_matches_direct_calls_and_ground_truth() {
    let model = classical_model();
    let env = ort_environment(&ort_library())
        .expect("ONNX Runtime: run `make setup` or set ORT_DYLIB_PATH");

    let mut spec = SynthSpec::preset("skin").unwrap();
    (spec.width, spec.height, spec.frames, spec.seed) = (480, 320, 5, 9);
    let mut renderer = Renderer::new(&spec).unwrap();
    let info = Arc::new(StreamInfo::new("s", "p", "forearm", spec.um_per_px));
    let mut truth = Vec::new();
    let frames: Vec<Frame> = (0..spec.frames)
        .map(|i| {
            let r = renderer.render(i);
            truth.push(r.truth.capillary_count);
            Frame {
                stream: Arc::clone(&info),
                index: i as u64,
                pts_ns: spec.pts_ns(i),
                width: spec.width,
                height: spec.height,
                source_width: spec.width,
                source_height: spec.height,
                format: PixelFormat::Rgb8,
                data: r.rgb.into(),
            }
        })
        .collect();
    let params = SegmentParams {
        input: model.card.input.clone(),
        metrics: model.card.metric_params(),
        vessels: VesselParams::default(),
        batch_size: 2,
        max_wait: None,
        segmentation: SegmentationConfig::default(),
    };

    // Direct calls, one frame at a time.
    let mut segmenter = Segmenter::new(&env, &model, 1).unwrap();
    let mut stabiliser = Stabiliser::default();
    let direct: Vec<FrameMetrics> = frames
        .iter()
        .map(|f| {
            let stable = stabiliser.stabilise(f.clone(), &params.input);
            let input = preprocess(f, &params.input);
            let prob = segmenter.run(&[&input]).unwrap().remove(0);
            frame_metrics(&[stable], &input, &prob, &params).0
        })
        .collect();

    // The same frames through the operators, batched by two, with one and with two inference threads (batches
    // dealt out in turn must still leave in stream order).
    for threads in [1, 2] {
        let via_dataflow = run_dataflow(&env, &model, &params, &frames, threads);
        assert_eq!(via_dataflow.len(), frames.len(), "every frame passes on");
        assert!(
            via_dataflow.iter().all(|a| a.stable.frame.data.is_empty()),
            "decoded pixels are let go once the model input is made"
        );
        let order: Vec<u64> = via_dataflow.iter().map(|a| a.stable.frame.index).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{threads} threads: {order:?}"
        );
        let rows: Vec<FrameMetrics> = via_dataflow.into_iter().filter_map(|a| a.row).collect();
        assert_eq!(
            rows, direct,
            "batched dataflow results equal one-by-one results ({threads} inference threads)"
        );
    }

    for (row, &expected) in direct.iter().zip(&truth) {
        let error = (row.capillary_count as f64 - expected as f64).abs();
        assert!(
            error <= 0.25 * expected as f64 + 1.0,
            "frame {}: found {} of {expected}",
            row.frame_index,
            row.capillary_count
        );
        assert!(row.area_fraction > 0.0 && row.mean_probability > 0.5);
        assert!(row.tvd_mm_per_mm2 > 0.0 && row.mean_diameter_um > 0.0);
        assert_eq!(
            (row.segmentation.as_str(), row.segmented_frames),
            ("every_frame", 1)
        );
    }

    // Every 2nd frame, and the mean of blocks of 2 (the last block holds one frame): rows for frames 0, 2, 4;
    // every frame still passes on in order.
    for mode in [SegmentationMode::EveryNth, SegmentationMode::BlockMean] {
        let params = SegmentParams {
            segmentation: SegmentationConfig { mode, n: 2 },
            ..params.clone()
        };
        let out = run_dataflow(&env, &model, &params, &frames, 1);
        let order: Vec<u64> = out.iter().map(|a| a.stable.frame.index).collect();
        assert_eq!(order, [0, 1, 2, 3, 4], "{mode:?}");
        assert!(
            out.iter().all(|a| a.stable.frame.data.is_empty()),
            "{mode:?}"
        );
        let rows: Vec<&FrameMetrics> = out.iter().filter_map(|a| a.row.as_ref()).collect();
        let indices: Vec<u64> = rows.iter().map(|r| r.frame_index).collect();
        assert_eq!(indices, [0, 2, 4], "{mode:?}");
        assert!(rows.iter().all(|r| r.segmented_frames == 2), "{mode:?}");
        assert_eq!(out.iter().filter(|a| a.map.is_some()).count(), 3);
        if mode == SegmentationMode::EveryNth {
            let expected = FrameMetrics {
                segmentation: "every_nth".into(),
                segmented_frames: 2,
                ..direct[2].clone()
            };
            assert_eq!(*rows[1], expected, "every_nth segments the frame itself");
        }
    }
}

/// A partial batch runs once its oldest frame has waited `max_wait`, while event time stands still (a live stream
/// at a low segmentation rate); without a wait it stays until the batch fills or event time moves on.
#[test]
fn a_partial_batch_runs_after_the_maximum_wait_without_event_time_moving() {
    let model = classical_model();
    let env = ort_environment(&ort_library()).unwrap();
    let frame = skin_frame(160, 120, 1);
    for max_wait in [None, Some(std::time::Duration::from_millis(50))] {
        let params = SegmentParams {
            input: model.card.input.clone(),
            metrics: model.card.metric_params(),
            vessels: VesselParams::default(),
            batch_size: 4,
            max_wait,
            segmentation: SegmentationConfig::default(),
        };
        let (env_w, model_w, frame) = (env.clone(), model.clone(), frame.clone());
        let segmented = timely::execute_directly(move |worker| {
            let seen = Arc::new(Mutex::new(0usize));
            let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<Frame>>> =
                InputHandle::new();
            let segmenter = Segmenter::new(&env_w, &model_w, 1).unwrap();
            let sink = Arc::clone(&seen);
            worker.dataflow::<u64, _, _>(|scope| {
                input
                    .to_stream(scope)
                    .stabilise(params.input.clone())
                    .segment(vec![segmenter], params, SegmentShared::default())
                    .inspect(move |a: &Analysed| {
                        *sink.lock().unwrap() += usize::from(a.row.is_some())
                    });
            });
            input.send(frame);
            input.flush();
            // The input stays open at time 0 for a second; only the wait can release the frame.
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(1) && *seen.lock().unwrap() == 0
            {
                worker.step_or_park(Some(std::time::Duration::from_millis(10)));
            }
            let during = *seen.lock().unwrap();
            drop(input);
            while worker.has_dataflows() {
                worker.step();
            }
            let at_end = *seen.lock().unwrap();
            (during, at_end)
        });
        let expected = if max_wait.is_some() { (1, 1) } else { (0, 1) };
        assert_eq!(
            segmented, expected,
            "max_wait {max_wait:?}: (while time stands, at the end)"
        );
    }
}

/// Runs `frames` through stabilise → segment in one worker with `threads` inference threads; returns what leaves,
/// in order.
fn run_dataflow(
    env: &ort::environment::Environment,
    model: &Model,
    params: &SegmentParams,
    frames: &[Frame],
    threads: usize,
) -> Vec<Analysed> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sink, frames_in, env_w, model_w, params_w) = (
        Arc::clone(&seen),
        frames.to_vec(),
        env.clone(),
        model.clone(),
        params.clone(),
    );
    timely::execute_directly(move |worker| {
        let shared = SegmentShared::default();
        let mut input: InputHandle<u64, CapacityContainerBuilder<Vec<Frame>>> = InputHandle::new();
        let segmenters = (0..threads)
            .map(|_| Segmenter::new(&env_w, &model_w, 1).unwrap())
            .collect();
        let sink = Arc::clone(&sink);
        worker.dataflow::<u64, _, _>(|scope| {
            let spec = params_w.input.clone();
            input
                .to_stream(scope)
                .stabilise(spec)
                .segment(segmenters, params_w, shared.clone())
                .inspect(move |a: &Analysed| sink.lock().unwrap().push(a.clone()));
        });
        for frame in frames_in {
            input.send(frame);
            shared.pending.set(shared.pending.get() + 1);
        }
        drop(input);
        while worker.has_dataflows() {
            worker.step();
        }
        assert_eq!(shared.pending.get(), 0, "every frame was consumed");
        assert!(shared.errors.borrow().is_empty());
    });
    let out = seen.lock().unwrap().clone();
    out
}
