//! Tools outside Hearth read what it writes. `safetensors` (numpy) reads every directory
//! Hearth writes with the tensors Hearth reads back (scripts/test.sh runs it with the SDK
//! environment); transformers, mlx-lm and llama-cpp-python load Hearth's HF, MLX and GGUF
//! outputs and give Hearth's logits within the MANIFEST's bounds, and llama.cpp finds the same
//! perplexity in Hearth's Q8_0 as in its own (bench/convert_check.sh installs them: torch is too
//! big for CI).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::*;
use hearth_convert::{to_gguf, to_hf, to_mlx, Affine, FloatType, GgufFileType, GgufOptions, MlxOptions, Recipe};
use serde_json::{json, Value};

fn gguf_opts(t: GgufFileType) -> GgufOptions {
    GgufOptions { file_type: Some(t), pure: false, force: false, adapter: None, progress: None }
}

/// A Python process answering one JSON request per line.
struct Peer {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(python: &str, script: &str) -> Peer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
        let mut child = Command::new(python).arg(path).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let (stdin, stdout) = (child.stdin.take().unwrap(), BufReader::new(child.stdout.take().unwrap()));
        Peer { _child: child, stdin, stdout }
    }

    fn ask(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{request}: no answer ({e}): {line:?}"))
    }

    fn logits(&mut self, tool: &str, model: &Path, ids: &[u32]) -> Vec<f32> {
        let answer = self.ask(json!({"tool": tool, "model": model, "ids": ids}));
        answer["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
    }
}

#[test]
#[ignore = "needs safetensors: scripts/test.sh runs it after scripts/sdk-env.sh"]
fn safetensors_reads_every_directory_written() {
    let python = std::env::var("HEARTH_SDK_PYTHON").expect("HEARTH_SDK_PYTHON (scripts/sdk-env.sh)");
    let tmp = tempfile::tempdir().unwrap();
    let q4 = Some(Affine { bits: 4, group_size: 32 });
    let outputs = [
        ("hf-f32", to_hf(&tiny("gguf/llama-Q8_0.gguf"), &tmp.path().join("hf-f32"), &MlxOptions::default())),
        (
            "hf-bf16",
            to_hf(&tiny("hf/qwen3"), &tmp.path().join("hf-bf16"), &MlxOptions { dtype: Some(FloatType::BF16), ..Default::default() }),
        ),
        ("mlx-q4", to_mlx(&tiny("hf/llama"), &tmp.path().join("mlx-q4"), &MlxOptions { quantize: q4, ..Default::default() })),
        (
            "mlx-mixed",
            to_mlx(
                &tiny("hf/llama"),
                &tmp.path().join("mlx-mixed"),
                &MlxOptions { quantize: q4, recipe: Some(Recipe::Mixed2_6), ..Default::default() },
            ),
        ),
    ];
    let mut peer = Peer::start(&python, "read_safetensors.py");
    for (name, report) in outputs {
        report.unwrap();
        let dir = tmp.path().join(name);
        let theirs = peer.ask(json!({"dir": dir}));
        // Every tensor Hearth wrote, as safetensors reads it: the same names, dtypes, shapes and
        // bytes (a digest, where numpy has the dtype) as Hearth's own reader sees.
        let ours = hearth_formats::safetensors::SafeTensors::open(&dir.join("model.safetensors")).unwrap();
        assert_eq!(theirs["tensors"].as_object().unwrap().len(), ours.tensors.len(), "{name}");
        for (tensor, view) in &ours.tensors {
            let t = &theirs["tensors"][tensor];
            assert_eq!(t["shape"], json!(view.shape), "{name} {tensor}");
            let dtype = format!("{:?}", view.dtype).to_uppercase();
            assert_eq!(t["dtype"], json!(dtype), "{name} {tensor}");
            if dtype != "BF16" {
                assert_eq!(t["bytes"], json!(view.data.len()), "{name} {tensor}");
                assert_eq!(t["sum"].as_u64().unwrap(), view.data.iter().map(|&b| b as u64).sum::<u64>(), "{name} {tensor}");
            }
        }
        assert_eq!(theirs["format"], if name.starts_with("hf") { "pt" } else { "mlx" }, "{name}");
    }
}

