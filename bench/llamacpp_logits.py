"""llama.cpp's logits (through llama-cpp-python) for the chunks `hearth perplexity --tokens-out`
saved: for each chunk, the scored positions' logits (the second half, as llama-perplexity
scores) written as little-endian f32 to OUT/chunk-N.f32, for `hearth perplexity
--kl-divergence --other-logits OUT` to compare with Hearth's float path."""
import argparse
import json
import os

import numpy as np
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("tokens")
ap.add_argument("out")
ap.add_argument("-t", type=int, default=2)
a = ap.parse_args()

saved = json.load(open(a.tokens))
ctx = saved["ctx"]
llm = Llama(a.model, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, n_threads=a.t, n_threads_batch=a.t, logits_all=True, verbose=False)
os.makedirs(a.out, exist_ok=True)
first = ctx // 2
for i, ids in enumerate(saved["chunks"]):
    llm.reset()
    llm.eval(ids)
    np.asarray(llm.scores[first:ctx - 1], dtype="<f4").tofile(os.path.join(a.out, f"chunk-{i}.f32"))
