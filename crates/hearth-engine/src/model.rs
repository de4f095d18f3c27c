//! The decoder: one layer structure, switched by [`ModelConfig`], for every supported
//! architecture, run by one of two decoder types behind the [`Decoder`] trait: our CPU kernels
//! over host buffers (`host`) or candle's tensors on a device (`candle`). Each holds its weights
//! and caches in its own form only; loading the architecture is shared ([`DecoderWeights`]).
//!
//! A forward pass takes several sequences at once: their tokens are stacked for the linear
//! layers (one matrix product per weight for the whole batch) and attention runs per sequence
//! against that sequence's own KV cache, so sequences of any lengths and positions batch
//! together without padding. Each sequence may name a LoRA [`Adapter`], applied to its rows
//! only, so sequences with different adapters (or none) share one batch.

use std::cell::RefCell;

use hearth_kernels::panels::QuantPanels;
use hearth_kernels::Precision;

use crate::config::{ModelConfig, RopeScaling};
use crate::kv_cache::KvCache;
use crate::lora::{next_id, Adapter, LoraAdapter, LoraDelta};
use crate::rope::Rope;
use crate::weights::{StoredTensor, WeightStore};
use crate::{EngineError, Result};

/// Which decoder type runs a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Our CPU kernels over host buffers.
    #[default]
    Host,
    /// candle tensors on the model's device (GPUs; on the CPU a cross-check).
    Candle,
}

/// What a forward pass returns for each sequence.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Head {
    LastLogits,
    AllLogits,
    LastHidden,
    AllHidden,
}

impl Head {
    /// Whether every position's output is returned, not only the last one's.
    pub(crate) fn every_position(self) -> bool {
        matches!(self, Head::AllLogits | Head::AllHidden)
    }

    /// Whether the output is the hidden state after the final norm, without the LM head.
    pub(crate) fn hidden(self) -> bool {
        matches!(self, Head::LastHidden | Head::AllHidden)
    }
}

/// One sequence's part of a forward pass.
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    /// The adapter this sequence runs with; `None` runs the model's default (the one given
    /// when loading, if any).
    pub adapter: Option<&'a Adapter>,
}

impl<'a> SeqInput<'a> {
    /// `tokens` appended to `cache`, with the model's default adapter.
    pub fn new(tokens: &'a [u32], cache: &'a mut KvCache) -> Self {
        SeqInput { tokens, cache, adapter: None }
    }
}

/// A linear layer's name and shape, by its slot (the order the decoder loaded them in).
pub(crate) struct LinearShape {
    pub(crate) name: String,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

/// `lora`'s deltas by the slot of the linear layer each belongs to. The error names the first
/// adapter tensor (by name, then in the model's layer order) that is not for one of `linears`
/// or does not fit its layer.
pub(crate) fn deltas_by_slot(linears: &[LinearShape], lora: &LoraAdapter) -> Result<Vec<Option<LoraDelta>>> {
    let mut names: Vec<&String> = lora.layers.keys().collect();
    names.sort();
    if let Some(name) = names.iter().find(|n| !linears.iter().any(|s| s.name == ***n)) {
        return Err(EngineError::Weights(format!("the adapter's {name}.lora_a is not for a linear layer of this model")));
    }
    let mut deltas = vec![None; linears.len()];
    for (slot, LinearShape { name, rows, cols }) in linears.iter().enumerate() {
        let Some(delta) = lora.layers.get(name) else { continue };
        let (inputs, outputs) = delta.sides();
        if inputs != *cols {
            let shape = [inputs, delta.rank];
            return Err(EngineError::Weights(format!("the adapter's {name}.lora_a is {shape:?}; the layer takes {cols} inputs")));
        }
        if outputs != *rows {
            let shape = [delta.rank, outputs];
            return Err(EngineError::Weights(format!("the adapter's {name}.lora_b is {shape:?}; the layer has {rows} outputs")));
        }
        deltas[slot] = Some(delta.clone());
    }
    Ok(deltas)
}

/// Loading that keeps nothing but each linear layer's name and shape: what checking an
/// adapter against a model on disk needs.
struct ShapesOnly;

impl WeightForm for ShapesOnly {
    type Linear = ();
    type Norm = ();

