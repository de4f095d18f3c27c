#!/usr/bin/env bash
# The whole test suite: fetches the small real models if missing, then runs every crate's tests
# (optimised: see the test profile in Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-test-models.sh >/dev/null
cargo test --workspace --locked "$@"
# The server under the official OpenAI SDKs (Python and Node), installed into target/.
sdk_env=$(scripts/sdk-env.sh)
export ${sdk_env?}
cargo test --locked -p hearth-server --test sdk -- --ignored
# The web UI in headless Chromium (Debian's chromium package, which .ci/run installs).
cargo test --locked -p hearth-cli --test cli a_person_uses_the_web_ui -- --ignored
# The GGUF files hearth convert writes, read by llama.cpp's own Python package.
cargo test --locked -p hearth-convert --test gguf -- --ignored
# The safetensors directories it writes, read by the safetensors package.
cargo test --locked -p hearth-convert --test outside_tools safetensors -- --ignored
