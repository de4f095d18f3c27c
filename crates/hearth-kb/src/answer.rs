//! Answers with citations: the retrieved chunks become numbered sources in a prompt that fits
//! the chat model's context, and the answer's `[n]` markers map back to chunks. A small model
//! often quotes without marking, so a source the answer copies from (five or more words in a
//! row) is cited too, as unmarked; an answer that cites nothing retrieved is flagged.

use std::collections::HashSet;
use std::ops::Range;

use serde::Serialize;

use crate::Hit;

pub struct Prompt {
    pub system: String,
    pub user: String,
    /// The hits that made it into the prompt, as sources `[1]`, `[2]`, …
    pub sources: Vec<Hit>,
}

const SYSTEM: &str = "Answer the question using only the numbered sources. Cite the sources you use with their numbers in brackets, like [1]. If the sources do not contain the answer, say that you do not know.";

fn heading(n: usize, hit: &Hit) -> String {
    let mut parts: Vec<String> = hit.document.title.iter().cloned().collect();
    parts.extend(hit.chunk.section.iter().cloned());
    if let Some(page) = hit.chunk.page {
        parts.push(format!("page {page}"));
    }
    if parts.is_empty() {
        format!("[{n}]")
    } else {
        format!("[{n}] {}", parts.join(" — "))
    }
}

