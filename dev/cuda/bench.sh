#!/bin/sh
# dev/cuda/bench.sh -- on the GPU machine: build (unless build/cuda is already there and runs),
# run tests/test_cuda.c, then time the cuda backend (dev/cuda/bench.cu) and PyTorch SDPA
# (dev/cuda/bench_torch.py) on the same shapes. Logs go to $OUT (or /tmp) and short tables to stdout.
#   sh dev/cuda/bench.sh [test|bench|all] [extra bench.cu args...]
set -u
what=${1:-all}; [ $# -gt 0 ] && shift
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
if ! build/cuda/tests/test_cuda --filter NOTHING >/dev/null 2>&1 || [ ! -x build/cuda/bench ]; then
    echo "== building (make CUDA=1)"
    make CUDA=1 -j16 all build/cuda/tests/test_cuda >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
    nvcc -O2 -std=c++17 -Iinclude -gencode=arch=compute_90a,code=sm_90a dev/cuda/bench.cu build/cuda/libinfllm.a \
        -o build/cuda/bench >>"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
fi
rc=0
if [ "$what" = test ] || [ "$what" = all ]; then
    echo "== test_cuda"
    build/cuda/tests/test_cuda ${TEST_CUDA_ARGS:-} >"$out/test_cuda.log" 2>&1; rc=$?
    grep -E "FAIL|malformed|differs beyond" "$out/test_cuda.log" | head -40
    sed -n '/^worst errors/,$p' "$out/test_cuda.log"
    echo "test_cuda exit $rc"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    echo "== infllm cuda backend"
    build/cuda/bench "$@" 2>&1 | tee "$out/bench.log"
    echo "== PyTorch SDPA"
    PYTHONUNBUFFERED=1 python3 dev/cuda/bench_torch.py 2>&1 | tee "$out/torch.log"
fi
exit $rc
