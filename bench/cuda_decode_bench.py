#!/usr/bin/env python3
"""Llama-3-8B decode on one GPU: bindery beside transformers (eager and torch.compile with a
static cache), the same random bf16 checkpoint and prompt, measured in one run, with the HBM
roofline measured in the same run.

    python3 bench/cuda_decode_bench.py --build build-device --out bench/results/decode-h100-DATE.json

Makes the checkpoint with tools/make_random_llama_checkpoint.py (HF layout, sharded safetensors,
the real Llama-3-8B config) unless --ckpt already holds one. Reports, per the CUDA backend
issue: bindery decode tok/s at batch 1 (prompt 128, 256 new tokens), prefill latency of 2048
tokens, engine build time (and the time to read the weights once), GPU memory; transformers
eager and torch.compile decode tok/s; the roofline = HBM bandwidth (a large device-to-device
copy, bytes read + written) / bytes read per decoded token (every weight but the embedding
table, plus the KV cache at the mean context). BINDERY_CUDA_PROFILE's per-layer-type GPU time
of bindery's decode steps is kept in the JSON.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import read_weights_s  # noqa: E402

import torch

PROMPT_LEN, NEW_TOKENS, PREFILL = 128, 256, 2048


def prompt_ids():  # the prompt bench_llama_decode --prompt-len makes
    return [1] + [1000 + (t * 7919) % 20000 for t in range(1, PROMPT_LEN)]


def hbm_gb_s():
    n = 4 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        best = max(best, 2 * n / (s.elapsed_time(e) / 1e3) / 1e9)
    del a, b
    torch.cuda.empty_cache()
    return best


def bindery_run(build, ckpt, profile=False, extra_env=None):
    """bench_llama_decode's JSON; with `profile`, a shorter run under BINDERY_CUDA_PROFILE (its
    events cost host time, so the figures come from a run without it)."""
    exe = os.path.join(build, "bench", "bench_llama_decode")
    env = dict(os.environ, BINDERY_CUDA_MAX_SEQUENCES="1", **(extra_env or {}))
    cmd = [exe, ckpt, "--dtype", "bfloat16", "--device", "cuda", "--prompt-len", str(PROMPT_LEN),
           "--max-seq-len", "2560"]
    if profile:
        env["BINDERY_CUDA_PROFILE"] = "1"
        cmd += ["--new", "64", "--prefill", str(PREFILL)]
    else:
        cmd += ["--new", str(NEW_TOKENS), "--prefill", str(PREFILL)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode})")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["profile"] = [l for l in r.stderr.splitlines() if l.startswith(("bindery cuda", "  "))]
    return out


def transformers_runs(ckpt, compile_too):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.bfloat16,
                                                 device_map="cuda").eval()
    ids = torch.tensor([prompt_ids()], device="cuda")
    res = {}
    with torch.no_grad():
        # eager: prefill, then one token per forward with the dynamic cache
        for rep in range(2):  # the first is a warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(ids, use_cache=True)
            cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            tokens = [int(tok)]
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            for _ in range(NEW_TOKENS - 1):
                out = model(tok, past_key_values=cache, use_cache=True)
                cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
                tokens.append(int(tok))
            torch.cuda.synchronize()
            t2 = time.perf_counter()
        res["transformers_eager"] = {"decode_tok_s": (NEW_TOKENS - 1) / (t2 - t1),
                                     "prefill_128_ms": (t1 - t0) * 1e3, "tokens": tokens}
        if compile_too:
            # transformers compiles the decoding forward itself when the cache is static
            # (wrapping model.forward in torch.compile as well breaks its CUDA graphs).
            model.generation_config.cache_implementation = "static"
            kw = dict(do_sample=False, pad_token_id=0)
            c0 = time.perf_counter()
            for _ in range(2):  # compile, then capture
                model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **kw)
            compile_s = time.perf_counter() - c0
            times = {}
            for n in (1, NEW_TOKENS):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                g = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
                torch.cuda.synchronize()
                times[n] = time.perf_counter() - t0
            res["torch_compile"] = {
                "decode_tok_s": (NEW_TOKENS - 1) / (times[NEW_TOKENS] - times[1]),
                "generate_256_s": times[NEW_TOKENS], "compile_and_warmup_s": compile_s,
                "how": "generate() with cache_implementation='static' (transformers compiles "
                       "the decoding forward)",
                "tokens": g[0, PROMPT_LEN:].tolist()}
    del model
    torch.cuda.empty_cache()
    return res


def bindery_variants(args, per_token, bw, read_s):
    """Decode tok/s of the default run and of each variant, whether their greedy tokens agree,
    and the default's profile."""
    variants = [("default", {})]
    for v in args.variant:
        name, _, assignments = v.partition("=")
        variants.append((name, dict(a.split("=", 1) for a in assignments.split(","))))
    roofline = bw * 1e9 / per_token
    result = {"device": torch.cuda.get_device_name(0), "date": datetime.date.today().isoformat(),
              "commit": os.environ.get("BINDERY_COMMIT", "unknown"), "hbm_gb_s": bw,
              "roofline_tok_s": roofline, "read_weights_s": read_s, "runs": {}}
    tokens = None
    for name, env in variants:
        r = bindery_run(args.build, args.ckpt, extra_env=env)
        tokens = tokens or r["tokens"]
        result["runs"][name] = {
            "env": env, "decode_tok_s": r["decode_tok_s"],
            "decode_vs_roofline": r["decode_tok_s"] / roofline,
            "prefill_2048_ms": r["prefill_long_s"] * 1e3, "build_s": r["build_s"],
            "tokens_agree_with_default": r["tokens"] == tokens}
        print(name, json.dumps(result["runs"][name]), flush=True)
    result["profile"] = bindery_run(args.build, args.ckpt, profile=True)["profile"]
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print("\n".join(result["profile"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-device")
    ap.add_argument("--ckpt", default="/tmp/llama-3-8b")
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--bindery-only", action="store_true",
                    help="bindery alone, once per --variant, and the profile: a quick check")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=VAR=VALUE[,VAR=VALUE]: a bindery run under these variables")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.ckpt, "model.safetensors.index.json")):
        subprocess.run([sys.executable, "tools/make_random_llama_checkpoint.py", "--model",
                        "llama-3-8b", "--out", args.ckpt], check=True)
    config = json.load(open(os.path.join(args.ckpt, "config.json")))
    bw = hbm_gb_s()
    read_s, weight_bytes = read_weights_s(args.ckpt)
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    d = h // config["num_attention_heads"]
    embed_bytes = config["vocab_size"] * h * 2
    mean_context = PROMPT_LEN + NEW_TOKENS / 2
    kv_bytes = layers * 2 * config["num_key_value_heads"] * d * 2 * mean_context
    per_token = weight_bytes - embed_bytes + kv_bytes
    if args.bindery_only:
        return bindery_variants(args, per_token, bw, read_s)
    bindery = bindery_run(args.build, args.ckpt)
    bindery["profile"] = bindery_run(args.build, args.ckpt, profile=True)["profile"]
    with open(args.out + ".partial", "w") as f:  # kept if the transformers runs do not finish
        json.dump({"hbm_gb_s": bw, "bytes_per_token": per_token, "read_weights_s": read_s,
                   "bindery": bindery}, f, indent=1)
    theirs = transformers_runs(args.ckpt, not args.no_compile)
    roofline = bw * 1e9 / per_token
    result = {
        "device": torch.cuda.get_device_name(0),
        "date": datetime.date.today().isoformat(),
        "commit": os.environ.get("BINDERY_COMMIT", "unknown"),
        "model": "Llama-3-8B shape, random bf16 weights (tools/make_random_llama_checkpoint.py)",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "prompt_tokens": PROMPT_LEN, "new_tokens": NEW_TOKENS,
        "hbm_gb_s": bw, "bytes_per_token": per_token, "roofline_tok_s": roofline,
        "weights_gb": weight_bytes / 1e9, "read_weights_s": read_s,
        "bindery": {
            "decode_tok_s": bindery["decode_tok_s"],
            "decode_vs_roofline": bindery["decode_tok_s"] / roofline,
            "prefill_2048_ms": bindery["prefill_long_s"] * 1e3,
            "build_s": bindery["build_s"], "plan_s": bindery["plan_s"],
            "engine_create_s": bindery["create_s"], "fill_from_checkpoint_s": bindery["fill_s"],
            "build_vs_read": bindery["build_s"] / read_s,
            "peak_gpu_gb": bindery["gpu_memory_engine_gb"],
            "prefill_128_ms": bindery["prefill_s"] * 1e3,
            "profile": bindery["profile"],
            "tokens": bindery["tokens"][PROMPT_LEN:],
        },
        **{k: {kk: vv for kk, vv in v.items() if kk != "tokens"} for k, v in theirs.items()},
    }
    eager = theirs["transformers_eager"]["tokens"]
    result["greedy_tokens_agree_with_transformers"] = sum(
        1 for _ in __import__("itertools").takewhile(lambda p: p[0] == p[1],
                                                      zip(result["bindery"]["tokens"], eager)))
    for k in theirs:
        result[k]["bindery_speedup"] = bindery["decode_tok_s"] / theirs[k]["decode_tok_s"]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "bindery"}, indent=1))
    print(json.dumps({k: v for k, v in result["bindery"].items() if k != "tokens"}, indent=1))


if __name__ == "__main__":
    main()
