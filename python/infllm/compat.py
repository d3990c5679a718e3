"""infllm.compat: the Python functions of the official InfLLM-V2 package (infllm_v2, from
OpenBMB/infllmv2_cuda_impl) with their names, arguments and tensor layouts, so MiniCPM4/4.1's
Hugging Face modeling code can import them from here:

    from infllm.compat import (infllmv2_attn_stage1, infllmv2_attn_varlen_func,
                               infllmv2_attn_with_kvcache, max_pooling_1d, max_pooling_1d_varlen)

Mapping (docs/python.md has the table):
  infllmv2_attn_varlen_func   -> infllm.torch.attention: dense causal when topk_idx is None, else
                                 sparse over topk_idx [Hkv, total_q, K] (blocks of 64 tokens);
                                 differentiable in q, k, v; cpu and cuda tensors
  infllmv2_attn_with_kvcache  -> the same per batch row on views of the caches (k/v appended in place)
  infllmv2_attn_stage1        -> the stage-1 scores [Hkv, total_q, max_seqlen_k]: per-head softmax
                                 probabilities over the fine compressed keys k (normalised over the
                                 coarse ones passed as v, or exactly when v is k), summed over the
                                 GQA group; computed here in plain torch (float32 or float64),
                                 because libinfllm fuses this step into its selection
  max_pooling_1d(_varlen)     -> block scores: max over the compressed keys overlapping each block,
                                 +inf for the init and local blocks (design B), in plain torch

Arguments the library does not implement are refused with ValueError instead of being ignored:
dropout_p != 0, softcap != 0, alibi_slopes, window_size != (-1, -1), block_table (paged KV),
rotary_cos/sin, cache_batch_idx, cache_leftpad, and non-causal attention over more than one
query per sequence. deterministic and num_splits are accepted and ignored (libinfllm is always
deterministic); max_seqlen_q/k are read only where they size an output.
Differences: causality of stage 1 uses the clean rule (a compressed key is visible to position p
when its whole window ends at or before p), not the official kernel's off-by-one for lengths
of 15 mod 16; the queries of a causal stage-1 call start at position cache_lens (0: prefill).
"""

import math

import torch

from . import torch as ifl_torch
from ._config import SparseConfig


def _refuse(**kw):
    bad = [name for name, is_bad in kw.items() if is_bad]
    if bad:
        raise ValueError("infllm.compat: %s not supported by libinfllm" % ", ".join(bad))


def _unsupported(dropout_p=0.0, softcap=0.0, alibi_slopes=None, window_size=(-1, -1), block_table=None):
    _refuse(dropout_p=dropout_p != 0.0, softcap=softcap != 0.0, alibi_slopes=alibi_slopes is not None,
            window_size=tuple(window_size) != (-1, -1), block_table=block_table is not None)


def _config(softmax_scale, block_size=64):
    return SparseConfig(block_size=block_size, scale=softmax_scale)


def _ints(x):
    return [int(v) for v in (x.tolist() if isinstance(x, torch.Tensor) else x)]


# ==== stage 2 ====

def infllmv2_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                              dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False,
                              return_attn_probs=False, block_table=None, topk_idx=None):
    """Packed causal attention, q [total_q, Hq, D], k and v [total_k, Hkv, D], cu_seqlens int32
    [batch+1]; over the blocks of topk_idx (int32 [Hkv, total_q, K], ascending, -1 padding)
    when given, dense otherwise. Returns out, or (out, softmax_lse [Hq, total_q], None) with
    return_attn_probs (no probability matrix is materialised)."""
    _unsupported(dropout_p, softcap, alibi_slopes, window_size, block_table)
    _refuse(**{"causal=False": not causal})
    mode = "dense" if topk_idx is None else "sparse"
    blocks = None if topk_idx is None else topk_idx.to(torch.int32)
    out, lse = ifl_torch.attention(q, k, v, config=_config(softmax_scale), mode=mode, blocks=blocks,
                                   cu_seqlens_q=cu_seqlens_q.to(torch.int32),
                                   cu_seqlens_k=cu_seqlens_k.to(torch.int32), return_lse=True)
    return (out, lse.transpose(0, 1), None) if return_attn_probs else out


