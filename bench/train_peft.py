#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training on mlx-lm `text` data, the baseline of bench/train_bench.sh.

The settings mirror `mlx_lm.lora` (and so `hearth train`): LoRA rank r on the given linears of
every block with alpha = scale·r (PEFT multiplies by alpha/r, mlx-lm by its scale), no dropout,
Adam, batches of records sorted by length (the last incomplete one dropped) in a seeded order,
each record's tokens plus EOS. Rows are padded to the longest in the batch and the loss counts
only real targets (a row of n tokens has n-1); right padding under the causal mask changes no
real position, so no attention mask is passed (as mlx-lm does). Trained tokens per step are the
real targets; the first --warmup steps are left out of the median rate.

Prints one line per step and, last, `RESULT median_tok_s=... peak_rss_kb=...`.
"""
import argparse
import json
import os
import random
import resource
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

KEYS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a float32 Hugging Face directory")
    ap.add_argument("--data", required=True, help="directory with train.jsonl")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--keys", default=KEYS, help="comma-separated module names")
    ap.add_argument("--learning-rate", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seq-length", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adapter-path", default=None, help="save the adapter here at the end")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    tok = AutoTokenizer.from_pretrained(args.model)
    records = []
    for line in open(os.path.join(args.data, "train.jsonl"), encoding="utf-8"):
        ids = tok.encode(json.loads(line)["text"])
        if not ids or ids[-1] != tok.eos_token_id:
            ids.append(tok.eos_token_id)
        records.append(ids[: args.max_seq_length])
    lengths = [len(r) for r in records]
    print(f"records: {len(records)}, tokens each (with EOS): min {min(lengths)}, "
          f"median {statistics.median(lengths)}, max {max(lengths)}", flush=True)

    order = sorted(range(len(records)), key=lambda i: lengths[i])
    bs = args.batch_size
    batches = [order[i: i + bs] for i in range(0, len(order) - bs + 1, bs)]
    if not batches:
        raise SystemExit(f"fewer than {bs} records")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def tensors(batch):
        longest = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), longest - 1), dtype=torch.bool)
        for row, i in enumerate(batch):
            ids[row, : lengths[i]] = torch.tensor(records[i])
            mask[row, : lengths[i] - 1] = True
        return ids[:, :-1], ids[:, 1:], mask

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = LoraConfig(
        r=args.rank,
        lora_alpha=args.scale * args.rank,
        target_modules=args.keys.split(","),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    model.print_trainable_parameters()
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)

    rng = random.Random(args.seed)
    schedule = []
    rates = []
    trained = 0
    for it in range(1, args.iters + 1):
        if not schedule:
            schedule = rng.sample(batches, len(batches))
        inputs, targets, mask = tensors(schedule.pop())
        start = time.perf_counter()
        logits = model(input_ids=inputs).logits
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).reshape(targets.shape)
        ntoks = int(mask.sum())
        loss = (ce * mask).sum() / ntoks
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        secs = time.perf_counter() - start
        trained += ntoks
        rate = ntoks / secs
        if it > args.warmup:
            rates.append(rate)
        print(f"Step {it}: Train loss {loss.item():.3f}, Sec {secs:.3f}, Tokens/sec {rate:.3f}, "
              f"Trained Tokens {trained}", flush=True)

    if args.adapter_path:
        model.save_pretrained(args.adapter_path)
    median = statistics.median(rates) if rates else float("nan")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"RESULT median_tok_s={median:.3f} steps_timed={len(rates)} peak_rss_kb={peak_kb}", flush=True)


if __name__ == "__main__":
    main()