/// `src` written by Hearth as GGUF of type `ty`, and by llama.cpp's own quantiser from Hearth's
/// float32 GGUF of it (whose tensors are convert_hf_to_gguf.py's: tests/gguf.rs): the same
/// bytes, tensor for tensor, so llama.cpp computes the same logits on both. Leaves
/// `<label>-hearth-<ty>.gguf` and `<label>-llama.cpp-<ty>.gguf`.
fn same_as_llama_cpp(peer: &mut Peer, src: &Path, label: &str, ty: GgufFileType, tmp: &Path) {
    let float = tmp.join(format!("{label}-F32.gguf"));
    if !float.exists() {
        to_gguf(src, &float, &gguf_opts(GgufFileType::F32)).unwrap();
    }
    let (ours, theirs) =
        (tmp.join(format!("{label}-hearth-{}.gguf", ty.name())), tmp.join(format!("{label}-llama.cpp-{}.gguf", ty.name())));
    to_gguf(src, &ours, &gguf_opts(ty)).unwrap();
    peer.ask(json!({"quantize": float, "out": theirs, "type": ty.name()}));
    let (ids, hearth) = run(&ours);
    let (a, b) = (peer.logits("llama_cpp", &ours, &ids), peer.logits("llama_cpp", &theirs, &ids));
    let (same, gap) = (max_diff(&a, &b), max_diff(&hearth, &a));
    let (x, y) = (hearth_formats::gguf::Gguf::open(&ours).unwrap(), hearth_formats::gguf::Gguf::open(&theirs).unwrap());
    let same_bytes = |t: &hearth_formats::gguf::TensorInfo| {
        y.tensor(&t.name).is_some_and(|u| u.ggml_type == t.ggml_type && y.tensor_data(u).unwrap()[..] == x.tensor_data(t).unwrap()[..])
    };
    let identical = x.tensors.iter().filter(|t| same_bytes(t)).count();
    eprintln!(
        "llama_cpp    {label} gguf-{:<8} {identical} of {} tensors byte-identical to llama-quantize's; max |Δlogit| between the two files {same:.6}; Hearth's float path vs llama.cpp {gap:.6}",
        ty.name(),
        x.tensors.len()
    );
    // The K-quants too: Hearth's search is llama.cpp's reference quantiser's (no imatrix).
    assert_eq!(identical, x.tensors.len(), "{label} {}: bit-identical to llama-quantize's", ty.name());
    assert_eq!(same, 0.0, "{label} {}", ty.name());
}

