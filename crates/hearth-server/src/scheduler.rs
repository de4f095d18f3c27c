//! Continuous batching for one resident model, on its own thread. Requests arrive through a
//! bounded queue and join the running batch between steps; each step runs one forward pass
//! holding every decoding sequence's next token plus at most one chunk of one waiting
//! prompt, so a long prompt never stalls the streams already running. A sequence whose
//! client has gone (its event receiver dropped) is freed at the next step.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use hearth_engine::model::SeqInput;
use hearth_engine::{logprobs, FinishReason, GenerateParams, KvCache, LoadedModel, Sampler, StopMatcher, TokenLogprob};
use hearth_tokenizer::StreamDecoder;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::metrics::{Metrics, SchedulerGauges};
use crate::prompt_cache::PromptCache;

/// One request for the scheduler: a tokenized prompt, continued `n` times.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub n: usize,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
}

#[derive(Debug)]
pub enum Event {
    /// Text released for choice `index` (empty while a character or a possible stop string
    /// is incomplete), with the token's log-prob when asked for.
    Token {
        index: usize,
        text: String,
        logprob: Option<(u32, TokenLogprob)>,
    },
    Finished {
        index: usize,
        reason: FinishReason,
        usage: Usage,
    },
    Failed(String),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV entries came from the prompt cache.
    pub cached_tokens: usize,
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Most sequences decoding together.
    pub max_batch: usize,
    /// Prompt tokens prefilled per step.
    pub prefill_chunk: usize,
    /// Tokens of KV cache per sequence.
    pub context: usize,
    pub prompt_cache_bytes: usize,
    /// Requests waiting beyond the running batch before new ones get a 429.
    pub queue: usize,
}

/// The handle the server keeps; dropping it lets the thread finish its sequences and exit.
pub struct Scheduler {
    jobs: SyncSender<Job>,
    pub model: Arc<LoadedModel>,
    pub gauges: Arc<SchedulerGauges>,
}

impl Scheduler {
    pub fn start(
        name: &str,
        model: Arc<LoadedModel>,
        cfg: SchedulerConfig,
        metrics: Arc<Metrics>,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::sync_channel(cfg.queue);
        let gauges = Arc::new(SchedulerGauges::default());
        let g = gauges.clone();
        let shared = model.clone();
        std::thread::Builder::new().name(format!("sched-{name}")).spawn(move || {
            let mut worker = Worker {
                model: &model,
                cfg: &cfg,
                gauges: &g,
                metrics: &metrics,
                prompt_cache: PromptCache::new(cfg.prompt_cache_bytes),
                seqs: Vec::new(),
            };
            worker.run(rx, &shutdown);
        })?;
        Ok(Scheduler { jobs, model: shared, gauges })
    }

    /// Queues a job; a full queue is a 429 for the client to retry.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        // Counted before sending so the worker's decrement can never come first.
        self.gauges.queued.fetch_add(1, Relaxed);
        let result = self.jobs.try_send(job);
        if result.is_err() {
            self.gauges.queued.fetch_sub(1, Relaxed);
        }
        match result {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ApiError::busy("the server is busy: the request queue is full")),
            Err(TrySendError::Disconnected(_)) => Err(ApiError::unavailable("the model's scheduler has stopped")),
        }
    }
}

struct Seq<'m> {
    events: UnboundedSender<Event>,
    index: usize,
    /// Choices this sequence still has to branch into once its prompt is prefilled.
    choices: usize,
    params: Arc<GenerateParams>,
    prompt: Arc<[u32]>,
    cache: KvCache,
    /// What the cache holds.
    tokens: Vec<u32>,
    /// The last sampled token, to run next; `None` while the prompt is being prefilled.
    next: Option<u32>,
    /// Logits to sample from without a forward pass (the prompt cache had the whole prompt).
    ready: Option<Vec<f32>>,
    /// The logits after the prompt, kept for the prompt cache.
    prompt_logits: Option<Vec<f32>>,
    sampler: Sampler,
    decoder: StreamDecoder<'m>,
    stops: StopMatcher<'static>,
    generated: usize,
    cached_tokens: usize,
    arrived: Instant,
    last_token: Option<Instant>,
}

impl Seq<'_> {
    fn prefilling(&self) -> bool {
        self.next.is_none() && self.ready.is_none()
    }

    /// Batch slots this sequence will occupy.
    fn slots(&self) -> usize {
        if self.prefilling() {
            self.choices
        } else {
            1
        }
    }

    fn send(&self, e: Event) {
        // A closed receiver means the client left; the sequence is dropped at the next step.
        let _ = self.events.send(e);
    }
}

struct Worker<'a> {
    model: &'a LoadedModel,
    cfg: &'a SchedulerConfig,
    gauges: &'a SchedulerGauges,
    metrics: &'a Metrics,
    prompt_cache: PromptCache,
    seqs: Vec<Seq<'a>>,
}

