//! Rebuilds a `tokenizers` pipeline from GGUF `tokenizer.ggml.*` metadata so that encoding
//! matches llama.cpp's `tokenize(text, add_special, parse_special = true)`.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::TokenizerError;

/// Everything a GGUF file's metadata says about its tokenizer (keys `tokenizer.ggml.*`).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: pre-tokenizer name ("default", "llama-bpe", "qwen2", "smollm", ...).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    /// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    /// "left right" pairs, highest priority first.
    pub merges: Option<Vec<String>>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

// Split regexes from llama.cpp's `llm_tokenizer_bpe` (llama-vocab.cpp). Where llama.cpp adapted
// `(?i:'s|...)` to explicit case classes we keep its form, so non-ASCII case folding cannot
// creep in.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// How llama.cpp pre-tokenizes for a `tokenizer.ggml.pre` name.
struct PreTokenizerRules {
    regexes: &'static [&'static str],
    /// Words already in the vocabulary skip BPE merging (Llama 3 style).
    ignore_merges: bool,
    /// llama.cpp's default for `add_bos_token` when the GGUF does not say.
    add_bos: bool,
}

fn pre_tokenizer_rules(name: &str) -> Option<PreTokenizerRules> {
    let rules = |regexes, ignore_merges, add_bos| PreTokenizerRules { regexes, ignore_merges, add_bos };
    Some(match name {
        "default" => rules(&[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"], false, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" => rules(&[LLAMA3], true, true),
        "dbrx" | "smaug-bpe" => rules(&[LLAMA3], false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "megrez" | "stablelm2" | "hunyuan" => rules(&[QWEN2], false, false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum" | "mpt" | "olmo"
        | "jais" | "trillion" | "exaone4" | "granite-docling" => rules(&[GPT2], false, false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => rules(&[r"\p{N}", GPT2], false, false),
        "falcon" => rules(&[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"], false, false),
        "deepseek-coder" => rules(&["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"], false, false),
        _ => return None,
    })
}

impl GgufVocab {
    pub(crate) fn build(&self) -> Result<tokenizers::Tokenizer, TokenizerError> {
        self.validate()?;
        let tokens = self.token_texts();
        let vocab = vocab_map(&tokens)?;
        let (mut tokenizer, default_add_bos) = match self.model.as_str() {
            "gpt2" => self.build_bpe(vocab)?,
            "llama" => (self.build_spm(&tokens, vocab)?, true),
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        self.add_added_tokens(&mut tokenizer, &tokens);
        let add_bos = self.add_bos.unwrap_or(default_add_bos);
        let add_eos = self.add_eos.unwrap_or(false);
        if let Some(processor) = self.post_processor(&tokens, add_bos, add_eos)? {
            tokenizer.with_post_processor(Some(processor));
        }
        Ok(tokenizer)
    }

    fn validate(&self) -> Result<(), TokenizerError> {
        let n = self.tokens.len();
        if n == 0 {
            return Err(TokenizerError::InvalidVocab("tokenizer.ggml.tokens is empty".into()));
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::InvalidVocab(format!("{n} tokens do not fit u32 ids")));
        }
        if let Some(scores) = &self.scores {
            if scores.len() != n {
                return Err(TokenizerError::InvalidVocab(format!(
                    "tokenizer.ggml.scores has {} entries but there are {n} tokens",
                    scores.len()
                )));
            }
        }
        if let Some(types) = &self.token_types {
            if types.len() != n {
                return Err(TokenizerError::InvalidVocab(format!(
                    "tokenizer.ggml.token_type has {} entries but there are {n} tokens",
                    types.len()
                )));
            }
        }
        for (key, id) in [
            ("bos_token_id", self.bos_id),
            ("eos_token_id", self.eos_id),
            ("unknown_token_id", self.unk_id),
            ("padding_token_id", self.pad_id),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(TokenizerError::InvalidVocab(format!("tokenizer.ggml.{key} = {id} is out of range ({n} tokens)")));
            }
        }
        Ok(())
    }

    /// Token texts by id; empty ones get llama.cpp's placeholder so every id keeps a key.
    fn token_texts(&self) -> Vec<String> {
        self.tokens.iter().enumerate().map(|(i, t)| if t.is_empty() { format!("[EMPTY_{i}]") } else { t.clone() }).collect()
    }

    fn token_type(&self, id: usize) -> i32 {
        self.token_types.as_ref().map_or(1, |types| types[id])
    }

    fn build_bpe(&self, vocab: Vocab) -> Result<(tokenizers::Tokenizer, bool), TokenizerError> {
        // llama.cpp falls back to "default" when the name is missing; an unknown name is an error
        // here because guessing the split rules silently gives wrong ids.
        let pre = self.pre.as_deref().unwrap_or("default");
        let rules = pre_tokenizer_rules(pre).ok_or_else(|| TokenizerError::UnknownPreTokenizer(pre.to_string()))?;
        let merges = self
            .merges
            .as_ref()
            .ok_or_else(|| TokenizerError::InvalidVocab("gpt2 vocabulary has no merges".into()))?
            .iter()
            .enumerate()
            .map(|(i, m)| split_merge(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(rules.ignore_merges)
            .build()
            .map_err(|e| TokenizerError::InvalidVocab(e.to_string()))?;

        let mut steps = Vec::with_capacity(rules.regexes.len() + 1);
        for regex in rules.regexes {
            let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| TokenizerError::InvalidVocab(format!("pre-tokenizer {pre}: {e}")))?;
            steps.push(PreTokenizerWrapper::Split(split));
        }
        // The splits above replace ByteLevel's own GPT-2 regex; it only maps bytes to symbols.
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)));

        let mut tokenizer = tokenizers::Tokenizer::new(model);
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(steps))).with_decoder(Some(ByteLevel::default()));
        Ok((tokenizer, rules.add_bos))
    }

    /// SentencePiece as transformers' LlamaConverter rebuilds it: a byte-fallback BPE whose merges
    /// come from the scores. llama.cpp merges the adjacent pair whose joined piece scores highest,
    /// which is what ranking each possible merge by its result's score reproduces.
    fn build_spm(&self, tokens: &[String], vocab: Vocab) -> Result<tokenizers::Tokenizer, TokenizerError> {
        let merges = spm_merges(tokens, &vocab, self.scores.as_deref());
        let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
        if let Some(unk) = self.unk_id {
            builder = builder.unk_token(tokens[unk as usize].clone());
        }
        let model = builder.build().map_err(|e| TokenizerError::InvalidVocab(e.to_string()))?;

        let add_space_prefix = self.add_space_prefix.unwrap_or(true);
        let replace = |from: &str, to: &str| Replace::new(from, to).map_err(|e| TokenizerError::InvalidVocab(e.to_string()));
        let mut normalizers = Vec::new();
        if add_space_prefix {
            normalizers.push(NormalizerWrapper::Prepend(Prepend::new(SPM_SPACE.into())));
        }
        normalizers.push(NormalizerWrapper::Replace(replace(" ", SPM_SPACE)?));

        let mut decoders = vec![
            DecoderWrapper::Replace(replace(SPM_SPACE, " ")?),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
        ];
        if add_space_prefix {
            // Undo the prefix space added when encoding.
            decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
        }

        let mut tokenizer = tokenizers::Tokenizer::new(model);
        tokenizer.with_normalizer(Some(NormalizerSequence::new(normalizers))).with_decoder(Some(DecoderSequence::new(decoders)));
        Ok(tokenizer)
    }

    /// Control tokens become special added tokens and user-defined ones plain added tokens, so
    /// both are matched verbatim in text (llama.cpp's parse_special) and only control tokens are
    /// dropped by `skip_special_tokens`.
    fn add_added_tokens(&self, tokenizer: &mut tokenizers::Tokenizer, tokens: &[String]) {
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (id, text) in tokens.iter().enumerate() {
            match self.token_type(id) {
                TOKEN_TYPE_CONTROL => special.push(AddedToken::from(text.clone(), true).normalized(false)),
                TOKEN_TYPE_USER_DEFINED => user.push(AddedToken::from(text.clone(), false).normalized(false)),
                _ => {}
            }
        }
        tokenizer.add_special_tokens(&special);
        tokenizer.add_tokens(&user);
    }

    fn post_processor(&self, tokens: &[String], add_bos: bool, add_eos: bool) -> Result<Option<TemplateProcessing>, TokenizerError> {
        let mut template = vec!["$A"];
        let mut specials = Vec::new();
        // Keys "BOS"/"EOS" rather than the token text: a text with spaces or ':' would not parse
        // as a template piece.
        let mut add = |wanted: bool, id: Option<u32>, key: &'static str, flag: &str| {
            if !wanted {
                return Ok(());
            }
            let id =
                id.ok_or_else(|| TokenizerError::InvalidVocab(format!("tokenizer.ggml.{flag} is true but the token id is not set")))?;
            let special = SpecialToken::new(key.into(), vec![id], vec![tokens[id as usize].clone()])
                .map_err(|e| TokenizerError::InvalidVocab(e.to_string()))?;
            specials.push(special);
            if key == "BOS" {
                template.insert(0, key);
            } else {
                template.push(key);
            }
            Ok(())
        };
        add(add_bos, self.bos_id, "BOS", "add_bos_token")?;
        add(add_eos, self.eos_id, "EOS", "add_eos_token")?;
        if specials.is_empty() {
            return Ok(None);
        }
        TemplateProcessing::builder()
            .try_single(template.join(" "))
            .map_err(|e| TokenizerError::InvalidVocab(e.to_string()))?
            .special_tokens(specials)
            .build()
            .map(Some)
            .map_err(|e| TokenizerError::InvalidVocab(e.to_string()))
    }
}

fn vocab_map(tokens: &[String]) -> Result<Vocab, TokenizerError> {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, text) in tokens.iter().enumerate() {
        if let Some(previous) = vocab.insert(text.clone(), id as u32) {
            return Err(TokenizerError::InvalidVocab(format!("token {text:?} appears twice (ids {previous} and {id})")));
        }
    }
    Ok(vocab)
}

