#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizers/: small tokenizers of the families bindery runs, test lines,
and what Hugging Face `tokenizers` makes of them (the truth tests/tokenizer/ compares against).

    python3 tools/train_small_model.py data     # once: build-data/{kjv,fortunes}.txt (Debian text)
    python3 tools/make_tokenizer_fixtures.py    # seconds; deterministic (--seed)

Tokenizers (trained here with `tokenizers` on the KJV and fortunes, both public domain):

    gpt2        byte-level BPE, ByteLevel pre-tokenizer (GPT-2's regex), RobertaProcessing, and
                added tokens with every flag: lstrip, rstrip, single_word, normalized
    llama3      byte-level BPE with Llama 3's Split regex + ByteLevel(use_regex=false),
                ignore_merges, <|begin_of_text|> etc. outside the model vocab, TemplateProcessing
    llama2      sentencepiece-style BPE as Llama 2 / Mistral v0.1 ship it: byte_fallback with
                <0xNN> tokens, normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer,
                decoder Replace / ByteFallback / Fuse / Strip
    metaspace   the same model behind a Metaspace pre-tokenizer (prepend_scheme first, split)
                and decoder Metaspace / ByteFallback / Fuse, as later Mistrals do
    qwen2       byte-level BPE laid out as Qwen2's tokenizer.json: normalizer NFC, Split with
                Qwen2's regex (single digits) + ByteLevel(use_regex=false), ByteLevel
                post-processor and decoder, merges as "a b" strings, <|endoftext|>,
                <|im_start|>, <|im_end|> after the model vocab
    bible-llama models/bible-llama/tokenizer.json, the shipped model's (not copied here)

Files:
    lines.jsonl.gz           >= 10,000 test texts, one JSON string per line: English (KJV,
                             fortunes), Greek, Cyrillic, CJK, Arabic, Devanagari, emoji (ZWJ
                             sequences, skin tones, flags), numbers, whitespace runs, punctuation,
                             special tokens in text, empty lines; then --normalization-lines
                             texts that Unicode normalization changes (decomposed letters, Hangul
                             jamo, compatibility characters, marks out of canonical order, code
                             points newer than Unicode 9.0) and Qwen2 chat turns
    <name>/tokenizer.json    the tokenizer (not for bible-llama)
    <name>.expected.jsonl.gz {"prefix": [...], "suffix": [...]} (what add_special_tokens puts
                             around a text), then one JSON object per line of lines.jsonl.gz:
                             {"ids": encode(add_special_tokens=False),
                              "special": encode(add_special_tokens=True) if it is not
                                         prefix + ids + suffix,
                              "decoded": decode(ids) if it differs from the text,
                              "decoded_skip": decode(special, skip_special_tokens=True) if it
                              differs from the text}
    <name>.random_ids.jsonl  decodes of random id lists (byte tokens, broken UTF-8, specials):
                             {"ids": [...], "decoded": ..., "decoded_skip": ...}
"""
import argparse
import gzip
import json
import os
import random
import shutil
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "build-data")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
SHIPPED = os.path.join(ROOT, "models", "bible-llama", "tokenizer.json")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|reserved_special_token_2|>", "<|eot_id|>"]
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Whole words appended to llama3's vocab that its merges do not produce: ignore_merges makes
# each one a single token.
LLAMA3_WORDS = ["ĠNebuchadnezzar", "Ġhallelujah", "ĠMethuselah", "Ġabomination", "ĠZerubbabel"]


def corpus(seed, chars):
    """KJV and fortunes documents, a seeded sample of about `chars` characters."""
    docs = []
    for name, sep in (("kjv", "\n\n"), ("fortunes", "\n%\n")):
        path = os.path.join(DATA, f"{name}.txt")
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: run `python3 tools/train_small_model.py data`")
        with open(path, encoding="utf-8") as f:
            docs += [d for d in f.read().split(sep) if d.strip()]
    rng = random.Random(seed)
    rng.shuffle(docs)
    out, total = [], 0
    for d in docs:
        out.append(d)
        total += len(d)
        if total >= chars:
            break
    return docs, out


# ------------------------------------------------------------------------------- tokenizers

def train_gpt2(texts, vocab_size):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False),
                            AddedToken("[SEP]", rstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("verily", single_word=True, normalized=False),
                    AddedToken("LORD God", normalized=True)])
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
        trim_offsets=True, add_prefix_space=False)
    return json.loads(tok.to_str())


def train_llama3(texts, vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import trainers
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    for w in LLAMA3_WORDS:
        if w not in vocab:
            vocab[w] = len(vocab)
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens(LLAMA3_SPECIALS)  # ids after the model vocab, as in Llama 3
    bos = tok.token_to_id(LLAMA3_SPECIALS[0])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single=f"{LLAMA3_SPECIALS[0]} $A",
            pair=f"{LLAMA3_SPECIALS[0]} $A {LLAMA3_SPECIALS[0]} $B",
            special_tokens=[(LLAMA3_SPECIALS[0], bos)])])
    return json.loads(tok.to_str())


def train_qwen2(texts, vocab_size):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    # ids after the model vocab (151643.. in Qwen2), matched on the raw text
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_SPECIALS])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                              use_regex=False)
    j = json.loads(tok.to_str())
    # As Qwen2's file has them (decoders.ByteLevel() takes no options; they do not matter).
    j["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False}
    # Qwen2's model section: every field spelled out, merges as "a b" strings.
    m = j["model"]
    j["model"] = {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False, "vocab": m["vocab"],
                  "merges": [" ".join(pair) for pair in m["merges"]]}
    return j


def train_sentencepiece(texts, vocab_size):
    """Llama 2's layout: <unk> <s> </s>, then <0x00>..<0xFF>, then the pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens)
    tok.train_from_iterator(texts, trainer=trainer)
    j = json.loads(tok.to_str())
    # The byte tokens are ordinary pieces in Llama 2 (so "<0x41>" typed in text is not one).
    j["added_tokens"] = [t for t in j["added_tokens"] if t["content"] not in byte_tokens]
    return j


def as_llama2(sp):
    from tokenizers import Tokenizer
    j = json.loads(json.dumps(sp))
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    j["pre_tokenizer"] = None
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    bos = j["model"]["vocab"]["<s>"]
    j["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}}}
    # Llama 2's file has merges as "a b" strings; keep that form here (the others use pairs).
    j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    tok = Tokenizer.from_str(json.dumps(j))
    # A normalized, non-special added token: matched as its normalized form "▁Jehovah".
    from tokenizers import AddedToken
    tok.add_tokens([AddedToken("Jehovah", normalized=True)])
    return json.loads(tok.to_str())


def as_metaspace(sp):
    j = json.loads(json.dumps(sp))
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                          "split": True}
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    bos, eos = j["model"]["vocab"]["<s>"], j["model"]["vocab"]["</s>"]
    j["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]},
                           "</s>": {"id": "</s>", "ids": [eos], "tokens": ["</s>"]}}}
    return j