impl<'a> Worker<'a> {
    fn run(&mut self, jobs: Receiver<Job>, shutdown: &AtomicBool) {
        loop {
            if self.seqs.is_empty() {
                self.publish();
                match jobs.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return,
                }
            }
            while self.seqs.iter().map(Seq::slots).sum::<usize>() < self.cfg.max_batch {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => break,
                }
            }
            if shutdown.load(Relaxed) {
                for s in self.seqs.drain(..) {
                    s.send(Event::Failed("the server is shutting down".into()));
                }
            }
            let (gone, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.seqs).into_iter().partition(|s| s.events.is_closed());
            self.seqs = live;
            for s in gone {
                s.keep(&mut self.prompt_cache);
            }
            if !self.seqs.is_empty() {
                self.step();
            }
            self.publish();
        }
    }

    fn publish(&self) {
        self.gauges.running.store(self.seqs.len(), Relaxed);
        self.gauges.kv_running_bytes.store(self.seqs.iter().map(|s| s.cache.bytes()).sum(), Relaxed);
        self.gauges.kv_prompt_cache_bytes.store(self.prompt_cache.bytes(), Relaxed);
    }

    fn admit(&mut self, job: Job) {
        self.gauges.queued.fetch_sub(1, Relaxed);
        if job.events.is_closed() {
            return;
        }
        let fail = |m: String| drop(job.events.send(Event::Failed(m)));
        let (cache, reused, ready) = match self.prompt_cache.take(&job.prompt) {
            Some(hit) => (hit.cache, hit.reused, hit.logits),
            None => match self.model.model.new_cache(self.cfg.context) {
                Ok(c) => (c, 0, None),
                Err(e) => return fail(e.to_string()),
            },
        };
        let sampler = match Sampler::new(job.params.sampling.clone()) {
            Ok(s) => s,
            Err(e) => return fail(e.to_string()),
        };
        self.metrics.prompt_tokens.fetch_add(job.prompt.len() as u64, Relaxed);
        if reused > 0 {
            self.metrics.prompt_cache_hits.fetch_add(1, Relaxed);
            self.metrics.prompt_cache_tokens.fetch_add(reused as u64, Relaxed);
        }
        let params = Arc::new(job.params);
        self.seqs.push(Seq {
            index: 0,
            choices: job.n,
            stops: StopMatcher::owned(params.stop.clone()),
            params,
            tokens: job.prompt[..reused].to_vec(),
            prompt: job.prompt.into(),
            cache,
            next: None,
            prompt_logits: ready.clone(),
            ready,
            sampler,
            decoder: self.model.tokenizer.stream_decoder(true),
            generated: 0,
            cached_tokens: reused,
            arrived: job.arrived,
            last_token: None,
            events: job.events,
        });
    }

    /// One forward pass over the batch, then one sampled token per sequence that has logits.
    fn step(&mut self) {
        let chunk = self.cfg.prefill_chunk;
        let prefill = self.seqs.iter().position(Seq::prefilling);
        let mut inputs = Vec::with_capacity(self.seqs.len());
        let mut ran = Vec::with_capacity(self.seqs.len());
        for (i, s) in self.seqs.iter_mut().enumerate() {
            let Seq { cache, tokens, prompt, next, .. } = s;
            let feed: &[u32] = match next {
                Some(t) => std::slice::from_ref(&*t),
                None if Some(i) == prefill => &prompt[tokens.len()..(tokens.len() + chunk).min(prompt.len())],
                None => continue,
            };
            inputs.push(SeqInput { tokens: feed, cache });
            ran.push(i);
        }
        // Every sequence may be sampling from logits it already has.
        let result = if inputs.is_empty() { Ok(Vec::new()) } else { self.model.model.forward(&mut inputs, false) };
        drop(inputs);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // Sequences already in the batch are spared only if they did not take part.
                for i in ran.into_iter().rev() {
                    self.seqs.remove(i).send(Event::Failed(format!("the model failed: {e}")));
                }
                return;
            }
        };
        let mut sampled: Vec<(usize, Vec<f32>)> = Vec::new();
        for (i, logits) in ran.into_iter().zip(logits) {
            let s = &mut self.seqs[i];
            if s.consume_fed(chunk) {
                if s.generated == 0 && s.prompt_logits.is_none() {
                    s.prompt_logits = Some(logits.clone());
                }
                sampled.push((i, logits));
            }
        }
        for (i, s) in self.seqs.iter_mut().enumerate() {
            if let Some(logits) = s.ready.take() {
                sampled.push((i, logits));
            }
        }
        sampled.sort_by_key(|(i, _)| *i);
        let mut finished = Vec::new();
        let mut branches = Vec::new();
        for (i, logits) in sampled {
            let s = &mut self.seqs[i];
            for index in 1..std::mem::replace(&mut s.choices, 1) {
                match s.branch(self.model, index) {
                    Ok(b) => branches.push((b, logits.clone())),
                    Err(e) => s.send(Event::Failed(e.to_string())),
                }
            }
            if let Some(reason) = s.advance(self.model, self.metrics, logits) {
                finished.push((i, reason));
            }
        }
        for (i, reason) in finished.into_iter().rev() {
            let s = self.seqs.remove(i);
            self.retire(s, reason);
        }
        for (mut b, logits) in branches {
            match b.advance(self.model, self.metrics, logits) {
                Some(reason) => self.retire(b, reason),
                None => self.seqs.push(b),
            }
        }
    }

    fn retire(&mut self, mut s: Seq<'a>, reason: FinishReason) {
        s.finish(reason);
        s.keep(&mut self.prompt_cache);
    }
}

