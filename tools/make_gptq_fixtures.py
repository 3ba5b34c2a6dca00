#!/usr/bin/env python3
"""Makes GPTQ int4 checkpoints of tiny Llama fixtures and their golden outputs.

    pip install torch transformers safetensors
    python3 tools/make_gptq_fixtures.py [out_dir] [--only NAME ...]
                                                (default tests/fixtures/llama, every variant)

Each Linear of attention and MLP (q/k/v/o/gate/up/down) is quantized by a reference quantizer
written here (per group of 32 input rows, min/max asymmetric 4-bit) and packed as AutoGPTQ /
GPTQModel write checkpoints (the "gptq" v1 checkpoint format):
    <name>.qweight  I32 [in/8, out]       8 4-bit values along the input dim, value j of a word
                                          = (w >> 4j) & 0xF
    <name>.qzeros   I32 [groups, out/8]   zeros packed along the output dim, stored as zero - 1
    <name>.scales   F16 [groups, out]
    <name>.g_idx    I32 [in]              the group of each input row
Embeddings, norms and lm_head stay float, as GPTQ checkpoints keep them. The packing is checked
by unpacking it back. Goldens (golden.safetensors, the layout of make_llama_fixtures.py) come
from transformers' LlamaForCausalLM running the DEQUANTIZED float weights (a plain float
checkpoint written to a temporary directory), so an engine that dequantizes exactly matches them
up to the order of f32 sums.
Variants:
    llama_gqa_gptq       llama_gqa, group_size 32, desc_act false (g_idx = i // 32)
    llama_gqa_gptq_act   llama_gqa, group_size 32, desc_act true (g_idx a permutation of the
                         groups' rows)
    gpu_llama_gptq       gpu_llama3 (head_dim 64, what the CUDA attention takes; bf16 weights,
                         llama3 rope, tied embeddings), group_size 32, desc_act false
    gpu_llama_gptq_act   the same with desc_act true
The GPU variants' goldens add a prompt of LONG_PROMPT tokens (prompt.3): a CUDA engine runs
prompts of more than 8 tokens through its prefill path (the weights dequantized for a GEMM),
shorter ones through its decode GEMV.
"""
import argparse
import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from make_llama_fixtures import NEW, PROMPTS, greedy  # the same prompts and greedy loop

HERE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "llama")
OUT = HERE
GROUP = 32
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# name: (source fixture, desc_act, extra prompts)
LONG_PROMPT = [1] + [(37 * i + 11) % 253 + 3 for i in range(39)]  # 40 tokens, ids 3..255
VARIANTS = {
    "llama_gqa_gptq": ("llama_gqa", False, []),
    "llama_gqa_gptq_act": ("llama_gqa", True, []),
    "gpu_llama_gptq": ("gpu_llama3", False, [LONG_PROMPT]),
    "gpu_llama_gptq_act": ("gpu_llama3", True, [LONG_PROMPT]),
}


def quantize(w, g_idx, groups):
    """w: f32 [out, in]. Per (group, out) min/max asymmetric 4-bit. Returns q [in, out] int,
    zero [groups, out] int, scale [groups, out] f16."""
    wt = w.t()  # [in, out]
    scale = torch.empty(groups, w.shape[0])
    zero = torch.empty(groups, w.shape[0], dtype=torch.int64)
    for g in range(groups):
        rows = wt[g_idx == g]
        lo = torch.minimum(rows.min(0).values, torch.zeros(()))
        hi = torch.maximum(rows.max(0).values, torch.zeros(()))
        s = ((hi - lo) / 15).clamp(min=1e-8)
        # AutoGPTQ v1 stores zero - 1, so a zero of 0 cannot be stored: keep zeros in [1, 15].
        zero[g] = torch.round(-lo / s).clamp(1, 15).to(torch.int64)
        scale[g] = s
    scale = scale.to(torch.float16)
    s_rows = scale.float()[g_idx]  # [in, out]
    q = torch.round(wt / s_rows + zero[g_idx]).clamp(0, 15).to(torch.int64)
    return q, zero, scale


