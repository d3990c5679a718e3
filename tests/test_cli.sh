#!/bin/sh
# SPDX-License-Identifier: MIT
#
# test_cli.sh -- the error paths of the `infllm` tool, plus positive controls.
#
#   sh tests/test_cli.sh build/infllm
#
# Each case runs the tool once and checks its exit code (0 ok, 1 failure, 2 usage error), that
# stderr (or stdout for --help) names the offending argument or file, and -- for every failing
# case -- that no output file was created (nor a leftover temporary). Input .npy files are
# written by a small python3 helper using only the standard library (struct); no numpy.
# Prints one line per case (CLI_TEST_VERBOSE=1: with the tool's stderr); exits 1 if any case fails.
# shellcheck disable=SC2086  # $CFG and $CFG_NOWIN are lists of flags, split on purpose
set -u

SETUP_NAME=cli
. "$(dirname "$0")/tool_test_setup.sh"

# ---- .npy helpers (python3 standard library only) ----

cat >"$TMP/mknpy.py" <<'EOF'
"""mknpy.py PATH DESCR SHAPE [options]: writes a .npy file with deterministic values.
SHAPE is comma separated ("5,4,8"; "" for a scalar). Options:
  --values v,v,..   the elements (C order) instead of the generated ones
  --set i,j,k=X     element (i, j, k) = X (X: a number, nan, inf or -inf); repeatable
  --fortran         fortran_order True in the header
  --cut N           drop the last N bytes of the file
  --extra N         append N zero bytes
  --version V       format version byte (1, 2, 3 or anything)
  --seed S          seed of the generated values
"""
import struct, sys

args = sys.argv[1:]
path, descr, shape_s = args[0], args[1], args[2]
shape = tuple(int(x) for x in shape_s.split(",") if x != "")
opts = {"--values": None, "--fortran": False, "--cut": 0, "--extra": 0, "--version": 1, "--seed": 1}
sets = []
i = 3
while i < len(args):
    a = args[i]
    if a == "--fortran":
        opts[a] = True
        i += 1
        continue
    v = args[i + 1]
    if a == "--set":
        idx, x = v.split("=")
        sets.append((tuple(int(t) for t in idx.split(",")), float(x)))
    elif a == "--values":
        opts[a] = [float(t) for t in v.split(",")]
    else:
        opts[a] = int(v)
    i += 2

count = 1
for d in shape:
    count *= d
if opts["--values"] is not None:
    vals = list(opts["--values"])
    assert len(vals) == count, (len(vals), count)
else:
    state = opts["--seed"] * 2654435761 % 4294967296 or 1
    vals = []
    for _ in range(count):
        state = (1103515245 * state + 12345) % 2147483648
        vals.append(round((state / 2147483648.0) * 2.0 - 1.0, 4))
for idx, x in sets:
    flat = 0
    for d, ix in zip(shape, idx):
        flat = flat * d + ix
    vals[flat] = x

endian = descr[0]
code = {"f2": "e", "f4": "f", "f8": "d", "i4": "i"}[descr[1:]]
fmt = ("<" if endian in "<|" else ">") + code
if code == "i":
    data = b"".join(struct.pack(fmt, int(v)) for v in vals)
else:
    data = b"".join(struct.pack(fmt, v) for v in vals)
shape_txt = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
hdr = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
    descr, "True" if opts["--fortran"] else "False", shape_txt)
ver = opts["--version"]
pre = 10 if ver == 1 else 12
pad = (64 - (pre + len(hdr) + 1) % 64) % 64
hdr = (hdr + " " * pad + "\n").encode("latin1")
if ver == 1:
    head = b"\x93NUMPY" + bytes([1, 0]) + struct.pack("<H", len(hdr))
elif ver in (2, 3):
    head = b"\x93NUMPY" + bytes([ver, 0]) + struct.pack("<I", len(hdr))
else:
    head = b"\x93NUMPY" + bytes([ver, 0]) + struct.pack("<H", len(hdr))