    fn linear(&self, _: StoredTensor, _: Option<Vec<f32>>, _: usize) -> Result<()> {
        Ok(())
    }

    fn norm(&self, _: Vec<f32>, _: f32) -> Result<()> {
        Ok(())
    }
}

/// The linear layers a model with these weights would have, by slot, without loading it.
pub(crate) fn linear_shapes(cfg: ModelConfig, store: &WeightStore) -> Result<Vec<LinearShape>> {
    Ok(DecoderWeights::load(&ShapesOnly, cfg, store, None)?.linears)
}

/// A decoder type: its weights, its KV caches and its forward pass.
pub(crate) trait Decoder: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// Bytes of weights as stored.
    fn weight_bytes(&self) -> usize;

    fn precision(&self) -> Precision;

    /// A cache in this decoder's form for `capacity` tokens.
    fn new_cache(&self, capacity: usize) -> Result<KvCache>;

    /// Every linear layer, by slot.
    fn linears(&self) -> &[LinearShape];

    /// Whether sequences may run with LoRA adapters.
    fn runs_adapters(&self) -> bool;

    /// The forward pass over sequences already checked to fit their caches, each with its
    /// adapter (`adapters[i]` for `seqs[i]`, made for this model); appends their tokens to the
    /// caches. `trace` receives the hidden states after the embedding, each layer and the
    /// final norm.
    fn run(
        &self,
        seqs: &mut [SeqInput<'_>],
        adapters: &[Option<&Adapter>],
        head: Head,
        trace: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Vec<Vec<f32>>>;
}

/// A loaded model, whichever decoder type runs it.
pub struct DecoderModel {
    decoder: Box<dyn Decoder>,
    id: u64,
    /// What sequences naming no adapter run with.
    default_adapter: Option<Adapter>,
}

impl DecoderModel {
    /// `adapter`: the default for sequences that name none.
    pub(crate) fn new(decoder: Box<dyn Decoder>, adapter: Option<&LoraAdapter>) -> Result<Self> {
        let mut model = DecoderModel { decoder, id: next_id(), default_adapter: None };
        model.default_adapter = adapter.map(|a| model.adapter(a)).transpose()?;
        Ok(model)
    }

    /// `lora` made ready for this model: each of its layers matched to the model's linear
    /// layer of that name and checked to fit it; Q and K deltas reordered for models that
    /// keep llama.cpp's interleaved RoPE rows (adapters are trained in Hugging Face order).
    pub fn adapter(&self, lora: &LoraAdapter) -> Result<Adapter> {
        if !self.decoder.runs_adapters() {
            return Err(EngineError::Unsupported("LoRA adapters on the candle backend".into()));
        }
        if lora.is_dora() {
            return Err(EngineError::Unsupported("serving a DoRA adapter beside its base (fuse it with hearth fuse)".into()));
        }
        let cfg = self.config();
        let interleaved = cfg.rope_interleaved.then(|| lora.with_interleaved_rope(cfg.head_dim));
        let lora = interleaved.as_ref().unwrap_or(lora);
        let deltas = deltas_by_slot(self.decoder.linears(), lora)?;
        Ok(Adapter::new(self.id, deltas))
    }

    /// Whether `adapter` was made ready for this model.
    pub fn made(&self, adapter: &Adapter) -> bool {
        adapter.model == self.id
    }

    pub fn config(&self) -> &ModelConfig {
        self.decoder.config()
    }

    pub fn precision(&self) -> Precision {
        self.decoder.precision()
    }

    /// Bytes of weights as stored (memory-mapped where the format allows).
    pub fn weight_bytes(&self) -> usize {
        self.decoder.weight_bytes()
    }

    /// A KV cache for one sequence of up to `capacity` tokens (capped at the model's context).
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        self.decoder.new_cache(capacity.min(self.config().context_length))
    }

    /// Runs the tokens of every sequence through the model, appending them to each sequence's
    /// cache. Returns per sequence the logits of every position (`n · vocab` values, row-major)
    /// if `all_logits`, else of its last position.
    pub fn forward(&self, seqs: &mut [SeqInput<'_>], all_logits: bool) -> Result<Vec<Vec<f32>>> {
        self.run(seqs, if all_logits { Head::AllLogits } else { Head::LastLogits }, None)
    }

    /// As [`DecoderModel::forward`], but returns each sequence's last hidden state after the
    /// final norm (`hidden` values), without the LM head: what decoder embedders pool.
    pub fn last_hidden(&self, seqs: &mut [SeqInput<'_>]) -> Result<Vec<Vec<f32>>> {
        self.run(seqs, Head::LastHidden, None)
    }

    /// As [`DecoderModel::last_hidden`], but every position's hidden state (`n · hidden`
    /// values, row-major): what mean-pooling embedders pool.
    pub fn all_hidden(&self, seqs: &mut [SeqInput<'_>]) -> Result<Vec<Vec<f32>>> {
        self.run(seqs, Head::AllHidden, None)
    }

    /// The hidden states of one prompt (`n · hidden` values each): after the embedding, after
    /// each layer, and after the final norm — to find the first layer that goes wrong.
    pub fn trace_hidden_states(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut cache = self.new_cache(tokens.len())?;
        let mut trace = Vec::new();
        self.run(&mut [SeqInput::new(tokens, &mut cache)], Head::LastLogits, Some(&mut trace))?;
        Ok(trace)
    }

    fn run(&self, seqs: &mut [SeqInput<'_>], head: Head, trace: Option<&mut Vec<Vec<f32>>>) -> Result<Vec<Vec<f32>>> {
        for s in seqs.iter() {
            if s.tokens.is_empty() {
                return Err(EngineError::InvalidRequest("a forward pass needs at least one token".into()));
            }
            if s.cache.len() + s.tokens.len() > s.cache.capacity() {
                return Err(EngineError::ContextOverflow {
                    prompt: s.cache.len() + s.tokens.len(),
                    max_tokens: 0,
                    context: s.cache.capacity(),
                });
            }
            if self.config().bidirectional && !s.cache.is_empty() {
                return Err(EngineError::InvalidRequest(
                    "a bidirectional model attends to a sequence whole: all its tokens go in one forward pass, on an empty cache".into(),
                ));
            }
            if s.adapter.is_some_and(|a| !self.made(a)) {
                return Err(EngineError::InvalidRequest("the adapter was made ready for another model".into()));
            }
        }
        let adapters: Vec<_> = seqs.iter().map(|s| s.adapter.or(self.default_adapter.as_ref())).collect();
        self.decoder.run(seqs, &adapters, head, trace)
    }
}

/// How a decoder type holds its weights: the layer structure is shared, the forms differ.
pub(crate) trait WeightForm {
    type Linear;
    type Norm;

    /// A linear layer `[out, in]` with its optional bias; `slot` is where adapters keep its
    /// delta.
    fn linear(&self, weight: StoredTensor, bias: Option<Vec<f32>>, slot: usize) -> Result<Self::Linear>;

    /// An RMSNorm with its (offset-applied) weight.
    fn norm(&self, weight: Vec<f32>, eps: f32) -> Result<Self::Norm>;
}

/// Projections of the same input, stored as one matrix each or as one with their rows stacked
/// (Phi-3's `qkv_proj` and `gate_up_proj`). The fused layer is boxed so that the separate
/// form does not pay for its size (clippy's `large_enum_variant`).
pub(crate) enum Projection<L> {
    Separate(Vec<L>),
    Fused(Box<L>),
}

impl<L> Projection<L> {
    /// Loads `names` under `prefix`, or `fused` where the file stores them together.
    fn load<F: WeightForm<Linear = L>>(loader: &LayerLoader<'_, F>, prefix: &str, fused: &str, names: &[&str], bias: bool) -> Result<Self> {
        if loader.store.contains(&format!("{prefix}.{fused}.weight")) {
            return Ok(Projection::Fused(Box::new(loader.linear(&format!("{prefix}.{fused}"), bias)?)));
        }
        Ok(Projection::Separate(names.iter().map(|n| loader.linear(&format!("{prefix}.{n}"), bias)).collect::<Result<_>>()?))
    }

    pub(crate) fn parts(&self) -> &[L] {
        match self {
            Projection::Separate(parts) => parts,
            Projection::Fused(all) => std::slice::from_ref(&**all),
        }
    }
}

pub(crate) struct Attention<F: WeightForm> {
    pub(crate) qkv: Projection<F::Linear>,
    pub(crate) o: F::Linear,
    pub(crate) q_norm: Option<F::Norm>,
    pub(crate) k_norm: Option<F::Norm>,
}

pub(crate) struct Mlp<F: WeightForm> {
    pub(crate) gate_up: Projection<F::Linear>,
    pub(crate) down: F::Linear,
}

pub(crate) struct Layer<F: WeightForm> {
    pub(crate) input_norm: F::Norm,
    pub(crate) post_attn_norm: F::Norm,
    /// Gemma 2's norms around the MLP (the post-attention norm then applies to the attention
    /// output instead of feeding the MLP).
    pub(crate) sandwich: Option<SandwichNorms<F::Norm>>,
    pub(crate) attn: Attention<F>,
    pub(crate) mlp: Mlp<F>,
    pub(crate) window: Option<usize>,
    /// Which of [`DecoderWeights::ropes`] turns this layer's queries and keys.
    pub(crate) rope: usize,
}

pub(crate) struct SandwichNorms<N> {
    pub(crate) pre_ff: N,
    pub(crate) post_ff: N,
}

impl<F: WeightForm> Layer<F> {
    pub(crate) fn linears(&self) -> impl Iterator<Item = &F::Linear> {
        let (qkv, gate_up) = (self.attn.qkv.parts(), self.mlp.gate_up.parts());
        qkv.iter().chain(gate_up).chain([&self.attn.o, &self.mlp.down])
    }
}

/// What loading one layer needs: the weights and the form to put them in; records each
/// linear layer's slot.
struct LayerLoader<'a, F: WeightForm> {
    form: &'a F,
    store: &'a WeightStore,
    cfg: &'a ModelConfig,
    linears: RefCell<Vec<LinearShape>>,
}

impl<F: WeightForm> LayerLoader<'_, F> {
    /// Layer `prefix`.
    fn linear(&self, prefix: &str, bias: bool) -> Result<F::Linear> {
        let weight = self.store.get(&format!("{prefix}.weight"))?.clone();
        let bias = bias.then(|| self.store.get(&format!("{prefix}.bias"))?.to_f32_vec()).transpose()?;
        self.slotted(prefix, weight, bias)
    }

    /// `weight` as the linear layer named `name`, in the next slot.
    fn slotted(&self, name: &str, weight: StoredTensor, bias: Option<Vec<f32>>) -> Result<F::Linear> {
        let m = weight.matrix()?;
        let mut linears = self.linears.borrow_mut();
        linears.push(LinearShape { name: name.to_string(), rows: m.rows(), cols: m.cols() });
        self.form.linear(weight, bias, linears.len() - 1)
    }

    fn norm(&self, prefix: &str) -> Result<F::Norm> {
        let mut w = self.store.get(&format!("{prefix}.weight"))?.to_f32_vec()?;
        if self.cfg.norm_weight_offset != 0.0 {
            w.iter_mut().for_each(|v| *v += self.cfg.norm_weight_offset);
        }
        self.form.norm(w, self.cfg.rms_norm_eps as f32)
    }

    fn layer(&self, i: usize) -> Result<Layer<F>> {
        let cfg = self.cfg;
        let p = format!("model.layers.{i}");
        let norm = |name: &str| self.norm(&format!("{p}.{name}"));
        let sandwich = || -> Result<_> {
            Ok(SandwichNorms { pre_ff: norm("pre_feedforward_layernorm")?, post_ff: norm("post_feedforward_layernorm")? })
        };
        let qkv = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];
        Ok(Layer {
            input_norm: norm("input_layernorm")?,
            post_attn_norm: norm("post_attention_layernorm")?,
            sandwich: cfg.sandwich_norms.then(sandwich).transpose()?,
            attn: Attention {
                qkv: Projection::load(self, &p, "self_attn.qkv_proj", &qkv, cfg.qkv_bias)?,
                o: self.linear(&format!("{p}.self_attn.o_proj"), cfg.o_bias)?,
                q_norm: cfg.qk_norm.then(|| norm("self_attn.q_norm")).transpose()?,
                k_norm: cfg.qk_norm.then(|| norm("self_attn.k_norm")).transpose()?,
            },
            mlp: Mlp {
                gate_up: Projection::load(self, &p, "mlp.gate_up_proj", &["mlp.gate_proj", "mlp.up_proj"], cfg.mlp_bias)?,
                down: self.linear(&format!("{p}.mlp.down_proj"), cfg.mlp_bias)?,
            },
            window: cfg.layer_windows[i],
            rope: if cfg.layer_windows[i].is_some() && cfg.sliding_rope.is_some() { 1 } else { 0 },
        })
    }
}

/// A decoder's weights in its form `F`, with the architecture's switches resolved.
pub(crate) struct DecoderWeights<F: WeightForm> {
    pub(crate) cfg: ModelConfig,
    embed: StoredTensor,
    /// Whether the LM head is the embedding table.
    pub(crate) tied: bool,
    pub(crate) layers: Vec<Layer<F>>,
    pub(crate) norm: F::Norm,
    pub(crate) lm_head: F::Linear,
    /// The model's RoPE, then the sliding-window layers' own where they have one.
    pub(crate) ropes: Vec<Rope>,
    pub(crate) weight_bytes: usize,
    /// Every linear layer, by slot.
    pub(crate) linears: Vec<LinearShape>,
}

impl<F: WeightForm> DecoderWeights<F> {
    pub(crate) fn load(form: &F, mut cfg: ModelConfig, store: &WeightStore, rope_freqs: Option<Vec<f32>>) -> Result<Self> {
        if let Some(f) = rope_freqs {
            cfg.rope.scaling = RopeScaling::FreqFactors(f);
        }
        let embed = store.get("model.embed_tokens.weight")?.clone();
        if embed.shape != [cfg.vocab_size, cfg.hidden_size] {
            return Err(EngineError::Weights(format!(
                "embed_tokens has shape {:?}, config says [{}, {}]",
                embed.shape, cfg.vocab_size, cfg.hidden_size
            )));
        }
        let loader = LayerLoader { form, store, cfg: &cfg, linears: RefCell::default() };
        let layers = (0..cfg.num_layers).map(|i| loader.layer(i)).collect::<Result<Vec<_>>>()?;
        let tied = cfg.tie_word_embeddings || !store.contains("lm_head.weight");
        let lm_head = if tied {
            loader.slotted("lm_head", embed.clone(), None)?
        } else if store.get("lm_head.weight")?.shape[0] != cfg.vocab_size {
            return Err(EngineError::Weights("lm_head rows differ from the vocabulary size".into()));
        } else {
            loader.linear("lm_head", false)?
        };
        let norm = loader.norm("model.norm")?;
        let linears = loader.linears.into_inner();
        let ropes = std::iter::once(&cfg.rope).chain(&cfg.sliding_rope).map(|r| Rope::new(cfg.head_dim, r)).collect::<Result<_>>()?;
        Ok(DecoderWeights { ropes, weight_bytes: store.total_bytes(), cfg, embed, tied, layers, norm, lm_head, linears })
    }

    /// Embedding rows of `tokens` into `out` (`[n, hidden]`). `panels`: the LM head's, where
    /// the table is tied to it and repacked.
    pub(crate) fn embed_into(&self, tokens: &[u32], out: &mut [f32], panels: Option<&QuantPanels>) -> Result<()> {
        let m = self.embed.matrix()?;
        let h = self.cfg.hidden_size;
        for (t, &id) in tokens.iter().enumerate() {
            if id as usize >= self.cfg.vocab_size {
                return Err(EngineError::InvalidRequest(format!("token id {id} is outside the vocabulary")));
            }
            let row = &mut out[t * h..(t + 1) * h];
            match panels {
                Some(p) => p.row(id as usize, row),
                None => m.row(id as usize, row),
            }
        }
        if self.cfg.scale_embeddings {
            // Gemma multiplies by √hidden, as transformers does.
            let s = (h as f32).sqrt();
            out.iter_mut().for_each(|v| *v *= s);
        }
        Ok(())
    }
}
