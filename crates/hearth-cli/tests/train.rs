//! `hearth train` as a user runs it: the tiny Llama fine-tuned on the fixtures' chat data with
//! mlx-lm's settings for it (testdata/tiny/lora/lora_config.yaml, given as a YAML -c file), its report lines, its
//! adapters loaded by the engine and fused by `hearth fuse` into a model that runs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// `hearth train` of `model` on the fixtures' chat data into `adapters`.
fn train_on_chat(home: &Path, model: &Path, adapters: &Path) -> std::process::Command {
    let mut cmd = hearth(home);
    cmd.args(["train", "-m"]).arg(model).arg("--data").arg(tiny("lora/data")).arg("--adapter-path").arg(adapters);
    cmd
}

/// The validation losses a run reported, in order.
fn val_losses(out: &str) -> Vec<f32> {
    out.lines().filter_map(|l| l.split("Val loss ").nth(1)).map(|rest| rest.split(',').next().unwrap().parse().unwrap()).collect()
}

#[test]
fn a_fine_tune_trains_saves_and_fuses() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let adapters = tmp.path().join("adapters");
    // mlx-lm's YAML keys; the command line's --iters 30 beats the file's 3, and its -m, --data
    // and --adapter-path beat the file's paths.
    let config = tmp.path().join("lora_config.yaml");
    std::fs::write(
        &config,
        "# as mlx-lm's examples/lora_config.yaml spells it\nmodel: \"elsewhere\"\ntrain: true\nfine_tune_type: lora\n\
         optimizer: adam\ndata: \"elsewhere\"\nseed: 0\nnum_layers: -1\nbatch_size: 4\niters: 3\nval_batches: -1\n\
         learning_rate: 1e-3\nsteps_per_report: 5\nsteps_per_eval: 10\nadapter_path: \"elsewhere\"\nsave_every: 30\n\
         max_seq_length: 512\ngrad_checkpoint: true\nlora_parameters:\n  rank: 4\n  dropout: 0.0\n  scale: 20.0\n",
    )
    .unwrap();
    let out = ok(train_on_chat(&home, &tiny("hf/llama"), &adapters).arg("-c").arg(&config).args(["--iters", "30"]));
    // mlx-lm's own run of this configuration printed the same count (lora/train_log.txt).
    assert!(out.contains("Trainable parameters: 0.254% (0.008M/3.220M)"), "{out}");
    let val = val_losses(&out);
    assert_eq!(val.len(), 4, "validation at iterations 1, 10, 20 and 30:\n{out}");
    assert!(val[3] < val[0] * 0.5, "validation loss falls: {val:?}");
    assert!(out.contains("Iter 5: Train loss") && out.contains("Learning Rate 1.000e-03"), "{out}");
    assert!(out.contains("Saved final weights to"), "{out}");
    for file in ["adapters.safetensors", "adapter_config.json", "0000030_adapters.safetensors"] {
        assert!(adapters.join(file).is_file(), "{file}");
    }

    // The engine serves the adapters, and their update is what training gave.
    use hearth_engine::model::SeqInput;
    use hearth_engine::{LoadOptions, LoadedModel, Precision};
    let logits = |adapter: Option<&Path>| {
        let opts = LoadOptions { precision: Precision::Exact, adapter: adapter.map(Path::to_path_buf), ..Default::default() };
        let m = LoadedModel::load_with(&tiny("hf/llama"), opts).unwrap();
        let ids = m.tokenizer.encode("<|im_start|>user\nWhat is 50 plus 29?<|im_end|>\n<|im_start|>assistant\n", false).unwrap();
        let mut cache = m.model.new_cache(64).unwrap();
        m.model.forward(&mut [SeqInput::new(&ids, &mut cache)], false).unwrap().swap_remove(0)
    };
    let (base, tuned) = (logits(None), logits(Some(&adapters)));
    assert!(base.iter().zip(&tuned).any(|(a, b)| (a - b).abs() > 0.1), "the adapter changes the model");

    // Fused into the base, it runs as the base with the adapter.
    let fused = tmp.path().join("fused");
    ok(hearth(&home).args(["fuse", "-m"]).arg(tiny("hf/llama")).arg("--adapter").arg(&adapters).args(["--to", "hf", "--out"]).arg(&fused));
    let m = LoadedModel::load_with(&fused, LoadOptions { precision: Precision::Exact, ..Default::default() }).unwrap();
    let ids = m.tokenizer.encode("<|im_start|>user\nWhat is 50 plus 29?<|im_end|>\n<|im_start|>assistant\n", false).unwrap();
    let mut cache = m.model.new_cache(64).unwrap();
    let fused_logits = m.model.forward(&mut [SeqInput::new(&ids, &mut cache)], false).unwrap().swap_remove(0);
    let worst = tuned.iter().zip(&fused_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    // hf/llama keeps some weights in float16: the fused weights are rounded to it.
    assert!(worst < 0.05, "fused against served: {worst}");
}

