//! `hearth bench`: prompt-processing and decode speed in the spirit of llama-bench — medians
//! over repetitions after a warm-up, with peak memory, threads and instruction set.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use hearth_engine::{DeviceChoice, LoadOptions, LoadedModel, Precision};
use hearth_runtime::{Event, GenerateParams, Request, Runtime, RuntimeConfig};
use serde_json::json;

#[derive(Args)]
pub struct BenchArgs {
    /// Model path or name.
    #[arg(long, short, default_value = hearth_store::DEFAULT_MODEL)]
    model: String,
    /// Prompt tokens processed in one prefill.
    #[arg(short = 'p', long = "prompt", default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens decoded one at a time after the prompt.
    #[arg(short = 'n', long = "gen", default_value_t = 128)]
    gen_tokens: usize,
    /// Sequences decoded together (each its own prompt copy and cache), as a batching server
    /// runs them; decode speed is then the aggregate over all of them.
    #[arg(short = 'b', long = "batch", default_value_t = 1)]
    batch: usize,
    /// Use this text's tokens as the prompt (raw, no chat template) instead of `-p` synthetic
    /// tokens.
    #[arg(long)]
    text: Option<String>,
    /// Measured repetitions (after one warm-up).
    #[arg(short = 'r', long = "reps", default_value_t = 5)]
    reps: usize,
    /// Run with float activations on exact weights instead of the fast path.
    #[arg(long)]
    exact: bool,
    /// Where the model runs: cpu, cuda[:N] or metal[:N] (GPUs in builds with that feature).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    #[arg(long)]
    json: bool,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One repetition on the runtime every front end uses: the prompt prefilled alone (tokens/s),
/// then `batch` greedy choices of it decoded together from the prompt cache (aggregate
/// tokens/s over the forward passes); also each choice's tokens.
fn run_once(model: &LoadedModel, prompt: &[u32], gen: usize, batch: usize) -> anyhow::Result<(f64, f64, Vec<Vec<u32>>)> {
    let cfg = RuntimeConfig { max_batch: batch, prefill_chunk: 256, context: prompt.len() + gen, prompt_cache_bytes: usize::MAX };
    let mut runtime = Runtime::new(model, cfg, Arc::new(()), Default::default());
    let greedy = |max_tokens| GenerateParams { max_tokens, ignore_eos: true, ..Default::default() };
    let t0 = Instant::now();
    runtime.complete(Request::new(prompt.to_vec(), greedy(1)), |_| true)?;
    let pp = prompt.len() as f64 / t0.elapsed().as_secs_f64();
    let mut decode = Request::new(prompt.to_vec(), greedy(gen));
    decode.n = batch;
    let mut events = runtime.submit(decode)?;
    // The first step samples every choice's first token from the cached prompt's logits.
    runtime.step();
    let t1 = Instant::now();
    while !runtime.is_idle() {
        runtime.step();
    }
    let tg = (batch * (gen - 1)) as f64 / t1.elapsed().as_secs_f64();
    let mut tokens = vec![Vec::new(); batch];
    while let Ok(event) = events.try_recv() {
        match event {
            Event::Token { index, token: Some(t), .. } => tokens[index].push(t.id),
            Event::Failed(e) => return Err(e.into()),
            _ => {}
        }
    }
    Ok((pp, tg, tokens))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.prompt_tokens > 0 && args.reps > 0, "-p and -r must be positive");
    anyhow::ensure!(args.gen_tokens >= 2, "-n must be at least 2: the first token is sampled from the prompt's logits");
    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    let path = crate::store_cmd::resolve_model(&args.model)?;
    let precision = if args.exact { Precision::Exact } else { Precision::Fast };
    let model = LoadedModel::load_with(&path, LoadOptions { precision, device: args.device, ..Default::default() })?;
    let cfg = model.model.config();
    let prompt: Vec<u32> = match &args.text {
        Some(text) => model.tokenizer.encode(text, true)?,
        None => {
            // Ordinary text-like ids (a fixed pseudo-random sequence), as llama-bench uses.
            let vocab = cfg.vocab_size as u64;
            (0..args.prompt_tokens as u64).map(|i| ((i * 2_654_435_761 + 12_345) % vocab) as u32).collect()
        }
    };
    anyhow::ensure!(
        prompt.len() + args.gen_tokens <= cfg.context_length,
        "the prompt ({}) plus -n ({}) exceeds the model's context of {}",
        prompt.len(),
        args.gen_tokens,
        cfg.context_length
    );
    run_once(&model, &prompt, args.gen_tokens.min(8), args.batch)?;
    let (mut pps, mut tgs, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.reps {
        let (pp, tg, t) = run_once(&model, &prompt, args.gen_tokens, args.batch)?;
        pps.push(pp);
        tgs.push(tg);
        tokens = t;
    }
    let (pp, tg) = (median(&mut pps.clone()), median(&mut tgs.clone()));
    let threads = hearth_kernels::pool::global().threads();
    let isa = hearth_kernels::qdot::isa().name;
    let rss = crate::stats::peak_rss_bytes();
    let kv_bytes = args.batch * model.model.new_cache(prompt.len() + args.gen_tokens)?.bytes();
    if args.json {
        println!(
            "{}",
            json!({
                "model": path.display().to_string(),
                "precision": if args.exact { "exact" } else { "fast" },
                "device": args.device.to_string(),
                "threads": threads,
                "isa": isa,
                "prompt_tokens": prompt.len(),
                "gen_tokens": args.gen_tokens,
                "batch": args.batch,
                "reps": args.reps,
                "pp_tokens_per_sec": pp,
                "tg_tokens_per_sec": tg,
                "pp_runs": pps,
                "tg_runs": tgs,
                "peak_rss_bytes": rss,
                "weight_bytes": model.model.weight_bytes(),
                "kv_cache_bytes": kv_bytes,
                "generated": tokens,
            })
        );
    } else {
        match args.device {
            DeviceChoice::Cpu => println!("model: {}  ({} threads, {isa})", path.display(), threads),
            gpu => println!("model: {}  (on {gpu})", path.display()),
        }
        println!("pp{:<6} {:>10.1} tokens/s  (median of {})", prompt.len(), pp, args.reps);
        let batch = if args.batch > 1 { format!(", {} sequences together", args.batch) } else { String::new() };
        println!("tg{:<6} {:>10.1} tokens/s  (median of {}, after the prompt{batch})", args.gen_tokens, tg, args.reps);
        match rss {
            Some(b) => println!(
                "peak RSS {:.1} MB  (weights {:.1} MB, KV cache {:.1} MB)",
                b as f64 / 1e6,
                model.model.weight_bytes() as f64 / 1e6,
                kv_bytes as f64 / 1e6
            ),
            None => println!("peak RSS unknown on this platform"),
        }
    }
    Ok(())
}
