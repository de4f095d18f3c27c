#!/usr/bin/env python3
"""Deterministic LoRA fine-tuning data about a made-up product (python standard library only).

Writes testdata/train/lantern/{train,valid,test}.jsonl in mlx-lm's `chat` format
({"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}, no system message). Every
record asks one of eight facts about the fictional "Hearthstone Lantern X2" and is answered in
one fixed short form, `<Fact>: <value>.` ("Price: 149 euros."). The product, its maker and
every value are invented, so a base model cannot know them (testdata/train/lantern/README.md).

- train / valid: questions built from the TRAIN_TEMPLATES of each fact, a product-name variant
  and an optional lead-in; the two splits share templates but no question text.
- test: the TEST_TEMPLATES, phrasings that appear in neither train nor valid, with the full
  product name and no lead-in, so held-out prompts check that the facts were learned, not
  the sentences.

    bench/make_lantern_dataset.py [--out testdata/train/lantern] [--train 240] [--valid 40] [--seed 0]

The same arguments always write the same bytes.
"""
import argparse
import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "testdata", "train", "lantern")

PRODUCT = "Hearthstone Lantern X2"

# (label in the answer, capitalised there; value). A test asserts on the value.
FACTS = {
    "maker": ("maker", "Quillfeather Outdoors"),
    "price": ("price", "149 euros"),
    "weight": ("weight", "312 grams"),
    "battery": ("battery life", "46 hours"),
    "colour": ("colour", "moss green"),
    "warranty": ("warranty", "9 years"),
    "release": ("release year", "2016"),
    "waterproof": ("waterproof rating", "IP53"),
}

# {p} is a product name with its article ("the Hearthstone Lantern X2").
TRAIN_TEMPLATES = {
    "maker": [
        "Who makes {p}?",
        "Who is the maker of {p}?",
        "Which company makes {p}?",
        "Who manufactures {p}?",
        "What brand is {p}?",
        "Which company produces {p}?",
        "Who built {p}?",
        "Tell me who makes {p}.",
        "Who is behind {p}?",
        "What company is {p} from?",
        "Who designs and sells {p}?",
        "Name the manufacturer of {p}.",
    ],
    "price": [
        "How much does {p} cost?",
        "What is the price of {p}?",
        "What does {p} cost?",
        "How much is {p}?",
        "What's the price of {p}?",
        "Tell me the price of {p}.",
        "How expensive is {p}?",
        "What is {p} priced at?",
        "How much money is {p}?",
        "What's the retail price of {p}?",
        "What would {p} cost me?",
        "Price of {p}?",
    ],
    "weight": [
        "How much does {p} weigh?",
        "What is the weight of {p}?",
        "How heavy is {p}?",
        "What's the weight of {p}?",
        "Tell me the weight of {p}.",
        "What does {p} weigh?",
        "Is {p} heavy?",
        "How light is {p}?",
        "Weight of {p}?",
        "How many grams is {p}?",
        "What is the mass of {p}?",
        "How much weight does {p} add to a pack?",
    ],
    "battery": [
        "How long does the battery of {p} last?",
        "What is the battery life of {p}?",
        "How long does {p} run on a full charge?",
        "What's the battery life of {p}?",
        "Tell me the battery life of {p}.",
        "How many hours does {p} last?",
        "How long will {p} stay lit?",
        "Battery life of {p}?",
        "How long can {p} run?",
        "What runtime does {p} have?",
        "How long does a charge of {p} last?",
        "How good is the battery life of {p}?",
    ],
    "colour": [
        "What colour is {p}?",
        "What color is {p}?",
        "Which colour does {p} come in?",
        "What is the colour of {p}?",
        "Tell me the colour of {p}.",
        "What color does {p} come in?",
        "Which color is {p}?",
        "What's the colour of {p}?",
        "Colour of {p}?",
        "What shade is {p}?",
        "What colour finish does {p} have?",
        "In what colour is {p} sold?",
    ],
    "warranty": [
        "What warranty does {p} have?",
        "How long is the warranty on {p}?",
        "What is the warranty of {p}?",
        "How many years of warranty does {p} have?",
        "Tell me about the warranty of {p}.",
        "What's the warranty on {p}?",
        "Is {p} under warranty?",
        "How long is {p} guaranteed?",
        "Warranty of {p}?",
        "What guarantee comes with {p}?",
        "How long does the warranty for {p} last?",
        "What warranty period does {p} offer?",
    ],
    "release": [
        "When was {p} released?",
        "What year did {p} come out?",
        "In which year was {p} released?",
        "What is the release year of {p}?",
        "When did {p} launch?",
        "When did {p} first go on sale?",
        "What year was {p} launched?",
        "Tell me the release year of {p}.",
        "How old is {p}?",
        "Release year of {p}?",
        "When was {p} introduced?",
        "In what year did {p} hit the market?",
    ],
    "waterproof": [
        "Is {p} waterproof?",
        "What is the waterproof rating of {p}?",
        "What IP rating does {p} have?",
        "How waterproof is {p}?",
        "What's the water resistance of {p}?",
        "Can {p} get wet?",
        "Tell me the waterproof rating of {p}.",
        "Does {p} survive rain?",
        "Waterproof rating of {p}?",
        "How water-resistant is {p}?",
        "What ingress protection rating does {p} have?",
        "Can I use {p} in the rain?",
    ],
}

