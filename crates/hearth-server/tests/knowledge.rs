//! The knowledge service's routes on the real MiniLM and SmolLM2 (scripts/fetch-test-models.sh):
//! content posted as JSON and as a multipart upload, search in every mode with its errors,
//! answers with citations from `/search/ask` (whole and streamed) and from
//! `/v1/chat/completions` with `knowledge_base`.

mod common;

use common::{sse_data, TestServer};
use serde_json::{json, Value};

fn smollm2() -> String {
    let path = hearth_store::installed_model("smollm2").expect("SmolLM2 is installed (scripts/fetch-test-models.sh)");
    format!("smol={}", path.display())
}

async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Characters of `text` in the range `r` (`{"start", "end"}` in characters).
fn chars_in(text: &str, r: &Value) -> String {
    let (start, end) = (r["start"].as_u64().unwrap() as usize, r["end"].as_u64().unwrap() as usize);
    text.chars().skip(start).take(end - start).collect()
}

/// Bytes of `text` in the range `r` (`{"start", "end"}` in bytes).
fn bytes_in<'t>(text: &'t str, r: &Value) -> &'t str {
    &text[r["start"].as_u64().unwrap() as usize..r["end"].as_u64().unwrap() as usize]
}

const FACTS: &[(&str, &str, &str)] = &[
    // The first paragraph puts multibyte characters before the keeper's chunk, so its
    // character and byte spans differ.
    ("keeper", "Lighthouses", "# Lighthouses\n\nLighthouses — « phares » — guide ships at night.\n\n## Keepers\n\nThe keeper of the Skerry lighthouse was named Agnes Morrow.\n"),
    ("tea", "Tea", "Green tea is made from unoxidised leaves. Black tea leaves are fully oxidised."),
    ("bridge", "Bridges", "The Harbour Bridge was finished in 1932 after eight years of work."),
];