# ------------------------------------------------------------------------------- test lines

SCRIPTS = {  # (first, last) code points; unassigned, control and private ones are skipped
    "greek": [(0x0370, 0x03FF), (0x1F00, 0x1FFF)],
    "cyrillic": [(0x0400, 0x04FF)],
    "cjk": [(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0x3000, 0x303F), (0xAC00, 0xD7A3)],
    "arabic": [(0x0600, 0x06FF)],
    "devanagari": [(0x0900, 0x097F)],
    "hebrew": [(0x0590, 0x05FF)],
    "latin": [(0x00C0, 0x024F), (0x1E00, 0x1EFF)],
}
GREEK_WORDS = ["Ἐν ἀρχῇ ἦν ὁ λόγος", "καὶ ὁ λόγος ἦν πρὸς τὸν θεόν", "Πάτερ ἡμῶν", "ΑΒΓΔ αβγδ"]
RUSSIAN_WORDS = ["В начале было Слово", "и Слово было у Бога", "Привет, мир!", "ЁЖИК ёжик"]
CJK_WORDS = ["太初有道，道与神同在，道就是神。", "こんにちは世界", "起初神創造天地。", "안녕하세요 세계"]
ARABIC_WORDS = ["في البدء كان الكلمة", "مرحبا بالعالم", "١٢٣٤٥٦٧٨٩٠"]
HINDI_WORDS = ["आदि में वचन था", "नमस्ते दुनिया", "०१२३४५६७८९"]
EMOJI = ["😀", "😂", "🙏", "❤️", "🔥", "👍", "👍🏽", "👋🏿", "🧑🏻‍💻", "👨‍👩‍👧‍👦", "👩‍❤️‍💋‍👨",
         "🏳️‍🌈", "🇺🇸", "🇯🇵", "🇩🇪", "1️⃣", "#️⃣", "🤷‍♀️", "🐕‍🦺", "✅", "☃", "♥", "🎉🎉🎉",
         "😀😀", "🫠", "🦀", "🧀"]