blob = head + hdr + data + b"\0" * opts["--extra"]
if opts["--cut"]:
    blob = blob[: len(blob) - opts["--cut"]]
with open(path, "wb") as f:
    f.write(blob)
EOF

cat >"$TMP/chknpy.py" <<'EOF'
"""chknpy.py PATH DESCR SHAPE: exits 0 when PATH is a well-formed .npy of that dtype and shape
holding no NaN (and, for floats, no +Inf); prints the problem otherwise."""
import ast, math, struct, sys

path, descr, shape_s = sys.argv[1], sys.argv[2], sys.argv[3]
want = tuple(int(x) for x in shape_s.split(",") if x != "")
with open(path, "rb") as f:
    blob = f.read()
if blob[:6] != b"\x93NUMPY":
    sys.exit("%s: no .npy magic" % path)
ver = blob[6]
if ver == 1:
    hlen, start = struct.unpack("<H", blob[8:10])[0], 10
elif ver in (2, 3):
    hlen, start = struct.unpack("<I", blob[8:12])[0], 12
else:
    sys.exit("%s: version %d" % (path, ver))
if (start + hlen) % 64 != 0:
    print("%s: note: data offset %d is not 64-byte aligned" % (path, start + hlen))
d = ast.literal_eval(blob[start:start + hlen].decode("latin1"))
if d.get("descr") != descr:
    sys.exit("%s: descr %r, expected %r" % (path, d.get("descr"), descr))
if d.get("fortran_order") is not False:
    sys.exit("%s: fortran_order %r" % (path, d.get("fortran_order")))
if tuple(d.get("shape")) != want:
    sys.exit("%s: shape %r, expected %r" % (path, d.get("shape"), want))
n = 1
for x in want:
    n *= x
size = {"<f4": 4, "<f8": 8, "<i4": 4, "<f2": 2}[descr]
data = blob[start + hlen:]
if len(data) != n * size:
    sys.exit("%s: %d data bytes, expected %d" % (path, len(data), n * size))
code = {"<f4": "f", "<f8": "d", "<i4": "i", "<f2": "e"}[descr]
vals = struct.unpack("<%d%s" % (n, code), data)
if code != "i":
    for i, v in enumerate(vals):
        if math.isnan(v) or v == math.inf:
            sys.exit("%s: element %d is %r" % (path, i, v))
EOF

mk() { python3 "$TMP/mknpy.py" "$@" || { echo "test_cli.sh: cannot write $1" >&2; exit 1; }; }

# ---- inputs: Tq=5, Tk=9 (past 4), Hq=4, Hkv=2, D=8 ----

