#!/usr/bin/env bash
# Hearth vs llama.cpp on the same GGUF file, prompt length and thread count, in one run.
# A benchmark, not a test: CI does not run it. llama-cpp-python is installed (built from
# source) into a scratch virtualenv outside the repository.
#
#   bench/compare_llamacpp.sh [MODEL.gguf] [-p 512] [-n 128] [-r 5] [-t 2]
set -euo pipefail
cd "$(dirname "$0")/.."

model="$(scripts/fetch-test-models.sh | head -1)"
if [[ $# -gt 0 && "$1" != -* ]]; then model="$1"; shift; fi
p=512 n=128 r=5 t=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    -p) p="$2"; shift 2 ;; -n) n="$2"; shift 2 ;; -r) r="$2"; shift 2 ;; -t) t="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

venv="${HEARTH_BENCH_VENV:-${TMPDIR:-/tmp}/hearth-bench-venv}"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import llama_cpp, numpy" 2>/dev/null; then
  echo "installing llama-cpp-python into $venv (compiles llama.cpp; takes minutes)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "llama-cpp-python==0.3.36" numpy
fi

cargo build --release -q -p hearth-cli
hearth_json="$(target/release/hearth bench --model "$model" -p "$p" -n "$n" -r "$r" --threads "$t" --json)"
llama_json="$("$venv/bin/python" bench/llamacpp_bench.py "$model" -p "$p" -n "$n" -r "$r" -t "$t")"

python3 - "$hearth_json" "$llama_json" "$p" "$n" "$t" "$(basename "$model")" <<'PY'
import json, sys
h, l = json.loads(sys.argv[1]), json.loads(sys.argv[2])
p, n, t, name = sys.argv[3:]
print(f"{name}: prompt {p} tokens, {n} decoded, {t} threads, medians of {h['reps']} runs ({h['isa']})")
print(f"{'':12}{'prompt tok/s':>14}{'decode tok/s':>14}")
print(f"{'hearth':12}{h['pp_tokens_per_sec']:>14.1f}{h['tg_tokens_per_sec']:>14.1f}")
print(f"{'llama.cpp':12}{l['pp_tokens_per_sec']:>14.1f}{l['tg_tokens_per_sec']:>14.1f}")
print(f"{'ratio':12}{h['pp_tokens_per_sec'] / l['pp_tokens_per_sec']:>13.2f}x{h['tg_tokens_per_sec'] / l['tg_tokens_per_sec']:>13.2f}x")
rss = h.get("peak_rss_bytes")
if rss:
    print(f"hearth peak RSS {rss / 1e6:.1f} MB (weights {h['weight_bytes'] / 1e6:.1f} MB + KV {h['kv_cache_bytes'] / 1e6:.1f} MB)")
PY
