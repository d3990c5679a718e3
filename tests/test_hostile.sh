#!/bin/sh
# SPDX-License-Identifier: MIT
#
# test_hostile.sh -- the tool against a hostile user (issue 20): one case or more per defect found,
# each of which failed before its fix.
#   1 outputs never replace a symlink, device, FIFO or folder at their path;
#   2 all outputs or none: a failing output leaves the others unwritten, existing files intact;
#   3 unique temporaries: concurrent runs on one --out give one run's file; PATH.tmp is not touched;
#   4 two outputs naming one file, or an output naming an input, are refused;
#   5 no hang or unbounded read on FIFOs and devices given as inputs;
#   6 sizes in sparse_config checked before arithmetic (kernel_size 2^30);
#   7 negative flags refused, not mapped to defaults; strict .npy headers and token files;
#   8 outputs checked for finiteness; 9 a memory plan before allocating.
# Also a full disk (a file-size limit, EFBIG): exit 1, the existing file intact.
#
#   sh tests/test_hostile.sh build/infllm
# Needs python3 (standard library; tests/oracle/npy.py writes the .npy inputs).
set -u

SETUP_NAME=hostile
. "$(dirname "$0")/tool_test_setup.sh"
cd "$TMP" || exit 1

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "  ok   $1"; }
bad() { FAILED=$((FAILED + 1)); echo "  FAIL $1"; sed 's/^/       stderr: /' err | head -n 3; }

# expect NAME RC [TEXT]: the last command's exit code was RC and its stderr holds TEXT
expect() {
    if [ "$rc" -ne "$2" ]; then bad "$1: exit $rc, expected $2"
    elif [ -n "${3:-}" ] && ! grep -qF -- "$3" err; then bad "$1: stderr does not mention '$3'"
    else ok "$1"; fi
}
# same NAME FILE CONTENT: FILE still holds CONTENT (a file the run must not have touched)
same() { if [ "$(cat "$2" 2>/dev/null)" = "$3" ]; then ok "$1"; else bad "$1: $2 changed"; fi; }
# absent NAME PATH...: none of the paths exists, nor a temporary beside it
absent() {
    name=$1
    shift
    for p in "$@"; do
        for f in "$p" "$p".tmp.*; do
            [ -e "$f" ] || [ -L "$f" ] && { bad "$name: $f exists"; return; }
        done
    done
    ok "$name"
}
run() { "$BIN" "$@" >out 2>err; rc=$?; }

# ---- inputs: Tq=5, Tk=9, Hq=4, Hkv=2, D=8 ----
python3 - "$HERE/oracle" <<'EOF' || exit 1
import sys, random
sys.path.insert(0, sys.argv[1])
import npy
r = random.Random(5)
def rnd(n, s=1.0): return [r.uniform(-s, s) for _ in range(n)]
npy.save("q.npy", rnd(160), (5, 4, 8), "<f4")
npy.save("k.npy", rnd(144), (9, 2, 8), "<f4")
npy.save("v.npy", rnd(144), (9, 2, 8), "<f4")
npy.save("v2.npy", rnd(144), (9, 2, 8), "<f4")
npy.save("do.npy", rnd(160), (5, 4, 8), "<f4")
EOF
A="attn --q q.npy --k k.npy --v v.npy"
G="grad --q q.npy --k k.npy --v v.npy --dout do.npy"

echo "== 1: outputs never replace what is not a regular file"
echo target >target.txt
ln -s target.txt link.npy
run $A --out link.npy
expect "--out a symlink is refused" 1 "symbolic link"
same "the symlink's target is untouched" target.txt target
[ -L link.npy ] && ok "the symlink is still a symlink" || bad "the symlink was replaced"
mkfifo fifo.npy
run $A --out fifo.npy
expect "--out a FIFO is refused" 1 "FIFO"
[ -p fifo.npy ] && ok "the FIFO is still a FIFO" || bad "the FIFO was replaced"
mkdir outdir
run $A --out outdir
expect "--out a folder is refused" 1 "directory"
# a device node of our own (never /dev/null itself: a tool without the fix, run as root, would
# replace the machine's); mknod needs root, so without it the case is skipped
if mknod nulldev c 1 3 2>/dev/null; then
    run $A --out o1.npy --lse nulldev
    expect "--lse a device node is refused" 1 "device"
    [ -c nulldev ] && ok "the device node is still a device" || bad "the device node was replaced"
    absent "no output after a refused --lse" o1.npy
