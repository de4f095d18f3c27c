//! `hearth convert`, `hearth fuse` and `hearth quantize`: a model in another format or precision — MLX
//! (float or affine-quantised, as `mlx_lm.convert`), Hugging Face, or GGUF of llama.cpp's
//! common types (as `convert_hf_to_gguf.py` + `llama-quantize`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use hearth_convert::{Affine, FloatType, GgufFileType, GgufOptions, MlxOptions, Progress, Recipe, Report};

#[derive(Clone, Copy, ValueEnum)]
pub enum Target {
    Mlx,
    Hf,
    Gguf,
}

/// What MLX quantisation to apply.
#[derive(Args)]
pub struct MlxQuant {
    /// Bits per weight for MLX affine quantisation: 2, 3, 4, 5, 6 or 8.
    #[arg(long, default_value_t = 4)]
    q_bits: u32,
    /// Weights per scale and bias for MLX affine quantisation: 32, 64 or 128.
    #[arg(long, default_value_t = 64)]
    q_group_size: usize,
    /// MLX: mlx-lm's mixed-precision recipe (mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6).
    #[arg(long)]
    quant_predicate: Option<String>,
}

impl MlxQuant {
    fn options(&self, quantize: bool) -> anyhow::Result<(Option<Affine>, Option<Recipe>)> {
        let recipe = match self.quant_predicate.as_deref() {
            None => None,
            Some(name) => Some(
                Recipe::parse(name)
                    .with_context(|| format!("--quant-predicate must be one of {}, got {name:?}", Recipe::NAMES.join(", ")))?,
            ),
        };
        anyhow::ensure!(quantize || recipe.is_none(), "--quant-predicate needs --quantize");
        Ok((quantize.then_some(Affine { bits: self.q_bits, group_size: self.q_group_size }), recipe))
    }
}

/// Recording the output in the model store.
#[derive(Args)]
pub struct Register {
    /// Register the output in the store as `local/<NAME>` [default: the output's file or
    /// directory name].
    #[arg(long)]
    name: Option<String>,
    /// Do not register the output in the store.
    #[arg(long, conflicts_with = "name")]
    no_register: bool,
}

impl Register {
    /// Records `out` as a local model (`hearth list` shows it), unless asked not to.
    fn record(&self, out: &Path) -> anyhow::Result<()> {
        if self.no_register {
            return Ok(());
        }
        let name = match &self.name {
            Some(name) => name.clone(),
            None => {
                let stem = if out.is_file() { out.file_stem() } else { out.file_name() };
                stem.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
            }
        };
        let record = crate::store_cmd::open_store(false)?
            .register_local(&name, out, hearth_store::Source::Converted)
            .context("registering the output (choose another --name, or --no-register)")?;
        eprintln!("registered as {} ({}, {})", record.name, record.format, crate::store_cmd::human_bytes(record.size_bytes));
        Ok(())
    }
}

#[derive(Args)]
pub struct ConvertArgs {
    /// Source model: a Hugging Face or MLX float directory, a GGUF file, or a name the store
    /// resolves.
    #[arg(long, short)]
    model: String,
    /// Output format.
    #[arg(long)]
    to: Target,
    /// Output directory (MLX, Hugging Face) or file (GGUF).
    #[arg(long)]
    out: PathBuf,
    /// MLX: quantise linear and embedding weights (affine).
    #[arg(long, short)]
    quantize: bool,
    #[command(flatten)]
    mlx: MlxQuant,
    /// MLX/Hugging Face: cast weights to float16, bfloat16 or float32 first [default: each keeps its own].
    #[arg(long)]
    dtype: Option<String>,
    /// GGUF: the file type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K)
    /// [default: a GGUF source's tensors keep their types; a directory is written as F16].
    #[arg(long = "type")]
    file_type: Option<String>,
    /// GGUF: every matrix in the type's own block type (llama-quantize --pure).
    #[arg(long)]
    pure: bool,
    /// Merge this adapter (an mlx-lm or PEFT adapter directory, LoRA or DoRA) into the weights
    /// (`hearth fuse`).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Write float weights where the source is quantised (by default a quantised base keeps
    /// its quantisation: what an adapter changes is re-quantised the same way).
    #[arg(long)]
    dequantize: bool,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    register: Register,
}

#[derive(Args)]
pub struct QuantizeArgs {
    /// Source model: a GGUF file (re-quantised to --type) or a float MLX/Hugging Face directory
    /// (MLX affine, --q-bits/--q-group-size), or a name the store resolves.
    #[arg(long, short)]
    model: String,
    /// Output file or directory.
    #[arg(long)]
    out: PathBuf,
    /// GGUF source: the file type (see `hearth convert --help`) [default: Q4_K_M].
    #[arg(long = "type")]
    file_type: Option<String>,
    /// GGUF: every matrix in the type's own block type.
    #[arg(long)]
    pure: bool,
    /// Directory source: MLX affine quantisation.
    #[command(flatten)]
    mlx: MlxQuant,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    register: Register,
}

