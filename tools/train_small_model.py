#!/usr/bin/env python3
"""Trains the small real Llama models that bindery ships under models/.

    models/bible-llama            trained from scratch on the King James Bible
    models/bible-llama-fortunes   the same architecture fine-tuned from it on Unix fortune files

Both are transformers LlamaForCausalLM checkpoints (grouped-query attention, rope, SwiGLU, tied
embeddings) saved with save_pretrained in bfloat16, with a byte-level BPE tokenizer (GPT-2 style
ByteLevel pre-tokenizer, <|begin_of_text|> / <|end_of_text|> specials) made with `tokenizers`.

Steps (the corpora come from Debian packages; text and tokenizer go to build-data/, git-ignored):

    apt-get install -y bible-kjv fortunes fortune-mod    # bible-kjv pulls in bible-kjv-text
    python3 tools/train_small_model.py data              # build-data/{kjv,fortunes}.txt + tokenizer
    python3 tools/train_small_model.py base --out models/bible-llama                  # GPU, ~30 s
    python3 tools/train_small_model.py finetune --base models/bible-llama \\
        --out models/bible-llama-fortunes                                            # GPU, <1 min
    python3 tools/train_small_model.py sample models/bible-llama "And the LORD said"
    python3 tools/make_small_model_goldens.py

`data` runs where the Debian packages are (no GPU); `base` and `finetune` want a CUDA GPU (they
run on the CPU too, slowly: --tiny shrinks them to a smoke test). Everything is seeded (--seed):
the data order, the initial weights, the dropout masks. GPU kernels (cuBLAS, SDPA, atomics in the
backward pass) are not bit-reproducible, so a rerun gives other bits but the same quality: loss
within a few hundredths and the same kind of text. The tokenizer is trained deterministically from
the two corpora (KJV + fortunes, so the fine-tune needs no new tokens).

Corpora: the KJV text (public domain) is `bible -f Gen1:1-Rev22:21` from Debian's bible-kjv /
bible-kjv-text packages, one verse per line, chapters as documents. The fortunes are every file of
/usr/share/games/fortunes (Debian's fortunes and fortune-mod packages, offensive ones not
installed) except ascii-art, split at the '%' lines, one fortune per document. A training stream
is <|begin_of_text|> document <|end_of_text|> ... concatenated; windows of 257 tokens are drawn at
random offsets. One document in 50 is held out for validation; the saved weights are those of the
step with the lowest validation loss.
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "build-data")
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
FORTUNE_DIR = "/usr/share/games/fortunes"
FORTUNE_SKIP = {"ascii-art"}  # drawings, not text
HOLDOUT = 50                  # every 50th document is validation
SEQ = 256

ARCH = dict(vocab_size=8192, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
            num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512,
            rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
            attention_bias=False, mlp_bias=False, hidden_act="silu", initializer_range=0.02)
TINY = dict(ARCH, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)

# name: (corpus, steps, batch, peak lr, warmup, eval every, dropout). The KJV is ~1M tokens:
# past ~13 epochs a 12.6M-parameter model memorises it (validation loss rises), hence few steps.
RECIPES = {
    "base": ("kjv", 800, 64, 1.5e-3, 100, 50, 0.2),
    "finetune": ("fortunes", 600, 64, 8e-4, 50, 25, 0.2),
}


# ----------------------------------------------------------------------------------- corpora

def corpus_path(data, name):
    return os.path.join(data, f"{name}.txt")


def read_docs(data, name):
    """kjv.txt: chapters separated by blank lines; fortunes.txt: fortunes separated by '%'."""
    with open(corpus_path(data, name), encoding="utf-8") as f:
        text = f.read()
    docs = text.split("\n\n") if name == "kjv" else text.split("\n%\n")
    return [d.strip("\n") for d in docs if d.strip()]


def make_kjv():
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True,
                         text=True).stdout
    chapters, key = [], None
    for line in out.splitlines():
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if not m:
            raise SystemExit(f"unexpected line from bible: {line!r}")
        if (m[1], m[2]) != key:
            key = (m[1], m[2])
            chapters.append([])
        chapters[-1].append(m[4].strip())
    verses = sum(len(c) for c in chapters)
    if verses != 31102:
        raise SystemExit(f"expected 31102 verses, got {verses}")
    return "\n\n".join("\n".join(c) for c in chapters) + "\n", len(chapters)


def make_fortunes():
    docs = []
    for name in sorted(os.listdir(FORTUNE_DIR)):
        path = os.path.join(FORTUNE_DIR, name)
        if name in FORTUNE_SKIP or "." in name or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().replace("\r", "")
        for d in re.split(r"^%\s*$", text, flags=re.M):
            d = "\n".join(l.rstrip() for l in d.strip("\n").split("\n"))
            if d.strip():
                docs.append(d)
    return "\n%\n".join(docs) + "\n", len(docs)


def train_tokenizer(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, bos)])])
    return tok


def save_tokenizer(tok, out):
    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                 model_max_length=ARCH["max_position_embeddings"])
    hf.save_pretrained(out)
    # transformers 5 writes its own class name; the name every version reads (and Llama 3 uses):
    path = os.path.join(out, "tokenizer_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def cmd_data(args):
    os.makedirs(args.data, exist_ok=True)
    kjv, n_kjv = make_kjv()
    fortunes, n_fortunes = make_fortunes()
    for name, text in (("kjv", kjv), ("fortunes", fortunes)):
        with open(corpus_path(args.data, name), "w", encoding="utf-8") as f:
            f.write(text)
    print(f"kjv: {n_kjv} chapters, {len(kjv)} chars; fortunes: {n_fortunes} fortunes, "
          f"{len(fortunes)} chars")
    docs = read_docs(args.data, "kjv") + read_docs(args.data, "fortunes")
    tok = train_tokenizer(docs, ARCH["vocab_size"])
    out = os.path.join(args.data, "tokenizer")
    shutil.rmtree(out, ignore_errors=True)
    save_tokenizer(tok, out)
    for name in ("kjv", "fortunes"):
        d = read_docs(args.data, name)
        n = sum(len(e.ids) for e in tok.encode_batch(d, add_special_tokens=False))
        print(f"{name}: {len(d)} documents, {n} tokens ({sum(map(len, d)) / n:.2f} chars/token)")
    print(f"tokenizer: {tok.get_vocab_size()} tokens -> {out}")


# ---------------------------------------------------------------------------------- training

def token_streams(data, name):
    """Training and validation token streams: BOS doc EOS BOS doc EOS ..."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(data, "tokenizer", "tokenizer.json"))
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    docs = read_docs(data, name)
    enc = tok.encode_batch(docs, add_special_tokens=False)
    train, val = [], []
    for i, e in enumerate(enc):
        (val if i % HOLDOUT == HOLDOUT - 1 else train).append([bos] + e.ids + [eos])
    flat = lambda ds: torch.tensor([t for d in ds for t in d], dtype=torch.int64)
    return flat(train), flat(val)


