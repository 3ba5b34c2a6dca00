#!/usr/bin/env python3
"""Makes tiny random Llama-family checkpoints and their golden outputs with transformers.

    pip install torch transformers safetensors
    python3 tools/make_llama_fixtures.py [out_dir] [--only NAME ...]
                                                 (default tests/fixtures/llama, every model)

One directory per model (config.json + model.safetensors, as save_pretrained writes them) and
a golden.safetensors beside it holding, for each prompt i:
    prompt.i       I64 [n]            the prompt's token ids
    logits.i       F32 [n, vocab]     fp32 logits at every prompt position (eager attention)
    logits_bf16.i  F32 [n, vocab]     the same with the whole model in bfloat16 (reference only)
    greedy.i       I64 [n + NEW]      prompt then NEW greedy tokens (argmax, fp32)
Weights are drawn with a large initializer_range so that logits are peaked, and a model's seed
is the first (in a fixed order) whose greedy tokens survive rounding its weights to bf16 (and,
for a mixture of experts, whose routing has no near-tie that rounding could flip).
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          MixtralConfig, MixtralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "llama")
NEW = 12
PROMPTS = [[1, 5, 9, 23, 42, 7, 100, 3], [1, 77, 13], [1, 200, 150, 99, 31, 64]]
COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, vocab_size=256, max_position_embeddings=256,
              initializer_range=0.25, rms_norm_eps=1e-5)

GPU_SHAPE = dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1, _bf16=True)

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
    # Mixtral: each MLP a sparse mixture of 4 experts, 2 per token (smaller experts keep the
    # checkpoint under 1 MB).
    "mixtral": (MixtralConfig, MixtralForCausalLM, dict(
        num_local_experts=4, num_experts_per_tok=2, intermediate_size=64, rope_theta=10000.0), 16),
    # GPU-shaped twins (head_dim 64, what the CUDA attention kernels take), stored in bf16: their
    # weights are bf16 from the start, so the goldens are those of the bf16 weights.
    "gpu_llama3": (LlamaConfig, LlamaForCausalLM, dict(
        GPU_SHAPE, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}), 23),
    "gpu_qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(GPU_SHAPE, rope_theta=1000000.0), 24),
    "gpu_mistral": (MistralConfig, MistralForCausalLM, dict(
        GPU_SHAPE, sliding_window=4, rope_theta=10000.0), 25),
    # Mixtral's 8 experts, 2 per token.
    "gpu_mixtral": (MixtralConfig, MixtralForCausalLM, dict(
        GPU_SHAPE, num_local_experts=8, num_experts_per_tok=2, intermediate_size=64,
        rope_theta=10000.0), 26),
}
# The smallest gap allowed between the k-th and (k+1)-th router probability of any token: a
# closer pair could swap under another summation order and route the token elsewhere.
ROUTER_MARGIN = 1e-3


def greedy(model, prompt):
    ids = torch.tensor([prompt])
    for _ in range(NEW):
        logits = model(ids).logits[0, -1]
        ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    return ids[0]


def router_margin(model, prompts):
    """The smallest top-k gap of router probabilities over every token, layer and prompt."""
    gaps = []

    def hook(module, args, output):
        probs = torch.softmax(output[0].float(), dim=-1).sort(dim=-1, descending=True).values
        k = module.top_k
        gaps.append((probs[:, k - 1] - probs[:, k]).min().item())

    handles = [layer.mlp.gate.register_forward_hook(hook) for layer in model.model.layers]
    with torch.no_grad():
        for p in prompts:
            model(p.view(1, -1))
    for h in handles:
        h.remove()
    return min(gaps)


def router_logits(model, prompts):
    """Each MoE layer's router logits (f32) for every token of every prompt, stacked."""
    out = []
    handles = [layer.mlp.gate.register_forward_hook(lambda m, a, o: out.append(o[0].float()))
               for layer in model.model.layers]
    with torch.no_grad():
        for p in prompts:
            model(p.view(1, -1))
    for h in handles:
        h.remove()
    return torch.cat(out)


def bf16_routing_margin(exact, rounded, k):
    """The smallest ratio, over every token and layer, of the gap between the k-th and (k+1)-th
    router logit of an f32 run (`exact`) to the largest change a bf16 run (`rounded`) makes to
    that token's logits."""
    top = exact.sort(dim=-1, descending=True).values
    noise = (rounded - exact).abs().max(dim=-1).values
    return ((top[:, k - 1] - top[:, k]) / noise.clamp_min(1e-6)).min().item()


