//! `hearth kb`: ingest, sync, search and ask a knowledge base, and evaluate retrieval on a
//! TREC-style collection.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use hearth_embed::EmbedPrecision;
use hearth_kb::{
    answer, eval, ExtractOptions, Filters, IngestOptions, IngestReport, JobSpec, Kb, LocalEmbedder, Mode, Progress, SearchOptions,
    TextReranker,
};
use hearth_tokenizer::RenderOptions;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::store_cmd::resolve_model;
use crate::ModelArgs;

#[derive(Args)]
pub struct KbArgs {
    /// Collection name: the database $HEARTH_HOME/kb/NAME.sqlite.
    #[arg(long, default_value = "default", global = true)]
    kb: String,
    /// A database file to use instead of a named collection.
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// Embedding model (the one that built the collection).
    #[arg(long, default_value = "minilm", global = true)]
    embedding_model: String,
    /// How the embedding encoder multiplies: `float` or `int8` (see `hearth embed`).
    #[arg(long, value_parser = ["float", "int8"], default_value = "float", global = true)]
    embed_precision: String,
    #[command(subcommand)]
    command: KbCommand,
}

#[derive(Subcommand)]
enum KbCommand {
    /// Add files and folders (recursively); unchanged files are skipped.
    Ingest(IngestArgs),
    /// Make the collection match a folder: ingest what changed, drop what is gone.
    Sync(IngestArgs),
    /// Finish ingest jobs a stopped process left running.
    Resume,
    Search(SearchArgs),
    /// Answer a question from the collection, citing its sources.
    Ask(AskArgs),
    Stats(JsonFlag),
    /// Remove a document by id.
    Rm {
        id: String,
    },
    /// Score BM25, vector and hybrid retrieval on a TREC collection (a fresh database).
    Eval(EvalArgs),
}

