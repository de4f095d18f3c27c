//! Sentence embeddings: a transformer (a BERT-family encoder or one of the engine's decoders),
//! then the pooling, Dense layers and normalisation the model declares, with its prompts.

use std::collections::BTreeMap;
use std::path::Path;

use crate::bert::Encoded;
use crate::config::{Pooling, SentenceConfig};
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::pipeline::{normalize, Pipeline};
use crate::weights::Tensors;
use crate::{EmbedError, Result};
use hearth_formats::gguf::Gguf;
use hearth_formats::sentence::MessageFormat;
use serde_json::json;

/// One input of an embedding request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    /// Token ids used as the complete model input, special tokens included (as a Hugging Face
    /// tokenizer's `input_ids`).
    Tokens(Vec<u32>),
}

/// What an input is for, as hosted embedding APIs say it: the model's prompt for that role
/// (`query`; `document` or `passage`) is applied where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputType {
    Query,
    Document,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Keep only the first `dimensions` values (Matryoshka). Re-normalised if the model
    /// normalises, as OpenAI's `dimensions` does (sentence-transformers' `truncate_dim` does
    /// not: the directions are the same).
    pub dimensions: Option<usize>,
    /// Cut inputs longer than the model's limit instead of rejecting them.
    pub truncate: bool,
    /// One of the model's named prompts (e.g. `query`), put before every text input; else the
    /// prompt for `input_type`, else the model's default prompt.
    pub prompt_name: Option<String>,
    pub input_type: Option<InputType>,
}

/// Vectors in input order, and the tokens they took (for `usage`).
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

/// What a client (and the model registry) needs to know about an embedding model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbedderInfo {
    /// The vectors' length (after any Dense layers); `dimensions` may ask for fewer.
    pub dimension: usize,
    pub max_tokens: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
}

/// How an embedding encoder's linear layers multiply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EmbedPrecision {
    /// Float32 operands (rerankers, and comparisons).
    Float32,
    /// Float: bf16 operands summed in f32 where the CPU has bf16 dot products, float32
    /// elsewhere.
    #[default]
    Float,
    /// Weights quantised to 8 bits when loaded and activations to 8 bits per 32 values as they
    /// come: integer dot products on every CPU. Encoders only: decoder embedders run the
    /// engine's own fast path.
    Int8,
}

impl EmbedPrecision {
    /// The names the CLI and the server's configuration take.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "float" => Some(EmbedPrecision::Float),
            "int8" => Some(EmbedPrecision::Int8),
            _ => None,
        }
    }
}

pub struct Embedder {
    backbone: Backbone,
    sentence: SentenceConfig,
    pipeline: Pipeline,
}

/// The network under the pooling: a BERT-family encoder, or a decoder (last-token pooling).
enum Backbone {
    Encoder(Box<Encoder>),
    Decoder(Box<Decoder>),
}

impl Backbone {
    fn hidden_size(&self) -> usize {
        match self {
            Backbone::Encoder(e) => e.hidden_size(),
            Backbone::Decoder(d) => d.hidden_size(),
        }
    }

    fn limit(&self) -> usize {
        match self {
            Backbone::Encoder(e) => e.text.limit(),
            Backbone::Decoder(d) => d.limit(),
        }
    }
}