fn file_type(name: &str) -> anyhow::Result<GgufFileType> {
    GgufFileType::parse(name).with_context(|| format!("--type must be one of {}, got {name:?}", GgufFileType::all_names().join(", ")))
}

/// Whether `dir` is an MLX-quantised model.
fn mlx_quantized(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|c| c.get("quantization").is_some())
}

/// A progress line on a terminal (nothing when stderr is a log).
fn progress() -> Option<Progress> {
    std::io::stderr().is_terminal().then(|| {
        Progress(Arc::new(|done, total| {
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!("\r[{}{}] {done}/{total} tensors", "#".repeat(filled), " ".repeat(width - filled));
            if done == total {
                eprint!("\r{}\r", " ".repeat(width + 30));
            }
            let _ = std::io::stderr().flush();
        }))
    })
}

fn done(out: &Path, report: &Report, started: std::time::Instant) {
    let kept = if report.kept > 0 { format!(", {} of them blocks kept exactly", report.kept) } else { String::new() };
    eprintln!(
        "wrote {} ({} tensors, {} quantised{kept}, {:.1} MB) in {:.1} s",
        out.display(),
        report.tensors,
        report.quantized,
        report.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let src = crate::store_cmd::resolve_model(&args.model)?;
    let dtype = match args.dtype.as_deref() {
        None => None,
        Some(name) => Some(FloatType::parse(name).with_context(|| format!("--dtype must be float16, bfloat16 or float32, got {name:?}"))?),
    };
    let started = std::time::Instant::now();
    let report = match args.to {
        Target::Mlx | Target::Hf => {
            anyhow::ensure!(args.file_type.is_none() && !args.pure, "--type and --pure apply to GGUF output");
            let (quantize, recipe) = args.mlx.options(args.quantize)?;
            if src.is_file() {
                let kept = if quantize.is_some_and(|q| q.group_size == 32) && recipe.is_none() {
                    " (Q4_0, Q4_1 and Q8_0 blocks are kept exactly as 4- and 8-bit groups of 32)"
                } else {
                    ""
                };
                eprintln!("{}: GGUF blocks are de-quantised to float32{kept}", src.display());
            } else if mlx_quantized(&src) && (quantize.is_some() || args.dequantize || matches!(args.to, Target::Hf)) {
                let to = dtype.map_or("the scales' float type", FloatType::name);
                eprintln!("{}: MLX groups are de-quantised to {to} (as mx.dequantize does)", src.display());
            }
            let opts = MlxOptions {
                dtype,
                quantize,
                recipe,
                dequantize: args.dequantize,
                force: args.force,
                adapter: args.adapter,
                progress: progress(),
                ..MlxOptions::default()
            };
            if let Target::Hf = args.to {
                anyhow::ensure!(!args.quantize, "--quantize applies to MLX output; Hugging Face output is float");
                hearth_convert::to_hf(&src, &args.out, &opts)?
            } else {
                hearth_convert::to_mlx(&src, &args.out, &opts)?
            }
        }
        Target::Gguf => {
            anyhow::ensure!(!args.quantize && dtype.is_none(), "GGUF output takes --type, not --quantize or --dtype");
            let file_type = match (args.file_type.as_deref(), args.dequantize) {
                (Some(name), _) => Some(file_type(name)?),
                (None, true) => Some(GgufFileType::F16),
                (None, false) => None,
            };
            let opts = GgufOptions { file_type, pure: args.pure, force: args.force, adapter: args.adapter, progress: progress() };
            hearth_convert::to_gguf(&src, &args.out, &opts)?
        }
    };
    done(&args.out, &report, started);
    args.register.record(&args.out)
}

/// `hearth fuse`: a conversion with an adapter merged in, as `mlx_lm.fuse` does.
pub fn fuse(args: ConvertArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.adapter.is_some(), "hearth fuse needs --adapter <dir>");
    run(args)
}

/// A same-format conversion: a GGUF re-quantised, or an MLX/Hugging Face directory quantised.
pub fn quantize(args: QuantizeArgs) -> anyhow::Result<()> {
    let src = crate::store_cmd::resolve_model(&args.model)?;
    let started = std::time::Instant::now();
    let report = if src.is_file() {
        let file_type = file_type(args.file_type.as_deref().unwrap_or("Q4_K_M"))?;
        let opts = GgufOptions { file_type: Some(file_type), pure: args.pure, force: args.force, adapter: None, progress: progress() };
        hearth_convert::to_gguf(&src, &args.out, &opts)?
    } else {
        // A directory becomes MLX affine: GGUF's options do not apply.
        anyhow::ensure!(
            args.file_type.is_none() && !args.pure,
            "--type and --pure apply to a GGUF source; a directory is quantised to MLX (--q-bits, --q-group-size)"
        );
        let (quantize, recipe) = args.mlx.options(true)?;
        let opts = MlxOptions { quantize, recipe, force: args.force, progress: progress(), ..MlxOptions::default() };
        hearth_convert::to_mlx(&src, &args.out, &opts)?
    };
    done(&args.out, &report, started);
    args.register.record(&args.out)
}
