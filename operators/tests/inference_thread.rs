//! The worker's inference thread, without a dataflow: batches come back in order with the probabilities of direct
//! calls, mixed sizes are grouped, and the operator is woken once per batch. Real ONNX Runtime and the shipped
//! classical model (`make setup` provides the runtime; ORT_DYLIB_PATH points at it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capflow_operators::inference::{run_jobs, InferenceThreads};
use capflow_operators::model::Model;
use capflow_operators::preprocess::{preprocess, ModelInput};
use capflow_operators::{ort_environment, Segmenter};

mod common;
use common::{classical_model as model, ort_library, skin_frame};

/// Model inputs of generated skin frames of `size`, seeds `seeds`.
fn inputs(model: &Model, size: (u32, u32), seeds: std::ops::Range<u64>) -> Vec<ModelInput> {
    seeds
        .map(|seed| preprocess(&skin_frame(size.0, size.1, seed), &model.card.input))
        .collect()
}

#[test]
fn jobs_of_one_size_run_together_and_match_direct_calls() {
    let model = model();
    let env = ort_environment(&ort_library()).expect("ONNX Runtime: run `make setup`");
    let mut segmenter = Segmenter::new(&env, &model, 1).unwrap();
    let small = inputs(&model, (160, 120), 1..3);
    let large = inputs(&model, (224, 160), 3..4);
    let jobs = vec![
        Some(small[0].clone()),
        None,
        Some(large[0].clone()),
        Some(small[1].clone()),
    ];
    let (probs, calls) = run_jobs(&mut segmenter, &jobs);

    let sizes: Vec<usize> = calls.iter().map(|c| c.0).collect();
    assert_eq!(
        sizes,
        [2, 1],
        "the two small frames in one call, the large one alone"
    );
    assert!(probs[1].is_none(), "no job, no probabilities");
    for (i, job) in jobs.iter().enumerate() {
        let Some(job) = job else { continue };
        let direct = segmenter.run(&[job]).unwrap().remove(0);
        let got = probs[i].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(got[..], direct[..], "job {i}");
    }
}

#[test]
fn the_threads_answer_batches_in_order_and_wake_once_per_batch() {
    let model = model();
    let env = ort_environment(&ort_library()).expect("ONNX Runtime: run `make setup`");
    let mut direct = Segmenter::new(&env, &model, 1).unwrap();
    let small = inputs(&model, (160, 120), 10..15);
    let large = inputs(&model, (640, 480), 15..17);
    // The first batch is the slowest: with several threads the later ones finish first, and must still come back
    // after it.
    let batches: Vec<Vec<Option<ModelInput>>> = vec![
        vec![Some(large[0].clone()), Some(large[1].clone())],
        vec![Some(small[0].clone()), Some(small[1].clone())],
        vec![None, Some(small[2].clone())],
        vec![Some(small[3].clone()), Some(small[4].clone())],
    ];
    let expected: Vec<Vec<Option<Vec<f32>>>> = batches
        .iter()
        .map(|batch| {
            batch
                .iter()
                .map(|job| {
                    job.as_ref()
                        .map(|j| direct.run(&[j]).unwrap().remove(0).to_vec())
                })
                .collect()
        })
        .collect();

    for threads in 1..=3 {
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&woken);
        let segmenters = (0..threads)
            .map(|_| Segmenter::new(&env, &model, 1).unwrap())
            .collect();
        let mut pool = InferenceThreads::spawn(segmenters, "test-infer".into(), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(pool.threads(), threads);
        for batch in &batches {
            pool.submit(batch.clone());
        }
        assert_eq!(pool.in_flight(), batches.len());

        let mut answers = Vec::new();
        let start = Instant::now();
        while answers.len() < batches.len() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the threads answer"
            );
            match pool.try_finished() {
                Some(finished) => answers.push(finished),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(pool.in_flight(), 0);
        assert!(pool.try_finished().is_none(), "nothing more than was asked");
        assert_eq!(
            woken.load(Ordering::SeqCst),
            batches.len(),
            "woken once per batch ({threads} threads)"
        );

        for ((batch, answer), expected) in batches.iter().zip(&answers).zip(&expected) {
            let returned: Vec<bool> = answer.jobs.iter().map(Option::is_some).collect();
            let sent: Vec<bool> = batch.iter().map(Option::is_some).collect();
            assert_eq!(returned, sent, "the jobs come back with their answer");
            let sizes: Vec<_> = answer
                .jobs
                .iter()
                .map(|j| j.as_ref().map(|j| (j.width, j.height)))
                .collect();
            let sent_sizes: Vec<_> = batch
                .iter()
                .map(|j| j.as_ref().map(|j| (j.width, j.height)))
                .collect();
            assert_eq!(sizes, sent_sizes, "in submission order ({threads} threads)");
            for (probs, expected) in answer.probs.iter().zip(expected) {
                match expected {
                    Some(expected) => {
                        assert_eq!(probs.as_ref().unwrap().as_ref().unwrap()[..], expected[..])
                    }
                    None => assert!(probs.is_none()),
                }
            }
        }
        // Dropping it ends and joins the threads.
        drop(pool);
    }
}