else
    echo "  skip --lse a device node (mknod needs root)"
fi

echo "== 2: all outputs or none"
run $A --out o2.npy --lse /nonexistent/l.npy
expect "attn --lse in a missing folder" 1 "/nonexistent"
absent "attn wrote no --out" o2.npy
run $G --dq dq.npy --dk dk.npy --dv /nonexistent/dv.npy --out o2.npy
expect "grad --dv in a missing folder" 1 "/nonexistent"
absent "grad wrote no --dq, --dk, --out" dq.npy dk.npy o2.npy
echo keep >kept.npy
echo keep >kept_l.npy
mkdir ro && chmod 555 ro
if [ "$(id -u)" -ne 0 ]; then
    run $A --out kept.npy --lse ro/l.npy
    expect "attn --lse in a read-only folder" 1 "ro/l.npy"
    same "an existing --out is kept" kept.npy keep
fi
# a full disk: a file-size limit makes the second output's write fail (EFBIG, SIGXFSZ ignored)
python3 - "$HERE/oracle" <<'EOF' || exit 1
import sys
sys.path.insert(0, sys.argv[1])
import npy
npy.save("qbig.npy", [0.25] * (400 * 4 * 8), (400, 4, 8), "<f4")
npy.save("kbig.npy", [0.5] * (400 * 2 * 8), (400, 2, 8), "<f4")
EOF
(trap '' XFSZ; ulimit -f 40; "$BIN" attn --q qbig.npy --k kbig.npy --v kbig.npy --out kept.npy --lse kept_l.npy >out 2>err)
rc=$?
expect "a full disk (file-size limit) is exit 1 with a message" 1 "cannot write"
same "the existing --out survives a full disk" kept.npy keep
same "the existing --lse survives a full disk" kept_l.npy keep
absent "no temporary after a full disk" kept.npy.tmp.x
ls kept.npy.tmp.* kept_l.npy.tmp.* >/dev/null 2>&1 && bad "a temporary was left after a full disk" || ok "no temporary left after a full disk"

echo "== 3: unique temporaries"
echo mine >o3.npy.tmp
run $A --out o3.npy
expect "a valid run beside a user's o3.npy.tmp" 0
same "the user's o3.npy.tmp is untouched" o3.npy.tmp mine
"$BIN" $A --out ref_v.npy >/dev/null 2>&1
"$BIN" attn --q q.npy --k k.npy --v v2.npy --out ref_v2.npy >/dev/null 2>&1
mixed=0
i=0
while [ $i -lt 12 ]; do
    "$BIN" $A --out race.npy >/dev/null 2>&1 &
    p1=$!
    "$BIN" attn --q q.npy --k k.npy --v v2.npy --out race.npy >/dev/null 2>&1 &
    p2=$!
    wait $p1; r1=$?
    wait $p2; r2=$?
    if [ $r1 -ne 0 ] || [ $r2 -ne 0 ] || { ! cmp -s race.npy ref_v.npy && ! cmp -s race.npy ref_v2.npy; }; then
        mixed=$((mixed + 1))
    fi
    i=$((i + 1))
done
[ $mixed -eq 0 ] && ok "12 pairs of concurrent runs on one --out: each result is one run's file" ||
    bad "$mixed of 12 concurrent pairs gave a file matching neither run (or failed)"

