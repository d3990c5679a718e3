#!/bin/sh
# SPDX-License-Identifier: MIT
#
# test_cli_cache.sh -- `infllm attn --cache-chunk N`: the same inputs through a KV cache.
#
#   sh tests/test_cli_cache.sh build/infllm
#
# With past = 170 keys before 60 queries and dense_len 200, chunks of N queries cross the switch:
# every row of a chunk whose cache length (past + end of the chunk) is below 200 must equal, bit
# for bit, the row of a plain dense run, and every other row the row of a plain always-sparse run
# (a chunk's rows equal a full prefill's rows), with the same selection; dense rows of
# --blocks-out are -1. One chunk covering every query equals the plain run byte for byte. Also the
# usage errors (grad, --mode, --blocks-in, N < 1) with no output written.
# Needs python3 (standard library; tests/oracle/npy.py reads and writes the .npy files).
set -u

SETUP_NAME=cache
. "$(dirname "$0")/tool_test_setup.sh"

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "  ok   $1"; }
bad() { FAILED=$((FAILED + 1)); echo "  FAIL $1"; }

CFG="--block-size 16 --kernel-size 8 --kernel-stride 4 --coarse-kernel-size 32 --coarse-kernel-stride 16 --window 32 --topk 4"
PAST=170
TQ=60
DENSE_LEN=200

# ---- inputs: q [60, 4, 16], k and v [230, 2, 16], float32, seeded ----
python3 - "$HERE/oracle" "$TMP" "$PAST" "$TQ" <<'EOF' || exit 1
import random, sys
sys.path.insert(0, sys.argv[1])
import npy
tmp, past, tq = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(7)
def gauss(n):
    return [rng.gauss(0.0, 1.0) for _ in range(n)]
npy.save(tmp + "/q.npy", gauss(tq * 4 * 16), (tq, 4, 16), "<f4")
npy.save(tmp + "/k.npy", gauss((past + tq) * 2 * 16), (past + tq, 2, 16), "<f4")
npy.save(tmp + "/v.npy", gauss((past + tq) * 2 * 16), (past + tq, 2, 16), "<f4")
EOF

# run NAME ARGS...: infllm attn on the inputs, outputs $TMP/NAME.{out,lse,sel}.npy
run() {
    name=$1
    shift
    # shellcheck disable=SC2086  # $CFG is a list of flags
    "$BIN" attn --q "$TMP/q.npy" --k "$TMP/k.npy" --v "$TMP/v.npy" --out "$TMP/$name.out.npy" \
        --lse "$TMP/$name.lse.npy" --blocks-out "$TMP/$name.sel.npy" $CFG "$@" >"$TMP/$name.log" 2>&1
}

# rows NAME CHUNK DENSE SPARSE: every row of NAME equals DENSE's or SPARSE's by its chunk's length
rows() {
    python3 - "$HERE/oracle" "$TMP" "$1" "$2" "$3" "$4" "$PAST" "$DENSE_LEN" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[1])
import npy
tmp, name, chunk, dname, sname = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
past, dense_len = int(sys.argv[7]), int(sys.argv[8])
def load(n, what):
    path = "%s/%s.%s.npy" % (tmp, n, what)
    if not os.path.exists(path):
        return None, None
    data, shape, _ = npy.load(path)
    return data, shape
