//! The decoder as training runs it: the forward pass of every architecture the engine loads
//! from a Hugging Face or MLX directory, keeping what the backward pass needs, and the backward
//! pass to the adapters' parameters. The base stays frozen in its stored format.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hearth_engine::config::{ModelConfig, RopeScaling};
use hearth_engine::rope::Rope;
use hearth_engine::weights::WeightStore;
use hearth_formats::gguf::Gguf;
use hearth_kernels::int8::Int8Weights;
use hearth_kernels::panels::QuantPanels;
use hearth_kernels::Precision;
use hearth_kernels::{pool, FloatFormat, MatrixRef, RowFormat};

use crate::adapter::{Lora, LoraSaved, WeightTerms};
use crate::backward::{attention, attention_backward, gated, gated_backward, rms_norm, rms_norm_backward, rope, AttnShape};
use crate::linalg::{self, add_into};
use crate::loss::{cross_entropy, Batch, Mask};
use crate::{Result, TrainError};

/// A base model to train adapters on.
pub struct TrainModel {
    cfg: ModelConfig,
    store: WeightStore,
    /// The model's RoPE, then the sliding-window layers' own where they have one.
    ropes: Vec<Rope>,
    /// Keep only each block's input between the passes and recompute the rest (memory bounded
    /// by one block's activations, for one more forward pass of each block).
    grad_checkpoint: bool,
    /// Called before each block of either pass: where training waits while something more
    /// urgent (a server's inference) runs.
    yield_to: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Under [`Precision::Fast`], the 8-bit products of each frozen weight whose format has
    /// integer panels (see [`Self::set_precision`]); the others stay exact.
    int8: HashMap<String, Int8Linear>,
}

/// A frozen quantised weight `W` as training multiplies it with 8-bit activations: forward
/// through its own blocks in the inference kernels' panels (the products a chat with the
/// result runs), backward through `Wᵀ` quantised to 8 bits per 32 rows of `W`.
struct Int8Linear {
    forward: QuantPanels,
    backward: Int8Weights,
}

/// One step's result: the loss, the targets it averaged over, the adapters' gradients.
pub struct Step {
    pub loss: f32,
    pub ntoks: usize,
    pub grads: Lora,
}

/// Tokens whose logits exist at once (25 MB of them for a 49152-token vocabulary).
const HEAD_CHUNK: usize = 128;

/// A set of linear layers applied to the same input: separate (`q_proj`, `k_proj`, `v_proj`)
/// or one fused layer whose output splits into the parts (Phi-3's `qkv_proj`).
struct Projection {
    names: Vec<String>,
    widths: Vec<usize>,
}

/// What a layer's forward pass keeps for its backward pass.
struct Saved {
    x: Vec<f32>,
    h: Vec<f32>,
    h_inv: Vec<f32>,
    in_proj: Vec<Option<LoraSaved>>,
    /// q and k before their per-head norms (Qwen3, Gemma 3).
    qk_raw: Option<(Normed, Normed)>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    att: Vec<f32>,
    o_proj: Option<LoraSaved>,
    /// Gemma 2's sandwich: the attention output before its norm.
    o_raw: Option<Normed>,
    x_mid: Vec<f32>,
    h2: Vec<f32>,
    h2_inv: Vec<f32>,
    mlp_proj: Vec<Option<LoraSaved>>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
    down: Option<LoraSaved>,
    d_raw: Option<Normed>,
}

/// A block's activations as the forward pass leaves them for the backward pass.
enum Kept {
    All(Box<Saved>),
    /// Its input only (gradient checkpointing).
    Input(Vec<f32>),
}

/// A norm's input, and its rows' `1/rms`.
struct Normed {
    raw: Vec<f32>,
    inv: Vec<f32>,
}

/// A projection's outputs (one per part) and what its adapters keep.
type Projected = (Vec<Vec<f32>>, Vec<Option<LoraSaved>>);

