#!/usr/bin/env bash
# Starts `hearth serve` on 127.0.0.1:8080 with the default small model (SmolLM2-135M-Instruct),
# fetching it first if it is missing. Extra arguments go to `hearth serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-test-models.sh >/dev/null
cargo build --release -q -p hearth-cli
exec target/release/hearth serve --model smollm2 --model minilm "$@"
