"""How the `safetensors` package reads a directory Hearth wrote, for tests/outside_tools.rs.

Reads JSON lines on stdin, each {"dir": PATH}; prints one JSON line per request: the file's
metadata `format` and, per tensor, its dtype, shape and (numpy having no bfloat16, for the
other dtypes) its byte count and the sum of its bytes.
"""

import json
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open

for line in sys.stdin:
    path = Path(json.loads(line)["dir"]) / "model.safetensors"
    tensors = {}
    with safe_open(path, "np") as f:
        fmt = f.metadata().get("format")
        for name in f.keys():
            s = f.get_slice(name)
            tensors[name] = {"dtype": s.get_dtype(), "shape": list(s.get_shape())}
            if s.get_dtype() != "BF16":
                raw = np.ascontiguousarray(f.get_tensor(name)).view(np.uint8)
                tensors[name].update({"bytes": int(raw.size), "sum": int(raw.sum(dtype=np.uint64))})
    print(json.dumps({"format": fmt, "tensors": tensors}), flush=True)
