#!/usr/bin/env bash
# Builds `hearth` with candle's CUDA backend: `scripts/build-cuda.sh [cargo build args…]`.
# Uses the CUDA toolkit on PATH (nvcc) when there is one; otherwise assembles CUDA 13.0 from
# NVIDIA's PyPI wheels into target/cuda-toolkit, so the build can be checked on a machine
# without a GPU or a system toolkit. That toolkit has no driver: its libcuda.so is a link stub
# generated from cuda.h, as the toolkit's own lib64/stubs one is; running needs a real driver.
# CUDA_COMPUTE_CAP (default 90: H100/H200) picks the GPU generation the kernels are built for.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvcc >/dev/null; then
    toolkit=$PWD/target/cuda-toolkit
    if [ ! -x "$toolkit/bin/nvcc" ]; then
        scratch=$(mktemp -d)
        trap 'rm -rf "$scratch"' EXIT
        python3 -m pip download --quiet --no-deps -d "$scratch/wheels" \
            "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
            "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-cublas==13.0.*" \
            "nvidia-curand==10.4.*" "nvidia-cuda-cccl==13.0.*"
        for wheel in "$scratch"/wheels/*.whl; do
            python3 -m zipfile -e "$wheel" "$scratch/unpacked"
        done
        rm -rf "$toolkit.partial"
        mkdir -p "$toolkit.partial/lib64/stubs"
        cu=$scratch/unpacked/nvidia/cu13
        cp -a "$cu/bin" "$cu/include" "$cu/nvvm" "$toolkit.partial/"
        cp -a "$cu"/lib/* "$toolkit.partial/lib64/"
        # Wheels drop the executable bits and the unversioned names the linker looks for.
        chmod +x "$toolkit.partial"/bin/* "$toolkit.partial"/nvvm/bin/*
        for lib in "$toolkit.partial"/lib64/*.so.*; do
            ln -sf "$(basename "$lib")" "${lib%%.so.*}.so"
        done
        gcc -E -P -I "$toolkit.partial/include" "$toolkit.partial/include/cuda.h" \
            | grep -oE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' | sed 's/\s*($//' | sort -u \
            | awk '{ print "void " $1 "(void) {}" }' > "$scratch/libcuda_stub.c"
        gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$toolkit.partial/lib64/stubs/libcuda.so" "$scratch/libcuda_stub.c"
        mv "$toolkit.partial" "$toolkit"
    fi
    export PATH=$toolkit/bin:$PATH CUDA_HOME=$toolkit
    export LIBRARY_PATH=$toolkit/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
fi
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
nvcc --version | tail -1
exec cargo build --release --locked -p hearth-cli --features cuda "$@"
