//! Grammar-constrained decoding: what a request asks the output to be (any JSON object, a JSON
//! schema, a regular expression, one of several strings, a Lark grammar) compiled by llguidance
//! against the model's own vocabulary, and run as the runtime's per-sequence
//! [`LogitsProcessor`]: before each sampling step the tokens the grammar cannot take next are
//! masked out, so the output always parses.

mod closing;

use std::sync::Arc;

use hearth_runtime::LogitsProcessor;
use hearth_tokenizer::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value as Json;

/// What the output must be.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// Any JSON object.
    JsonObject,
    /// JSON valid under this schema.
    JsonSchema(Json),
    /// A match of this regular expression (the whole output).
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark grammar (llguidance's dialect).
    Lark(String),
    /// Text matching the rule named `lead` in the Lark definitions `lead` (or nothing, if
    /// `optional`), then `answer`, compiled as a grammar of its own (its own rules, lexer and
    /// options): a reasoning block before a constrained answer.
    After { lead: String, optional: bool, answer: Box<Grammar> },
}

impl Grammar {
    /// llguidance's form of the grammar.
    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonObject => TopLevelGrammar::from_lark(JSON_OBJECT.to_string()),
            Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(compact(schema.clone())),
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Grammar::Choice(options) => TopLevelGrammar::from_lark(choice_lark(options)),
            Grammar::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
            Grammar::After { lead, optional, answer } => {
                // The answer is referenced by name (`@answer`), not pasted in: its rules, lexer and
                // options stay its own.
                let mut answer = answer.top_level();
                answer.grammars[0].name = Some("answer".into());
                let optional = if *optional { "?" } else { "" };
                let mut top = TopLevelGrammar::from_lark(format!("%llguidance {{}}\nstart: lead{optional} @answer\n{lead}\n"));
                top.grammars.append(&mut answer.grammars);
                top
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConstrainError {
    /// The grammar cannot be compiled or enforced (a malformed schema, a keyword llguidance
    /// does not enforce): the request's fault.
    #[error("{0}")]
    Grammar(String),
    /// The model's vocabulary could not be read.
    #[error("cannot build the token trie: {0}")]
    Vocabulary(String),
}

/// A model's vocabulary made ready for llguidance; build once per model, share across requests.
pub struct Grammars {
    factory: Arc<ParserFactory>,
    vocabulary: Arc<Vocabulary>,
    eos: TokenId,
}

impl Grammars {
    /// `eos`: the token that ends the output once the grammar is complete (the chat turn's end).
    pub fn new(tokenizer: Tokenizer, eos: u32) -> Result<Self, ConstrainError> {
        let vocab = |e: &dyn std::fmt::Display| ConstrainError::Vocabulary(e.to_string());
        let json: Json = serde_json::from_str(&tokenizer.to_json().map_err(|e| vocab(&e))?).map_err(|e| vocab(&e))?;
        let mut words = llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| vocab(&e))?;
        let size = tokenizer.vocab_size().max(words.len());
        words.resize(size, Vec::new());
        let info = TokRxInfo { tok_end_of_turn: Some(eos), ..TokRxInfo::new(size as u32, eos) };
        let vocabulary = Arc::new(Vocabulary { trie: TokTrie::from(&info, &words), tokenizer });
        let env: TokEnv = vocabulary.clone();
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| vocab(&e))?;
        factory.quiet();
        Ok(Grammars { factory: Arc::new(factory), vocabulary, eos })
    }

    /// A fresh constraint for one request of at most `max_tokens`, compiled now so a bad
    /// grammar is refused at the door. A `json_object` output is closed in time: when the
    /// tokens left are about what completing it takes, the completion is forced (not after a
    /// lead: the budget's tracker would read the lead as JSON).
    pub fn constraint(&self, grammar: &Grammar, max_tokens: usize) -> Result<Box<dyn LogitsProcessor>, ConstrainError> {
        let parser = self.factory.create_parser(grammar.top_level()).map_err(|e| ConstrainError::Grammar(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstrainError::Grammar(e));
        }
        let budget =
            matches!(grammar, Grammar::JsonObject).then(|| Budget { left: max_tokens, tail: closing::JsonTail::new(), closing: false });
        Ok(Box::new(Constraint { matcher, eos: self.eos, vocabulary: self.vocabulary.clone(), budget }))
    }
}

/// JSON on one line, `", "` and `": "` between items, unless the schema sets its own layout
/// (llguidance's `x-guidance`): free whitespace lets a small model pad the output with blank
/// lines until `max_tokens` runs out.
pub fn compact(mut schema: Json) -> Json {
    if let Some(object) = schema.as_object_mut() {
        object
            .entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}));
    }
    schema
}