#[tokio::test]
async fn content_search_and_answers_with_citations() {
    let cross_encoder = common::repo_root().join("crates/hearth-embed/tests/data/tiny-cross-encoder");
    let s = TestServer::start(|o| {
        o.model = vec![smollm2(), format!("xenc={}", cross_encoder.display())];
        o.kb_rerank_model = Some("xenc".into());
    });
    let c = reqwest::Client::new();
    for (id, title, text) in FACTS {
        let (status, res) = call(
            c.post(s.url("/api/v1/content"))
                .json(&json!({"id": id, "title": title, "text": text, "content_type": "markdown", "tags": ["facts"]})),
        )
        .await;
        assert_eq!((status, res["content_id"].as_str()), (201, Some(*id)), "{res}");
    }
    // Posting the same content again changes nothing.
    let (status, res) = call(
        c.post(s.url("/api/v1/content"))
            .json(&json!({"id": "tea", "title": "Tea", "text": FACTS[1].2, "content_type": "markdown", "tags": ["facts"]})),
    )
    .await;
    assert_eq!((status, res["unchanged"].as_bool()), (200, Some(true)), "{res}");
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"Volcanic lava cools into basalt rock.".to_vec()).file_name("lava.txt"))
        .text("tags", "uploads, geology");
    // Before any content, read routes find no collection and create none.
    let (status, err) = call(c.get(s.url("/api/v1/stats?collection=empty"))).await;
    assert_eq!((status, err["error"]["param"].as_str()), (404, Some("collection")), "{err}");
    let (status, res) = call(c.post(s.url("/api/v1/content")).multipart(form)).await;
    assert_eq!(status, 201, "{res}");
    let lava = res["content_id"].as_str().unwrap().to_string();
    // Another file of the same name is another document.
    let other = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"Pumice floats on water.".to_vec()).file_name("lava.txt"));
    let (status, res) = call(c.post(s.url("/api/v1/content")).multipart(other)).await;
    assert_eq!(status, 201, "{res}");
    let pumice = res["content_id"].as_str().unwrap().to_string();
    assert_ne!(pumice, lava);

    for (body, param) in [
        (json!({"title": "no text"}), "text"),
        (json!({"text": "x", "colour": "red"}), "colour"),
        (json!({"text": "x", "tags": "not-a-list"}), "tags"),
    ] {
        let (status, err) = call(c.post(s.url("/api/v1/content")).json(&body)).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{body}: {err}");
    }

    let (_, keeper) = call(c.get(s.url("/api/v1/content/keeper"))).await;
    let keeper_text = keeper["text"].as_str().unwrap();
    for mode in ["bm25", "vector", "hybrid"] {
        let (status, res) = call(c.get(s.url(&format!("/api/v1/search?q=who+kept+the+Skerry+lighthouse&mode={mode}&limit=2")))).await;
        assert_eq!(status, 200, "{res}");
        assert_eq!((res["source"].as_str(), res["total"].as_u64()), (Some("hearth"), Some(2)), "{res}");
        let top = &res["results"][0];
        assert_eq!((top["content_id"].as_str(), top["title"].as_str()), (Some("keeper"), Some("Lighthouses")), "{mode}: {res}");
        let chunk = top["chunk_text"].as_str().unwrap();
        assert!(chunk.contains("Agnes Morrow"));
        assert_eq!(top["section"], json!(["Lighthouses", "Keepers"]));
        assert_eq!(
            (bytes_in(keeper_text, &top["span"]), chars_in(keeper_text, &top["char_span"]).as_str()),
            (chunk, chunk),
            "{mode}: {top}"
        );
    }
    let (_, res) = call(c.get(s.url("/api/v1/search?q=rock&tag=geology"))).await;
    assert_eq!(res["results"].as_array().unwrap().iter().map(|r| r["content_id"].as_str().unwrap()).collect::<Vec<_>>(), [lava.as_str()]);
    // The cross-encoder reorders the candidates by its own scores (sigmoids).
    let (status, res) = call(c.get(s.url("/api/v1/search?q=lighthouse+keeper&rerank=true&limit=3"))).await;
    assert_eq!(status, 200, "{res}");
    let scores: Vec<f64> = res["results"].as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert_eq!(scores.len(), 3);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
    for (query, param) in [
        ("q=", "q"),
        ("q=x&mode=fuzzy", "mode"),
        ("q=x&limit=0", "limit"),
        ("q=x&page=2", "page"),
        ("q=x&rerank=maybe", "rerank"),
        ("q=x&collection=../etc", "collection"),
        ("q=x&query=y", "query"),
    ] {
        let (status, err) = call(c.get(s.url(&format!("/api/v1/search?{query}")))).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{query}: {err}");
    }

    let (_, stats) = call(c.get(s.url("/api/v1/stats"))).await;
    assert_eq!((stats["total_documents"].as_u64(), stats["content_types"]["markdown"].as_u64()), (Some(5), Some(3)), "{stats}");
    let (_, health) = call(c.get(s.url("/api/v1/health"))).await;
    assert_eq!(health["documents"], 5);
    assert!(!health["collections"].as_array().unwrap().contains(&json!("empty")), "{health}");

    // Answers: the citations point at the chunk holding the answer's source text, and at
    // nothing else. (Greedy SmolLM2 words vary with the machine's kernels: the citations are
    // what is checked.)
    let question = json!({"question": "Who was the keeper of the Skerry lighthouse?", "limit": 3, "max_tokens": 40});
    let (status, res) = call(c.post(s.url("/search/ask")).json(&question)).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["unsupported"], false, "{res}");
    let sources: Vec<&str> = res["sources"].as_array().unwrap().iter().map(|s| s["content_id"].as_str().unwrap()).collect();
    assert!(sources.len() == 3 && sources.iter().any(|id| *id != "keeper"), "unrelated documents are among the sources: {sources:?}");
    let citations = res["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{res}");
    for citation in citations {
        assert_eq!(citation["document_id"], "keeper", "only the source of the answer is cited: {res}");
        let chunk = citation["chunk_text"].as_str().unwrap();
        assert!(chunk.contains("Agnes Morrow"), "{citation}");
        let (status, doc) = call(c.get(s.url("/api/v1/content/keeper"))).await;
        assert_eq!(status, 200);
        let text = doc["text"].as_str().unwrap();
        assert_eq!(bytes_in(text, &citation["span"]), chunk);
        assert_eq!(chars_in(text, &citation["char_span"]), chunk);
        assert!(citation["char_span"]["start"].as_u64() < citation["span"]["start"].as_u64(), "{citation}");
    }
    let streamed = c
        .post(s.url("/search/ask"))
        .json(&json!({"question": "Who was the keeper of the Skerry lighthouse?", "limit": 3, "max_tokens": 40, "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = sse_data(&streamed).iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!((&events[0]["type"], &events[0]["sources"]), (&json!("sources"), &res["sources"]));
    assert!(events.iter().any(|e| e["type"] == "token"));
    let done = events.last().unwrap();
    assert_eq!((done["type"].as_str(), done["answer"].as_str()), (Some("done"), res["answer"].as_str()), "greedy answers agree: {done}");
    for field in ["citations", "unsupported", "invalid_markers"] {
        assert_eq!(done[field], res[field], "the streamed answer's {field}: {done}");
    }
    let (status, err) = call(c.post(s.url("/search/ask")).json(&json!({"question": "  "}))).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("question")));

    // The same retrieval from the OpenAI route.
    let body = json!({"model": "smol", "max_tokens": 40, "temperature": 0, "knowledge_base": {"collection": "default", "limit": 3},
        "messages": [{"role": "user", "content": "Who was the keeper of the Skerry lighthouse?"}]});
    let (status, res) = call(c.post(s.url("/v1/chat/completions")).json(&body)).await;
    assert_eq!(status, 200, "{res}");
    let kb = &res["knowledge_base"];
    assert!(kb["citations"].as_array().unwrap().iter().any(|c| c["document_id"] == "keeper"), "{res}");
    assert_eq!(kb["sources"].as_array().unwrap().len(), 3);
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let text = c.post(s.url("/v1/chat/completions")).json(&streaming).send().await.unwrap().text().await.unwrap();
    let chunks: Vec<Value> = sse_data(&text).iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let answer: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(answer, res["choices"][0]["message"]["content"].as_str().unwrap(), "greedy answers agree");
    let grounding = &chunks.last().unwrap()["knowledge_base"];
    assert_eq!(grounding["citations"], kb["citations"], "{text}");
    let mut bad = body.clone();
    bad["knowledge_base"] = json!({"limit": "three"});
    let (status, err) = call(c.post(s.url("/v1/chat/completions")).json(&bad)).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("knowledge_base.limit")), "{err}");
    // Chunks a person chose are the sources, first; with `limit: 0`, the only ones.
    let keeper_chunk = kb["sources"].as_array().unwrap().iter().find(|h| h["content_id"] == "keeper").unwrap()["chunk_id"].clone();
    let mut chosen = body.clone();
    chosen["knowledge_base"] = json!({"limit": 0, "chunks": [keeper_chunk]});
    let (status, res) = call(c.post(s.url("/v1/chat/completions")).json(&chosen)).await;
    assert_eq!(status, 200, "{res}");
    let sources: Vec<&Value> = res["knowledge_base"]["sources"].as_array().unwrap().iter().map(|h| &h["chunk_id"]).collect();
    assert_eq!(sources, [&keeper_chunk], "{res}");
    chosen["knowledge_base"] = json!({"limit": 0, "chunks": [987654]});
    assert_eq!(call(c.post(s.url("/v1/chat/completions")).json(&chosen)).await.0, 404);
    chosen["knowledge_base"] = json!({"chunks": vec![1; 51]});
    let (status, err) = call(c.post(s.url("/v1/chat/completions")).json(&chosen)).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("knowledge_base.chunks")), "{err}");

    let (status, _) = call(c.delete(s.url(&format!("/api/v1/content/{lava}")))).await;
    assert_eq!(status, 200);
    let (status, _) = call(c.delete(s.url(&format!("/api/v1/content/{lava}")))).await;
    assert_eq!(status, 404);
    let (status, _) = call(c.get(s.url("/api/v1/content/nope"))).await;
    assert_eq!(status, 404);
    let (_, doc) = call(c.get(s.url("/openapi.json"))).await;
    for (path, method) in
        [("/api/v1/search", "get"), ("/api/v1/content", "post"), ("/api/v1/content/{id}", "delete"), ("/search/ask", "post")]
    {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is documented");
    }
}

