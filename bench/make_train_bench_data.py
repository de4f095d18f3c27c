#!/usr/bin/env python3
"""Deterministic LoRA-training data for bench/train_bench.sh (python standard library only).

Writes train.jsonl and valid.jsonl in mlx-lm's `text` format ({"text": ...}) into OUT_DIR:
simple English sentences assembled from a fixed word list with a seeded random.Random. Every
word below is a single SmolLM2 token in the form it is used in (" word", and the capitalised
determiners also at the very start of a record), and "." is one token, so each record is exactly
--tokens tokens of SmolLM2's tokenizer (no BOS is added by it); the trainers append EOS, making
256 by default, so mlx-lm's and Hearth's padding (to 1 + 32·⌈longest/32⌉ = 257) and PEFT's (to
the longest, 256) cover the same positions. bench/train_peft.py prints the actual counts.

    bench/make_train_bench_data.py OUT_DIR [--train 64] [--valid 8] [--tokens 255] [--seed 0]
"""
import argparse
import json
import os
import random

DETS = "the a this that every each some one no another".split()
ADJS = ("old new small large quiet bright dark warm cold green red blue long short young early "
        "late simple strong soft heavy light clear open busy happy").split()
NOUNS = ("house river city garden window teacher student child bird dog cat tree road book letter "
         "table door market village bridge station kitchen mountain forest field farmer doctor "
         "friend voice story song ship train car boat horse morning evening winter summer").split()
VERBS = ("found saw made built opened closed carried watched followed brought left kept held moved "
         "painted cleaned crossed visited reached passed").split()
PREPS = "near behind under over beside across through into from with".split()
ADVS = "slowly quickly often never always again later today".split()


def sentence(rng):
    """A list of words (each one token); the caller adds the period (one more token)."""
    words = [rng.choice(DETS).capitalize()]
    if rng.random() < 0.6:
        words.append(rng.choice(ADJS))
    words += [rng.choice(NOUNS), rng.choice(VERBS), rng.choice(DETS)]
    if rng.random() < 0.5:
        words.append(rng.choice(ADJS))
    words.append(rng.choice(NOUNS))
    if rng.random() < 0.5:
        words += [rng.choice(PREPS), rng.choice(DETS), rng.choice(NOUNS)]
    if rng.random() < 0.3:
        words.append(rng.choice(ADVS))
    return words


def record(rng, tokens):
    parts, budget = [], tokens
    while budget > 0:
        words = sentence(rng)
        if len(words) + 1 > budget:
            # Cut the last sentence to fit; a lone token left over is one more word.
            words = words[: budget - 1] if budget > 1 else [rng.choice(ADVS)]
        text = " ".join(words)
        budget -= len(words)
        if budget > 0:
            text += "."
            budget -= 1
        parts.append(text)
    return " ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--valid", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=255, help="tokens per record, before EOS")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, n in (("train", args.train), ("valid", args.valid)):
        tmp = os.path.join(args.out_dir, f".{name}.jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for _ in range(n):
                f.write(json.dumps({"text": record(rng, args.tokens)}) + "\n")
        os.replace(tmp, os.path.join(args.out_dir, f"{name}.jsonl"))


if __name__ == "__main__":
    main()
