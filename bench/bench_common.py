"""Shared by the GPU benchmark scripts: the checkpoint's shards and one plain read of them."""
import os
import time


def shards_of(ckpt):
    return [os.path.join(ckpt, f) for f in sorted(os.listdir(ckpt)) if f.endswith(".safetensors")]


def read_weights_s(ckpt):
    """Reads every shard once, 64 MiB at a time (which leaves them in the page cache): the
    baseline a build is compared with. Returns (seconds, bytes)."""
    start, total, buf = time.perf_counter(), 0, bytearray(64 << 20)
    for f in shards_of(ckpt):
        with open(f, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                total += n
    return time.perf_counter() - start, total
