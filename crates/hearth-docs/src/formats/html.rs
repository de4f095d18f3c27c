use std::cell::Cell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer};
use html5ever::tree_builder::TreeBuilder;
use html5ever::{LocalName, TokenizerResult};
use markup5ever_rcdom::{Handle, NodeData, RcDom};

use crate::document::{collapse_whitespace, DocumentBuilder};
use crate::{ContentType, Document};

/// Elements that are never content.
const SCRIPTING: &[&str] = &["script", "style", "noscript", "template", "svg", "iframe", "form"];
/// Page furniture: navigation, banners, sidebars.
const FURNITURE: &[&str] = &["nav", "header", "footer", "aside"];
/// Elements that end where a sibling starts, or have no content: they do not nest.
const NOT_NESTING: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr", "html", "head", "body", "p",
    "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead", "tbody", "tfoot", "colgroup", "caption", "rb", "rt", "rp", "rtc",
];
/// How deep elements may nest; deeper start tags (and as many end tags) are dropped, their
/// text kept. html5ever scans the stack of open elements for most tags, so without a limit a
/// page of 100 000 nested `<div>`s takes minutes. Browsers cap nesting too (Chromium at 512).
const MAX_DEPTH: usize = 512;
/// Elements whose start and end separate blocks of text.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "blockquote",
    "body",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "ol",
    "p",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "tr",
    "ul",
];

/// Keeps the page's content: the first `<main>` or `<article>` if there is one, else the body,
/// without scripts, navigation, headers, footers, sidebars and forms. Headings build the
/// section path; block elements become blocks with whitespace collapsed (except in `<pre>`).
/// The title is `<title>`, else the first `<h1>`. Bytes that are not UTF-8 become U+FFFD.
pub(crate) fn extract(bytes: &[u8]) -> Document {
    let dom = parse(&String::from_utf8_lossy(bytes));
    let title = find_element(&dom.document, &["title"], SCRIPTING).map(|title| collapse_whitespace(&text_of(&title)));
    let (root, dropped) = match find_element(&dom.document, &["main", "article"], &[SCRIPTING, FURNITURE].concat()) {
        // Inside an article, <header> holds the article's own heading, not the site's banner.
        Some(content) => (content, [SCRIPTING, &["nav", "footer", "aside"]].concat()),
        None => (find_element(&dom.document, &["body"], &[]).unwrap_or(dom.document.clone()), [SCRIPTING, FURNITURE].concat()),
    };
    let mut walker = BlockWalker::default();
    walker.walk(root, &dropped);
    walker.end_block();
    let title = title.filter(|title| !title.is_empty()).or(walker.first_h1);
    walker.doc.finish(ContentType::Html, title.as_deref(), None)
}

fn parse(html: &str) -> RcDom {
    let tree_builder = TreeBuilder::new(RcDom::default(), Default::default());
    let tokenizer = Tokenizer::new(DepthLimit { tree_builder, depth: Cell::new(0), dropped: Cell::new(0) }, Default::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from(html));
    // Feeding pauses after each </script> (for browsers to run it); resume until done.
    while !matches!(tokenizer.feed(&input), TokenizerResult::Done) {}
    tokenizer.end();
    tokenizer.sink.tree_builder.sink
}

/// Passes tokens to the tree builder, leaving out start tags nested deeper than [`MAX_DEPTH`]
/// and, to keep the count, as many of the end tags that follow. Depth is counted from tags
/// alone, so it is an estimate: unclosed elements keep it high.
struct DepthLimit {
    tree_builder: TreeBuilder<Handle, RcDom>,
    depth: Cell<usize>,
    dropped: Cell<usize>,
}

impl TokenSink for DepthLimit {
    type Handle = Handle;

    fn process_token(&self, token: Token, line_number: u64) -> TokenSinkResult<Handle> {
        if let Token::TagToken(tag) = &token {
            if self.nests(tag) {
                let (depth, dropped) = (self.depth.get(), self.dropped.get());
                match tag.kind {
                    TagKind::StartTag if depth >= MAX_DEPTH => {
                        self.dropped.set(dropped + 1);
                        return TokenSinkResult::Continue;
                    }
                    TagKind::StartTag => self.depth.set(depth + 1),
                    TagKind::EndTag if dropped > 0 => {
                        self.dropped.set(dropped - 1);
                        return TokenSinkResult::Continue;
                    }
                    TagKind::EndTag => self.depth.set(depth.saturating_sub(1)),
                }
            }
        }
        self.tree_builder.process_token(token, line_number)
    }