/// Splits "left right" at the first space after the first character, as llama.cpp does (a
/// merge's left side may itself be a space symbol).
fn split_merge(index: usize, merge: &str) -> Result<(String, String), TokenizerError> {
    let first_len = merge.chars().next().map_or(0, char::len_utf8);
    match merge[first_len..].find(' ') {
        Some(pos) => {
            let pos = first_len + pos;
            Ok((merge[..pos].to_string(), merge[pos + 1..].to_string()))
        }
        None => Err(TokenizerError::InvalidVocab(format!("merge #{index} {merge:?} is not two space-separated tokens"))),
    }
}

/// Every split of a piece into two pieces that are both in the vocabulary is a merge, ranked by
/// the joined piece's score (highest first); ties keep transformers' order (longer left, then
/// longer right side first).
fn spm_merges(tokens: &[String], vocab: &Vocab, scores: Option<&[f32]>) -> Vec<(String, String)> {
    let mut ranked = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let score = scores.map_or(0.0, |s| s[id]);
        let mut local: Vec<(&str, &str)> = piece
            .char_indices()
            .skip(1)
            .map(|(i, _)| piece.split_at(i))
            .filter(|(l, r)| vocab.contains_key(*l) && vocab.contains_key(*r))
            .collect();
        local.sort_by_key(|(l, r)| (vocab[*l], vocab[*r]));
        ranked.extend(local.into_iter().map(|(l, r)| (score, l, r)));
    }
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0).then(b.1.chars().count().cmp(&a.1.chars().count())).then(b.2.chars().count().cmp(&a.2.chars().count()))
    });
    ranked.into_iter().map(|(_, l, r)| (l.to_string(), r.to_string())).collect()
}