echo "== 4: outputs sharing a file, outputs naming an input"
run $A --out x.npy --lse x.npy
expect "--out and --lse the same file" 2 "name the same file"
run $A --out x.npy --lse ./x.npy
expect "--out x.npy and --lse ./x.npy" 2 "name the same file"
run $G --dq d.npy --dk d.npy --dv dv4.npy
expect "grad --dq and --dk the same file" 2 "name the same file"
absent "nothing written" x.npy d.npy dv4.npy
cp q.npy qcopy.npy
run attn --q qcopy.npy --k k.npy --v v.npy --out qcopy.npy
expect "--out naming the input --q" 2 "is the input --q"
cmp -s q.npy qcopy.npy && ok "the input is unchanged" || bad "the input was replaced"
ln qcopy.npy qlink.npy
run attn --q qcopy.npy --k k.npy --v v.npy --out qlink.npy
expect "--out a hard link to the input --q" 2 "is the input --q"

echo "== 5: no hang, no unbounded read on special files"
"$BIN" model-init --out m --config tiny >/dev/null 2>&1 || bad "model-init"
mkdir mf
cp m/config.json m/tokenizer.json m/tokenizer_config.json mf/
mkfifo mf/model.safetensors
run_bounded() { timeout 20 "$BIN" "$@" >out 2>err; rc=$?; }
run_bounded run --model mf --prompt hi --max-tokens 2
expect "a FIFO as model.safetensors is refused, no hang" 1 "not a regular file"
run_bounded run --model m --prompt-file /dev/zero --max-tokens 2
expect "--prompt-file /dev/zero is refused" 1 "not a regular file"
mkfifo pf
run_bounded run --model m --prompt-file pf --max-tokens 2
expect "--prompt-file a FIFO is refused, no hang" 1 "FIFO"
run_bounded logits --model m --tokens /dev/zero --out l5.npy
expect "--tokens /dev/zero is refused" 1 "not a regular file"
run_bounded attn --q fifo.npy --k k.npy --v v.npy --out o5.npy
expect "--q a FIFO is refused, no hang" 1 "FIFO"
rm -f mf/model.safetensors mf/tokenizer.json && cp m/model.safetensors mf/ && mkfifo mf/tokenizer.json
run_bounded run --model mf --prompt hi --max-tokens 2
expect "a FIFO as tokenizer.json is refused, no hang" 1 "not a regular file"
rm -f mf/tokenizer.json && cp m/tokenizer.json mf/ && rm -f mf/config.json && mkfifo mf/config.json
run_bounded run --model mf --prompt hi --max-tokens 2
expect "a FIFO as config.json is refused, no hang" 1 "not a regular file"

echo "== 6: sizes in config.json checked before arithmetic"
mkdir big
cp m/model.safetensors m/tokenizer.json m/tokenizer_config.json big/
python3 - <<'EOF' || exit 1
import json
c = json.load(open("m/config.json"))
c["sparse_config"] = {"kernel_size": 1 << 30, "kernel_stride": 16, "block_size": 64, "window_size": 2048, "topk": 64,
                      "init_blocks": 1, "dense_len": 8192}
json.dump(c, open("big/config.json", "w"))
c = json.load(open("m/config.json"))
c["vocab_size"], c["hidden_size"] = (1 << 31) - 1, 1 << 20
json.dump(c, open("big/config_vocab.json", "w"))
EOF
run run --model big --prompt hi --max-tokens 1
expect "sparse_config kernel_size 2^30 is refused by its limit" 1 "above the limit"
mv big/config_vocab.json big/config.json
run run --model big --prompt hi --max-tokens 1
expect "vocab_size x hidden_size beyond 2^40 is refused" 1 "2^40 elements"

echo "== 7: negative and huge flags refused, never defaults"
for f in "--coarse-kernel-stride -3" "--coarse-kernel-size -5" "--kernel-size 1073741824" "--window -64" "--scale inf" "--scale 1e999"; do
    run $A --out o7.npy $f
    expect "attn $f is a usage error" 2 "${f%% *}"
