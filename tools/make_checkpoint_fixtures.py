#!/usr/bin/env python3
"""Makes the checkpoint fixtures under tests/fixtures/checkpoints with the real writers.

    pip install torch safetensors numpy
    python3 tools/make_checkpoint_fixtures.py [out_dir]

Every tensor written is also listed in expected.json (file, name, dtype, shape and its values
as numbers) so the C++ tests compare what bindery reads with what the writer wrote. The random
generator is seeded: running the script again gives identical values (torch's zip writer may
still order records differently across versions, which the tests do not depend on).
"""
import io
import json
import os
import pickletools
import sys
import zipfile
from collections import OrderedDict

import torch
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "fixtures", "checkpoints")
gen = torch.Generator().manual_seed(1234)
expected = []  # {file, name, dtype, shape, values}

DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def rand(shape, dtype):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 3).to(dtype)
    lo, hi = (-100, 100) if dtype != torch.uint8 else (0, 255)
    if dtype == torch.int64:
        lo, hi = -(2**40), 2**40
    return torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64).to(dtype)


def record(file, name, t):
    if t.dtype.is_floating_point:
        values = t.to(torch.float64).reshape(-1).tolist()
    else:
        values = t.to(torch.int64).reshape(-1).tolist()
    expected.append({"file": file, "name": name, "dtype": DTYPE_NAMES[t.dtype],
                     "shape": list(t.shape), "values": values})


def path(*parts):
    p = os.path.join(OUT, *parts)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def every_dtype(prefix):
    tensors = OrderedDict()
    for i, dtype in enumerate(DTYPE_NAMES):
        tensors[f"{prefix}{DTYPE_NAMES[dtype].lower()}"] = rand((3, 5) if i % 2 else (7,), dtype)
    tensors[f"{prefix}scalar"] = torch.tensor(2.5, dtype=torch.float32)  # 0-dim
    tensors[f"{prefix}empty"] = torch.zeros((0, 4), dtype=torch.float32)
    tensors[f"{prefix}empty_i64"] = torch.zeros((3, 0), dtype=torch.int64)
    return tensors


def safetensors_fixtures():
    tensors = every_dtype("")
    save_file(dict(tensors), path("single", "model.safetensors"), metadata={"format": "pt"})
    for name, t in tensors.items():
        record("single/model.safetensors", name, t)

    # A sharded checkpoint as transformers writes it: two shards and an index.
    shards = [OrderedDict(), OrderedDict()]
    for layer in range(4):
        shard = shards[layer // 2]
        shard[f"model.layers.{layer}.weight"] = rand((4, 6), torch.bfloat16)
        shard[f"model.layers.{layer}.bias"] = rand((4,), torch.float32)
    shards[1]["lm_head.weight"] = rand((8, 6), torch.float16)
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(dict(shard), path("sharded", fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
            record(f"sharded/{fname}", name, t)
    with open(path("sharded", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def torch_state():
    """A state dict exercising the unpickler: every storage type, views and sharing."""
    state = OrderedDict()
    for name, t in every_dtype("").items():
        if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            continue  # typed storages for fp8 are not part of the legacy class list
        state[name] = t
    base = rand((6, 4), torch.float32)
    state["transposed"] = base.t()                 # non-contiguous strides (1, 4)
    state["row_view"] = base[2]                    # shares base's storage, offset 8
    state["column_slice"] = base[1:5, 1:3]         # offset and strides (4, 1), shape (4, 2)
    state["base"] = base
    wide = rand((4, 8), torch.bfloat16)
    state["bf16_every_other"] = wide[:, ::2]       # stride 2 in the last dim
    state["param"] = torch.nn.Parameter(rand((2, 3), torch.float32), requires_grad=False)
    return state


def torch_fixtures():
    state = torch_state()
    torch.save(state, path("torch", "pytorch_model.bin"))
    for name, t in state.items():
        record("torch/pytorch_model.bin", name, t.detach())

    nested = {"model": OrderedDict((k, state[k]) for k in ("f32", "bf16", "transposed")),
              "epoch": 3, "optimizer": "adam", "history": [state["i64"], 1.5]}
    torch.save(nested, path("torch_nested", "checkpoint.pt"))
    for k in ("f32", "bf16", "transposed"):
        record("torch_nested/checkpoint.pt", f"model.{k}", state[k].detach())
    record("torch_nested/checkpoint.pt", "history.0", state["i64"])

    # Sharded .bin with an index, as transformers writes it.
    shards = [OrderedDict(), OrderedDict()]
    for layer in range(2):
        shards[layer][f"model.layers.{layer}.weight"] = rand((3, 4), torch.float16)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, path("torch_sharded", fname))
        for name, t in shard.items():
            weight_map[name] = fname
            record(f"torch_sharded/{fname}", name, t)
    with open(path("torch_sharded", "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)

    # Meta's layout: consolidated.NN.pth shards split along a dim, and params.json.
    full = rand((4, 6), torch.bfloat16)
    for i, part in enumerate(torch.chunk(full, 2, dim=0)):
        shard = OrderedDict([("tok_embeddings.weight", part.clone()),
                             ("norm.weight", torch.ones(6, dtype=torch.bfloat16))])
        torch.save(shard, path("meta", f"consolidated.{i:02d}.pth"))
        for name, t in shard.items():
            record(f"meta/consolidated.{i:02d}.pth", name, t)
    with open(path("meta", "params.json"), "w") as f:
        json.dump({"dim": 6, "n_layers": 0, "n_heads": 1, "vocab_size": 4, "norm_eps": 1e-5}, f)

    # The pre-1.6 format, which bindery refuses with a clear error.
    torch.save(OrderedDict(w=state["f32"]), path("bad", "legacy_format.pt"),
               _use_new_zipfile_serialization=False)


class SystemCall:
    """Pickles to a call of os.system, as an attacker's checkpoint would."""

    def __reduce__(self):
        return (os.system, ("echo bindery-was-pwned > /tmp/bindery_pwned",))


def malicious_fixtures():
    # As torch.save writes it: on Linux os.system pickles as posix.system.
    torch.save({"w": torch.zeros(2), "payload": SystemCall()}, path("bad", "malicious_posix.pt"))
    # The same attack spelled os.system, inside an archive that is otherwise valid.
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path("bad", "malicious_os.pt"), "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = (b"\x80\x02cos\nsystem\nq\x00X\x14\x00\x00\x00echo bindery-was-pwnq"
                        b"\x01\x85q\x02Rq\x03.")
            dst.writestr(info, data)
    # A zip whose central directory is cut off.
    with open(path("torch", "pytorch_model.bin"), "rb") as f:
        data = f.read()
    with open(path("bad", "truncated_zip.bin"), "wb") as f:
        f.write(data[: len(data) - 40])


def main():
    safetensors_fixtures()
    torch_fixtures()
    malicious_fixtures()
    # Make sure the hand-written os.system pickle really is one (without running it).
    with zipfile.ZipFile(path("bad", "malicious_os.pt")) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = [op.name for op, _, _ in pickletools.genops(pkl)]
    assert "GLOBAL" in ops and "REDUCE" in ops, ops
    with open(path("expected.json"), "w") as f:
        json.dump({"torch": torch.__version__, "tensors": expected}, f, indent=1)
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(OUT) for n in ns)
    print(f"wrote {len(expected)} tensors, {size} bytes under {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
