#!/usr/bin/env bash
# hearth convert / quantize / fuse against the tools it replaces, in one run. A check and a
# benchmark, not part of CI (torch alone is gigabytes):
#  1. transformers, mlx-lm and llama-cpp-python load what Hearth writes and agree with Hearth's
#     logits within the MANIFEST's bounds; llama.cpp finds the same perplexity in Hearth's Q8_0
#     as in its own (the ignored test outside_tools_agree_with_hearth);
#  2. times (median of --runs) and peak RSS of the same conversions by Hearth and by the peers:
#     SmolLM2 float32 → MLX 4-bit (mlx_lm.convert) and GGUF F32 → Q4_K_M / Q8_0 (llama.cpp's
#     llama_model_quantize, what llama-quantize runs).
#
#   bench/convert_check.sh [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3
if [[ "${1:-}" == "--runs" ]]; then runs="$2"; fi

venv="${HEARTH_OUTSIDE_VENV:-target/outside-venv}"
if ! "$venv/bin/python" -c "import torch, transformers, mlx_lm, llama_cpp, gguf, safetensors" 2>/dev/null; then
  echo "installing transformers, torch, mlx-lm and llama-cpp-python into $venv (gigabytes)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "mlx[cpu]==0.32.4" "mlx-lm==0.32.2" "llama-cpp-python==0.3.36" \
    "transformers==5.25.0" torch gguf numpy safetensors sentencepiece
fi
python="$PWD/$venv/bin/python"
scripts/fetch-test-models.sh >/dev/null

echo "== peers on Hearth's files"
HEARTH_OUTSIDE_PYTHON="$python" cargo test --locked -q -p hearth-convert --test outside_tools outside_tools_agree -- --ignored --nocapture 2>&1 |
  grep -E "max \|Δlogit\||perplexity|test result|panicked|assert"

isa=$(uname -m)
if grep -q avx512_vnni /proc/cpuinfo; then isa="AVX-512 VNNI"; elif grep -q avx2 /proc/cpuinfo; then isa="AVX2"; fi
echo "== timings ($runs runs, medians; $isa, $(nproc) cores)"
cargo build --release --locked -q -p hearth-cli
hearth="$PWD/target/release/hearth"
smol="$(scripts/fetch-test-models.sh | head -1)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HEARTH_HOME="$work/home"
"$hearth" convert -m "$smol" --to hf --out "$work/hf" --no-register 2>/dev/null
"$hearth" convert -m "$work/hf" --to gguf --type F32 --out "$work/f32.gguf" --no-register 2>/dev/null

# Runs a command $runs times into a fresh output; prints the median seconds and the largest peak RSS.
measure() {
  local out="$1"; shift
  local times=() rss=0
  for _ in $(seq "$runs"); do
    rm -rf "$out"
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>&1
    read -r t m <"$work/time"
    times+=("$t")
    ((m > rss)) && rss=$m
  done
  printf '%s %s\n' "$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p")" "$((rss / 1024))"
}

row() {
  local what="$1" ours="$2" theirs="$3"
  read -r ot om <<<"$ours"
  read -r tt tm <<<"$theirs"
  printf '| %s | %.2f s, %d MB | %.2f s, %d MB | %.2f× |\n' "$what" "$ot" "$om" "$tt" "$tm" "$(echo "$tt / $ot" | bc -l)"
}

echo "| conversion (SmolLM2-135M) | Hearth | peer | peer time / Hearth time |"
echo "|---|---:|---:|---:|"
row "float32 → MLX 4-bit g64 (peer: mlx_lm.convert)" \
  "$(measure "$work/mlx-h" "$hearth" convert -m "$work/hf" --to mlx -q --out "$work/mlx-h" --no-register)" \
  "$(measure "$work/mlx-p" "$python" -m mlx_lm convert --hf-path "$work/hf" --mlx-path "$work/mlx-p" -q)"
quantize_py='import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params(); p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3]); p.nthread = 0
assert llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)) == 0'
for t in Q8_0 Q4_K_M; do
  row "GGUF F32 → $t (peer: llama-quantize)" \
    "$(measure "$work/h-$t.gguf" "$hearth" quantize -m "$work/f32.gguf" --type "$t" --out "$work/h-$t.gguf" --no-register)" \
    "$(measure "$work/p-$t.gguf" "$python" -c "$quantize_py" "$work/f32.gguf" "$work/p-$t.gguf" "$t")"
done
