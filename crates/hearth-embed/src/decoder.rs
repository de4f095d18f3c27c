//! Decoder-based embedders (Qwen3-Embedding, EmbeddingGemma): the engine's decoder without its
//! LM head, every position's final state handed to the model's pooling (the last token for a
//! causal model, the only position that has seen the whole input; the mean for a
//! bidirectional one).

use std::path::Path;

use hearth_engine::model::{DecoderModel, SeqInput};
use hearth_engine::LoadedModel;
use hearth_tokenizer::RenderOptions;

use crate::bert::Encoded;
use crate::encoder::token_batches;
use crate::{EmbedError, Result};

pub(crate) struct Decoder {
    model: LoadedModel,
    limit: usize,
}

/// Tokens per forward pass: the activations of a batch stay a few megabytes per layer.
const TOKEN_BUDGET: usize = 2048;

/// `model_type`s the engine's decoder runs (anything else is left to the BERT encoder).
const DECODERS: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "gemma3_text"];

impl Decoder {
    /// Whether `dir`'s config names a decoder architecture (a GGUF file always does).
    pub fn is_decoder(dir: &Path) -> bool {
        if dir.is_file() {
            return dir.extension().is_some_and(|e| e == "gguf");
        }
        let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else { return false };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        json["model_type"].as_str().is_some_and(|t| DECODERS.contains(&t))
    }

    /// `limit`: the longest input accepted (default: the model's context).
    pub fn load(dir: &Path, limit: Option<usize>) -> Result<Self> {
        let model = LoadedModel::load(dir).map_err(|e| EmbedError::Weights(format!("{}: {e}", dir.display())))?;
        let context = model.model.config().context_length;
        Ok(Decoder { limit: limit.unwrap_or(context).min(context), model })
    }

    pub fn hidden_size(&self) -> usize {
        self.model.model.config().hidden_size
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn count(&self, text: &str) -> usize {
        self.model.tokenizer.encode(text, false).map_or(0, |ids| ids.len())
    }

    /// The model input of `text` with the tokenizer's special tokens; longer than the limit
    /// is an error naming `index` unless `truncate`, which keeps the start and the end token
    /// the tokenizer appends (the position that is pooled).
    pub fn encode(&self, text: &str, truncate: bool, index: usize) -> Result<Encoded> {
        let tokenize = |special| {
            self.model.tokenizer.encode(text, special).map_err(|e| EmbedError::BadInput { index, message: format!("cannot tokenize: {e}") })
        };
        let mut ids = tokenize(true)?;
        if ids.is_empty() {
            return Err(EmbedError::BadInput { index, message: "no tokens".into() });
        }
        if ids.len() > self.limit {
            if !truncate {
                return Err(EmbedError::TooLong { index, tokens: ids.len(), limit: self.limit });
            }
            let appended = ids.last() != tokenize(false)?.last();
            let end = *ids.last().expect("not empty");
            ids.truncate(self.limit);
            if appended {
                *ids.last_mut().expect("limit ≥ 1") = end;
            }
        }
        Ok(Encoded { types: vec![0; ids.len()], ids, prompt_tokens: 0 })
    }

    /// The model input of a conversation through the model's chat template (without a
    /// generation prompt, as sentence-transformers renders it). Truncation keeps the start and
    /// writes the template's closing tokens back over the end.
    pub fn encode_messages(&self, messages: &[serde_json::Value], truncate: bool, index: usize) -> Result<Encoded> {
        let template = self
            .model
            .chat_template
            .as_ref()
            .ok_or_else(|| EmbedError::Unsupported("a model that embeds conversations but has no chat template".into()))?;
        let bad = |message: String| EmbedError::BadInput { index, message };
        let render = |messages: &[serde_json::Value]| template.render(messages, &RenderOptions::default()).map_err(|e| bad(e.to_string()));
        let tokenize = |text: &str| self.model.tokenizer.encode(text, false).map_err(|e| bad(format!("cannot tokenize: {e}")));
        let mut ids = tokenize(&render(messages)?)?;
        if ids.len() > self.limit {
            if !truncate {
                return Err(EmbedError::TooLong { index, tokens: ids.len(), limit: self.limit });
            }
            // What the template writes after the last message's content.
            const MARK: &str = "\u{e000}";
            let mut marked = messages.to_vec();
            if let Some(last) = marked.last_mut() {
                last["content"] = MARK.into();
            }
            let rendered = render(&marked)?;
            let tail = tokenize(rendered.rsplit_once(MARK).map_or("", |(_, tail)| tail))?;
            ids.truncate(self.limit.saturating_sub(tail.len()));
            ids.extend(tail.iter().take(self.limit - ids.len()));
        }
        Ok(Encoded { types: vec![0; ids.len()], ids, prompt_tokens: 0 })
    }

    pub fn check(&self, seq: &Encoded, index: usize) -> Result<()> {
        let vocab = self.model.model.config().vocab_size;
        match seq.ids.iter().find(|&&id| id as usize >= vocab) {
            Some(id) => Err(EmbedError::BadInput { index, message: format!("token id {id} is outside the vocabulary of {vocab}") }),
            None if seq.ids.is_empty() => Err(EmbedError::BadInput { index, message: "no tokens".into() }),
            None => Ok(()),
        }
    }

    /// Token ids of `text`, with the tokenizer's special tokens if `special` (special tokens
    /// written in the text are always recognised).
    pub fn tokens(&self, text: &str, special: bool) -> std::result::Result<Vec<u32>, String> {
        self.model.tokenizer.encode(text, special).map_err(|e| e.to_string())
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.model.tokenizer.token_to_id(token)
    }

    /// The last position's logits of each checked sequence.
    pub fn last_logits(&self, seqs: &[Encoded]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(seqs.len());
        self.batched(seqs, |m, inputs| m.forward(inputs, false), |logits| out.push(logits))?;
        Ok(out)
    }

    /// Maps each checked sequence's final states (`[tokens, hidden]`) through `per_seq`.
    pub fn run<T>(&self, seqs: &[Encoded], mut per_seq: impl FnMut(&[f32]) -> T) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(seqs.len());
        self.batched(seqs, |m, inputs| m.all_hidden(inputs), |states| out.push(per_seq(&states)))?;
        Ok(out)
    }

    /// Runs `pass` over the sequences, whole, in batches of at most [`TOKEN_BUDGET`] tokens (a
    /// longer one alone), handing each sequence's output to `each` in order, so a request's
    /// size does not set the activations' memory.
    fn batched(
        &self,
        seqs: &[Encoded],
        pass: impl Fn(&DecoderModel, &mut [SeqInput<'_>]) -> hearth_engine::Result<Vec<Vec<f32>>>,
        mut each: impl FnMut(Vec<f32>),
    ) -> Result<()> {
        let engine = |e: hearth_engine::EngineError| EmbedError::Weights(e.to_string());
        for batch in token_batches(seqs, TOKEN_BUDGET) {
            let mut caches = batch
                .iter()
                .map(|s| self.model.model.new_cache(s.ids.len()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(engine)?;
            let mut inputs: Vec<SeqInput<'_>> =
                batch.iter().zip(caches.iter_mut()).map(|(s, cache)| SeqInput::new(&s.ids, cache)).collect();
            pass(&self.model.model, &mut inputs).map_err(engine)?.into_iter().for_each(&mut each);
        }
        Ok(())
    }
}
