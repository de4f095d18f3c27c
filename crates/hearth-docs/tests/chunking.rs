//! Chunking: budgets, sections, overlap, spans, sentence and word splitting, UTF-8.

use std::cell::Cell;

use hearth_docs::{chunk, extract_bytes, Chunk, ChunkOptions, ContentType, Document, ExtractOptions};

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn doc(content_type: ContentType, text: &str) -> Document {
    extract_bytes(text.as_bytes(), content_type, &ExtractOptions::default()).unwrap().remove(0)
}

fn opts(max_tokens: usize, overlap_tokens: usize) -> ChunkOptions {
    ChunkOptions { max_tokens, overlap_tokens }
}

/// What must hold for every chunking: indices, spans mapping back to trimmed text on char
/// boundaries, each chunk inside one section and carrying its path and page.
fn assert_well_formed(doc: &Document, chunks: &[Chunk]) {
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.index, i);
        assert!(doc.text.is_char_boundary(chunk.span.start) && doc.text.is_char_boundary(chunk.span.end));
        assert_eq!(chunk.text, doc.text[chunk.span.clone()]);
        assert!(!chunk.text.is_empty() && chunk.text.trim() == chunk.text, "untrimmed chunk {:?}", chunk.text);
        let section = doc.sections.iter().find(|s| s.span.start <= chunk.span.start && chunk.span.end <= s.span.end);
        let section = section.unwrap_or_else(|| panic!("chunk {i} {:?} crosses a section boundary", chunk.span));
        assert_eq!((&chunk.section, chunk.page), (&section.path, section.page));
    }
}

/// Chunks in order, overlap removed, give back all the document's text but whitespace.
fn assert_covers_every_word(doc: &Document, chunks: &[Chunk]) {
    let without_whitespace = |text: &str| text.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let mut covered_to = 0;
    let mut rebuilt = String::new();
    for chunk in chunks {
        rebuilt.push_str(&doc.text[chunk.span.start.max(covered_to)..chunk.span.end]);
        covered_to = covered_to.max(chunk.span.end);
    }
    assert_eq!(without_whitespace(&rebuilt), without_whitespace(&doc.text));
}

#[test]
fn whole_paragraphs_are_packed_within_the_budget() {
    let text = "one two three\n\nfour five six\n\nseven eight nine\n\nten eleven twelve";
    let doc = doc(ContentType::Text, text);
    let chunks = chunk(&doc, &opts(7, 0), &words);
    assert_well_formed(&doc, &chunks);
    let texts: Vec<_> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["one two three\n\nfour five six", "seven eight nine\n\nten eleven twelve"]);
}

#[test]
fn chunks_never_cross_sections() {
    let markdown = "# A\n\nalpha beta gamma.\n\n## B\n\ndelta epsilon.\n\n# C\n\nzeta eta theta iota kappa.";
    let doc = doc(ContentType::Markdown, markdown);
    let chunks = chunk(&doc, &opts(100, 10), &words);
    assert_well_formed(&doc, &chunks);
    let summary: Vec<_> = chunks.iter().map(|c| (c.section.join("/"), c.text.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("A".to_string(), "A\n\nalpha beta gamma."),
            ("A/B".to_string(), "B\n\ndelta epsilon."),
            ("C".to_string(), "C\n\nzeta eta theta iota kappa.")
        ]
    );
}

#[test]
fn pdf_pages_carry_into_chunks() {
    let doc = Document {
        key: None,
        title: None,
        content_type: ContentType::Pdf,
        text: "first page text\n\nsecond page text".into(),
        sections: vec![
            hearth_docs::Section { path: vec![], page: Some(1), span: 0..15 },
            hearth_docs::Section { path: vec![], page: Some(2), span: 17..33 },
        ],
    };
    let chunks = chunk(&doc, &ChunkOptions::default(), &words);
    assert_well_formed(&doc, &chunks);
    assert_eq!(chunks.iter().map(|c| c.page).collect::<Vec<_>>(), [Some(1), Some(2)]);
}