def add_residual_dropout(model, p):
    """Dropout on each attention and MLP output (training only; nothing of it is saved)."""
    def attn_hook(m, inp, out):
        return (F.dropout(out[0], p, m.training),) + tuple(out[1:])

    def mlp_hook(m, inp, out):
        return F.dropout(out, p, m.training)
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(attn_hook)
        layer.mlp.register_forward_hook(mlp_hook)


def lr_at(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))  # cosine down to peak / 10


@torch.no_grad()
def evaluate(model, val, batch, device, autocast):
    model.eval()
    n = (len(val) - 1) // SEQ
    x = val[: n * SEQ].view(n, SEQ)
    y = val[1: n * SEQ + 1].view(n, SEQ)
    total = 0.0
    for i in range(0, n, batch):
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        with autocast():
            logits = model(input_ids=xb).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="sum").item()
    model.train()
    return total / (n * SEQ)


def generate(model, tok, prompt, n=60, temperature=0.0, top_k=0, seed=0):
    ids = tok(prompt, return_tensors="pt").input_ids.to(next(model.parameters()).device)
    kw = dict(max_new_tokens=n, do_sample=temperature > 0, pad_token_id=tok.eos_token_id)
    if temperature > 0:
        torch.manual_seed(seed)
        kw.update(temperature=temperature, top_k=top_k or None, top_p=None)
    out = model.generate(ids, **kw)
    return tok.decode(out[0], skip_special_tokens=True)


SAMPLE_PROMPTS = ["And the LORD said", "In the beginning", "Blessed are the",
                  "The meaning of life is", "A computer"]


def print_samples(model, tok, prompts=SAMPLE_PROMPTS, n=60):
    model.eval()
    for p in prompts:
        print(f"--- greedy: {generate(model, tok, p, n)!r}")
        print(f"--- t=0.8 top_k=40: {generate(model, tok, p, n, 0.8, 40)!r}")


