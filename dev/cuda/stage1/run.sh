#!/bin/sh
# dev/cuda/stage1/run.sh -- on the GPU machine: build the library and test_cuda (make CUDA=1), link
# s1bench against the library's stage 1, run test_cuda, then time it. With V3=FILE, an older
# cuda_select.cu is linked ahead of the library into a second s1bench (its cuda_select_run wins)
# and both are timed side by side with their selections compared. The v3 kernel of
# docs/benchmarks.md is commit 61a64fb's: `git show 61a64fb:src/cuda/cuda_select.cu > dev/cuda/stage1/v3.cu`
# here (the GPU machine gets the working tree, not the history), then `V3=dev/cuda/stage1/v3.cu`.
#   sh dev/cuda/stage1/run.sh [test|bench|all] [test_cuda args...]
set -u
what=${1:-all}; [ $# -gt 0 ] && shift
out=${OUT:-/tmp}
NV="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Iinclude"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
echo "== build"
make CUDA=1 -j16 all build/cuda/tests/test_cuda >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
$NV -c dev/cuda/stage1/s1bench.cu -o build/cuda/s1bench.o &&
$NV build/cuda/s1bench.o build/cuda/libinfllm.a -o build/cuda/s1bench_new || exit 1
if [ -n "${V3:-}" ]; then
    $NV -Isrc/cuda -c "$V3" -o build/cuda/select_v3.o &&
    $NV build/cuda/s1bench.o build/cuda/select_v3.o build/cuda/libinfllm.a -o build/cuda/s1bench_v3 || exit 1
fi
rc=0
if [ "$what" = test ] || [ "$what" = all ]; then
    echo "== test_cuda $*"
    build/cuda/tests/test_cuda "$@" >"$out/test_cuda.log" 2>&1; rc=$?
    grep -E "FAIL|malformed|differs beyond" "$out/test_cuda.log" | head -20
    sed -n '/^worst errors/,$p' "$out/test_cuda.log" | head -30
    echo "test_cuda exit $rc"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    if [ -n "${V3:-}" ]; then
        echo "== v3 ($V3)"; build/cuda/s1bench_v3 --reps ${REPS:-5} --dump /tmp/sel_v3.bin ${BENCH_ARGS:-}
    fi
    echo "== library";  build/cuda/s1bench_new --reps ${REPS:-5} --dump /tmp/sel_new.bin ${BENCH_ARGS:-}
    if [ -n "${V3:-}" ]; then python3 dev/cuda/stage1/cmpsel.py /tmp/sel_v3.bin /tmp/sel_new.bin 96; fi
fi
exit $rc
