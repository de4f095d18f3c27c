use std::collections::HashMap;
use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::{NsReader, XmlVersion};
use zip::result::ZipError;
use zip::ZipArchive;

use crate::document::DocumentBuilder;
use crate::{ContentType, DocError, Document, Result};

const WORDPROCESSING: &str = "http://schemas.openxmlformats.org/wordprocessingml/2006/main";
const MARKUP_COMPATIBILITY: &str = "http://schemas.openxmlformats.org/markup-compatibility/2006";
const DUBLIN_CORE: &str = "http://purl.org/dc/elements/1.1/";

/// Paragraphs of `word/document.xml` become blocks; those styled as headings (or as the title,
/// above level 1) build the section path. The title is `dc:title` from `docProps/core.xml`,
/// else the first Title-styled paragraph. At most `max_unpacked` bytes are inflated in all.
pub(crate) fn extract(bytes: &[u8], max_unpacked: u64) -> Result<Document> {
    let archive = ZipArchive::new(Cursor::new(bytes)).map_err(|error| failed(format!("not a zip archive ({error})")))?;
    let mut unpacker = Unpacker { archive, left: max_unpacked, limit: max_unpacked };
    let body = unpacker.read("word/document.xml")?.ok_or_else(|| failed("word/document.xml is missing: not a Word document".into()))?;
    let heading_styles = match unpacker.read("word/styles.xml")? {
        Some(styles) => heading_styles(&styles)?,
        None => HashMap::new(),
    };
    let core_title = match unpacker.read("docProps/core.xml")? {
        Some(core) => core_title(&core)?,
        None => None,
    };
    parse_body(&body, &heading_styles, core_title)
}

fn failed(message: String) -> DocError {
    DocError::Parse { format: "DOCX", message }
}

/// Reads archive members against one budget for all of them.
struct Unpacker<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    left: u64,
    limit: u64,
}

impl Unpacker<'_> {
    fn read(&mut self, name: &str) -> Result<Option<String>> {
        let member = match self.archive.by_name(name) {
            Ok(member) => member,
            Err(ZipError::FileNotFound) => return Ok(None),
            Err(error) => return Err(failed(format!("{name}: {error}"))),
        };
        if member.size() > self.left {
            return Err(DocError::UnpacksTooLarge { limit: self.limit });
        }
        // The declared size can lie (the zip crate checks it too, but the budget must not
        // depend on that): never inflate more than one byte past the budget.
        let mut bytes = Vec::new();
        member.take(self.left + 1).read_to_end(&mut bytes).map_err(|error| failed(format!("{name}: {error}")))?;
        self.left = self.left.checked_sub(bytes.len() as u64).ok_or(DocError::UnpacksTooLarge { limit: self.limit })?;
        String::from_utf8(bytes).map(Some).map_err(|error| failed(format!("{name}: not UTF-8 (byte {})", error.utf8_error().valid_up_to())))
    }
}

fn parse_body(xml: &str, heading_styles: &HashMap<String, u8>, core_title: Option<String>) -> Result<Document> {
    let mut doc = DocumentBuilder::default();
    let mut paragraph = String::new();
    let mut style = None;
    let mut in_text = false;
    // Inside paragraph properties, <w:tab> is a tab stop, not a tab.
    let mut in_properties = false;
    let mut title_paragraph = None;
    visit_xml(xml, "word/document.xml", |event| match event {
        XmlEvent::Open { namespace: WORDPROCESSING, local, tag } => match local {
            "t" => in_text = true,
            "pPr" => in_properties = true,
            "pStyle" => style = attribute(tag, "val"),
            "tab" if !in_properties => paragraph.push('\t'),
            "br" | "cr" => paragraph.push('\n'),
            _ => {}
        },
        XmlEvent::Close { namespace: WORDPROCESSING, local } => match local {
            "t" => in_text = false,
            "pPr" => in_properties = false,
            "p" => {
                let text = std::mem::take(&mut paragraph);
                let level = style.take().and_then(|id: String| heading_styles.get(&id).copied().or_else(|| heading_level(&id)));
                match level {
                    Some(level) => {
                        if level == 0 && title_paragraph.is_none() {
                            title_paragraph = Some(text.clone());
                        }
                        doc.heading(level, &text);
                    }
                    None => doc.push_block(&text),
                }
            }
            _ => {}
        },
        XmlEvent::Text(text) if in_text => paragraph.push_str(text),
        _ => {}
    })?;
    let title = core_title.filter(|title| !title.trim().is_empty()).or(title_paragraph);
    Ok(doc.finish(ContentType::Docx, title.as_deref(), None))
}

