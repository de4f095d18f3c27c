//! `hearth perplexity`: how far the fast path (8-bit activations in integer products) is from
//! the float path (float32 activations on the file's exact weights), the way llama.cpp's
//! `llama-perplexity --kl-divergence` reports it: over a text cut into chunks of `--ctx`
//! tokens, each starting with BOS and scored on its second half, the mean KL divergence of the
//! fast path's next-token distribution from the float path's, how often their top tokens
//! agree, and both perplexities. `--other-logits` scores another program's logits (llama.cpp's,
//! written by bench/llamacpp_logits.py for the token ids `--tokens-out` saved) against the
//! same float path.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use clap::Args;
use hearth_engine::model::SeqInput;
use hearth_engine::{LoadOptions, LoadedModel, Precision};
use serde_json::json;

#[derive(Args)]
pub struct PerplexityArgs {
    /// Model path or name.
    #[arg(long, short, default_value = hearth_store::DEFAULT_MODEL)]
    model: String,
    /// The text to score.
    #[arg(long)]
    file: PathBuf,
    /// Tokens per chunk; the second half of each is scored.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Score at most this many tokens of the text (whole chunks).
    #[arg(long, default_value_t = 10_240)]
    max_tokens: usize,
    /// Compare the fast path with the float path (otherwise only the fast path's perplexity).
    #[arg(long)]
    kl_divergence: bool,
    /// Write the chunks' token ids here (JSON), for another program to score the same ones.
    #[arg(long)]
    tokens_out: Option<PathBuf>,
    /// Instead of Hearth's fast path, compare these logits with the float path: a folder of
    /// `chunk-N.f32` files, each the scored positions' logits (little-endian f32, `[ctx / 2 - 1,
    /// vocab]`) of chunk N.
    #[arg(long, requires = "kl_divergence")]
    other_logits: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Running sums over the scored positions.
#[derive(Default)]
struct Tally {
    positions: usize,
    nll_base: f64,
    nll_test: f64,
    kl: f64,
    kl_max: f64,
    top1_same: usize,
}

impl Tally {
    /// One position: the float path's and the tested logits, and the true next token.
    fn add(&mut self, base: &[f32], test: &[f32], next: u32) {
        let (lb, lt) = (log_softmax(base), log_softmax(test));
        let kl: f64 = lb.iter().zip(&lt).map(|(b, t)| b.exp() * (b - t)).sum();
        self.positions += 1;
        self.nll_base -= lb[next as usize];
        self.nll_test -= lt[next as usize];
        self.kl += kl;
        self.kl_max = self.kl_max.max(kl);
        self.top1_same += usize::from(argmax(base) == argmax(test));
    }
}

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_sum = sum.ln() + max;
    logits.iter().map(|&l| l as f64 - log_sum).collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap_or(0)
}

/// Every position's logits of one chunk, on a fresh cache.
fn chunk_logits(model: &LoadedModel, chunk: &[u32]) -> anyhow::Result<Vec<f32>> {
    let mut cache = model.model.new_cache(chunk.len())?;
    Ok(model.model.forward(&mut [SeqInput::new(chunk, &mut cache)], true)?.swap_remove(0))
}

/// Chunk `i`'s scored logits from `dir` (see `--other-logits`).
fn other_chunk(dir: &Path, i: usize, rows: usize, vocab: usize) -> anyhow::Result<Vec<f32>> {
    let path = dir.join(format!("chunk-{i}.f32"));
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(bytes.len() == rows * vocab * 4, "{}: {} bytes, expected {rows} × {vocab} f32", path.display(), bytes.len());
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
}

pub fn run(args: PerplexityArgs) -> anyhow::Result<()> {
    ensure!(args.ctx >= 4, "--ctx must be at least 4");
    let path = crate::store_cmd::resolve_model(&args.model)?;
    let load = |precision| LoadedModel::load_with(&path, LoadOptions { precision, ..Default::default() });
    let fast = load(Precision::Fast)?;
    let vocab = fast.model.config().vocab_size;
    ensure!(args.ctx <= fast.model.config().context_length, "--ctx exceeds the model's context");
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let tokens = fast.tokenizer.encode(&text, false)?;
    let chunks = (tokens.len() / args.ctx).min(args.max_tokens / args.ctx);
    ensure!(chunks > 0, "{} has {} tokens, fewer than one chunk of {}", args.file.display(), tokens.len(), args.ctx);
    let bos = fast.tokenizer.bos_token().and_then(|b| fast.tokenizer.token_to_id(&b));
    // Each chunk starts with BOS in place of its first token, as llama-perplexity does.
    let chunk_ids: Vec<Vec<u32>> = (0..chunks)
        .map(|c| {
            let mut ids = tokens[c * args.ctx..(c + 1) * args.ctx].to_vec();
            if let Some(b) = bos {
                ids[0] = b;
            }
            ids
        })
        .collect();
    if let Some(out) = &args.tokens_out {
        std::fs::write(out, serde_json::to_vec(&json!({"ctx": args.ctx, "chunks": chunk_ids}))?)?;
    }
    let base = if args.kl_divergence { Some(load(Precision::Exact)?) } else { None };
    let first = args.ctx / 2;
    let mut tally = Tally::default();
    for (c, ids) in chunk_ids.iter().enumerate() {
        let test = match &args.other_logits {
            Some(dir) => other_chunk(dir, c, args.ctx - 1 - first, vocab)?,
            None => chunk_logits(&fast, ids)?.split_off(first * vocab),
        };
        let reference = base.as_ref().map(|b| chunk_logits(b, ids)).transpose()?.map(|mut l| l.split_off(first * vocab));
        // Without a float path the tested logits are their own reference (KL 0).
        let reference = reference.as_deref().unwrap_or(&test);
        for (j, pos) in (first..args.ctx - 1).enumerate() {
            let row = j * vocab..(j + 1) * vocab;
            tally.add(&reference[row.clone()], &test[row], ids[pos + 1]);
        }
        eprint!("\rchunk {}/{chunks}", c + 1);
    }
    eprintln!();
    let n = tally.positions as f64;
    let (ppl_base, ppl_test) = ((tally.nll_base / n).exp(), (tally.nll_test / n).exp());
    let tested = if args.other_logits.is_some() { "other" } else { "fast" };
    let isa = hearth_kernels::qdot::isa().name;
    if args.json {
        let mut out = json!({
            "model": path.display().to_string(),
            "isa": isa,
            "tested": tested,
            "chunks": chunks,
            "ctx": args.ctx,
            "positions": tally.positions,
            "ppl": ppl_test,
        });
        if args.kl_divergence {
            out["ppl_float"] = json!(ppl_base);
            out["ppl_ratio"] = json!(ppl_test / ppl_base);
            out["kl_mean"] = json!(tally.kl / n);
            out["kl_max"] = json!(tally.kl_max);
            out["top1_agreement"] = json!(tally.top1_same as f64 / n);
        }
        println!("{out}");
        return Ok(());
    }
    println!("{} positions scored in {chunks} chunks of {} ({isa})", tally.positions, args.ctx);
    println!("perplexity ({tested}) {ppl_test:.4}");
    if args.kl_divergence {
        println!("perplexity (float) {ppl_base:.4}, ratio {:.5}", ppl_test / ppl_base);
        println!("KL divergence from float: mean {:.6}, max {:.6}", tally.kl / n, tally.kl_max);
        println!("top-1 agreement with float: {:.3} %", 100.0 * tally.top1_same as f64 / n);
    }
    Ok(())
}
