#!/usr/bin/env bash
# The whole test suite: fetches the small real models if missing, then runs every crate's tests
# (optimised: see the test profile in Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
# One clean build gains nothing from incremental caches, which grew to tens of GB here.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
scripts/fetch-test-models.sh >/dev/null
cargo test --workspace --locked "$@"
# The ignored tests below name the workspace rather than their package (-p), so cargo keeps the
# workspace's feature set and reuses what it just built (each -p run rebuilt minutes of crates).
# The server under the official OpenAI SDKs (Python and Node), installed into target/.
sdk_env=$(scripts/sdk-env.sh)
export ${sdk_env?}
cargo test --workspace --locked --test sdk -- --ignored
# The web UI in headless Chromium (Debian's chromium package, which .ci/run installs).
cargo test --workspace --locked --test cli a_person_uses_the_web_ui -- --ignored
# The GGUF files hearth convert writes, read by llama.cpp's own Python package.
cargo test --workspace --locked --test gguf -- --ignored
# The safetensors directories it writes, read by the safetensors package.
cargo test --workspace --locked --test outside_tools safetensors -- --ignored
