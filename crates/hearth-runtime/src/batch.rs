//! Continuous batching for one model: sequences join between steps, and each step runs one
//! forward pass holding every decoding sequence's next token plus at most one chunk of one
//! waiting prompt, so a long prompt never stalls the streams already running. A sequence
//! whose consumer has gone (its event receiver dropped) is freed at the next step.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use hearth_engine::model::SeqInput;
use hearth_engine::LoadedModel;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::prompt_cache::PromptCache;
use crate::request::{Event, FinishReason, Observer, Request};
use crate::sequence::{Seq, Start};
use crate::RuntimeError;

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Most sequences decoding together.
    pub max_batch: usize,
    /// Prompt tokens prefilled per step.
    pub prefill_chunk: usize,
    /// Tokens of KV cache per sequence.
    pub context: usize,
    pub prompt_cache_bytes: usize,
}

impl RuntimeConfig {
    /// The context capped at the model's: a cache beyond it could never be filled.
    pub(crate) fn fitted(self, model: &LoadedModel) -> Self {
        RuntimeConfig { context: self.context.min(model.model.config().context_length), ..self }
    }

    /// One sequence at a time with `context` tokens of cache, keeping the last conversation's
    /// cache so the next turn prefills only what is new (the command line's settings).
    pub fn single(context: usize) -> Self {
        RuntimeConfig { max_batch: 1, prefill_chunk: 256, context, prompt_cache_bytes: usize::MAX }
    }
}

/// Live numbers of one runtime, read by whoever reports them.
#[derive(Default)]
pub struct Gauges {
    /// Requests submitted and not yet admitted.
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub kv_running_bytes: AtomicUsize,
    pub kv_prompt_cache_bytes: AtomicUsize,
}

/// The sequences of one model and the steps that advance them. Single-threaded: the command
/// line drives it directly, the server through a [`crate::Scheduler`] thread.
pub struct Runtime<'m> {
    model: &'m LoadedModel,
    cfg: RuntimeConfig,
    observer: Arc<dyn Observer>,
    gauges: Arc<Gauges>,
    prompt_cache: PromptCache,
    seqs: Vec<Seq<'m>>,
}

impl<'m> Runtime<'m> {
    pub fn new(model: &'m LoadedModel, cfg: RuntimeConfig, observer: Arc<dyn Observer>, gauges: Arc<Gauges>) -> Self {
        let cfg = cfg.fitted(model);
        Runtime { model, prompt_cache: PromptCache::new(cfg.prompt_cache_bytes), cfg, observer, gauges, seqs: Vec::new() }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Whether another request's sequences would fit the batch now.
    pub fn has_room(&self) -> bool {
        self.seqs.iter().map(Seq::slots).sum::<usize>() < self.cfg.max_batch
    }

    /// Validates and starts a request; its events arrive on the returned receiver (dropping it
    /// cancels the request).
    pub fn submit(&mut self, req: Request) -> Result<UnboundedReceiver<Event>, RuntimeError> {
        req.validate(self.model, self.cfg.context)?;
        let (tx, rx) = unbounded_channel();
        self.admit(req, tx, Instant::now());
        Ok(rx)
    }

    /// Starts a request already validated; a failure is reported on `events`.
    pub(crate) fn admit(&mut self, req: Request, events: UnboundedSender<Event>, arrived: Instant) {
        if events.is_closed() {
            return;
        }
        let adapter_id = req.adapter.as_ref().map(|a| a.id());
        let start = match self.prompt_cache.take(&req.prompt, adapter_id) {
            Some(hit) => Start { cache: hit.cache, reused: hit.reused, ready: hit.logits },
            None => match self.model.model.new_cache(self.cfg.context) {
                Ok(cache) => Start { cache, reused: 0, ready: None },
                Err(e) => return drop(events.send(Event::Failed(RuntimeError::Model(e.to_string())))),
            },
        };
        self.observer.prompt(req.prompt.len(), start.reused);
        let seq = Seq::new(self.model, req, start, events.clone(), arrived);
        match seq {
            Ok(s) => self.seqs.push(s),
            Err(e) => drop(events.send(Event::Failed(e))),
        }
    }

    /// Fails every running sequence with `error` (a shutdown).
    pub fn abort_all(&mut self, error: RuntimeError) {
        for s in self.seqs.drain(..) {
            s.send(Event::Failed(error.clone()));
        }
        self.publish();
    }

    /// Drops abandoned sequences, then runs one forward pass over the batch and samples one
    /// token for every sequence that has logits.
    pub fn step(&mut self) {
        let (gone, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.seqs).into_iter().partition(Seq::abandoned);
        self.seqs = live;
        for s in gone {
            s.keep(&mut self.prompt_cache);
        }
        if !self.seqs.is_empty() {
            self.forward_and_sample();
        }
        self.publish();
    }

    fn publish(&self) {
        self.gauges.running.store(self.seqs.len(), Relaxed);
        self.gauges.kv_running_bytes.store(self.seqs.iter().map(|s| s.cache.bytes()).sum(), Relaxed);
        self.gauges.kv_prompt_cache_bytes.store(self.prompt_cache.bytes(), Relaxed);
    }

    fn forward_and_sample(&mut self) {
        let chunk = self.cfg.prefill_chunk;
        let prefill = self.seqs.iter().position(Seq::prefilling);
        let mut inputs = Vec::with_capacity(self.seqs.len());
        let mut ran = Vec::with_capacity(self.seqs.len());
        for (i, s) in self.seqs.iter_mut().enumerate() {
            let Seq { cache, tokens, prompt, next, adapter, .. } = s;
            let feed: &[u32] = match next {
                Some(t) => std::slice::from_ref(&*t),
                None if Some(i) == prefill => &prompt[tokens.len()..(tokens.len() + chunk).min(prompt.len())],
                None => continue,
            };
            inputs.push(SeqInput { tokens: feed, cache, adapter: adapter.as_deref() });
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
                    self.seqs.remove(i).send(Event::Failed(RuntimeError::Model(e.to_string())));
                }
                return;
            }
        };
        let mut sampled: Vec<(usize, Vec<f32>)> = Vec::new();
        for (i, logits) in ran.into_iter().zip(logits) {
            let s = &mut self.seqs[i];
            if s.consume_fed(chunk) {
                if s.prompt_logits.is_none() && s.tokens.len() == s.prompt.len() {
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
                    Err(e) => s.send(Event::Failed(e)),
                }
            }
            if let Some(reason) = s.advance(self.model, &*self.observer, logits) {
                finished.push((i, reason));
            }
        }
        for (i, reason) in finished.into_iter().rev() {
            let s = self.seqs.remove(i);
            self.retire(s, reason);
        }
        for (mut b, logits) in branches {
            match b.advance(self.model, &*self.observer, logits) {
                Some(reason) => self.retire(b, reason),
                None => self.seqs.push(b),
            }
        }
    }

    fn retire(&mut self, mut s: Seq<'m>, reason: FinishReason) {
        s.finish(reason);
        s.keep(&mut self.prompt_cache);
    }
}
