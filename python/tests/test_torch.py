"""infllm.torch: forward and backward against a plain-torch implementation of the spec
(spec_torch.py), gradcheck in float64 on the ref backend, packed batches, the current CUDA stream,
the custom ops under torch.compile (torch >= 2.4), and the cpu KV cache."""

import dataclasses

import numpy as np
import pytest
import torch

import infllm
import infllm.torch as it
import spec_torch
from conftest import SMALL

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
# forward / backward tolerances as multiples of max|reference| (docs/numerics.md: about 4u and 8u
# of the storage dtype, f32 a little above its accumulated rounding)
TOL = {"f32": (1e-5, 1e-4), "bf16": (1.6e-2, 3.1e-2), "f16": (2e-3, 4e-3)}
OLD_TORCH = "torch %s has no torch.library.custom_op (>= 2.4 needed)" % torch.__version__


def make(device, dtype, tq=160, tk=200, hq=4, hkv=2, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t, h, d, generator=g).to(device=device, dtype=dtype).requires_grad_()
            for t, h in ((tq, hq), (tk, hkv), (tk, hkv))]


def spec_forward(q, k, v, mode, blocks, past):
    qd, kd, vd = (x.detach().double().cpu().requires_grad_() for x in (q, k, v))
    if mode == "dense":
        allowed = spec_torch.causal_mask(q.shape[0], k.shape[0], past)
    else:
        allowed = spec_torch.allowed_keys(blocks.cpu().long(), k.shape[0], SMALL.block_size, past)
    out, lse = spec_torch.attention(qd, kd, vd, allowed)
    return out, lse, (qd, kd, vd)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_forward_and_backward_against_the_spec(device, dtype, mode):
    q, k, v = make(device, DTYPES[dtype])
    out, lse, blocks = it.attention(q, k, v, config=SMALL, past=40, mode=mode, return_lse=True,
                                    return_blocks=True)
    assert out.dtype == q.dtype and out.device == q.device and lse.dtype == torch.float32
    assert (blocks is None) == (mode == "dense")
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out)
    out.backward(dout)
    want, want_lse, leaves = spec_forward(q, k, v, mode, blocks, 40)
    want.backward(dout.double().cpu())
    fwd_tol, bwd_tol = TOL[dtype]
    assert (out.double().cpu() - want).abs().max() <= fwd_tol * want.abs().max()
    assert (lse.double().cpu() - want_lse).abs().max() <= fwd_tol * 4
    for got, leaf in zip((q.grad, k.grad, v.grad), leaves):
        assert (got.double().cpu() - leaf.grad).abs().max() <= bwd_tol * leaf.grad.abs().max()


