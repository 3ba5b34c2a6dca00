#!/usr/bin/env python3
"""Decode tokens/s at batch 1 on the CPU: bindery beside transformers, same model, same prompt,
same greedy tokens, measured in the same run.

    python3 bench/llama_decode_bench.py [--build build] [--new 64] [--json out.json]

Makes a ~100M-parameter random Llama (hidden 768, 8 layers, vocab 32000, fp32) in /tmp once,
runs build/bench/bench_llama_decode on it, then transformers' greedy decoding with a KV cache
(eager attention, torch threads = the machine's cores), and prints both and their ratio.
"""
import argparse
import json
import os
import subprocess
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PROMPT = [1, 306, 4658, 278, 6593, 310, 2834, 338]


def model_dir():
    path = "/tmp/bindery_llama_100m"
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                             num_attention_heads=12, num_key_value_heads=4, vocab_size=32000,
                             max_position_embeddings=1024, initializer_range=0.05)
        LlamaForCausalLM(config).save_pretrained(path)
    return path


def transformers_decode(path, new):
    model = LlamaForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        ids = torch.tensor([PROMPT])
        out = model(ids, use_cache=True)  # warm-up
        start = time.perf_counter()
        out = model(ids, use_cache=True)
        cache, token = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
        tokens = PROMPT + [int(token)]
        first = time.perf_counter()
        for _ in range(new - 1):
            out = model(token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
            tokens.append(int(token))
        end = time.perf_counter()
    return {"tokens": tokens, "prefill_s": first - start, "decode_tok_s": (new - 1) / (end - first),
            "params": params}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    path = model_dir()
    exe = os.path.join(args.build, "bench", "bench_llama_decode")
    # Rounds alternate between the two so that a noisy neighbour hurts both alike; the best
    # round of each is reported (and every round is kept in the JSON).
    ours_runs, their_runs = [], []
    for _ in range(args.rounds):
        ours_runs.append(json.loads(subprocess.run(
            [exe, path, "--tokens", ",".join(map(str, PROMPT)), "--new", str(args.new)],
            check=True, capture_output=True, text=True).stdout))
        their_runs.append(transformers_decode(path, args.new))
    ours = max(ours_runs, key=lambda r: r["decode_tok_s"])
    theirs = max(their_runs, key=lambda r: r["decode_tok_s"])
    same = ours["tokens"] == theirs["tokens"]
    ratio = ours["decode_tok_s"] / theirs["decode_tok_s"]
    print(f"model: {theirs['params'] / 1e6:.1f}M parameters, fp32, prompt {len(PROMPT)} tokens, "
          f"{args.new} new, torch threads {torch.get_num_threads()}")
    print(f"bindery       decode {ours['decode_tok_s']:7.2f} tok/s  prefill {ours['prefill_s']*1e3:7.1f} ms")
    print(f"transformers  decode {theirs['decode_tok_s']:7.2f} tok/s  prefill {theirs['prefill_s']*1e3:7.1f} ms")
    print(f"ratio {ratio:.2f}x (goal >= 1.5x); same greedy tokens: {same}; best of {args.rounds} rounds")
    print("rounds, bindery tok/s:      " + " ".join(f"{r['decode_tok_s']:.1f}" for r in ours_runs))
    print("rounds, transformers tok/s: " + " ".join(f"{r['decode_tok_s']:.1f}" for r in their_runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "llama_decode_cpu", "device": os.environ.get("BINDERY_DEVICE", os.uname().nodename),
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "commit": os.environ.get("BINDERY_COMMIT", "unknown"),
                       "params": theirs["params"], "prompt_tokens": len(PROMPT), "new_tokens": args.new,
                       "bindery": {k: v for k, v in ours.items() if k != "tokens"},
                       "transformers": {k: v for k, v in theirs.items() if k != "tokens"},
                       "ratio": ratio, "same_tokens": same, "torch_threads": torch.get_num_threads(),
                       "rounds": {"bindery_decode_tok_s": [r["decode_tok_s"] for r in ours_runs],
                                  "transformers_decode_tok_s": [r["decode_tok_s"] for r in their_runs]}},
                      f, indent=2)


if __name__ == "__main__":
    main()
