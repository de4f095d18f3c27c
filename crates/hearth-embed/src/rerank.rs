//! Rerankers, two kinds: cross-encoders (`BertForSequenceClassification` with one label: each
//! (query, document) pair is encoded together and scored by the classification head), and a
//! causal LM used as a judge, as Qwen3-Reranker is (the pair inside its instruction template,
//! scored by the "yes" and "no" logits of the answer's first token).

use std::path::Path;

use serde_json::Value as Json;

use crate::bert::Encoded;
use crate::config::read_json;
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::weights::{Linear, Tensors};
use crate::{EmbedError, Result};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RerankOptions {
    /// Return only the best `top_n` (default: all).
    pub top_n: Option<usize>,
    /// Cut pairs longer than the model's limit (the longer text first) instead of rejecting them.
    pub truncate: bool,
    /// The task, for a judge model (Qwen3-Reranker's `<Instruct>`); default: web search.
    pub instruction: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// Position of the document in the request.
    pub index: usize,
    /// sigmoid(logit) for a cross-encoder, as sentence-transformers' `CrossEncoder.predict`
    /// for one-label models; P(yes) against "no" for a judge.
    pub relevance_score: f32,
}

/// Results best first, and the tokens the pairs took.
#[derive(Clone, Debug, PartialEq)]
pub struct Reranking {
    pub results: Vec<Ranked>,
    pub tokens: usize,
}

pub struct Reranker {
    scorer: Scorer,
}

enum Scorer {
    CrossEncoder(Box<CrossEncoder>),
    Judge(Box<Judge>),
}

struct CrossEncoder {
    encoder: Encoder,
    pooler: Linear,
    classifier: Linear,
}

/// A causal LM answering "yes" or "no" to whether a document meets a query (Qwen3-Reranker).
struct Judge {
    decoder: Decoder,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    yes: u32,
    no: u32,
}

/// Qwen3-Reranker's template around `<Instruct>: …\n<Query>: …\n<Document>: …`.
const JUDGE_PREFIX: &str = "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the \
Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n";
const JUDGE_SUFFIX: &str = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
const JUDGE_INSTRUCTION: &str = "Given a web search query, retrieve relevant passages that answer the query";

impl Reranker {
    /// A cross-encoder directory, or a causal LM of an architecture the engine runs (used as a
    /// judge).
    pub fn load(dir: &Path) -> Result<Self> {
        let scorer = if Decoder::is_decoder(dir) {
            Scorer::Judge(Box::new(Judge::load(dir)?))
        } else {
            Scorer::CrossEncoder(Box::new(CrossEncoder::load(dir)?))
        };
        Ok(Reranker { scorer })
    }

    pub fn max_tokens(&self) -> usize {
        match &self.scorer {
            Scorer::CrossEncoder(c) => c.encoder.text.limit(),
            Scorer::Judge(j) => j.decoder.limit(),
        }
    }

    /// Scores every document against `query`; errors name the offending document's index.
    pub fn rerank<S: AsRef<str>>(&self, query: &str, documents: &[S], opts: &RerankOptions) -> Result<Reranking> {
        if documents.is_empty() {
            return Err(EmbedError::InvalidRequest { param: "documents", message: "no documents to rerank".into() });
        }
        let docs: Vec<&str> = documents.iter().map(AsRef::as_ref).collect();
        let (scores, tokens) = match &self.scorer {
            Scorer::CrossEncoder(c) => {
                if opts.instruction.is_some() {
                    let message = "this reranker is a cross-encoder, which takes no instruction".into();
                    return Err(EmbedError::InvalidRequest { param: "instruction", message });
                }
                c.scores(query, &docs, opts.truncate)?
            }
            Scorer::Judge(j) => j.scores(query, &docs, opts)?,
        };
        let mut results: Vec<Ranked> =
            scores.into_iter().enumerate().map(|(index, relevance_score)| Ranked { index, relevance_score }).collect();
        results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
        results.truncate(opts.top_n.unwrap_or(results.len()));
        Ok(Reranking { results, tokens })
    }
}

