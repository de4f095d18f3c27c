#!/usr/bin/env bash
# Installs the official OpenAI SDKs the server's SDK tests drive, the OpenAPI document's
# validator, llama.cpp's gguf-py and safetensors (they read the files hearth convert writes),
# MLflow's client (it reads the runs the hub exports) and playwright-core (it drives Chromium
# through the web UI) into scratch locations under target/ (a Python virtualenv and an npm
# prefix);
# does nothing if they are already there.
# Prints the two locations as shell assignments.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
node=target/sdk-node
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c "import openai, anthropic, websockets, openapi_spec_validator, jsonschema, langchain_openai, gguf, safetensors, mlflow" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check openai anthropic pytest websockets openapi-spec-validator jsonschema pydantic langchain-openai gguf safetensors mlflow-skinny >&2
fi
if [ ! -d "$node/node_modules/openai" ] || [ ! -d "$node/node_modules/playwright-core" ]; then
    mkdir -p "$node"
    npm install --silent --no-audit --no-fund --prefix "$node" openai playwright-core >&2
fi
echo "HEARTH_SDK_PYTHON=$PWD/$venv/bin/python"
echo "HEARTH_SDK_NODE_MODULES=$PWD/$node/node_modules"
