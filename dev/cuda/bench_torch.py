"""dev/cuda/bench_torch.py -- PyTorch's scaled_dot_product_attention (cuDNN and flash backends) on the
shapes dev/cuda/bench.cu times: causal prefill, standard shape (Hq 32, Hkv 2, D 128, bf16, batch 1),
and decode (one query over N keys). Median of CUDA-event timings after warm-up, in the same run as
bench.cu (dev/cuda/bench.sh). Usage: python3 bench_torch.py [--lens 8192,...] [--decode 32768,...]"""
import argparse
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend

ap = argparse.ArgumentParser()
ap.add_argument("--lens", default="8192,32768,65536,131072")
ap.add_argument("--decode", default="32768,131072")
ap.add_argument("--reps", type=int, default=5)
a = ap.parse_args()
Hq, Hkv, D = 32, 2, 128
dev = "cuda"


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


def run(backend, q, k, v, causal, reps):
    # GQA: the key/value heads expanded to the query heads (what every backend accepts)
    ke = k.repeat_interleave(Hq // Hkv, dim=1)
    ve = v.repeat_interleave(Hq // Hkv, dim=1)
    try:
        with sdpa_kernel([backend]):
            return timed(lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=causal), reps)
    except RuntimeError as ex:
        print("   ", backend, "failed:", str(ex).splitlines()[0])
        return float("nan")


print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
print(f"{'N':>7} | {'cuDNN ms':>9} {'TF/s':>6} | {'flash ms':>9} {'TF/s':>6}")
for N in [int(x) for x in a.lens.split(",") if x]:
    q = torch.randn(1, Hq, N, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    fl = 2.0 * N * N * D * Hq
    reps = a.reps if N < 65536 else max(2, a.reps // 2)
    tc = run(SDPBackend.CUDNN_ATTENTION, q, k, v, True, reps)
    tf = run(SDPBackend.FLASH_ATTENTION, q, k, v, True, reps)
    print(f"{N:>7} | {tc:9.3f} {fl / tc * 1e-9:6.1f} | {tf:9.3f} {fl / tf * 1e-9:6.1f}", flush=True)
    del q, k, v
    torch.cuda.empty_cache()
print(f"\n{'decode N':>8} | {'cuDNN us':>9} | {'flash us':>9}")
for N in [int(x) for x in a.decode.split(",") if x]:
    q = torch.randn(1, Hq, 1, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, Hkv, N, D, device=dev, dtype=torch.bfloat16)
    tc = run(SDPBackend.CUDNN_ATTENTION, q, k, v, False, 50)
    tf = run(SDPBackend.FLASH_ATTENTION, q, k, v, False, 50)
    print(f"{N:>8} | {tc * 1e3:9.1f} | {tf * 1e3:9.1f}", flush=True)
