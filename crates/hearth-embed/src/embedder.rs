//! Sentence embeddings: encoder, then the pooling and normalisation the model declares.

use std::path::Path;

use crate::bert::Encoded;
use crate::config::{Pooling, SentenceConfig};
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::weights::Tensors;
use crate::{EmbedError, Result};

/// One input of an embedding request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    /// Token ids used as the complete model input, special tokens included (as a Hugging Face
    /// tokenizer's `input_ids`).
    Tokens(Vec<u32>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Keep only the first `dimensions` values (Matryoshka), re-normalised if the model normalises.
    pub dimensions: Option<usize>,
    /// Cut inputs longer than the model's limit instead of rejecting them.
    pub truncate: bool,
    /// One of the model's named prompts (e.g. `query`), put before every text input.
    pub prompt_name: Option<String>,
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
    pub dimension: usize,
    pub max_tokens: usize,
    pub pooling: Pooling,
    pub normalize: bool,
}

pub struct Embedder {
    backbone: Backbone,
    sentence: SentenceConfig,
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
    /// Loads a Hugging Face / sentence-transformers model directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let sentence = SentenceConfig::load(dir)?;
        let backbone = if Decoder::is_decoder(dir) {
            if sentence.pooling != Pooling::LastToken {
                return Err(EmbedError::Unsupported(format!(
                    "{:?} pooling on a decoder (its embedders pool the last token)",
                    sentence.pooling
                )));
            }
            Backbone::Decoder(Box::new(Decoder::load(dir, sentence.max_seq_length)?))
        } else {
            Backbone::Encoder(Box::new(Encoder::load(dir, &Tensors::open(dir)?.with_bf16_products(), "", sentence.max_seq_length)?))
        };
        Ok(Embedder { backbone, sentence })
    }

    pub fn info(&self) -> EmbedderInfo {
        EmbedderInfo {
            dimension: self.backbone.hidden_size(),
            max_tokens: self.backbone.limit(),
            pooling: self.sentence.pooling,
            normalize: self.sentence.normalize,
        }
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
        let dim = self.backbone.hidden_size();
        if let Some(d) = opts.dimensions.filter(|&d| d == 0 || d > dim) {
            return Err(EmbedError::InvalidRequest(format!("dimensions must be between 1 and {dim}, got {d}")));
        }
        let Some(name) = &opts.prompt_name else { return self.tokenize(inputs, opts.truncate) };
        let prefix = self.sentence.prompts.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sentence.prompts.keys().map(String::as_str).collect();
            EmbedError::InvalidRequest(format!("this model has no prompt named {name:?} (it has {known:?})"))
        })?;
        let prefixed: Vec<EmbedInput> = inputs
            .iter()
            .map(|i| match i {
                EmbedInput::Text(t) => EmbedInput::Text(format!("{prefix}{t}")),
                tokens => tokens.clone(),
            })
            .collect();
        self.tokenize(&prefixed, opts.truncate)
    }

    /// Whether the model has a prompt named `name`.
    pub fn has_prompt(&self, name: &str) -> bool {
        self.sentence.prompts.contains_key(name)
    }

    /// The model input of every request input (special tokens included), checked; errors name
    /// the offending input. Inputs over [`EmbedderInfo::max_tokens`] are an error unless `truncate`.
    pub fn tokenize(&self, inputs: &[EmbedInput], truncate: bool) -> Result<Vec<Encoded>> {
        if inputs.is_empty() {
            return Err(EmbedError::InvalidRequest("no input to embed".into()));
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
                        Encoded { types: vec![0; ids.len()], ids }
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

    /// Pooled, not yet normalised vectors of checked sequences.
    pub(crate) fn pool(&self, seqs: &[Encoded]) -> Result<Vec<Vec<f32>>> {
        let encoder = match &self.backbone {
            Backbone::Encoder(e) => e,
            // Loading checked that a decoder pools its last token.
            Backbone::Decoder(d) => return d.last_states(seqs),
        };
        let (h, pooling) = (encoder.hidden_size(), self.sentence.pooling);
        Ok(encoder.run(seqs, |states| match pooling {
            Pooling::Cls => states[..h].to_vec(),
            Pooling::LastToken => states[states.len() - h..].to_vec(),
            Pooling::Mean => {
                let mut sum = vec![0f32; h];
                for row in states.chunks_exact(h) {
                    sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                let n = (states.len() / h) as f32;
                sum.iter_mut().for_each(|s| *s /= n);
                sum
            }
        }))
    }

    pub(crate) fn finish(&self, seqs: &[Encoded], mut vectors: Vec<Vec<f32>>, opts: &EmbedOptions) -> Embeddings {
        for v in &mut vectors {
            if let Some(d) = opts.dimensions {
                v.truncate(d);
            }
            if self.sentence.normalize {
                // As torch's F.normalize: divide by max(‖v‖, 1e-12).
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Embeddings { vectors, tokens: seqs.iter().map(|s| s.ids.len()).sum() }
    }
}
