#!/bin/sh
# dev/cuda/stage1/run.sh -- on the GPU machine: build the library and test_cuda (make CUDA=1), link
# s1bench twice (the library's stage 1, and the v3 copy select_v3.cu linked ahead of the library so
# its cuda_select_run wins), run test_cuda, then time both side by side. Logs under $OUT.
#   sh dev/cuda/stage1/run.sh [test|bench|all] [test_cuda args...]
set -u
what=${1:-all}; [ $# -gt 0 ] && shift
out=${OUT:-/tmp}
NV="nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Iinclude"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
echo "== build"
make CUDA=1 -j16 all build/cuda/tests/test_cuda >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
$NV -c dev/cuda/stage1/s1bench.cu -o build/cuda/s1bench.o &&
$NV -Isrc/cuda -c dev/cuda/stage1/select_v3.cu -o build/cuda/select_v3.o &&
$NV build/cuda/s1bench.o build/cuda/libinfllm.a -o build/cuda/s1bench_new &&
$NV build/cuda/s1bench.o build/cuda/select_v3.o build/cuda/libinfllm.a -o build/cuda/s1bench_v3 || exit 1
rc=0
if [ "$what" = test ] || [ "$what" = all ]; then
    echo "== test_cuda $*"
    build/cuda/tests/test_cuda "$@" >"$out/test_cuda.log" 2>&1; rc=$?
    grep -E "FAIL|malformed|differs beyond" "$out/test_cuda.log" | head -20
    sed -n '/^worst errors/,$p' "$out/test_cuda.log" | head -30
    echo "test_cuda exit $rc"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    echo "== v3";  build/cuda/s1bench_v3  --reps ${REPS:-5} --dump /tmp/sel_v3.bin  ${BENCH_ARGS:-}
    echo "== new"; build/cuda/s1bench_new --reps ${REPS:-5} --dump /tmp/sel_new.bin ${BENCH_ARGS:-}
    python3 dev/cuda/stage1/cmpsel.py /tmp/sel_v3.bin /tmp/sel_new.bin 96
fi
exit $rc