def infllmv2_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                               cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None,
                               block_table=None, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, rotary_interleaved=True, alibi_slopes=None, num_splits=0,
                               return_softmax_lse=False, topk_idx=None):
    """Attention of q [B, Sq, Hq, D] over k_cache/v_cache [B, S, Hkv, D] holding cache_seqlens[b]
    tokens per row (all S when None), after writing k, v [B, Sn, Hkv, D] (when given) in place at
    those positions. Causal (bottom-right aligned); sparse over topk_idx [Hkv, B*Sq, K] when given.
    Returns out [B, Sq, Hq, D], or (out, softmax_lse [B, Hq, Sq])."""
    _unsupported(0.0, softcap, alibi_slopes, window_size, block_table)
    _refuse(rotary_cos=rotary_cos is not None or rotary_sin is not None,
            cache_batch_idx=cache_batch_idx is not None, cache_leftpad=cache_leftpad is not None)
    n_batch, sq = q.shape[0], q.shape[1]
    _refuse(**{"causal=False with more than one query": not causal and sq > 1})
    if (k is None) != (v is None):
        raise ValueError("infllmv2_attn_with_kvcache: pass k and v together")
    if cache_seqlens is None:
        lens = [k_cache.shape[1] - (0 if k is None else k.shape[1])] * n_batch
    elif isinstance(cache_seqlens, int):
        lens = [cache_seqlens] * n_batch
    else:
        lens = _ints(cache_seqlens)
    outs, lses = [], []
    for b in range(n_batch):
        n = lens[b]
        if k is not None:
            sn = k.shape[1]
            if n + sn > k_cache.shape[1]:
                raise ValueError("infllmv2_attn_with_kvcache: row %d holds %d tokens, %d more do not fit "
                                 "its %d" % (b, n, sn, k_cache.shape[1]))
            k_cache[b, n:n + sn] = k[b]
            v_cache[b, n:n + sn] = v[b]
            n += sn
        blocks = None if topk_idx is None else topk_idx[:, b * sq:(b + 1) * sq].to(torch.int32)
        out, lse = ifl_torch.attention(q[b], k_cache[b, :n], v_cache[b, :n], config=_config(softmax_scale),
                                       past=n - sq, mode="dense" if blocks is None else "sparse",
                                       blocks=blocks, return_lse=True)
        outs.append(out)
        lses.append(lse.transpose(0, 1))
    out = torch.stack(outs)
    return (out, torch.stack(lses)) if return_softmax_lse else out


# ==== stage 1 (plain torch: the library fuses these steps into its selection) ====

def _visible(n_queries, past, n_keys, kernel, stride, device):
    """[n_queries, n_keys] bool: compressed key j (tokens j*stride .. j*stride+kernel-1) is
    visible to the query at absolute position past + i when its window ends at or before it."""
    pos = torch.arange(n_queries, device=device) + past
    end = torch.arange(n_keys, device=device) * stride + kernel - 1
    return end[None, :] <= pos[:, None]