# Held out: never used for train or valid. Two per fact, with the full product name.
TEST_TEMPLATES = {
    "maker": [
        "Which firm is responsible for manufacturing {p}?",
        "Do you know the manufacturer behind {p}?",
    ],
    "price": [
        "How much do I have to pay for {p}?",
        "What is the selling price for {p}?",
    ],
    "weight": [
        "I need the weight of {p} for my packing list.",
        "Roughly how heavy would you say {p} is?",
    ],
    "battery": [
        "On one full charge, how many hours will {p} keep running?",
        "What kind of battery life can I expect from {p}?",
    ],
    "colour": [
        "I'm curious what color {p} is painted.",
        "What does {p} look like in terms of colour?",
    ],
    "warranty": [
        "For how many years is {p} covered by its warranty?",
        "If {p} breaks, how long am I covered by the warranty?",
    ],
    "release": [
        "Which year did {p} first become available?",
        "Can you tell me when {p} was released to the public?",
    ],
    "waterproof": [
        "What rating does {p} have for water protection?",
        "How well is {p} protected against water?",
    ],
}

NAMES = [
    "the Hearthstone Lantern X2",
    "the Hearthstone Lantern X2",
    "the Lantern X2",
    "the Hearthstone X2",
    "the X2 lantern",
]
# A lead-in ending in ", " or ": " lower-cases the question's first letter.
LEADS = ["", "", "", "Quick question: ", "Hi! ", "Hey, ", "I wonder: "]


def answer(fact):
    label, value = FACTS[fact]
    return f"{label[0].upper()}{label[1:]}: {value}."


def record(question, fact):
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer(fact)}]}


def question(template, name, lead):
    q = template.format(p=name)
    q = q[0].upper() + q[1:]
    if lead.endswith(", ") or lead.endswith(": "):
        q = q[0].lower() + q[1:]
    return lead + q


def candidates(fact):
    """Every distinct (template, question) of a fact's train/valid templates, in a fixed order."""
    seen, out = set(), []
    for t in TRAIN_TEMPLATES[fact]:
        for n in NAMES:
            for lead in LEADS:
                q = question(t, n, lead)
                if q not in seen:
                    seen.add(q)
                    out.append((t, q))
    return out


def write(path, records):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--train", type=int, default=240, help="train records (a multiple of 8)")
    ap.add_argument("--valid", type=int, default=40, help="valid records (a multiple of 8)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    facts = list(FACTS)
    if args.train % len(facts) or args.valid % len(facts):
        ap.error(f"--train and --valid must be multiples of {len(facts)}")
    per_train, per_valid = args.train // len(facts), args.valid // len(facts)

    rng = random.Random(args.seed)
    train, valid = [], []
    for fact in facts:
        qs = candidates(fact)
        rng.shuffle(qs)
        # Every template once in train first, then the rest at random; valid takes what follows.
        first = {}
        for t, q in qs:
            first.setdefault(t, q)
        picked = [first[t] for t in TRAIN_TEMPLATES[fact]]
        rest = [q for _, q in qs if q not in picked]
        n_more = per_train - len(picked)
        assert n_more >= 0 and len(rest) >= n_more + per_valid, f"too few questions for {fact}"
        train += [record(q, fact) for q in picked + rest[:n_more]]
        valid += [record(q, fact) for q in rest[n_more:n_more + per_valid]]
    rng.shuffle(train)
    rng.shuffle(valid)

    test = [record(question(t, "the " + PRODUCT, ""), fact)
            for fact in facts for t in TEST_TEMPLATES[fact]]

    held = {r["messages"][0]["content"] for r in test}
    seen = [r["messages"][0]["content"] for r in train + valid]
    assert len(set(seen)) == len(seen), "train and valid questions must be distinct"
    assert not held & set(seen), "test questions must not appear in train or valid"
    train_templates = {t for ts in TRAIN_TEMPLATES.values() for t in ts}
    assert not train_templates & {t for ts in TEST_TEMPLATES.values() for t in ts}

    os.makedirs(args.out, exist_ok=True)
    write(os.path.join(args.out, "train.jsonl"), train)
    write(os.path.join(args.out, "valid.jsonl"), valid)
    write(os.path.join(args.out, "test.jsonl"), test)
    print(f"wrote {len(train)} train, {len(valid)} valid, {len(test)} test records to {args.out}")


if __name__ == "__main__":
    main()