    fn end(&self) {
        self.tree_builder.end();
    }

    fn adjusted_current_node_present_but_not_in_html_namespace(&self) -> bool {
        self.tree_builder.adjusted_current_node_present_but_not_in_html_namespace()
    }
}

impl DepthLimit {
    /// Whether a tag opens (or closes) an element that holds what follows until its end tag.
    /// `<x/>` closes itself only in SVG and MathML: in HTML, `<div/>` is `<div>`.
    fn nests(&self, tag: &Tag) -> bool {
        let closes_itself = tag.self_closing && self.tree_builder.adjusted_current_node_present_but_not_in_html_namespace();
        !closes_itself && !NOT_NESTING.contains(&&*tag.name)
    }
}

#[derive(Default)]
struct BlockWalker {
    doc: DocumentBuilder,
    /// The block being gathered.
    block: String,
    /// How many `<pre>` elements the walk is in: whitespace there is kept.
    in_pre: usize,
    first_h1: Option<String>,
}

enum Step {
    Enter(Handle),
    Leave(LocalName),
}

impl BlockWalker {
    /// Walks the tree with an explicit stack, so that no page nests deep enough to overflow the
    /// call stack.
    fn walk(&mut self, root: Handle, dropped: &[&str]) {
        let mut steps = vec![Step::Enter(root)];
        while let Some(step) = steps.pop() {
            match step {
                Step::Enter(node) => {
                    match &node.data {
                        NodeData::Text { contents } => self.text(&contents.borrow()),
                        NodeData::Element { name, .. } if !dropped.contains(&&*name.local) => {
                            self.open(&name.local);
                            steps.push(Step::Leave(name.local.clone()));
                        }
                        NodeData::Document => {}
                        _ => continue,
                    }
                    steps.extend(node.children.borrow().iter().rev().map(|child| Step::Enter(child.clone())));
                }
                Step::Leave(name) => self.close(&name),
            }
        }
    }

    fn open(&mut self, name: &str) {
        match name {
            "br" => {
                self.block.truncate(self.block.trim_end_matches(' ').len());
                self.block.push('\n');
            }
            "td" | "th" => {
                self.block.truncate(self.block.trim_end().len());
                if !self.block.is_empty() {
                    self.block.push_str(" | ");
                }
            }
            "pre" => {
                self.end_block();
                self.in_pre += 1;
            }
            _ if heading_level(name).is_some() || BLOCKS.contains(&name) => self.end_block(),
            _ => {}
        }
    }

    fn close(&mut self, name: &str) {
        if let Some(level) = heading_level(name) {
            let heading = std::mem::take(&mut self.block);
            if level == 1 && self.first_h1.is_none() {
                self.first_h1 = Some(collapse_whitespace(&heading));
            }
            self.doc.heading(level, &heading);
        } else if name == "pre" {
            self.end_block();
            self.in_pre -= 1;
        } else if BLOCKS.contains(&name) {
            self.end_block();
        }
    }

    fn text(&mut self, text: &str) {
        if self.in_pre > 0 {
            self.block.push_str(text);
            return;
        }
        for c in text.chars() {
            if !c.is_whitespace() {
                self.block.push(c);
            } else if !self.block.is_empty() && !self.block.ends_with(char::is_whitespace) {
                self.block.push(' ');
            }
        }
    }

    fn end_block(&mut self) {
        self.doc.push_block(&self.block);
        self.block.clear();
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name.strip_prefix('h')?.as_bytes() {
        [digit @ b'1'..=b'6'] => Some(digit - b'0'),
        _ => None,
    }
}

/// The first element named one of `names` in document order, not looking inside `skipped`.
fn find_element(root: &Handle, names: &[&str], skipped: &[&str]) -> Option<Handle> {
    let mut pending = vec![root.clone()];
    while let Some(node) = pending.pop() {
        if let NodeData::Element { name, .. } = &node.data {
            if names.contains(&&*name.local) {
                return Some(node);
            }
            if skipped.contains(&&*name.local) {
                continue;
            }
        }
        pending.extend(node.children.borrow().iter().rev().cloned());
    }
    None
}

/// The text directly inside an element (enough for `<title>`, which holds only text).
fn text_of(node: &Handle) -> String {
    node.children
        .borrow()
        .iter()
        .filter_map(|child| match &child.data {
            NodeData::Text { contents } => Some(contents.borrow().to_string()),
            _ => None,
        })
        .collect()
}