D=$TMP/in
mkdir "$D"
mk "$D/q.npy" '<f4' 5,4,8 --seed 1
mk "$D/k.npy" '<f4' 9,2,8 --seed 2
mk "$D/v.npy" '<f4' 9,2,8 --seed 3
mk "$D/do.npy" '<f4' 5,4,8 --seed 4
mk "$D/q64.npy" '<f8' 5,4,8 --seed 1
mk "$D/q16.npy" '<f2' 5,4,8 --seed 1
mk "$D/q_v2.npy" '<f4' 5,4,8 --seed 1 --version 2
# a valid selection [Hkv=2, Tq=5, K=3]: queries 0..3 sit in block 1, query 4 in block 2
SEL_OK="0,1,-1,0,1,-1,0,1,-1,0,1,-1,0,1,2,0,1,-1,0,1,-1,0,1,-1,0,1,-1,0,1,2"
mk "$D/sel.npy" '<i4' 2,5,3 --values "$SEL_OK"
mk "$D/sel_desc.npy" '<i4' 2,5,3 --values "0,1,-1,1,0,-1,0,1,-1,0,1,-1,0,1,2,0,1,-1,0,1,-1,0,1,-1,0,1,-1,0,1,2"
mk "$D/sel_range.npy" '<i4' 2,5,3 --values "0,1,-1,0,1,-1,0,1,-1,0,1,-1,0,1,3,0,1,-1,0,1,-1,0,1,-1,0,1,-1,0,1,2"
mk "$D/sel_f32.npy" '<f4' 2,5,3 --values "$SEL_OK"
mk "$D/sel_rows.npy" '<i4' 2,4,3 --values "0,1,-1,0,1,-1,0,1,-1,0,1,-1,0,1,-1,0,1,-1,0,1,-1,0,1,-1"
# bad files
printf 'this is not a numpy file, just text\n' >"$D/text.npy"
: >"$D/empty.npy"
mk "$D/q_trunc.npy" '<f4' 5,4,8 --cut 4
mk "$D/q_trunc_hdr.npy" '<f4' 5,4,8 --cut 700
mk "$D/q_trail.npy" '<f4' 5,4,8 --extra 4
mk "$D/q_be.npy" '>f4' 5,4,8
mk "$D/q_fortran.npy" '<f4' 5,4,8 --fortran
mk "$D/q_ver9.npy" '<f4' 5,4,8 --version 9
mk "$D/q_rank2.npy" '<f4' 5,32
mk "$D/q_rank4.npy" '<f4' 5,4,8,1
mk "$D/q_i32.npy" '<i4' 5,4,8 --values "$(python3 -c 'print(",".join(["1"] * 160))')"
mk "$D/q_empty.npy" '<f4' 0,4,8
mk "$D/q_h3.npy" '<f4' 5,3,8
mk "$D/k_d4.npy" '<f4' 9,2,4
mk "$D/k_4rows.npy" '<f4' 4,2,8
mk "$D/k_i32.npy" '<i4' 9,2,8 --values "$(python3 -c 'print(",".join(["1"] * 144))')"
mk "$D/v_8rows.npy" '<f4' 8,2,8
mk "$D/v_h1.npy" '<f4' 9,1,8
mk "$D/q_nan.npy" '<f4' 5,4,8 --set 2,1,3=nan --set 4,0,0=nan
mk "$D/v_inf.npy" '<f4' 9,2,8 --set 7,0,5=inf
mk "$D/k_ninf.npy" '<f4' 9,2,8 --set 3,1,6=-inf
mk "$D/do_nan.npy" '<f4' 5,4,8 --set 1,2,3=nan
mk "$D/do_bad.npy" '<f4' 5,4,7
mk "$D/q_big.npy" '<f8' 5,4,8 --set 0,0,1=1e300

# the sparse config of the small problem; --dense-len -1 makes `auto` run sparse
CFG_NOWIN="--block-size 4 --kernel-size 4 --kernel-stride 2 --coarse-kernel-size 8 --coarse-kernel-stride 4 --topk 2 --dense-len -1"
CFG="$CFG_NOWIN --window 4"

# ---- the case runner ----

n_cases=0
n_failed=0
n_out=0
OUT='' LSE='' BLK='' DQ='' DK='' DV=''

# fresh output paths for the next case (none exists yet)
fresh() {
    n_out=$((n_out + 1))
    OUT=$TMP/o$n_out.npy LSE=$TMP/l$n_out.npy BLK=$TMP/b$n_out.npy
    DQ=$TMP/dq$n_out.npy DK=$TMP/dk$n_out.npy DV=$TMP/dv$n_out.npy
}

