"""Random calls, most of them invalid (ranks, sizes, dtypes, strides, batches, selections,
configs): each must either succeed or raise a Python exception. A crash would kill the test run."""

import numpy as np
import pytest

import infllm

FLOATS = [np.float64, np.float32, np.float16, np.uint16, np.int32, np.int64]
ERRORS = (ValueError, TypeError, RuntimeError, MemoryError)


def random_array(rng):
    shape = tuple(int(x) for x in rng.integers(0, 6, size=rng.integers(0, 5)))
    a = rng.standard_normal(shape).astype(FLOATS[rng.integers(len(FLOATS))]) if shape else np.float32(1.0)
    a = np.asarray(a)
    if a.ndim and rng.random() < 0.3:
        a = np.flip(a, axis=int(rng.integers(a.ndim)))
    if a.ndim > 1 and rng.random() < 0.3:
        a = a.swapaxes(0, a.ndim - 1)
    return a


def random_config(rng):
    if rng.random() < 0.5:
        return infllm.SparseConfig(block_size=16, kernel_size=16, kernel_stride=8, coarse_kernel_size=32,
                                   coarse_kernel_stride=16, window=16, topk=2, dense_len=int(rng.integers(-1, 20)))
    return infllm.SparseConfig(block_size=int(rng.integers(-2, 40)), topk=int(rng.integers(-1, 4)),
                               window=int(rng.integers(-16, 64)))


def valid_arrays(rng):
    """q, k, v, blocks, out, lse, dout of one sparse call, the shapes right (values random)."""
    t = int(rng.integers(1, 40))
    q, out, dout = (rng.standard_normal((t, 4, 8)).astype(np.float32) for _ in range(3))
    k, v = (rng.standard_normal((t, 2, 8)).astype(np.float32) for _ in range(2))
    blocks = np.full((2, t, 3), -1, np.int32)
    blocks[:, :, 0] = 0
    lse = rng.standard_normal((t, 4)).astype(np.float32)
    return [q, k, v, blocks, out, lse, dout]


@pytest.mark.parametrize("seed", range(4))
def test_random_calls_raise_or_succeed(seed):
    rng = np.random.default_rng(seed)
    outcomes = set()
    for _ in range(150):
        args = valid_arrays(rng)
        for i in rng.integers(0, 7, size=int(rng.integers(0, 3))):   # 0, 1 or 2 arguments spoiled
            args[i] = random_array(rng)
        cfg = random_config(rng)
        cu = np.sort(rng.integers(0, 6, size=int(rng.integers(1, 4)))).astype(np.int32) if rng.random() < 0.3 else None
        kw = dict(config=cfg, backend=["ref", "cpu"][int(rng.integers(2))],
                  dtype="bf16" if rng.random() < 0.2 else None)
        calls = [lambda: infllm.attention(*args[:3], mode=["auto", "dense", "sparse"][int(rng.integers(3))],
                                          cu_seqlens_q=cu, cu_seqlens_k=cu, return_lse=True, return_blocks=True, **kw),
                 lambda: infllm.sparse_attention(*args[:4], **kw),
                 lambda: infllm.select_blocks(*args[:2], **kw),
                 lambda: infllm.compress_keys(args[0], cu_seqlens_k=cu, **kw),
                 lambda: infllm.attention_backward(*args[:6], blocks=args[6], mode="sparse", **kw)]
        try:
            calls[int(rng.integers(len(calls)))]()
            outcomes.add("ok")
        except ERRORS:
            outcomes.add("refused")
    assert outcomes == {"ok", "refused"}