NUMBERS = ["0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159", "2.718281828",
           "1,000,000", "-42", "+7", "1e10", "0x1F", "0b1011", "12:30", "2024-01-31",
           "3/4", "50%", "$19.99", "€5", "10^6", "½", "²", "Ⅻ", "٣", "७"]
WHITESPACE = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", "\r",
              " \n", "\n ", " \t \n  ", "\u00a0", "\u3000", "\u2028", "\u2003", "\u000b",
              "\u000c", "\u0085", "        \n"]
PUNCT = ["!", "?", ".", ",", ";", ":", "...", "!!!", "?!", "—", "–", "-", "--", "'", "\"",
         "«", "»", "“", "”", "‘", "’", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "|",
         "@", "#", "$", "%", "^", "&", "*", "_", "=", "+", "~", "`", "¿", "¡", "§", "©", "•",
         "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Ve", "don't", "I'm",
         "they'RE", "o'clock", "rock'n'roll"]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|reserved_special_token_0|>", "<|endoftext|>", "<s>", "</s>",
            "<unk>", "<mask>", " <mask>", "<mask> ", "[SEP]", "[SEP]  ", "verily", "Verily",
            "verily,", "xverily", "verilyx", " verily ", "_verily", "LORD God", "LORD  God",
            "Jehovah", " Jehovah", "Jehovahs", "<0x41>", "<0xE2>", "<|begin_of_", "<|", "|>",
            "<<s>>", "<s><s>", "</s></s>", "<|begin_of_text|><|begin_of_text|>"]
# Text that NFC, NFD, NFKC or NFKD changes: decomposed letters, Hangul jamo (old ones and the
# fillers do not compose), compatibility characters, marks out of canonical order, composition
# exclusions, code points newer than Unicode 9.0 (tokenizers' tables are 9.0's: it leaves them),
# and marks after an added token (each piece between added tokens is normalized on its own).
NORMALIZATION_WORDS = [
    "e\u0301", "cafe\u0301", "Cafe\u0301 au lait", "re\u0301sume\u0301", "nai\u0308ve",
    "Zoe\u0308", "A\u030a", "A\u030angstro\u0308m", "\u212b", "\u212bngstr\u00f6m",
    "\u00c5ngstr\u00f6m", "\u2126", "\u212a", "Sa\u0303o Paulo", "Vie\u0323\u0302t Nam",
    "Vi\u00ea\u0323t Nam", "Ti\u00ea\u0301ng Vi\u1ec7t",
    "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165",
    "\u110b\u1161\u11ab\u1102\u1167\u11bc\u1112\u1161\u1109\u1166\u110b\u116d",
    "\uac00\u11a8", "\u1100\u1161", "\u1113\u1161", "\u1100\u1176", "\u115f\u1160",
    "\ufb01", "\ufb01nancial \ufb02ow", "\ufb00", "\ufb03", "\ufb06", "\u00b2", "x\u00b2 + y\u00b2",
    "\u2460\u2461\u2462", "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48",
    "\uff8a\uff9d\uff76\uff78", "\u3392", "\u2122", "\u00bd", "\u2153", "\u210c",
    "\U0001d400\U0001d401", "\u00a0", "\u2002", "\u3000", "\u00a8", "\u00b4", "\u02d8",
    "\u0132", "\u01c4", "\u1e9b\u0323", "a\u0301\u0323", "a\u0323\u0301", "q\u0307\u0323",
    "\u0958", "\u0915\u093c", "\u09dc", "\uf900", "\uf91f", "\u2f00", "\u0344", "\u0340",
    "\u0374", "\u037e", "\u0387", "\u1f71", "\u1fee", "\u304b\u3099", "\u30cf\u309a",
    "\uff76\uff9e", "A\u030a\u0301", "\u0627\u0653", "\u0648\u0654", "\u05d1\u05bc", "\ufb2c",
    "\u0dd9\u0dcf\u0dca", "\u0b47\u0b3e", "\u1025\u102e", "\u0f71\u0f72", "\u0f73", "\u2260",
    "=\u0338", "<\u0338",
    "\u32ff", "\ua7f2", "a\u1df6\u0334", "a\u0334\u1df6", "\U0001fbf1", "\U0001f16c",
    "\U00011935\U00011930",
    "e\u0301<|im_end|>", "<|im_start|>\u0301", "e<|endoftext|>\u0301", "A<|im_end|>\u030a",
]
CHAT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")
COMBINING_MARKS = [(0x0300, 0x036F), (0x0591, 0x05C7), (0x0610, 0x061A), (0x064B, 0x065F),
                   (0x0951, 0x0954), (0x1DC0, 0x1DFF), (0x20D0, 0x20F0), (0x3099, 0x309A)]
