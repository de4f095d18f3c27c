//! One choice of one request as it runs: its KV cache, sampler, logits processor, streaming
//! detokenizer and stop strings, and the events it sends.

use std::sync::Arc;
use std::time::Instant;

use hearth_engine::{Adapter, KvCache, LoadedModel};
use hearth_tokenizer::StreamDecoder;
use tokio::sync::mpsc::UnboundedSender;

use crate::prompt_cache::PromptCache;
use crate::request::{Event, FinishReason, GenerateParams, LogitsProcessor, Observer, Request, SampledToken, Usage};
use crate::sampler::{logprobs, Sampler};
use crate::stop::StopMatcher;
use crate::RuntimeError;

pub(crate) struct Seq<'m> {
    pub events: UnboundedSender<Event>,
    pub index: usize,
    /// Choices this sequence still has to branch into once its prompt is prefilled.
    pub choices: usize,
    pub params: Arc<GenerateParams>,
    pub prompt: Arc<[u32]>,
    pub cache: KvCache,
    /// What the cache holds.
    pub tokens: Vec<u32>,
    /// The last sampled token, to run next; `None` while the prompt is being prefilled.
    pub next: Option<u32>,
    /// Logits to sample from without a forward pass (the prompt cache had the whole prompt).
    pub ready: Option<Vec<f32>>,
    /// The logits after the prompt, kept for the prompt cache.
    pub prompt_logits: Option<Vec<f32>>,
    pub adapter: Option<Arc<Adapter>>,
    sampler: Sampler,
    processor: Option<Box<dyn LogitsProcessor>>,
    decoder: StreamDecoder<'m>,
    stops: StopMatcher,
    generated: usize,
    cached_tokens: usize,
    arrived: Instant,
    last_token: Option<Instant>,
}

/// Where a new sequence's cache comes from.
pub(crate) struct Start {
    pub cache: KvCache,
    /// Prompt tokens the cache already holds.
    pub reused: usize,
    pub ready: Option<Vec<f32>>,
}

impl<'m> Seq<'m> {
    pub fn new(
        model: &'m LoadedModel,
        req: Request,
        start: Start,
        events: UnboundedSender<Event>,
        arrived: Instant,
    ) -> Result<Self, RuntimeError> {
        let Request { prompt, params, n: choices, processor, adapter } = req;
        let sampler = Sampler::new(params.sampling.clone())?;
        let decoder = model.tokenizer.stream_decoder(!params.special_tokens);
        Ok(Seq {
            index: 0,
            choices,
            adapter,
            stops: StopMatcher::new(params.stop.clone()),
            params: Arc::new(params),
            tokens: prompt[..start.reused].to_vec(),
            prompt: prompt.into(),
            cache: start.cache,
            next: None,
            prompt_logits: start.ready.clone(),
            ready: start.ready,
            sampler,
            processor,
            decoder,
            generated: 0,
            cached_tokens: start.reused,
            arrived,
            last_token: None,
            events,
        })
    }

    pub fn prefilling(&self) -> bool {
        self.next.is_none() && self.ready.is_none()
    }

    /// Batch slots this sequence will occupy.
    pub fn slots(&self) -> usize {
        if self.prefilling() {
            self.choices
        } else {
            1
        }
    }

    /// Whether the consumer is gone (the sequence is dropped at the next step).
    pub fn abandoned(&self) -> bool {
        self.events.is_closed()
    }

    pub fn send(&self, e: Event) {
        // A closed receiver means the consumer left; the sequence is dropped at the next step.
        let _ = self.events.send(e);
    }

    /// Records the tokens the last forward pass ran; `false` while the prompt is still
    /// incomplete (no token to sample yet).
    pub fn consume_fed(&mut self, chunk: usize) -> bool {
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
    pub fn branch(&self, model: &'m LoadedModel, index: usize) -> Result<Seq<'m>, RuntimeError> {
        let mut sampling = self.params.sampling.clone();
        sampling.seed = sampling.seed.map(|s| s.wrapping_add(index as u64));
        Ok(Seq {
            events: self.events.clone(),
            index,
            choices: 1,
            params: self.params.clone(),
            prompt: self.prompt.clone(),
            cache: self.cache.fork().map_err(|e| RuntimeError::Model(e.to_string()))?,
            tokens: self.tokens.clone(),
            next: None,
            ready: None,
            // One copy in the prompt cache is enough: the first choice keeps it.
            prompt_logits: None,
            adapter: self.adapter.clone(),
            sampler: Sampler::new(sampling)?,
            processor: self.processor.as_ref().map(|p| p.fork()),
            decoder: model.tokenizer.stream_decoder(!self.params.special_tokens),
            stops: StopMatcher::new(self.params.stop.clone()),
            generated: 0,
            cached_tokens: self.cached_tokens,
            arrived: self.arrived,
            last_token: None,
        })
    }

    /// Samples the next token from `logits` and streams its text; returns why the sequence
    /// ends, if it does.
    pub fn advance(&mut self, model: &LoadedModel, observer: &dyn Observer, mut logits: Vec<f32>) -> Option<FinishReason> {
        if let Some(p) = &mut self.processor {
            let start = Instant::now();
            p.process(&mut logits);
            observer.processed(start.elapsed());
        }
        let raw = self.params.logprobs.map(|k| (logits.clone(), k));
        let id = self.sampler.sample(&mut logits, &self.tokens);
        let now = Instant::now();
        match self.last_token {
            None if self.index == 0 => observer.first_token(now - self.arrived),
            None => {}
            Some(t) => observer.next_token(now - t),
        }
        self.last_token = Some(now);
        if let Some(p) = &mut self.processor {
            if let Err(e) = p.accept(id) {
                self.send(Event::Failed(RuntimeError::Processor(e)));
                return Some(FinishReason::Cancelled);
            }
        }
        if !self.params.ignore_eos && model.eos_ids.contains(&id) {
            return Some(FinishReason::Stop);
        }
        self.sampler.observe(id);
        self.generated += 1;
        observer.generated();
        let piece = match self.decoder.push(id) {
            Ok(p) => p,
            Err(e) => {
                self.send(Event::Failed(RuntimeError::Detokenize(e.to_string())));
                return Some(FinishReason::Cancelled);
            }
        };
        let (text, hit) = self.stops.push(&piece);
        let logprob = raw.map(|(raw, k)| logprobs(&raw, id, k));
        self.send(Event::Token { index: self.index, text, token: Some(SampledToken { id, logprob }) });
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
    pub fn keep(self, prompt_cache: &mut PromptCache) {
        let prompt_len = self.prompt.len();
        let adapter = self.adapter.map(|a| a.id());
        prompt_cache.insert(self.tokens, adapter, self.cache, self.prompt_logits.map(|l| (prompt_len, l)));
    }

    /// Releases held-back text and reports the end.
    pub fn finish(&mut self, reason: FinishReason) {
        if !self.stops.hit() {
            let tail = self.decoder.flush().unwrap_or_default();
            let (mut text, _) = self.stops.push(&tail);
            text += &self.stops.finish();
            if !text.is_empty() {
                self.send(Event::Token { index: self.index, text, token: None });
            }
        }
        let usage = Usage { prompt_tokens: self.prompt.len(), completion_tokens: self.generated, cached_tokens: self.cached_tokens };
        self.send(Event::Finished { index: self.index, reason, usage });
    }
}
