#!/usr/bin/env bash
# Hearth's server against llama-cpp-python's server on the same GGUF (SmolLM2 by default), on
# loopback: aggregate generated tokens/s and p50/p95 latency at concurrency 1, 4, 8 and 16,
# then Hearth's cancellation check (200 streamed requests, half dropped mid-stream).
#   bench/load_server.sh [--requests N] [--max-tokens N]
# LLAMA_PY: the Python with llama-cpp-python and its server extras (default /tmp/bench-venv/llama).
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=${GGUF:-$(scripts/fetch-test-models.sh >/dev/null; echo "${HEARTH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth}/models/SmolLM2-135M-Instruct-Q4_1.gguf")}
llama_py=${LLAMA_PY:-/tmp/bench-venv/llama/bin/python}
cargo build --release -q -p hearth-cli
home=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$home"' EXIT
wait_up() { for _ in $(seq 200); do curl -sf "$1" >/dev/null && return; sleep 0.2; done; echo "server at $1 did not start" >&2; exit 1; }

HEARTH_HOME=$home target/release/hearth serve --port 18181 --model "smollm2=$gguf" --max-batch 16 --ctx 2048 2>"$home/hearth.log" &
pids+=($!)
"$llama_py" -m llama_cpp.server --model "$gguf" --host 127.0.0.1 --port 18182 --n_ctx 2048 --model_alias smollm2 >"$home/llama.log" 2>&1 &
pids+=($!)
wait_up http://127.0.0.1:18181/health
wait_up http://127.0.0.1:18182/v1/models

python3 bench/load_server.py --base http://127.0.0.1:18181 --label hearth --cancel-check 200 "$@"
python3 bench/load_server.py --base http://127.0.0.1:18182 --label llama.cpp "$@"
