"""llama.cpp (through llama-cpp-python) measured the way `hearth bench` measures: one prefill of
P tokens, then N tokens decoded one at a time (greedy), medians over R repetitions after a
warm-up. Prints one JSON object."""
import argparse
import json
import statistics
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("-p", type=int, default=512)
ap.add_argument("-n", type=int, default=128)
ap.add_argument("-r", type=int, default=5)
ap.add_argument("-t", type=int, default=2)
a = ap.parse_args()

llm = Llama(a.model, n_ctx=a.p + a.n + 16, n_batch=a.p, n_ubatch=a.p, n_threads=a.t,
            n_threads_batch=a.t, verbose=False)
vocab = llm.n_vocab()
# The same pseudo-random prompt ids as `hearth bench`.
prompt = [(i * 2654435761 + 12345) % vocab for i in range(a.p)]


def once(gen):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    pp = a.p / (time.perf_counter() - t0)
    t1 = time.perf_counter()
    for _ in range(gen):
        last = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        nxt = int(np.argmax(np.ctypeslib.as_array(last, shape=(vocab,))))
        llm.eval([nxt])
    tg = gen / (time.perf_counter() - t1)
    return pp, tg


once(8)
runs = [once(a.n) for _ in range(a.r)]
print(json.dumps({
    "pp_tokens_per_sec": statistics.median(r[0] for r in runs),
    "tg_tokens_per_sec": statistics.median(r[1] for r in runs),
    "pp_runs": [r[0] for r in runs],
    "tg_runs": [r[1] for r in runs],
    "threads": a.t,
}))
