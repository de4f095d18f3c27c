//! Generation for one sequence: prefill (reusing whatever prefix the session's KV cache already
//! holds), then decode token by token with sampling, EOS and stop strings, streaming text that
//! never contains a partial character or any part of a stop string.

use std::borrow::Cow;
use std::time::Instant;

use crate::kv_cache::KvCache;
use crate::loader::LoadedModel;
use crate::model::SeqInput;
use crate::sampler::{logprobs, Sampler, SamplingParams, TokenLogprob};
use crate::{EngineError, Result};

/// Prompt tokens run through the model per forward pass, bounding activation memory.
pub const PREFILL_CHUNK: usize = 256;

#[derive(Clone, Debug, Default)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings; they never appear in the output.
    pub stop: Vec<String>,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    pub ignore_eos: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// One generated token as it is produced.
pub struct TokenEvent<'a> {
    pub id: u32,
    /// Text released by this token (possibly empty while a character or a possible stop
    /// string is incomplete).
    pub text: &'a str,
    pub logprob: Option<&'a TokenLogprob>,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<TokenLogprob>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused rather than computed.
    pub cached_tokens: usize,
    pub prompt_secs: f64,
    pub generate_secs: f64,
}

/// A sequence with its KV cache. The cache survives between calls, so a follow-up prompt that
/// extends an earlier one (the next turn of a chat) prefills only its new tokens.
pub struct Session<'m> {
    model: &'m LoadedModel,
    cache: KvCache,
    tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m LoadedModel, context: usize) -> Result<Self> {
        Ok(Session { model, cache: model.model.new_cache(context)?, tokens: Vec::new() })
    }

    pub fn context(&self) -> usize {
        self.cache.capacity()
    }

    /// Tokens the cache holds now.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Runs `prompt` through the model, reusing the cached common prefix. Returns the last
    /// position's logits and how many prompt tokens came from the cache.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize)> {
        if prompt.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        // At least one token must run to produce logits.
        let reuse = common.min(prompt.len() - 1);
        self.cache.truncate(reuse);
        self.tokens.truncate(reuse);
        let mut logits = None;
        for chunk in prompt[reuse..].chunks(PREFILL_CHUNK) {
            logits = Some(self.step(chunk)?);
        }
        Ok((logits.expect("prompt has at least one new token"), reuse))
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut out = self.model.model.forward(&mut [SeqInput { tokens, cache: &mut self.cache }], false)?;
        self.tokens.extend_from_slice(tokens);
        Ok(out.swap_remove(0))
    }

    /// Generates a continuation of `prompt`, calling `on_token` for each token; returning
    /// `false` from it stops generation.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<Generation> {
        if prompt.len() + params.max_tokens > self.cache.capacity() {
            return Err(EngineError::ContextOverflow {
                prompt: prompt.len(),
                max_tokens: params.max_tokens,
                context: self.cache.capacity(),
            });
        }
        if params.stop.iter().any(String::is_empty) {
            return Err(EngineError::InvalidRequest("stop strings must not be empty".into()));
        }
        let mut sampler = Sampler::new(params.sampling.clone())?;
        let t0 = Instant::now();
        let (mut logits, cached) = self.prefill(prompt)?;
        let prompt_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let tok = &self.model.tokenizer;
        let mut decoder = tok.stream_decoder(true);
        let mut stops = StopMatcher::new(&params.stop);
        let mut generated = Vec::new();
        let mut all_logprobs = Vec::new();
        let mut finish = FinishReason::Length;
        while generated.len() < params.max_tokens {
            let lp = params.logprobs.map(|n| (logits.clone(), n));
            let id = sampler.sample(&mut logits, &self.tokens);
            let lp = lp.map(|(raw, n)| logprobs(&raw, id, n));
            if !params.ignore_eos && self.model.eos_ids.contains(&id) {
                finish = FinishReason::Stop;
                break;
            }
            sampler.observe(id);
            generated.push(id);
            let piece = decoder.push(id)?;
            let (released, hit) = stops.push(&piece);
            let go_on = on_token(TokenEvent { id, text: &released, logprob: lp.as_ref() });
            all_logprobs.extend(lp);
            if hit {
                finish = FinishReason::Stop;
                break;
            }
            if !go_on {
                finish = FinishReason::Cancelled;
                break;
            }
            if generated.len() == params.max_tokens {
                break;
            }
            logits = self.step(&[id])?;
        }
        if finish != FinishReason::Stop || !stops.hit {
            let tail = decoder.flush()?;
            let (released, _) = stops.push(&tail);
            let rest = stops.finish();
            let text = released + &rest;
            if !text.is_empty() {
                on_token(TokenEvent { id: *generated.last().unwrap_or(&0), text: &text, logprob: None });
            }
        }
        Ok(Generation {
            text: stops.output,
            tokens: generated,
            logprobs: all_logprobs,
            finish_reason: finish,
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            prompt_secs,
            generate_secs: t1.elapsed().as_secs_f64(),
        })
    }
}

/// Finds stop strings across token boundaries. Text is released only once no stop string can
/// still begin inside it.
pub struct StopMatcher<'a> {
    stops: Cow<'a, [String]>,
    /// Text released so far.
    pub output: String,
    /// Text not yet released: it may be the start of a stop string.
    pending: String,
    /// Whether a stop string was completed.
    pub hit: bool,
}

impl<'a> StopMatcher<'a> {
    pub fn new(stops: &'a [String]) -> Self {
        StopMatcher { stops: Cow::Borrowed(stops), output: String::new(), pending: String::new(), hit: false }
    }

    /// A matcher that owns its stop strings (for a sequence that outlives its caller's frame).
    pub fn owned(stops: Vec<String>) -> StopMatcher<'static> {
        StopMatcher { stops: Cow::Owned(stops), output: String::new(), pending: String::new(), hit: false }
    }

    /// Adds text; returns what can be released now and whether a stop string was completed.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.hit {
            return (String::new(), true);
        }
        self.pending.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            self.pending.truncate(at);
            self.hit = true;
            return (self.release(self.pending.len()), true);
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let held = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).rev().filter(|&k| s.is_char_boundary(k)).map(move |k| &s[..k]))
            .filter(|prefix| self.pending.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        (self.release(self.pending.len() - held), false)
    }

    fn release(&mut self, n: usize) -> String {
        let out: String = self.pending.drain(..n).collect();
        self.output.push_str(&out);
        out
    }

    /// Releases whatever is held back (generation ended without completing a stop string).
    pub fn finish(&mut self) -> String {
        let n = self.pending.len();
        self.release(n)
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    #[test]
    fn stop_strings_match_across_pieces_and_never_leak() {
        let stops = vec!["</end>".to_string(), "STOP".to_string()];
        let mut m = StopMatcher::new(&stops);
        let mut seen = String::new();
        for piece in ["Hello </", "en", "d> world"] {
            let (out, hit) = m.push(piece);
            seen += &out;
            if hit {
                break;
            }
        }
        assert_eq!(seen, "Hello ");
        assert_eq!(m.output, "Hello ");
        assert!(m.hit);
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_be_a_stop() {
        let stops = vec!["STOP".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("abc ST").0, "abc ");
        assert_eq!(m.push("AY").0, "STAY");
        assert_eq!(m.push("ST").0, "");
        assert_eq!(m.finish(), "ST");
        assert_eq!(m.output, "abc STAYST");
    }
}