// The real fine-tune of SmolLM2's Q4_1 GGUF on testdata/train/lantern (the base cannot know its
// facts; the adapter answers the held-out phrasings) runs through the hub in
// crates/hearth-server/tests/hub.rs: the same `hearth_train::run` as this command, over HTTP.

/// Killed (SIGKILL) again and again at random moments, checkpoint writes included, and
/// restarted each time with `--resume`, a run ends with the adapters of a run never
/// interrupted, bit for bit; after every kill, what is on disk is whole.
#[test]
fn a_run_killed_again_and_again_ends_as_an_unbroken_one() {
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let run = |dir: &Path| {
        let mut cmd = train_on_chat(&home, &tiny("hf/llama"), dir);
        cmd.args(["--iters", "40", "--save-every", "1", "--learning-rate", "1e-3", "--rank", "4", "--num-layers", "-1"]);
        cmd.args(["--optimizer", "adamw", "--grad-accumulation-steps", "2", "--steps-per-eval", "1000", "--val-batches", "1", "--resume"]);
        cmd
    };
    let unbroken = tmp.path().join("unbroken");
    let started = std::time::Instant::now();
    ok(&mut run(&unbroken));
    let whole_run = started.elapsed();

    let broken = tmp.path().join("broken");
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut kills = 0;
    while kills < 12 {
        let mut child = run(&broken).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(whole_run.mul_f64(rng.random_range(0.02..0.2)));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // Whatever the kill interrupted, a whole checkpoint (or none yet) and whole adapters.
        let checkpoint =
            [broken.join("checkpoint"), broken.join(".checkpoint.old")].into_iter().find(|p| p.join("trainer_state.json").is_file());
        if let Some(c) = checkpoint {
            let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(c.join("trainer_state.json")).unwrap()).unwrap();
            assert!(state["iteration"].as_u64().is_some(), "{state}");
            hearth_train::Lora::load(&c.join("adapters.safetensors"), 20.0).expect("the checkpoint's adapters are whole");
        }
        if broken.join("adapters.safetensors").exists() {
            hearth_train::Lora::load(&broken.join("adapters.safetensors"), 20.0).expect("the saved adapters are whole");
        }
    }
    assert!(kills >= 10, "only {kills} kills landed before the run finished");
    ok(&mut run(&broken));
    let bytes = |dir: &Path| std::fs::read(dir.join("adapters.safetensors")).unwrap();
    assert!(bytes(&broken) == bytes(&unbroken), "after {kills} kills, the adapters differ from the unbroken run's");
}