impl CrossEncoder {
    fn load(dir: &Path) -> Result<Self> {
        let tensors = Tensors::open(dir)?;
        let prefix = if tensors.contains("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        let encoder = Encoder::load(dir, &tensors, prefix, None)?;
        let config = read_json(&dir.join("config.json"))?;
        // transformers' default is two labels when the config names none.
        let labels = config.get("id2label").and_then(Json::as_object).map_or(2, |m| m.len());
        if labels != 1 {
            return Err(EmbedError::Unsupported(format!("a sequence classifier with {labels} labels (rerankers have one)")));
        }
        let h = encoder.hidden_size();
        let pooler = tensors.linear(&format!("{prefix}pooler.dense"), h, h)?;
        let classifier = tensors.linear("classifier", 1, h)?;
        Ok(CrossEncoder { encoder, pooler, classifier })
    }

    /// Each document's score, and the tokens the pairs took.
    fn scores(&self, query: &str, documents: &[&str], truncate: bool) -> Result<(Vec<f32>, usize)> {
        let seqs = documents
            .iter()
            .enumerate()
            .map(|(index, doc)| {
                let seq = self.encoder.text.encode(query, Some(doc), truncate, index)?;
                self.encoder.bert.check(&seq, index)?;
                Ok(seq)
            })
            .collect::<Result<Vec<_>>>()?;
        let h = self.encoder.hidden_size();
        let scores = self.encoder.run(&seqs, |states| {
            let mut pooled = vec![0f32; h];
            self.pooler.forward(&states[..h], &mut pooled);
            pooled.iter_mut().for_each(|v| *v = v.tanh());
            let mut logit = [0f32];
            self.classifier.forward(&pooled, &mut logit);
            1.0 / (1.0 + (-logit[0]).exp())
        });
        Ok((scores, seqs.iter().map(|s| s.ids.len()).sum()))
    }
}

impl Judge {
    fn load(dir: &Path) -> Result<Self> {
        let decoder = Decoder::load(dir, None)?;
        let token = |t: &str| {
            decoder.token_id(t).ok_or_else(|| EmbedError::Unsupported(format!("a judge reranker whose vocabulary has no {t:?} token")))
        };
        let (yes, no) = (token("yes")?, token("no")?);
        let template = |text: &str| decoder.tokens(text, false).map_err(EmbedError::Tokenizer);
        let (prefix, suffix) = (template(JUDGE_PREFIX)?, template(JUDGE_SUFFIX)?);
        Ok(Judge { decoder, prefix, suffix, yes, no })
    }

    /// P(yes) against "no" after each document's prompt, and the tokens the prompts took. A
    /// prompt over the limit is an error unless `truncate`, which cuts the end of the pair text.
    fn scores(&self, query: &str, documents: &[&str], opts: &RerankOptions) -> Result<(Vec<f32>, usize)> {
        let instruction = opts.instruction.as_deref().unwrap_or(JUDGE_INSTRUCTION);
        let room = self.decoder.limit().saturating_sub(self.prefix.len() + self.suffix.len());
        let seqs = documents
            .iter()
            .enumerate()
            .map(|(index, doc)| {
                let text = format!("<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}");
                let mut pair = self.decoder.tokens(&text, true).map_err(|message| EmbedError::BadInput { index, message })?;
                if pair.len() > room {
                    let tokens = pair.len() + self.prefix.len() + self.suffix.len();
                    if !opts.truncate {
                        return Err(EmbedError::TooLong { index, tokens, limit: self.decoder.limit() });
                    }
                    pair.truncate(room);
                }
                let ids = [&self.prefix[..], &pair, &self.suffix].concat();
                let seq = Encoded { types: vec![0; ids.len()], ids, prompt_tokens: 0 };
                self.decoder.check(&seq, index)?;
                Ok(seq)
            })
            .collect::<Result<Vec<_>>>()?;
        let (yes, no) = (self.yes as usize, self.no as usize);
        let scores = self.decoder.last_logits(&seqs)?.iter().map(|l| 1.0 / (1.0 + (l[no] - l[yes]).exp())).collect();
        Ok((scores, seqs.iter().map(|s| s.ids.len()).sum()))
    }
}