# t NAME RC STREAM SUB1 SUB2 -- ARGS...
#   runs "$BIN" ARGS; passes when the exit code is RC, STREAM (stderr|stdout) contains SUB1 and
#   SUB2 (fixed strings; "" = no check; "a|b" = a or b) and, when RC != 0, none of this case's
#   output paths (or a leftover "<path>.tmp") exists.
t() {
    name=$1 want=$2 stream=$3 sub1=$4 sub2=$5
    shift 5
    [ "${1:-}" = -- ] && shift
    n_cases=$((n_cases + 1))
    "$BIN" "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
    why=
    [ "$rc" -eq "$want" ] || why="exit code $rc, expected $want"
    for sub in "$sub1" "$sub2"; do
        [ -n "$sub" ] || continue
        found=0
        old_ifs=$IFS
        IFS='|'
        for alt in $sub; do
            grep -qF -- "$alt" "$TMP/$stream" && found=1
        done
        IFS=$old_ifs
        [ $found -eq 1 ] || why="${why:+$why; }$stream does not mention '$sub'"
    done
    if [ "$rc" -ne 0 ]; then
        for f in "$OUT" "$LSE" "$BLK" "$DQ" "$DK" "$DV"; do
            [ -e "$f" ] && why="${why:+$why; }output $(basename "$f") was created by a failing run"
            [ -e "$f.tmp" ] && why="${why:+$why; }temporary $(basename "$f").tmp left behind"
        done
    fi
    if [ -z "$why" ]; then
        echo "PASS $name"
        [ -n "${CLI_TEST_VERBOSE:-}" ] && sed 's/^/    stderr: /' "$TMP/stderr" | head -n 3
    else
        echo "FAIL $name: $why"
        sed 's/^/    stderr: /' "$TMP/stderr" | head -n 5
        n_failed=$((n_failed + 1))
    fi
}

# check_npy NAME PATH DESCR SHAPE: a positive control's output parses with that dtype and shape
check_npy() {
    n_cases=$((n_cases + 1))
    if [ ! -f "$2" ]; then
        echo "FAIL $1: $(basename "$2") was not written"
        n_failed=$((n_failed + 1))
    elif msg=$(python3 "$TMP/chknpy.py" "$2" "$3" "$4" 2>&1); then
        echo "PASS $1${msg:+ ($msg)}"
    else
        echo "FAIL $1: $msg"
        n_failed=$((n_failed + 1))
    fi
}

# check_absent NAME PATH: a file that must not be written
check_absent() {
    n_cases=$((n_cases + 1))
    if [ -e "$2" ]; then
        echo "FAIL $1: $(basename "$2") was written"
        n_failed=$((n_failed + 1))
    else
        echo "PASS $1"
    fi
}

Q=$D/q.npy K=$D/k.npy V=$D/v.npy DO=$D/do.npy

# ---- usage errors: exit 2 ----