/// `--format peft` writes what the engine's PEFT reader (checked against PEFT's own merge in the
/// conversion tests) serves as the mlx-lm adapter of the same run; `--format gguf` writes
/// llama.cpp's LoRA layout: its metadata, `[r, in]`/`[out, r]` tensors, Llama's Q/K rows
/// interleaved as the base's are. (bench/train_interop_check.py runs the GGUF one in llama.cpp.)
#[test]
fn adapters_are_written_for_peft_and_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let train = |model: &Path, format: &str| {
        let dir = tmp.path().join(format!("{format}-{}", model.file_name().unwrap().to_string_lossy()));
        ok(train_on_chat(&home, model, &dir).args([
            "--iters",
            "8",
            "--learning-rate",
            "1e-3",
            "--rank",
            "4",
            "--num-layers",
            "-1",
            "--format",
            format,
        ]));
        dir
    };
    use hearth_engine::model::SeqInput;
    use hearth_engine::{LoadOptions, LoadedModel, Precision};
    let logits = |adapter: &Path| {
        let opts = LoadOptions { precision: Precision::Exact, adapter: Some(adapter.to_path_buf()), ..Default::default() };
        let m = LoadedModel::load_with(&tiny("hf/llama"), opts).unwrap();
        let ids = m.tokenizer.encode("<|im_start|>user\nWhat is 50 plus 29?<|im_end|>\n", false).unwrap();
        let mut cache = m.model.new_cache(64).unwrap();
        m.model.forward(&mut [SeqInput::new(&ids, &mut cache)], false).unwrap().swap_remove(0)
    };
    let (mlx, peft) = (train(&tiny("hf/llama"), "mlx"), train(&tiny("hf/llama"), "peft"));
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["peft_type"].as_str(), config["r"].as_u64(), config["lora_alpha"].as_f64()), (Some("LORA"), Some(4), Some(80.0)));
    let worst = logits(&mlx).iter().zip(logits(&peft)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "PEFT's layout serves as mlx-lm's: {worst}");

    let base = tiny("gguf/llama-F16.gguf");
    let (mlx, gguf) = (train(&base, "mlx"), train(&base, "gguf"));
    let file = hearth_formats::gguf::Gguf::open(&gguf.join("adapters.gguf")).unwrap();
    let meta = |k: &str| file.get(k).unwrap_or_else(|| panic!("{k}")).clone();
    assert_eq!(meta("general.type").as_str(), Some("adapter"));
    assert_eq!(meta("adapter.type").as_str(), Some("lora"));
    assert_eq!(meta("adapter.lora.alpha").as_f64(), Some(80.0));
    assert_eq!(meta("general.architecture").as_str(), Some("llama"));
    let trained = hearth_train::Lora::load(&mlx.join("adapters.safetensors"), 20.0).unwrap();
    assert_eq!(file.tensors.len(), 2 * trained.layers.len());
    let rows = |name: &str| {
        let info = file.tensor(name).unwrap_or_else(|| panic!("{name}"));
        let bytes = file.tensor_data(info).unwrap();
        let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let shape = info.shape();
        values.chunks_exact(shape[1]).map(<[f32]>::to_vec).collect::<Vec<_>>()
    };
    // lora_b `[out, r]`: mlx-lm's `[r, out]` transposed; Q's rows in llama.cpp's order.
    let b_rows = |layer: &str| {
        let l = &trained.layers[layer];
        (0..l.b.len() / l.rank).map(|o| (0..l.rank).map(|k| l.b[k * (l.b.len() / l.rank) + o]).collect::<Vec<f32>>()).collect::<Vec<_>>()
    };
    assert_eq!(rows("blk.0.attn_v.weight.lora_b"), b_rows("model.layers.0.self_attn.v_proj"));
    let (q, want) = (rows("blk.0.attn_q.weight.lora_b"), b_rows("model.layers.0.self_attn.q_proj"));
    assert_ne!(q, want, "Q's rows are interleaved");
    let sorted = |mut v: Vec<Vec<f32>>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    };
    assert_eq!(sorted(q), sorted(want), "and only reordered");
    assert_eq!(rows("blk.0.attn_q.weight.lora_a").len(), 4, "lora_a is [r, in]");
}

