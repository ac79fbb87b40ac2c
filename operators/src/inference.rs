//! Inference on its own thread, so a worker prepares and measures other frames while ONNX Runtime runs a batch.
//!
//! On a worker that ran inference in line, every step waited for the model: stabilisation, preprocessing, vessel
//! maps and flow of the frames around a batch ran on one core while the other idled (a 1080p run used 1.65 of 2
//! cores). Here the worker hands a batch to [`InferenceThread`] and goes on; the thread runs batches in the order
//! they came and wakes the worker's operator when one is done. Results come back in submission order, so the output
//! is the same as in line.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::preprocess::ModelInput;
use crate::segmenter::Segmenter;

/// A job's probability plane, or why the model failed on it (naming the model).
pub type Probs = Result<Vec<f32>, String>;

/// One model call: frames in it and how long it took.
pub type Call = (usize, Duration);

/// Runs the jobs of one batch (`None`: a frame with nothing to infer), same-sized inputs in one call each.
///
/// Returns each job's probabilities (`None` where there was no job) and the calls made. A job alone in its call
/// hands its planes to the model (its `data` is empty afterwards; measuring needs only its sizes).
pub fn run_jobs(
    segmenter: &mut Segmenter,
    jobs: &mut [Option<ModelInput>],
) -> (Vec<Option<Probs>>, Vec<Call>) {
    let mut out: Vec<Option<Probs>> = vec![None; jobs.len()];
    let mut calls = Vec::new();
    let size = |j: &Option<ModelInput>| j.as_ref().map(|j| (j.width, j.height));
    let mut done: Vec<bool> = jobs.iter().map(Option::is_none).collect();
    for i in 0..jobs.len() {
        if done[i] {
            continue;
        }
        let group: Vec<usize> = (i..jobs.len())
            .filter(|&j| !done[j] && size(&jobs[j]) == size(&jobs[i]))
            .collect();
        let started = Instant::now();
        let result = match (group.as_slice(), jobs[i].as_mut()) {
            ([_], Some(input)) => segmenter.run_taking(input).map(|probs| vec![probs]),
            _ => {
                let refs: Vec<&ModelInput> =
                    group.iter().filter_map(|&j| jobs[j].as_ref()).collect();
                segmenter.run(&refs)
            }
        };
        calls.push((group.len(), started.elapsed()));
        match result {
            Ok(probs) => {
                for (&j, prob) in group.iter().zip(probs) {
                    out[j] = Some(Ok(prob));
                }
            }
            Err(error) => {
                let message = error.to_string();
                for &j in &group {
                    out[j] = Some(Err(message.clone()));
                }
            }
        }
        for &j in &group {
            done[j] = true;
        }
    }
    (out, calls)
}

/// A batch back from the thread: its jobs (returned, since measuring needs their sizes), their probabilities and
/// the model calls made.
#[derive(Debug)]
pub struct Finished {
    /// The jobs as submitted, less the planes handed to the model (all `None` if the thread died before answering).
    pub jobs: Vec<Option<ModelInput>>,
    /// Each job's probabilities or error; `None` where there was no job.
    pub probs: Vec<Option<Probs>>,
    /// Model calls made for the batch.
    pub calls: Vec<Call>,
}

/// A thread that owns one [`Segmenter`] and runs the batches it is given, in order.
pub struct InferenceThread {
    jobs: Option<Sender<Vec<Option<ModelInput>>>>,
    finished: Receiver<Finished>,
    thread: Option<JoinHandle<()>>,
    /// Length of each batch submitted and not yet taken back, oldest first.
    in_flight: VecDeque<usize>,
}

impl std::fmt::Debug for InferenceThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceThread")
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

/// What a batch reads when its thread is gone (it panicked): every job fails with this.
pub const THREAD_STOPPED: &str =
    "the inference thread stopped unexpectedly (see the log above for its panic)";

impl InferenceThread {
    /// Starts the thread `name`; it calls `wake` after finishing each batch (a timely `SyncActivator`, so the
    /// operator runs again although nothing else happened).
    pub fn spawn(
        mut segmenter: Segmenter,
        name: String,
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        let (job_tx, job_rx) = channel::<Vec<Option<ModelInput>>>();
        let (done_tx, done_rx) = channel::<Finished>();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            for mut jobs in job_rx {
                let (probs, calls) = run_jobs(&mut segmenter, &mut jobs);
                if done_tx.send(Finished { jobs, probs, calls }).is_err() {
                    return;
                }
                wake();
            }
        })?;
        Ok(InferenceThread {
            jobs: Some(job_tx),
            finished: done_rx,
            thread: Some(thread),
            in_flight: VecDeque::new(),
        })
    }

    /// Queues a batch. A thread that is gone answers it with [`THREAD_STOPPED`] errors from [`Self::try_finished`].
    pub fn submit(&mut self, jobs: Vec<Option<ModelInput>>) {
        self.in_flight.push_back(jobs.len());
        if let Some(tx) = &self.jobs {
            // A send fails only when the thread is gone; `try_finished` then reports it.
            let _ = tx.send(jobs);
        }
    }

    /// Batches submitted and not yet taken back.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The oldest batch, if it is done.
    pub fn try_finished(&mut self) -> Option<Finished> {
        let len = *self.in_flight.front()?;
        let finished = match self.finished.try_recv() {
            Ok(finished) => finished,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Finished {
                jobs: vec![None; len],
                probs: vec![Some(Err(THREAD_STOPPED.to_owned())); len],
                calls: Vec::new(),
            },
        };
        self.in_flight.pop_front();
        Some(finished)
    }
}

impl Drop for InferenceThread {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop once it has finished what it holds.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
