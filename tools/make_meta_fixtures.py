#!/usr/bin/env python3
"""Makes a Meta-format copy of a Hugging Face Llama fixture, by inverting transformers' conversion.

    pip install torch safetensors
    python3 tools/make_meta_fixtures.py [fixtures_dir]      (default tests/fixtures/llama)

Reads <fixtures_dir>/llama_gqa (config.json + model.safetensors, from make_llama_fixtures.py)
and writes <fixtures_dir>/llama_gqa_meta as Meta's reference code saves a model-parallel
checkpoint (llama/model.py, fairscale layers):
    params.json               dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of,
                              ffn_dim_multiplier, norm_eps, rope_theta
    consolidated.NN.pth       one torch.save state dict per model-parallel rank (SHARDS of them)

Each HF tensor is renamed to Meta's name, q/k rows are un-permuted back to Meta's interleaved
rotary layout (the inverse of convert_llama_weights_to_hf.py's permute), and the tensor is split
across ranks the way fairscale shards it: ColumnParallelLinear (wq, wk, wv, w1, w3, output) on
dim 0, RowParallelLinear (wo, w2) and Llama 2's ParallelEmbedding (tok_embeddings) on dim 1,
norms replicated. The script then checks, with torch, that merging and permuting as the
converter does gives back the HF tensors bit for bit, and that the FFN size Meta derives from
params.json is the fixture's intermediate_size. The goldens are llama_gqa's: same model.
"""
import json
import os
import re
import shutil
import sys
from collections import OrderedDict

import torch
from safetensors.torch import load_file

FIXTURES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "fixtures", "llama")
SOURCE, TARGET = "llama_gqa", "llama_gqa_meta"
SHARDS = 2
# dim 64: 4*64 = 256 -> int(2*256/3) = 170 -> int(0.75*170) = 127 -> multiple of 32: 128.
MULTIPLE_OF, FFN_DIM_MULTIPLIER = 32, 0.75

# Meta name pattern -> (HF name pattern, split dim: 0, 1 or None for replicated).
LAYER = {
    "attention.wq": ("self_attn.q_proj", 0),
    "attention.wk": ("self_attn.k_proj", 0),
    "attention.wv": ("self_attn.v_proj", 0),
    "attention.wo": ("self_attn.o_proj", 1),
    "feed_forward.w1": ("mlp.gate_proj", 0),
    "feed_forward.w2": ("mlp.down_proj", 1),
    "feed_forward.w3": ("mlp.up_proj", 0),
    "attention_norm": ("input_layernorm", None),
    "ffn_norm": ("post_attention_layernorm", None),
}
TOP = {
    "tok_embeddings": ("model.embed_tokens", 1),
    "norm": ("model.norm", None),
    "output": ("lm_head", 0),
}


def meta_names(n_layers):
    """(Meta name, HF name, split dim) for every tensor, in Meta's state-dict order."""
    out = [("tok_embeddings.weight", "model.embed_tokens.weight", 1)]
    for i in range(n_layers):
        for meta, (hf, dim) in LAYER.items():
            out.append((f"layers.{i}.{meta}.weight", f"model.layers.{i}.{hf}.weight", dim))
    out.append(("norm.weight", "model.norm.weight", None))
    out.append(("output.weight", "lm_head.weight", 0))
    return out


# transformers' convert_llama_weights_to_hf.py: Meta's interleaved rotary rows -> HF's halves.
def permute(w, n_heads, dim1, dim2):
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def unpermute(w, n_heads, dim1, dim2):
    return w.view(n_heads, 2, dim1 // n_heads // 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def ffn_size(dim, multiple_of, ffn_dim_multiplier):
    """FeedForward.__init__ of Meta's llama/model.py, with hidden_dim = 4 * dim."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def main():
    src, out = os.path.join(FIXTURES, SOURCE), os.path.join(FIXTURES, TARGET)
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    hf = load_file(os.path.join(src, "model.safetensors"))
    dim, n_heads = config["hidden_size"], config["num_attention_heads"]
    n_kv_heads = config["num_key_value_heads"]
    head_dim = dim // n_heads
    rope_theta = config.get("rope_parameters", {}).get("rope_theta", config.get("rope_theta"))
    assert config["head_dim"] == head_dim and not config["tie_word_embeddings"]
    assert ffn_size(dim, MULTIPLE_OF, FFN_DIM_MULTIPLIER) == config["intermediate_size"], \
        "params.json would not derive the fixture's intermediate_size"

    names = meta_names(config["num_hidden_layers"])
    assert sorted(h for _, h, _ in names) == sorted(hf), "the HF checkpoint has other tensors"
    shards = [OrderedDict() for _ in range(SHARDS)]
    for meta, name, dim_split in names:
        w = hf[name]
        if meta.endswith("attention.wq.weight"):
            w = unpermute(w, n_heads, n_heads * head_dim, dim)
        elif meta.endswith("attention.wk.weight"):
            w = unpermute(w, n_kv_heads, n_kv_heads * head_dim, dim)
        for rank in range(SHARDS):
            # clone(): torch.save writes a view's whole storage, so each part gets its own.
            part = w if dim_split is None else torch.chunk(w, SHARDS, dim=dim_split)[rank]
            shards[rank][meta] = part.clone().contiguous()

    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for rank, shard in enumerate(shards):
        torch.save(shard, os.path.join(out, f"consolidated.{rank:02d}.pth"))
    params = {"dim": dim, "n_layers": config["num_hidden_layers"], "n_heads": n_heads,
              "n_kv_heads": n_kv_heads, "vocab_size": config["vocab_size"],
              "multiple_of": MULTIPLE_OF, "ffn_dim_multiplier": FFN_DIM_MULTIPLIER,
              "norm_eps": config["rms_norm_eps"], "rope_theta": rope_theta}
    with open(os.path.join(out, "params.json"), "w") as f:
        json.dump(params, f, indent=2)
        f.write("\n")

    # Round trip as the converter does it: load the shards back, concatenate, permute.
    loaded = [torch.load(os.path.join(out, f"consolidated.{r:02d}.pth"), weights_only=True)
              for r in range(SHARDS)]
    for meta, name, dim_split in names:
        w = loaded[0][meta] if dim_split is None else torch.cat(
            [s[meta] for s in loaded], dim=dim_split)
        if dim_split is None:
            assert all(torch.equal(s[meta], w) for s in loaded), meta
        if re.search(r"attention\.wq\.weight$", meta):
            w = permute(w, n_heads, n_heads * head_dim, dim)
        elif re.search(r"attention\.wk\.weight$", meta):
            w = permute(w, n_kv_heads, n_kv_heads * head_dim, dim)
        assert w.dtype == hf[name].dtype and torch.equal(w, hf[name]), f"{meta} != {name}"
    with open(os.path.join(out, "params.json")) as f:
        p = json.load(f)
    assert ffn_size(p["dim"], p["multiple_of"], p["ffn_dim_multiplier"]) == \
        loaded[0]["layers.0.feed_forward.w1.weight"].shape[0] * SHARDS
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{TARGET}: {SHARDS} shards, {len(names)} tensors each, {size} bytes; "
          f"merged and permuted back they equal {SOURCE} exactly")


if __name__ == "__main__":
    main()
