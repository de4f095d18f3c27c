#!/usr/bin/env python3
"""Embedding throughput: Hearth against sentence-transformers on the same 1000 sentences.

Run through bench/embed_bench.sh, which prepares the virtualenv and the binary. Each side runs
in its own process (2 threads, sentence-transformers with batch 32) so peak RSS is its own.
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

WORDS = """the a of to and in is was for on that with as by at from it an be this are have
which or one had not but all were they we their there been has more when will would who so
if out up into them time only other new some could these two may then first any my now such
like our over man me even most made after also did many before must through back years where
much your way well down should because each just those people how too little state good very
make world still own see men work long here get both between life being under never day same
another know while last might us great old year off come since against go came right used take
three river city music garden engine water light stone paper window morning evening market
library kitchen mountain forest ocean letter question answer model search memory network server
vector token sentence language machine quickly slowly carefully quietly brightly""".split()


SHORT_QUERY = "What is the capital of France?"


def sentences(n, words=30, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = words + rng.randint(-4, 4)
        s = " ".join(rng.choice(WORDS) for _ in range(k))
        out.append(s[0].upper() + s[1:] + ".")
    return out


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_sentence_transformers(model_dir, path, batch_size, threads):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    texts = open(path, encoding="utf-8").read().splitlines()
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(texts[:64], batch_size=batch_size)
    t0 = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size)
    secs = time.perf_counter() - t0
    query = [SHORT_QUERY]
    lat = []
    for _ in range(200):
        t = time.perf_counter()
        model.encode(query, batch_size=1)
        lat.append((time.perf_counter() - t) * 1e3)
    lat.sort()
    return {
        "inputs": len(texts),
        "seconds": secs,
        "inputs_per_sec": len(texts) / secs,
        "query_p50_ms": lat[len(lat) // 2],
        "peak_rss_bytes": peak_rss(),
        "vectors": vectors.tolist(),
        "torch": torch.__version__,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hearth", required=True, help="the hearth binary")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--embed-precision", default="float", choices=["float", "int8"], help="Hearth's encoder products")
    ap.add_argument("--st-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.st_worker:
        print(json.dumps(run_sentence_transformers(args.model_dir, args.st_worker, args.batch_size, args.threads)))
        return

    texts = sentences(args.count)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sentences.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        hearth_cmd = [args.hearth, "--threads", str(args.threads), "embed", "--model", args.model_dir, "--file", path,
                      "--embed-precision", args.embed_precision]
        hearth = json.loads(subprocess.run(hearth_cmd + ["--bench", "--query", SHORT_QUERY], check=True, capture_output=True, text=True).stdout)
        hearth_vectors = json.loads(subprocess.run(hearth_cmd + ["--json"], check=True, capture_output=True, text=True).stdout)["data"]
        st_cmd = [sys.executable, __file__, "--hearth", args.hearth, "--model-dir", args.model_dir, "--threads", str(args.threads),
                  "--batch-size", str(args.batch_size), "--st-worker", path]
        st = json.loads(subprocess.run(st_cmd, check=True, capture_output=True, text=True, env=env).stdout)

    def cos(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)

    worst = min(cos(h["embedding"], s) for h, s in zip(hearth_vectors, st["vectors"]))
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"{len(texts)} sentences, {words:.1f} words and {hearth['tokens'] / len(texts):.1f} tokens each on average; "
          f"{args.threads} threads; sentence-transformers batch {args.batch_size} (torch {st['torch']}, "
          f"ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', 'default')}); hearth {args.embed_precision} "
          f"(HEARTH_ISA={os.environ.get('HEARTH_ISA', 'default')})")
    print(f"{'':24}{'sentences/s':>12}{'p50 query':>14}{'peak RSS':>12}")
    for name, r in (("hearth", hearth), ("sentence-transformers", st)):
        print(f"{name:24}{r['inputs_per_sec']:12.1f}{r['query_p50_ms']:11.2f} ms{r['peak_rss_bytes'] / 1e6:9.0f} MB")
    print(f"ratio (hearth / sentence-transformers): {hearth['inputs_per_sec'] / st['inputs_per_sec']:.2f}x")
    print(f"lowest cosine similarity between the two sides' vectors: {worst:.6f}")


if __name__ == "__main__":
    main()
