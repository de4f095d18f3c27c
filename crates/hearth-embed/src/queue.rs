//! A batching queue a server shares across concurrent requests: requests submitted from any
//! thread wait in a channel, and one worker thread takes everything waiting, runs it as one
//! batch and hands each request its own vectors back in its own order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::bert::Encoded;
use crate::embedder::{EmbedInput, EmbedOptions, Embedder, Embeddings};
use crate::{EmbedError, Result};

struct Job {
    seqs: Vec<Encoded>,
    reply: mpsc::SyncSender<Pooled>,
}

/// A job's pooled vectors, or why the batch failed.
type Pooled = std::result::Result<Vec<Vec<f32>>, String>;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    batches: AtomicU64,
    merged_batches: AtomicU64,
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub requests: u64,
    /// Model runs (each of one or more requests).
    pub batches: u64,
    /// Model runs that served more than one request.
    pub merged_batches: u64,
}

pub struct EmbedQueue {
    embedder: Arc<Embedder>,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// A submitted request; [`Pending::wait`] blocks until its vectors are ready.
pub struct Pending<'q> {
    queue: &'q EmbedQueue,
    seqs: Vec<Encoded>,
    opts: EmbedOptions,
    reply: mpsc::Receiver<Pooled>,
}

impl EmbedQueue {
    pub fn new(embedder: Arc<Embedder>) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let counters = Arc::new(Counters::default());
        let (model, stats) = (embedder.clone(), counters.clone());
        let worker = std::thread::Builder::new()
            .name("hearth-embed".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    jobs.extend(rx.try_iter());
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    if jobs.len() > 1 {
                        stats.merged_batches.fetch_add(1, Ordering::Relaxed);
                    }
                    let all: Vec<Encoded> = jobs.iter().flat_map(|j| j.seqs.iter().cloned()).collect();
                    // A requester that gave up has dropped its receiver; nothing to do.
                    match model.pool(&all) {
                        Ok(pooled) => {
                            let mut pooled = pooled.into_iter();
                            for job in jobs {
                                let _ = job.reply.send(Ok(pooled.by_ref().take(job.seqs.len()).collect()));
                            }
                        }
                        Err(e) => jobs.into_iter().for_each(|job| drop(job.reply.send(Err(e.to_string())))),
                    }
                }
            })
            .map_err(|e| EmbedError::Io { path: "embedding worker thread".into(), source: e })?;
        Ok(EmbedQueue { embedder, jobs: Some(tx), worker: Some(worker), counters })
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Checks and tokenizes the request in the caller's thread, then queues it.
    pub fn submit(&self, inputs: &[EmbedInput], opts: &EmbedOptions) -> Result<Pending<'_>> {
        let seqs = self.embedder.prepare(inputs, opts)?;
        let (reply_tx, reply) = mpsc::sync_channel(1);
        let job = Job { seqs: seqs.clone(), reply: reply_tx };
        self.jobs.as_ref().ok_or(EmbedError::WorkerStopped)?.send(job).map_err(|_| EmbedError::WorkerStopped)?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        Ok(Pending { queue: self, seqs, opts: opts.clone(), reply })
    }

    /// [`EmbedQueue::submit`] and wait.
    pub fn embed(&self, inputs: &[EmbedInput], opts: &EmbedOptions) -> Result<Embeddings> {
        self.submit(inputs, opts)?.wait()
    }

    pub fn stats(&self) -> QueueStats {
        let c = &self.counters;
        QueueStats {
            requests: c.requests.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            merged_batches: c.merged_batches.load(Ordering::Relaxed),
        }
    }
}

impl Pending<'_> {
    pub fn wait(self) -> Result<Embeddings> {
        let pooled = self.reply.recv().map_err(|_| EmbedError::WorkerStopped)?.map_err(EmbedError::Failed)?;
        Ok(self.queue.embedder.finish(&self.seqs, pooled, &self.opts))
    }
}

impl Drop for EmbedQueue {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop once queued work is done.
        self.jobs.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
