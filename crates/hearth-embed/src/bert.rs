//! The BERT encoder over host f32 buffers. A batch's sequences are concatenated, never padded:
//! the linear layers run once over all tokens on the kernels' many-token path, and attention
//! (bidirectional) runs per (sequence, head) on the thread pool.

use std::cell::RefCell;

use hearth_kernels::attend::{self, attend, key_slot, KvHead, Mask, Positions, Queries, ScoreScale, KEY_TILE};
use hearth_kernels::pool;

use crate::config::{Activation, BertConfig};
use crate::math::{self, SendPtr};
use crate::weights::{LayerNorm, Linear, Matrix, Tensors};
use crate::{EmbedError, Result};

/// One model input: token ids and their token-type (segment) ids, special tokens included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub types: Vec<u32>,
    /// Leading tokens that are the prompt's, which a model pooling without its prompt leaves out.
    pub prompt_tokens: usize,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

pub(crate) struct Bert {
    cfg: BertConfig,
    word: Matrix,
    position: Matrix,
    token_type: Matrix,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// One (sequence, head)'s contiguous query, key, value and output rows, and its scores.
#[derive(Default)]
struct AttnScratch {
    /// One head's keys in the kernel's tiles, and its values by position.
    keys: Vec<f32>,
    values: Vec<f32>,
    kernel: attend::Scratch,
}

thread_local! {
    static ATTENTION: RefCell<AttnScratch> = RefCell::new(AttnScratch::default());
}

impl Bert {
    /// Loads the tensors under `prefix` (`""` for `BertModel`, `"bert."` inside task models).
    pub fn load(t: &Tensors, cfg: BertConfig, prefix: &str) -> Result<Self> {
        let (h, inter, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let e = |name: &str| format!("{prefix}embeddings.{name}");
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let l = |name: &str| format!("{prefix}encoder.layer.{i}.{name}");
                Ok(Layer {
                    query: t.linear(&l("attention.self.query"), h, h)?,
                    key: t.linear(&l("attention.self.key"), h, h)?,
                    value: t.linear(&l("attention.self.value"), h, h)?,
                    attn_out: t.linear(&l("attention.output.dense"), h, h)?,
                    attn_norm: t.layer_norm(&l("attention.output.LayerNorm"), h, eps)?,
                    up: t.linear(&l("intermediate.dense"), inter, h)?,
                    down: t.linear(&l("output.dense"), h, inter)?,
                    out_norm: t.layer_norm(&l("output.LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Bert {
            word: t.matrix(&e("word_embeddings.weight"), cfg.vocab_size, h)?,
            position: t.matrix(&e("position_embeddings.weight"), cfg.max_positions, h)?,
            token_type: t.matrix(&e("token_type_embeddings.weight"), cfg.type_vocab_size, h)?,
            embed_norm: t.layer_norm(&e("LayerNorm"), h, eps)?,
            layers,
            cfg,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Rejects what the forward pass cannot take; `index` names the input in the error.
    pub fn check(&self, seq: &Encoded, index: usize) -> Result<()> {
        let bad = |message: String| Err(EmbedError::BadInput { index, message });
        if seq.ids.is_empty() {
            return bad("no tokens".into());
        }
        if seq.ids.len() > self.cfg.max_positions {
            return Err(EmbedError::TooLong { index, tokens: seq.ids.len(), limit: self.cfg.max_positions });
        }
        if let Some(&id) = seq.ids.iter().find(|&&id| id as usize >= self.word.rows()) {
            return bad(format!("token id {id} is outside the vocabulary of {}", self.word.rows()));
        }
        if seq.types.len() != seq.ids.len() || seq.types.iter().any(|&t| t as usize >= self.token_type.rows()) {
            return bad("invalid token type ids".into());
        }
        Ok(())
    }

    /// The last hidden states `[tokens, hidden]` of the concatenated sequences, which must
    /// have passed [`Bert::check`].
    pub fn forward(&self, seqs: &[Encoded]) -> Vec<f32> {
        let (h, inter) = (self.cfg.hidden_size, self.cfg.intermediate_size);
        let total: usize = seqs.iter().map(|s| s.ids.len()).sum();
        let mut x = vec![0f32; total * h];
        let mut row = vec![0f32; h];
        let mut t = 0;
        for seq in seqs {
            for (p, (&id, &ty)) in seq.ids.iter().zip(&seq.types).enumerate() {
                let xt = &mut x[t * h..(t + 1) * h];
                self.word.add_row(id as usize, &mut row, xt);
                self.position.add_row(p, &mut row, xt);
                self.token_type.add_row(ty as usize, &mut row, xt);
                t += 1;
            }
        }
        self.embed_norm.apply(&mut x);
        let (mut q, mut k, mut v) = (vec![0f32; total * h], vec![0f32; total * h], vec![0f32; total * h]);
        let (mut att, mut o, mut up) = (vec![0f32; total * h], vec![0f32; total * h], vec![0f32; total * inter]);
        for layer in &self.layers {
            layer.query.forward(&x, &mut q);
            layer.key.forward(&x, &mut k);
            layer.value.forward(&x, &mut v);
            self.attention(seqs, &q, &k, &v, &mut att);
            layer.attn_out.forward(&att, &mut o);
            add_and_norm(&mut x, &o, &layer.attn_norm);
            layer.up.forward(&x, &mut up);
            let act = self.cfg.activation;
            math::for_each_row(&mut up, inter, &|_, r| {
                math::wide(
                    #[inline(always)]
                    || match act {
                        Activation::GeluErf => r.iter_mut().for_each(|v| *v = math::gelu_erf(*v)),
                        Activation::GeluTanh => r.iter_mut().for_each(|v| *v = math::gelu_tanh(*v)),
                    },
                )
            });
            layer.down.forward(&up, &mut o);
            add_and_norm(&mut x, &o, &layer.out_norm);
        }
        x
    }

    /// Softmax(q·kᵀ/√d)·v within each sequence, per head; writes `[tokens, hidden]` to `out`.
    /// Each (sequence, head) lays its keys out in the kernel's tiles and its values in rows;
    /// the queries are read in place.
    fn attention(&self, seqs: &[Encoded], q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
        let (h, nh, hd) = (self.cfg.hidden_size, self.cfg.num_heads, self.cfg.head_dim());
        let score = ScoreScale { scale: 1.0 / (hd as f32).sqrt(), softcap: None };
        let mask = Mask { window: None, bidirectional: true };
        let mut starts = Vec::with_capacity(seqs.len());
        let mut t = 0;
        for s in seqs {
            starts.push(t);
            t += s.ids.len();
        }
        let out_ptr = SendPtr(out.as_mut_ptr());
        pool::global().run(seqs.len() * nh, &|unit| {
            let (si, head) = (unit / nh, unit % nh);
            let (first, n) = (starts[si], seqs[si].ids.len());
            let col = |j: usize| (first + j) * h + head * hd;
            ATTENTION.with_borrow_mut(|AttnScratch { keys, values, kernel }| {
                keys.clear();
                keys.resize(n.div_ceil(KEY_TILE) * KEY_TILE * hd, 0.0);
                values.clear();
                for j in 0..n {
                    for (d, &x) in k[col(j)..col(j) + hd].iter().enumerate() {
                        keys[key_slot(j, d, hd)] = x;
                    }
                    values.extend_from_slice(&v[col(j)..col(j) + hd]);
                }
                let queries = Queries { data: &q[col(0)..], stride: h, count: n, head_dim: hd, positions: Positions::From(0) };
                let kv = KvHead { key_tiles: keys, values, len: n };
                attend(queries, kv, mask, score, kernel, |j, o| {
                    // SAFETY: each (token, head) slot of `out` belongs to exactly one unit.
                    unsafe { std::ptr::copy_nonoverlapping(o.as_ptr(), out_ptr.get().add(col(j)), hd) };
                });
            });
        });
    }
}

/// `x = LayerNorm(x + o)`, row by row in parallel.
fn add_and_norm(x: &mut [f32], o: &[f32], norm: &LayerNorm) {
    let h = norm.len();
    math::for_each_row(x, h, &|r, row| {
        row.iter_mut().zip(&o[r * h..(r + 1) * h]).for_each(|(a, b)| *a += b);
        norm.apply(row);
    });
}
