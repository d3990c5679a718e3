#!/bin/sh
# dev/cuda/grad_cli_check.sh -- `infllm grad --backend cuda` against `--backend cpu` end to end on
# .npy files (GPU machine, after make CUDA=1): random q, k, v, dout of T tokens (numpy, f32), bf16
# storage, sparse with every sequence sparse (--dense-len -1) and dense; the cuda run reuses the
# cpu run's selection (--blocks-in), so both compute the same function. Prints max|cuda - cpu| /
# max|cpu| per gradient; each must stay below 2e-2 (a few bf16 units: both round P and dS).
# T must exceed (topk + window/block) * block = 6144 keys for the sparse run to skip any block.
#   sh dev/cuda/grad_cli_check.sh [T]        (T = 8192)
set -eu
T=${1:-8192}
BIN=build/cuda/infllm
D=$(mktemp -d)
python3 - "$D" "$T" <<'PY'
import sys, numpy as np
d, t = sys.argv[1], int(sys.argv[2])
r = np.random.default_rng(7)
for name, h in (("q", 32), ("k", 2), ("v", 2), ("dout", 32)):
    np.save(f"{d}/{name}.npy", r.standard_normal((t, h, 128)).astype(np.float32))
PY
for mode in sparse dense; do
    extra=""
    [ $mode = sparse ] && extra="--dense-len -1"
    $BIN grad --q $D/q.npy --k $D/k.npy --v $D/v.npy --dout $D/dout.npy --dq $D/dq_cpu.npy --dk $D/dk_cpu.npy \
        --dv $D/dv_cpu.npy --blocks-out $D/sel.npy --mode $mode $extra --dtype bf16 --backend cpu >/dev/null
    sel=""
    [ $mode = sparse ] && sel="--blocks-in $D/sel.npy"
    $BIN grad --q $D/q.npy --k $D/k.npy --v $D/v.npy --dout $D/dout.npy --dq $D/dq_cuda.npy --dk $D/dk_cuda.npy \
        --dv $D/dv_cuda.npy $sel --mode $mode $extra --dtype bf16 --backend cuda >/dev/null
    python3 - "$D" "$mode" <<'PY'
import sys, numpy as np
d, mode = sys.argv[1], sys.argv[2]
bad = 0
for g in ("dq", "dk", "dv"):
    a, b = np.load(f"{d}/{g}_cuda.npy"), np.load(f"{d}/{g}_cpu.npy")
    rel = float(np.abs(a - b).max() / np.abs(b).max())
    print(f"{mode:6s} {g}: max|cuda - cpu| / max|cpu| = {rel:.3g}")
    bad |= not rel < 2e-2
sys.exit(bad)
PY
done
rm -rf "$D"
echo "grad_cli_check: cuda matches cpu"