/// Bad input is refused before anything is written, with the file and line (or the flag and
/// the layer) named.
#[test]
fn bad_input_is_refused_naming_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let adapters = tmp.path().join("adapters");
    let refused = |data: &[(&str, &str)], extra: &[&str], wanted: &str| {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        for (name, text) in data {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let out = hearth(&home)
            .args(["train", "-m"])
            .arg(tiny("hf/llama"))
            .arg("--data")
            .arg(dir.path())
            .arg("--adapter-path")
            .arg(&adapters)
            .args(["--iters", "2", "--batch-size", "1"])
            .args(if extra.contains(&"--num-layers") { &[][..] } else { &["--num-layers", "-1"][..] })
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(wanted), "wanted {wanted:?}, got: {err}");
        assert!(!adapters.exists(), "nothing written for {wanted:?}");
    };
    let good = r#"{"text": "a good record"}"#;
    refused(&[("train.jsonl", &format!("{good}\n{{\"text\": broken\n"))], &[], "train.jsonl:2: expected value");
    refused(&[("train.jsonl", &format!("{good}\n{{\"txt\": \"typo\"}}\n"))], &[], "train.jsonl:2: not a chat (messages), completions");
    refused(&[("train.jsonl", "\n")], &[], "train.jsonl holds no records");
    refused(&[("train.jsonl", good), ("valid.jsonl", "")], &[], "valid.jsonl holds no records");
    let unanswered = r#"{"messages": [{"role": "user", "content": "hello?"}]}"#;
    refused(&[("train.jsonl", unanswered)], &["--mask-prompt"], "train.jsonl:1: a chat without an assistant turn");
    refused(&[("train.jsonl", good)], &["--num-layers", "3"], "--num-layers 3 is more than the model's 2 layers");
    refused(&[("train.jsonl", good)], &["--rank", "100"], "--rank 100 is larger than model.layers.0.");
    // Another model's adapters (a wider Llama's) do not fit this one.
    let wider_adapters = tmp.path().join("wider-adapters");
    ok(train_on_chat(&home, &tiny("gguf/llama256-Q4_K_M.gguf"), &wider_adapters).args(["--iters", "1", "--num-layers", "-1"]));
    let foreign = wider_adapters.join("adapters.safetensors");
    refused(&[("train.jsonl", good)], &["--resume-adapter-file", foreign.to_str().unwrap()], "does not fit");
}

/// `--fine-tune-type dora` trains mlx-lm's DoRA adapters (magnitudes saved as `<layer>.m`, the
/// config says "dora"), and `hearth fuse` merges them into a model that computes what base +
/// adapters computed in training.
#[test]
fn dora_trains_and_fuses() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let adapters = tmp.path().join("dora");
    let out = ok(train_on_chat(&home, &tiny("hf/llama"), &adapters)
        .args(["--fine-tune-type", "dora", "--iters", "20", "--learning-rate", "1e-3", "--rank", "4", "--num-layers", "-1"])
        .args(["--steps-per-eval", "20", "--val-batches", "-1"]));
    let val = val_losses(&out);
    assert!(val.len() == 2 && val[1] < val[0] * 0.6, "validation loss falls: {val:?}");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(adapters.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["fine_tune_type"], "dora");
    let lora = hearth_train::Lora::load(&adapters.join("adapters.safetensors"), 20.0).unwrap();
    assert!(lora.is_dora());

    let fused = tmp.path().join("fused");
    ok(hearth(&home)
        .args(["fuse", "-m"])
        .arg(tiny("hf/llama"))
        .arg("--adapter")
        .arg(&adapters)
        .args(["--to", "hf", "--dtype", "float32", "--out"])
        .arg(&fused));
    use hearth_train::data::{batches, load_split, BatchOrder, Text};
    use hearth_train::loss::Mask;
    let text = Text::load(&tiny("hf/llama")).unwrap();
    let (_, examples) = load_split(&tiny("lora/data"), "valid", &text).unwrap().unwrap();
    let (batches, _) = batches(&examples, 4, 512, false, BatchOrder::Length).unwrap();
    let adapted = hearth_train::TrainModel::load(&tiny("hf/llama")).unwrap().loss(&batches[0], &lora, Mask::MlxLm).unwrap().0;
    let none = hearth_train::Lora { layers: Default::default(), scale: 20.0 };
    let merged = hearth_train::TrainModel::load(&fused).unwrap().loss(&batches[0], &none, Mask::MlxLm).unwrap().0;
    assert!((adapted - merged).abs() <= 1e-4 * adapted, "fused {merged} against base + DoRA {adapted}");
}

