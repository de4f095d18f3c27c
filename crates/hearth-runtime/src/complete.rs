//! Running one request to its end on a runtime of its own: the command line's way in.

use std::time::Instant;

use crate::batch::Runtime;
use crate::request::{Event, FinishReason, Request, Usage};
use crate::sampler::TokenLogprob;
use crate::RuntimeError;

#[derive(Clone, Debug)]
pub struct Completion {
    pub text: String,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<TokenLogprob>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// Until the first token was sampled: the prompt's prefill.
    pub prompt_secs: f64,
    /// From the first token to the end.
    pub generate_secs: f64,
}

impl Runtime<'_> {
    /// Runs `req` (one choice) to its end, passing each piece of released text to `on_text`;
    /// returning `false` from it cancels the request.
    pub fn complete(&mut self, req: Request, mut on_text: impl FnMut(&str) -> bool) -> Result<Completion, RuntimeError> {
        if req.n != 1 {
            return Err(RuntimeError::Invalid { param: "n", message: "one choice at a time here".into() });
        }
        let started = Instant::now();
        let prompt_tokens = req.prompt.len();
        let mut events = self.submit(req)?;
        let mut first: Option<Instant> = None;
        let (mut text, mut tokens, mut logprobs) = (String::new(), Vec::new(), Vec::new());
        let (reason, usage) = 'run: loop {
            self.step();
            while let Ok(event) = events.try_recv() {
                match event {
                    Event::Token { text: piece, token, .. } => {
                        if let Some(t) = token {
                            first.get_or_insert_with(Instant::now);
                            tokens.push(t.id);
                            logprobs.extend(t.logprob);
                        }
                        text.push_str(&piece);
                        if !on_text(&piece) {
                            drop(events);
                            // Frees the sequence, keeping its cache for a next turn.
                            self.step();
                            let usage = Usage { prompt_tokens, completion_tokens: tokens.len(), cached_tokens: 0 };
                            break 'run (FinishReason::Cancelled, usage);
                        }
                    }
                    Event::Finished { reason, usage, .. } => break 'run (reason, usage),
                    Event::Failed(e) => return Err(e),
                }
            }
        };
        let first = first.unwrap_or_else(Instant::now);
        Ok(Completion {
            text,
            tokens,
            logprobs,
            finish_reason: reason,
            usage,
            prompt_secs: (first - started).as_secs_f64(),
            generate_secs: first.elapsed().as_secs_f64(),
        })
    }
}
