//! Tokenization for Hearth: HF `tokenizer.json` files and GGUF vocabularies behind one
//! [`Tokenizer`], streaming detokenization ([`StreamDecoder`]) and transformers-compatible chat
//! templates ([`ChatTemplate`]).

mod chat_template;
mod error;
mod gguf_vocab;
mod model_dir;
mod pyjson;
mod stream;

use std::collections::HashSet;
use std::path::Path;

pub use chat_template::{ChatTemplate, RenderOptions};
pub use error::TokenizerError;
pub use gguf_vocab::GgufVocab;
pub use model_dir::{find_chat_template, read_special_tokens, SpecialTokens};
pub use stream::StreamDecoder;

/// A tokenizer plus what is known about its special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Ids of added tokens (control and user-defined); these are split out of text before the
    /// model sees it, as llama.cpp does with `parse_special = true`.
    added_ids: HashSet<u32>,
    bos: Option<String>,
    eos: Option<String>,
}

impl Tokenizer {
    /// Loads a HF `tokenizer.json`. BOS/EOS come from a `tokenizer_config.json` next to it, if any.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| TokenizerError::Load { path: path.to_path_buf(), message: e.to_string() })?;
        let special = match path.parent() {
            Some(dir) => read_special_tokens(dir)?,
            None => SpecialTokens::default(),
        };
        Ok(Self::wrap(inner, special.bos, special.eos))
    }

    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(vocab: &GgufVocab) -> Result<Self, TokenizerError> {
        let inner = vocab.build()?;
        let name = |id: Option<u32>| id.and_then(|id| vocab.tokens.get(id as usize).cloned());
        Ok(Self::wrap(inner, name(vocab.bos_id), name(vocab.eos_id)))
    }

    fn wrap(inner: tokenizers::Tokenizer, bos: Option<String>, eos: Option<String>) -> Self {
        let added_ids = inner.get_added_tokens_decoder().into_keys().collect();
        Self { inner, added_ids, bos, eos }
    }

    /// Token ids for `text`. Added/special tokens written in the text always map to their single
    /// id; `add_special_tokens` only controls BOS/EOS insertion by the post-processor.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.inner.encode_fast(text, add_special_tokens).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids, added tokens included.
    /// The tokenizer as a Hugging Face `tokenizer.json` (GGUF-built ones included).
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner.to_string(false).map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether `id` is an added (control or user-defined) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.added_ids.contains(&id)
    }

    pub fn bos_token(&self) -> Option<String> {
        self.bos.clone()
    }

    pub fn eos_token(&self) -> Option<String> {
        self.eos.clone()
    }

    pub fn stream_decoder(&self, skip_special_tokens: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special_tokens)
    }
}
