//! `hearth embed` and `hearth rerank`: sentence embeddings and cross-encoder scores from the
//! command line, and `--bench`, the throughput and latency figures bench/embed_bench.sh reads.

use std::io::{BufRead, Write};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use hearth_embed::{EmbedInput, EmbedOptions, EmbedPrecision, Embedder, InputType, RerankOptions, Reranker};
use serde_json::json;

#[derive(Args)]
pub struct EmbedArgs {
    /// Embedding model: path, store name or name under $HEARTH_HOME/models (e.g. minilm).
    #[arg(long, short)]
    model: String,
    /// Texts to embed (default: the lines of --file, else of standard input).
    texts: Vec<String>,
    /// Embed each line of this file.
    #[arg(long, conflicts_with = "texts")]
    file: Option<std::path::PathBuf>,
    /// Print the OpenAI response shape instead of one line of numbers per input.
    #[arg(long)]
    json: bool,
    /// Keep only the first N dimensions (Matryoshka; re-normalised where the model normalises).
    #[arg(long)]
    dimensions: Option<usize>,
    /// Cut inputs longer than the model's limit instead of failing.
    #[arg(long)]
    truncate: bool,
    /// Put the model's named prompt before each text (e.g. `query` for Qwen3-Embedding).
    #[arg(long)]
    prompt_name: Option<String>,
    /// What the texts are for: the model's prompt for that role, where it has one.
    #[arg(long, value_parser = ["query", "document"])]
    input_type: Option<String>,
    /// How an encoder multiplies: `float` (bf16 operands where the CPU has bf16 dot products)
    /// or `int8` (8-bit weights and activations, integer dot products).
    #[arg(long, value_parser = ["float", "int8"], default_value = "float")]
    embed_precision: String,
    /// Print speed instead of vectors: all inputs as one request (after a warm-up), the same
    /// inputs one per call, the median latency of --query embedded alone, and peak memory, as
    /// JSON.
    #[arg(long, conflicts_with = "json")]
    bench: bool,
    /// The short query whose latency --bench measures.
    #[arg(long, default_value = "What is the capital of France?", requires = "bench")]
    query: String,
}

#[derive(Args)]
pub struct RerankArgs {
    /// Cross-encoder model: path or name.
    #[arg(long, short)]
    model: String,
    #[arg(long, short)]
    query: String,
    /// Documents to score (default: the lines of --file, else of standard input).
    documents: Vec<String>,
    #[arg(long, conflicts_with = "documents")]
    file: Option<std::path::PathBuf>,
    /// Show only the best N.
    #[arg(long)]
    top_n: Option<usize>,
    #[arg(long)]
    truncate: bool,
    /// The task, for a causal LM reranker such as Qwen3-Reranker (default: web search).
    #[arg(long)]
    instruction: Option<String>,
}

/// The given texts, else the lines of `file`, else of standard input.
fn inputs(texts: Vec<String>, file: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    if !texts.is_empty() {
        return Ok(texts);
    }
    let lines: std::io::Result<Vec<String>> = match file {
        Some(f) => std::io::BufReader::new(std::fs::File::open(f).with_context(|| f.display().to_string())?).lines().collect(),
        None => std::io::stdin().lock().lines().collect(),
    };
    Ok(lines?)
}

pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let path = crate::store_cmd::resolve_model(&args.model)?;
    let precision = EmbedPrecision::from_name(&args.embed_precision).expect("clap checked the name");
    let model = Embedder::load_with(&path, precision).with_context(|| format!("loading {}", path.display()))?;
    let texts = inputs(args.texts, args.file.as_deref())?;
    let batch: Vec<EmbedInput> = texts.iter().cloned().map(EmbedInput::Text).collect();
    let input_type = args.input_type.as_deref().map(|t| if t == "query" { InputType::Query } else { InputType::Document });
    let opts = EmbedOptions { dimensions: args.dimensions, truncate: args.truncate, prompt_name: args.prompt_name.clone(), input_type };
    if args.bench {
        return bench(&model, &batch, &EmbedInput::Text(args.query), &opts);
    }
    let out = model.embed(&batch, &opts)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let data: Vec<_> =
            out.vectors.iter().enumerate().map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v})).collect();
        let usage = json!({"prompt_tokens": out.tokens, "total_tokens": out.tokens});
        writeln!(stdout, "{}", json!({"object": "list", "model": args.model, "data": data, "usage": usage}))?;
    } else {
        for v in &out.vectors {
            let line: Vec<String> = v.iter().map(f32::to_string).collect();
            writeln!(stdout, "{}", line.join(" "))?;
        }
    }
    Ok(())
}

fn bench(model: &Embedder, batch: &[EmbedInput], query: &EmbedInput, opts: &EmbedOptions) -> anyhow::Result<()> {
    anyhow::ensure!(!batch.is_empty(), "--bench needs inputs");
    model.embed(&batch[..batch.len().min(64)], opts)?;
    let t0 = Instant::now();
    let out = model.embed(batch, opts)?;
    let secs = t0.elapsed().as_secs_f64();
    // The same inputs one per call (at most 200 of them): what batching saves.
    let alone = &batch[..batch.len().min(200)];
    let t1 = Instant::now();
    for input in alone {
        model.embed(std::slice::from_ref(input), opts)?;
    }
    let alone_per_sec = alone.len() as f64 / t1.elapsed().as_secs_f64();
    let query = std::slice::from_ref(query);
    let mut latencies: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            model.embed(query, opts).map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    latencies.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "inputs": batch.len(),
            "tokens": out.tokens,
            "seconds": secs,
            "inputs_per_sec": batch.len() as f64 / secs,
            "one_per_call_inputs_per_sec": alone_per_sec,
            "query_p50_ms": latencies[latencies.len() / 2],
            "query_p90_ms": latencies[latencies.len() * 9 / 10],
            "threads": hearth_kernels::pool::global().threads(),
            "peak_rss_bytes": crate::stats::peak_rss_bytes(),
        })
    );
    Ok(())
}

pub fn rerank(args: RerankArgs) -> anyhow::Result<()> {
    let path = crate::store_cmd::resolve_model(&args.model)?;
    let model = Reranker::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let docs = inputs(args.documents, args.file.as_deref())?;
    let ranked = model.rerank(
        &args.query,
        &docs,
        &RerankOptions { top_n: args.top_n, truncate: args.truncate, instruction: args.instruction.clone() },
    )?;
    for r in ranked.results {
        println!("{:.6}\t{}\t{}", r.relevance_score, r.index, docs[r.index]);
    }
    Ok(())
}
