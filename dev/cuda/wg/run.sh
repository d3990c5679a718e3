#!/bin/sh
# dev/cuda/wg/run.sh -- one device call for the wgmma + TMA forward (src/cuda/cuda_attn_wg.cu):
# build, SASS check, test_cuda (auto kernel choice, the wgmma kernel forced everywhere it applies, and
# the mma.sync forward forced), then prefill timings of the mma.sync kernel (INFLLM_CUDA_ATTN=mma) and the wgmma one
# in the same run. Logs under $OUT (default /tmp/wg). KEYS: prefill sizes (default "32768 131072").
set -u
out=${OUT:-/tmp/wg}
keys=${KEYS:-32768 131072}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
echo "== build"
make CUDA=1 -j16 all build/cuda/tests/test_cuda >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
echo "HGMMA in attn_wg: $(cuobjdump --dump-sass build/cuda/src/cuda/cuda_attn_wg.o | grep -c HGMMA)"
echo "UTMALDG in attn_wg: $(cuobjdump --dump-sass build/cuda/src/cuda/cuda_attn_wg.o | grep -c UTMALDG)"
for mode in ${MODES:-auto wg mma}; do
    echo "== test_cuda INFLLM_CUDA_ATTN=$mode"
    if [ $mode = auto ]; then e=""; else e=$mode; fi
    INFLLM_CUDA_ATTN=$e timeout ${TEST_S:-150} build/cuda/tests/test_cuda ${TEST_ARGS:-} >"$out/t.log" 2>&1
    trc=$?
    echo "exit $trc; $(grep -c FAIL "$out/t.log") FAIL lines"
    grep FAIL "$out/t.log" | head -${NFAIL:-8}
    tail -4 "$out/t.log"
    { echo "==== $mode"; cat "$out/t.log"; } >>"$out/tests.log"
done
rm -f "$out/t.log"
echo "== bench (prefill; mma.sync vs wgmma, same run)"
for n in $keys; do
    for mode in mma wg; do
        INFLLM_CUDA_ATTN=$mode timeout 120 build/cuda/infllm bench --backend cuda --ops prefill --keys "$n" --queries "$n" \
            --json >"$out/bench_${mode}_$n.json" 2>>"$out/bench.log"
        echo "N=$n $mode exit $?"
        python3 - "$out/bench_${mode}_$n.json" "$mode" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"): continue
    r = json.loads(l); n = r["n_keys"]
    eff = 4 * n * 6144 * 128 * 32 / r["attend_ms"] * 1e-9 if r.get("attend_ms") else 0
    print(f"  {sys.argv[2]:4s} {r['inputs']:10s} N={n} dense {r['dense_ms']:.2f} ms ({2*n*n*128*32/r['dense_ms']*1e-9:.0f} TF/s)"
          f"  select {r['select_ms']:.2f}  stage2 {r['attend_ms']:.2f} ms ({eff:.0f} eff)  sparse {r['sparse_ms']:.2f}")
PY
    done
done
if [ -n "${NCU:-}" ]; then
    echo "== ncu (first attn_wg launches of a 32K prefill: dense, then stage 2)"
    timeout 150 ncu --clock-control none -k regex:attn_wg -c 2 --section SpeedOfLight --section Occupancy \
        --section ComputeWorkloadAnalysis build/cuda/infllm bench --backend cuda --ops prefill --keys 32768 \
        --queries 32768 --runs 1 --inputs "${NCU_INPUTS:-random}" >"$out/ncu.log" 2>&1
    echo "ncu exit $?"
    grep -E "attn_wg|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Executed Ipc|SM Busy|Issue Slots" "$out/ncu.log" | head -30
fi