done
run run --model m --prompt hi --temperature nan
expect "run --temperature nan is a usage error" 2 "--temperature"
absent "no output written" o7.npy

echo "== 8: outputs checked for finiteness; the cpu backend does not overflow where ref does not"
python3 - "$HERE/oracle" <<'EOF' || exit 1
import sys
sys.path.insert(0, sys.argv[1])
import npy
npy.save("vhuge.npy", [3e38 if i % 3 else -3e38 for i in range(144)], (9, 2, 8), "<f4")
npy.save("qhuge.npy", [3e38] * 160, (5, 4, 8), "<f4")
npy.save("kones.npy", [1.0] * 144, (9, 2, 8), "<f4")
EOF
run attn --q q.npy --k k.npy --v v.npy --out o8.npy --lse l8.npy --scale 1e308
expect "--scale 1e308: a non-finite LSE is exit 1" 1 "not finite"
run attn --q qhuge.npy --k kones.npy --v v.npy --out o8.npy --lse l8.npy
expect "Q of 3e38: LSE +Inf is exit 1" 1 "not finite"
absent "nothing written for non-finite outputs" o8.npy l8.npy
"$BIN" attn --q q.npy --k k.npy --v vhuge.npy --out o8ref.npy >/dev/null 2>err
rc=$?
expect "V of +-3e38 on ref: finite" 0
if "$BIN" version | grep -qw cpu; then
    run attn --q q.npy --k k.npy --v vhuge.npy --out o8cpu.npy --backend cpu
    expect "V of +-3e38 on cpu: finite like ref (no overflow to +Inf)" 0
    python3 - "$HERE/oracle" <<'EOF' && ok "cpu matches ref within 1e-6 relative at V = 3e38" || bad "cpu differs from ref at V = 3e38"
import sys
sys.path.insert(0, sys.argv[1])
import npy
a, b = npy.load("o8cpu.npy")[0], npy.load("o8ref.npy")[0]
sys.exit(0 if max(abs(x - y) for x, y in zip(a, b)) <= 1e-6 * 3e38 else 1)
EOF
fi

