#!/bin/sh
# scripts/bench_cuda.sh -- on a GPU machine: build the cuda backend (make CUDA=1; a no-op when up to
# date), check it (tests/test_cuda.c, and the same under compute-sanitizer memcheck), then time it
# with `infllm bench --backend cuda --json` and PyTorch's scaled_dot_product_attention (cuDNN and
# flash backends, dev/cuda/bench_torch.py) on the same shapes in the same run, and print one
# combined table (markdown).
#
#   sh scripts/bench_cuda.sh [PHASE...]   PHASE: test | memcheck | bench | all (= test memcheck bench)
#
# Shape: batch 1, 32 query heads, 2 KV heads, head dim 128, bf16, the default sparse config.
#   prefill  the full causal prefill of N queries over N keys (bench --ops prefill --keys N --queries N)
#   decode   one query after N-1 keys (bench --ops decode)
#   backward the backward of that full causal prefill, dense and sparse (bench --ops backward
#            --bwd-keys N --queries N); PyTorch times autograd.grad of SDPA alone (bench_torch.py
#            --bwd-lens). A build whose backend refuses the backward (UNSUPPORTED) gets a table
#            that says so; that is not a failure.
# Environment: OUT (logs, default /tmp/bench_cuda), PREFILL (key counts, default
# "8192 32768 65536 131072"; empty: none), DECODE ("32768,131072"; empty: none), DECODE_RUNS (20),
# BWD (key counts of the backward, default "8192 32768 65536 131072"; empty: none), JOBS (make -j,
# default nproc).
# Files under $OUT: build.log, test_cuda.log, memcheck.log, bench.log (the tool's tables, PyTorch's
# output), infllm.json and torch.json (one JSON object per case), bwd_status.txt (one line "N ok",
# "N unsupported" or "N failed" per backward size of infllm bench), table.md (the combined table).
# Exit status: 1 when the build, test_cuda or memcheck failed (memcheck also when it could not run)
# or a benchmark failed (an UNSUPPORTED backward is not a failure).
set -u
out=${OUT:-/tmp/bench_cuda}
prefill=${PREFILL-8192 32768 65536 131072}
decode=${DECODE-32768,131072}
decode_runs=${DECODE_RUNS:-20}
bwd=${BWD-8192 32768 65536 131072}
jobs=${JOBS:-$(nproc)}
mkdir -p "$out" || exit 1
[ $# -eq 0 ] && set -- all
phases=" $* "
case "$phases" in *" all "*) phases=" test memcheck bench " ;; esac
for p in $phases; do
    case $p in test | memcheck | bench) ;; *) echo "usage: sh scripts/bench_cuda.sh [test|memcheck|bench|all]..." >&2; exit 2 ;; esac
done
rc=0

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
echo "== GPU: ${gpu:-none found (nvidia-smi)}"
echo "== build (make CUDA=1 -j$jobs)"
if ! make CUDA=1 -j"$jobs" all build/cuda/tests/test_cuda >"$out/build.log" 2>&1; then
    tail -30 "$out/build.log"
    exit 1
fi

