use crate::{Tokenizer, TokenizerError};

/// Incremental detokenizer for streaming: push one id at a time, get back the newly completed
/// text.
///
/// Decoding token by token is wrong in two ways: a character may span several tokens (byte
/// fallback, byte-level BPE splitting an emoji), and SentencePiece decoders strip the leading
/// space of whatever they decode. So, as HF text-generation-inference does (its prefix_offset /
/// read_offset), we decode a small window of ids and emit only what it adds beyond the part that
/// was already emitted; text ending in U+FFFD is an unfinished character and is held back until
/// it completes.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    /// The window: `window[..read]` was already emitted (it is the context that makes the
    /// decode of the rest correct); older ids are dropped since they are never decoded again.
    window: Vec<u32>,
    read: usize,
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(tokenizer: &'a Tokenizer, skip_special_tokens: bool) -> Self {
        Self { tokenizer, skip_special_tokens, window: Vec::new(), read: 0 }
    }

    /// Adds one id; returns the text it completes (empty while a character is unfinished).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.window.push(id);
        let (prefix, text) = self.decode_window()?;
        if text.len() > prefix.len() && !text.ends_with(char::REPLACEMENT_CHARACTER) {
            if let Some(new) = text.get(prefix.len()..) {
                let new = new.to_string();
                self.slide();
                return Ok(new);
            }
        }
        Ok(String::new())
    }

    /// Emits whatever is still held back (an unfinished character comes out as U+FFFD, as in a
    /// full decode). Call at the end of the stream.
    pub fn flush(&mut self) -> Result<String, TokenizerError> {
        if self.read == self.window.len() {
            return Ok(String::new());
        }
        let (prefix, text) = self.decode_window()?;
        let new = text.get(prefix.len()..).unwrap_or_default().to_string();
        self.slide();
        Ok(new)
    }

    /// Decodes the already-emitted part of the window and the whole window.
    fn decode_window(&self) -> Result<(String, String), TokenizerError> {
        let skip = self.skip_special_tokens;
        let prefix = self.tokenizer.decode(&self.window[..self.read], skip)?;
        let text = self.tokenizer.decode(&self.window, skip)?;
        Ok((prefix, text))
    }

    /// What was just emitted becomes the new context; the old context is dropped.
    fn slide(&mut self) {
        self.window.drain(..self.read);
        self.read = self.window.len();
    }
}
