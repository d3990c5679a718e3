"""dev/cuda/bench_torch.py -- PyTorch's scaled_dot_product_attention (cuDNN and flash backends) on the
shapes scripts/bench_cuda.sh times with `infllm bench --backend cuda`: the full causal prefill of N
queries over N keys, its backward, and decode (one query over N keys), standard shape (Hq 32, Hkv 2,
D 128, bf16, batch 1). Prefill and backward: the key/value heads are expanded to the query heads before
timing (GQA by repetition, what every backend accepts; compute-bound, so the expansion costs little).
Decode: native GQA (enable_gqa=True, K and V read once, as a decode kernel must), falling back to the
expanded heads for a backend that refuses it (then "kv": "expanded" in the JSON: 16x the bytes, not a
fair decode baseline). Backward: the forward runs once (untimed) on leaf tensors q and the expanded k, v
that require grad, then torch.autograd.grad(out, (q, k, v), dout) alone is timed (so the time is the
attention backward only, not the repeat's reduction of dk, dv to 2 heads). Median of CUDA-event
timings after a warm-up.
FLOPs (anchors.md): causal forward 2*N^2*D*Hq (half of the full square's 4*N^2*D*Hq), backward
2.5x that.

Usage: python3 bench_torch.py [--lens 8192,...] [--bwd-lens 8192,...] [--decode 32768,...] [--reps 5]
                              [--json FILE]
--json writes one JSON object per (op, N, backend) to FILE (the table still goes to stdout); op is
"prefill", "backward" or "decode". An empty list (--bwd-lens "") runs none of that op.
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend

ap = argparse.ArgumentParser()
ap.add_argument("--lens", default="8192,32768,65536,131072")
ap.add_argument("--bwd-lens", default="8192,32768,65536,131072")
ap.add_argument("--decode", default="32768,131072")
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--json", default=None)
a = ap.parse_args()
Hq, Hkv, D = 32, 2, 128
dev = "cuda"
BACKENDS = [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)]
records = []


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2]


def run(backend, q, k, v, causal, reps, gqa=False):
    """(median ms, kv layout); NaN when the backend refuses the call."""
    if gqa:
        try:
            with sdpa_kernel([backend]):
                return timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True),
                             reps), "gqa"
        except (RuntimeError, TypeError) as ex:
            print("   ", backend, "refused enable_gqa:", str(ex).splitlines()[0])
    ke = k.repeat_interleave(Hq // Hkv, dim=1)
    ve = v.repeat_interleave(Hq // Hkv, dim=1)
    try:
        with sdpa_kernel([backend]):
            return timed(lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=causal), reps), "expanded"
    except RuntimeError as ex:
        print("   ", backend, "failed:", str(ex).splitlines()[0])
        return float("nan"), "expanded"


def run_bwd(backend, q, k, v, reps):
    """Median ms of the backward of causal SDPA on expanded K/V; NaN when the backend fails."""
    ke = k.repeat_interleave(Hq // Hkv, dim=1)
    ve = v.repeat_interleave(Hq // Hkv, dim=1)
    # leaves: the grads are those of SDPA's own inputs, nothing else is in the graph
    qg, kg, vg = (x.detach().requires_grad_() for x in (q, ke, ve))
    del ke, ve
    out = dout = None
    try:
        with sdpa_kernel([backend]):  # the forward picks the backward kernel
            out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
            dout = torch.randn_like(out)
            # retain_graph: the same graph is differentiated by every run; the grads returned are
            # dropped at once (3 x the size of q live at a time)
            return timed(lambda: torch.autograd.grad(out, (qg, kg, vg), dout, retain_graph=True), reps)
    except RuntimeError as ex:  # torch.cuda.OutOfMemoryError is one
        print("   ", backend, "backward failed:", str(ex).splitlines()[0])
        return float("nan")
    finally:
        del out, dout, qg, kg, vg  # the graph (and cuDNN's saved stats) with them
        torch.cuda.empty_cache()


def record(op, n, name, ms, flop, reps, kv):
    ok = ms == ms  # not NaN
    records.append({"op": op, "n": n, "backend": name, "ms": ms if ok else None,
                    "tflops": flop / ms * 1e-9 if ok and flop else None, "reps": reps, "kv": kv})


print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
print(f"{'N':>7} | {'cuDNN ms':>9} {'TF/s':>6} | {'flash ms':>9} {'TF/s':>6}")
for N in [int(x) for x in a.lens.split(",") if x]:
    q = torch.randn(1, Hq, N, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    fl = 2.0 * N * N * D * Hq  # causal: half of the 4*N^2*D*Hq of the full square
    reps = a.reps if N < 65536 else max(2, a.reps // 2)
    t = {}
    for name, be in BACKENDS:
        t[name], kv = run(be, q, k, v, True, reps)
        record("prefill", N, name, t[name], fl, reps, kv)
    print(f"{N:>7} | {t['cudnn']:9.3f} {fl / t['cudnn'] * 1e-9:6.1f} | {t['flash']:9.3f} {fl / t['flash'] * 1e-9:6.1f}",
          flush=True)
    del q, k, v
    torch.cuda.empty_cache()
print(f"\n{'decode N':>8} | {'cuDNN us':>9} | {'flash us':>9}   (K, V: native GQA unless marked *expanded)")
for N in [int(x) for x in a.decode.split(",") if x]:
    q = torch.randn(1, Hq, 1, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    reps = 50
    t = {}
    for name, be in BACKENDS:
        t[name], kv = run(be, q, k, v, False, reps, gqa=True)
        t[name + "_kv"] = "" if kv == "gqa" else " *" + kv
        record("decode", N, name, t[name], 4.0 * N * D * Hq, reps, kv)
    print(f"{N:>8} | {t['cudnn'] * 1e3:9.1f}{t['cudnn_kv']} | {t['flash'] * 1e3:9.1f}{t['flash_kv']}", flush=True)
bwd_lens = [int(x) for x in a.bwd_lens.split(",") if x]
if bwd_lens:
    print(f"\n{'bwd N':>7} | {'cuDNN ms':>9} {'TF/s':>6} | {'flash ms':>9} {'TF/s':>6}   (backward only, K/V expanded)")
for N in bwd_lens:
    q = torch.randn(1, Hq, N, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    fl = 2.5 * 2.0 * N * N * D * Hq  # 2.5x the causal forward's 2*N^2*D*Hq
    reps = a.reps if N < 65536 else max(2, a.reps // 2)
    t = {}
    for name, be in BACKENDS:
        t[name] = run_bwd(be, q, k, v, reps)
        record("backward", N, name, t[name], fl, reps, "expanded")
    print(f"{N:>7} | {t['cudnn']:9.3f} {fl / t['cudnn'] * 1e-9:6.1f} | {t['flash']:9.3f} {fl / t['flash'] * 1e-9:6.1f}",
          flush=True)
    del q, k, v
    torch.cuda.empty_cache()
if a.json:
    with open(a.json, "w") as f:
        for r in records:
            r.update({"torch": torch.__version__, "device": torch.cuda.get_device_name()})
            f.write(json.dumps(r) + "\n")