@pytest.mark.parametrize("mode", ["dense", "sparse", "auto"])
def test_gradcheck_float64_on_ref(mode):
    cfg = dataclasses.replace(SMALL, dense_len=30)  # auto: the second sequence (40 keys) runs sparse
    cu_q, cu_k = torch.tensor([0, 12, 40], dtype=torch.int32), torch.tensor([0, 20, 60], dtype=torch.int32)
    q, k, v = make("cpu", torch.float64, tq=40, tk=60, hq=4, hkv=2, d=8, seed=3)

    def f(q, k, v):
        return it.infllmv2_attention(q, k, v, config=cfg, mode=mode, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                     backend="ref")
    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_mixed_batch_backward_equals_separate_calls():
    cfg = dataclasses.replace(SMALL, dense_len=100)
    q, k, v = make("cpu", torch.float32, tq=170, tk=250, seed=4)
    cu_q, cu_k = torch.tensor([0, 50, 170], dtype=torch.int32), torch.tensor([0, 80, 250], dtype=torch.int32)
    out = it.infllmv2_attention(q, k, v, config=cfg, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    for rq, rk in ((slice(0, 50), slice(0, 80)), (slice(50, 170), slice(80, 250))):
        parts = [x[r].detach().requires_grad_() for x, r in ((q, rq), (k, rk), (v, rk))]
        o = it.infllmv2_attention(*parts, config=cfg, past=rk.stop - rk.start - (rq.stop - rq.start))
        assert torch.equal(o, out[rq])
        for got, want, r in zip(grads, torch.autograd.grad(o, parts, torch.ones_like(o)), (rq, rk, rk)):
            assert torch.equal(got[r], want)


def test_torch_cpu_equals_numpy_bitwise():
    q, k, v = make("cpu", torch.float32, seed=6)
    out, blocks = it.attention(q, k, v, config=SMALL, past=40, return_blocks=True)
    n_out, n_blocks = infllm.attention(*(x.detach().numpy() for x in (q, k, v)), config=SMALL, past=40,
                                       return_blocks=True)
    assert np.array_equal(out.detach().numpy(), n_out) and np.array_equal(blocks.numpy(), n_blocks)
    assert torch.equal(it.select_blocks(q, k, config=SMALL, past=40), blocks)
    c1, c2 = it.compress_keys(k.detach(), config=SMALL)
    n1, n2 = infllm.compress_keys(k.detach().numpy(), config=SMALL)
    assert np.array_equal(c1.numpy(), n1) and np.array_equal(c2.numpy(), n2)


def test_cuda_runs_on_the_current_stream(cuda):
    q, k, v = make(cuda, torch.bfloat16, seed=7)
    want = it.infllmv2_attention(q, k, v, config=SMALL, past=40)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = it.infllmv2_attention(q, k, v, config=SMALL, past=40)
        got.sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(got, want) and q.grad is not None and torch.isfinite(q.grad).all()


def test_cuda_agrees_with_cpu(cuda):
    q, k, v = make("cpu", torch.float32, seed=8)
    cpu_out, cpu_blocks = it.attention(q, k, v, config=SMALL, past=40, return_blocks=True)
    gq, gk, gv = (x.detach().cuda() for x in (q, k, v))
    gpu_out = it.attention(gq, gk, gv, config=SMALL, past=40, blocks=cpu_blocks.cuda())
    assert (gpu_out.cpu() - cpu_out).abs().max() <= 1e-5 * cpu_out.abs().max()


def test_kv_cache_on_cpu_tensors():
    q, k, v = (x.detach() for x in make("cpu", torch.float32, tq=100, tk=100, seed=9))
    full = it.attention(q, k, v, config=SMALL)
    with it.KVCache(capacity=100, n_heads_kv=2, head_dim=32, dtype="f32", config=SMALL) as cache:
        cache.append(k[:99], v[:99])
        cache.append(k[99:], v[99:])
        assert torch.equal(cache.attention(q[-3:]), full[-3:])


def test_op_outputs_never_alias_inputs(device):
    # a torch.library custom op may not return an input (torch >= 2.4 raises on it); the eager
    # bodies are those ops' implementations, so check them on every torch
    q, k, v = (x.detach() for x in make(device, torch.float32, tq=64, tk=64, seed=11))
    blocks = it.select_blocks(q, k, config=SMALL)
    ins = (q, k, v, blocks)
    for given in (None, blocks):
        outs = it._attention_fwd(q, k, v, None, None, given, SMALL.as_list(), 0.0, "sparse", "")
        assert outs[2].shape[-1] == (0 if given is not None else blocks.shape[-1])
        for o in outs:
            assert all(o.data_ptr() != x.data_ptr() for x in ins if o.numel() and x.numel())


@pytest.mark.skipif(not it.CUSTOM_OP_API, reason=OLD_TORCH)
def test_custom_ops_pass_opcheck(device):
    assert it.CUSTOM_OPS_ERROR is None, "registering the custom ops failed: " + it.CUSTOM_OPS_ERROR
    q, k, v = make(device, torch.float32, tq=48, tk=64, seed=10)
    cfg, scale = SMALL.as_list(), 0.0
    torch.library.opcheck(torch.ops.infllm.attention_fwd.default, (q, k, v, None, None, None, cfg, scale, "auto", ""))
    blocks = it.select_blocks(q.detach(), k.detach(), config=SMALL, past=16)
    torch.library.opcheck(torch.ops.infllm.attention_fwd.default, (q, k, v, None, None, blocks, cfg, scale,
                                                                   "sparse", ""))
    torch.library.opcheck(torch.ops.infllm.select_blocks.default, (q.detach(), k.detach(), None, None, cfg, scale, ""))


class TinyAttention(torch.nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.qkv = torch.nn.Linear(d, 8 * 16)
        self.out = torch.nn.Linear(4 * 16, d)

    def forward(self, x):
        t = x.shape[0]
        q, k, v = self.qkv(x).view(t, 8, 16).split([4, 2, 2], dim=1)
        o = it.infllmv2_attention(q.contiguous(), k.contiguous(), v.contiguous(), config=SMALL)
        return self.out(o.reshape(t, 64))


@pytest.mark.skipif(not it.CUSTOM_OP_API, reason=OLD_TORCH)
def test_torch_compile_has_no_graph_break(device):
    assert it.CUSTOM_OPS_ERROR is None, "registering the custom ops failed: " + it.CUSTOM_OPS_ERROR
    model = TinyAttention().to(device)
    x = torch.randn(96, 32, device=device)
    explain = torch._dynamo.explain(model)(x)
    assert explain.graph_break_count == 0, explain.break_reasons
    # aot_eager: dynamo and AOTAutograd trace the ops (fake kernels, registered autograd) as any
    # backend would, without waiting for inductor's code generation
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    assert torch.allclose(got, model(x), atol=1e-5, rtol=1e-5)
    got.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
