#!/usr/bin/env python3
"""Load test for an OpenAI-compatible server on loopback: aggregate generated tokens/s and
p50/p95 request latency at several concurrencies, with a bounded number of requests; and a
cancellation check (half of the requests dropped mid-stream, then /metrics must show no
running sequences and no KV cache held by them).

    python3 bench/load_server.py --base http://127.0.0.1:8080 --model smollm2 --label hearth
"""
import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "List five uses for a paperclip and explain each.",
    "Describe the water cycle to a child.",
]


def connect(base):
    u = urllib.parse.urlparse(base)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing to load-test {u.hostname}: loopback only")
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def one_request(base, models, i, max_tokens, ignore_eos=False):
    """Request i names models[i % len(models)]: several models (a base and its adapters) mix."""
    body = {"model": models[i % len(models)], "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "max_tokens": max_tokens, "temperature": 0.7, "seed": i}
    if ignore_eos:
        body["ignore_eos"] = True
    conn = connect(base)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    res = conn.getresponse()
    data = json.loads(res.read())
    latency = time.perf_counter() - t0
    conn.close()
    if res.status != 200:
        raise RuntimeError(f"HTTP {res.status}: {data}")
    return latency, data["usage"]["completion_tokens"]


def level(base, models, concurrency, requests, max_tokens, ignore_eos):
    with ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(lambda i: one_request(base, models, i, max_tokens, ignore_eos), range(requests)))
        wall = time.perf_counter() - t0
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    return {"concurrency": concurrency, "requests": requests, "tokens": tokens, "tok_s": tokens / wall,
            "p50": statistics.median(latencies), "p95": p95}


def streamed_request(base, model, i, cancel):
    body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "max_tokens": 64, "stream": True, "temperature": 0.7}
    conn = connect(base)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    res = conn.getresponse()
    if cancel:
        res.read1(64) if hasattr(res, "read1") else res.read(64)
        conn.sock.close()  # the client disappears mid-stream
    else:
        res.read()
    conn.close()


def metrics(base):
    conn = connect(base)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def cancellation_check(base, model, total):
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: streamed_request(base, model, i, i % 2 == 0), range(total)))
    for _ in range(100):
        m = metrics(base)
        if m.get("hearth_running_sequences", 0) == 0 and m.get("hearth_queue_depth", 0) == 0:
            break
        time.sleep(0.1)
    leaked = m.get("hearth_running_sequences", 0) + m.get("hearth_queue_depth", 0)
    print(f"cancellation: {total} streamed requests, half dropped mid-stream -> running+queued {leaked:.0f}, "
          f"running KV bytes {m.get('hearth_kv_cache_bytes', 0):.0f}, prompt-cache bytes {m.get('hearth_prompt_cache_bytes', 0):.0f} (bounded)")
    return leaked == 0 and m.get("hearth_kv_cache_bytes", 0) == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default="smollm2", help="a model id, or several (comma-separated) that requests take in turn")
    ap.add_argument("--label", default="server")
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level (at least the concurrency)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--cancel-check", type=int, default=0, help="also stream this many requests, half cancelled (Hearth only)")
    ap.add_argument("--json", help="append results to this JSON-lines file")
    ap.add_argument("--ignore-eos", action="store_true", help="every reply runs to --max-tokens (vLLM's ignore_eos; Hearth and vLLM)")
    a = ap.parse_args()
    models = a.model.split(",")
    for i in range(len(models)):
        one_request(a.base, models, i, 4)  # warm-up: loads each model
    rows = []
    for c in map(int, a.concurrency.split(",")):
        r = level(a.base, models, c, max(a.requests, c), a.max_tokens, a.ignore_eos)
        r["label"] = a.label
        rows.append(r)
        print(f"{a.label:>10}  c={c:<3} {r['tok_s']:8.1f} tok/s  p50 {r['p50']:6.2f}s  p95 {r['p95']:6.2f}s  ({r['requests']} requests, {r['tokens']} tokens)", flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(r) + "\n")
    ok = True
    if a.cancel_check:
        ok = cancellation_check(a.base, models[0], a.cancel_check)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