for phase in $phases; do
    case $phase in
    test)
        echo "== test_cuda (log: test_cuda.log)"
        build/cuda/tests/test_cuda >"$out/test_cuda.log" 2>&1
        trc=$?
        grep -E "FAIL|SKIPPED" "$out/test_cuda.log" | head -20
        sed -n '/^worst errors/,$p' "$out/test_cuda.log"
        echo "test_cuda exit $trc"
        [ $trc -eq 0 ] || rc=1
        ;;
    memcheck)
        echo "== make test-cuda-memcheck (log: memcheck.log)"
        make --no-print-directory test-cuda-memcheck >"$out/memcheck.log" 2>&1
        mrc=$?
        cat build/cuda/test_cuda_memcheck.log >>"$out/memcheck.log" 2>/dev/null
        grep -E "^test-cuda-memcheck:|ERROR SUMMARY|cases, " "$out/memcheck.log" | head -5
        echo "test-cuda-memcheck exit $mrc"
        [ $mrc -eq 0 ] || rc=1
        ;;
    bench)
        echo "== infllm bench --backend cuda (tables: bench.log)"
        json=$out/infllm.json
        : >"$json"
        : >"$out/bench.log"
        echo "GPU: $gpu" >>"$out/bench.log"
        for n in $prefill; do
            echo "   prefill $n"
            build/cuda/infllm bench --backend cuda --json --ops prefill --keys "$n" --queries "$n" \
                >>"$json" 2>>"$out/bench.log" || rc=1
        done
        if [ -n "$decode" ]; then
            echo "   decode $decode"
            build/cuda/infllm bench --backend cuda --json --ops decode --keys "$decode" --runs "$decode_runs" \
                >>"$json" 2>>"$out/bench.log" || rc=1
        fi
        # backward: one call per size (dense and sparse, random and correlated inputs). The tool
        # probes the backend and, when it refuses the backward, notes "skipping op backward" and
        # exits 2 (nothing left to run): recorded as unsupported, not as a failure.
        : >"$out/bwd_status.txt"
        for n in $bwd; do
            echo "   backward $n"
            build/cuda/infllm bench --backend cuda --json --ops backward --bwd-keys "$n" --queries "$n" \
                >>"$json" 2>"$out/bwd.err"
            brc=$?
            cat "$out/bwd.err" >>"$out/bench.log"
            if [ $brc -eq 0 ]; then
                st=ok
            elif grep -q "skipping op backward" "$out/bwd.err"; then
                st=unsupported
            else
                st=failed
                rc=1
                tail -3 "$out/bwd.err"
            fi
            [ $st = ok ] || echo "   backward $n: $st"
            echo "$n $st" >>"$out/bwd_status.txt"
        done
        rm -f "$out/bwd.err"
        echo "== PyTorch scaled_dot_product_attention (cuDNN, flash)"
        lens=$(echo $prefill | tr ' ' ',')
        bwd_lens=$(echo $bwd | tr ' ' ',')
        PYTHONUNBUFFERED=1 python3 dev/cuda/bench_torch.py --lens "$lens" --bwd-lens "$bwd_lens" --decode "$decode" \
            --json "$out/torch.json" >>"$out/bench.log" 2>&1 || { rc=1; tail -5 "$out/bench.log"; }
        echo "== combined table (table.md)"
        python3 - "$json" "$out/torch.json" "$gpu" "$bwd" "$out/bwd_status.txt" <<'EOF' | tee "$out/table.md"
import json, sys

def load(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip().startswith("{")]
    except OSError:
        return []

ours, torch = load(sys.argv[1]), load(sys.argv[2])
gpu = sys.argv[3]
sdpa = {(r["op"], r["n"], r["backend"]): r for r in torch}
HQ, D, KEYS = 32, 128, 6144  # the issue's count: each query attends 96 blocks of 64 = 6144 keys

def size(n):
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)

def num(x, fmt):
    return "-" if x is None else format(x, fmt)

def sd(op, n, be, scale=1.0, fmt=".2f", rate=True):
    r = sdpa.get((op, n, be))
    if r is None or r["ms"] is None:
        return "-"
    s = format(r["ms"] * scale, fmt)
    if op == "decode" and r.get("kv") == "expanded":
        s += " (K/V expanded)"
    return f"{s} ({r['tflops']:.0f})" if rate and r.get("tflops") else s

if ours:
    o = ours[0]
    print(f"GPU {gpu or '?'}; libinfllm {o.get('version', '?')}, {o.get('date', '?')}; "
          f"torch {torch[0]['torch'] if torch else '-'}")
print()
print("Full causal prefill, batch 1 (ms; TFLOP/s in parentheses). Stage 2 FLOP = 4*N*6144*D*Hq "
      "(the issue's count, 'eff'); 'exact' counts the keys each row really attends.")
