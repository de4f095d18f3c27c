//! BM25, vector and hybrid search. Hybrid fuses the two rankings by reciprocal rank
//! (Σ wᵢ / (k + rankᵢ)), which needs no score calibration between them; a cross-encoder can
//! then reorder the best candidates.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::store::{ChunkRecord, DocumentRecord, Filters};
use crate::{KbError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Bm25,
    Vector,
    Hybrid,
}

impl FromStr for Mode {
    type Err = KbError;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "bm25" | "keyword" => Ok(Mode::Bm25),
            "vector" | "semantic" => Ok(Mode::Vector),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(KbError::Invalid(format!("unknown search mode {other:?}: use bm25, vector or hybrid"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchOptions {
    pub mode: Mode,
    pub limit: usize,
    /// How deep each ranking is read before fusion and reranking.
    pub candidates: usize,
    pub bm25_weight: f32,
    pub vector_weight: f32,
    /// RRF's k: larger flattens the advantage of the top ranks.
    pub rrf_k: f32,
    pub filters: Filters,
    /// Reorder the best `candidates` with the cross-encoder (when one is configured).
    pub rerank: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            mode: Mode::Hybrid,
            limit: 10,
            candidates: 100,
            bm25_weight: 1.0,
            vector_weight: 1.0,
            rrf_k: 60.0,
            filters: Filters::default(),
            rerank: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    pub chunk: ChunkRecord,
    pub document: DocumentRecord,
    /// The mode's score: BM25, cosine similarity, the fused RRF score, or the reranker's.
    pub score: f32,
    /// 1-based ranks in each list the hit came from.
    pub bm25_rank: Option<usize>,
    pub vector_rank: Option<usize>,
    /// Byte ranges in `chunk.text` of words matching the query.
    pub highlights: Vec<Range<usize>>,
    /// The same ranges in characters (Unicode scalar values), as the HTTP API reports them.
    pub char_highlights: Vec<Range<usize>>,
}

/// A ranked list of chunk ids with the mode's scores.
pub(crate) type Ranking = Vec<(i64, f32)>;

/// Fuses rankings by weighted reciprocal rank; ties keep the first list's order.
pub(crate) fn fuse(lists: &[(&Ranking, f32)], k: f32) -> Ranking {
    let mut score: HashMap<i64, (f32, usize)> = HashMap::new();
    let mut order = 0;
    for (list, weight) in lists {
        for (rank, (id, _)) in list.iter().enumerate() {
            let entry = score.entry(*id).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            entry.0 += weight / (k + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(i64, f32, usize)> = score.into_iter().map(|(id, (s, o))| (id, s, o)).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    fused.into_iter().map(|(id, s, _)| (id, s)).collect()
}

/// Lower-cased words of at least two characters, minus the commonest English function words.
pub(crate) fn query_terms(query: &str) -> HashSet<String> {
    const STOP: &[&str] = &[
        "the", "of", "and", "to", "in", "is", "for", "on", "by", "with", "an", "as", "at", "be", "or", "are", "it", "from", "that", "this",
        "what", "how",
    ];
    query
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 2 && !STOP.contains(&w.as_str()))
        .collect()
}

/// A crude stem, enough to highlight "filters" for "filter" the way FTS5's Porter stemmer
/// matched it: the word less a common suffix.
fn stem(word: &str) -> &str {
    for suffix in ["ations", "ation", "ings", "ing", "ies", "es", "ed", "ly", "s"] {
        if let Some(stem) = word.strip_suffix(suffix) {
            if stem.chars().count() >= 3 {
                return stem;
            }
        }
    }
    word
}

/// Byte ranges of the words in `text` whose stem matches a query term's.
pub(crate) fn highlights(text: &str, terms: &HashSet<String>) -> Vec<Range<usize>> {
    let stems: HashSet<&str> = terms.iter().map(|t| stem(t)).collect();
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if stems.contains(stem(&text[s..i].to_lowercase())) {
                    out.push(s..i);
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement_and_keeps_order_on_ties() {
        let a = vec![(1, 9.0), (2, 8.0), (3, 7.0)];
        let b = vec![(3, 0.9), (4, 0.8), (1, 0.7)];
        let fused = fuse(&[(&a, 1.0), (&b, 1.0)], 60.0);
        let ids: Vec<i64> = fused.iter().map(|x| x.0).collect();
        assert_eq!(ids, [1, 3, 2, 4]);
        let only_b = fuse(&[(&a, 0.0), (&b, 1.0)], 60.0);
        assert_eq!(only_b.iter().map(|x| x.0).take(3).collect::<Vec<_>>(), [3, 4, 1]);
    }

    #[test]
    fn highlights_match_stems_and_skip_stopwords() {
        let terms = query_terms("The design of band pass filters");
        let text = "Filter design: a bandpass filtering method for the filters.";
        let words: Vec<&str> = highlights(text, &terms).into_iter().map(|r| &text[r]).collect();
        assert_eq!(words, ["Filter", "design", "filtering", "filters"]);
    }
}
