"""infllm.compat, the official InfLLM-V2 functions: the MiniCPM4.1 modeling code's pipeline
(stage-1 scores -> max pooling -> top-k -> sparse attention) built from them gives the library's
own selection and output; the stage-2 and KV-cache functions match infllm.torch; refused
arguments raise."""

import dataclasses

import pytest
import torch

import infllm
import infllm.torch as it
from infllm import compat

CFG = infllm.SparseConfig(window=128, topk=4, dense_len=-1)   # blocks of 64, 32/16 and 128/64 keys


def packed(lens, hq=4, hkv=2, d=32, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    t = sum(lens)
    q, k, v = (torch.randn(t, h, d, generator=g, dtype=dtype).to(device) for h in (hq, hkv, hkv))
    cu = torch.tensor([0] + [sum(lens[:i + 1]) for i in range(len(lens))], dtype=torch.int32, device=device)
    return q, k, v, cu


def cumulative(counts):
    return torch.tensor([0] + [sum(counts[:i + 1]) for i in range(len(counts))], dtype=torch.int32)


def modeling_code_selection(q, k, cu, lens, cfg, exact):
    """What MiniCPM4.1's modeling code does with the official functions (top-k by a stable sort,
    ties to the smaller block as in the library; torch.topk's tie order is unspecified)."""
    c1, c2 = it.compress_keys(k, config=cfg, cu_seqlens_k=cu)
    n1 = [infllm._lib.lib.ifl_compressed_len(n, cfg.kernel_size, cfg.kernel_stride) for n in lens]
    n2 = [infllm._lib.lib.ifl_compressed_len(n, cfg.coarse_kernel_size, cfg.coarse_kernel_stride) for n in lens]
    cu1, cu2 = cumulative(n1), cumulative(n2)
    score = compat.infllmv2_attn_stage1(q, c1, c1 if exact else c2, cu, cu1, cu1 if exact else cu2,
                                        max(lens), max(n1), causal=True)
    assert score.shape == (k.shape[1], q.shape[0], max(n1))
    blocks = compat.max_pooling_1d_varlen(score, cu, cu1, torch.zeros(len(lens), dtype=torch.int32), max(lens),
                                          max(n1), local_blocks=cfg.window // cfg.block_size,
                                          init_blocks=cfg.init_blocks, block_size=cfg.block_size,
                                          stride=cfg.kernel_stride)
    width = min(cfg.select_width(q.shape[0]), blocks.shape[-1])
    idx = torch.sort(blocks, dim=-1, descending=True, stable=True).indices[..., :width].sort(-1).values
    q_block = torch.cat([torch.arange(n) for n in lens]) // cfg.block_size
    late = idx > q_block[None, :, None]
    idx = torch.where(late, torch.full_like(idx, 1 << 30), idx).sort(-1).values   # dropped ones last
    return torch.where(idx == 1 << 30, torch.full_like(idx, -1), idx).to(torch.int32)


@pytest.mark.parametrize("lse_mode", ["approx", "exact"])
def test_modeling_pipeline_gives_the_library_selection_and_output(lse_mode):
    cfg = dataclasses.replace(CFG, lse_mode=lse_mode)
    lens = [700, 1000]
    q, k, v, cu = packed(lens)
    idx = modeling_code_selection(q, k, cu, lens, cfg, lse_mode == "exact")
    sel = it.select_blocks(q, k, config=cfg, cu_seqlens_q=cu, cu_seqlens_k=cu, backend="ref")
    assert torch.equal(idx, sel[..., :idx.shape[-1]]) and (sel[..., idx.shape[-1]:] == -1).all()
    out = compat.infllmv2_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True, topk_idx=idx)
    assert torch.equal(out, it.attention(q, k, v, config=cfg, cu_seqlens_q=cu, cu_seqlens_k=cu))


def test_max_pooling_by_hand():
    scores = torch.arange(1, 13, dtype=torch.float32).view(1, 1, 12)        # 12 compressed keys
    scores[0, 0, 5] = 100.0
    out = compat.max_pooling_1d(scores, cache_len=300, local_blocks=1, init_blocks=1)   # query at 300
    # r = 64/16 = 4: block b pools keys 4b-1 .. 4b+3; block 0 forced (init), blocks 3, 4 local (qb = 4)
    assert out.shape == (1, 1, 5)
    assert out[0, 0].tolist() == [float("inf"), 100.0, 12.0, float("inf"), float("inf")]
    same = compat.max_pooling_1d_varlen(scores, torch.tensor([0, 1]), torch.tensor([0, 12]), torch.tensor([300]),
                                        1, 12, local_blocks=1, init_blocks=1)
    assert torch.equal(same, out)


def test_varlen_func_dense_lse_and_gradients():
    q, k, v, cu = packed([100, 60], dtype=torch.float32, seed=1)
    q.requires_grad_()
    out, lse, probs = compat.infllmv2_attn_varlen_func(q, k, v, cu, cu, 100, 100, causal=True,
                                                       return_attn_probs=True)
    want, want_lse = it.attention(q, k, v, mode="dense", cu_seqlens_q=cu, cu_seqlens_k=cu, return_lse=True)
    assert torch.equal(out, want) and torch.equal(lse, want_lse.t()) and probs is None
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_with_kvcache_appends_in_place_and_matches_the_prefill_rows():
    q, k, v, _ = packed([80], dtype=torch.float32, seed=2)
    full = it.attention(q, k, v, mode="dense")
    k_cache, v_cache = torch.zeros(2, 96, 2, 32), torch.zeros(2, 96, 2, 32)
    k_cache[:, :70], v_cache[:, :70] = k[:70], v[:70]
    lens = torch.tensor([70, 70], dtype=torch.int32)
    for t in range(70, 80):
        qs = q[t:t + 1].expand(2, 1, 4, 32)
        out, lse = compat.infllmv2_attn_with_kvcache(qs, k_cache, v_cache, k[t:t + 1].expand(2, 1, 2, 32),
                                                     v[t:t + 1].expand(2, 1, 2, 32), cache_seqlens=lens,
                                                     causal=True, return_softmax_lse=True)
        assert torch.equal(out[0, 0], full[t]) and torch.equal(out[1], out[0]) and lse.shape == (2, 4, 1)
        lens += 1
    assert torch.equal(k_cache[0, :80], k)


@pytest.mark.parametrize("kwargs", [dict(dropout_p=0.1), dict(softcap=30.0), dict(window_size=(16, 0)),
                                    dict(alibi_slopes=torch.ones(4)), dict(block_table=torch.zeros(1)),
                                    dict(causal=False)])
def test_unsupported_arguments_raise(kwargs):
    q, k, v, cu = packed([32], dtype=torch.float32)
    args = dict(causal=True)
    args.update(kwargs)
    with pytest.raises(ValueError, match="not supported"):
        compat.infllmv2_attn_varlen_func(q, k, v, cu, cu, 32, 32, **args)
