#!/usr/bin/env bash
# Embedding throughput of Hearth against sentence-transformers (torch CPU, 2 threads, batch 32)
# on the same 1000 ~30-word sentences; prints sentences/s, the ratio, single-query p50 latency
# and peak RSS. sentence-transformers goes into a scratch virtualenv outside the repository
# ($HEARTH_EMBED_BENCH_VENV, default ~/.cache/hearth-bench/venv), created on first use.
#
#   bench/embed_bench.sh [model-dir] [--embed-precision int8]
#                                         (default: all-MiniLM-L6-v2 from fetch-test-models.sh)
# On an AVX-512 machine, HEARTH_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 compares the AVX2 paths.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_DIR=${HEARTH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth}/models/all-MiniLM-L6-v2
if [[ $# -gt 0 && "$1" != -* ]]; then MODEL_DIR="$1"; shift; fi
VENV=${HEARTH_EMBED_BENCH_VENV:-$HOME/.cache/hearth-bench/venv}
[ -f "$MODEL_DIR/model.safetensors" ] || { echo "no model at $MODEL_DIR (run scripts/fetch-test-models.sh)" >&2; exit 1; }

if ! "$VENV/bin/python" -c "import torch, sentence_transformers" 2>/dev/null; then
    python3 -m venv "$VENV"
    # PyPI's torch wheel lists the CUDA runtime as dependencies; the CPU needs only these.
    "$VENV/bin/pip" install -q --no-deps torch
    "$VENV/bin/pip" install -q filelock typing-extensions sympy networkx jinja2 fsspec
    "$VENV/bin/pip" install -q sentence-transformers
fi

cargo build --release -q -p hearth-cli
"$VENV/bin/python" bench/embed_bench.py --hearth target/release/hearth --model-dir "$MODEL_DIR" --threads 2 --batch-size 32 "$@"
