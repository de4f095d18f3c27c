//! Training data as `mlx_lm.lora` reads it: a directory of `train.jsonl`, `valid.jsonl` and
//! `test.jsonl`, each line a record in one of its formats (taken from the first record):
//! `{"messages": [...]}` (chat, with optional `tools`), `{"prompt", "completion"}` or
//! `{"text"}`; tokenised with the model's chat template; and batched as `iterate_batches`
//! batches: sorted by length, cut into fixed batches, the batches' order shuffled per epoch.

use std::path::Path;

use hearth_tokenizer::{ChatTemplate, RenderOptions, Tokenizer};
use serde_json::{json, Value};

use crate::loss::Batch;
use crate::{Result, TrainError};

/// One tokenised record: its tokens and where the part the loss counts under `--mask-prompt`
/// begins.
#[derive(Clone, Debug)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub offset: usize,
    /// How many fields the record has (what mlx-lm actually sorts by: [`BatchOrder::MlxLm`]).
    pub fields: usize,
    /// Whether it ends in an answer (`--mask-prompt` trains on nothing else); only a chat that
    /// does not end with the assistant's turn lacks one.
    pub answered: bool,
    /// `file:line`, for errors about it.
    pub origin: String,
}

/// How examples are ordered before they are cut into batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchOrder {
    /// By token count, so each batch holds similar lengths and pads little (what
    /// `iterate_batches` means to do).
    #[default]
    Length,
    /// As mlx-lm 0.32.2 actually does: its `CacheDataset.itemlen` is the number of fields of the
    /// raw record, so records keep their file order (those with `tools` after the rest). This
    /// reproduces mlx-lm's batches exactly.
    MlxLm,
}

/// The model's text side: what records are tokenised with.
pub struct Text {
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    pub eos: Option<u32>,
}

impl Text {
    /// A model directory's or GGUF file's tokenizer and chat template.
    pub fn load(path: &Path) -> Result<Text> {
        if path.is_file() {
            let g = hearth_formats::gguf::Gguf::open(path)?;
            let cfg = hearth_engine::config::ModelConfig::from_gguf(&g)?;
            let (tokenizer, template) = hearth_engine::loader::gguf_text(&g, &cfg)?;
            return Ok(Text { tokenizer, template, eos: cfg.eos_token_ids.first().copied() });
        }
        let (tokenizer, template, special) = hearth_engine::loader::dir_text(path)?;
        let eos = special.eos.as_deref().and_then(|t| tokenizer.token_to_id(t));
        Ok(Text { tokenizer, template, eos })
    }

    fn render(&self, messages: &[Value], tools: Option<&Value>, add_generation_prompt: bool) -> Result<Vec<u32>> {
        let template = self.template.as_ref().ok_or_else(|| TrainError::Invalid("chat data needs a model with a chat template".into()))?;
        let opts = RenderOptions { add_generation_prompt, tools: tools.and_then(Value::as_array).cloned(), ..Default::default() };
        let text = template.render(messages, &opts).map_err(|e| TrainError::Invalid(e.to_string()))?;
        // apply_chat_template tokenises without adding special tokens: the template has them.
        self.tokenizer.encode(&text, false).map_err(|e| TrainError::Invalid(e.to_string()))
    }

    /// One record, in the format the split's first record has.
    fn example(&self, record: &Value, format: Format) -> Result<Example> {
        let field = |name: &str| record.get(name).ok_or_else(|| TrainError::Invalid(format!("a {format:?} record has no {name:?}")));
        match format {
            Format::Chat => {
                let messages = field("messages")?.as_array().ok_or_else(|| TrainError::Invalid("\"messages\" is not a list".into()))?;
                let tools = record.get("tools");
                let tokens = self.render(messages, tools, false)?;
                let last_is_assistant = messages.last().is_some_and(|m| m["role"] == "assistant");
                let prompt = self.render(&messages[..messages.len().saturating_sub(1)], tools, last_is_assistant)?;
                Ok(Example { tokens, offset: prompt.len(), fields: 0, answered: last_is_assistant, origin: String::new() })
            }
            Format::Completions => {
                let user = json!({"role": "user", "content": field("prompt")?});
                let assistant = json!({"role": "assistant", "content": field("completion")?});
                let tools = record.get("tools");
                let tokens = self.render(&[user.clone(), assistant], tools, false)?;
                let prompt = self.render(&[user], tools, true)?;
                Ok(Example { tokens, offset: prompt.len(), fields: 0, answered: true, origin: String::new() })
            }
            Format::Text => {
                let text = field("text")?.as_str().ok_or_else(|| TrainError::Invalid("\"text\" is not a string".into()))?;
                let mut tokens = self.tokenizer.encode(text, true).map_err(|e| TrainError::Invalid(e.to_string()))?;
                if let Some(eos) = self.eos.filter(|&e| tokens.last() != Some(&e)) {
                    tokens.push(eos);
                }
                Ok(Example { tokens, offset: 0, fields: 0, answered: true, origin: String::new() })
            }
        }
    }
}

/// A record format, as mlx-lm detects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Chat,
    Completions,
    Text,
}

impl Format {
    /// Its name in mlx-lm's documentation.
    pub fn name(self) -> &'static str {
        match self {
            Format::Chat => "chat",
            Format::Completions => "completions",
            Format::Text => "text",
        }
    }

    fn of(record: &Value) -> Option<Format> {
        if record.get("prompt").is_some() && record.get("completion").is_some() {
            Some(Format::Completions)
        } else if record.get("messages").is_some() {
            Some(Format::Chat)
        } else if record.get("text").is_some() {
            Some(Format::Text)
        } else {
            None
        }
    }
}