/// Any JSON object, laid out as [`compact`] lays it out, with keys of at most 64 characters,
/// other strings of at most 256 and numbers of at most 16 digits a part: with nothing else to
/// bound it, a small model sampled hot can repeat inside one string until `max_tokens` runs
/// out, and the output would not parse.
const JSON_OBJECT: &str = r#"
start: object
?value: object | array | STRING | NUMBER | "true" | "false" | "null"
object: "{" [pair (", " pair)*] "}"
pair: KEY ": " value
array: "[" [value (", " value)*] "]"
KEY: /"(\\(["\\\/bfnrt]|u[0-9a-fA-F]{4})|[^"\\\x00-\x1F\x7F]){0,64}"/
STRING: /"(\\(["\\\/bfnrt]|u[0-9a-fA-F]{4})|[^"\\\x00-\x1F\x7F]){0,256}"/
NUMBER: /-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,16})?([eE][+-]?[0-9]{1,3})?/
"#;

/// `start: "a" | "b" | …`, each option a JSON-escaped string literal.
fn choice_lark(options: &[String]) -> String {
    let alternatives: Vec<String> = options.iter().map(|o| Json::String(o.clone()).to_string()).collect();
    format!("start: {}", alternatives.join(" | "))
}

/// The vocabulary as llguidance reads it: each token's bytes in a trie, and the model's own
/// tokenizer for the text llguidance needs tokenized.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.tokenizer.encode(&String::from_utf8_lossy(s), false).unwrap_or_default()
    }
}

const CLOSING_MARGIN: usize = 3;

/// One sequence's grammar state.
struct Constraint {
    matcher: Matcher,
    eos: TokenId,
    vocabulary: Arc<Vocabulary>,
    budget: Option<Budget>,
}

/// Tokens left before `max_tokens`, and where the output stands, for closing a `json_object`
/// in time.
#[derive(Clone)]
struct Budget {
    left: usize,
    tail: closing::JsonTail,
    /// Once closing has begun it goes on: re-tokenising the rest may count differently.
    closing: bool,
}

impl Constraint {
    /// The token to force now, if the output must close to parse within the budget.
    fn closing_token(&mut self) -> Option<TokenId> {
        let budget = self.budget.as_mut()?;
        let closing = budget.tail.closing();
        // A token holds at least one byte: far from the budget's end nothing is tokenised.
        if !budget.closing && budget.left > closing.len() + CLOSING_MARGIN {
            return None;
        }
        let tokens = self.vocabulary.tokenize_bytes(closing.as_bytes());
        // A few tokens of margin: the rest is re-tokenised after each forced step, and the
        // end-of-turn token should still fit.
        budget.closing |= budget.left <= tokens.len() + CLOSING_MARGIN;
        budget.closing.then(|| tokens.first().copied().unwrap_or(self.eos))
    }
}

impl LogitsProcessor for Constraint {
    fn process(&mut self, logits: &mut [f32]) {
        let mask: SimpleVob = match self.matcher.compute_mask_or_eos() {
            Ok(mask) => mask,
            // The error is reported when the sampled token is accepted; only the end is left.
            Err(_) => {
                logits.iter_mut().enumerate().for_each(|(i, l)| {
                    if i != self.eos as usize {
                        *l = f32::NEG_INFINITY
                    }
                });
                return;
            }
        };
        let forced = self.closing_token().filter(|&t| mask.is_allowed(t));
        for (i, l) in logits.iter_mut().enumerate() {
            let allowed = match forced {
                Some(t) => i as TokenId == t,
                None => mask.is_allowed(i as TokenId),
            };
            if !allowed {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    fn accept(&mut self, token: u32) -> Result<(), String> {
        if token == self.eos {
            // The end of the output: only where the grammar is complete.
            return match self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false) {
                true => Ok(()),
                false => Err(self.matcher.get_error().unwrap_or_else(|| "the output ended before the grammar was complete".into())),
            };
        }
        if let Some(budget) = &mut self.budget {
            budget.left = budget.left.saturating_sub(1);
            budget.tail.push(self.vocabulary.trie.token(token));
        }
        self.matcher.consume_token(token).map_err(|e| e.to_string())
    }

    fn fork(&self) -> Box<dyn LogitsProcessor> {
        let (eos, vocabulary, budget) = (self.eos, self.vocabulary.clone(), self.budget.clone());
        Box::new(Constraint { matcher: self.matcher.deep_clone(), eos, vocabulary, budget })
    }
}
