"""A plain-torch implementation of the specification for the tests (shared/docs/infllmv2.md):
causal attention over the keys a selection allows, written as a masked softmax over the full
score matrix (so autograd gives its gradients), and the mask of dense attention. Slow and simple
on purpose: it is the oracle the bindings are checked against, not a second implementation of
the library's tiling."""

import torch


def allowed_keys(blocks, n_keys, block_size, past):
    """[Hkv, Tq, Tk] bool: key j is in one of the row's selected blocks and j <= past + i."""
    hkv, tq, _ = blocks.shape
    key_block = torch.arange(n_keys) // block_size                        # [Tk]
    chosen = (blocks[..., None] == key_block[None, None, None, :]).any(dim=2)
    return chosen & causal_mask(tq, n_keys, past)[None]


def causal_mask(tq, tk, past):
    """[Tq, Tk] bool: query i at position past + i sees keys 0 .. past + i."""
    return torch.arange(tk)[None, :] <= (torch.arange(tq)[:, None] + past)


def attention(q, k, v, allowed, scale=None):
    """out [Tq, Hq, D] and lse [Tq, Hq] (natural log) of one sequence in float64; allowed is
    [Tq, Tk] (every head) or [Hkv, Tq, Tk] (per KV head). Rows that see no key give 0 and -inf."""
    tq, hq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    scale = d ** -0.5 if scale is None else scale
    qd, kd, vd = (x.double() for x in (q, k, v))
    kx = kd.repeat_interleave(g, dim=1)                                   # [Tk, Hq, D]
    vx = vd.repeat_interleave(g, dim=1)
    s = torch.einsum("qhd,khd->hqk", qd, kx) * scale
    mask = allowed[None] if allowed.dim() == 2 else allowed.repeat_interleave(g, dim=0)
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)                                      # [Hq, Tq]
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    out = torch.einsum("hqk,khd->qhd", p, vx)
    return out, lse.transpose(0, 1)