impl TrainModel {
    /// A Hugging Face or MLX model directory (float or MLX-quantised), or a GGUF file (any
    /// block type: QLoRA on the file as it is).
    pub fn load(path: &Path) -> Result<TrainModel> {
        let (mut cfg, store, rope_freqs) = if path.is_file() {
            let g = Gguf::open(path)?;
            (ModelConfig::from_gguf(&g)?, WeightStore::from_gguf(&g)?, hearth_engine::loader::gguf_rope_freqs(&g)?)
        } else {
            let config_path = path.join("config.json");
            let text = std::fs::read_to_string(&config_path).map_err(|e| TrainError::Invalid(format!("{}: {e}", config_path.display())))?;
            let config: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| TrainError::Invalid(format!("{}: {e}", config_path.display())))?;
            (ModelConfig::from_hf(&config)?, WeightStore::from_safetensors_dir(path, &config)?, None)
        };
        if let Some(factors) = rope_freqs {
            cfg.rope.scaling = RopeScaling::FreqFactors(factors);
        }
        let ropes = std::iter::once(&cfg.rope)
            .chain(&cfg.sliding_rope)
            .map(|r| Rope::new(cfg.head_dim, r))
            .collect::<hearth_engine::Result<_>>()?;
        Ok(TrainModel { cfg, store, ropes, grad_checkpoint: false, yield_to: None, int8: HashMap::new() })
    }

    /// How the frozen weights multiply. [`Precision::Exact`] (the default): float32 products of
    /// the exactly de-quantised weights, mlx-lm's numbers. [`Precision::Fast`]: weights in the
    /// formats inference multiplies with 8-bit activations (those with panels: Q4_0, Q4_1,
    /// Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, MLX 4-bit with f16/bf16 scales) do so here too,
    /// forward through their own blocks, backward through an 8-bit copy of their transpose
    /// (≈ 1 byte per parameter); float and other formats stay exact.
    pub fn set_precision(&mut self, precision: Precision) {
        self.int8.clear();
        if precision == Precision::Exact {
            return;
        }
        let head = self.head_name();
        let names: Vec<&str> = self
            .store
            .iter()
            .filter_map(|(name, t)| name.strip_suffix(".weight").filter(|n| t.shape.len() == 2 && (n.ends_with("_proj") || *n == head)))
            .collect();
        let built = Mutex::new(HashMap::new());
        pool::global().run(names.len(), &|i| {
            let Ok(w) = self.matrix(names[i]) else { return };
            let Some(forward) = QuantPanels::new(&w, |_| {}) else { return };
            let Some(backward) = Int8Weights::new(&transposed(&w).view()) else { return };
            built.lock().unwrap_or_else(|e| e.into_inner()).insert(names[i].to_string(), Int8Linear { forward, backward });
        });
        self.int8 = built.into_inner().unwrap_or_else(|e| e.into_inner());
    }

    /// `x` `[n, in]` · `Wᵀ` for the frozen weight `name`: `[n, out]`.
    fn apply(&self, name: &str, x: &[f32]) -> Result<Vec<f32>> {
        Ok(match self.int8.get(name) {
            Some(l) => {
                let mut y = vec![0f32; x.len() / l.forward.cols() * l.forward.rows()];
                l.forward.matmul(x, &mut y);
                y
            }
            None => linalg::forward(&self.matrix(name)?, x),
        })
    }

    /// `dy` `[n, out]` · `W`: the gradient of [`Self::apply`]'s input.
    fn apply_backward(&self, name: &str, dy: &[f32]) -> Result<Vec<f32>> {
        Ok(match self.int8.get(name) {
            Some(l) => {
                let mut dx = vec![0f32; dy.len() / l.forward.rows() * l.forward.cols()];
                l.backward.matmul(dy, None, &mut dx);
                dx
            }
            None => linalg::backward(&self.matrix(name)?, dy),
        })
    }

    /// Gradient checkpointing per block (`--grad-checkpoint`): the same gradients, bit for bit.
    pub fn set_grad_checkpoint(&mut self, on: bool) {
        self.grad_checkpoint = on;
    }

    /// `f` runs before each block of the forward and backward passes (see `yield_to`).
    pub fn set_yield(&mut self, f: Option<Arc<dyn Fn() + Send + Sync>>) {
        self.yield_to = f;
    }

    fn yield_now(&self) {
        if let Some(f) = &self.yield_to {
            f();
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The base's parameters (quantised matrices counted by their logical shape).
    pub fn parameter_count(&self) -> usize {
        self.store.iter().map(|(_, t)| t.shape.iter().product::<usize>()).sum()
    }

    fn matrix(&self, name: &str) -> Result<MatrixRef<'_>> {
        Ok(self.store.get(&format!("{name}.weight"))?.matrix()?)
    }

    fn norm(&self, name: &str) -> Result<Vec<f32>> {
        let mut w = self.store.get(&format!("{name}.weight"))?.to_f32_vec()?;
        w.iter_mut().for_each(|v| *v += self.cfg.norm_weight_offset);
        Ok(w)
    }

    /// The output projection: `lm_head`, or the embeddings where they are tied.
    fn head_name(&self) -> &'static str {
        if self.store.contains("lm_head.weight") && !self.cfg.tie_word_embeddings {
            "lm_head"
        } else {
            "model.embed_tokens"
        }
    }

    fn eps(&self) -> f32 {
        self.cfg.rms_norm_eps as f32
    }

    /// A linear layer on `x`: the frozen weight, the adapter's update (DoRA's rescaling), the
    /// bias.
    fn linear(&self, name: &str, x: &[f32], lora: &Lora) -> Result<(Vec<f32>, Option<LoraSaved>)> {
        let mut y = self.apply(name, x)?;
        if let Some(heads) = self.interleaved_heads(name) {
            y = reorder_heads(&y, heads, self.cfg.head_dim, true);
        }
        let saved = lora.forward(name, x, &mut y, &|a| self.weight_terms(name, a))?;
        if let Ok(bias) = self.store.get(&format!("{name}.bias")) {
            let bias = bias.to_f32_vec()?;
            y.chunks_exact_mut(bias.len()).for_each(|row| add_into(row, &bias));
        }
        Ok((y, saved))
    }

    /// `∂/∂x` of [`Self::linear`], the adapter's gradients added into `grads`.
    fn linear_backward(
        &self,
        name: &str,
        saved: &Option<LoraSaved>,
        x: &[f32],
        dy: &[f32],
        lora: &Lora,
        grads: &mut Lora,
    ) -> Result<Vec<f32>> {
        let rescaled = saved.as_ref().and_then(|s| lora.dora_backward(name, s, dy, grads));
        let dy = rescaled.as_deref().unwrap_or(dy);
        let mut dx = match self.interleaved_heads(name) {
            Some(heads) => self.apply_backward(name, &reorder_heads(dy, heads, self.cfg.head_dim, false))?,
            None => self.apply_backward(name, dy)?,
        };
        if let Some(s) = saved {
            lora.backward(name, s, x, dy, &mut dx, grads);
        }
        Ok(dx)
    }

    /// Each output row's squared norm of linear layer `name`'s frozen weight, in the adapters'
    /// (Hugging Face's) output order.
    fn row_square_norms(&self, name: &str) -> Result<Vec<f32>> {
        let w = self.matrix(name)?;
        let mut row = vec![0f32; w.cols()];
        let norms: Vec<f32> = (0..w.rows())
            .map(|r| {
                w.row(r, &mut row);
                row.iter().map(|v| v * v).sum()
            })
            .collect();
        Ok(match self.interleaved_heads(name) {
            Some(heads) => reorder_heads(&norms, heads, self.cfg.head_dim, true),
            None => norms,
        })
    }

    /// What DoRA needs of `name`'s frozen weight `W` for adapter `a` `[in, r]`: the rows'
    /// squared norms and `W·A` `[out, r]`.
    fn weight_terms(&self, name: &str, a: &[f32]) -> Result<WeightTerms> {
        let w = self.matrix(name)?;
        let r = a.len() / w.cols();
        let mut aw = linalg::forward(&w, &linalg::transpose(a, w.cols(), r));
        if let Some(heads) = self.interleaved_heads(name) {
            aw = reorder_heads(&aw, heads, self.cfg.head_dim, true);
        }
        Ok((self.row_square_norms(name)?, linalg::transpose(&aw, r, w.rows())))
    }

    /// DoRA's initial magnitudes for layer `name`: its weight's row norms (mlx-lm's `m`).
    pub fn dora_magnitudes(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.row_square_norms(name)?.iter().map(|v| v.sqrt()).collect())
    }

    /// For a GGUF Llama/Mistral base, whose q and k rows are in llama.cpp's interleaved RoPE
    /// order: the heads of `name`'s output. Its products are put in Hugging Face's order, so the
    /// adapters and RoPE are Hugging Face's (the adapters load on any base).
    fn interleaved_heads(&self, name: &str) -> Option<usize> {
        match self.cfg.rope_interleaved {
            true if name.ends_with("self_attn.q_proj") => Some(self.cfg.num_heads),
            true if name.ends_with("self_attn.k_proj") => Some(self.cfg.num_kv_heads),
            _ => None,
        }
    }

    fn projection(&self, layer: usize, fused: &str, parts: &[&str], widths: &[usize]) -> Projection {
        let p = format!("model.layers.{layer}");
        if self.store.contains(&format!("{p}.{fused}.weight")) {
            Projection { names: vec![format!("{p}.{fused}")], widths: widths.to_vec() }
        } else {
            Projection { names: parts.iter().map(|n| format!("{p}.{n}")).collect(), widths: widths.to_vec() }
        }
    }

    fn project(&self, proj: &Projection, x: &[f32], lora: &Lora) -> Result<Projected> {
        let mut outs = Vec::new();
        let mut saved = Vec::new();
        for name in &proj.names {
            let (y, s) = self.linear(name, x, lora)?;
            outs.push(y);
            saved.push(s);
        }
        if proj.names.len() == 1 && proj.widths.len() > 1 {
            outs = split_cols(&outs[0], &proj.widths);
        }
        Ok((outs, saved))
    }

    fn project_backward(
        &self,
        proj: &Projection,
        saved: &[Option<LoraSaved>],
        x: &[f32],
        dys: &[Vec<f32>],
        lora: &Lora,
        grads: &mut Lora,
    ) -> Result<Vec<f32>> {
        if proj.names.len() == 1 && proj.widths.len() > 1 {
            return self.linear_backward(&proj.names[0], &saved[0], x, &join_cols(dys, &proj.widths), lora, grads);
        }
        let mut dx = vec![0f32; x.len()];
        for ((name, s), dy) in proj.names.iter().zip(saved).zip(dys) {
            add_into(&mut dx, &self.linear_backward(name, s, x, dy, lora, grads)?);
        }
        Ok(dx)
    }

    /// mlx-lm's loss on `batch` with `lora`'s adapters, and its gradients (`default_loss` and
    /// `nn.value_and_grad`).
    pub fn loss_and_grads(&self, batch: &Batch, lora: &Lora, mask: Mask) -> Result<Step> {
        let (loss, ntoks, grads) = self.run(batch, lora, mask, true)?;
        Ok(Step { loss, ntoks, grads: grads.expect("asked for") })
    }

    /// The loss alone, and the number of targets it averages over.
    pub fn loss(&self, batch: &Batch, lora: &Lora, mask: Mask) -> Result<(f32, usize)> {
        let (loss, ntoks, _) = self.run(batch, lora, mask, false)?;
        Ok((loss, ntoks))
    }

    /// The linear layers of the last `num_layers` blocks (all with `None`) that adapters train,
    /// as mlx-lm picks them: every linear of a block, or those named by `keys` (relative to the
    /// block, `self_attn.q_proj`); with their inputs and outputs.
    pub fn adaptable(&self, num_layers: Option<usize>, keys: &[String]) -> Result<Vec<(String, usize, usize)>> {
        let total = self.cfg.num_layers;
        let n = layers_to_adapt(num_layers, total)?;
        let mut out = Vec::new();
        for (name, t) in self.store.iter() {
            let Some(rest) = name.strip_prefix("model.layers.") else { continue };
            let Some((index, key)) = rest.split_once('.') else { continue };
            let Some(key) = key.strip_suffix(".weight") else { continue };
            let index: usize = index.parse().unwrap_or(usize::MAX);
            let linear = key.ends_with("_proj") && t.shape.len() == 2;
            if linear && index >= total - n && index < total && (keys.is_empty() || keys.iter().any(|k| k == key)) {
                out.push((format!("model.layers.{index}.{key}"), t.shape[1], t.shape[0]));
            }
        }
        out.sort();
        if out.is_empty() {
            return Err(TrainError::Invalid("no linear layer matches the adapter's keys".into()));
        }
        Ok(out)
    }

    /// Refuses adapters that name a layer this model lacks or do not fit its shape (a resumed or
    /// given adapter file made for another model), before any product would misread them.
    pub fn check(&self, lora: &Lora) -> Result<()> {
        let layers = self.adaptable(None, &[])?;
        for (name, l) in &lora.layers {
            let (_, inputs, outputs) = layers
                .iter()
                .find(|(n, ..)| n == name)
                .ok_or_else(|| TrainError::Invalid(format!("the adapter's {name} is not a linear layer of this model")))?;
            if l.rank == 0 || l.a.len() != inputs * l.rank || l.b.len() != outputs * l.rank || !(l.m.is_empty() || l.m.len() == *outputs) {
                return Err(TrainError::Invalid(format!("the adapter's {name} does not fit the layer ({outputs}x{inputs})")));
            }
        }
        Ok(())
    }

    fn run(&self, batch: &Batch, lora: &Lora, mask: Mask, backward: bool) -> Result<(f32, usize, Option<Lora>)> {
        let c = &self.cfg;
        let (hid, hd, nh, nkv) = (c.hidden_size, c.head_dim, c.num_heads, c.num_kv_heads);
        let (qs, kvs, inter) = (c.q_size(), c.kv_size(), c.intermediate_size);
        let t = batch.steps();
        let inputs = batch.inputs();
        let n = inputs.len();
        if t == 0 {
            return Err(TrainError::Invalid("a batch needs rows of at least two tokens".into()));
        }
        let embed = self.matrix("model.embed_tokens")?;
        let mut x = vec![0f32; n * hid];
        for (row, &id) in x.chunks_exact_mut(hid).zip(&inputs) {
            if id as usize >= c.vocab_size {
                return Err(TrainError::Invalid(format!("token id {id} is outside the vocabulary")));
            }
            embed.row(id as usize, row);
        }
        if c.scale_embeddings {
            let s = (hid as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= s);
        }
        let tables: Vec<(Vec<f32>, Vec<f32>)> = self
            .ropes
            .iter()
            .map(|r| {
                let (mut cos, mut sin) = (vec![0f32; t * hd / 2], vec![0f32; t * hd / 2]);
                r.fill(0, t, &mut cos, &mut sin);
                (cos, sin)
            })
            .collect();

        // Forward, keeping each layer's activations, or with gradient checkpointing only its
        // input (the backward pass recomputes the rest, one block at a time).
        let mut kept = Vec::with_capacity(c.num_layers);
        for li in 0..c.num_layers {
            self.yield_now();
            let (out, saved) = self.layer_forward(li, x, t, &tables, lora)?;
            x = out;
            if backward {
                kept.push(if self.grad_checkpoint { Kept::Input(saved.x) } else { Kept::All(Box::new(saved)) });
            }
        }
        let final_norm = self.norm("model.norm")?;
        let (hn, hn_inv) = rms_norm(&x, &final_norm, self.eps());
        let head_name = self.head_name();
        // Only the positions whose targets count reach the vocabulary (under --mask-prompt and
        // with padding, most do not): the loss and gradients are those of the full product.
        let (counted, targets): (Vec<usize>, Vec<u32>) =
            batch.targets(mask).into_iter().enumerate().filter(|(_, (_, counts))| *counts).map(|(i, (target, _))| (i, target)).unzip();
        let ntoks = targets.len();
        // The head in chunks of tokens: each chunk's logits give its losses and, when training,
        // their gradient through the head at once, so `[tokens, vocab]` never exists whole
        // (200 MB for a batch of 4 × 256 tokens of SmolLM2, paged in afresh every step).
        let mut losses = Vec::with_capacity(ntoks);
        let mut dhn = if backward { vec![0f32; n * hid] } else { Vec::new() };
        for (rows, targets) in counted.chunks(HEAD_CHUNK).zip(targets.chunks(HEAD_CHUNK)) {
            let hn_rows: Vec<f32> = rows.iter().flat_map(|&i| hn[i * hid..(i + 1) * hid].iter().copied()).collect();
            let mut logits = self.apply(head_name, &hn_rows)?;
            let raw = c.final_logit_softcap.map(|cap| {
                let raw = logits.clone();
                logits.iter_mut().for_each(|l| *l = (*l / cap).tanh() * cap);
                (cap, raw)
            });
            losses.extend(cross_entropy(&mut logits, targets, ntoks));
            if !backward {
                continue;
            }
            if let Some((cap, raw)) = raw {
                // d(cap·tanh(z/cap))/dz = 1 − tanh²(z/cap).
                logits.iter_mut().zip(raw).for_each(|(g, z)| {
                    let th = (z / cap).tanh();
                    *g *= 1.0 - th * th;
                });
            }
            let dhn_rows = self.apply_backward(head_name, &logits)?;
            for (&i, row) in rows.iter().zip(dhn_rows.chunks_exact(hid)) {
                dhn[i * hid..(i + 1) * hid].copy_from_slice(row);
            }
        }
        let loss = (losses.iter().sum::<f64>() / ntoks.max(1) as f64) as f32;
        if !backward {
            return Ok((loss, ntoks, None));
        }

        // Backward.
        let mut grads = lora.zeros_like();
        let mut dx = rms_norm_backward(&x, &final_norm, &hn_inv, &dhn);
        for li in (0..c.num_layers).rev() {
            self.yield_now();
            let s = match kept.pop().expect("one per layer") {
                Kept::All(s) => *s,
                Kept::Input(x) => self.layer_forward(li, x, t, &tables, lora)?.1,
            };
            let p = format!("model.layers.{li}");
            // x_out = x_mid + post_ff(down(act(gate, up)))
            let mut dd = dx.clone();
            if let Some(n) = &s.d_raw {
                dd = rms_norm_backward(&n.raw, &self.norm(&format!("{p}.post_feedforward_layernorm"))?, &n.inv, &dd);
            }
            let dact = self.linear_backward(&format!("{p}.mlp.down_proj"), &s.down, &s.act, &dd, lora, &mut grads)?;
            let (dgate, dup) = gated_backward(c.activation, &s.gate, &s.up, &dact);
            let gate_up = self.projection(li, "mlp.gate_up_proj", &["mlp.gate_proj", "mlp.up_proj"], &[inter, inter]);
            let dh2 = self.project_backward(&gate_up, &s.mlp_proj, &s.h2, &[dgate, dup], lora, &mut grads)?;
            let mlp_norm = if c.sandwich_norms { "pre_feedforward_layernorm" } else { "post_attention_layernorm" };
            add_into(&mut dx, &rms_norm_backward(&s.x_mid, &self.norm(&format!("{p}.{mlp_norm}"))?, &s.h2_inv, &dh2));
            // x_mid = x + post_attn(o_proj(attention(q, k, v)))
            let mut do_ = dx.clone();
            if let Some(n) = &s.o_raw {
                do_ = rms_norm_backward(&n.raw, &self.norm(&format!("{p}.post_attention_layernorm"))?, &n.inv, &do_);
            }
            let datt = self.linear_backward(&format!("{p}.self_attn.o_proj"), &s.o_proj, &s.att, &do_, lora, &mut grads)?;
            let shape = self.attn_shape(li, n, t);
            let (mut dq, mut dk, dv) = attention_backward(&s.q, &s.k, &s.v, &s.probs, &datt, &shape);
            let (cos, sin) = &tables[self.rope_of(li)];
            rope(&mut dq, nh, hd, cos, sin, true);
            rope(&mut dk, nkv, hd, cos, sin, true);
            if let Some((qn, kn)) = &s.qk_raw {
                dq = rms_norm_backward(&qn.raw, &self.norm(&format!("{p}.self_attn.q_norm"))?, &qn.inv, &dq);
                dk = rms_norm_backward(&kn.raw, &self.norm(&format!("{p}.self_attn.k_norm"))?, &kn.inv, &dk);
            }
            let qkv =
                self.projection(li, "self_attn.qkv_proj", &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], &[qs, kvs, kvs]);
            let dh = self.project_backward(&qkv, &s.in_proj, &s.h, &[dq, dk, dv], lora, &mut grads)?;
            add_into(&mut dx, &rms_norm_backward(&s.x, &self.norm(&format!("{p}.input_layernorm"))?, &s.h_inv, &dh));
        }
        Ok((loss, ntoks, Some(grads)))
    }

    /// Block `li`'s forward pass on `x` (`[n, hidden]`, sequences of `t`): its output and what
    /// its backward pass needs.
    fn layer_forward(&self, li: usize, x: Vec<f32>, t: usize, tables: &[(Vec<f32>, Vec<f32>)], lora: &Lora) -> Result<(Vec<f32>, Saved)> {
        let c = &self.cfg;
        let (hd, nh, nkv) = (c.head_dim, c.num_heads, c.num_kv_heads);
        let (qs, kvs, inter) = (c.q_size(), c.kv_size(), c.intermediate_size);
        let n = x.len() / c.hidden_size;
        let p = format!("model.layers.{li}");
        let (h, h_inv) = rms_norm(&x, &self.norm(&format!("{p}.input_layernorm"))?, self.eps());
        let qkv = self.projection(li, "self_attn.qkv_proj", &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], &[qs, kvs, kvs]);
        let (mut parts, in_proj) = self.project(&qkv, &h, lora)?;
        let v = parts.pop().expect("v");
        let (mut k, mut q) = (parts.pop().expect("k"), parts.pop().expect("q"));
        let qk_raw = if c.qk_norm {
            let (qn, q_inv) = rms_norm(&q, &self.norm(&format!("{p}.self_attn.q_norm"))?, self.eps());
            let (kn, k_inv) = rms_norm(&k, &self.norm(&format!("{p}.self_attn.k_norm"))?, self.eps());
            Some((Normed { raw: std::mem::replace(&mut q, qn), inv: q_inv }, Normed { raw: std::mem::replace(&mut k, kn), inv: k_inv }))
        } else {
            None
        };
        let (cos, sin) = &tables[self.rope_of(li)];
        rope(&mut q, nh, hd, cos, sin, false);
        rope(&mut k, nkv, hd, cos, sin, false);
        let shape = self.attn_shape(li, n, t);
        let (att, probs) = attention(&q, &k, &v, &shape);
        let (mut o, o_proj) = self.linear(&format!("{p}.self_attn.o_proj"), &att, lora)?;
        // Gemma 2 normalises the attention output before the residual add.
        let o_raw = if c.sandwich_norms {
            let (normed, inv) = rms_norm(&o, &self.norm(&format!("{p}.post_attention_layernorm"))?, self.eps());
            Some(Normed { raw: std::mem::replace(&mut o, normed), inv })
        } else {
            None
        };
        let mut x_mid = x.clone();
        add_into(&mut x_mid, &o);
        let mlp_norm = if c.sandwich_norms { "pre_feedforward_layernorm" } else { "post_attention_layernorm" };
        let (h2, h2_inv) = rms_norm(&x_mid, &self.norm(&format!("{p}.{mlp_norm}"))?, self.eps());
        let gate_up = self.projection(li, "mlp.gate_up_proj", &["mlp.gate_proj", "mlp.up_proj"], &[inter, inter]);
        let (mut gu, mlp_proj) = self.project(&gate_up, &h2, lora)?;
        let (up, gate) = (gu.pop().expect("up"), gu.pop().expect("gate"));
        let act = gated(c.activation, &gate, &up);
        let (mut d, down) = self.linear(&format!("{p}.mlp.down_proj"), &act, lora)?;
        let d_raw = if c.sandwich_norms {
            let (normed, inv) = rms_norm(&d, &self.norm(&format!("{p}.post_feedforward_layernorm"))?, self.eps());
            Some(Normed { raw: std::mem::replace(&mut d, normed), inv })
        } else {
            None
        };
        let mut x_out = x_mid.clone();
        add_into(&mut x_out, &d);
        let saved = Saved {
            x,
            h,
            h_inv,
            in_proj,
            qk_raw,
            q,
            k,
            v,
            probs,
            att,
            o_proj,
            o_raw,
            x_mid,
            h2,
            h2_inv,
            mlp_proj,
            gate,
            up,
            act,
            down,
            d_raw,
        };
        Ok((x_out, saved))
    }

    fn rope_of(&self, layer: usize) -> usize {
        usize::from(self.cfg.layer_windows[layer].is_some() && self.ropes.len() > 1)
    }

    fn attn_shape(&self, layer: usize, rows: usize, seq: usize) -> AttnShape {
        let c = &self.cfg;
        AttnShape {
            rows,
            seq,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            scale: c.attn_scale as f32,
            window: c.layer_windows[layer],
            softcap: c.attn_logit_softcap,
        }
    }
}

