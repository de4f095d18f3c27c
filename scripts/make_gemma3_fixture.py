"""Makes testdata/tiny/hf/gemma3 (a random-weight Gemma3ForCausalLM) and its transformers
reference testdata/tiny/refs/gemma3.json, in the form of testdata/tiny/refs/hf.json's records.

Run from the repository root in a virtual environment with torch, transformers and safetensors
(CPU wheels from PyPI):  python scripts/make_gemma3_fixture.py

The model: hidden 64, 4 layers (sliding, sliding, full, sliding), 4 query heads, 2 KV heads,
head_dim 16, intermediate 128, sliding window 4 (every prompt is longer), local RoPE base 10,000,
global base 1,000,000 with linear scaling 8, query scale 32^-0.5, q/k norms, the SmolLM2
tokenizer. Norm weights are random too, so that the (1 + w) offset matters. Seeds are searched
until every greedy step's top-1 minus top-2 logit is at least 0.02, as for the other tiny models.
"""

import json
import shutil
from pathlib import Path

import torch
import transformers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "testdata" / "tiny"
OUT = TINY / "hf" / "gemma3"
MIN_MARGIN = 0.02


def config():
    return Gemma3TextConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        sliding_window=4,
        query_pre_attn_scalar=32,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
        dtype="float32",
    )


def model(seed):
    torch.manual_seed(seed)
    m = Gemma3ForCausalLM(config()).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(-0.5, 0.5)
            else:
                p.normal_(0.0, 0.15)
    return m


def last_logits(m, ids):
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0, -1]


def top20(logits):
    v, i = logits.topk(20)
    return {"ids": i.tolist(), "logits": [round(x, 6) for x in v.tolist()]}


def greedy(m, ids, n=16):
    """n greedy tokens, each from a full forward pass (no cache), with each step's margin."""
    ids, out, margins = list(ids), [], []
    for _ in range(n):
        top = last_logits(m, ids).topk(2)
        out.append(top.indices[0].item())
        margins.append(round((top.values[0] - top.values[1]).item(), 6))
        ids.append(out[-1])
    return out, margins


def main():
    prompts = json.loads((TINY / "prompts.json").read_text())
    for seed in range(100):
        m = model(seed)
        cases = []
        for index, ids in enumerate(prompts["ids"]):
            tokens, margins = greedy(m, ids)
            cached = m.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, min_new_tokens=16)[0, len(ids) :]
            cases.append(
                {
                    "prompt_index": index,
                    "ids": ids,
                    "last_logits_top20": top20(last_logits(m, ids)),
                    "greedy16": tokens,
                    "greedy16_top1_minus_top2": margins,
                    "generate_with_kv_cache_agrees": cached.tolist() == tokens,
                }
            )
        margin = min(min(c["greedy16_top1_minus_top2"]) for c in cases)
        if margin >= MIN_MARGIN:
            break
    print(f"seed {seed}: min greedy margin {margin}")
    if OUT.exists():
        shutil.rmtree(OUT)
    m.save_pretrained(OUT)
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(TINY / "hf" / "gemma2" / name, OUT / name)
    refs = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "class": "Gemma3ForCausalLM",
        "seed": seed,
        "min_greedy_margin": margin,
        "cases": cases,
        "p0_full_last_logits": [round(x, 6) for x in last_logits(m, prompts["ids"][0]).tolist()],
    }
    (TINY / "refs" / "gemma3.json").write_text(json.dumps(refs, indent=1) + "\n")


if __name__ == "__main__":
    main()