def make(name, config_cls, model_cls, extra, seed):
    torch.manual_seed(seed)
    extra = dict(extra)
    bf16_weights = extra.pop("_bf16", False)
    config = config_cls(**{**COMMON, **extra})
    config._attn_implementation = "eager"
    moe = getattr(config, "num_local_experts", 0) > 0
    if moe:
        config._experts_implementation = "eager"  # the reference loop over experts
    model = model_cls(config).eval()
    with torch.no_grad():  # norms start at ones; perturb them so their weights matter
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
            if n.endswith(".bias"):
                p.normal_(0, 0.1)
            if bf16_weights:
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    out = os.path.join(OUT, name)
    if bf16_weights:
        # Not model.to(bfloat16): that would round the rotary inv_freq buffers too.
        model.save_pretrained(out, state_dict={k: v.to(torch.bfloat16)
                                               for k, v in model.state_dict().items()})
        with open(os.path.join(out, "config.json")) as f:
            saved = json.load(f)
        saved["dtype"] = "bfloat16"
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(saved, f, indent=2, sort_keys=True)
    else:
        model.save_pretrained(out)
    os.remove(os.path.join(out, "generation_config.json"))  # bindery reads config.json only
    golden = {}
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            ids = torch.tensor([prompt])
            golden[f"prompt.{i}"] = ids[0].to(torch.int64)
            golden[f"logits.{i}"] = model(ids).logits[0].float().contiguous()
            golden[f"greedy.{i}"] = greedy(model, prompt).to(torch.int64)
        # Routing must not hinge on rounding: no near-ties over the prompts and their greedy
        # continuations, with the fp32 weights and with them rounded to bf16 (below).
        seqs = [golden[f"greedy.{i}"] for i in range(len(PROMPTS))]
        margins = [router_margin(model, seqs)] if moe else []
        # bindery's bf16 engines hold bf16 weights and compute in f32: the same model with its
        # weights rounded to bf16 must keep the first 8 greedy tokens, or the seed is a bad one.
        rounded = model.to(torch.bfloat16).to(torch.float32)
        agree = [bool((greedy(rounded, p)[: len(p) + 8] == golden[f"greedy.{i}"][: len(p) + 8]).all())
                 for i, p in enumerate(PROMPTS)]
        if moe:
            margins.append(router_margin(rounded, seqs))
            agree.append(min(margins) > ROUTER_MARGIN)
        # A GPU twin is compared with these goldens from a bf16 run of its own, whose router
        # logits differ from transformers' bf16 ones by rounding: over the prompts and the first
        # new token (what CudaGolden runs), every top-k choice must stand clear of the next by
        # twice the change bf16 makes to the logits.
        short = [golden[f"greedy.{i}"][: len(p) + 1] for i, p in enumerate(PROMPTS)]
        exact_router = router_logits(model, short) if moe and bf16_weights else None
        bf16 = model.to(torch.bfloat16)  # in place: `model` is bf16 from here on
        for i, prompt in enumerate(PROMPTS):
            golden[f"logits_bf16.{i}"] = bf16(torch.tensor([prompt])).logits[0].float().contiguous()
        if exact_router is not None:
            agree.append(bf16_routing_margin(exact_router, router_logits(bf16, short),
                                             config.num_experts_per_tok) > 2)
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


def router_cases():
    """Mixtral routing (experts and weights per token) from transformers' own router, on logits
    with ties, where the choice is torch.topk's: rows of equal logits (a zero router), small
    integers, and logits so negative that their probabilities are 0."""
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter
    gen = torch.Generator().manual_seed(0)
    cases = []
    for experts, top_k in [(4, 1), (4, 2), (4, 3), (8, 2), (8, 3), (16, 4), (64, 1), (128, 2),
                           (128, 8)]:
        rows = [torch.zeros(experts), torch.randn(experts, generator=gen),
                torch.randint(0, 2, (experts,), generator=gen).float(),
                torch.randint(0, 3, (experts,), generator=gen).float(),
                torch.where(torch.arange(experts) % 3 == 0, -1e30, 0.5)]
        logits = torch.stack(rows)
        config = MixtralConfig(hidden_size=len(rows), num_local_experts=experts,
                               num_experts_per_tok=top_k)
        router = MixtralTopKRouter(config)
        with torch.no_grad():
            router.weight.copy_(logits.t())  # identity inputs give back exactly these logits
            out_logits, weights, indices = router(torch.eye(len(rows)))
        assert torch.equal(out_logits, logits)
        cases.append({"experts": experts, "top_k": top_k, "logits": logits.tolist(),
                      "indices": indices.tolist(), "weights": weights.tolist()})
    with open(os.path.join(OUT, "router_cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


def main():
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default=OUT)
    parser.add_argument("--only", nargs="+", choices=sorted(MODELS), metavar="NAME",
                        help="make only these models (and not rope_cases.json; router_cases.json "
                             "comes with mixtral)")
    args = parser.parse_args()
    OUT = args.out_dir
    if not args.only:
        rope_cases()
    if not args.only or "mixtral" in args.only:
        router_cases()
    for name, (config_cls, model_cls, extra, seed) in MODELS.items():
        if args.only and name not in args.only:
            continue
        # Seeds are tried in a fixed order, so the output is reproducible.
        while not make(name, config_cls, model_cls, extra, seed):
            seed += 1000


if __name__ == "__main__":
    main()
