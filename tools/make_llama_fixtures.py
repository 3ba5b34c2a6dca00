#!/usr/bin/env python3
"""Makes tiny random Llama-family checkpoints and their golden outputs with transformers.

    pip install torch transformers safetensors
    python3 tools/make_llama_fixtures.py [out_dir]      (default tests/fixtures/llama)

One directory per model (config.json + model.safetensors, as save_pretrained writes them) and
a golden.safetensors beside it holding, for each prompt i:
    prompt.i       I64 [n]            the prompt's token ids
    logits.i       F32 [n, vocab]     fp32 logits at every prompt position (eager attention)
    logits_bf16.i  F32 [n, vocab]     the same with the whole model in bfloat16 (reference only)
    greedy.i       I64 [n + NEW]      prompt then NEW greedy tokens (argmax, fp32)
Weights are drawn with a large initializer_range so that logits are peaked, and a model's seed
is the first (in a fixed order) whose greedy tokens survive rounding its weights to bf16.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "fixtures", "llama")
NEW = 12
PROMPTS = [[1, 5, 9, 23, 42, 7, 100, 3], [1, 77, 13], [1, 200, 150, 99, 31, 64]]
COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, vocab_size=256, max_position_embeddings=256,
              initializer_range=0.25, rms_norm_eps=1e-5)

MODELS = {
    # Llama 2 style with grouped-query attention, untied head, plain rope.
    "llama_gqa": (LlamaConfig, LlamaForCausalLM, dict(rope_theta=10000.0), 11),
    # The same architecture, other weights: refit target.
    "llama_gqa_b": (LlamaConfig, LlamaForCausalLM, dict(rope_theta=10000.0), 12),
    # Llama 3.1 style: llama3 rope scaling and tied embeddings.
    "llama3": (LlamaConfig, LlamaForCausalLM, dict(
        tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}), 13),
    # Qwen2: q/k/v biases.
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(rope_theta=1000000.0), 14),
    # Mistral with a sliding window shorter than the prompts.
    "mistral": (MistralConfig, MistralForCausalLM, dict(sliding_window=4, rope_theta=10000.0), 15),
}


def greedy(model, prompt):
    ids = torch.tensor([prompt])
    for _ in range(NEW):
        logits = model(ids).logits[0, -1]
        ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    return ids[0]


def make(name, config_cls, model_cls, extra, seed):
    torch.manual_seed(seed)
    config = config_cls(**COMMON, **extra)
    config._attn_implementation = "eager"
    model = model_cls(config).eval()
    with torch.no_grad():  # norms start at ones; perturb them so their weights matter
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
            if n.endswith(".bias"):
                p.normal_(0, 0.1)
    out = os.path.join(OUT, name)
    model.save_pretrained(out)
    os.remove(os.path.join(out, "generation_config.json"))  # bindery reads config.json only
    golden = {}
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            ids = torch.tensor([prompt])
            golden[f"prompt.{i}"] = ids[0].to(torch.int64)
            golden[f"logits.{i}"] = model(ids).logits[0].float().contiguous()
            golden[f"greedy.{i}"] = greedy(model, prompt).to(torch.int64)
        # bindery's bf16 engines hold bf16 weights and compute in f32: the same model with its
        # weights rounded to bf16 must keep the first 8 greedy tokens, or the seed is a bad one.
        rounded = model.to(torch.bfloat16).to(torch.float32)
        agree = [bool((greedy(rounded, p)[: len(p) + 8] == golden[f"greedy.{i}"][: len(p) + 8]).all())
                 for i, p in enumerate(PROMPTS)]
        bf16 = model.to(torch.bfloat16)
        for i, prompt in enumerate(PROMPTS):
            golden[f"logits_bf16.{i}"] = bf16(torch.tensor([prompt])).logits[0].float().contiguous()
    if not all(agree):
        return False
    save_file(golden, os.path.join(out, "golden.safetensors"),
              metadata={"transformers": __import__("transformers").__version__,
                        "torch": torch.__version__, "new_tokens": str(NEW)})
    print(f"{name}: seed {seed}, {sum(p.numel() for p in model.parameters())} parameters")
    return True


# transformers 4.x spelling (rope_theta + rope_scaling): bindery must read both spellings.
ROPE_CASES = {
    "default": None,
    "linear": {"type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "yarn_mscale": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                    "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 16, "beta_slow": 2},
}


def rope_cases():
    """inv_freq and attention factor per rope type, from transformers' own functions."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    cases = []
    for name, scaling in ROPE_CASES.items():
        config_json = {"model_type": "llama", "vocab_size": 256, "hidden_size": 128,
                       "intermediate_size": 256, "num_hidden_layers": 1,
                       "num_attention_heads": 4, "num_key_value_heads": 2,
                       "max_position_embeddings": 256, "rope_theta": 50000.0,
                       "rope_scaling": scaling, "torch_dtype": "float32"}
        config = LlamaConfig(**{k: v for k, v in config_json.items() if k != "model_type"})
        rope_type = config.rope_parameters["rope_type"]
        if rope_type == "default":
            base = config.rope_parameters["rope_theta"]
            inv_freq = 1.0 / (base ** (torch.arange(0, 32, 2, dtype=torch.int64).float() / 32))
            factor = 1.0
        else:
            inv_freq, factor = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
        case = {"name": name, "config": config_json, "inv_freq": inv_freq.tolist(),
                "attention_factor": float(factor)}
        if rope_type == "dynamic":  # beyond max_position_embeddings the base grows
            long_freq, _ = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=300)
            case["dynamic_seq_len"] = 300
            case["dynamic_inv_freq"] = long_freq.tolist()
        cases.append(case)
    with open(os.path.join(OUT, "rope_cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


def main():
    rope_cases()
    for name, (config_cls, model_cls, extra, seed) in MODELS.items():
        # Seeds are tried in a fixed order, so the output is reproducible.
        while not make(name, config_cls, model_cls, extra, seed):
            seed += 1000


if __name__ == "__main__":
    main()