impl Embedder {
    /// Loads a Hugging Face / sentence-transformers model directory, or a GGUF decoder
    /// embedder (pooling from its metadata, as llama.cpp reads it).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, EmbedPrecision::default())
    }

    /// [`Embedder::load`] with an encoder's products in `precision`.
    pub fn load_with(dir: &Path, precision: EmbedPrecision) -> Result<Self> {
        let sentence = if dir.is_file() { SentenceConfig::from_gguf(&Gguf::open(dir)?)? } else { SentenceConfig::load(dir)? };
        let backbone = if Decoder::is_decoder(dir) {
            Backbone::Decoder(Box::new(Decoder::load(dir, sentence.max_seq_length)?))
        } else {
            Backbone::Encoder(Box::new(Encoder::load(dir, &Tensors::open(dir)?.with_precision(precision), "", sentence.max_seq_length)?))
        };
        let pipeline = Pipeline::load(&sentence, backbone.hidden_size())?;
        Ok(Embedder { backbone, sentence, pipeline })
    }

    pub fn info(&self) -> EmbedderInfo {
        EmbedderInfo {
            dimension: self.dimension(),
            max_tokens: self.backbone.limit(),
            pooling: self.sentence.pooling,
            normalize: self.sentence.normalizes(),
            prompts: self.sentence.prompts.clone(),
            default_prompt_name: self.sentence.default_prompt_name.clone(),
        }
    }

    fn dimension(&self) -> usize {
        self.sentence.dimension(self.backbone.hidden_size())
    }

    /// Tokens `text` takes, special tokens excluded (for sizing chunks under the limit).
    pub fn count_tokens(&self, text: &str) -> usize {
        match &self.backbone {
            Backbone::Encoder(e) => e.text.count(text),
            Backbone::Decoder(d) => d.count(text),
        }
    }

    /// Embeds `inputs`, in order.
    pub fn embed(&self, inputs: &[EmbedInput], opts: &EmbedOptions) -> Result<Embeddings> {
        let seqs = self.prepare(inputs, opts)?;
        let pooled = self.pool(&seqs)?;
        Ok(self.finish(&seqs, pooled, opts))
    }

    /// Checks the options and turns every input into model tokens; errors name the input.
    pub(crate) fn prepare(&self, inputs: &[EmbedInput], opts: &EmbedOptions) -> Result<Vec<Encoded>> {
        let dim = self.dimension();
        if let Some(d) = opts.dimensions.filter(|&d| d == 0 || d > dim) {
            return Err(EmbedError::InvalidRequest {
                param: "dimensions",
                message: format!("dimensions must be between 1 and {dim}, got {d}"),
            });
        }
        if let Some(format) = self.sentence.messages {
            return self.conversations(inputs, format, self.prompt(opts)?, opts.truncate);
        }
        let Some(prefix) = self.prompt(opts)?.filter(|p| !p.is_empty()) else { return self.tokenize(inputs, opts.truncate) };
        let prefixed: Vec<EmbedInput> = inputs
            .iter()
            .map(|i| match i {
                EmbedInput::Text(t) => EmbedInput::Text(format!("{prefix}{t}")),
                tokens => tokens.clone(),
            })
            .collect();
        let mut seqs = self.tokenize(&prefixed, opts.truncate)?;
        if self.sentence.include_prompt {
            return Ok(seqs);
        }
        // As sentence-transformers counts a prompt's tokens: with special tokens, less one.
        let prompt_tokens = self.tokenize(&[EmbedInput::Text(prefix.to_string())], true)?[0].ids.len().saturating_sub(1);
        for (seq, input) in seqs.iter_mut().zip(inputs) {
            if matches!(input, EmbedInput::Text(_)) {
                seq.prompt_tokens = prompt_tokens;
            }
        }
        Ok(seqs)
    }

    /// Texts as sentence-transformers sends them to a model declaring the message modality: a
    /// user turn through the chat template, the prompt (if any) a system turn before it; the
    /// prompt's tokens are not told apart (`include_prompt` does not apply).
    fn conversations(&self, inputs: &[EmbedInput], format: MessageFormat, prompt: Option<&str>, truncate: bool) -> Result<Vec<Encoded>> {
        let Backbone::Decoder(d) = &self.backbone else {
            return Err(EmbedError::Unsupported("conversations (the message modality) on an encoder".into()));
        };
        let content = |text: &str| match format {
            MessageFormat::Flat => json!(text),
            MessageFormat::Structured => json!([{"type": "text", "text": text}]),
        };
        let token_inputs: Vec<EmbedInput> = inputs.iter().filter(|i| matches!(i, EmbedInput::Tokens(_))).cloned().collect();
        let mut tokenized = if token_inputs.is_empty() { Vec::new() } else { self.tokenize(&token_inputs, truncate)? }.into_iter();
        inputs
            .iter()
            .enumerate()
            .map(|(index, input)| match input {
                EmbedInput::Tokens(_) => Ok(tokenized.next().expect("tokenized above")),
                EmbedInput::Text(text) => {
                    let system = prompt.map(|p| json!({"role": "system", "content": content(p)}));
                    let messages: Vec<_> = system.into_iter().chain([json!({"role": "user", "content": content(text)})]).collect();
                    let seq = d.encode_messages(&messages, truncate, index)?;
                    d.check(&seq, index)?;
                    Ok(seq)
                }
            })
            .collect()
    }

    /// The prompt `opts` asks for: by name (an unknown name is an error), else by role (none if
    /// the model has no prompt for it), else the model's default.
    pub fn prompt(&self, opts: &EmbedOptions) -> Result<Option<&str>> {
        let prompts = &self.sentence.prompts;
        if let Some(name) = &opts.prompt_name {
            return match prompts.get(name) {
                Some(p) => Ok(Some(p)),
                None => {
                    let known: Vec<&str> = prompts.keys().map(String::as_str).collect();
                    Err(EmbedError::InvalidRequest {
                        param: "prompt_name",
                        message: format!("this model has no prompt named {name:?} (it has {known:?})"),
                    })
                }
            };
        }
        let names: &[&str] = match opts.input_type {
            Some(InputType::Query) => &["query"],
            Some(InputType::Document) => &["document", "passage"],
            None => return Ok(self.sentence.default_prompt_name.as_ref().and_then(|n| prompts.get(n)).map(String::as_str)),
        };
        Ok(names.iter().find_map(|n| prompts.get(*n)).map(String::as_str))
    }

    /// The model input of every request input (special tokens included), checked; errors name
    /// the offending input. Inputs over [`EmbedderInfo::max_tokens`] are an error unless `truncate`.
    pub fn tokenize(&self, inputs: &[EmbedInput], truncate: bool) -> Result<Vec<Encoded>> {
        if inputs.is_empty() {
            return Err(EmbedError::InvalidRequest { param: "input", message: "no input to embed".into() });
        }
        let limit = self.backbone.limit();
        inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                let seq = match input {
                    EmbedInput::Text(text) => match &self.backbone {
                        Backbone::Encoder(e) => e.text.encode(text, None, truncate, index)?,
                        Backbone::Decoder(d) => d.encode(text, truncate, index)?,
                    },
                    EmbedInput::Tokens(ids) if ids.len() > limit && !truncate => {
                        return Err(EmbedError::TooLong { index, tokens: ids.len(), limit })
                    }
                    EmbedInput::Tokens(ids) => {
                        let ids = ids[..ids.len().min(limit)].to_vec();
                        Encoded { types: vec![0; ids.len()], ids, prompt_tokens: 0 }
                    }
                };
                match &self.backbone {
                    Backbone::Encoder(e) => e.bert.check(&seq, index)?,
                    Backbone::Decoder(d) => d.check(&seq, index)?,
                }
                Ok(seq)
            })
            .collect()
    }

    /// Pooled vectors of checked sequences, before the modules after the pooling. Runs as
    /// the embedding queue's worker, so a batch of requests is one pass over the transformer.
    pub(crate) fn pool(&self, seqs: &[Encoded]) -> Result<Vec<Vec<f32>>> {
        let h = self.backbone.hidden_size();
        let mut prompt_tokens = seqs.iter().map(|s| s.prompt_tokens);
        let pool = |states: &[f32]| self.pipeline.pool(states, h, prompt_tokens.next().unwrap_or(0));
        match &self.backbone {
            Backbone::Encoder(e) => Ok(e.run(seqs, pool)),
            Backbone::Decoder(d) => d.run(seqs, pool),
        }
    }

    /// The Dense layers and normalisation, then the `dimensions` cut (re-normalised where the
    /// model normalises).
    pub(crate) fn finish(&self, seqs: &[Encoded], vectors: Vec<Vec<f32>>, opts: &EmbedOptions) -> Embeddings {
        let vectors = vectors
            .into_iter()
            .map(|v| {
                let mut v = self.pipeline.finish(v);
                if let Some(d) = opts.dimensions.filter(|&d| d < v.len()) {
                    v.truncate(d);
                    if self.sentence.normalizes() {
                        normalize(&mut v);
                    }
                }
                v
            })
            .collect();
        Embeddings { vectors, tokens: seqs.iter().map(|s| s.ids.len()).sum() }
    }
}