/// Each peer on a file Hearth wrote, against Hearth's float path on the same file: the
/// MANIFEST's bounds (transformers and mlx-lm in float32 ≤ 1e-3, mlx-lm in bfloat16 ≤ 0.6,
/// llama.cpp on float16 ≤ 0.3); llama.cpp on Hearth's quantised files as on its own; on every
/// tiny architecture and on SmolLM2's real weights.
#[test]
#[ignore = "needs transformers, mlx-lm and llama-cpp-python: bench/convert_check.sh"]
fn outside_tools_agree_with_hearth() {
    let python = std::env::var("HEARTH_OUTSIDE_PYTHON").expect("HEARTH_OUTSIDE_PYTHON (bench/convert_check.sh)");
    let mut peer = Peer::start(&python, "outside_logits.py");
    let tmp = tempfile::tempdir().unwrap();
    let mut worst_by_kind: std::collections::BTreeMap<String, f32> = Default::default();
    let mut check = |peer: &mut Peer, tool: &str, label: &str, path: &Path, bound: f32| {
        let (ids, ours) = run(path);
        let theirs = peer.logits(tool, path, &ids);
        let worst = max_diff(&ours, &theirs);
        eprintln!("{tool:<12} {label:<34} max |Δlogit| {worst:.6} (bound {bound})");
        assert!(worst <= bound, "{tool} on {label}: {worst} > {bound}");
        let kind = worst_by_kind.entry(format!("{tool} {}", label.split(' ').nth(1).unwrap_or(""))).or_default();
        *kind = kind.max(worst);
    };
    let f32_mlx = |q: Option<Affine>, recipe| MlxOptions { dtype: Some(FloatType::F32), quantize: q, recipe, ..Default::default() };
    let q4 = Some(Affine { bits: 4, group_size: 32 });
    for arch in ["llama", "mistral", "qwen2", "qwen3", "phi3"] {
        let mut src = tiny(&format!("hf/{arch}"));
        if arch == "phi3" {
            // llama.cpp treats a model whose general.name (the directory's name) says Phi-3 as
            // Microsoft's, and looks up Phi-3's own special tokens, which SmolLM2's vocabulary
            // (the fixtures') lacks: under another name it loads.
            let renamed = tmp.path().join("tiny-phi");
            std::fs::create_dir(&renamed).unwrap();
            for entry in std::fs::read_dir(&src).unwrap() {
                let path = entry.unwrap().path();
                std::fs::copy(&path, renamed.join(path.file_name().unwrap())).unwrap();
            }
            src = renamed;
        }
        let f16 = tmp.path().join(format!("{arch}-F16.gguf"));
        to_gguf(&src, &f16, &gguf_opts(GgufFileType::F16)).unwrap();
        check(&mut peer, "llama_cpp", &format!("{arch} gguf-F16"), &f16, 0.3);
        same_as_llama_cpp(&mut peer, &src, arch, GgufFileType::Q8_0, tmp.path());
        let mlx = tmp.path().join(format!("{arch}-mlx-q4"));
        to_mlx(&src, &mlx, &f32_mlx(q4, None)).unwrap();
        check(&mut peer, "mlx", &format!("{arch} mlx-q4g32-f32"), &mlx, 1e-3);
        let mixed = tmp.path().join(format!("{arch}-mlx-mixed"));
        to_mlx(
            &src,
            &mixed,
            &MlxOptions { dtype: Some(FloatType::BF16), quantize: q4, recipe: Some(Recipe::Mixed3_6), ..Default::default() },
        )
        .unwrap();
        check(&mut peer, "mlx", &format!("{arch} mlx-mixed_3_6-bf16"), &mixed, 0.6);
        if arch != "phi3" {
            // From llama.cpp's file back to Hugging Face.
            let gguf = tmp.path().join(format!("{arch}-F16.gguf"));
            let hf = tmp.path().join(format!("{arch}-hf"));
            to_hf(&gguf, &hf, &MlxOptions::default()).unwrap();
            check(&mut peer, "transformers", &format!("{arch} hf-from-gguf"), &hf, 1e-3);
        }
    }

    // SmolLM2: GGUF Q4_1 → HF float32 → transformers; → MLX groups of 32 → mlx-lm; HF → GGUF.
    let smol = hearth_store::installed_model("smollm2").expect("SmolLM2 is installed (scripts/fetch-test-models.sh)");
    let hf = tmp.path().join("smol-hf");
    to_hf(&smol, &hf, &MlxOptions::default()).unwrap();
    check(&mut peer, "transformers", "smollm2 hf-f32", &hf, 1e-3);
    let mlx = tmp.path().join("smol-mlx");
    to_mlx(&smol, &mlx, &MlxOptions { quantize: q4, ..Default::default() }).unwrap();
    check(&mut peer, "mlx", "smollm2 mlx-q4g32-kept", &mlx, 1e-3);
    for ty in [GgufFileType::Q8_0, GgufFileType::Q4KM] {
        same_as_llama_cpp(&mut peer, &hf, "smol", ty, tmp.path());
    }

    // Perplexity on a fixed text: Hearth's Q8_0 (GGUF → HF float32 → GGUF Q8_0) against llama.cpp's
    // own Q8_0 of the same float32 file (llama_model_quantize), both evaluated by llama.cpp.
    let theirs = tmp.path().join("smol-llama.cpp-Q8_0.gguf");
    let text: String =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap().chars().take(3000).collect();
    let m = hearth_engine::LoadedModel::load(&hf).unwrap();
    let ids = m.tokenizer.encode(&text, true).unwrap();
    let ppl = |peer: &mut Peer, path: &Path| {
        peer.ask(json!({"tool": "llama_cpp", "model": path, "ids": ids, "nll": true}))["nll"].as_f64().unwrap().exp()
    };
    let (ours, llama) = (ppl(&mut peer, &tmp.path().join("smol-hearth-Q8_0.gguf")), ppl(&mut peer, &theirs));
    eprintln!(
        "perplexity over {} tokens: Hearth Q8_0 {ours:.4}, llama.cpp Q8_0 {llama:.4} ({:+.3}%)",
        ids.len(),
        100.0 * (ours / llama - 1.0)
    );
    assert!((ours / llama - 1.0).abs() < 0.01, "{ours} vs {llama}");
    eprintln!("worst per tool and output: {worst_by_kind:#?}");

    // A SentencePiece vocabulary (testdata/tiny/spm) as llama.cpp reads it: its ids for each
    // text are Hearth's on the same file, and sentencepiece's own where no special token is in
    // the text (around one, llama.cpp splits first).
    let out = tmp.path().join("spm.gguf");
    to_gguf(&spm_model(tmp.path()), &out, &gguf_opts(GgufFileType::F16)).unwrap();
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(tiny("spm/encoded.json")).unwrap()).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let theirs = peer.ask(json!({"tokenize": out, "texts": texts}));
    let m = hearth_engine::LoadedModel::load(&out).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let ids: Vec<u64> = theirs["ids"][i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let ours: Vec<u64> = m.tokenizer.encode(text, false).unwrap().into_iter().map(u64::from).collect();
        assert_eq!(ours, ids, "{text:?}: Hearth against llama.cpp");
        if !text.contains("<|") {
            assert_eq!(json!(ids), cases[i]["ids"], "{text:?}: llama.cpp against sentencepiece");
        }
    }
    eprintln!("llama_cpp    sentencepiece vocabulary: {} texts tokenized as Hearth does", texts.len());
}
