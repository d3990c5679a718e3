#!/bin/sh
# SPDX-License-Identifier: MIT
#
# test_faults.sh -- fault injection along the tool's create/load/write paths (SQLite's way).
#
#   sh tests/test_faults.sh build/san/infllm-faults [STRIDE]
#
# The binary is the sanitizer build linked with tests/fault_inject.c. For each path below it runs
# once to count the allocations A and writes W, then A times with the N-th allocation failing and
# W times with the N-th write failing (ENOSPC) -- every N, or every STRIDE-th (default 1). Each
# run must: exit 0 or 1 (no crash, no sanitizer report: ASan and LeakSanitizer exit 98 and 99
# here); on 1, leave the existing output files as they were and no temporary beside them; on 0,
# produce the reference outputs. Paths: attn (ref: context, selection, outputs), attn through a
# KV cache (cpu), grad (cpu), logits (checkpoint load, KV caches, output), run (tokenizer load,
# generation), model-init (a checkpoint folder written).
set -u
SETUP_NAME=faults SETUP_MAX_ARGS=2 SETUP_USAGE_MORE=" [STRIDE]"
. "$(dirname "$0")/tool_test_setup.sh"
STRIDE=${2:-1}
cd "$TMP" || exit 1
export ASAN_OPTIONS=detect_leaks=1:exitcode=98 LSAN_OPTIONS=exitcode=99 UBSAN_OPTIONS=halt_on_error=1
unset INFLLM_FAULT_ALLOC INFLLM_FAULT_WRITE INFLLM_FAULT_REPORT

python3 - "$HERE/oracle" <<'EOF' || exit 1
import sys, random
sys.path.insert(0, sys.argv[1])
import npy
r = random.Random(3)
def rnd(n): return [r.uniform(-1, 1) for _ in range(n)]
npy.save("q.npy", rnd(5 * 4 * 8), (5, 4, 8), "<f4")
npy.save("k.npy", rnd(9 * 2 * 8), (9, 2, 8), "<f4")
npy.save("v.npy", rnd(9 * 2 * 8), (9, 2, 8), "<f4")
npy.save("do.npy", rnd(5 * 4 * 8), (5, 4, 8), "<f4")
EOF
"$BIN" model-init --out m --config tiny --sparse >/dev/null 2>&1 || { echo "FAIL: model-init of the test checkpoint"; exit 1; }
echo "5 17 3 200 9 41 8" >t.txt
CFG="--block-size 4 --kernel-size 4 --kernel-stride 2 --coarse-kernel-size 8 --coarse-kernel-stride 4 --topk 2 --dense-len 6 --window 4"

FAILED=0
TOTAL=0
# path NAME OUTPUTS -- ARGS: OUTPUTS are the files the run writes ("-": stdout; "DIR/": a folder,
# absent beforehand); files exist beforehand holding "keep".
path() {
    name=$1 outs=$2
    shift 3
    # the reference run, counting
    for o in $outs; do o=${o%/}; [ "$o" = - ] || rm -rf "$o" "ref.$o"; done
    if ! INFLLM_FAULT_REPORT=1 "$BIN" "$@" >ref.stdout 2>ref.stderr; then
        echo "FAIL $name: the run without faults failed:"; sed 's/^/    /' ref.stderr | head -n 5
        FAILED=$((FAILED + 1))
        return
    fi
    for o in $outs; do o=${o%/}; [ "$o" = - ] || mv "$o" "ref.$o"; done
    counts=$(sed -n 's/^fault-inject: \([0-9]*\) allocations, \([0-9]*\) writes$/\1 \2/p' ref.stderr)
    n_alloc=${counts% *} n_write=${counts#* }
    bad=0 runs=0
    for kind in ALLOC WRITE; do
        [ $kind = ALLOC ] && last=$n_alloc || last=$n_write
        n=1
        while [ "$n" -le "$last" ]; do
            for o in $outs; do
                case $o in -) ;; */) rm -rf "$o" ;; *) echo keep >"$o" ;; esac
            done
            env "INFLLM_FAULT_$kind=$n" "$BIN" "$@" >run.stdout 2>run.stderr
            rc=$?
            runs=$((runs + 1))
            why=
            case $rc in
            0) for o in $outs; do
                   o=${o%/}
                   if [ "$o" = - ]; then cmp -s run.stdout ref.stdout || why="stdout differs from the reference"
                   elif [ -d "ref.$o" ]; then diff -r "$o" "ref.$o" >/dev/null 2>&1 || why="$o differs from the reference"
                   else cmp -s "$o" "ref.$o" || why="$o differs from the reference"; fi
               done ;;
            1) for o in $outs; do
                   case $o in
                   -) ;;
                   */) [ -e "$o" ] && why="$o was created by a failing run" ;;
                   *) [ "$(cat "$o" 2>/dev/null)" = keep ] || why="$o was changed by a failing run" ;;
                   esac
               done
               grep -q . run.stderr || why="exit 1 without a message" ;;
            98) why="AddressSanitizer/UBSan report" ;;
            99) why="LeakSanitizer: leak" ;;
            *) why="exit $rc" ;;
            esac
            ls ./*.tmp.* >/dev/null 2>&1 && { why="${why:+$why; }a temporary was left"; rm -rf ./*.tmp.*; }
            if [ -n "$why" ]; then
                bad=$((bad + 1))
                [ $bad -le 5 ] && { echo "  FAIL $name, $kind $n of $last: $why"; sed 's/^/      /' run.stderr | grep -v "^      fault-inject" | head -n 4; }
            fi
            n=$((n + STRIDE))
        done
    done
    TOTAL=$((TOTAL + runs))
    if [ $bad -eq 0 ]; then echo "ok   $name: $n_alloc allocations, $n_write writes, $runs runs with a fault"
    else echo "FAIL $name: $bad of $runs runs"; FAILED=$((FAILED + 1)); fi
}

path "attn, ref (sparse, selection out)" "o.npy l.npy b.npy" -- attn --q q.npy --k k.npy --v v.npy --out o.npy --lse l.npy --blocks-out b.npy $CFG
path "attn through a KV cache, cpu" "o.npy l.npy" -- attn --q q.npy --k k.npy --v v.npy --out o.npy --lse l.npy $CFG --backend cpu --cache-chunk 2 --threads 2
path "grad, cpu" "dq.npy dk.npy dv.npy o.npy" -- grad --q q.npy --k k.npy --v v.npy --dout do.npy --dq dq.npy --dk dk.npy --dv dv.npy --out o.npy $CFG --backend cpu --threads 2
path "logits (checkpoint, caches, output)" "lg.npy" -- logits --model m --tokens t.txt --out lg.npy --threads 2
path "run (tokenizer, generation)" "-" -- run --model m --prompt "Hello there" --max-tokens 3 --temperature 0 --threads 2
path "model-init (a sharded checkpoint folder)" "mi/" -- model-init --out mi --config tiny --sparse --shard-kb 100

echo "test_faults.sh: $TOTAL runs with a fault, $FAILED paths failed (stride $STRIDE)"
[ "$FAILED" -eq 0 ]