print()
print("| inputs | N | stage 1 ms | stage 2 ms | stage-2 FLOP | stage 2 TFLOP/s eff / exact "
      "| sparse fwd ms | dense (ours) ms | cuDNN ms | FA2 ms | cuDNN / sparse |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in ours:
    if r["op"] != "prefill" or r["n_keys"] != r["n_queries"]:
        continue
    n = r["n_keys"]
    flop = 4 * n * KEYS * D * HQ
    att = r["attend_ms"]
    eff = flop / att * 1e-9 if att else None
    exact = r["attend_gflop"] / att if att and r.get("attend_gflop") else None
    dense = f"{r['dense_ms']:.2f} ({r['dense_gflops'] * 1e-3:.0f})" if r.get("dense_gflops") else num(r["dense_ms"], ".2f")
    cud = sdpa.get(("prefill", n, "cudnn"))
    speed = f"{cud['ms'] / r['sparse_ms']:.2f}x" if cud and cud["ms"] and r["sparse_ms"] else "-"
    print(f"| {r['inputs']} | {size(n)} | {num(r['select_ms'], '.2f')} | {num(att, '.2f')} | {flop} "
          f"| {num(eff, '.0f')} / {num(exact, '.0f')} | {num(r['sparse_ms'], '.2f')} | {dense} "
          f"| {sd('prefill', n, 'cudnn')} | {sd('prefill', n, 'flash')} | {speed} |")
print()
print("Decode, one query after N-1 keys (us); cuDNN and FA2 with native GQA (enable_gqa=True) unless "
      "marked 'K/V expanded'.")
print()
print("| inputs | N | sparse (select + stage 2) | select | stage 2 | dense (ours) | cuDNN | FA2 |")
print("|---|---|---|---|---|---|---|---|")
for r in ours:
    if r["op"] != "decode":
        continue
    n = r["n_keys"]
    us = lambda k: num(None if r[k] is None else r[k] * 1e3, ".1f")
    print(f"| {r['inputs']} | {size(n)} | {us('sparse_ms')} | {us('select_ms')} | {us('attend_ms')} "
          f"| {us('dense_ms')} | {sd('decode', n, 'cudnn', 1e3, '.1f', False)} "
          f"| {sd('decode', n, 'flash', 1e3, '.1f', False)} |")

# backward of the full causal prefill: ours (one row per inputs kind) next to SDPA's (the same on
# every row). Dense TFLOP/s all from 2.5 x 2*N^2*D*Hq, so their ratios are the ratios of the times.
bwd = [int(x) for x in sys.argv[4].split()]
status = {}
try:
    with open(sys.argv[5]) as f:
        for line in f:
            w = line.split()
            if len(w) == 2:
                status[int(w[0])] = w[1]
except OSError:
    pass

def bw(n, be):
    """SDPA's backward: 'ms (TFLOP/s)', 'failed' when it ran and failed, '-' when not run."""
    r = sdpa.get(("backward", n, be))
    if r is None:
        return "-"
    return "failed" if r["ms"] is None else f"{r['ms']:.2f} ({r['tflops']:.0f})"

if bwd:
    print()
    print("Backward of the full causal prefill, batch 1 (ms; TFLOP/s in parentheses): ours ifl_dense_attn_bwd / "
          "ifl_sparse_attn_bwd (the selection from the forward, not timed), SDPA autograd.grad alone (K/V expanded). "
          "FLOP = 2.5x forward: dense 5*N^2*D*Hq; sparse 'eff' 2.5*4*N*6144*D*Hq (the issue's count), 'exact' "
          "the keys each row really attends.")
    print()
    print("| inputs | N | dense bwd (ours) ms | sparse bwd ms | sparse bwd TFLOP/s eff / exact | cuDNN bwd ms "
          "| FA2 bwd ms | cuDNN bwd / sparse bwd |")
    print("|---|---|---|---|---|---|---|---|")
for n in bwd:
    dflop, sflop = 2.5 * 2 * n * n * D * HQ, 2.5 * 4 * n * KEYS * D * HQ
    cud = sdpa.get(("backward", n, "cudnn"))
    rows = {r["inputs"]: r for r in ours if r["op"] == "backward" and r["n_keys"] == n and r["n_queries"] == n}
    # a kind the tool did not report: the size's status (unsupported, failed, or not run)
    missing = status.get(n, "not run").replace("ok", "-")
    for inputs in (["random", "correlated"] if rows else ["-"]):
        r = rows.get(inputs)
        if r is None:
            print(f"| {inputs} | {size(n)} | {missing} | {missing} | - | {bw(n, 'cudnn')} | {bw(n, 'flash')} | - |")
            continue
        dms, sms = r["dense_ms"], r["sparse_ms"]
        dense = f"{dms:.2f} ({dflop / dms * 1e-9:.0f})" if dms else num(dms, ".2f")
        eff = sflop / sms * 1e-9 if sms else None
        exact = r["attend_gflop"] / sms if sms and r.get("attend_gflop") else None
        speed = f"{cud['ms'] / sms:.2f}x" if cud and cud["ms"] and sms else "-"
        print(f"| {inputs} | {size(n)} | {dense} | {num(sms, '.2f')} | {num(eff, '.0f')} / {num(exact, '.0f')} "
              f"| {bw(n, 'cudnn')} | {bw(n, 'flash')} | {speed} |")
EOF
        ;;
    esac
done
exit $rc