fresh
t "no arguments" 2 stderr "usage" "" --
t "unknown command" 2 stderr "frobnicate" "" -- frobnicate
t "unknown command that looks like a flag" 2 stderr "--bogus" "" -- --bogus
t "attn: unknown flag" 2 stderr "--bogus" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --bogus 1
t "grad: unknown flag" 2 stderr "--frob" "" -- grad --q "$Q" --k "$K" --v "$V" --dout "$DO" --dq "$DQ" --dk "$DK" --dv "$DV" --frob
# an INFLLM_SIMD the library does not know is refused by name (a cpu context), ignored by ref
export INFLLM_SIMD=bogus
t "bench: INFLLM_SIMD=bogus" 2 stderr "INFLLM_SIMD=bogus: expected auto, scalar, avx2 or avx512" "" -- bench --quick --backend cpu
t "attn --backend cpu: INFLLM_SIMD=bogus" 1 stderr "INFLLM_SIMD=bogus: expected" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --backend cpu
unset INFLLM_SIMD
t "demo: unknown flag" 2 stderr "--nope" "" -- demo --nope 3
t "version: unknown flag" 2 stderr "--nope" "" -- version --nope
t "attn: unexpected positional argument" 2 stderr "stray" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" stray
t "attn: flag missing its value (last)" 2 stderr "--out" "" -- attn --q "$Q" --k "$K" --v "$V" --out
t "attn: --topk missing its value (last)" 2 stderr "--topk" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --topk
t "attn: option given twice" 2 stderr "--q" "" -- attn --q "$Q" --q "$Q" --k "$K" --v "$V" --out "$OUT"
t "attn: --topk abc (not an integer)" 2 stderr "--topk" "abc" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --topk abc
t "attn: --topk 3.5 (not an integer)" 2 stderr "--topk" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --topk 3.5
t "attn: --topk '' (empty)" 2 stderr "--topk" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --topk ""
t "attn: --topk 99999999999999999999 (overflow)" 2 stderr "--topk" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --topk 99999999999999999999
t "attn: --topk=12x (= form, not an integer)" 2 stderr "--topk" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --topk=12x
t "attn: --scale abc (not a number)" 2 stderr "--scale" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --scale abc
t "attn: --past -1 (out of range)" 2 stderr "--past" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --past -1
t "attn: --threads -1 (out of range)" 2 stderr "--threads" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --threads -1
t "attn: --mode bogus" 2 stderr "--mode" "bogus" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --mode bogus
t "attn: --dtype bogus" 2 stderr "--dtype" "bogus" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --dtype bogus
t "attn: --dtype f64 (not a storage choice)" 2 stderr "--dtype" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --dtype f64
t "attn: --backend bogus" 2 stderr "--backend" "bogus" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --backend bogus
t "attn: --lse-mode bogus" 2 stderr "--lse-mode" "bogus" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --lse-mode bogus
t "attn: --blocks-in with --mode dense" 2 stderr "--blocks-in" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --blocks-in "$D/sel.npy" --mode dense
t "attn: missing --q" 2 stderr "--q" "" -- attn --k "$K" --v "$V" --out "$OUT"
t "attn: missing --k" 2 stderr "--k" "" -- attn --q "$Q" --v "$V" --out "$OUT"
t "attn: missing --v" 2 stderr "--v" "" -- attn --q "$Q" --k "$K" --out "$OUT"
t "attn: missing --out" 2 stderr "--out" "" -- attn --q "$Q" --k "$K" --v "$V" --lse "$LSE"
t "grad: missing --dout" 2 stderr "--dout" "" -- grad --q "$Q" --k "$K" --v "$V" --dq "$DQ" --dk "$DK" --dv "$DV"
t "grad: missing --dk" 2 stderr "--dk" "" -- grad --q "$Q" --k "$K" --v "$V" --dout "$DO" --dq "$DQ" --dv "$DV"
# invalid sparse configs given by flags (the message may spell the field block_size or --block-size)
t "attn: --topk 0" 2 stderr "topk" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --topk 0
t "attn: --topk -3" 2 stderr "topk" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --topk -3
t "attn: --block-size 48 --kernel-stride 32" 2 stderr "block-size|block_size" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --block-size 48 --kernel-stride 32
t "attn: --kernel-size 20 --kernel-stride 16" 2 stderr "kernel-size|kernel_size" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --kernel-size 20
t "attn: --window 6 with --block-size 4" 2 stderr "window" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" $CFG_NOWIN --window 6
t "attn: --init-blocks -1" 2 stderr "init-blocks|init_blocks" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --init-blocks -1
t "attn: --topk 1 with --init-blocks 1" 2 stderr "topk" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --topk 1
t "attn: --dense-len -2" 2 stderr "dense-len|dense_len" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --dense-len -2
t "attn: --scale -1" 2 stderr "scale" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --scale -1
t "attn: --scale nan" 2 stderr "scale" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --scale nan
t "attn: --coarse-kernel-size 100 (not a multiple of 64)" 2 stderr "coarse-kernel-size|coarse_kernel_size" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --coarse-kernel-size 100
t "attn: --block-size 0" 2 stderr "block-size|block_size" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --block-size 0
t "grad: --topk 0" 2 stderr "topk" "" -- grad --q "$Q" --k "$K" --v "$V" --dout "$DO" --dq "$DQ" --dk "$DK" --dv "$DV" --topk 0
t "demo: --topk 0" 2 stderr "topk" "" -- demo --topk 0
t "demo: --heads 3 --kv-heads 2" 2 stderr "--heads" "" -- demo --heads 3 --kv-heads 2
t "demo: --head-dim 300 (out of range)" 2 stderr "--head-dim" "" -- demo --head-dim 300
# a backend this build lacks (as `infllm version` lists them) is a usage error
for b in cpu cuda; do
    if "$BIN" version 2>/dev/null | grep -qw "$b"; then
        echo "SKIP attn: --backend $b (available in this build)"
    else
        t "attn: --backend $b (not in this build)" 2 stderr "--backend" "$b" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --backend "$b"
    fi
