//! A [`Runtime`] on its own thread, fed through a bounded queue: requests join the running
//! batch between steps. The server keeps one per loaded model.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use hearth_engine::LoadedModel;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::batch::{Gauges, Runtime, RuntimeConfig};
use crate::request::{Event, Observer, Request};
use crate::RuntimeError;

struct Job {
    req: Request,
    events: UnboundedSender<Event>,
    arrived: Instant,
}

/// The handle to a runtime thread; dropping it lets the thread finish its sequences and exit.
pub struct Scheduler {
    jobs: SyncSender<Job>,
    model: Arc<LoadedModel>,
    gauges: Arc<Gauges>,
    context: usize,
}

impl Scheduler {
    /// Starts the thread. `queue` requests may wait beyond the running batch before
    /// [`Scheduler::submit`] refuses more; once `shutdown` is set, running sequences fail.
    pub fn start(
        name: &str,
        model: Arc<LoadedModel>,
        cfg: RuntimeConfig,
        queue: usize,
        observer: Arc<dyn Observer>,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::sync_channel(queue);
        let gauges = Arc::new(Gauges::default());
        let (g, shared) = (gauges.clone(), model.clone());
        let cfg = cfg.fitted(&model);
        let context = cfg.context;
        std::thread::Builder::new().name(format!("sched-{name}")).spawn(move || {
            let runtime = Runtime::new(&shared, cfg, observer, g.clone());
            run(runtime, &g, rx, &shutdown);
        })?;
        Ok(Scheduler { jobs, model, gauges, context })
    }

    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.model
    }

    pub fn gauges(&self) -> &Gauges {
        &self.gauges
    }

    /// Tokens of KV cache each sequence gets: prompt plus completion must fit.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Validates and queues a request; its events arrive on the returned receiver (dropping
    /// it cancels the request).
    pub fn submit(&self, req: Request) -> Result<UnboundedReceiver<Event>, RuntimeError> {
        req.validate(&self.model, self.context)?;
        let (tx, rx) = unbounded_channel();
        // Counted before sending so the thread's decrement can never come first.
        self.gauges.queued.fetch_add(1, Relaxed);
        let result = self.jobs.try_send(Job { req, events: tx, arrived: Instant::now() });
        if result.is_err() {
            self.gauges.queued.fetch_sub(1, Relaxed);
        }
        match result {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(RuntimeError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(RuntimeError::Stopped),
        }
    }
}

fn run(mut runtime: Runtime<'_>, gauges: &Gauges, jobs: Receiver<Job>, shutdown: &AtomicBool) {
    let admit = |runtime: &mut Runtime<'_>, job: Job| {
        gauges.queued.fetch_sub(1, Relaxed);
        runtime.admit(job.req, job.events, job.arrived);
    };
    loop {
        if runtime.is_idle() {
            match jobs.recv() {
                Ok(job) => admit(&mut runtime, job),
                Err(_) => return,
            }
        }
        while runtime.has_room() {
            match jobs.try_recv() {
                Ok(job) => admit(&mut runtime, job),
                Err(_) => break,
            }
        }
        if shutdown.load(Relaxed) {
            runtime.abort_all(RuntimeError::ShuttingDown);
        }
        runtime.step();
    }
}
