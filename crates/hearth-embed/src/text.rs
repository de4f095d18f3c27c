//! Text to model inputs with the model's own `tokenizer.json`. Encoders need what the chat
//! tokenizer does not give: sentence pairs with token-type ids, and no fixed padding or
//! truncation (many BERT exports pad every input to 128 and cut there silently).

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::Encoded;
use crate::{EmbedError, Result};

pub(crate) struct TextEncoder {
    whole: Tokenizer,
    /// The same tokenizer, cutting to the model's limit (longest sequence of a pair first).
    truncating: Tokenizer,
    limit: usize,
}

impl TextEncoder {
    pub fn load(dir: &Path, limit: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let mut whole = Tokenizer::from_file(&path).map_err(|e| EmbedError::Tokenizer(format!("{}: {e}", path.display())))?;
        whole.with_padding(None);
        whole.with_truncation(None).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let mut truncating = whole.clone();
        truncating
            .with_truncation(Some(TruncationParams { max_length: limit, ..Default::default() }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(TextEncoder { whole, truncating, limit })
    }

    /// Encodes `text` (and `pair`, for cross-encoders) with the model's special tokens. Longer
    /// than the limit is an error naming `index`, unless `truncate`.
    pub fn encode(&self, text: &str, pair: Option<&str>, truncate: bool, index: usize) -> Result<Encoded> {
        let run = |tok: &Tokenizer| {
            let enc = match pair {
                Some(p) => tok.encode_fast((text, p), true),
                None => tok.encode_fast(text, true),
            };
            enc.map(|e| Encoded { ids: e.get_ids().to_vec(), types: e.get_type_ids().to_vec(), prompt_tokens: 0 })
                .map_err(|e| EmbedError::BadInput { index, message: format!("cannot tokenize: {e}") })
        };
        let enc = run(&self.whole)?;
        match enc.ids.len() {
            n if n <= self.limit => Ok(enc),
            _ if truncate => run(&self.truncating),
            n => Err(EmbedError::TooLong { index, tokens: n, limit: self.limit }),
        }
    }

    /// Tokens `text` takes without special tokens and without truncation.
    pub fn count(&self, text: &str) -> usize {
        self.whole.encode_fast(text, false).map_or(0, |e| e.get_ids().len())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}
