"""The numpy front end: arrays in host memory on the ref and cpu backends.

dtypes: float64, float32, float16, and bfloat16 as raw uint16 words with dtype="bf16" (or an
ml_dtypes bfloat16 array). Outputs come in the inputs' dtype (bf16 as uint16), lse in float32
(float64 for float64 inputs), selections in int32. Arrays are passed without a copy: any view whose
last dimension is contiguous and whose strides are non-negative whole elements (e.g. q, k, v
sliced out of one fused qkv array); other views are refused with ValueError.
"""

import numpy as np

from . import _lib
from ._ops import Ops, Site

_CODES = {np.dtype(np.float64): _lib.F64, np.dtype(np.float32): _lib.F32,
          np.dtype(np.float16): _lib.F16, np.dtype(np.int32): _lib.I32}
_NP = {_lib.F64: np.float64, _lib.F32: np.float32, _lib.F16: np.float16, _lib.BF16: np.uint16,
       _lib.I32: np.int32}


class NumpyAdapter:
    def __init__(self, dtype=None):
        if dtype not in (None, "bf16"):
            raise ValueError("dtype=%r: the only flag is 'bf16' (uint16 arrays holding bfloat16)" % (dtype,))
        self.bf16 = dtype == "bf16"

    def code(self, name, x):
        if not isinstance(x, np.ndarray):
            raise TypeError("%s: expected a numpy array, got %s" % (name, type(x).__name__))
        if x.dtype == np.uint16:
            if not self.bf16:
                raise TypeError("%s: uint16 array: pass dtype='bf16' if it holds bfloat16 words" % name)
            return _lib.BF16
        if x.dtype.name == "bfloat16" and x.dtype.itemsize == 2:  # ml_dtypes
            return _lib.BF16
        if x.dtype not in _CODES:
            raise TypeError("%s: dtype %s, expected float64, float32, float16, bfloat16 (uint16 with "
                            "dtype='bf16') or, for blocks, int32" % (name, x.dtype))
        return _CODES[x.dtype]

    def describe(self, name, x, site):
        code = self.code(name, x)
        if not 1 <= x.ndim <= _lib.MAX_DIMS:
            raise ValueError("%s: rank %d, expected 1..%d" % (name, x.ndim, _lib.MAX_DIMS))
        size = x.dtype.itemsize
        if any(s % size for s in x.strides):
            raise ValueError("%s: byte strides %s are not whole %d-byte elements; pass "
                             "np.ascontiguousarray(%s)" % (name, x.strides, size, name))
        t = _lib.Tensor()
        t.data, t.dtype, t.ndim = x.ctypes.data, code, x.ndim
        for i in range(x.ndim):
            t.shape[i], t.stride[i] = x.shape[i], x.strides[i] // size
        return t

    def site(self, backend, name, x):
        if backend == "cuda":
            raise ValueError("backend='cuda' takes device memory: numpy arrays are host memory; use "
                             "infllm.torch with cuda tensors")
        return Site(_lib.context(backend), None, self.code(name, x))

    def empty(self, site, shape, code):
        return np.empty(shape, dtype=_NP[code])

    def zero(self, x):
        x[...] = 0

    def host_ints(self, name, x):
        a = np.asarray(x)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise TypeError("%s: expected a 1-D integer array, got %s %s" % (name, a.dtype, a.shape))
        return [int(v) for v in a]


def _ops(dtype):
    return Ops(NumpyAdapter(dtype))


def compress_keys(k, *, config=None, cu_seqlens_k=None, backend="cpu", dtype=None):
    """(c1, c2): the fine and coarse compressed keys of k [Tk, Hkv, D] (ifl_compress_keys), rows
    packed by sequence; either is None when no sequence has a complete window."""
    return _ops(dtype).compress_keys(k, config, cu_seqlens_k, backend)


def select_blocks(q, k, *, config=None, past=0, cu_seqlens_q=None, cu_seqlens_k=None,
                  backend="cpu", dtype=None):
    """Stage 1 (ifl_select): int32 [Hkv, Tq, K] ascending block indices, -1 padding, with
    K = config.select_width(k rows)."""
    return _ops(dtype).select_blocks(q, k, config, cu_seqlens_q, cu_seqlens_k, past, backend)