#[tokio::test]
async fn server_files_are_ingested_as_a_background_job() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("docs/sub")).unwrap();
    std::fs::write(root.path().join("docs/a.md"), "# Otters\n\nSea otters hold hands while they sleep.").unwrap();
    std::fs::write(root.path().join("docs/sub/b.txt"), "Giraffes sleep for under two hours a day.").unwrap();
    std::fs::write(root.path().join("docs/c.jsonl"), "{\"title\": \"Penguins\", \"body\": \"Penguins cannot fly but swim fast.\"}\n")
        .unwrap();
    std::fs::write(root.path().join("docs/big.txt"), "Elephants never forget. ".repeat(100)).unwrap();
    let dir = root.path().to_path_buf();
    let s = TestServer::start(move |o| o.kb_ingest_dir = Some(dir));
    let c = reqwest::Client::new();
    for (body, param) in [
        (json!({"paths": ["../"]}), "paths[0]"),
        (json!({"paths": ["/etc"]}), "paths[0]"),
        (json!({"paths": ["docs", "missing"]}), "paths[1]"),
        (json!({"paths": []}), "paths"),
        (json!({"paths": ["docs"], "max_bytes": 0}), "max_bytes"),
        (json!({"paths": ["docs"], "max_bytes": "1kB"}), "max_bytes"),
        (json!({"paths": ["docs"], "json_text_field": ""}), "json_text_field"),
    ] {
        let (status, err) = call(c.post(s.url("/api/v1/ingest")).json(&body)).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{body}: {err}");
    }
    let body = json!({"paths": ["docs"], "tags": ["animals"], "max_bytes": 1000, "json_text_field": "body"});
    let (status, res) = call(c.post(s.url("/api/v1/ingest")).json(&body)).await;
    assert_eq!(status, 202, "{res}");
    let id = res["job_id"].as_i64().unwrap();
    let mut job = Value::Null;
    for _ in 0..200 {
        job = call(c.get(s.url(&format!("/api/v1/jobs/{id}")))).await.1;
        if job["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The body's limit and JSON field were used: the big file is refused, the penguins' text read.
    let report = &job["report"];
    assert_eq!(
        (job["state"].as_str(), report["documents"].as_u64(), &report["progress"]),
        (Some("done"), Some(3), &json!({"done": 4, "total": 4, "chunks": 3})),
        "{job}"
    );
    let errors = report["errors"].as_array().unwrap();
    assert!(errors.len() == 1 && errors[0]["source"].as_str().unwrap().ends_with("big.txt"), "{job}");
    assert_eq!(errors[0]["message"], "2400 bytes is over the 1000-byte limit", "{job}");
    let (_, found) = call(c.get(s.url("/api/v1/search?q=otters+sleep&tag=animals"))).await;
    assert_eq!(found["results"][0]["title"], "Otters", "{found}");
    let (_, found) = call(c.get(s.url("/api/v1/search?q=penguins+swim&mode=bm25"))).await;
    assert_eq!(found["results"][0]["chunk_text"], "Penguins cannot fly but swim fast.", "{found}");

    // Character offsets where the text has multibyte characters.
    let text = "Crème brûlée: la crème est cuite au four, puis caramélisée.";
    let (status, res) = call(c.post(s.url("/api/v1/content")).json(&json!({"id": "dessert", "text": text}))).await;
    assert_eq!(status, 201, "{res}");
    let (_, found) = call(c.get(s.url("/api/v1/search")).query(&[("q", "crème caramélisée"), ("mode", "bm25")])).await;
    let top = &found["results"][0];
    assert_eq!((top["content_id"].as_str(), top["chunk_text"].as_str()), (Some("dessert"), Some(text)), "{found}");
    let by_chars: Vec<String> = top["char_highlights"].as_array().unwrap().iter().map(|r| chars_in(text, r)).collect();
    let by_bytes: Vec<&str> = top["highlights"].as_array().unwrap().iter().map(|r| bytes_in(text, r)).collect();
    assert_eq!(
        (by_chars.as_slice(), by_bytes.as_slice()),
        (["Crème", "crème", "caramélisée"].map(String::from).as_slice(), ["Crème", "crème", "caramélisée"].as_slice())
    );
    assert_eq!(top["char_highlights"][1], json!({"start": 17, "end": 22}), "{top}");
    assert_eq!(top["highlights"][1], json!({"start": 20, "end": 26}), "{top}");
    let (status, _) = call(c.get(s.url("/api/v1/jobs/999"))).await;
    assert_eq!(status, 404);
    let (status, err) = call(c.get(s.url("/api/v1/jobs/latest"))).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("id")), "{err}");

    let s2 = TestServer::start(|_| {});
    let (status, err) = call(c.post(s2.url("/api/v1/ingest")).json(&json!({"paths": ["docs"]}))).await;
    assert_eq!(status, 400, "disabled without --kb-ingest-dir: {err}");
}

/// Clients of the knowledge service read the default collection before adding to it.
#[tokio::test]
async fn a_fresh_server_has_an_empty_default_collection() {
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let (status, res) = call(c.get(s.url("/api/v1/search?q=anything"))).await;
    assert_eq!((status, &res["results"], &res["total"]), (200, &json!([]), &json!(0)), "{res}");
    let (status, stats) = call(c.get(s.url("/api/v1/stats"))).await;
    assert_eq!((status, &stats["total_documents"], &stats["total_chunks"]), (200, &json!(0), &json!(0)), "{stats}");
    let (status, health) = call(c.get(s.url("/api/v1/health"))).await;
    assert_eq!((status, &health["documents"]), (200, &json!(0)), "{health}");
    // Another collection that does not exist is still missing.
    let (status, err) = call(c.get(s.url("/api/v1/search?q=x&collection=other"))).await;
    assert_eq!((status, err["error"]["param"].as_str()), (404, Some("collection")), "{err}");
}