def _stage1_scores(q, c1, c2, past, causal, scale, kernels):
    """[Hkv, Lq, N1] group-summed probabilities of one sequence (compute dtype of q)."""
    lq, hq, d = q.shape
    hkv = c1.shape[1]
    qg = q.reshape(lq, hkv, hq // hkv, d)
    z1 = torch.einsum("qgjd,ngd->gjqn", qg, c1) * scale            # [Hkv, G, Lq, N1]
    if causal:
        vis1 = _visible(lq, past, c1.shape[0], kernels[0], kernels[1], q.device)
    else:
        vis1 = torch.ones(lq, c1.shape[0], dtype=torch.bool, device=q.device)
    ninf = torch.tensor(-math.inf, dtype=z1.dtype, device=q.device)
    z1 = torch.where(vis1, z1, ninf)
    lse = torch.logsumexp(z1, dim=-1)                              # exact: over the fine keys
    if c2 is not None and c2.shape[0] > 0:
        z2 = torch.einsum("qgjd,ngd->gjqn", qg, c2) * scale
        if causal:
            vis2 = _visible(lq, past, c2.shape[0], kernels[2], kernels[3], q.device)
        else:
            vis2 = torch.ones(lq, c2.shape[0], dtype=torch.bool, device=q.device)
        approx = torch.logsumexp(torch.where(vis2, z2, ninf), dim=-1)
        has_coarse = vis2.any(dim=-1)                              # else keep the exact normaliser
        lse = torch.where(has_coarse, approx, lse)
    p = torch.exp(z1 - lse[..., None])
    p = torch.where(vis1, p, torch.zeros((), dtype=p.dtype, device=q.device))  # also NaN rows of no key
    return p.sum(dim=1)


def infllmv2_attn_stage1(q, k, v, cu_seqlens_q, cu_seqlens_k, cu_seqlens_v, max_seqlen_q, max_seqlen_k,
                         dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                         alibi_slopes=None, deterministic=False, return_attn_probs=True, block_table=None,
                         *, cache_lens=None, kernel_size=32, kernel_stride=16, coarse_kernel_size=128,
                         coarse_kernel_stride=64):
    """Stage-1 scores [Hkv, total_q, max_seqlen_k] in q's dtype: q [total_q, Hq, D]; k the fine
    compressed keys [total_c1, Hkv, D] (rows per sequence by cu_seqlens_k); v the coarse ones
    (cu_seqlens_v) for the approximate normaliser, or k itself for the exact one. Keyword-only
    extensions: cache_lens (per-sequence position of the first query under causal=True, default
    0) and the compression kernels the causal rule assumes (MiniCPM4.1's by default)."""
    _unsupported(dropout_p, softcap, alibi_slopes, window_size, block_table)
    cq, ck = _ints(cu_seqlens_q), _ints(cu_seqlens_k)
    exact = v is None or v is k
    cv = ck if exact else _ints(cu_seqlens_v)
    if not len(cq) == len(ck) == len(cv) or len(cq) < 2:
        raise ValueError("infllmv2_attn_stage1: cu_seqlens_q/k/v need the same n_seqs + 1 >= 2 entries")
    past = [0] * (len(cq) - 1) if cache_lens is None else _ints(cache_lens)
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    hkv = k.shape[1]
    if q.shape[1] % hkv:
        raise ValueError("infllmv2_attn_stage1: %d query heads, not a multiple of %d KV heads" % (q.shape[1], hkv))
    score = torch.zeros(hkv, q.shape[0], int(max_seqlen_k), dtype=work, device=q.device)
    kernels = (kernel_size, kernel_stride, coarse_kernel_size, coarse_kernel_stride)
    for s in range(len(cq) - 1):
        n1 = ck[s + 1] - ck[s]
        if n1 > max_seqlen_k:
            raise ValueError("infllmv2_attn_stage1: sequence %d has %d compressed keys, more than "
                             "max_seqlen_k=%d" % (s, n1, max_seqlen_k))
        if cq[s + 1] == cq[s] or n1 <= 0:
            continue
        qs = q[cq[s]:cq[s + 1]].to(work)
        c1 = k[ck[s]:ck[s + 1]].to(work)
        c2 = None if exact else v[cv[s]:cv[s + 1]].to(work)
        score[:, cq[s]:cq[s + 1], :n1] = _stage1_scores(qs, c1, c2, past[s], causal, scale, kernels)
    return score.to(q.dtype)


def _pool_blocks(scores, n_keys, positions, n_blocks, local_blocks, init_blocks, block_size, stride):
    """[H, Lq, n_blocks] from [H, Lq, >= n_keys] scores of one sequence: block b takes the max
    over compressed keys b*r-1 .. b*r+r-1 (r = block_size/stride: those overlapping the block when
    kernel = 2*stride), -inf when none exists; init and local blocks (qb-local_blocks .. qb) +inf."""
    r = block_size // stride
    h, lq = scores.shape[0], scores.shape[1]
    ninf = torch.tensor(-math.inf, dtype=scores.dtype, device=scores.device)
    padded = torch.full((h, lq, n_blocks * r + 1), -math.inf, dtype=scores.dtype, device=scores.device)
    keep = min(n_keys, n_blocks * r)
    padded[:, :, 1:1 + keep] = scores[:, :, :keep]                 # padded[j+1] = key j
    windows = padded.unfold(-1, r + 1, r)[:, :, :n_blocks]         # [H, Lq, n_blocks, r+1]
    out = windows.max(dim=-1).values
    b = torch.arange(n_blocks, device=scores.device)
    qb = (positions // block_size)[:, None]
    forced = (b[None, :] < init_blocks) | ((b[None, :] >= qb - local_blocks) & (b[None, :] <= qb))
    out = torch.where(forced[None], -ninf, out)
    return out


def max_pooling_1d(input, cache_len, local_blocks, init_blocks, block_size=64, stride=16):
    """Block scores [H, q_len, ceil((q_len + cache_len)/block_size)] of stage-1 scores
    input [H, q_len, k_len] for queries at positions cache_len .. cache_len + q_len - 1."""
    h, lq, nk = input.shape
    n_blocks = (lq + cache_len + block_size - 1) // block_size
    pos = torch.arange(lq, device=input.device) + cache_len
    return _pool_blocks(input, nk, pos, n_blocks, local_blocks, init_blocks, block_size, stride)


def max_pooling_1d_varlen(input, cu_seqlens_q, cu_seqlens_k, cache_lens, max_seqlen_q, max_seqlen_k,
                          local_blocks, init_blocks, block_size=64, stride=16):
    """max_pooling_1d of a packed batch: input [H, total_q, >= max compressed keys]; sequence s
    has the query rows of cu_seqlens_q, the compressed keys of cu_seqlens_k and cache_lens[s]
    tokens before its queries. Out [H, total_q, ceil((max_seqlen_q + max(cache_lens))/block_size)];
    blocks past a sequence's own end are -inf."""
    cq, ck, past = _ints(cu_seqlens_q), _ints(cu_seqlens_k), _ints(cache_lens)
    n_blocks = (int(max_seqlen_q) + max(past) + block_size - 1) // block_size
    out = torch.full((input.shape[0], input.shape[1], n_blocks), -math.inf, dtype=input.dtype,
                     device=input.device)
    for s in range(len(cq) - 1):
        lq = cq[s + 1] - cq[s]
        if lq <= 0:
            continue
        own = min(n_blocks, (lq + past[s] + block_size - 1) // block_size)
        pos = torch.arange(lq, device=input.device) + past[s]
        out[:, cq[s]:cq[s + 1], :own] = _pool_blocks(input[:, cq[s]:cq[s + 1]], ck[s + 1] - ck[s], pos, own,
                                                     local_blocks, init_blocks, block_size, stride)
    return out


__all__ = ["infllmv2_attn_stage1", "infllmv2_attn_varlen_func", "infllmv2_attn_with_kvcache",
           "max_pooling_1d", "max_pooling_1d_varlen"]
