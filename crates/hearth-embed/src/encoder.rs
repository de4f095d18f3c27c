//! A BERT encoder with its tokenizer: what embedders and rerankers share.

use std::path::Path;

use crate::bert::{Bert, Encoded};
use crate::config::BertConfig;
use crate::text::TextEncoder;
use crate::weights::Tensors;
use crate::Result;

/// Tokens per forward pass. Measured on all-MiniLM (2 threads): 1024 is fastest; at 8192 the
/// activations outgrow the caches and throughput falls by 40%.
const TOKEN_BUDGET: usize = 1024;

pub(crate) struct Encoder {
    pub bert: Bert,
    pub text: TextEncoder,
}

impl Encoder {
    /// `limit`: the longest input accepted, at most the model's positions (default: all of them).
    pub fn load(dir: &Path, tensors: &Tensors, prefix: &str, limit: Option<usize>) -> Result<Self> {
        let cfg = BertConfig::load(dir)?;
        let limit = limit.unwrap_or(cfg.max_positions).min(cfg.max_positions);
        let bert = Bert::load(tensors, cfg, prefix)?;
        Ok(Encoder { bert, text: TextEncoder::load(dir, limit)? })
    }

    pub fn hidden_size(&self) -> usize {
        self.bert.config().hidden_size
    }

    /// Runs checked sequences in consecutive groups of at most [`TOKEN_BUDGET`] tokens (a longer
    /// sequence runs alone) and maps each sequence's `[tokens, hidden]` states through `per_seq`.
    /// Nothing is padded, so the order of sequences does not change the work.
    pub fn run<T>(&self, seqs: &[Encoded], mut per_seq: impl FnMut(&[f32]) -> T) -> Vec<T> {
        let h = self.hidden_size();
        let mut out = Vec::with_capacity(seqs.len());
        for batch in token_batches(seqs, TOKEN_BUDGET) {
            let states = self.bert.forward(batch);
            let mut row = 0;
            for s in batch {
                let n = s.ids.len();
                out.push(per_seq(&states[row * h..(row + n) * h]));
                row += n;
            }
        }
        out
    }
}

/// Consecutive groups of `seqs` of at most `budget` tokens each (a longer sequence alone).
pub(crate) fn token_batches(seqs: &[Encoded], budget: usize) -> impl Iterator<Item = &[Encoded]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start == seqs.len() {
            return None;
        }
        let (mut end, mut tokens) = (start + 1, seqs[start].ids.len());
        while end < seqs.len() && tokens + seqs[end].ids.len() <= budget {
            tokens += seqs[end].ids.len();
            end += 1;
        }
        let batch = &seqs[start..end];
        start = end;
        Some(batch)
    })
}
