//! What a front end hands the runtime, and what it gets back.

use std::sync::Arc;
use std::time::Duration;

use hearth_engine::{Adapter, LoadedModel};

use crate::sampler::{SamplingParams, TokenLogprob};
use crate::RuntimeError;

#[derive(Clone, Debug, Default)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings; they never appear in the output.
    pub stop: Vec<String>,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    pub ignore_eos: bool,
    /// Special tokens appear in the text (a tool call's or reasoning block's markers are
    /// special tokens in some vocabularies, and the reply is read by them).
    pub special_tokens: bool,
}

/// A per-sequence hook between the model's logits and sampling: constraints (grammars, JSON
/// schemas) mask the logits here and follow each sampled token.
pub trait LogitsProcessor: Send {
    /// Adjusts the logits of the next position before sampling (e.g. masks forbidden tokens).
    fn process(&mut self, logits: &mut [f32]);
    /// Follows the token sampled from the processed logits; an error ends the sequence.
    fn accept(&mut self, token: u32) -> Result<(), String>;
    /// The processor for another choice of the same request (`n` > 1), in the same state.
    fn fork(&self) -> Box<dyn LogitsProcessor>;
}

/// One request: a tokenized prompt, continued `n` times.
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub n: usize,
    pub processor: Option<Box<dyn LogitsProcessor>>,
    /// The LoRA adapter this request runs with ([`LoadedModel::load_adapter`]), in the same
    /// batch as requests with other adapters or none; `None` runs the model as loaded.
    pub adapter: Option<Arc<Adapter>>,
}

impl Request {
    pub fn new(prompt: Vec<u32>, params: GenerateParams) -> Self {
        Request { prompt, params, n: 1, processor: None, adapter: None }
    }

    /// Everything that can be known before running: checked when the request is submitted, so
    /// a front end can refuse it at the door rather than fail mid-stream.
    pub fn validate(&self, model: &LoadedModel, context: usize) -> Result<(), RuntimeError> {
        let invalid = |param, message: String| Err(RuntimeError::Invalid { param, message });
        let vocab = model.model.config().vocab_size;
        if self.prompt.is_empty() {
            return invalid("prompt", "the prompt is empty".into());
        }
        if let Some(id) = self.prompt.iter().find(|&&id| id as usize >= vocab) {
            return invalid("prompt", format!("token id {id} is outside the vocabulary of {vocab}"));
        }
        if let Some(id) = self.params.sampling.logit_bias.keys().find(|&&id| id as usize >= vocab) {
            return invalid("logit_bias", format!("token id {id} is outside the vocabulary of {vocab}"));
        }
        if self.n == 0 {
            return invalid("n", "n must be at least 1".into());
        }
        if self.adapter.as_ref().is_some_and(|a| !model.model.made(a)) {
            return invalid("adapter", "the adapter was made ready for another model".into());
        }
        if self.params.stop.iter().any(String::is_empty) {
            return invalid("stop", "stop strings must not be empty".into());
        }
        if self.prompt.len() + self.params.max_tokens > context {
            return Err(RuntimeError::ContextOverflow { prompt: self.prompt.len(), max_tokens: self.params.max_tokens, context });
        }
        self.params.sampling.validate()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The consumer went away.
    Cancelled,
}

/// A token sampled at one step.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledToken {
    pub id: u32,
    /// With the alternatives, when the request asked for log-probs.
    pub logprob: Option<TokenLogprob>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV entries came from the prompt cache.
    pub cached_tokens: usize,
}

#[derive(Debug)]
pub enum Event {
    /// Text released for choice `index` (empty while a character or a possible stop string is
    /// incomplete). `token` is the token sampled at this step; `None` for text held back
    /// until the end.
    Token {
        index: usize,
        text: String,
        token: Option<SampledToken>,
    },
    Finished {
        index: usize,
        reason: FinishReason,
        usage: Usage,
    },
    Failed(RuntimeError),
}

/// What the runtime reports as it goes; the server turns it into metrics.
pub trait Observer: Send + Sync {
    /// A prompt was admitted; `cached` of its tokens came from the prompt cache.
    fn prompt(&self, _tokens: usize, _cached: usize) {}
    /// A request's first token, `latency` after it arrived.
    fn first_token(&self, _latency: Duration) {}
    /// Any later token, `gap` after the one before.
    fn next_token(&self, _gap: Duration) {}
    /// A token was generated (EOS, which ends a sequence unseen, is not counted).
    fn generated(&self) {}
    /// A sequence's logits processor (its constraint) took `took` to mask one position.
    fn processed(&self, _took: Duration) {}
}

/// Observes nothing (the command line).
impl Observer for () {}