mkdir ovf
cp m/config.json m/model.safetensors m/tokenizer.json m/tokenizer_config.json ovf/
# the final norm's weights at bfloat16's largest finite value: finite weights, overflowing logits
python3 - <<'EOF' || exit 1
import json, struct
b = bytearray(open("ovf/model.safetensors", "rb").read())
n = struct.unpack("<Q", b[:8])[0]
t = json.loads(b[8:8 + n])["model.norm.weight"]
assert t["dtype"] == "BF16"
lo, hi = t["data_offsets"]
b[8 + n + lo:8 + n + hi] = b"\x7f\x7f" * ((hi - lo) // 2)
open("ovf/model.safetensors", "wb").write(bytes(b))
EOF
echo "1 2 3" >tok8.txt
run logits --model ovf --tokens tok8.txt --out l8.npy
expect "logits: a checkpoint whose activations overflow is exit 1" 1 "float32 range"
absent "no NaN logits written" l8.npy
run run --model ovf --prompt hi --max-tokens 2
expect "run: the same checkpoint, the same rule" 1 "float32 range"

echo "== 9: a memory plan before allocating"
run $A --out o9.npy --max-memory 1M
expect "attn over --max-memory 1M is refused with the bytes needed" 1 "needs about"
run $G --dq dq9.npy --dk dk9.npy --dv dv9.npy --max-memory 2M
expect "grad over --max-memory 2M is refused" 1 "needs about"
run $A --out o9.npy --max-memory 12X
expect "--max-memory 12X is a usage error" 2 "--max-memory"
run $A --out o9.npy --max-memory 1G
expect "attn within --max-memory 1G runs" 0
rm -f o9.npy
absent "nothing written when refused" dq9.npy dk9.npy dv9.npy
# the estimate bounds the real peak (not under ASan, whose shadow memory inflates the RSS)
if [ -x /usr/bin/time ] && ! nm "$BIN" 2>/dev/null | grep -q __asan_init; then
    python3 - "$HERE/oracle" <<'EOF' || exit 1
import sys
sys.path.insert(0, sys.argv[1])
import npy
npy.save("q9.npy", [0.01 * (i % 97) for i in range(512 * 8 * 64)], (512, 8, 64), "<f4")
npy.save("k9.npy", [0.01 * (i % 89) for i in range(4096 * 2 * 64)], (4096, 2, 64), "<f4")
EOF
    for be in ref cpu; do
        est=$("$BIN" attn --q q9.npy --k k9.npy --v k9.npy --out o9.npy --backend "$be" --max-memory 1 2>&1 |
              sed -n 's/.*needs about \([0-9]*\) bytes.*/\1/p')
        kb=$(/usr/bin/time -f %M "$BIN" attn --q q9.npy --k k9.npy --v k9.npy --out o9.npy --backend "$be" 2>&1 >/dev/null | tail -n 1)
        if [ -n "$est" ] && [ "$((kb * 1024))" -le "$est" ]; then ok "--backend $be: peak $((kb / 1024)) MiB within the estimate $((est / 1048576)) MiB"
        else bad "--backend $be: peak ${kb} KiB above the estimate '$est' bytes"; fi
    done
    # ulimit -v: the default limit comes from RLIMIT_AS
    (ulimit -v 60000; "$BIN" grad --q q9.npy --k k9.npy --v k9.npy --dout q9.npy --dq dq9.npy --dk dk9.npy --dv dv9.npy >out 2>err)
    rc=$?
    expect "grad under ulimit -v 60 MB is refused by the plan, not killed" 1 "RLIMIT_AS"
fi

echo "== 7: strict .npy headers and token files"
# rawnpy PATH HEADER [DATA_BYTES]: a version 1.0 file with exactly this header text (+ "\n")
rawnpy() {
    python3 -c '
import struct, sys
h = (sys.argv[2] + "\n").encode("latin1")
open(sys.argv[1], "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + bytes(int(sys.argv[3])))
' "$1" "$2" "${3:-640}"
}
rawnpy falsey.npy "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (5, 4, 8), }"
rawnpy dupshape.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 4, 8), 'shape': (160,), }"
rawnpy instring.npy "{'descr': '>f4', 'fortran_order': False, 'shape': (5, 4, 8), 'x': 'descr: <f4'}"
rawnpy notuple.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (160), }"
rawnpy zeros.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (05, 4, 8), }"
rawnpy nokey.npy "{'descr': '<f4', 'shape': (5, 4, 8), }"
rawnpy junk.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 4, 8), } x"
rawnpy ok.npy "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 4, 8), }"
for f in falsey:"byte 44" dupshape:"twice" instring:"dtype '>f4'" notuple:"not a tuple" zeros:"leading zero" nokey:"needs the keys" junk:"after '}'"; do
    name=${f%%:*}
    run attn --q $name.npy --k k.npy --v v.npy --out o7.npy
    expect ".npy header $name.npy is refused with its position" 1 "${f#*:}"
done
run attn --q ok.npy --k k.npy --v v.npy --out o7.npy
expect "the same header written plainly is accepted" 0
printf '1 2 3\0004 5\n' >nul.txt
run logits --model m --tokens nul.txt --out l7.npy
expect "a NUL byte in a token file is refused with its offset" 1 "byte 5"
python3 -c '
import struct
h = b"{'"'"'descr'"'"': '"'"'<i4'"'"', '"'"'fortran_order'"'"': False, '"'"'shape'"'"': (3,), }\n"
open("tok_trail.npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + struct.pack("<3i", 1, 2, 3) + b"junk")
'
run logits --model m --tokens tok_trail.npy --out l7.npy
expect "trailing bytes after .npy token data are refused" 1 "trailing bytes"
absent "no logits written" l7.npy

echo "test_hostile.sh: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
