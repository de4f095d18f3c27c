use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::Document;

#[derive(Clone, Debug)]
pub struct ChunkOptions {
    /// The most tokens in a chunk, overlap included (a single word over it is a chunk alone).
    pub max_tokens: usize,
    /// How much of the end of a chunk the next one in the same section repeats, at most.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions { max_tokens: 200, overlap_tokens: 32 }
    }
}

/// A piece of a document to index and embed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Position among the document's chunks, from 0.
    pub index: usize,
    /// `document.text[span]`.
    pub text: String,
    /// The heading path of the section it lies in.
    pub section: Vec<String>,
    pub page: Option<u32>,
    /// Byte range into the document's text, on char boundaries, without surrounding whitespace.
    pub span: Range<usize>,
}

/// Splits a document into chunks of at most `max_tokens` as counted by `count_tokens` (the
/// embedding model's tokenizer, without special tokens). Chunks never cross a section
/// boundary. Whole paragraphs are packed together; a paragraph over the budget is split
/// between sentences, a sentence over it between words. Within a section each chunk starts
/// with up to `overlap_tokens` of the previous one's last sentences (or words).
///
/// A chunk's count is the sum of its pieces' counts, so `count_tokens` runs once per
/// paragraph, plus once per sentence or word of the few that are too long and of each overlap.
pub fn chunk(doc: &Document, opts: &ChunkOptions, count_tokens: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let max_tokens = opts.max_tokens.max(1);
    let text = doc.text.as_str();
    let mut chunks = Vec::new();
    for section in &doc.sections {
        let pieces = pieces(text, section.span.clone(), max_tokens, count_tokens);
        let mut previous: Option<Range<usize>> = None;
        let mut next = 0;
        while let Some(first) = pieces.get(next) {
            let overlap_budget = opts.overlap_tokens.min(max_tokens.saturating_sub(first.tokens));
            let overlap = previous.and_then(|previous| overlap(text, previous, overlap_budget, count_tokens));
            let (start, mut tokens) = match overlap {
                Some(overlap) => (overlap.span.start, overlap.tokens + first.tokens),
                None => (first.span.start, first.tokens),
            };
            let mut end = first.span.end;
            next += 1;
            while let Some(piece) = pieces.get(next).filter(|piece| tokens + piece.tokens <= max_tokens) {
                tokens += piece.tokens;
                end = piece.span.end;
                next += 1;
            }
            chunks.push(Chunk {
                index: chunks.len(),
                text: text[start..end].to_string(),
                section: section.path.clone(),
                page: section.page,
                span: start..end,
            });
            previous = Some(start..end);
        }
    }
    chunks
}

/// A stretch of the text, trimmed, and its token count.
struct Piece {
    span: Range<usize>,
    tokens: usize,
}

/// The section's text as the largest pieces within the budget: paragraphs, else sentences,
/// else words (a word over the budget is a piece all the same).
fn pieces(text: &str, section: Range<usize>, max_tokens: usize, count_tokens: &dyn Fn(&str) -> usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for paragraph in split(text, section, Boundary::Paragraph) {
        let tokens = count_tokens(&text[paragraph.clone()]);
        if tokens <= max_tokens {
            pieces.push(Piece { span: paragraph, tokens });
            continue;
        }
        for sentence in split(text, paragraph, Boundary::Sentence) {
            let tokens = count_tokens(&text[sentence.clone()]);
            if tokens <= max_tokens {
                pieces.push(Piece { span: sentence, tokens });
                continue;
            }
            pieces.extend(
                split(text, sentence, Boundary::Word)
                    .into_iter()
                    .map(|word| Piece { tokens: count_tokens(&text[word.clone()]), span: word }),
            );
        }
    }
    pieces
}

/// The end of the previous chunk to repeat: its last sentences within the budget, or if even
/// the last sentence is over it, that sentence's last words.
fn overlap(text: &str, previous: Range<usize>, budget: usize, count_tokens: &dyn Fn(&str) -> usize) -> Option<Piece> {
    if budget == 0 {
        return None;
    }
    let sentences = split(text, previous, Boundary::Sentence);
    let last_sentence = sentences.last()?.clone();
    trailing(text, &sentences, budget, count_tokens)
        .or_else(|| trailing(text, &split(text, last_sentence, Boundary::Word), budget, count_tokens))
}

/// The longest run of `parts` ending with the last one whose counts add up to at most `budget`.
fn trailing(text: &str, parts: &[Range<usize>], budget: usize, count_tokens: &dyn Fn(&str) -> usize) -> Option<Piece> {
    let end = parts.last()?.end;
    let mut taken: Option<Piece> = None;
    for part in parts.iter().rev() {
        let tokens = taken.as_ref().map_or(0, |taken| taken.tokens) + count_tokens(&text[part.clone()]);
        if tokens > budget {
            break;
        }
        taken = Some(Piece { span: part.start..end, tokens });
    }
    taken
}

#[derive(Clone, Copy)]
enum Boundary {
    /// Blank lines.
    Paragraph,
    /// `.`, `!` or `?` (and any closing quotes or brackets) before whitespace; CJK full stops;
    /// line ends.
    Sentence,
    /// Whitespace.
    Word,
}

/// Characters that may close a sentence after its full stop: `He said "no."`
const CLOSERS: &[char] = &['"', '\'', ')', ']', '»', '”', '’'];

/// The non-blank parts of `range` between boundaries, trimmed, as ranges into `text`.
fn split(text: &str, range: Range<usize>, boundary: Boundary) -> Vec<Range<usize>> {
    let slice = &text[range.clone()];
    let mut parts = Vec::new();
    let mut start = 0;
    for cut in cuts(slice, boundary).into_iter().chain([slice.len()]) {
        let part = &slice[start..cut];
        let trimmed = part.trim_start();
        let offset = range.start + start + (part.len() - trimmed.len());
        let trimmed = trimmed.trim_end();
        if !trimmed.is_empty() {
            parts.push(offset..offset + trimmed.len());
        }
        start = cut;
    }
    parts
}

/// Byte offsets in `slice` (char boundaries) where parts end.
fn cuts(slice: &str, boundary: Boundary) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut chars = slice.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let after = i + c.len_utf8();
        match boundary {
            // A blank line is cut out whole; trimming drops it.
            Boundary::Paragraph if c == '\n' => {
                let rest = &slice[after..];
                let line_end = rest.find('\n').map_or(slice.len(), |n| after + n);
                if slice[after..line_end].trim().is_empty() {
                    cuts.push(after);
                }
            }
            Boundary::Sentence if matches!(c, '\n' | '。' | '！' | '？') => cuts.push(after),
            Boundary::Sentence if matches!(c, '.' | '!' | '?') => {
                let mut end = after;
                while let Some(&(j, closer)) = chars.peek().filter(|(_, next)| CLOSERS.contains(next)) {
                    end = j + closer.len_utf8();
                    chars.next();
                }
                if chars.peek().is_some_and(|(_, next)| next.is_whitespace()) {
                    cuts.push(end);
                }
            }
            Boundary::Word if c.is_whitespace() => cuts.push(i),
            _ => {}
        }
    }
    cuts
}