done

# ---- --help: exit 0, usage on stdout ----

for c in attn grad demo version; do
    t "$c --help" 0 stdout "usage" "$c" -- "$c" --help
    t "$c -h" 0 stdout "usage" "" -- "$c" -h
done
t "attn --help after other flags" 0 stdout "usage" "" -- attn --q "$Q" --help
t "infllm --help" 0 stdout "usage" "attn" -- --help
t "infllm help" 0 stdout "usage" "" -- help

# ---- input errors: exit 1, the message names the file / flag ----

fresh
t "attn: nonexistent --q file" 1 stderr "$D/missing.npy" "" -- attn --q "$D/missing.npy" --k "$K" --v "$V" --out "$OUT" --lse "$LSE"
t "attn: nonexistent --v file" 1 stderr "$D/missing_v.npy" "--v" -- attn --q "$Q" --k "$K" --v "$D/missing_v.npy" --out "$OUT"
t "attn: --q is a directory" 1 stderr "$D" "" -- attn --q "$D" --k "$K" --v "$V" --out "$OUT"
t "attn: --q not a .npy file (text)" 1 stderr "text.npy" "" -- attn --q "$D/text.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --k empty file" 1 stderr "empty.npy" "" -- attn --q "$Q" --k "$D/empty.npy" --v "$V" --out "$OUT"
t "attn: --q truncated data" 1 stderr "q_trunc.npy" "" -- attn --q "$D/q_trunc.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --q truncated header" 1 stderr "q_trunc_hdr.npy" "" -- attn --q "$D/q_trunc_hdr.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --q trailing bytes" 1 stderr "q_trail.npy" "" -- attn --q "$D/q_trail.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --q big-endian >f4" 1 stderr "q_be.npy" "" -- attn --q "$D/q_be.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --q Fortran order" 1 stderr "q_fortran.npy" "" -- attn --q "$D/q_fortran.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --q format version 9" 1 stderr "q_ver9.npy" "" -- attn --q "$D/q_ver9.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --q rank 2" 1 stderr "q_rank2.npy" "--q" -- attn --q "$D/q_rank2.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --q rank 4" 1 stderr "q_rank4.npy" "--q" -- attn --q "$D/q_rank4.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --q int32" 1 stderr "q_i32.npy" "--q" -- attn --q "$D/q_i32.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --k int32" 1 stderr "k_i32.npy" "--k" -- attn --q "$Q" --k "$D/k_i32.npy" --v "$V" --out "$OUT"
t "attn: --q with an empty dimension" 1 stderr "q_empty.npy" "" -- attn --q "$D/q_empty.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: Hq 3 not a multiple of Hkv 2" 1 stderr "q_h3.npy" "" -- attn --q "$D/q_h3.npy" --k "$K" --v "$V" --out "$OUT"
t "attn: --k head dim 4, --q 8" 1 stderr "k_d4.npy" "--k" -- attn --q "$Q" --k "$D/k_d4.npy" --v "$V" --out "$OUT"
t "attn: --v 8 rows, --k 9" 1 stderr "v_8rows.npy" "--v" -- attn --q "$Q" --k "$K" --v "$D/v_8rows.npy" --out "$OUT"
t "attn: --v 1 head, --k 2" 1 stderr "v_h1.npy" "--v" -- attn --q "$Q" --k "$K" --v "$D/v_h1.npy" --out "$OUT"
t "attn: --k 4 rows < 5 queries" 1 stderr "k_4rows.npy" "" -- attn --q "$Q" --k "$D/k_4rows.npy" --v "$D/k_4rows.npy" --out "$OUT"
t "attn: --past 3 but K has 9 rows for 5 queries" 1 stderr "--past|--k" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --past 3
t "attn: --past 5 but K has 9 rows for 5 queries" 1 stderr "--past|--k" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --past 5
t "attn: NaN in --q (position named)" 1 stderr "q_nan.npy" "2, 1, 3|2,1,3" -- attn --q "$D/q_nan.npy" --k "$K" --v "$V" --out "$OUT" --lse "$LSE"
t "attn: +Inf in --v (position named)" 1 stderr "v_inf.npy" "7, 0, 5|7,0,5" -- attn --q "$Q" --k "$K" --v "$D/v_inf.npy" --out "$OUT"
t "attn: -Inf in --k (position named)" 1 stderr "k_ninf.npy" "3, 1, 6|3,1,6" -- attn --q "$Q" --k "$D/k_ninf.npy" --v "$V" --out "$OUT"
t "attn: --dtype f32 overflows 1e300 in --q" 1 stderr "q_big.npy" "0, 0, 1|0,0,1" -- attn --q "$D/q_big.npy" --k "$K" --v "$V" --out "$OUT" --dtype f32
t "attn: --blocks-in not ascending" 1 stderr "--blocks-in|sel_desc.npy" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --lse "$LSE" $CFG --blocks-in "$D/sel_desc.npy"
t "attn: --blocks-in block out of range" 1 stderr "--blocks-in|sel_range.npy" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" $CFG --blocks-in "$D/sel_range.npy"
t "attn: --blocks-in float32" 1 stderr "--blocks-in" "sel_f32.npy" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" $CFG --blocks-in "$D/sel_f32.npy"
t "attn: --blocks-in 4 rows, Tq 5" 1 stderr "--blocks-in" "sel_rows.npy" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" $CFG --blocks-in "$D/sel_rows.npy"
t "attn: nonexistent --blocks-in" 1 stderr "nosel.npy" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" $CFG --blocks-in "$D/nosel.npy"
fresh
t "grad: --dout of wrong shape" 1 stderr "do_bad.npy" "--dout" -- grad --q "$Q" --k "$K" --v "$V" --dout "$D/do_bad.npy" --dq "$DQ" --dk "$DK" --dv "$DV" --out "$OUT" $CFG
t "grad: NaN in --dout (position named)" 1 stderr "do_nan.npy" "1, 2, 3|1,2,3" -- grad --q "$Q" --k "$K" --v "$V" --dout "$D/do_nan.npy" --dq "$DQ" --dk "$DK" --dv "$DV" $CFG
t "grad: nonexistent --dout" 1 stderr "nodo.npy" "" -- grad --q "$Q" --k "$K" --v "$V" --dout "$D/nodo.npy" --dq "$DQ" --dk "$DK" --dv "$DV"
t "grad: --blocks-in not ascending" 1 stderr "--blocks-in|sel_desc.npy" "" -- grad --q "$Q" --k "$K" --v "$V" --dout "$DO" --dq "$DQ" --dk "$DK" --dv "$DV" $CFG --blocks-in "$D/sel_desc.npy"
# an output that cannot be written: --out names a directory (rename fails)
mkdir "$TMP/outdir"
fresh
t "attn: --out is a directory (write fails)" 1 stderr "outdir" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$TMP/outdir" $CFG
n_cases=$((n_cases + 1))
if [ -d "$TMP/outdir" ] && [ ! -e "$TMP/outdir.tmp" ]; then
    echo "PASS attn: --out a directory leaves no temporary"
