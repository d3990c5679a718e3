#!/bin/sh
# dev/cuda/wg/final.sh -- the session's closing device call: build, the one-run table of
# scripts/bench_cuda.sh (prefill 8K-128K and decode beside PyTorch SDPA; no backward), test_cuda,
# then compute-sanitizer memcheck and racecheck on the Tq=257 cases (both kernels' shapes).
set -u
o=${OUT:-/tmp/final}; mkdir -p "$o"
make CUDA=1 -j16 all build/cuda/tests/test_cuda >"$o/build.log" 2>&1 || { tail -20 "$o/build.log"; exit 1; }
OUT=/tmp/bc BWD="" PREFILL="8192 32768 65536 131072" timeout 300 sh scripts/bench_cuda.sh bench
cp /tmp/bc/table.md /tmp/bc/infllm.json /tmp/bc/torch.json "$o/" 2>/dev/null
cp /tmp/bc/bench.log "$o/bench.log" 2>/dev/null
echo "== test_cuda"
timeout 150 build/cuda/tests/test_cuda >"$o/test_cuda.log" 2>&1; echo "exit $?"; tail -2 "$o/test_cuda.log"
echo "== memcheck"
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 1 --leak-check full build/cuda/tests/test_cuda --filter "Tq=257,Tk=257" >"$o/sanitize.log" 2>&1
echo "memcheck exit $?"; grep -E "ERROR SUMMARY|cases," "$o/sanitize.log" | tail -2
echo "== racecheck"
timeout 100 compute-sanitizer --tool racecheck --error-exitcode 1 build/cuda/tests/test_cuda --filter "Tq=257,Tk=257,Hq=32" >>"$o/sanitize.log" 2>&1
echo "racecheck exit $?"; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|cases," "$o/sanitize.log" | tail -2
