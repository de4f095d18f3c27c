use serde_json::{Map, Value};

use crate::document::DocumentBuilder;
use crate::{ContentType, DocError, Document, ExtractOptions, Result};

/// A JSON object is one document, an array of objects one per item, JSON Lines one per line.
/// Each record's text is its `json_text_field`; a record without it is an error naming it.
pub(crate) fn extract(json: &str, opts: &ExtractOptions) -> Result<Vec<Document>> {
    let whole = serde_json::from_str::<Value>(json);
    let first_line = json.lines().find(|line| !line.trim().is_empty());
    // JSON Lines: not one value as a whole, yet the first line is one.
    if whole.is_err() && first_line.is_some_and(|line| serde_json::from_str::<Value>(line).is_ok()) {
        return json_lines(json, opts);
    }
    match whole.map_err(|error| DocError::Parse { format: "JSON", message: error.to_string() })? {
        Value::Object(record) => {
            let document =
                document(&record, None, opts).map_err(|message| DocError::Record { record: "the JSON object".into(), message })?;
            Ok(vec![document])
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let name = format!("item {}", i + 1);
                let record =
                    item.as_object().ok_or_else(|| DocError::Record { record: name.clone(), message: "not a JSON object".into() })?;
                document(record, Some(format!("item:{}", i + 1)), opts).map_err(|message| DocError::Record { record: name, message })
            })
            .collect(),
        _ => Err(DocError::Parse { format: "JSON", message: "expected an object, an array of objects or JSON Lines".into() }),
    }
}

fn json_lines(json: &str, opts: &ExtractOptions) -> Result<Vec<Document>> {
    json.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let failed = |message: String| DocError::Record { record: format!("line {}", i + 1), message };
            let record = match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(record)) => record,
                Ok(_) => return Err(failed("not a JSON object".into())),
                Err(error) => return Err(failed(format!("invalid JSON: {error}"))),
            };
            document(&record, Some(format!("line:{}", i + 1)), opts).map_err(failed)
        })
        .collect()
}

/// One record's document; its key is its id, else `position` (none for a lone object).
fn document(record: &Map<String, Value>, position: Option<String>, opts: &ExtractOptions) -> Result<Document, String> {
    let text =
        record.get(&opts.json_text_field).and_then(Value::as_str).ok_or_else(|| format!("no string field {:?}", opts.json_text_field))?;
    let title = record.get(&opts.json_title_field).and_then(Value::as_str);
    let id = match record.get(&opts.json_id_field) {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Number(id)) => Some(id.to_string()),
        _ => None,
    };
    Ok(DocumentBuilder::from_paragraphs(text).finish(ContentType::Json, title, id.or(position)))
}
