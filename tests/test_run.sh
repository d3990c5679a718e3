#!/bin/sh
# SPDX-License-Identifier: MIT
#
# test_run.sh -- `infllm run` end to end on a tiny random checkpoint from `infllm model-init`:
# greedy and seeded output reproducible, the three stop conditions, the chat options, stdin, the
# prefill progress lines, and an exit status and message for every bad flag and file.
#
#   sh tests/test_run.sh build/infllm
set -u
infllm=${1:-build/infllm}
work=$(dirname "$infllm")/run-test
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

rm -rf "$work"
mkdir -p "$work"
m=$work/tiny
"$infllm" model-init --out "$m" --config tiny >/dev/null 2>&1 || { echo "FAIL: model-init"; exit 1; }

# run EXPECTED_STATUS NAME ARGS...: output in $work/out, messages in $work/err
run() {
    want=$1
    name=$2
    shift 2
    "$infllm" run "$@" >"$work/out" 2>"$work/err"
    got=$?
    if [ "$got" -eq "$want" ]; then ok; else bad "$name: exit $got, expected $want: $(head -c 300 "$work/err")"; fi
}
# has FILE TEXT NAME
has() { if grep -q -- "$2" "$1"; then ok; else bad "$3: '$2' not in: $(head -c 300 "$1")"; fi; }

# ---- reproducibility ----
run 0 "greedy" --model "$m" --prompt "The model reads the prompt" --max-tokens 24 --temperature 0
cp "$work/out" "$work/greedy1"
run 0 "greedy again, other seed" --model "$m" --prompt "The model reads the prompt" --max-tokens 24 --temperature 0 --seed 9
cmp -s "$work/out" "$work/greedy1" && ok || bad "greedy output differs between runs"
run 0 "seeded" --model "$m" --prompt "Hello" --max-tokens 40 --temperature 1 --top-p 0.95 --seed 7
cp "$work/out" "$work/seed7"
run 0 "seeded again" --model "$m" --prompt "Hello" --max-tokens 40 --temperature 1 --top-p 0.95 --seed 7
cmp -s "$work/out" "$work/seed7" && ok || bad "the same seed gave different text"
run 0 "other seed" --model "$m" --prompt "Hello" --max-tokens 40 --temperature 1 --top-p 0.95 --seed 8
cmp -s "$work/out" "$work/seed7" && bad "seeds 7 and 8 gave the same 40 tokens" || ok
run 0 "top-k 1 is greedy" --model "$m" --prompt "The model reads the prompt" --max-tokens 24 --temperature 0.7 --top-k 1
cmp -s "$work/out" "$work/greedy1" && ok || bad "--top-k 1 differs from greedy"

# ---- stop conditions ----
run 0 "max tokens" --model "$m" --prompt "Hello" --max-tokens 5 --temperature 1 --seed 3
has "$work/err" "decode 5 tokens" "max tokens"
has "$work/err" "stopped: max tokens" "max tokens"
run 0 "end token" --model "$m" --prompt "Hello" --max-tokens 3000 --temperature 1 --seed 1
has "$work/err" "stopped: end token" "end token"
run 0 "context full" --model "$m" --prompt "Hello world" --context 16 --max-tokens 100 --temperature 1 --seed 3
has "$work/err" "stopped: context full" "context full"
has "$work/err" "decode 5 tokens" "context full after 16 - 12 + 1 tokens"
run 0 "zero tokens" --model "$m" --prompt "Hello" --max-tokens 0
has "$work/err" "decode 0 tokens" "zero tokens"

# ---- chat, stdin, progress, attention ----
run 0 "chat" --model "$m" --prompt "Hi" --chat --system "Be brief." --no-think --max-tokens 4
printf 'from stdin' | "$infllm" run --model "$m" --prompt-file - --max-tokens 3 >/dev/null 2>"$work/err" && ok || bad "stdin prompt"
long=$(printf 'the quick brown fox %.0s' $(seq 1 40))
run 0 "progress" --model "$m" --prompt "$long" --chunk 16 --max-tokens 1
has "$work/err" "infllm run: prefill [0-9]*/[0-9]* tokens" "progress lines when stderr is not a terminal"
run 0 "dense" --model "$m" --prompt "Hello" --attention dense --max-tokens 3 --threads 1
run 0 "sparse" --model "$m" --prompt "Hello" --attention sparse --max-tokens 3

# ---- usage errors (2) ----
run 2 "no model" --prompt x
has "$work/err" "--model DIR is required" "no model"
run 2 "no prompt" --model "$m"
has "$work/err" "exactly one of --prompt" "no prompt"
run 2 "two prompts" --model "$m" --prompt x --prompt-file y
run 2 "bad attention" --model "$m" --prompt x --attention fast
has "$work/err" "expected auto, dense or sparse" "bad attention"
run 2 "negative temperature" --model "$m" --prompt x --temperature -1
run 2 "top-p 0" --model "$m" --prompt x --top-p 0
run 2 "top-p 2" --model "$m" --prompt x --top-p 2
run 2 "system without chat" --model "$m" --prompt x --system s
has "$work/err" "needs --chat" "system without chat"
run 2 "unknown flag" --model "$m" --prompt x --bogus
run 2 "bad int" --model "$m" --prompt x --max-tokens many
run 0 "help" --help
has "$work/out" "usage: infllm run" "help"

# ---- failures (1) ----
run 1 "missing model dir" --model "$work/nope" --prompt x
has "$work/err" "nope/tokenizer.json" "missing model dir"
run 1 "missing prompt file" --model "$m" --prompt-file "$work/nope.txt"
has "$work/err" "cannot open" "missing prompt file"
run 1 "prompt longer than the context" --model "$m" --prompt "$long" --context 8
has "$work/err" "the context holds 8" "prompt longer than the context"
b=$work/broken
mkdir -p "$b"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do ln -sf "$(cd "$m" && pwd)/$f" "$b/$f"; done
printf '{"temperature": 0.5,}' >"$b/generation_config.json"
run 1 "bad generation_config.json" --model "$b" --prompt x
has "$work/err" "generation_config.json: line 1, column 21" "bad generation_config.json"
printf '{"top_p": 3}' >"$b/generation_config.json"
run 1 "generation_config.json out of range" --model "$b" --prompt x
has "$work/err" "top_p" "generation_config.json out of range"
INFLLM_SIMD=bogus "$infllm" run --model "$m" --prompt x >"$work/out" 2>"$work/err" && bad "INFLLM_SIMD=bogus accepted" || ok
has "$work/err" "INFLLM_SIMD=bogus: expected auto, scalar, avx2 or avx512" "INFLLM_SIMD=bogus"
rm -f "$b/generation_config.json" "$b/tokenizer.json"
printf '{"model": {"vocab": {"a": 0}, "merges": ["a a"]}}' >"$b/tokenizer.json"
run 1 "bad tokenizer.json" --model "$b" --prompt x
has "$work/err" "is not in the vocabulary" "bad tokenizer.json"

echo "infllm run: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
