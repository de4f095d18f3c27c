"""DoRA references from mlx-lm for hearth-train's tests (testdata/tiny/train-dora).

Runs mlx-lm's own DoRALinear (linear_to_lora_layers(..., use_dora=True)) on the tiny Llama
upcast to float32, with the LoRA case's initial adapters (testdata/tiny/train/llama-f32-chat:
random lora_a and lora_b) and DoRA's initial magnitudes, and records:
  init_adapters.safetensors  lora_a, lora_b and m as mlx-lm saves them
  grads.safetensors          d loss / d every lora_a, lora_b, m on the case's first batch
  final_adapters.safetensors after 10 updates of mlx's Adam(1e-3) on batches 0..9
  ref.json                   the first batch's loss and ntoks, and the 10 losses
Run with the outside tools' virtualenv (mlx-lm 0.32.2, mlx 0.32.4):
  target/outside-venv/bin/python bench/make_dora_fixture.py
"""
import json
import os

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten
from mlx_lm import load
from mlx_lm.tuner.trainer import default_loss
from mlx_lm.tuner.utils import linear_to_lora_layers

root = os.path.join(os.path.dirname(__file__), "..", "testdata", "tiny")
src = os.path.join(root, "train", "llama-f32-chat")
out = os.path.join(root, "train-dora")
os.makedirs(out, exist_ok=True)
ref = json.load(open(os.path.join(src, "ref.json")))

model, _ = load(os.path.join(root, "hf", "llama"))
model.set_dtype(mx.float32)
model.freeze()
linear_to_lora_layers(model, -1, {"rank": 4, "scale": 20.0, "dropout": 0.0}, use_dora=True)
model.load_weights(list(mx.load(os.path.join(src, "init_adapters.safetensors")).items()), strict=False)
mx.save_safetensors(os.path.join(out, "init_adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))

def batch(i):
    b = ref["batches"][i]
    return mx.array(b["tokens"]), mx.array(b["lengths"])

loss_and_grad = nn.value_and_grad(model, default_loss)
(loss, ntoks), grads = loss_and_grad(model, *batch(0))
mx.save_safetensors(os.path.join(out, "grads.safetensors"), dict(tree_flatten(grads)))
first = {"loss": loss.item(), "ntoks": ntoks.item()}

opt = optim.Adam(learning_rate=1e-3)
losses = []
for i in range(10):
    (loss, _), grads = loss_and_grad(model, *batch(i))
    opt.update(model, grads)
    mx.eval(model.parameters(), opt.state)
    losses.append(loss.item())
mx.save_safetensors(os.path.join(out, "final_adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
json.dump({"source": "mlx-lm 0.32.2 DoRALinear, bench/make_dora_fixture.py", "first_batch": first, "adam_losses": losses,
           "batches": "those of ../train/llama-f32-chat/ref.json"}, open(os.path.join(out, "ref.json"), "w"), indent=1)
print(first, losses)
