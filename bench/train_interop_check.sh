#!/usr/bin/env bash
# Adapters `hearth train` writes, loaded by the tools they are for (not a test: it needs the
# outside tools' virtualenv, VENV, with llama-cpp-python, torch, transformers and peft):
#  - --format gguf on the tiny Llama GGUF, in llama.cpp (llama-cpp-python's lora_path), against
#    llama.cpp running the same run's mlx-lm adapter fused by `hearth fuse`;
#  - --format peft on the tiny Llama, in transformers + PEFT (PeftModel.from_pretrained),
#    against transformers running the fused Hugging Face model;
#  - the default (mlx-lm's layout) in mlx-lm (mlx_lm.load(adapter_path=...)), against the same.
# Prints the largest logit differences; the adapters move the logits by ~10, so differences
# at float16 rounding (~1e-2) mean the layouts are right.
set -euo pipefail
cd "$(dirname "$0")/.."
HEARTH=${HEARTH:-target/release/hearth}
VENV=${VENV:-target/outside-venv}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export HEARTH_HOME=$WORK/home
train() { # model format dir
    "$HEARTH" train -m "$1" --data testdata/tiny/lora/data --adapter-path "$3" --iters 30 \
        --learning-rate 1e-3 --rank 4 --num-layers -1 --format "$2" --steps-per-eval 1000 --val-batches 1 >/dev/null
}
GGUF=testdata/tiny/gguf/llama-F16.gguf
train "$GGUF" gguf "$WORK/gguf"
train "$GGUF" mlx "$WORK/mlx-gguf"
"$HEARTH" fuse -m "$GGUF" --adapter "$WORK/mlx-gguf" --to gguf --no-register --out "$WORK/fused.gguf" >/dev/null
HF=testdata/tiny/hf/llama
train "$HF" peft "$WORK/peft"
train "$HF" mlx "$WORK/mlx-hf"
"$HEARTH" fuse -m "$HF" --adapter "$WORK/mlx-hf" --to hf --dtype float32 --no-register --out "$WORK/fused-hf" >/dev/null
"$VENV/bin/python" - "$WORK" "$GGUF" "$HF" <<'PY'
import sys, numpy as np, torch
from llama_cpp import Llama
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
work, gguf, hf = sys.argv[1:4]
prompt = "<|im_start|>user\nWhat is 50 plus 29?<|im_end|>\n<|im_start|>assistant\n"
def llama(path, lora=None):
    m = Llama(model_path=path, lora_path=lora, logits_all=True, verbose=False, n_ctx=128, n_threads=2)
    toks = m.tokenize(prompt.encode(), add_bos=False, special=True)
    m.eval(toks)
    return np.array(m.scores[:len(toks)])
base, lora, fused = llama(gguf), llama(gguf, f"{work}/gguf/adapters.gguf"), llama(f"{work}/fused.gguf")
print(f"llama.cpp, --format gguf: |lora - fused| {np.abs(lora - fused).max():.4f} "
      f"(the adapter moves logits by {np.abs(fused - base).max():.2f})")
ids = AutoTokenizer.from_pretrained(hf)(prompt, return_tensors="pt").input_ids
def hf_logits(model):
    with torch.no_grad():
        return model(ids).logits[0].float().numpy()
base_model = AutoModelForCausalLM.from_pretrained(hf, torch_dtype=torch.float32)
plain = hf_logits(base_model)
peft = hf_logits(PeftModel.from_pretrained(base_model, f"{work}/peft"))
fused = hf_logits(AutoModelForCausalLM.from_pretrained(f"{work}/fused-hf", torch_dtype=torch.float32))
print(f"PEFT, --format peft: |peft - fused| {np.abs(peft - fused).max():.5f} "
      f"(the adapter moves logits by {np.abs(fused - plain).max():.2f})")
import mlx.core as mx
from mlx_lm import load
model, _ = load(hf, adapter_path=f"{work}/mlx-hf")
mlx = np.array(model(mx.array(ids.numpy())).astype(mx.float32))[0]
print(f"mlx-lm, --format mlx: |mlx-lm - fused| {np.abs(mlx - fused).max():.5f}")
PY
