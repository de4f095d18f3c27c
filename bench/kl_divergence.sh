#!/usr/bin/env bash
# How far the fast path is from the float path, as llama-perplexity --kl-divergence reports it:
# ~10k tokens of the Vaswani abstracts (testdata/vaswani) in chunks of 512, each instruction set
# this CPU runs (HEARTH_ISA), then llama.cpp's logits on the same file and token ids against the
# same float path. A benchmark, not a test. llama-cpp-python comes from $HEARTH_BENCH_VENV (see
# bench/compare_llamacpp.sh; build it with CMAKE_ARGS for the instruction set to compare).
#
#   bench/kl_divergence.sh [MODEL.gguf] [ISA ...]
set -euo pipefail
cd "$(dirname "$0")/.."

model="$(scripts/fetch-test-models.sh | head -1)"
if [[ $# -gt 0 && "$1" != -* && -f "$1" ]]; then model="$1"; shift; fi
isas=("$@")
[[ ${#isas[@]} -gt 0 ]] || isas=(avx512vnni avx2 scalar)
work="${TMPDIR:-/tmp}/hearth-kl"
mkdir -p "$work"
# The abstracts' text, tags dropped (awk reads to the end: `head` closing the pipe early made
# pipefail end the script, depending on timing).
sed -e 's/<[^>]*>//g' testdata/vaswani/doc-text.trec | grep -v '^[[:space:]]*[0-9]*[[:space:]]*$' | awk 'NR <= 3000' > "$work/text.txt"

cargo build --release -q -p hearth-cli
for isa in "${isas[@]}"; do
  HEARTH_ISA=$isa target/release/hearth --threads 2 perplexity --model "$model" --file "$work/text.txt" --kl-divergence --tokens-out "$work/tokens.json" --json
done
venv="${HEARTH_BENCH_VENV:-${TMPDIR:-/tmp}/hearth-bench-venv}"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import llama_cpp, numpy" 2>/dev/null; then
  "$venv/bin/python" bench/llamacpp_logits.py "$model" "$work/tokens.json" "$work/llama.cpp"
  target/release/hearth --threads 2 perplexity --model "$model" --file "$work/text.txt" --kl-divergence --other-logits "$work/llama.cpp" --json \
    | sed 's/"tested":"other"/"tested":"llama.cpp"/'
  rm -rf "$work/llama.cpp"
else
  echo "no llama-cpp-python in $venv: llama.cpp's figures skipped (see bench/compare_llamacpp.sh)" >&2
fi