def attention(q, k, v, *, config=None, past=0, mode="auto", backend="cpu", blocks=None,
              cu_seqlens_q=None, cu_seqlens_k=None, return_lse=False, return_blocks=False,
              return_mode=False, dtype=None):
    """The switchable InfLLM-V2 forward (ifl_infllmv2_fwd). q [Tq, Hq, D], k and v [past+Tq, Hkv, D]
    (or packed sequences through cu_seqlens_q/k, int arrays of n_seqs+1 entries). mode "auto"
    runs each sequence dense below config.dense_len keys, sparse from there; "dense"/"sparse"
    force one. blocks (int32 [Hkv, Tq, K]) skips stage 1. Returns out, or the tuple
    (out[, lse][, blocks][, modes]) in that order; modes lists "dense"/"sparse" per sequence."""
    out, lse, sel, modes = _ops(dtype).attention(q, k, v, config, cu_seqlens_q, cu_seqlens_k, past,
                                                 mode, blocks, backend, return_lse, return_blocks)
    extra = [x for x, want in ((lse, return_lse), (sel, return_blocks), (modes, return_mode)) if want]
    return tuple([out] + extra) if extra else out


def sparse_attention(q, k, v, blocks=None, *, config=None, past=0, backend="cpu", cu_seqlens_q=None,
                     cu_seqlens_k=None, return_lse=False, return_blocks=False, dtype=None):
    """Sparse attention: stage 2 over the given blocks (ifl_sparse_attn_fwd), or, without blocks,
    stage 1 then stage 2 whatever the length. Returns out or (out[, lse][, blocks])."""
    return attention(q, k, v, config=config, past=past, mode="sparse", backend=backend, blocks=blocks,
                     cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, return_lse=return_lse,
                     return_blocks=return_blocks, dtype=dtype)


def dense_attention(q, k, v, *, config=None, past=0, backend="cpu", cu_seqlens_q=None,
                    cu_seqlens_k=None, return_lse=False, dtype=None):
    """Dense causal attention (ifl_dense_attn_fwd; uses only config.scale). out or (out, lse)."""
    return attention(q, k, v, config=config, past=past, mode="dense", backend=backend,
                     cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, return_lse=return_lse,
                     dtype=dtype)


def attention_backward(q, k, v, out, lse, dout, *, blocks=None, config=None, past=0, mode="auto",
                       backend="cpu", cu_seqlens_q=None, cu_seqlens_k=None, dtype=None):
    """(dq, dk, dv) of attention() called with the same arguments, given its out, lse and (for
    sparse sequences) blocks. mode is the forward's ("sparse" when the forward was given blocks),
    or the list of modes the forward returned. The selection is held fixed: it has no gradient."""
    return _ops(dtype).attention_backward(q, k, v, out, lse, dout, config, cu_seqlens_q, cu_seqlens_k,
                                          past, mode, blocks, backend)


def sparse_attention_backward(q, k, v, blocks, out, lse, dout, *, config=None, past=0, backend="cpu",
                              cu_seqlens_q=None, cu_seqlens_k=None, dtype=None):
    """(dq, dk, dv) of sparse attention over blocks (ifl_sparse_attn_bwd)."""
    return attention_backward(q, k, v, out, lse, dout, blocks=blocks, config=config, past=past,
                              mode="sparse", backend=backend, cu_seqlens_q=cu_seqlens_q,
                              cu_seqlens_k=cu_seqlens_k, dtype=dtype)


def dense_attention_backward(q, k, v, out, lse, dout, *, config=None, past=0, backend="cpu",
                             cu_seqlens_q=None, cu_seqlens_k=None, dtype=None):
    """(dq, dk, dv) of dense causal attention (ifl_dense_attn_bwd)."""
    return attention_backward(q, k, v, out, lse, dout, config=config, past=past, mode="dense",
                              backend=backend, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                              dtype=dtype)