#[derive(Args)]
struct JsonFlag {
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct IngestArgs {
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Globs of files to take (relative to each folder); default every supported type.
    #[arg(long)]
    include: Vec<String>,
    #[arg(long)]
    exclude: Vec<String>,
    /// Skip embeddings (BM25 only until a later ingest adds them).
    #[arg(long)]
    no_embed: bool,
    /// JSON/JSONL field holding the text.
    #[arg(long, default_value = "text")]
    json_text_field: String,
    /// Files larger than this many bytes are reported and skipped.
    #[arg(long, default_value_t = ExtractOptions::default().max_bytes)]
    max_bytes: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SearchArgs {
    query: String,
    #[arg(long, default_value = "hybrid")]
    mode: Mode,
    #[arg(long, default_value_t = 10)]
    limit: usize,
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Content types to keep (text, markdown, html, pdf, docx, json).
    #[arg(long = "type")]
    content_types: Vec<String>,
    /// Reorder the candidates with this cross-encoder.
    #[arg(long)]
    rerank_model: Option<String>,
    /// Hybrid mode: the BM25 ranking's weight in the reciprocal-rank fusion.
    #[arg(long, default_value_t = SearchOptions::default().bm25_weight)]
    bm25_weight: f32,
    /// Hybrid mode: the vector ranking's weight in the reciprocal-rank fusion.
    #[arg(long, default_value_t = SearchOptions::default().vector_weight)]
    vector_weight: f32,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct AskArgs {
    question: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Chunks retrieved for the prompt (as many as fit the context are used).
    #[arg(long, default_value_t = 5)]
    sources: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// Folder with doc-text.trec, query-text.trec and qrels.
    #[arg(long, default_value = "testdata/vaswani")]
    dataset: PathBuf,
    /// Also time an ingest without embeddings.
    #[arg(long)]
    no_embed_throughput: bool,
    #[arg(long)]
    json: bool,
}

fn open(args: &KbArgs) -> anyhow::Result<Kb> {
    let path = match &args.db {
        Some(p) => p.clone(),
        None => hearth_kb::collection_path(&hearth_store::hearth_home(), &args.kb)?,
    };
    open_at(&path, &args.embedding_model, precision(args))
}

fn precision(args: &KbArgs) -> EmbedPrecision {
    EmbedPrecision::from_name(&args.embed_precision).expect("clap checked the name")
}

fn open_at(path: &Path, embedding_model: &str, precision: EmbedPrecision) -> anyhow::Result<Kb> {
    let dir = resolve_model(embedding_model)?;
    let embedder = LocalEmbedder::load_with(hearth_store::catalogue::canonical(embedding_model), &dir, precision)?;
    Kb::open(path, Arc::new(embedder)).with_context(|| format!("opening the knowledge base {}", path.display()))
}

pub fn run(args: KbArgs) -> anyhow::Result<()> {
    if let KbCommand::Eval(e) = &args.command {
        return run_eval(e, &args.embedding_model, precision(&args));
    }
    let kb = open(&args)?;
    match args.command {
        KbCommand::Ingest(a) => ingest(&kb, a, false),
        KbCommand::Sync(a) => ingest(&kb, a, true),
        KbCommand::Resume => {
            let bar = progress_bar();
            for (id, report) in kb.resume_jobs(&|p| show(&bar, p))? {
                bar.finish_and_clear();
                println!("job {id}: {}", summary(&report));
            }
            Ok(())
        }
        KbCommand::Search(a) => search(&kb, a),
        KbCommand::Ask(a) => ask(&kb, a),
        KbCommand::Stats(a) => {
            let stats = kb.stats()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!(
                    "{} documents, {} chunks ({} embedded), {} sources, {} bytes of text",
                    stats.documents, stats.chunks, stats.embedded_chunks, stats.sources, stats.bytes
                );
                for (ty, n) in stats.content_types {
                    println!("  {ty}: {n}");
                }
            }
            Ok(())
        }
        KbCommand::Rm { id } => {
            anyhow::ensure!(kb.delete(&id)?, "no document with id {id}");
            println!("removed {id}");
            Ok(())
        }
        KbCommand::Eval(_) => unreachable!("handled above"),
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} sources, {msg}").expect("valid template"));
    bar
}

fn show(bar: &ProgressBar, p: Progress) {
    bar.set_length(p.total as u64);
    bar.set_position(p.done as u64);
    bar.set_message(format!("{} chunks", p.chunks));
}

fn summary(r: &IngestReport) -> String {
    format!(
        "{} sources: {} added, {} updated, {} unchanged, {} removed, {} failed; {} documents, {} chunks ({} embedded, {} kept) in {:.1}s",
        r.sources,
        r.added,
        r.updated,
        r.unchanged,
        r.deleted,
        r.errors.len(),
        r.documents,
        r.chunks,
        r.chunks_embedded,
        r.chunks_reused,
        r.seconds
    )
}

fn ingest(kb: &Kb, a: IngestArgs, sync: bool) -> anyhow::Result<()> {
    let bar = progress_bar();
    let resumed = kb.resume_jobs(&|p| show(&bar, p))?;
    for (id, report) in &resumed {
        bar.println(format!("resumed job {id}: {}", summary(report)));
    }
    let options = IngestOptions {
        tags: a.tags,
        include: a.include,
        exclude: a.exclude,
        embed: !a.no_embed,
        extract: ExtractOptions { json_text_field: a.json_text_field, max_bytes: a.max_bytes, ..Default::default() },
        ..Default::default()
    };
    let spec = JobSpec { paths: a.paths, sync, options };
    let (id, report) = kb.run_job(&spec, &|p| show(&bar, p))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", json!({"job": id, "report": report}));
    } else {
        for e in &report.errors {
            eprintln!("error: {}: {}", e.source, e.message);
        }
        println!("{}", summary(&report));
    }
    Ok(())
}

fn search(kb: &Kb, a: SearchArgs) -> anyhow::Result<()> {
    let reranker =
        a.rerank_model.as_deref().map(|m| hearth_embed::Reranker::load(&resolve_model(m)?).map_err(anyhow::Error::from)).transpose()?;
    let opts = SearchOptions {
        mode: a.mode,
        limit: a.limit,
        filters: Filters { tags: a.tags, content_types: a.content_types, documents: Vec::new() },
        rerank: reranker.is_some(),
        bm25_weight: a.bm25_weight,
        vector_weight: a.vector_weight,
        ..Default::default()
    };
    let hits = kb.search(&a.query, &opts, reranker.as_ref().map(|r| r as &dyn TextReranker))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json!({"query": a.query, "mode": a.mode, "results": hits}))?);
        return Ok(());
    }
    for (i, h) in hits.iter().enumerate() {
        let title = h.document.title.as_deref().unwrap_or(&h.document.source);
        let section = if h.chunk.section.is_empty() { String::new() } else { format!(" › {}", h.chunk.section.join(" › ")) };
        println!("{}. [{:.4}] {title}{section} ({})", i + 1, h.score, h.document.id);
        let snippet: String = h.chunk.text.chars().take(200).collect();
        println!("   {}", snippet.replace('\n', " "));
    }
    Ok(())
}

