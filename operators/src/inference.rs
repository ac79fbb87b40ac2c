//! Inference on threads of its own, so a worker prepares and measures other frames while ONNX Runtime runs batches.
//!
//! On a worker that ran inference in line, every step waited for the model: stabilisation, preprocessing, vessel
//! maps and flow of the frames around a batch ran on one core while the other idled (a 1080p run used 1.65 of 2
//! cores). Here the worker hands batches to [`InferenceThreads`] and goes on; its threads (one ONNX Runtime session
//! each) take batches in turn and wake the worker's operator when one is done. Results come back in submission
//! order, so the output is the same as in line, whatever the number of threads.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::preprocess::ModelInput;
use crate::segmenter::{ProbPlane, Segmenter};

/// A job's probability plane, or why the model failed on it (naming the model).
pub type Probs = Result<ProbPlane, String>;

/// One model call: frames in it and how long it took.
pub type Call = (usize, Duration);

/// Runs the jobs of one batch (`None`: a frame with nothing to infer), same-sized inputs in one call each.
///
/// Returns each job's probabilities (`None` where there was no job) and the calls made. The jobs keep their planes
/// (the worker fills them again for later frames).
pub fn run_jobs(
    segmenter: &mut Segmenter,
    jobs: &[Option<ModelInput>],
) -> (Vec<Option<Probs>>, Vec<Call>) {
    let mut out: Vec<Option<Probs>> = jobs.iter().map(|_| None).collect();
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
        let refs: Vec<&ModelInput> = group.iter().filter_map(|&j| jobs[j].as_ref()).collect();
        let result = segmenter.run(&refs);
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

/// A batch back from the thread: its jobs (returned: measuring needs their sizes, and their planes are reused), their
/// probabilities and the model calls made.
#[derive(Debug)]
pub struct Finished {
    /// The jobs as submitted (all `None` if the thread died before answering).
    pub jobs: Vec<Option<ModelInput>>,
    /// Each job's probabilities or error; `None` where there was no job.
    pub probs: Vec<Option<Probs>>,
    /// Model calls made for the batch.
    pub calls: Vec<Call>,
}

/// One inference thread: where its batches go, where they come back.
struct Lane {
    jobs: Option<Sender<Vec<Option<ModelInput>>>>,
    finished: Receiver<Finished>,
    thread: Option<JoinHandle<()>>,
}

/// Inference threads of one worker, each owning one [`Segmenter`]: batches go to them in turn and come back in the
/// order they were submitted.
///
/// Several single-threaded sessions running different frames at once use two cores better than one session
/// splitting every operator over two threads (each operator's work split in two, then a wait for the slower half,
/// the longer when decoding takes one of the cores for a moment). The shipped model on a 1080p frame's padded
/// working input, this 2-core machine: two 1-thread sessions side by side 95.0 frames/s against 85.0 for one
/// 2-thread session (`capflow bench`, same run); in onnxruntime's Python API 97.7–101.1 against 81.4.
pub struct InferenceThreads {
    lanes: Vec<Lane>,
    /// The lane the next batch goes to.
    next: usize,
    /// Lane and length of each batch submitted and not yet taken back, oldest first.
    in_flight: VecDeque<(usize, usize)>,
}

impl std::fmt::Debug for InferenceThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceThreads")
            .field("threads", &self.lanes.len())
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

/// What a batch reads when its thread is gone (it panicked): every job fails with this.
pub const THREAD_STOPPED: &str =
    "the inference thread stopped unexpectedly (see the log above for its panic)";

impl InferenceThreads {
    /// Starts one thread per segmenter, named `name.0`, `name.1`, … (keep `name` short: `top` and `perf` show 15 bytes
    /// of a thread's name); each calls `wake` after finishing a batch (a timely `SyncActivator`, so the operator runs
    /// again although nothing else happened).
    pub fn spawn(
        segmenters: Vec<Segmenter>,
        name: String,
        wake: impl Fn() + Clone + Send + 'static,
    ) -> std::io::Result<Self> {
        let mut lanes = Vec::with_capacity(segmenters.len());
        for (i, mut segmenter) in segmenters.into_iter().enumerate() {
            let (job_tx, job_rx) = channel::<Vec<Option<ModelInput>>>();
            let (done_tx, done_rx) = channel::<Finished>();
            let wake = wake.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{name}.{i}"))
                .spawn(move || {
                    for jobs in job_rx {
                        let (probs, calls) = run_jobs(&mut segmenter, &jobs);
                        if done_tx.send(Finished { jobs, probs, calls }).is_err() {
                            return;
                        }
                        wake();
                    }
                })?;
            lanes.push(Lane {
                jobs: Some(job_tx),
                finished: done_rx,
                thread: Some(thread),
            });
        }
        Ok(InferenceThreads {
            lanes,
            next: 0,
            in_flight: VecDeque::new(),
        })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.lanes.len()
    }

    /// Queues a batch on the next thread in turn. A thread that is gone answers it with [`THREAD_STOPPED`] errors
    /// from [`Self::try_finished`]; with no thread at all every batch is answered so.
    pub fn submit(&mut self, jobs: Vec<Option<ModelInput>>) {
        let lane = self.next;
        self.next = (self.next + 1) % self.lanes.len().max(1);
        self.in_flight.push_back((lane, jobs.len()));
        if let Some(tx) = self.lanes.get(lane).and_then(|l| l.jobs.as_ref()) {
            // A send fails only when the thread is gone; `try_finished` then reports it.
            let _ = tx.send(jobs);
        }
    }

    /// Batches submitted and not yet taken back.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The oldest batch, if it is done. Each thread answers its batches in order and batches are dealt out in turn,
    /// so the oldest batch is the next answer of its thread.
    pub fn try_finished(&mut self) -> Option<Finished> {
        let (lane, len) = *self.in_flight.front()?;
        let stopped = || Finished {
            jobs: vec![None; len],
            probs: (0..len)
                .map(|_| Some(Err(THREAD_STOPPED.to_owned())))
                .collect(),
            calls: Vec::new(),
        };
        let finished = match self.lanes.get(lane).map(|l| l.finished.try_recv()) {
            Some(Ok(finished)) => finished,
            Some(Err(TryRecvError::Empty)) => return None,
            Some(Err(TryRecvError::Disconnected)) | None => stopped(),
        };
        self.in_flight.pop_front();
        Some(finished)
    }
}

impl Drop for InferenceThreads {
    fn drop(&mut self) {
        // Closing the queues ends the threads' loops once they have finished what they hold.
        for lane in &mut self.lanes {
            lane.jobs = None;
        }
        for lane in &mut self.lanes {
            if let Some(thread) = lane.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
