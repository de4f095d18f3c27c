#!/usr/bin/env bash
# Inference while the hub trains: p50/p95 latency of one chat at a time (64-token replies,
# ignore_eos) on an idle server, then while a fine-tuning job (SmolLM2 on the lantern data,
# batch 8) trains on the same 2 threads. The issue's goal: p50 during training ≤ 2× idle.
#   bench/train_while_serving.sh [--requests N]
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=${GGUF:-$(scripts/fetch-test-models.sh >/dev/null; echo "${HEARTH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth}/models/SmolLM2-135M-Instruct-Q4_1.gguf")}
cargo build --release -q -p hearth-cli
home=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$home"' EXIT
base=http://127.0.0.1:18184
HEARTH_HOME=$home target/release/hearth serve --port 18184 --model "smollm2=$gguf" 2>"$home/hearth.log" &
pids+=($!)
for _ in $(seq 200); do curl -sf $base/health >/dev/null && break; sleep 0.2; done
cat testdata/train/lantern/train.jsonl | curl -sf "$base/hub/datasets?name=lantern" -H 'content-type: application/jsonl' --data-binary @- >/dev/null
python3 bench/load_server.py --base $base --model smollm2 --label idle --concurrency 1 --ignore-eos "$@"
job=$(curl -sf $base/hub/jobs -H 'content-type: application/json' \
  -d '{"name": "lantern", "model": "smollm2", "dataset": "lantern", "train": {"iters": 1000, "batch_size": 8, "learning_rate": 5e-4, "mask_prompt": true, "steps_per_eval": 1000, "val_batches": 1}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
until curl -sf $base/hub/jobs/$job | grep -q '"iter":[1-9]'; do sleep 0.5; done
python3 bench/load_server.py --base $base --model smollm2 --label training --concurrency 1 --ignore-eos "$@"
curl -sf $base/hub/jobs/$job | python3 -c 'import json,sys; j=json.load(sys.stdin); print("job", j["id"], j["status"], "at iteration", j["iter"])'
curl -sf -X POST $base/hub/jobs/$job/cancel >/dev/null