fn ask(kb: &Kb, a: AskArgs) -> anyhow::Result<()> {
    let model = a.model.load()?;
    let template = model.chat_template.as_ref().context("the chat model has no chat template")?;
    let hits = kb.search(&a.question, &SearchOptions { limit: a.sources, ..Default::default() }, None)?;
    let context = a.model.context(&model);
    let count = |t: &str| model.tokenizer.encode(t, false).map_or(t.len() / 3, |ids| ids.len());
    // Room for the template's own tokens besides the answer.
    let budget = context.saturating_sub(a.model.max_tokens + 64);
    let prompt = answer::build_prompt(&a.question, hits, budget, &count);
    let messages = [json!({"role": "system", "content": prompt.system}), json!({"role": "user", "content": prompt.user})];
    let text = template.render(&messages, &RenderOptions { add_generation_prompt: true, ..Default::default() })?;
    let ids = model.tokenizer.encode(&text, false)?;
    let mut runtime = a.model.runtime(&model);
    let mut out = std::io::stdout().lock();
    let answer_text = runtime
        .complete(hearth_runtime::Request::new(ids, a.model.grounded_params(&model)), |text| {
            a.json || out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok()
        })?
        .text;
    let cited = answer::cite(&answer_text, &prompt.sources);
    if a.json {
        writeln!(
            out,
            "{}",
            json!({"question": a.question, "answer": answer_text, "citations": cited.citations, "unsupported": cited.unsupported, "invalid_markers": cited.invalid_markers})
        )?;
        return Ok(());
    }
    writeln!(out, "\n")?;
    if cited.unsupported {
        writeln!(out, "(the answer cites none of the retrieved sources)")?;
    }
    for c in &cited.citations {
        let page = c.page.map(|p| format!(", page {p}")).unwrap_or_default();
        let how = if c.marked { "" } else { " (quoted, unmarked)" };
        writeln!(
            out,
            "[{}] {} {}{page} bytes {}..{}{how}",
            c.n,
            c.title.as_deref().unwrap_or(&c.source),
            c.section.join(" › "),
            c.span.start,
            c.span.end
        )?;
    }
    Ok(())
}

fn run_eval(a: &EvalArgs, embedding_model: &str, precision: EmbedPrecision) -> anyhow::Result<()> {
    // Removed when dropped, on errors too.
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    let collection = eval::Collection::read(&a.dataset)?;
    let mut throughput = Vec::new();
    if a.no_embed_throughput {
        let kb = open_at(&dir.join("bm25-only.sqlite"), embedding_model, precision)?;
        let r = collection.ingest(&kb, false)?;
        throughput.push(json!({"embeddings": false, "documents": r.documents, "chunks": r.chunks, "seconds": r.seconds, "documents_per_s": r.documents as f64 / r.seconds, "chunks_per_s": r.chunks as f64 / r.seconds}));
    }
    let kb = open_at(&dir.join("eval.sqlite"), embedding_model, precision)?;
    let first = collection.ingest(&kb, true)?;
    let again = Instant::now();
    let second = collection.ingest(&kb, true)?;
    let again = again.elapsed().as_secs_f64();
    anyhow::ensure!(second.unchanged == first.sources, "re-ingesting changed {} sources", second.sources - second.unchanged);
    throughput.push(json!({"embeddings": true, "documents": first.documents, "chunks": first.chunks, "seconds": first.seconds, "documents_per_s": first.documents as f64 / first.seconds, "chunks_per_s": first.chunks as f64 / first.seconds, "reingest_unchanged_seconds": again, "reingest_fraction": again / first.seconds}));
    let mut metrics = serde_json::Map::new();
    for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
        let m = eval::evaluate(&kb, &collection.topics, &collection.qrels, &SearchOptions { mode, ..Default::default() })?;
        metrics.insert(serde_json::to_value(mode)?.as_str().unwrap_or_default().to_string(), serde_json::to_value(m)?);
    }
    let out = json!({"dataset": a.dataset, "embedding_model": embedding_model, "metrics": metrics, "ingest": throughput});
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<8} {:>9} {:>7} {:>10}", "mode", "nDCG@10", "MAP", "recall@100");
    for (mode, m) in &metrics {
        println!(
            "{mode:<8} {:>9.4} {:>7.4} {:>10.4}",
            m["ndcg_at_10"].as_f64().unwrap_or(0.0),
            m["map"].as_f64().unwrap_or(0.0),
            m["recall_at_100"].as_f64().unwrap_or(0.0)
        );
    }
    for t in &throughput {
        println!("ingest {t}");
    }
    Ok(())
}