/// Each token row's head outputs between llama.cpp's order (RoPE pairs adjacent: `2i + j`) and
/// Hugging Face's (halves: `j · head_dim/2 + i`); `to_hf` picks the direction.
fn reorder_heads(y: &[f32], heads: usize, head_dim: usize, to_hf: bool) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; y.len()];
    for (src, dst) in y.chunks_exact(heads * head_dim).zip(out.chunks_exact_mut(heads * head_dim)) {
        for h in 0..heads {
            for i in 0..half {
                for j in 0..2 {
                    let (llama, hf) = (h * head_dim + 2 * i + j, h * head_dim + j * half + i);
                    if to_hf {
                        dst[hf] = src[llama];
                    } else {
                        dst[llama] = src[hf];
                    }
                }
            }
        }
    }
    out
}

/// `w`'s transpose as a float32 matrix (its rows de-quantised exactly).
fn transposed(w: &MatrixRef<'_>) -> FloatMatrix {
    let (rows, cols) = (w.rows(), w.cols());
    let mut bytes = vec![0u8; rows * cols * 4];
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        w.row(r, &mut row);
        for (c, v) in row.iter().enumerate() {
            bytes[(c * rows + r) * 4..][..4].copy_from_slice(&v.to_le_bytes());
        }
    }
    FloatMatrix { rows: cols, cols: rows, bytes }
}