/// The prompt for `question` over `hits` (best first), keeping as many sources as fit in
/// `budget` tokens (counted by `count`); the first source is cut to fit if it alone does not.
pub fn build_prompt(question: &str, hits: Vec<Hit>, budget: usize, count: &dyn Fn(&str) -> usize) -> Prompt {
    let frame = format!("Sources:\n\nQuestion: {question}");
    let mut used = count(SYSTEM) + count(&frame);
    let mut blocks = Vec::new();
    let mut sources = Vec::new();
    for hit in hits {
        let n = sources.len() + 1;
        let mut block = format!("{}\n{}\n\n", heading(n, &hit), hit.chunk.text);
        let mut tokens = count(&block);
        if used + tokens > budget && sources.is_empty() {
            // Cut by characters in proportion, on a char boundary.
            let room = budget.saturating_sub(used) as f64 / tokens.max(1) as f64;
            let keep = ((block.chars().count() as f64) * room * 0.9) as usize;
            block = block.chars().take(keep).collect::<String>() + "\n\n";
            tokens = count(&block);
        }
        if used + tokens > budget || block.trim().is_empty() {
            break;
        }
        used += tokens;
        blocks.push(block);
        sources.push(hit);
    }
    Prompt { system: SYSTEM.to_string(), user: format!("Sources:\n{}Question: {question}", blocks.concat()), sources }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Citation {
    /// The source's number in the prompt.
    pub n: usize,
    pub chunk_id: i64,
    pub document_id: String,
    pub title: Option<String>,
    pub source: String,
    pub section: Vec<String>,
    pub page: Option<u32>,
    /// Byte range of the chunk in its document's text.
    pub span: Range<usize>,
    /// The same range in characters (Unicode scalar values), as the HTTP API reports it.
    pub char_span: Range<usize>,
    pub chunk_text: String,
    /// Cited by an `[n]` marker (else found by the answer's overlap with the chunk).
    pub marked: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cited {
    pub citations: Vec<Citation>,
    /// Markers naming no source.
    pub invalid_markers: Vec<usize>,
    /// Nothing retrieved is cited: the answer is not grounded in the sources.
    pub unsupported: bool,
}

/// The numbers inside `[n]` and `[n, m]` markers, in order of first appearance.
fn markers(answer: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        let numbers: Option<Vec<usize>> = inside.split([',', ' ']).filter(|s| !s.is_empty()).map(|s| s.parse().ok()).collect();
        for n in numbers.unwrap_or_default() {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Words in a row the answer must share with a chunk to count as quoting it.
const QUOTE_WORDS: usize = 5;

fn quotes(answer: &[String], chunk: &str) -> bool {
    let chunk = words(chunk);
    let grams: HashSet<&[String]> = chunk.windows(QUOTE_WORDS).collect();
    answer.windows(QUOTE_WORDS).any(|w| grams.contains(w))
}

pub fn cite(answer: &str, sources: &[Hit]) -> Cited {
    let mut citations = Vec::new();
    let mut invalid_markers = Vec::new();
    let citation = |n: usize, marked: bool| {
        let hit: &Hit = &sources[n - 1];
        Citation {
            n,
            chunk_id: hit.chunk.id,
            document_id: hit.document.id.clone(),
            title: hit.document.title.clone(),
            source: hit.document.source.clone(),
            section: hit.chunk.section.clone(),
            page: hit.chunk.page,
            span: hit.chunk.span.clone(),
            char_span: hit.chunk.char_span.clone(),
            chunk_text: hit.chunk.text.clone(),
            marked,
        }
    };
    for n in markers(answer) {
        if (1..=sources.len()).contains(&n) {
            citations.push(citation(n, true));
        } else {
            invalid_markers.push(n);
        }
    }
    let answer_words = words(answer);
    for n in 1..=sources.len() {
        if !citations.iter().any(|c: &Citation| c.n == n) && quotes(&answer_words, &sources[n - 1].chunk.text) {
            citations.push(citation(n, false));
        }
    }
    let unsupported = citations.is_empty();
    Cited { citations, invalid_markers, unsupported }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkRecord, DocumentRecord};

    fn hit(id: i64, text: &str) -> Hit {
        let document = DocumentRecord {
            id: format!("doc{id}"),
            source: format!("content:doc{id}"),
            key: None,
            title: Some(format!("Document {id}")),
            content_type: "text".into(),
            tags: Vec::new(),
            content_hash: String::new(),
            bytes: text.len() as u64,
            chunk_count: 1,
            created_at: 0,
            updated_at: 0,
        };
        let chunk = ChunkRecord {
            id,
            doc_id: document.id.clone(),
            index: 0,
            text: text.into(),
            section: Vec::new(),
            page: None,
            span: 0..text.len(),
            char_span: 0..text.chars().count(),
        };
        Hit { chunk, document, score: 1.0, bm25_rank: Some(1), vector_rank: None, highlights: Vec::new(), char_highlights: Vec::new() }
    }

    fn sources() -> Vec<Hit> {
        vec![hit(7, "The Harbour Bridge was finished in 1932."), hit(8, "Octopuses have three hearts.")]
    }

    #[test]
    fn an_answer_without_markers_or_quotes_is_flagged_unsupported() {
        let cited = cite("I think it opened some time last century.", &sources());
        assert_eq!(cited, Cited { citations: Vec::new(), invalid_markers: Vec::new(), unsupported: true });
    }

    #[test]
    fn markers_naming_no_source_are_reported_and_cite_nothing() {
        let cited = cite("It opened in 1932 [9].", &sources());
        assert_eq!((cited.citations.len(), cited.invalid_markers.as_slice(), cited.unsupported), (0, [9].as_slice(), true));

        let cited = cite("It opened in 1932 [2][9], and octopuses have three hearts [0].", &sources());
        assert_eq!(cited.invalid_markers, [9, 0]);
        assert!(!cited.unsupported);
        let c = &cited.citations[0];
        assert_eq!((cited.citations.len(), c.n, c.chunk_id, c.document_id.as_str(), c.marked), (1, 2, 8, "doc8", true));
    }

    #[test]
    fn a_quoted_source_is_cited_unmarked() {
        let cited = cite("Records say the Harbour Bridge was finished in 1932.", &sources());
        let c = &cited.citations[0];
        assert_eq!((cited.citations.len(), c.n, c.marked, cited.unsupported), (1, 1, false, false));
        assert_eq!(
            (c.span.clone(), c.char_span.clone(), c.chunk_text.as_str()),
            (0..40, 0..40, "The Harbour Bridge was finished in 1932.")
        );
    }

    #[test]
    fn markers_are_read_in_order_without_duplicates() {
        assert_eq!(markers("A [2]. B [1, 3] and [2]. Not [x] nor [ ]."), [2, 1, 3]);
        assert_eq!(markers("no markers"), Vec::<usize>::new());
    }

    #[test]
    fn quoting_needs_five_words_in_a_row() {
        let answer = words("It says the bridge was finished in 1932 by the city.");
        assert!(quotes(&answer, "Records show the bridge was finished in 1932."));
        assert!(!quotes(&answer, "The bridge opened; it was finished later."));
    }
}