#[test]
fn oversize_paragraphs_split_between_sentences_with_overlap() {
    let sentences: Vec<String> = (1..=12).map(|i| format!("Sentence number {i} has six words.")).collect();
    let text = sentences.join(" ");
    let doc = doc(ContentType::Text, &text);
    let (max, overlap) = (20, 6);
    let chunks = chunk(&doc, &opts(max, overlap), &words);
    assert_well_formed(&doc, &chunks);
    assert_covers_every_word(&doc, &chunks);
    assert!(chunks.len() > 3);
    for chunk in &chunks {
        assert!(words(&chunk.text) <= max, "{} words: {:?}", words(&chunk.text), chunk.text);
        assert!(chunk.text.starts_with("Sentence") && chunk.text.ends_with("words."), "not cut at sentences: {:?}", chunk.text);
    }
    for pair in chunks.windows(2) {
        let repeated = &doc.text[pair[1].span.start..pair[0].span.end];
        assert!(pair[1].span.start < pair[0].span.end, "no overlap between {:?} and {:?}", pair[0].text, pair[1].text);
        assert!(words(repeated) <= overlap, "overlap {repeated:?} is over {overlap} words");
        assert!(pair[0].text.ends_with(repeated) && pair[1].text.starts_with(repeated));
    }
}

#[test]
fn oversize_sentences_split_between_words() {
    let long_sentence = (1..=45).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let doc = doc(ContentType::Text, &format!("Short one. {long_sentence}. Another short one."));
    let (max, overlap) = (10, 3);
    let chunks = chunk(&doc, &opts(max, overlap), &words);
    assert_well_formed(&doc, &chunks);
    assert_covers_every_word(&doc, &chunks);
    for chunk in &chunks {
        assert!(words(&chunk.text) <= max, "{:?}", chunk.text);
    }
    for pair in chunks.windows(2) {
        let repeated = &doc.text[pair[1].span.start..pair[0].span.end.max(pair[1].span.start)];
        assert!(!repeated.is_empty() && words(repeated) <= overlap, "overlap {repeated:?}");
    }
}

#[test]
fn a_word_over_the_budget_is_a_chunk_of_its_own() {
    let characters = |text: &str| text.chars().filter(|c| !c.is_whitespace()).count();
    let doc = doc(ContentType::Text, "tiny bit supercalifragilisticexpialidocious end");
    let chunks = chunk(&doc, &opts(10, 4), &characters);
    assert_well_formed(&doc, &chunks);
    let texts: Vec<_> = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["tiny bit", "supercalifragilisticexpialidocious", "end"]);
}

#[test]
fn multibyte_text_is_cut_on_char_boundaries() {
    let text = "Café crème brûlée é é é. 漢字の文です。次の文も漢字です。😀 emoji 🎉 party 🚀 rocket! Ünïcödé wörds everywhere.\n\nZweiter Absatz mit Umlauten äöü ß.";
    let doc = doc(ContentType::Text, text);
    for max in 1..8 {
        for overlap in [0, 1, 2, 5] {
            let chunks = chunk(&doc, &opts(max, overlap), &words);
            assert_well_formed(&doc, &chunks);
            assert_covers_every_word(&doc, &chunks);
        }
    }
    // CJK full stops end sentences without a following space.
    let characters = |text: &str| text.chars().filter(|c| !c.is_whitespace()).count();
    let cjk = doc_of("漢字の文です。次の文も漢字です。");
    let texts: Vec<_> = chunk(&cjk, &opts(8, 0), &characters).into_iter().map(|c| c.text).collect();
    assert_eq!(texts, ["漢字の文です。", "次の文も漢字です。"]);
}

fn doc_of(text: &str) -> Document {
    doc(ContentType::Text, text)
}

#[test]
fn empty_documents_have_no_chunks() {
    assert!(chunk(&doc_of(""), &ChunkOptions::default(), &words).is_empty());
    assert!(chunk(&doc_of(" \n\n \t\n"), &ChunkOptions::default(), &words).is_empty());
}

#[test]
fn the_tokenizer_runs_on_pieces_not_prefixes() {
    let paragraphs: Vec<String> = (0..400).map(|i| format!("Paragraph {i} says a few things. It has two sentences.")).collect();
    let doc = doc_of(&paragraphs.join("\n\n"));
    let calls = Cell::new(0);
    let counted_bytes = Cell::new(0);
    let counting = |text: &str| {
        calls.set(calls.get() + 1);
        counted_bytes.set(counted_bytes.get() + text.len());
        words(text)
    };
    let chunks = chunk(&doc, &opts(40, 8), &counting);
    assert_well_formed(&doc, &chunks);
    assert_covers_every_word(&doc, &chunks);
    assert!(calls.get() <= 2 * paragraphs.len(), "{} calls", calls.get());
    assert!(counted_bytes.get() <= 2 * doc.text.len(), "{} bytes counted", counted_bytes.get());
}
