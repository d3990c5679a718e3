"""python -m infllm.bench: infllm.torch's forward and forward+backward beside the bare library
calls they make and beside PyTorch's scaled_dot_product_attention, on one shape (batch 1, Hq 32,
Hkv 2, D 128, the default sparse config, causal prefill of N queries over N keys).

  python -m infllm.bench [--keys 8K,32K] [--device cuda|cpu] [--dtype bf16|f16|f32] [--reps 5]
                         [--json FILE]

Columns: "infllm.torch" is infllmv2_attention (mode sparse or dense) called as a user would, with
autograd for fwd+bwd; "library" is the same work as ifl_* calls through ctypes on descriptors
made beforehand (what `infllm bench` times from C), so "overhead" is the binding's cost: argument
checks, output allocation, the autograd graph. SDPA expands K, V to the query heads (GQA by
repetition) and runs its default backend. Times are medians of --reps runs after a warm-up, ms.
"""

import argparse
import ctypes
import json
import time

import torch
import torch.nn.functional as F

from . import _lib
from ._config import SparseConfig
from .torch import TorchAdapter, infllmv2_attention

HQ, HKV, D = 32, 2, 128
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def median_ms(fn, reps, device):
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


class Direct:
    """The library calls of one sparse or dense forward (and backward), descriptors made once."""

    def __init__(self, q, k, v, cfg, mode):
        ad = TorchAdapter()
        self.site = ad.site(None, "q", q)
        n = q.shape[0]
        self.out, self.dout = torch.empty_like(q), torch.randn_like(q)
        self.dq, self.dk, self.dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        self.lse = torch.empty(n, HQ, dtype=torch.float32, device=q.device)
        self.sel = torch.empty(HKV, n, cfg.select_width(n), dtype=torch.int32, device=q.device)
        self.c = cfg.to_c()
        self.c.dense_len = -1
        names = ("q", "k", "v", "out", "lse", "sel", "dout", "dq", "dk", "dv")
        self.t = {nm: ctypes.byref(ad.describe(nm, x, self.site)) for nm, x in zip(
            names, (q, k, v, self.out, self.lse, self.sel, self.dout, self.dq, self.dk, self.dv))}
        self.sparse = mode == "sparse"

    def forward(self):
        t, h = self.t, self.site.ctx.handle
        if self.sparse:
            st = _lib.lib.ifl_infllmv2_fwd(h, self.c, None, t["q"], t["k"], t["v"], t["out"], t["lse"], t["sel"], None)
        else:
            st = _lib.lib.ifl_dense_attn_fwd(h, self.c, None, t["q"], t["k"], t["v"], t["out"], t["lse"])
        _lib.check(self.site.ctx, st)

    def forward_backward(self):
        self.forward()
        t, h = self.t, self.site.ctx.handle
        common = (t["out"], t["lse"], t["dout"], t["dq"], t["dk"], t["dv"])
        if self.sparse:
            st = _lib.lib.ifl_sparse_attn_bwd(h, self.c, None, t["q"], t["k"], t["v"], t["sel"], *common)
        else:
            st = _lib.lib.ifl_dense_attn_bwd(h, self.c, None, t["q"], t["k"], t["v"], *common)
        _lib.check(self.site.ctx, st)


def bench_one(n, device, dtype, reps, cfg):
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(n, h, D, generator=g, device=device, dtype=dtype) for h in (HQ, HKV, HKV))
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    dout = torch.randn_like(q)
    rows = []
    for mode in ("sparse", "dense"):
        direct = Direct(q, k, v, cfg, mode)

        def fwd():
            with torch.no_grad():
                infllmv2_attention(q, k, v, config=cfg, mode=mode)

        def fwd_bwd():
            infllmv2_attention(*leaves, config=cfg, mode=mode).backward(dout)
        for op, mine, bare in (("fwd", fwd, direct.forward), ("fwd+bwd", fwd_bwd, direct.forward_backward)):
            a, b = median_ms(mine, reps, device), median_ms(bare, reps, device)
            rows.append(dict(keys=n, op=op, mode=mode, torch_ms=a, library_ms=b, overhead_pct=100 * (a - b) / b))
    if not hasattr(F, "scaled_dot_product_attention"):  # torch < 2.0
        return rows
    qs, ks, vs = (x.detach().transpose(0, 1)[None].repeat_interleave(HQ // x.shape[1], dim=1)
                  for x in (q, k, v))
    sdpa_leaves = [x.clone().requires_grad_() for x in (qs, ks, vs)]
    sdpa_dout = dout.transpose(0, 1)[None]

    def sdpa_fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)

    def sdpa_fwd_bwd():
        F.scaled_dot_product_attention(*sdpa_leaves, is_causal=True).backward(sdpa_dout)
    rows.append(dict(keys=n, op="fwd", mode="sdpa", torch_ms=median_ms(sdpa_fwd, reps, device)))
    rows.append(dict(keys=n, op="fwd+bwd", mode="sdpa", torch_ms=median_ms(sdpa_fwd_bwd, reps, device)))
    return rows


def parse_keys(text):
    return [int(x[:-1]) * 1024 if x.upper().endswith("K") else int(x) for x in text.split(",") if x]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m infllm.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", default="8K,32K", help="sequence lengths N (queries = keys), e.g. 8K,32K")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the rows as JSON lines to this file")
    a = ap.parse_args(argv)
    cfg = SparseConfig()
    print("infllm %s (%s), torch %s, %s, %s, Hq %d Hkv %d D %d, default sparse config"
          % (_lib.version(), _lib.LIBRARY_PATH, torch.__version__,
             torch.cuda.get_device_name() if a.device == "cuda" else "cpu", a.dtype, HQ, HKV, D))
    print("| keys | op | attention | infllm.torch ms | library ms | binding overhead |")
    print("|---:|---|---|---:|---:|---:|")
    rows = []
    for n in parse_keys(a.keys):
        for r in bench_one(n, a.device, DTYPES[a.dtype], a.reps, cfg):
            rows.append(r)
            lib_ms = "%.3f" % r["library_ms"] if "library_ms" in r else ""
            over = "%+.1f%%" % r["overhead_pct"] if "overhead_pct" in r else ""
            name = "SDPA (expanded KV)" if r["mode"] == "sdpa" else "infllm " + r["mode"]
            print("| %d | %s | %s | %.3f | %s | %s |" % (n, r["op"], name, r["torch_ms"], lib_ms, over))
    if a.json:
        with open(a.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
