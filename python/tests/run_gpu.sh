#!/bin/sh
# python/tests/run_gpu.sh -- the Python package on a GPU machine, from the repository root of a
# fresh checkout: builds the cuda library and tool (make CUDA=1), points the package at
# build/cuda/libinfllm.so, runs the whole pytest suite on cpu and cuda (the toy training check on
# both included), the toy training check on cuda again on its own (so its verdict stands out), and
# `python -m infllm.bench` at 8K and 32K keys. About 5 minutes on an H200 machine (the build is
# most of it).
#
#   sh python/tests/run_gpu.sh        PYTHON (default python3): an interpreter with torch (CUDA),
#                                     numpy and pytest; BENCH_KEYS (default 8K,32K); OUT (logs,
#                                     default /tmp/infllm_python_gpu)
# Exit status 1 when the build, a test or the benchmark failed; every step runs regardless.
set -u
py=${PYTHON:-python3}
out=${OUT:-/tmp/infllm_python_gpu}
mkdir -p "$out"
rc=0
step() { echo "== $1"; }

step "build: make CUDA=1 (log $out/build.log)"
if ! make -j"$(nproc)" CUDA=1 build/cuda/libinfllm.so build/cuda/infllm >"$out/build.log" 2>&1; then
    tail -n 30 "$out/build.log"; echo "build FAILED"; exit 1
fi
export INFLLM_LIB="$PWD/build/cuda/libinfllm.so" PYTHONPATH="$PWD/python"
"$py" -c "import torch, infllm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
'| infllm', infllm.__version__, infllm.LIBRARY_PATH, '| cuda backend', infllm.backend_available('cuda'))"

step "pytest python/tests on cpu and cuda (log $out/pytest.log)"
"$py" -m pytest -q -p no:cacheprovider -rs python/tests 2>&1 | tee "$out/pytest.log" | tail -n 40
grep -Eq "^[0-9]+ passed" "$out/pytest.log" && ! grep -Eq "[0-9]+ (failed|error)" "$out/pytest.log" || rc=1

step "toy training on cuda (loss goes down)"
INFLLM_TEST_DEVICES=cuda "$py" -m pytest -q -p no:cacheprovider -rs python/tests/test_train.py 2>&1 | tail -n 5 |
    tee "$out/train.log"
grep -q " passed" "$out/train.log" && ! grep -Eq "failed|skipped" "$out/train.log" || rc=1

step "python -m infllm.bench --keys ${BENCH_KEYS:-8K,32K}"
"$py" -m infllm.bench --keys "${BENCH_KEYS:-8K,32K}" --json "$out/bench.json" 2>&1 | tee "$out/bench.log" || rc=1

[ $rc -eq 0 ] && echo "run_gpu: all passed" || echo "run_gpu: FAILED (logs in $out)"
exit $rc