/// A float32 matrix held in its bytes, as a [`MatrixRef`] reads them.
struct FloatMatrix {
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

impl FloatMatrix {
    fn view(&self) -> MatrixRef<'_> {
        MatrixRef::new(RowFormat::Float(FloatFormat::F32), self.rows, self.cols, &self.bytes, &[], &[]).expect("sized to fit")
    }
}

/// Rows of concatenated parts (`widths` each) split into one buffer per part.
fn split_cols(y: &[f32], widths: &[usize]) -> Vec<Vec<f32>> {
    let total: usize = widths.iter().sum();
    let mut parts: Vec<Vec<f32>> = widths.iter().map(|w| Vec::with_capacity(y.len() / total * w)).collect();
    for row in y.chunks_exact(total) {
        let mut at = 0;
        for (part, &w) in parts.iter_mut().zip(widths) {
            part.extend_from_slice(&row[at..at + w]);
            at += w;
        }
    }
    parts
}

/// The inverse of [`split_cols`].
fn join_cols(parts: &[Vec<f32>], widths: &[usize]) -> Vec<f32> {
    let rows = parts[0].len() / widths[0];
    let mut y = Vec::with_capacity(rows * widths.iter().sum::<usize>());
    for r in 0..rows {
        for (part, &w) in parts.iter().zip(widths) {
            y.extend_from_slice(&part[r * w..(r + 1) * w]);
        }
    }
    y
}

/// How many of a model's `total` blocks `--num-layers` adapts (`None`: all).
pub fn layers_to_adapt(num_layers: Option<usize>, total: usize) -> Result<usize> {
    let n = num_layers.unwrap_or(total);
    if n > total {
        return Err(TrainError::Invalid(format!("--num-layers {n} is more than the model's {total} layers")));
    }
    Ok(n)
}