def train(args, recipe):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    corpus, steps, batch, peak, warmup, every, dropout = RECIPES[recipe]
    args.dropout = dropout if args.dropout is None else args.dropout
    steps = args.steps or steps
    batch = args.batch or batch
    peak = args.lr or peak
    warmup = min(warmup, steps // 4)
    every = min(every, max(1, steps // 4))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else \
        (lambda: torch.autocast("cpu", enabled=False))

    tok_dir = os.path.join(args.data, "tokenizer")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    if recipe == "base":
        config = LlamaConfig(**(TINY if args.tiny else ARCH), bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id)
        model = LlamaForCausalLM(config)
    else:
        model = LlamaForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    model.config._attn_implementation = "sdpa"
    model.to(device).train()
    add_residual_dropout(model, args.dropout)
    n_params = sum(p.numel() for p in model.parameters())
    train_ids, val_ids = token_streams(args.data, corpus)
    print(f"{recipe}: {n_params} parameters, {corpus}: {len(train_ids)} training tokens, "
          f"{len(val_ids)} validation tokens; {steps} steps of {batch}x{SEQ} "
          f"({steps * batch * SEQ / len(train_ids):.1f} epochs), lr {peak}, device {device}",
          flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=peak, betas=(0.9, 0.95), eps=1e-8, fused=cuda)
    gen = torch.Generator().manual_seed(args.seed)
    best, best_state, best_step = float("inf"), None, -1
    val0 = evaluate(model, val_ids, batch, device, autocast)
    print(f"step 0: val {val0:.4f}", flush=True)
    t0, running = time.time(), None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, peak, warmup)
        starts = torch.randint(0, len(train_ids) - SEQ - 1, (batch,), generator=gen)
        idx = starts[:, None] + torch.arange(SEQ + 1)
        chunk = train_ids[idx].to(device, non_blocking=True)
        with autocast():
            logits = model(input_ids=chunk[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if (step + 1) % every == 0 or step + 1 == steps:
            val = evaluate(model, val_ids, batch, device, autocast)
            mark = ""
            if val < best:
                best, best_step, mark = val, step + 1, " *"
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            print(f"step {step + 1}: train {running:.4f} val {val:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                  f"{time.time() - t0:.0f}s{mark}", flush=True)
    model.load_state_dict(best_state)
    print(f"{recipe}: best val {best:.4f} (ppl {math.exp(best):.1f}) at step {best_step}, "
          f"train loss {running:.4f} at the end, {time.time() - t0:.0f}s", flush=True)

    model.eval()
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.eos_token_id
    model.to(torch.bfloat16)
    shutil.rmtree(args.out, ignore_errors=True)
    model.save_pretrained(args.out)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # as `data` wrote them
        shutil.copy(os.path.join(tok_dir, name), args.out)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"recipe": recipe, "corpus": corpus, "steps": steps, "batch": batch,
                   "seq": SEQ, "lr": peak, "warmup": warmup, "dropout": args.dropout,
                   "weight_decay": args.weight_decay, "seed": args.seed,
                   "parameters": n_params, "best_step": best_step,
                   "val_loss": round(best, 4), "train_loss_end": round(running, 4),
                   "base": os.path.basename(os.path.normpath(args.base)) if args.base else None,
                   "torch": torch.__version__,
                   "transformers": __import__("transformers").__version__}, f, indent=1)
        f.write("\n")
    print(f"saved {args.out}: {sorted(os.listdir(args.out))}")
    print_samples(model.float(), tok)


def cmd_sample(args):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    print_samples(model, tok, args.prompts or SAMPLE_PROMPTS, args.n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="corpora from the Debian packages + tokenizer")
    d.add_argument("--data", default=DATA)
    for name in ("base", "finetune"):
        p = sub.add_parser(name, help=f"train the {name} model")
        p.add_argument("--data", default=DATA)
        p.add_argument("--out", required=True)
        p.add_argument("--base", required=name == "finetune", default=None)
        p.add_argument("--steps", type=int, default=0)
        p.add_argument("--batch", type=int, default=0)
        p.add_argument("--lr", type=float, default=0.0)
        p.add_argument("--dropout", type=float, default=None)
        p.add_argument("--weight-decay", type=float, default=0.1)
        p.add_argument("--seed", type=int, default=1234 if name == "base" else 5678)
        p.add_argument("--tiny", action="store_true", help="small smoke-test architecture")
    s = sub.add_parser("sample", help="generate from a saved model (CPU)")
    s.add_argument("model")
    s.add_argument("prompts", nargs="*")
    s.add_argument("-n", type=int, default=60)
    args = ap.parse_args()
    if args.cmd == "data":
        cmd_data(args)
    elif args.cmd == "sample":
        cmd_sample(args)
    else:
        train(args, args.cmd)


if __name__ == "__main__":
    main()
