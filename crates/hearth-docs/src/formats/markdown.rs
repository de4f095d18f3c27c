use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::document::DocumentBuilder;
use crate::{ContentType, Document};

/// Headings build the section path; paragraphs, list items, quotes, code blocks and table rows
/// become blocks with the markup dropped (link text and image alt text stay, URLs go). The
/// title is front matter's `title:`, else the first `#` heading.
pub(crate) fn extract(markdown: &str) -> Document {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_DEFINITION_LIST
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    let mut doc = DocumentBuilder::default();
    let mut block = String::new();
    let mut in_front_matter = false;
    let mut front_matter_title = None;
    let mut first_h1 = None;
    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Start(Tag::MetadataBlock(_)) => in_front_matter = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_front_matter = false,
            Event::Text(yaml) if in_front_matter => front_matter_title = front_matter_title.or_else(|| title_field(&yaml)),
            Event::Start(Tag::TableCell) if !block.trim().is_empty() => block.push_str(" | "),
            Event::End(TagEnd::Heading(level)) => {
                let heading = std::mem::take(&mut block);
                if level == HeadingLevel::H1 && first_h1.is_none() {
                    first_h1 = Some(heading.clone());
                }
                doc.heading(level as u8, &heading);
            }
            Event::Start(tag) if is_block(&tag.to_end()) => doc.push_block(&std::mem::take(&mut block)),
            Event::End(tag) if is_block(&tag) => doc.push_block(&std::mem::take(&mut block)),
            Event::Text(text) | Event::Code(text) => block.push_str(&text),
            Event::SoftBreak => block.push(' '),
            Event::HardBreak => block.push('\n'),
            // Raw HTML, footnote references, task list markers, rules, inline formatting.
            _ => {}
        }
    }
    doc.push_block(&block);
    doc.finish(ContentType::Markdown, front_matter_title.or(first_h1).as_deref(), None)
}

/// Whether the text before and after this tag belongs to different blocks (a heading's start
/// counts: the text before it is a block of its own).
fn is_block(tag: &TagEnd) -> bool {
    !matches!(
        tag,
        TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Strikethrough
            | TagEnd::Superscript
            | TagEnd::Subscript
            | TagEnd::Link
            | TagEnd::Image
            | TagEnd::TableCell
            | TagEnd::MetadataBlock(_)
    )
}

/// The `title:` of YAML front matter; a full YAML parser would be a large dependency for one
/// top-level string.
fn title_field(yaml: &str) -> Option<String> {
    let value = yaml.lines().find_map(|line| line.strip_prefix("title:"))?.trim();
    let unquoted =
        value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')));
    Some(unquoted.unwrap_or(value).to_string()).filter(|title| !title.is_empty())
}
