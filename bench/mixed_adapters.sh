#!/usr/bin/env bash
# Adapters served per request: SmolLM2 (Q4_1 GGUF) with three LoRA adapters (rank 8 on every
# linear of the last 16 blocks, trained briefly by `hearth train`), at concurrency 8: aggregate
# generated tokens/s when every request names the base model, then when requests take the base
# and the three adapters in turn (all decoding in one batch), in the same run. The issue's goal:
# mixed ≥ 70% of base-only.
#   bench/mixed_adapters.sh [--requests N] [--max-tokens N]
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=${GGUF:-$(scripts/fetch-test-models.sh >/dev/null; echo "${HEARTH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth}/models/SmolLM2-135M-Instruct-Q4_1.gguf")}
cargo build --release -q -p hearth-cli
home=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$home"' EXIT
for i in 1 2 3; do
  HEARTH_HOME=$home target/release/hearth train -m "$gguf" --data testdata/train/lantern --iters 3 --batch-size 4 \
    --learning-rate 1e-3 --seed "$i" --adapter-path "$home/adapter-$i" --steps-per-eval 1000 --val-batches 1 >/dev/null
done
HEARTH_HOME=$home target/release/hearth serve --port 18183 --model "smollm2=$gguf" --max-batch 16 --ctx 2048 2>"$home/hearth.log" &
pids+=($!)
for _ in $(seq 200); do curl -sf http://127.0.0.1:18183/health >/dev/null && break; sleep 0.2; done
for i in 1 2 3; do
  curl -sf http://127.0.0.1:18183/admin/models -H 'content-type: application/json' \
    -d "{\"name\": \"adapter-$i\", \"base_model\": \"smollm2\", \"adapter_path\": \"$home/adapter-$i\"}" >/dev/null
done
grep -m1 -o 'avx[a-z0-9_]*\|neon' /proc/cpuinfo >/dev/null 2>&1 && echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) (HEARTH_ISA=${HEARTH_ISA:-auto})"
python3 bench/load_server.py --base http://127.0.0.1:18183 --model smollm2 --label base-only --concurrency 8 --ignore-eos "$@"
python3 bench/load_server.py --base http://127.0.0.1:18183 --model smollm2,adapter-1,adapter-2,adapter-3 --label mixed --concurrency 8 --ignore-eos "$@"
