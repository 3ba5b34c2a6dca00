#!/usr/bin/env python3
"""Golden outputs of the shipped small models (models/*/), computed with transformers on the CPU.

    python3 tools/make_small_model_goldens.py [model_dir ...]   (default: every models/*/ with a
                                                                 config.json)

Writes golden.safetensors beside each model's model.safetensors, in the layout of
tests/fixtures/llama/*/golden.safetensors (tools/make_llama_fixtures.py), for each prompt i:
    prompt.i       I64 [n]            the prompt's token ids (the model's tokenizer, BOS first)
    logits.i       F32 [n, vocab]     fp32 logits at every prompt position (eager attention)
    logits_bf16.i  F32 [n, vocab]     the same with the whole model in bfloat16 (reference only)
    greedy.i       I64 [n + NEW]      prompt then NEW greedy tokens (argmax, fp32, no stopping at
                                      <|end_of_text|>)
The prompts' text is in the metadata ("prompt.i"), with the greedy continuations decoded
("greedy_text.i"). The checkpoints are stored in bfloat16; fp32 here means those weights upcast.
"""
import glob
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW = 12
PROMPTS = ["And the LORD said unto Moses", "In the beginning", "Blessed are the"]


def greedy(model, ids):
    """Prompt then NEW argmax tokens, and the smallest top-1 minus top-2 logit gap on the way."""
    ids, gap = ids[None], float("inf")
    for _ in range(NEW):
        logits = model(ids).logits[0, -1]
        top = logits.topk(2).values
        gap = min(gap, float(top[0] - top[1]))
        ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    return ids[0], gap


def make(path):
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    golden, meta = {}, {"transformers": __import__("transformers").__version__,
                        "torch": torch.__version__, "new_tokens": str(NEW)}
    gaps = []
    with torch.no_grad():
        for i, text in enumerate(PROMPTS):
            ids = tok(text, return_tensors="pt").input_ids[0].to(torch.int64)
            golden[f"prompt.{i}"] = ids
            golden[f"logits.{i}"] = model(ids[None]).logits[0].float().contiguous()
            tokens, gap = greedy(model, ids)
            golden[f"greedy.{i}"] = tokens.to(torch.int64)
            gaps.append(gap)
            meta[f"prompt.{i}"] = text
            meta[f"greedy_text.{i}"] = tok.decode(golden[f"greedy.{i}"])
        bf16 = model.to(torch.bfloat16)
        for i in range(len(PROMPTS)):
            golden[f"logits_bf16.{i}"] = bf16(golden[f"prompt.{i}"][None]).logits[0].float().contiguous()
    save_file(golden, os.path.join(path, "golden.safetensors"), metadata=meta)
    print(f"{os.path.relpath(path, ROOT)}: {sum(p.numel() for p in model.parameters())} parameters")
    for i in range(len(PROMPTS)):
        print(f"  {json.dumps(meta[f'greedy_text.{i}'])}  (smallest top-2 logit gap {gaps[i]:.3f})")


def main():
    paths = sys.argv[1:] or sorted(os.path.dirname(p) for p in
                                   glob.glob(os.path.join(ROOT, "models", "*", "config.json")))
    for p in paths:
        make(p)


if __name__ == "__main__":
    main()