/// What a paragraph style makes a paragraph: a heading of level 1–9, or 0 for the title.
fn heading_level(style_name: &str) -> Option<u8> {
    let name = style_name.replace(' ', "").to_ascii_lowercase();
    if name == "title" {
        return Some(0);
    }
    name.strip_prefix("heading")?.parse().ok().filter(|level| (1..=9).contains(level))
}

/// Heading levels by style id, read from the styles' names: Word names them "heading 1" in
/// every language but gives them localised ids ("berschrift1").
fn heading_styles(styles_xml: &str) -> Result<HashMap<String, u8>> {
    let mut levels = HashMap::new();
    let mut style_id = None;
    visit_xml(styles_xml, "word/styles.xml", |event| match event {
        XmlEvent::Open { namespace: WORDPROCESSING, local: "style", tag } => style_id = attribute(tag, "styleId"),
        XmlEvent::Open { namespace: WORDPROCESSING, local: "name", tag } => {
            if let (Some(id), Some(level)) = (&style_id, attribute(tag, "val").as_deref().and_then(heading_level)) {
                levels.insert(id.clone(), level);
            }
        }
        _ => {}
    })?;
    Ok(levels)
}

fn core_title(core_xml: &str) -> Result<Option<String>> {
    let mut title: Option<String> = None;
    let mut in_title = false;
    visit_xml(core_xml, "docProps/core.xml", |event| match event {
        XmlEvent::Open { namespace: DUBLIN_CORE, local: "title", .. } => in_title = true,
        XmlEvent::Close { namespace: DUBLIN_CORE, local: "title" } => in_title = false,
        XmlEvent::Text(text) if in_title => title.get_or_insert_with(String::new).push_str(text),
        _ => {}
    })?;
    Ok(title)
}

enum XmlEvent<'e> {
    /// A start tag or an empty element (which is followed by its `Close`).
    Open {
        namespace: &'e str,
        local: &'e str,
        tag: &'e BytesStart<'e>,
    },
    Close {
        namespace: &'e str,
        local: &'e str,
    },
    /// Text with entities and character references resolved, possibly in several pieces.
    Text(&'e str),
}

/// Feeds `visit` the elements and text of an XML part, namespaces resolved, leaving out
/// `mc:Fallback` (a second copy of content for older readers).
fn visit_xml(xml: &str, part: &str, mut visit: impl FnMut(XmlEvent<'_>)) -> Result<()> {
    let mut reader = NsReader::from_str(xml);
    let mut fallback_depth = 0usize;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(|error| failed(format!("{part}: {error}")))?;
        let namespace = match resolved {
            ResolveResult::Bound(Namespace(namespace)) => namespace,
            _ => "",
        };
        match &event {
            Event::Start(tag) | Event::Empty(tag) => {
                let is_fallback = namespace == MARKUP_COMPATIBILITY && tag.local_name().as_ref() == "Fallback";
                if fallback_depth > 0 || is_fallback {
                    fallback_depth += usize::from(matches!(event, Event::Start(_)));
                    continue;
                }
                let local = tag.local_name();
                visit(XmlEvent::Open { namespace, local: local.as_ref(), tag });
                if matches!(event, Event::Empty(_)) {
                    visit(XmlEvent::Close { namespace, local: local.as_ref() });
                }
            }
            Event::End(_) if fallback_depth > 0 => fallback_depth -= 1,
            Event::End(tag) => visit(XmlEvent::Close { namespace, local: tag.local_name().as_ref() }),
            _ if fallback_depth > 0 => {}
            Event::Text(text) => visit(XmlEvent::Text(&text.xml10_content())),
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => Some(c.to_string()),
                    _ => quick_xml::escape::resolve_predefined_entity(reference).map(str::to_string),
                };
                visit(XmlEvent::Text(resolved.as_deref().unwrap_or_default()));
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

fn attribute(tag: &BytesStart, local_name: &str) -> Option<String> {
    tag.attributes()
        .flatten()
        .find(|attribute| attribute.key.local_name().as_ref() == local_name)
        .and_then(|attribute| attribute.normalized_value(XmlVersion::Implicit1_0).ok().map(|value| value.into_owned()))
}