def pack_rows(q):  # [in, out] -> int32 [in/8, out], along the input dim
    q = q.view(q.shape[0] // 8, 8, q.shape[1])
    w = torch.zeros(q.shape[0], q.shape[2], dtype=torch.int64)
    for j in range(8):
        w |= q[:, j, :] << (4 * j)
    return _to_i32(w)


def pack_cols(z):  # [groups, out] -> int32 [groups, out/8], along the output dim
    z = z.view(z.shape[0], z.shape[1] // 8, 8)
    w = torch.zeros(z.shape[0], z.shape[1], dtype=torch.int64)
    for j in range(8):
        w |= z[:, :, j] << (4 * j)
    return _to_i32(w)


def _to_i32(w):  # uint32 bit patterns held in int64 -> int32 (two's complement)
    return torch.where(w >= 2**31, w - 2**32, w).to(torch.int32)


def unpack_rows(p):
    w = p.to(torch.int64) & 0xFFFFFFFF
    return torch.stack([(w >> (4 * j)) & 0xF for j in range(8)], 1).reshape(-1, p.shape[1])


def unpack_cols(p):
    w = p.to(torch.int64) & 0xFFFFFFFF
    return torch.stack([(w >> (4 * j)) & 0xF for j in range(8)], 2).reshape(p.shape[0], -1)


def make(name, source, desc_act, extra_prompts):
    src = os.path.join(HERE, source)
    out = os.path.join(OUT, name)
    os.makedirs(out, exist_ok=True)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    config = json.load(open(os.path.join(src, "config.json")))
    gen = torch.Generator().manual_seed(7)
    packed, dequant = {}, {}
    for n, t in tensors.items():
        prefix = n[: -len(".weight")]
        if not (n.endswith(".weight") and prefix.split(".")[-1] in LINEARS):
            if not (n == "lm_head.weight" and config.get("tie_word_embeddings")):
                packed[n] = t  # (a tied head's copy, which save_pretrained writes, is left out)
            dequant[n] = t
            continue
        out_f, in_f = t.shape
        groups = in_f // GROUP
        g_idx = torch.arange(in_f) // GROUP
        if desc_act:  # act-order: rows quantized in another order, so groups are scattered
            g_idx = g_idx[torch.randperm(in_f, generator=gen)]
        q, zero, scale = quantize(t.float(), g_idx, groups)
        qweight, qzeros = pack_rows(q), pack_cols(zero - 1)
        assert torch.equal(unpack_rows(qweight), q) and torch.equal(unpack_cols(qzeros) + 1, zero)
        w = ((q - zero[g_idx]).float() * scale.float()[g_idx]).t().contiguous()  # [out, in]
        assert (w - t).abs().max() < scale.float().max()
        packed.update({prefix + ".qweight": qweight, prefix + ".qzeros": qzeros,
                       prefix + ".scales": scale, prefix + ".g_idx": g_idx.to(torch.int32)})
        dequant[n] = w
    save_file(packed, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    qconfig = {"bits": 4, "group_size": GROUP, "desc_act": desc_act, "sym": False,
               "checkpoint_format": "gptq", "quant_method": "gptq"}
    config["quantization_config"] = qconfig
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump(qconfig, open(os.path.join(out, "quantize_config.json"), "w"), indent=2)
    # The golden model: the dequantized weights as a plain float checkpoint.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(src, "config.json"), tmp)
        save_file(dequant, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        # f32 even where the source config says bfloat16 (the GPU variants).
        model = LlamaForCausalLM.from_pretrained(tmp, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    golden = {}
    prompts = PROMPTS + extra_prompts
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([prompt])
            golden[f"prompt.{i}"] = ids[0].to(torch.int64)
            golden[f"logits.{i}"] = model(ids).logits[0].float().contiguous()
            golden[f"greedy.{i}"] = greedy(model, prompt).to(torch.int64)
        bf16 = model.to(torch.bfloat16)
        for i, prompt in enumerate(prompts):
            golden[f"logits_bf16.{i}"] = bf16(torch.tensor([prompt])).logits[0].float().contiguous()
    save_file(golden, os.path.join(out, "golden.safetensors"),
              metadata={"transformers": __import__("transformers").__version__,
                        "torch": torch.__version__, "new_tokens": str(NEW)})
    print(f"{name}: {source}, desc_act {desc_act}, {len(packed)} tensors, {len(prompts)} prompts")


def main():
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", nargs="?", default=OUT)
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), metavar="NAME")
    args = parser.parse_args()
    OUT = args.out_dir
    for name, (source, desc_act, extra_prompts) in VARIANTS.items():
        if not args.only or name in args.only:
            make(name, source, desc_act, extra_prompts)


if __name__ == "__main__":
    main()
