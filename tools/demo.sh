#!/usr/bin/env bash
# The main job on the model shipped in models/: build an engine from a real checkpoint, generate,
# refit it with a fine-tuned checkpoint in a blink, generate again from the same prompt.
#   tools/demo.sh [build-dir]      (run by ./bindery.sh demo after it has built bindery)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
BINDERY="$BUILD/bindery"
OUT="$BUILD/demo"
PROMPT=${PROMPT:-"And the LORD said unto Moses"}
SAMPLE=(--max-new-tokens 48 --temperature 0.8 --top-k 40 --seed 7 --stats)
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$1"; }

step "build an engine from models/bible-llama (12.6M-parameter Llama, KJV Bible, bf16)"
"$BINDERY" build models/bible-llama -o "$OUT/bible.plan" --refit

step "generate"
"$BINDERY" generate "$OUT/bible.plan" --prompt "$PROMPT" "${SAMPLE[@]}" 2>&1

step "refit with models/bible-llama-fortunes (the same model fine-tuned on fortunes)"
"$BINDERY" refit "$OUT/bible.plan" --from models/bible-llama-fortunes -o "$OUT/fortunes.plan"

step "generate again, same prompt, same seed"
"$BINDERY" generate "$OUT/fortunes.plan" --prompt "$PROMPT" "${SAMPLE[@]}" 2>&1

step "and back: refit in place with the original weights"
cp "$OUT/fortunes.plan" "$OUT/roundtrip.plan"
"$BINDERY" refit "$OUT/roundtrip.plan" --from models/bible-llama
"$BINDERY" generate "$OUT/roundtrip.plan" --prompt "$PROMPT" "${SAMPLE[@]}" 2>&1
