#!/usr/bin/env bash
# Fuzzes the model-file parsers (fuzz/, cargo-fuzz + libFuzzer): seeds each target's corpus,
# then runs each for FUZZ_SECONDS (default 60). Exits non-zero if any target crashed; the
# crashing inputs are left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                   # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh gguf_header
#   FUZZ_SANITIZER=none scripts/fuzz.sh   # where the AddressSanitizer runtime is unavailable
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-address}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf_header safetensors_header)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# cargo-fuzz passes nightly-only flags (-Zsanitizer, sanitizer-coverage passes); this lets a
# stable toolchain accept them.
export RUSTC_BOOTSTRAP=1

# Seeds: small generated files that parse, so the fuzzer starts past the header checks, plus
# the start of a real file for realistic metadata. The corpus directory is git-ignored.
seed() {
    local target=$1
    mkdir -p "fuzz/corpus/$target"
    case $target in
        gguf_header) head -c 65536 testdata/tiny/gguf/llama256-Q6_K.gguf >"fuzz/corpus/$target/llama256-head" ;;
        safetensors_header) head -c 65536 testdata/tiny/hf/llama/model.safetensors >"fuzz/corpus/$target/llama-head" ;;
    esac
    python3 - "$target" "fuzz/corpus/$target/generated" <<'EOF'
import json, struct, sys

target, out = sys.argv[1], sys.argv[2]

def gguf():
    string = lambda b: struct.pack("<Q", len(b)) + b
    kv = lambda key, ty, payload: string(key) + struct.pack("<I", ty) + payload
    metadata = [
        kv(b"general.architecture", 8, string(b"llama")),
        kv(b"general.alignment", 4, struct.pack("<I", 32)),
        kv(b"u8", 0, b"\x07"), kv(b"i8", 1, b"\xf9"),
        kv(b"u16", 2, struct.pack("<H", 7)), kv(b"i16", 3, struct.pack("<h", -7)),
        kv(b"i32", 5, struct.pack("<i", -7)), kv(b"f32", 6, struct.pack("<f", 0.5)),
        kv(b"bool", 7, b"\x01"), kv(b"u64", 10, struct.pack("<Q", 7)),
        kv(b"i64", 11, struct.pack("<q", -7)), kv(b"f64", 12, struct.pack("<d", 0.5)),
        kv(b"tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + string(b"a") + string(b"b") + string(b"<s>")),
        kv(b"nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQi", 5, 1, -1) + struct.pack("<IQ", 0, 0)),
    ]
    # (name, dims innermost first, ggml type id, data bytes): F32, Q4_0, Q6_K.
    tensors = [(b"f32", [4], 0, 16), (b"q4_0", [32, 2], 2, 36), (b"q6_k", [256], 14, 210)]
    align = lambda n: (n + 31) // 32 * 32
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)) + b"".join(metadata)
    offset, data = 0, b""
    for name, dims, ty, size in tensors:
        header += string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        header += struct.pack("<IQ", ty, offset)
        data += bytes(range(size)).ljust(align(size), b"\0")
        offset += align(size)
    return header.ljust(align(len(header)), b"\0") + data

def safetensors():
    header = json.dumps({
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]},
        "s": {"dtype": "I64", "shape": [], "data_offsets": [20, 28]},
    }).encode()
    return struct.pack("<Q", len(header)) + header + bytes(range(28))

with open(out, "wb") as f:
    f.write({"gguf_header": gguf, "safetensors_header": safetensors}[target]())
EOF
}

failed=()
for target in "${targets[@]}"; do
    seed "$target"
    echo "== fuzzing $target for ${seconds}s (sanitizer: $sanitizer)"
    # No single allocation needs 64 MiB for inputs of at most 64 KiB: a bigger one means a
    # length or count from the file was trusted.
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" -- \
        -max_total_time="$seconds" -malloc_limit_mb=64 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crashes"
