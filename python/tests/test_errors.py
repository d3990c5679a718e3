"""Refused calls: each raises a Python exception carrying the library's message (or the binding's,
for what the binding checks before the library sees it), and nothing crashes the interpreter."""

import numpy as np
import pytest
import torch

import infllm
import infllm.torch as it
from conftest import SMALL


def arrays(seed=0, t=64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((t, h, 16)).astype(np.float32) for h in (4, 2, 2)]


@pytest.mark.parametrize("change, exc, message", [
    (lambda q, k, v: (q.astype(np.int64), k, v), TypeError, "dtype int64"),
    (lambda q, k, v: (q.view(np.uint16)[:, :, :16], k, v), TypeError, "dtype='bf16'"),
    (lambda q, k, v: (q[:, 0], k, v), ValueError, "rank-3"),
    (lambda q, k, v: (q[:, :3], k, v), ValueError, "multiple of"),                  # library: GQA
    (lambda q, k, v: (q, k[:, :, :8], v), ValueError, "head dim"),                   # library: SHAPE
    (lambda q, k, v: (q, k, v.astype(np.float64)), TypeError, "dtype"),              # library: DTYPE
    (lambda q, k, v: (q, k[:, :, ::2], v[:, :, ::2]), ValueError, "stride"),        # library: stride
    (lambda q, k, v: (q[:0], k, v), ValueError, ""),                                 # library: T = 0
])
def test_numpy_misuse_raises(change, exc, message):
    q, k, v = change(*arrays())
    with pytest.raises(exc, match=message):
        infllm.attention(q, k, v, config=SMALL, past=k.shape[0] - q.shape[0])


def test_nan_is_refused_with_its_position():
    q, k, v = arrays()
    k[7, 1, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\[7, 1, 3\]|\[7, 1, 3\].*NaN|7.*1.*3") as e:
        infllm.attention(q, k, v, config=SMALL)
    assert e.value.status == "INVALID_ARG"


def test_bad_arguments_raise():
    q, k, v = arrays()
    with pytest.raises(ValueError, match="topk"):
        infllm.attention(q, k, v, config=infllm.SparseConfig(topk=0))
    with pytest.raises(ValueError, match="lse_mode"):
        infllm.SparseConfig(lse_mode="nope").check()
    with pytest.raises(TypeError, match="SparseConfig"):
        infllm.attention(q, k, v, config={"topk": 3})
    with pytest.raises(ValueError, match="backend"):
        infllm.attention(q, k, v, backend="tpu")
    with pytest.raises(ValueError, match="torch"):
        infllm.attention(q, k, v, backend="cuda")
    with pytest.raises(ValueError, match="past"):
        infllm.attention(q, k, v, past=3)
    with pytest.raises(ValueError, match="both"):
        infllm.attention(q, k, v, cu_seqlens_q=np.array([0, 64], np.int32))
    with pytest.raises(ValueError, match="cu_seqlens"):                                # library: decreasing
        infllm.attention(q, k, v, cu_seqlens_q=np.array([0, 40, 30, 64], np.int32),
                         cu_seqlens_k=np.array([0, 40, 30, 64], np.int32))
    blocks = infllm.select_blocks(q, k, config=SMALL)
    blocks[0, 10, :2] = [1, 0]                                                         # not ascending
    with pytest.raises(ValueError, match=r"sel\[0, 10, 1\]=0"):
        infllm.sparse_attention(q, k, v, blocks, config=SMALL)
    with pytest.raises(ValueError, match="mode"):
        infllm.attention(q, k, v, mode="fast")
    with pytest.raises(ValueError):
        infllm.KVCache(capacity=0, n_heads_kv=2, head_dim=16)
    with pytest.raises(ValueError, match="dtype"):
        infllm.KVCache(capacity=8, n_heads_kv=2, head_dim=16, dtype="i32")


def test_torch_misuse_raises(device):
    q, k, v = (torch.from_numpy(x).to(device) for x in arrays(1))
    with pytest.raises(TypeError, match="dtype"):
        it.infllmv2_attention(q.to(torch.int32), k, v, config=SMALL)
    with pytest.raises(TypeError, match="torch.Tensor"):
        it.infllmv2_attention(q.cpu().numpy(), k, v, config=SMALL)
    with pytest.raises(ValueError, match="rank-3"):
        it.infllmv2_attention(q[:, 0], k, v, config=SMALL)
    with pytest.raises(ValueError, match="stride"):
        it.infllmv2_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), config=SMALL)
    with pytest.raises(TypeError, match="dtype"):
        it.infllmv2_attention(q, k.double(), v, config=SMALL)
    bad = k.clone()
    bad[5, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="Inf|inf"):
        it.infllmv2_attention(q, bad, v, config=SMALL)
    if device == "cuda":
        with pytest.raises(ValueError, match="is on"):
            it.infllmv2_attention(q, k.cpu(), v, config=SMALL)
        with pytest.raises(ValueError, match="host memory"):
            it.infllmv2_attention(q, k, v, config=SMALL, backend="cpu")
    else:
        with pytest.raises(ValueError, match="cuda"):
            it.infllmv2_attention(q, k, v, config=SMALL, backend="cuda")