// The hub across processes: `hearth dataset` on the command line, then `hearth serve` killed
// (SIGKILL) in the middle of a fine-tuning job and started again: the job resumes from its
// checkpoint and finishes, and the registry, datasets and runs are intact.

/// One HTTP/1.1 exchange over loopback: the status and the JSON body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server process, killed (SIGKILL) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `hearth serve` on `port`, once it answers.
fn serve(home: &Path, port: u16) -> Server {
    let mut child = hearth(home)
        .args(["serve", "--port", &port.to_string(), "--model"])
        .arg(format!("tiny={}", tiny("hf/llama").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while http(port, "GET", "/health", None).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "the server did not start");
        assert!(child.try_wait().unwrap().is_none(), "the server exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

#[test]
fn a_job_resumes_after_the_server_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");

    // Datasets from the command line, checked as the server checks them.
    let add = hearth(&home).args(["dataset", "add", "--name", "chat"]).arg(tiny("lora/data/train.jsonl")).output().unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"prompt\": 1, \"completion\": \"x\"}\n").unwrap();
    let refused = hearth(&home).args(["dataset", "add"]).arg(&bad).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bad.jsonl:2:"), "{}", String::from_utf8_lossy(&refused.stderr));
    let shown = hearth(&home).args(["dataset", "show", "chat", "--model"]).arg(tiny("hf/llama")).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.starts_with("chat: ") && shown.contains("tokens: "), "{shown}");
    let listed = hearth(&home).args(["dataset", "list"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 2, "a header and one dataset");

    let port = free_port();
    let server = serve(&home, port);
    let job = json!({"name": "tuned", "model": "tiny", "dataset": "chat", "train": {
        "iters": 200, "save_every": 20, "steps_per_eval": 5000, "val_batches": 1, "rank": 4, "num_layers": -1, "learning_rate": 1e-3,
    }});
    let (st, job) = http(port, "POST", "/hub/jobs", Some(&job)).unwrap();
    assert_eq!(st, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("/hub/jobs/{id}");
    let started = Instant::now();
    let killed_at = loop {
        let (_, job) = http(port, "GET", &path, None).unwrap();
        let iter = job["iter"].as_u64().unwrap();
        if iter >= 40 {
            assert_eq!(job["status"], "running", "{job}");
            drop(server);
            break iter;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{job}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(killed_at < 200, "killed mid-job");

    let server = serve(&home, port);
    let started = Instant::now();
    let job = loop {
        let (_, job) = http(port, "GET", &path, None).unwrap();
        if job["status"] != "running" && job["status"] != "queued" {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{job}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((job["status"].as_str(), job["iter"].as_u64()), (Some("completed"), Some(200)), "{job}");
    // It went on from its last checkpoint, not from the beginning.
    let log = std::fs::read_to_string(home.join("hub/jobs").join(&id).join("log.txt")).unwrap();
    assert_eq!(log.matches("Starting training").count(), 2, "{log}");
    assert_eq!(log.matches("Iter 20: Saved").count(), 1, "iterations before the last checkpoint are not run again\n{log}");
    let (_, models) = http(port, "GET", "/admin/models?registered_by=hearth-hub", None).unwrap();
    assert_eq!(models["models"].as_array().unwrap().len(), 2, "{models}");
    let (_, datasets) = http(port, "GET", "/hub/datasets", None).unwrap();
    assert_eq!(datasets["datasets"][0]["name"], "chat");
    let (st, reply) =
        http(port, "POST", "/v1/completions", Some(&json!({"model": "tuned", "prompt": "Hello", "max_tokens": 4, "temperature": 0})))
            .unwrap();
    assert_eq!(st, 200, "{reply}");
    drop(server);
    for db in [home.join("hub/hub.db"), home.join("server.db")] {
        assert_eq!(integrity(&db), "ok", "{}", db.display());
    }
}