COMPATIBILITY = [(0x00A0, 0x00BF), (0x0132, 0x0149), (0x01C4, 0x01CC), (0x02B0, 0x02DD),
                 (0x1D2C, 0x1D6A), (0x2000, 0x200A), (0x2070, 0x209C), (0x2100, 0x218B),
                 (0x2460, 0x24FF), (0x2F00, 0x2FD5), (0x3131, 0x318E), (0x3200, 0x33FF),
                 (0xF900, 0xFAD9), (0xFB00, 0xFB4F), (0xFE30, 0xFE6B), (0xFF01, 0xFFEE),
                 (0x1D400, 0x1D7FF), (0x1F100, 0x1F1AD), (0x2F800, 0x2FA1D)]


def script_text(rng, ranges, n):
    out = []
    while len(out) < n:
        lo, hi = rng.choice(ranges)
        c = chr(rng.randint(lo, hi))
        if unicodedata.category(c) in ("Cn", "Co", "Cs", "Cc"):
            continue
        out.append(c)
    return "".join(out)


def random_unicode(rng, n):
    """Any assigned, non-control character of the BMP and the emoji planes."""
    out = []
    while len(out) < n:
        c = chr(rng.choice([rng.randint(0x20, 0x2FFF), rng.randint(0x3000, 0xFFFD),
                            rng.randint(0x1F300, 0x1FAFF)]))
        if unicodedata.category(c) in ("Cn", "Co", "Cs", "Cc"):
            continue
        out.append(c)
    return "".join(out)


def fragment(rng, english):
    kind = rng.choices(["english", "script", "words", "emoji", "number", "space", "punct",
                        "special", "unicode"], weights=[30, 10, 6, 8, 8, 10, 10, 8, 4])[0]
    if kind == "english":
        s = rng.choice(english)
        if rng.random() < 0.5:
            words = s.split(" ")
            a = rng.randrange(len(words))
            s = " ".join(words[a:a + rng.randint(1, 8)])
        return s
    if kind == "script":
        return script_text(rng, SCRIPTS[rng.choice(list(SCRIPTS))], rng.randint(1, 12))
    if kind == "words":
        return rng.choice(GREEK_WORDS + RUSSIAN_WORDS + CJK_WORDS + ARABIC_WORDS + HINDI_WORDS)
    if kind == "emoji":
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
    if kind == "number":
        return rng.choice(NUMBERS) if rng.random() < 0.6 else str(rng.randint(0, 10**rng.randint(1, 12)))
    if kind == "space":
        return rng.choice(WHITESPACE)
    if kind == "punct":
        return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 3)))
    if kind == "special":
        return rng.choice(SPECIALS)
    return random_unicode(rng, rng.randint(1, 6))