impl<'m> Seq<'m> {
    /// Records the tokens the last forward pass ran; `false` while the prompt is still
    /// incomplete (no token to sample yet).
    fn consume_fed(&mut self, chunk: usize) -> bool {
        match self.next.take() {
            Some(t) => self.tokens.push(t),
            None => {
                let start = self.tokens.len();
                let end = (start + chunk).min(self.prompt.len());
                self.tokens.extend_from_slice(&self.prompt[start..end]);
            }
        }
        self.tokens.len() >= self.prompt.len()
    }

    /// Another choice continuing this freshly prefilled prompt from a copy of its cache;
    /// with a seed, choice `index` samples with seed + index so choices differ reproducibly.
    fn branch(&self, model: &'m LoadedModel, index: usize) -> hearth_engine::Result<Seq<'m>> {
        let mut sampling = self.params.sampling.clone();
        sampling.seed = sampling.seed.map(|s| s.wrapping_add(index as u64));
        Ok(Seq {
            events: self.events.clone(),
            index,
            choices: 1,
            params: self.params.clone(),
            prompt: self.prompt.clone(),
            cache: self.cache.fork()?,
            tokens: self.tokens.clone(),
            next: None,
            ready: None,
            // One copy in the prompt cache is enough: the first choice keeps it.
            prompt_logits: None,
            sampler: Sampler::new(sampling)?,
            decoder: model.tokenizer.stream_decoder(true),
            stops: StopMatcher::owned(self.params.stop.clone()),
            generated: 0,
            cached_tokens: self.cached_tokens,
            arrived: self.arrived,
            last_token: None,
        })
    }

    /// Samples the next token from `logits` and streams its text; returns why the sequence
    /// ends, if it does.
    fn advance(&mut self, model: &LoadedModel, metrics: &Metrics, mut logits: Vec<f32>) -> Option<FinishReason> {
        let raw = self.params.logprobs.map(|k| (logits.clone(), k));
        let id = self.sampler.sample(&mut logits, &self.tokens);
        let now = Instant::now();
        match self.last_token {
            None if self.index == 0 => metrics.time_to_first_token.observe(now - self.arrived),
            None => {}
            Some(t) => metrics.inter_token_latency.observe(now - t),
        }
        self.last_token = Some(now);
        if !self.params.ignore_eos && model.eos_ids.contains(&id) {
            return Some(FinishReason::Stop);
        }
        self.sampler.observe(id);
        self.generated += 1;
        metrics.generated_tokens.fetch_add(1, Relaxed);
        let piece = match self.decoder.push(id) {
            Ok(p) => p,
            Err(e) => {
                self.send(Event::Failed(format!("detokenizing failed: {e}")));
                return Some(FinishReason::Cancelled);
            }
        };
        let (text, hit) = self.stops.push(&piece);
        let logprob = raw.map(|(raw, k)| (id, logprobs(&raw, id, k)));
        self.send(Event::Token { index: self.index, text, logprob });
        if hit {
            return Some(FinishReason::Stop);
        }
        if self.generated >= self.params.max_tokens {
            return Some(FinishReason::Length);
        }
        self.next = Some(id);
        None
    }

    /// Hands the cache to the prompt cache.
    fn keep(self, prompt_cache: &mut PromptCache) {
        let prompt_len = self.prompt.len();
        prompt_cache.insert(self.tokens, self.cache, self.prompt_logits.map(|l| (prompt_len, l)));
    }

    /// Releases held-back text and reports the end.
    fn finish(&mut self, reason: FinishReason) {
        if !self.stops.hit {
            let tail = self.decoder.flush().unwrap_or_default();
            let (mut text, _) = self.stops.push(&tail);
            text += &self.stops.finish();
            if !text.is_empty() {
                self.send(Event::Token { index: self.index, text, logprob: None });
            }
        }
        let usage = Usage { prompt_tokens: self.prompt.len(), completion_tokens: self.generated, cached_tokens: self.cached_tokens };
        self.send(Event::Finished { index: self.index, reason, usage });
    }
}