else
    echo "FAIL attn: --out a directory left $TMP/outdir.tmp behind or removed the directory"
    n_failed=$((n_failed + 1))
fi

# ---- positive controls ----

fresh
t "attn: valid sparse run" 0 stdout "sparse" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --lse "$LSE" --blocks-out "$BLK" $CFG
check_npy "attn: --out is [5, 4, 8] float32" "$OUT" '<f4' 5,4,8
check_npy "attn: --lse is [5, 4] float32" "$LSE" '<f4' 5,4
check_npy "attn: --blocks-out is [2, 5, 3] int32" "$BLK" '<i4' 2,5,3
check_absent "attn: no temporary left" "$OUT.tmp"
fresh
t "attn: valid run with --blocks-in and --past 4" 0 stdout "" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" $CFG --blocks-in "$D/sel.npy" --past 4
check_npy "attn: --blocks-in run's --out" "$OUT" '<f4' 5,4,8
fresh
t "attn: valid dense run (default config)" 0 stdout "dense" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --blocks-out "$BLK"
check_npy "attn: dense run's --out" "$OUT" '<f4' 5,4,8
check_absent "attn: dense run writes no --blocks-out" "$BLK"
fresh
t "attn: float64 --q (k, v float32), --dtype bf16, --mode sparse" 0 stdout "" "" -- attn --q "$D/q64.npy" --k "$K" --v "$V" --out "$OUT" $CFG --dtype bf16 --mode sparse
check_npy "attn: --dtype bf16 run's --out" "$OUT" '<f4' 5,4,8
fresh
t "attn: float16 --q, --flag=value syntax" 0 stdout "" "" -- attn --q="$D/q16.npy" --k "$K" --v="$V" --out="$OUT" $CFG --mode=dense
check_npy "attn: float16 run's --out" "$OUT" '<f4' 5,4,8
fresh
t "attn: .npy format 2.0 input" 0 stdout "" "" -- attn --q "$D/q_v2.npy" --k "$K" --v "$V" --out "$OUT" $CFG
check_npy "attn: format 2.0 run's --out" "$OUT" '<f4' 5,4,8
fresh
t "grad: valid sparse run" 0 stdout "" "" -- grad --q "$Q" --k "$K" --v "$V" --dout "$DO" --dq "$DQ" --dk "$DK" --dv "$DV" --out "$OUT" --lse "$LSE" $CFG
check_npy "grad: --dq is [5, 4, 8] float32" "$DQ" '<f4' 5,4,8
check_npy "grad: --dk is [9, 2, 8] float32" "$DK" '<f4' 9,2,8
check_npy "grad: --dv is [9, 2, 8] float32" "$DV" '<f4' 9,2,8
check_npy "grad: --out is [5, 4, 8] float32" "$OUT" '<f4' 5,4,8
fresh
t "grad: valid dense run, no --out" 0 stdout "" "" -- grad --q "$Q" --k "$K" --v "$V" --dout "$DO" --dq "$DQ" --dk "$DK" --dv "$DV" --mode dense
check_npy "grad: dense --dk" "$DK" '<f4' 9,2,8
# the same valid runs on every other backend this build has
for b in cpu cuda; do
    "$BIN" version 2>/dev/null | grep -qw "$b" || continue
    fresh
    t "attn: valid sparse run, --backend $b" 0 stdout "$b" "" -- attn --q "$Q" --k "$K" --v "$V" --out "$OUT" --lse "$LSE" --blocks-out "$BLK" $CFG --backend "$b"
    check_npy "attn --backend $b: --out" "$OUT" '<f4' 5,4,8
    check_npy "attn --backend $b: --blocks-out" "$BLK" '<i4' 2,5,3
    fresh
    t "grad: valid sparse run, --backend $b" 0 stdout "$b" "" -- grad --q "$Q" --k "$K" --v "$V" --dout "$DO" --dq "$DQ" --dk "$DK" --dv "$DV" $CFG --backend "$b"
    check_npy "grad --backend $b: --dk" "$DK" '<f4' 9,2,8
    fresh
    t "attn: NaN in --q, --backend $b" 1 stderr "q_nan.npy" "2, 1, 3|2,1,3" -- attn --q "$D/q_nan.npy" --k "$K" --v "$V" --out "$OUT" $CFG --backend "$b"
done
fresh
t "version" 0 stdout "infllm" "ref" -- version
t "--version" 0 stdout "infllm" "" -- --version

echo "$n_cases cases, $n_failed failed"
[ "$n_failed" -eq 0 ]
