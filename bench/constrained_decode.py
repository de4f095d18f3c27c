"""Decode speed with and without constraints, in one run against one Hearth server: `batch`
concurrent streamed chat requests of SmolLM2 at temperature 1, each forced to run to
`max_tokens` (the schema asks for a long string; the unconstrained run uses a long-answer
prompt and counts only the decode phase: tokens after the first / time after the first).
Modes: unconstrained, a `json_schema` response, and a required tool call whose argument is a
long string. Prints aggregate decode tokens/s per mode and batch size, the ratios, and the
mask computation time per constrained token (the server's `hearth_constraint_mask_seconds`).

    python3 bench/constrained_decode.py --base http://127.0.0.1:18181 [--max-tokens 128] [--rounds 3]
"""
import argparse
import json
import statistics
import threading
import time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True)
ap.add_argument("--model", default="smollm2")
ap.add_argument("--max-tokens", type=int, default=128)
ap.add_argument("--rounds", type=int, default=3)
a = ap.parse_args()

SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 2000}},
          "required": ["story"], "additionalProperties": False}


TOOL = {"type": "function", "function": {"name": "write_story", "parameters": SCHEMA}}


def one(seed, mode, out):
    # With `logprobs` every token is a chunk, also where a reply's text is held back (a call's
    # opening), so chunks count tokens in every mode.
    body = {"model": a.model, "stream": True, "temperature": 1.0, "seed": seed, "max_tokens": a.max_tokens, "logprobs": True,
            "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}]}
    if mode == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "story", "schema": SCHEMA}}
    elif mode == "tool":
        body["tools"], body["tool_choice"] = [TOOL], "required"
    req = urllib.request.Request(a.base + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    times = []
    with urllib.request.urlopen(req) as r:
        for line in r:
            if not line.startswith(b"data: {"):
                continue
            choices = json.loads(line[len(b"data: "):]).get("choices") or [{}]
            if choices[0].get("logprobs"):
                times.append(time.perf_counter())
    if len(times) < 2:
        raise SystemExit(f"{mode}: the reply streamed {len(times)} tokens; nothing to time")
    out.append((len(times), times[0], times[-1]))


def run(batch, mode):
    rates = []
    for round_ in range(a.rounds):
        out = []
        threads = [threading.Thread(target=one, args=(round_ * 100 + i, mode, out)) for i in range(batch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tokens = sum(n - 1 for n, _, _ in out)
        rates.append(tokens / (max(e for _, _, e in out) - min(s for _, s, _ in out)))
    return statistics.median(rates)


def mask_seconds():
    """The server's total mask time and count of masked tokens so far."""
    text = urllib.request.urlopen(a.base + "/metrics").read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("hearth_constraint_mask_seconds_"))
    return float(values["hearth_constraint_mask_seconds_sum"]), float(values["hearth_constraint_mask_seconds_count"])


for batch in (1, 8):
    free = run(batch, "free")
    line = f"batch {batch}: unconstrained {free:.1f} tok/s"
    for mode in ("json_schema", "tool"):
        (s0, n0) = mask_seconds()
        bound = run(batch, mode)
        (s1, n1) = mask_seconds()
        line += f", {mode} {bound:.1f} tok/s (ratio {bound / free:.2f}, mask {1e6 * (s1 - s0) / max(n1 - n0, 1):.0f} us/token)"
    print(line)
