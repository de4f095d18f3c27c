"""mlx's optimisers and schedules on a small parameter, for crates/hearth-train/tests/optimizers.rs:
testdata/tiny/train-optim/mlx-optimizers.json. Run with mlx installed (mlx 0.32.4 made it)."""

import json
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim

OUT = Path(__file__).resolve().parent.parent / "testdata" / "tiny" / "train-optim" / "mlx-optimizers.json"

mx.random.seed(3)
p0 = mx.random.normal((6,)).astype(mx.float32)
grads = [mx.random.normal((6,)).astype(mx.float32) for _ in range(12)]


def run(opt):
    params = {"w": p0}
    out = []
    for g in grads:
        params = opt.apply_gradients({"w": g}, params)
        out.append([float(v) for v in params["w"].tolist()])
    return out


# mlx-lm's warm-up: linear_schedule(warmup_init, init, warmup) joined at warmup + 1.
warm = optim.join_schedules([optim.linear_schedule(0.0, 0.01, 3), optim.cosine_decay(0.01, 10, 0.0)], [4])
cases = {
    "adam": {"kind": "adam", "lr": 0.01, "out": run(optim.Adam(learning_rate=0.01))},
    "adamw": {"kind": "adamw", "lr": 0.01, "weight_decay": 0.01, "out": run(optim.AdamW(learning_rate=0.01, weight_decay=0.01))},
    "sgd": {"kind": "sgd", "lr": 0.1, "out": run(optim.SGD(learning_rate=0.1))},
    "adam_cosine": {"kind": "adam", "schedule": {"name": "cosine_decay", "arguments": [0.01, 10, 0.001]},
                    "out": run(optim.Adam(learning_rate=optim.cosine_decay(0.01, 10, 0.001)))},
    "adam_warmup_cosine": {"kind": "adam", "schedule": {"name": "cosine_decay", "arguments": [0.01, 10, 0.0], "warmup": 3, "warmup_init": 0.0},
                           "out": run(optim.Adam(learning_rate=warm))},
    "sgd_linear": {"kind": "sgd", "schedule": {"name": "linear_schedule", "arguments": [0.01, 0.0, 8]},
                   "out": run(optim.SGD(learning_rate=optim.linear_schedule(0.01, 0.0, 8)))},
}
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps({
    "about": "mlx 0.32.4 optimizers on a 6-value parameter, 12 gradient steps (mx.random.seed(3)); bench/make_optimizer_fixture.py",
    "p0": [float(v) for v in p0.tolist()],
    "grads": [[float(v) for v in g.tolist()] for g in grads],
    "cases": cases,
}, indent=1))
