//! Every format extracts its title, sections (heading paths, pages) and text.

mod common;

use std::path::Path;

use hearth_docs::{extract_bytes, extract_file, ContentType, Document, ExtractOptions};

fn extract_one(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> Document {
    let path = common::write(dir, name, bytes);
    let mut docs = extract_file(&path, &ExtractOptions::default()).unwrap();
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

/// Each section's heading path and page with its text.
fn sections(doc: &Document) -> Vec<(Vec<&str>, Option<u32>, &str)> {
    doc.sections.iter().map(|s| (s.path.iter().map(String::as_str).collect(), s.page, &doc.text[s.span.clone()])).collect()
}

/// Sections are in order, do not overlap, and cover every block of the text.
fn assert_sections_cover_text(doc: &Document) {
    let mut covered = String::new();
    let mut end = 0;
    for section in &doc.sections {
        assert!(section.span.start >= end, "sections overlap: {:?}", doc.sections);
        assert_eq!(doc.text[end..section.span.start].trim(), "", "text outside every section");
        covered.push_str(&doc.text[section.span.clone()]);
        end = section.span.end;
    }
    assert_eq!(doc.text[end..].trim(), "");
}

#[test]
fn content_types_come_from_extensions_and_names() {
    for (name, expected) in [
        ("a.TXT", ContentType::Text),
        ("b.md", ContentType::Markdown),
        ("c.htm", ContentType::Html),
        ("d.pdf", ContentType::Pdf),
        ("e.docx", ContentType::Docx),
        ("f.jsonl", ContentType::Json),
    ] {
        assert_eq!(ContentType::from_path(Path::new(name)), Some(expected), "{name}");
    }
    assert_eq!(ContentType::from_path(Path::new("g.xyz")), None);
    assert_eq!(ContentType::from_path(Path::new("Makefile")), None);
    assert_eq!("md".parse::<ContentType>().unwrap(), ContentType::Markdown);
    assert_eq!("jsonl".parse::<ContentType>().unwrap(), ContentType::Json);
    assert_eq!("HTML".parse::<ContentType>().unwrap().as_str(), "html");
    assert!("xml".parse::<ContentType>().unwrap_err().to_string().contains("\"xml\""));
    assert_eq!(serde_json::to_string(&ContentType::Docx).unwrap(), "\"docx\"");
    assert_eq!(serde_json::from_str::<ContentType>("\"markdown\"").unwrap(), ContentType::Markdown);
}

#[test]
fn text_is_paragraphs_in_one_section() {
    let dir = tempfile::tempdir().unwrap();
    let doc = extract_one(dir.path(), "notes.txt", "\u{feff}First line\r\nsame paragraph.  \r\n\r\n  \n\nSecond paragraph.\n");
    assert_eq!(doc.text, "First line\nsame paragraph.\n\nSecond paragraph.");
    assert_eq!(doc.title, None);
    assert_eq!(doc.key, None);
    assert_eq!(doc.content_type, ContentType::Text);
    assert_eq!(sections(&doc), vec![(vec![], None, doc.text.as_str())]);
}

#[test]
fn markdown_headings_nest_into_section_paths() {
    let dir = tempfile::tempdir().unwrap();
    let markdown = "\
Intro before any heading.

# Install

Get the **binary** from [the releases page](https://example.com/releases).

## Linux

- Download it
- Run `chmod +x hearth`

![diagram of the setup](https://example.com/setup.png)

## macOS

> Quoted *advice*.

```sh
brew install hearth
```

# Use

| Command | Does |
|---------|------|
| run     | runs |
";
    let doc = extract_one(dir.path(), "guide.md", markdown);
    assert_eq!(doc.title.as_deref(), Some("Install"));
    assert_sections_cover_text(&doc);
    assert_eq!(
        sections(&doc),
        vec![
            (vec![], None, "Intro before any heading."),
            (vec!["Install"], None, "Install\n\nGet the binary from the releases page."),
            (vec!["Install", "Linux"], None, "Linux\n\nDownload it\n\nRun chmod +x hearth\n\ndiagram of the setup"),
            (vec!["Install", "macOS"], None, "macOS\n\nQuoted advice.\n\nbrew install hearth"),
            (vec!["Use"], None, "Use\n\nCommand | Does\n\nrun | runs"),
        ]
    );
    assert!(!doc.text.contains("https://"), "URLs are markup: {}", doc.text);
}

#[test]
fn markdown_front_matter_title_wins() {
    let doc = &extract_bytes(
        b"---\ntitle: \"The Guide\"\nauthor: me\n---\n\n# Heading\n\nBody.\n",
        ContentType::Markdown,
        &ExtractOptions::default(),
    )
    .unwrap()[0];
    assert_eq!(doc.title.as_deref(), Some("The Guide"));
    assert_eq!(doc.text, "Heading\n\nBody.");
}

#[test]
fn html_keeps_main_content_without_boilerplate() {
    let dir = tempfile::tempdir().unwrap();
    let html = r#"<!doctype html>
<html><head><title> Hearth &amp; Home </title><style>p { color: red }</style><script>var leaked = 1;</script></head>
<body>
  <nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
  <header><h1>Site banner</h1></header>
  <p>Outside main.</p>
  <main>
    <h1>Getting   started</h1>
    <p>Hearth runs
       models <em>locally</em>&nbsp;&mdash; no cloud.</p>
    <h2>Install</h2>
    <ul><li>Download</li><li>Run</li></ul>
    <pre>line one
  indented line</pre>
    <table><tr><th>Flag</th><th>Meaning</th></tr><tr><td>-v</td><td>verbose</td></tr></table>
    <script>alert("no")</script>
    <form><input name="q"><button>Search</button></form>
    <h2>Configure</h2>
    <div>Plain div text<br>after a break</div>
    <aside>Related links</aside>
  </main>
  <footer>Copyright</footer>
</body></html>"#;
    let doc = extract_one(dir.path(), "page.html", html);
    assert_eq!(doc.title.as_deref(), Some("Hearth & Home"));
    assert_sections_cover_text(&doc);
    assert_eq!(
        sections(&doc),
        vec![
            (vec!["Getting started"], None, "Getting started\n\nHearth runs models locally — no cloud."),
            (
                vec!["Getting started", "Install"],
                None,
                "Install\n\nDownload\n\nRun\n\nline one\n  indented line\n\nFlag | Meaning\n\n-v | verbose"
            ),
            (vec!["Getting started", "Configure"], None, "Configure\n\nPlain div text\nafter a break"),
        ]
    );
    for boilerplate in ["Home", "banner", "Outside", "alert", "leaked", "color", "Search", "Related", "Copyright"] {
        assert!(!doc.text.contains(boilerplate), "{boilerplate:?} kept: {}", doc.text);
    }
}

#[test]
fn html_without_main_uses_the_body_and_the_first_h1_as_title() {
    let html = b"\xEF\xBB\xBF<body><nav>Menu</nav><h1>Notes</h1><p>One.</p><h3>Deep</h3><p>Two.</p></body>";
    let doc = &extract_bytes(html, ContentType::Html, &ExtractOptions::default()).unwrap()[0];
    assert_eq!(doc.title.as_deref(), Some("Notes"));
    assert_eq!(sections(doc), vec![(vec!["Notes"], None, "Notes\n\nOne."), (vec!["Notes", "Deep"], None, "Deep\n\nTwo.")]);
}

#[test]
fn deeply_nested_html_parses_quickly_and_keeps_its_text() {
    // Unlimited, html5ever takes about half a minute on this (quadratic in the depth).
    let depth = 100_000;
    let html = format!("{}<h2>Bottom</h2><p>deep text</p>{}<p>after</p>", "<div>".repeat(depth), "</div>".repeat(depth));
    let started = std::time::Instant::now();
    let doc = &extract_bytes(html.as_bytes(), ContentType::Html, &ExtractOptions::default()).unwrap()[0];
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    // The heading is past the depth limit: its text stays, as a plain block.
    assert_eq!(doc.text, "Bottom\n\ndeep text\n\nafter");

    // In HTML, <div/> opens a div like <div> does.
    let self_closing = format!("{}text", "<div/>".repeat(depth));
    let started = std::time::Instant::now();
    let doc = &extract_bytes(self_closing.as_bytes(), ContentType::Html, &ExtractOptions::default()).unwrap()[0];
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(doc.text, "text");

    // In SVG, <path/> closes itself: a page of icons is not deep.
    let icons = format!("{}<h2>Kept</h2><p>text</p>", "<span><svg><path d='M0'/></svg></span>".repeat(2000));
    let doc = &extract_bytes(icons.as_bytes(), ContentType::Html, &ExtractOptions::default()).unwrap()[0];
    assert_eq!(sections(doc), vec![(vec!["Kept"], None, "Kept\n\ntext")]);
}

#[test]
fn pdf_pages_are_sections() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = common::pdf(Some("Quarterly Report"), &[&["Revenue grew this quarter.", "Costs fell."], &["Outlook is stable."]]);
    let doc = extract_one(dir.path(), "report.pdf", pdf);
    assert_eq!(doc.title.as_deref(), Some("Quarterly Report"));
    assert_eq!(doc.content_type, ContentType::Pdf);
    assert_sections_cover_text(&doc);
    let pages: Vec<_> = doc.sections.iter().map(|s| (s.path.is_empty(), s.page)).collect();
    assert_eq!(pages, vec![(true, Some(1)), (true, Some(2))]);
    let page = |n: usize| doc.text[doc.sections[n].span.clone()].split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(page(0), "Revenue grew this quarter. Costs fell.");
    assert_eq!(page(1), "Outlook is stable.");
}

#[test]
fn docx_heading_styles_build_section_paths() {
    let dir = tempfile::tempdir().unwrap();
    let docx = common::docx(
        None,
        &[
            (Some("Title"), "Field Manual"),
            (None, "Read this first &amp; keep it."),
            (Some("Heading1"), "Setup"),
            (None, "Unpack the kit."),
            (Some("Heading2"), "Power"),
            (None, "Plug it in."),
            (Some("Heading1"), "Care"),
            (None, "Keep it dry."),
        ],
    );
    let doc = extract_one(dir.path(), "manual.docx", docx);
    assert_eq!(doc.title.as_deref(), Some("Field Manual"));
    assert_sections_cover_text(&doc);
    assert_eq!(
        sections(&doc),
        vec![
            (vec!["Field Manual"], None, "Field Manual\n\nRead this first & keep it."),
            (vec!["Field Manual", "Setup"], None, "Setup\n\nUnpack the kit."),
            (vec!["Field Manual", "Setup", "Power"], None, "Power\n\nPlug it in."),
            (vec!["Field Manual", "Care"], None, "Care\n\nKeep it dry."),
        ]
    );
}

#[test]
fn docx_runs_tabs_breaks_styles_and_core_title() {
    let document = r#"<?xml version="1.0" encoding="UTF-8"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">
<w:body>
  <w:p><w:pPr><w:pStyle w:val="berschrift1"/><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr><w:r><w:t>Einleitung</w:t></w:r></w:p>
  <w:p><w:r><w:t>Name</w:t></w:r><w:r><w:tab/><w:t>Wert</w:t><w:br/><w:t xml:space="preserve">zweite </w:t></w:r><w:r><w:t>Zeile</w:t></w:r>
    <w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:t>!</w:t></mc:Choice><mc:Fallback><w:t>DUPLICATE</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>
  <w:p><w:r><w:delText>deleted</w:delText><w:instrText>PAGE</w:instrText></w:r></w:p>
</w:body></w:document>"#;
    let styles = r#"<w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">
<w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/></w:style></w:styles>"#;
    let core = r#"<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Handbuch</dc:title></cp:coreProperties>"#;
    let docx = common::zip(&[
        ("word/document.xml", document.as_bytes()),
        ("word/styles.xml", styles.as_bytes()),
        ("docProps/core.xml", core.as_bytes()),
    ]);
    let doc = &extract_bytes(&docx, ContentType::Docx, &ExtractOptions::default()).unwrap()[0];
    assert_eq!(doc.title.as_deref(), Some("Handbuch"));
    assert_eq!(sections(doc), vec![(vec!["Einleitung"], None, "Einleitung\n\nName\tWert\nzweite Zeile!")]);
}

#[test]
fn json_object_array_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ExtractOptions::default();

    let object =
        extract_file(&common::write(dir.path(), "one.json", r#"{"title": "Solo", "text": "Alone.\n\nTwo paragraphs."}"#), &opts).unwrap();
    assert_eq!(object.len(), 1);
    assert_eq!(
        (object[0].key.as_deref(), object[0].title.as_deref(), object[0].text.as_str()),
        (None, Some("Solo"), "Alone.\n\nTwo paragraphs.")
    );

    let array = extract_file(
        &common::write(dir.path(), "many.json", r#"[{"id": 7, "text": "Seven"}, {"text": "Unnamed", "title": "Second"}]"#),
        &opts,
    )
    .unwrap();
    let summary: Vec<_> = array.iter().map(|d| (d.key.as_deref(), d.title.as_deref(), d.text.as_str())).collect();
    assert_eq!(summary, vec![(Some("7"), None, "Seven"), (Some("item:2"), Some("Second"), "Unnamed")]);

    let lines = "{\"id\": \"a\", \"text\": \"First\"}\n\n{\"text\": \"Third line\"}\n";
    let jsonl = extract_file(&common::write(dir.path(), "records.jsonl", lines), &opts).unwrap();
    let summary: Vec<_> = jsonl.iter().map(|d| (d.key.as_deref(), d.text.as_str(), d.content_type)).collect();
    assert_eq!(summary, vec![(Some("a"), "First", ContentType::Json), (Some("line:3"), "Third line", ContentType::Json)]);

    let custom = ExtractOptions {
        json_text_field: "body".into(),
        json_title_field: "name".into(),
        json_id_field: "slug".into(),
        ..ExtractOptions::default()
    };
    let doc = &extract_bytes(br#"[{"slug": "s1", "name": "N", "body": "B"}]"#, ContentType::Json, &custom).unwrap()[0];
    assert_eq!((doc.key.as_deref(), doc.title.as_deref(), doc.text.as_str()), (Some("s1"), Some("N"), "B"));
}
