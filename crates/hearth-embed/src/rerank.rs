//! Cross-encoder rerankers (`BertForSequenceClassification` with one label): each (query,
//! document) pair is encoded together and scored by the classification head.

use std::path::Path;

use serde_json::Value as Json;

use crate::config::read_json;
use crate::encoder::Encoder;
use crate::weights::{Linear, Tensors};
use crate::{EmbedError, Result};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RerankOptions {
    /// Return only the best `top_n` (default: all).
    pub top_n: Option<usize>,
    /// Cut pairs longer than the model's limit (the longer text first) instead of rejecting them.
    pub truncate: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// Position of the document in the request.
    pub index: usize,
    /// sigmoid(logit), as sentence-transformers' `CrossEncoder.predict` for one-label models.
    pub relevance_score: f32,
}

/// Results best first, and the tokens the pairs took.
#[derive(Clone, Debug, PartialEq)]
pub struct Reranking {
    pub results: Vec<Ranked>,
    pub tokens: usize,
}

pub struct Reranker {
    encoder: Encoder,
    pooler: Linear,
    classifier: Linear,
}

impl Reranker {
    pub fn load(dir: &Path) -> Result<Self> {
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
        Ok(Reranker { encoder, pooler, classifier })
    }

    pub fn max_tokens(&self) -> usize {
        self.encoder.text.limit()
    }

    /// Scores every document against `query`; errors name the offending document's index.
    pub fn rerank<S: AsRef<str>>(&self, query: &str, documents: &[S], opts: &RerankOptions) -> Result<Reranking> {
        if documents.is_empty() {
            return Err(EmbedError::InvalidRequest { param: "documents", message: "no documents to rerank".into() });
        }
        let seqs = documents
            .iter()
            .enumerate()
            .map(|(index, doc)| {
                let seq = self.encoder.text.encode(query, Some(doc.as_ref()), opts.truncate, index)?;
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
        let mut results: Vec<Ranked> =
            scores.into_iter().enumerate().map(|(index, relevance_score)| Ranked { index, relevance_score }).collect();
        results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
        results.truncate(opts.top_n.unwrap_or(results.len()));
        Ok(Reranking { results, tokens: seqs.iter().map(|s| s.ids.len()).sum() })
    }
}
