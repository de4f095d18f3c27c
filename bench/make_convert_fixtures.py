"""Reference outputs for `hearth convert` / `hearth fuse` tests, made by the tools Hearth must agree
with, from the tiny fixtures in testdata/tiny. Stages (run each in an environment that has its tool):

  mlx   (mlx, mlx-lm):  mlx/llama-mixed_3_6-g32-bf16   mlx_lm.convert --quant-predicate mixed_3_6
                        lora/fused-q4g32                 mlx_lm.fuse of lora/adapters into mlx/llama-q4g32-bf16
                        lora/dora-adapters, lora/dora-fused/touched.safetensors
                                                         mlx_lm.lora --fine-tune-type dora (5 steps), mlx_lm.fuse
                                                         (only the weights of the layers the adapter touches)
  peft  (torch, transformers, peft):
                        lora/peft-lora, lora/peft-dora   PEFT adapters (random A and B; DoRA's magnitudes moved off their
                                                         initial norms) on hf/llama, and
                                                         merge_and_unload()'s weights for the layers they touch

  spm   (sentencepiece):  spm/tokenizer.model, spm/encoded.json
                                                         a 400-piece byte-fallback BPE SentencePiece model
                                                         (Llama 2 style: identity normaliser, spaces kept) trained on testdata's
                                                         Vaswani abstracts, and its ids for a few texts

usage: python bench/make_convert_fixtures.py mlx|peft|spm
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TINY = Path(__file__).resolve().parent.parent / "testdata" / "tiny"


def with_tokenizer(model: Path, source: Path, into: Path) -> Path:
    """A copy of `model` with `source`'s tokenizer.json (the mlx fixtures ship without it)."""
    shutil.copytree(model, into)
    shutil.copy(source / "tokenizer.json", into / "tokenizer.json")
    return into


def slim(out: Path):
    """Drop what the tests do not need (the tokenizer is the source's)."""
    for name in ["tokenizer.json", "README.md"]:
        (out / name).unlink(missing_ok=True)


def mlx_stage():
    py = sys.executable
    out = TINY / "mlx" / "llama-mixed_3_6-g32-bf16"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([py, "-m", "mlx_lm", "convert", "--hf-path", str(TINY / "hf/llama"), "--mlx-path", str(out), "-q",
                    "--quant-predicate", "mixed_3_6", "--q-group-size", "32", "--dtype", "bfloat16"], check=True)
    slim(out)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = with_tokenizer(TINY / "mlx/llama-q4g32-bf16", TINY / "hf/llama", tmp / "q4")
        out = TINY / "lora" / "fused-q4g32"
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([py, "-m", "mlx_lm", "fuse", "--model", str(base), "--adapter-path", str(TINY / "lora/adapters"),
                        "--save-path", str(out)], check=True)
        slim(out)

        # DoRA: a few steps from the LoRA fixture's config, on hf/llama as float32.
        f32 = tmp / "f32"
        subprocess.run([py, "-c", f"""
import mlx.core as mx
from mlx_lm.utils import load, save
model, tok, config = load("{TINY / 'hf/llama'}", return_config=True)
model.set_dtype(mx.float32)
save("{f32}", "{TINY / 'hf/llama'}", model, tok, config)
"""], check=True)
        cfg = json.loads((TINY / "lora/lora_config.yaml").read_text())
        cfg.update({"model": str(f32), "data": str(TINY / "lora/data"), "fine_tune_type": "dora", "iters": 5,
                    "steps_per_eval": 5, "save_every": 5, "adapter_path": str(TINY / "lora/dora-adapters")})
        (tmp / "dora.yaml").write_text(json.dumps(cfg))
        shutil.rmtree(TINY / "lora/dora-adapters", ignore_errors=True)
        subprocess.run([py, "-m", "mlx_lm", "lora", "-c", str(tmp / "dora.yaml")], check=True)
        for extra in (TINY / "lora/dora-adapters").glob("0*_adapters.safetensors"):
            extra.unlink()
        out = TINY / "lora" / "dora-fused"
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([py, "-m", "mlx_lm", "fuse", "--model", str(f32), "--adapter-path", str(TINY / "lora/dora-adapters"),
                        "--save-path", str(out)], check=True)
        keep_touched(out, TINY / "lora/dora-adapters/adapters.safetensors")


def keep_touched(out: Path, adapter: Path):
    """Only the fused weights of the layers the adapter touches, as `touched.safetensors`."""
    from safetensors.numpy import load_file, save_file
    layers = {k.rsplit(".", 1)[0] for k in load_file(adapter)}
    weights = load_file(out / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k.removesuffix(".weight") in layers}, out / "touched.safetensors")
    for f in list(out.iterdir()):
        if f.name != "touched.safetensors":
            f.unlink()


def peft_stage():
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    for name, dora in [("peft-lora", False), ("peft-dora", True)]:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(TINY / "hf/llama", torch_dtype=torch.float32)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=dora,
                            init_lora_weights=False, task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        if dora:
            # DoRA starts with each magnitude equal to its row's norm (a no-op); move them, as
            # training would.
            with torch.no_grad():
                for key, p in model.named_parameters():
                    if "lora_magnitude_vector" in key:
                        p.mul_(0.75 + 0.5 * torch.rand_like(p))
        out = TINY / "lora" / name
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out / "adapter")
        merged = model.merge_and_unload()
        touched = {k: v.contiguous() for k, v in merged.state_dict().items()
                   if any(m in k for m in config.target_modules) and k.endswith(".weight")}
        save_file(touched, out / "merged.safetensors")
        (out / "adapter" / "README.md").unlink(missing_ok=True)


SPM_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, 12345 digits and\ttabs\nnew lines",
    "<|im_start|>user\nWhat is attention?<|im_end|>",
    "Ünïcödé and emoji 🚀 fall back to bytes",
]


def spm_stage():
    import sentencepiece as spm

    out = TINY / "spm"
    out.mkdir(exist_ok=True)
    text = (TINY.parent / "vaswani" / "doc-text.trec").read_text()[:200_000]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(text)
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "m"), vocab_size=400, model_type="bpe", byte_fallback=True,
            character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            user_defined_symbols=["<|im_start|>", "<|im_end|>"], split_digits=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            minloglevel=2)
        shutil.copy(Path(tmp) / "m.model", out / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    cases = [{"text": t, "ids": sp.encode(t)} for t in SPM_TEXTS]
    (out / "encoded.json").write_text(json.dumps({"sentencepiece": spm.__version__, "cases": cases}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    {"mlx": mlx_stage, "peft": peft_stage, "spm": spm_stage}[sys.argv[1]]()