/// The records of a JSONL text, each line checked: JSON, in one format (the first record's),
/// with that format's fields of the right types. Blank lines are skipped; errors say
/// `origin:line`. With each record, its line number.
pub fn parse_records(content: &str, origin: &str) -> Result<(Format, Vec<(usize, Value)>)> {
    let mut format = None;
    let mut records = Vec::new();
    for (i, line) in content.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = |what: String| TrainError::Invalid(format!("{origin}:{}: {what}", i + 1));
        let record: Value = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        let found =
            Format::of(&record).ok_or_else(|| at("not a chat (messages), completions (prompt, completion) or text record".into()))?;
        let f = *format.get_or_insert(found);
        f.check(&record).map_err(at)?;
        records.push((i + 1, record));
    }
    let format = format.ok_or_else(|| TrainError::Invalid(format!("{origin} holds no records")))?;
    Ok((format, records))
}

impl Format {
    /// The fields a record of this format needs, with their types.
    fn check(self, record: &Value) -> std::result::Result<(), String> {
        let string = |name: &str| match record.get(name) {
            Some(Value::String(_)) => Ok(()),
            Some(_) => Err(format!("\"{name}\" is not a string")),
            None => Err(format!("a {self:?} record has no {name:?}")),
        };
        match self {
            Format::Text => string("text"),
            Format::Completions => string("prompt").and(string("completion")),
            Format::Chat => {
                let messages = record.get("messages").and_then(Value::as_array).ok_or("\"messages\" is not a list")?;
                if messages.is_empty() {
                    return Err("\"messages\" is empty".into());
                }
                match messages.iter().position(|m| !m.get("role").is_some_and(Value::is_string)) {
                    Some(i) => Err(format!("message {i} has no \"role\"")),
                    None => Ok(()),
                }
            }
        }
    }
}

/// One split, tokenised: `None` where the file is absent; a file without records is an error.
pub fn load_split(dir: &Path, split: &str, text: &Text) -> Result<Option<(Format, Vec<Example>)>> {
    let path = dir.join(format!("{split}.jsonl"));
    let Ok(content) = std::fs::read_to_string(&path) else { return Ok(None) };
    let origin = path.display().to_string();
    let (format, records) = parse_records(&content, &origin)?;
    let mut examples = Vec::with_capacity(records.len());
    for (line, record) in records {
        let mut example = text.example(&record, format).map_err(|e| TrainError::Invalid(format!("{origin}:{line}: {e}")))?;
        example.fields = record.as_object().map_or(0, |o| o.len());
        example.origin = format!("{origin}:{line}");
        examples.push(example);
    }
    Ok(Some((format, examples)))
}

/// A small deterministic generator for the batch order (`--seed`): not NumPy's, so the order
/// differs from mlx-lm's for the same seed.
pub struct Shuffle(u64);

impl Shuffle {
    pub fn new(seed: u64) -> Shuffle {
        Shuffle(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The generator's state, to continue the same sequence later ([`Shuffle::resume`]).
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn resume(state: u64) -> Shuffle {
        Shuffle(state)
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
        p
    }
}

/// `iterate_batches`' batches of `examples`: indices sorted (`order`), cut into batches of
/// `batch_size` (a remainder dropped), each row truncated to `max_seq_length` and the batch
/// padded with 0 to `min(1 + 32·⌈longest/32⌉, max_seq_length)`; each row's prompt is masked
/// out of the loss if `mask_prompt`. Returns the batches in sorted order; whether any row was
/// truncated.
pub fn batches(
    examples: &[Example],
    batch_size: usize,
    max_seq_length: usize,
    mask_prompt: bool,
    order: BatchOrder,
) -> Result<(Vec<Batch>, bool)> {
    if batch_size == 0 {
        return Err(TrainError::Invalid("--batch-size must be at least 1".into()));
    }
    if let Some(e) = examples.iter().find(|e| mask_prompt && !e.answered) {
        return Err(TrainError::Invalid(format!(
            "{}: a chat without an assistant turn leaves nothing to train on under --mask-prompt",
            e.origin
        )));
    }
    if examples.len() < batch_size {
        return Err(TrainError::Invalid(format!("{} examples cannot make a batch of {batch_size}", examples.len())));
    }
    let mut sorted: Vec<usize> = (0..examples.len()).collect();
    match order {
        BatchOrder::Length => sorted.sort_by_key(|&i| examples[i].tokens.len()),
        BatchOrder::MlxLm => sorted.sort_by_key(|&i| examples[i].fields),
    }
    let mut truncated = false;
    let mut out = Vec::new();
    for chunk in sorted.chunks_exact(batch_size) {
        let longest = chunk.iter().map(|&i| examples[i].tokens.len().min(max_seq_length)).max().unwrap_or(0);
        truncated |= chunk.iter().any(|&i| examples[i].tokens.len() > max_seq_length);
        let width = (1 + 32 * longest.div_ceil(32)).min(max_seq_length);
        let mut tokens = Vec::with_capacity(batch_size);
        let mut lengths = Vec::with_capacity(batch_size);
        for &i in chunk {
            let e = &examples[i];
            let len = e.tokens.len().min(width);
            let mut row = e.tokens[..len].to_vec();
            row.resize(width, 0);
            tokens.push(row);
            lengths.push((if mask_prompt { e.offset } else { 0 }, len));
        }
        out.push(Batch { tokens, lengths });
    }
    Ok((out, truncated))
}