def make_lines(rng, docs, count):
    english = [l for d in docs for l in d.split("\n") if l.strip()]
    lines = ["", " ", "  ", "\t", "\n", "\r\n", "a", "A", "I", " a", "a ", "  a  ", "\u00a0",
             "Hello world", " Hello world", "Hello  world", "Hello\tworld", "Hello\nworld",
             "And the LORD said unto Moses", "In the beginning God created the heaven and the earth.",
             "<|begin_of_text|>", "<|begin_of_text|>And the LORD", " <|begin_of_text|> x ",
             "<s>", " <s>", "<s> ", "<s>hello", "hello<s>", "a</s>b", "<unk>", "▁", "▁▁a", " ▁",
             "<mask>", "a <mask> b", "a  <mask>", "[SEP]   b", "verily verily", "Verily, verily",
             "LORD God of hosts", "the Jehovah", "Jehovah", "<0x41>", "a\u180e b", "\u180e",
             # U+180E is whitespace to PCRE2 but not to Oniguruma, which tokenizers runs
             "!\u180e?", "\u180e!", "a \u180e\u180e b", "x\u180e\n", "1\u180e2"]
    lines += [rng.choice(english) for _ in range(count // 10)]
    while len(lines) < count:
        n = rng.choices([1, 2, 3, 4, 6, 8], weights=[30, 25, 20, 13, 8, 4])[0]
        parts = []
        for _ in range(n):
            parts.append(fragment(rng, english))
            r = rng.random()
            if r < 0.5:
                parts.append(" ")
            elif r < 0.6:
                parts.append(rng.choice(WHITESPACE))
        line = "".join(parts)
        if rng.random() < 0.1:
            line = line.strip()
        lines.append(line)
    return lines


def make_normalization_lines(rng, docs, count):
    """Texts that Unicode normalization changes, for the normalizers (Qwen2's NFC): in tokenizers
    each piece between added tokens is normalized on its own."""
    english = [l for d in docs for l in d.split("\n") if l.strip()]
    lines = list(NORMALIZATION_WORDS) + [CHAT.format(w) for w in NORMALIZATION_WORDS[:8]]
    jamo = ([chr(c) for c in range(0x1100, 0x1113)], [chr(c) for c in range(0x1161, 0x1176)],
            [chr(c) for c in range(0x11A8, 0x11C3)])
    while len(lines) < count:
        parts = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.choices(["decomposed", "word", "marks", "jamo", "compat", "other"],
                               weights=[30, 20, 15, 10, 15, 10])[0]
            if kind == "decomposed":
                parts.append(unicodedata.normalize(rng.choice(["NFD", "NFKD"]),
                                                   fragment(rng, english)))
            elif kind == "word":
                parts.append(rng.choice(NORMALIZATION_WORDS))
            elif kind == "marks":  # a base and marks in any order (canonical reordering)
                parts.append(rng.choice("aeiouAEOnNcsSyzkKw\u03b1\u0418\u05d0\u0627\u304b") +
                             script_text(rng, COMBINING_MARKS, rng.randint(1, 4)))
            elif kind == "jamo":  # leading, vowel and trailing jamo, or a syllable and a trailing
                s = ""
                for _ in range(rng.randint(1, 3)):
                    if rng.random() < 0.3:
                        s += chr(rng.randint(0xAC00, 0xD7A3)) + rng.choice(jamo[2])
                    else:
                        s += rng.choice(jamo[0]) + rng.choice(jamo[1])
                        s += rng.choice(jamo[2]) if rng.random() < 0.5 else ""
                parts.append(s)
            elif kind == "compat":
                parts.append(script_text(rng, COMPATIBILITY, rng.randint(1, 6)))
            else:
                parts.append(fragment(rng, english))
            parts.append(rng.choice([" ", " ", "", "\n"]))
        line = "".join(parts)
        if rng.random() < 0.1:
            line = CHAT.format(line)
        lines.append(line)
    return lines


# ------------------------------------------------------------------------------- expected

def expected(tok, lines):
    """The first record is {"prefix": [...], "suffix": [...]}: the ids add_special_tokens puts
    around a text (from the special-tokens mask of one encoding). A record has "special" only
    where encode(add_special_tokens=True) is not prefix + ids + suffix."""
    probe = tok.encode("a", add_special_tokens=True)
    mask = probe.special_tokens_mask
    first = mask.index(0)
    last = len(mask) - mask[::-1].index(0)
    prefix, suffix = probe.ids[:first], probe.ids[last:]
    out = [{"prefix": prefix, "suffix": suffix}]
    plain = tok.encode_batch(lines, add_special_tokens=False)
    special = tok.encode_batch(lines, add_special_tokens=True)
    for text, p, s in zip(lines, plain, special):
        rec = {"ids": p.ids}
        if s.ids != prefix + p.ids + suffix:
            rec["special"] = s.ids
        d = tok.decode(p.ids, skip_special_tokens=False)
        if d != text:
            rec["decoded"] = d
        d = tok.decode(s.ids, skip_special_tokens=True)
        if d != text:
            rec["decoded_skip"] = d
        out.append(rec)
    return out


def random_ids(tok, rng, count):
    vocab = tok.get_vocab_size(with_added_tokens=True)
    byte_ids = sorted(i for t, i in tok.get_vocab(with_added_tokens=True).items()
                      if len(t) == 6 and t.startswith("<0x"))  # get_vocab's order is random
    out = []
    for _ in range(count):
        n = rng.randint(0, 12)
        ids = []
        for _ in range(n):
            if byte_ids and rng.random() < 0.5:
                ids.append(rng.choice(byte_ids))
            elif rng.random() < 0.3:
                ids.append(rng.randrange(min(vocab, 300)))  # single bytes and specials
            else:
                ids.append(rng.randrange(vocab))
        out.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                    "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    return out


def write_jsonl(path, records, compress):
    data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for r in records).encode("utf-8")
    if compress:
        with open(path, "wb") as f:  # mtime 0 and no name: the same bytes on every run
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as g:
                g.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--lines", type=int, default=10000)
    ap.add_argument("--normalization-lines", type=int, default=800)
    ap.add_argument("--train-chars", type=int, default=2_000_000)
    args = ap.parse_args()
    from tokenizers import Tokenizer
    import tokenizers

    docs, train = corpus(args.seed, args.train_chars)
    sp = train_sentencepiece(train, 3000)
    made = {
        "gpt2": train_gpt2(train, 3000),
        "llama3": train_llama3(train, 3000),
        "llama2": as_llama2(sp),
        "metaspace": as_metaspace(sp),
        "qwen2": train_qwen2(train, 3000),
    }
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    tokenizers_by_name = {}
    for name, j in made.items():
        os.makedirs(os.path.join(args.out, name))
        text = json.dumps(j, ensure_ascii=False, separators=(",", ":")) + "\n"
        with open(os.path.join(args.out, name, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(text)
        tokenizers_by_name[name] = Tokenizer.from_str(text)
    with open(SHIPPED, encoding="utf-8") as f:
        tokenizers_by_name["bible-llama"] = Tokenizer.from_str(f.read())

    rng = random.Random(args.seed)
    lines = make_lines(rng, docs, args.lines)
    lines += make_normalization_lines(random.Random(args.seed + 2), docs, args.normalization_lines)
    changed = sum(unicodedata.normalize("NFC", l) != l for l in lines)
    print(f"{len(lines)} lines, {changed} of them changed by NFC")
    write_jsonl(os.path.join(args.out, "lines.jsonl.gz"), lines, compress=True)
    for name, tok in tokenizers_by_name.items():
        exp = expected(tok, lines)
        write_jsonl(os.path.join(args.out, f"{name}.expected.jsonl.gz"), exp, compress=True)
        rnd = random_ids(tok, random.Random(args.seed + 1), 300)
        write_jsonl(os.path.join(args.out, f"{name}.random_ids.jsonl"), rnd, compress=False)
        n = sum(len(r["ids"]) for r in exp[1:])
        print(f"{name}: {tok.get_vocab_size()} tokens, {len(lines)} lines -> {n} ids")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("Made by tools/make_tokenizer_fixtures.py (tokenizers "
                f"{tokenizers.__version__}, seed {args.seed}); see its docstring.\n")


if __name__ == "__main__":
    main()
