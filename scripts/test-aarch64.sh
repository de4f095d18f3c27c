#!/usr/bin/env bash
# The kernels' tests (and with --models the tiny models' tests) built for aarch64 and run under
# qemu-user: the NEON and NEON dot-product paths, and the portable ones, on an x86-64 machine.
# Installs what it needs from Debian: rustc-web (a second Rust toolchain whose aarch64 standard
# library Debian ships), the cross linker, the arm64 C library and qemu-user.
#
#   scripts/test-aarch64.sh [--models]
#
# qemu runs the binaries with the arm64 C library installed by dpkg (no -L prefix): mixing the
# cross toolchain's older loader (/usr/aarch64-linux-gnu) with that library made every
# pthread_create loop forever in its stack-cache walk.
set -euo pipefail
cd "$(dirname "$0")/.."

models=false
[[ "${1:-}" == "--models" ]] && models=true

need=()
[[ -x /usr/bin/rustc ]] && /usr/bin/rustc --print target-libdir --target aarch64-unknown-linux-gnu >/dev/null 2>&1 \
  && [[ -d "$(/usr/bin/rustc --print target-libdir --target aarch64-unknown-linux-gnu)" ]] || need+=(rustc-web libstd-rust-web-dev:arm64)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
[[ -e /lib/ld-linux-aarch64.so.1 ]] || need+=(libc6:arm64)
if [[ ${#need[@]} -gt 0 ]]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=target/aarch64
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# The emulated CPU: NEON with the dot-product extension (qemu's default `max` has it); the
# kernels' tests also run every weaker path this CPU offers.
export QEMU_CPU=${QEMU_CPU:-max}

target=(--target aarch64-unknown-linux-gnu --locked)
cargo test "${target[@]}" -p hearth-kernels --lib --tests
if $models; then
  cargo test "${target[@]}" -p hearth-engine --test tiny_models
fi