o, (tq, hq, d) = load(name, "out")
l, _ = load(name, "lse")
s, sshape = load(name, "sel")
od, _ = load(dname, "out")
ld, _ = load(dname, "lse")
os_, _ = load(sname, "out")
ls, _ = load(sname, "lse")
ss, (hkv, _, ws) = load(sname, "sel")
n_dense = n_sparse = 0
for i in range(tq):
    end = min((i // chunk + 1) * chunk, tq)
    sparse = past + end >= dense_len
    n_sparse += sparse
    n_dense += not sparse
    ro, rl = (os_, ls) if sparse else (od, ld)
    if o[i * hq * d:(i + 1) * hq * d] != ro[i * hq * d:(i + 1) * hq * d] or l[i * hq:(i + 1) * hq] != rl[i * hq:(i + 1) * hq]:
        sys.exit("row %d (cache length %d): differs from the %s run" % (i, past + end, "sparse" if sparse else "dense"))
    if s is not None:
        w = sshape[2]
        for g in range(hkv):
            got = s[(g * tq + i) * w:(g * tq + i + 1) * w]
            want = ss[(g * tq + i) * ws:(g * tq + i + 1) * ws] if sparse else []
            want = (list(want) + [-1] * w)[:w]
            if list(got) != want or (sparse and any(b != -1 for b in ss[(g * tq + i) * ws + w:(g * tq + i + 1) * ws])):
                sys.exit("sel row (%d, %d): %s, expected %s" % (g, i, list(got), want))
    elif n_sparse:
        sys.exit("no --blocks-out written although a chunk ran sparse")
if n_dense == 0 or n_sparse == 0:
    sys.exit("chunk %d should give dense and sparse rows (dense %d, sparse %d)" % (chunk, n_dense, n_sparse))
EOF
}

check_rows() { # NAME CHUNK DENSE SPARSE: run NAME with --cache-chunk CHUNK, then compare
    label=$1
    shift
    if msg=$(rows "$@" 2>&1); then ok "$label"; else bad "$label: $msg"; fi
}

# ---- reference runs ----
run dense --mode dense --dense-len $DENSE_LEN || bad "plain dense run: $(cat "$TMP/dense.log")"
run sparse --dense-len -1 || bad "plain sparse run: $(cat "$TMP/sparse.log")"
run auto --dense-len $DENSE_LEN || bad "plain auto run: $(cat "$TMP/auto.log")"

# ---- through the cache ----
for N in 1 7 16; do
    if run c$N --cache-chunk $N --dense-len $DENSE_LEN; then
        check_rows "--cache-chunk $N: dense rows before the switch, sparse after, same selections" c$N $N dense sparse
        grep -q "kv cache in chunks of $N" "$TMP/c$N.log" && ok "--cache-chunk $N: summary names the chunks" ||
            bad "--cache-chunk $N summary: $(cat "$TMP/c$N.log")"
    else
        bad "--cache-chunk $N failed: $(cat "$TMP/c$N.log")"
    fi
done

if run whole --cache-chunk 1000 --dense-len $DENSE_LEN && cmp -s "$TMP/whole.out.npy" "$TMP/auto.out.npy" &&
    cmp -s "$TMP/whole.lse.npy" "$TMP/auto.lse.npy" && cmp -s "$TMP/whole.sel.npy" "$TMP/auto.sel.npy"; then
    ok "--cache-chunk >= Tq: byte for byte the plain run"
else
    bad "--cache-chunk 1000 differs from the plain run: $(cat "$TMP/whole.log")"
fi

if run alldense --cache-chunk 4 --dense-len 100000 && cmp -s "$TMP/alldense.out.npy" "$TMP/dense.out.npy" &&
    [ ! -e "$TMP/alldense.sel.npy" ] && grep -q "0 sparse chunks" "$TMP/alldense.log"; then
    ok "all chunks dense: the dense run, no --blocks-out"
else
    bad "all chunks dense: $(cat "$TMP/alldense.log")"
fi

# bf16 storage: the same rows as plain bf16 runs
run dense16 --mode dense --dense-len $DENSE_LEN --dtype bf16 || bad "plain dense bf16: $(cat "$TMP/dense16.log")"
run sparse16 --dense-len -1 --dtype bf16 || bad "plain sparse bf16: $(cat "$TMP/sparse16.log")"
if run c16_3 --cache-chunk 3 --dense-len $DENSE_LEN --dtype bf16; then
    check_rows "--cache-chunk 3 --dtype bf16: rows of the plain bf16 runs" c16_3 3 dense16 sparse16
else
    bad "--cache-chunk 3 --dtype bf16 failed: $(cat "$TMP/c16_3.log")"
fi

# the cpu backend, when built: one chunk == its plain run
if "$BIN" version | grep -q " cpu"; then
    run cpuauto --dense-len $DENSE_LEN --backend cpu --threads 2 || bad "plain cpu run: $(cat "$TMP/cpuauto.log")"
    if run cpuwhole --cache-chunk 60 --dense-len $DENSE_LEN --backend cpu --threads 2 &&
        cmp -s "$TMP/cpuwhole.out.npy" "$TMP/cpuauto.out.npy" && cmp -s "$TMP/cpuwhole.sel.npy" "$TMP/cpuauto.sel.npy"; then
        ok "--backend cpu --cache-chunk Tq: byte for byte the plain cpu run"
    else
        bad "--backend cpu --cache-chunk 60: $(cat "$TMP/cpuwhole.log")"
    fi
    run cpu1 --cache-chunk 1 --dense-len $DENSE_LEN --backend cpu --threads 2 &&
        grep -q "29 dense + 31 sparse chunks" "$TMP/cpu1.log" && ok "--backend cpu --cache-chunk 1 runs" ||
        bad "--backend cpu --cache-chunk 1: $(cat "$TMP/cpu1.log")"
fi

# ---- usage errors: exit 2, a message naming the flag, no output ----
usage() { # LABEL ARGS...
    label=$1
    shift
    rm -f "$TMP/u.out.npy"
    "$@" >"$TMP/u.log" 2>&1
    rc=$?
    if [ $rc -eq 2 ] && grep -q -- "cache-chunk" "$TMP/u.log" && [ ! -e "$TMP/u.out.npy" ]; then
        ok "$label"
    else
        bad "$label: exit $rc, $(cat "$TMP/u.log")"
    fi
}
IN="--q $TMP/q.npy --k $TMP/k.npy --v $TMP/v.npy"
# shellcheck disable=SC2086  # $IN is a list of flags
usage "grad --cache-chunk is a usage error" "$BIN" grad $IN --dout "$TMP/q.npy" --dq "$TMP/u.out.npy" \
    --dk "$TMP/u.dk.npy" --dv "$TMP/u.dv.npy" --cache-chunk 2
# shellcheck disable=SC2086
usage "--cache-chunk 0 is a usage error" "$BIN" attn $IN --out "$TMP/u.out.npy" --cache-chunk 0
# shellcheck disable=SC2086
usage "--cache-chunk with --mode sparse is a usage error" "$BIN" attn $IN --out "$TMP/u.out.npy" --cache-chunk 2 --mode sparse
# shellcheck disable=SC2086
usage "--cache-chunk with --blocks-in is a usage error" "$BIN" attn $IN --out "$TMP/u.out.npy" --cache-chunk 2 \
    --blocks-in "$TMP/auto.sel.npy"
"$BIN" attn --help | grep -q -- "--cache-chunk N" && ok "attn --help describes --cache-chunk" || bad "attn --help"

echo "test_cli_cache.sh: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
