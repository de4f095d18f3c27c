//! Retrieval evaluation on TREC-style collections: documents (`<DOC><DOCNO>…</DOCNO>…</DOC>`),
//! topics (`<top><num>…</num><title>…</title></top>`) and qrels (`qid iter docno relevance`),
//! scored by nDCG@10, MAP (to depth 1000) and recall@100.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::{Hit, IngestOptions, IngestReport, Kb, KbError, NewContent, Result, SearchOptions};

pub type Qrels = HashMap<String, HashMap<String, u32>>;

/// The text between `open` and `close` tags in each `<tag>…</tag>` element of `text`.
fn elements<'a>(text: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        out.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    out
}

fn field<'a>(element: &'a str, tag: &str) -> Result<&'a str> {
    elements(element, tag).first().map(|s| s.trim()).ok_or_else(|| KbError::Invalid(format!("a TREC record has no <{tag}>")))
}

/// (docno, text) of every document.
pub fn read_trec_documents(text: &str) -> Result<Vec<(String, String)>> {
    elements(text, "DOC")
        .into_iter()
        .map(|doc| {
            let id = field(doc, "DOCNO")?.to_string();
            let body = doc.rsplit("</DOCNO>").next().unwrap_or("");
            Ok((id, body.split_whitespace().collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// (number, title) of every topic.
pub fn read_trec_topics(text: &str) -> Result<Vec<(String, String)>> {
    elements(text, "top")
        .into_iter()
        .map(|top| Ok((field(top, "num")?.to_string(), field(top, "title")?.split_whitespace().collect::<Vec<_>>().join(" "))))
        .collect()
}

pub fn read_qrels(text: &str) -> Result<Qrels> {
    let mut qrels = Qrels::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [qid, _, doc, rel] = parts[..] else {
            return Err(KbError::Invalid(format!("qrels line {}: expected `qid iter docno relevance`", n + 1)));
        };
        let rel: i64 = rel.parse().map_err(|_| KbError::Invalid(format!("qrels line {}: relevance {rel:?} is not a number", n + 1)))?;
        qrels.entry(qid.to_string()).or_default().insert(doc.to_string(), rel.max(0) as u32);
    }
    Ok(qrels)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub ndcg_at_10: f64,
    pub map: f64,
    pub recall_at_100: f64,
    /// Topics with at least one relevant document (the others are not scored, as trec_eval).
    pub queries: usize,
}

fn ndcg(ranking: &[String], judged: &HashMap<String, u32>, k: usize) -> f64 {
    let gain = |rel: u32| 2f64.powi(rel as i32) - 1.0;
    let discount = |i: usize| (i as f64 + 2.0).log2();
    let dcg: f64 = ranking.iter().take(k).enumerate().map(|(i, d)| gain(judged.get(d).copied().unwrap_or(0)) / discount(i)).sum();
    let mut ideal: Vec<u32> = judged.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, &r)| gain(r) / discount(i)).sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

fn average_precision(ranking: &[String], relevant: &HashSet<&String>) -> f64 {
    let mut hits = 0;
    let mut sum = 0.0;
    for (i, d) in ranking.iter().enumerate() {
        if relevant.contains(d) {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum / relevant.len() as f64
}

/// Scores document rankings (best first, per topic) against the judgments.
pub fn score(rankings: &HashMap<String, Vec<String>>, qrels: &Qrels) -> Metrics {
    let mut m = Metrics::default();
    for (qid, judged) in qrels {
        let relevant: HashSet<&String> = judged.iter().filter(|(_, &r)| r > 0).map(|(d, _)| d).collect();
        if relevant.is_empty() {
            continue;
        }
        let empty = Vec::new();
        let ranking = rankings.get(qid).unwrap_or(&empty);
        m.ndcg_at_10 += ndcg(ranking, judged, 10);
        m.map += average_precision(&ranking[..ranking.len().min(1000)], &relevant);
        m.recall_at_100 += ranking.iter().take(100).filter(|d| relevant.contains(d)).count() as f64 / relevant.len() as f64;
        m.queries += 1;
    }
    if m.queries > 0 {
        let n = m.queries as f64;
        m.ndcg_at_10 /= n;
        m.map /= n;
        m.recall_at_100 /= n;
    }
    m
}

/// Document ids in order of their best chunk.
pub fn documents_of(hits: &[Hit]) -> Vec<String> {
    let mut seen = HashSet::new();
    hits.iter().filter(|h| seen.insert(h.document.id.clone())).map(|h| h.document.id.clone()).collect()
}

/// A collection as its folder holds it: `doc-text.trec`, `query-text.trec`, `qrels`.
pub struct Collection {
    pub documents: Vec<(String, String)>,
    pub topics: Vec<(String, String)>,
    pub qrels: Qrels,
}

impl Collection {
    pub fn read(dir: &Path) -> Result<Collection> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| KbError::Invalid(format!("{}: {e}", dir.join(name).display())))
        };
        Ok(Collection {
            documents: read_trec_documents(&read("doc-text.trec")?)?,
            topics: read_trec_topics(&read("query-text.trec")?)?,
            qrels: read_qrels(&read("qrels")?)?,
        })
    }

    /// Ingests the documents as posted content, with their docno as id.
    pub fn ingest(&self, kb: &Kb, embed: bool) -> Result<IngestReport> {
        let items = self
            .documents
            .iter()
            .map(|(id, text)| NewContent {
                source: Some(format!("trec:{id}")),
                id: Some(id.clone()),
                text: text.clone(),
                ..Default::default()
            })
            .collect();
        kb.add_content(items, &IngestOptions { embed, ..Default::default() })
    }
}

/// Runs every topic through `kb.search` (to depth 1000) and scores the rankings; documents
/// must have been ingested with their docno as id.
pub fn evaluate(kb: &Kb, topics: &[(String, String)], qrels: &Qrels, opts: &SearchOptions) -> Result<Metrics> {
    let opts = SearchOptions { limit: 1000, candidates: opts.candidates.max(1000), ..opts.clone() };
    let mut rankings = HashMap::new();
    for (qid, query) in topics {
        rankings.insert(qid.clone(), documents_of(&kb.search(query, &opts, None)?));
    }
    Ok(score(&rankings, qrels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        let qrels = read_qrels("1 0 a 1\n1 0 b 1\n1 0 c 0\n2 0 x 0\n").unwrap();
        let rankings = HashMap::from([("1".to_string(), vec!["a".to_string(), "c".to_string(), "b".to_string()])]);
        let m = score(&rankings, &qrels);
        assert_eq!(m.queries, 1, "a topic without relevant documents is not scored");
        assert!((m.map - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2();
        assert!((m.ndcg_at_10 - dcg / idcg).abs() < 1e-12);
        assert_eq!(m.recall_at_100, 1.0);
    }

    #[test]
    fn trec_files_parse() {
        let docs = read_trec_documents("<DOC>\n<DOCNO>7</DOCNO>\nsome  text\nhere\n</DOC>\n<DOC>\n<DOCNO>8</DOCNO>\nmore\n</DOC>").unwrap();
        assert_eq!(docs, [("7".into(), "some text here".into()), ("8".into(), "more".into())]);
        let topics = read_trec_topics("<top>\n<num>1</num><title>\nA QUERY\n</title>\n</top>").unwrap();
        assert_eq!(topics, [("1".into(), "A QUERY".into())]);
        assert!(read_qrels("1 0 a").is_err());
    }
}
