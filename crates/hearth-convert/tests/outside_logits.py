"""What the peers compute on a model Hearth wrote, for tests/outside_tools.rs.

Reads JSON lines on stdin, each {"tool": "transformers"|"mlx"|"llama_cpp", "model": PATH, "ids": [...],
"nll": bool}, and prints one JSON line per request: {"logits": [...]} (the last position), or with
"nll" {"nll": mean negative log-likelihood of ids[1:]} (for perplexity). A request
{"quantize": PATH, "out": PATH, "type": "Q8_0"} runs llama.cpp's own quantiser (llama-quantize);
{"tokenize": PATH, "texts": [...]} gives llama.cpp's token ids of each text (special tokens
parsed, no BOS).
"""

import json
import sys

import numpy as np


def transformers_logits(path, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def mlx_logits(path, ids):
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(path)
    out = model(mx.array([ids]))[0].astype(mx.float32)
    return np.array(out)


def llama_cpp_logits(path, ids):
    from llama_cpp import Llama

    llm = Llama(path, n_ctx=max(512, len(ids) + 8), logits_all=True, verbose=False, n_threads=2, n_batch=512)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


TOOLS = {"transformers": transformers_logits, "mlx": mlx_logits, "llama_cpp": llama_cpp_logits}

def llama_quantize(src, out, type_name):
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name}")
    assert llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(params)) == 0


for line in sys.stdin:
    req = json.loads(line)
    if "tokenize" in req:
        from llama_cpp import Llama

        llm = Llama(req["tokenize"], vocab_only=True, verbose=False)
        print(json.dumps({"ids": [llm.tokenize(t.encode(), add_bos=False, special=True) for t in req["texts"]]}), flush=True)
        continue
    if "quantize" in req:
        llama_quantize(req["quantize"], req["out"], req["type"])
        print(json.dumps({"done": True}), flush=True)
        continue
    logits = TOOLS[req["tool"]](req["model"], req["ids"]).astype(np.float64)
    if req.get("nll"):
        ids = np.array(req["ids"])
        shifted = logits[:-1] - logits[:-1].max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        print(json.dumps({"nll": float(-logp[np.arange(len(ids) - 1), ids[1:]].mean())}), flush=True)
    else:
        print(json.dumps({"logits": logits[-1].tolist()}), flush=True)
