"""KVCache: one attention layer's keys, values and compressed keys for incremental decoding and
chunked prefill (ifl_kv_cache_*), in host memory, for any front end (the adapter decides which
arrays go in and come out)."""

import ctypes

from . import _lib
from ._config import resolve


class KVCache:
    """A cache of capacity tokens per sequence for n_seqs sequences, storage dtype "bf16", "f16",
    "f32" or "f64", all allocated at creation. Close it with close() or a with-block (the memory is
    freed then, not whenever the garbage collector runs); a closed cache raises ValueError.

        with infllm.KVCache(capacity=4096, n_heads_kv=2, head_dim=128) as cache:
            cache.append(k_new, v_new)          # [n, Hkv, D]
            out = cache.attention(q)            # q [Tq, Hq, D]: the newest Tq tokens
    """

    def __init__(self, capacity, n_heads_kv, head_dim, *, n_seqs=1, dtype="bf16", config=None,
                 backend="cpu", adapter=None):
        self._handle = None  # first: close() (from __del__) must work whatever fails below
        if dtype not in ("bf16", "f16", "f32", "f64"):
            raise ValueError("KVCache dtype=%r, expected 'bf16', 'f16', 'f32' or 'f64'" % (dtype,))
        self._ad = adapter
        self._backend = backend
        self.config = resolve(config)
        p = _lib.KVCacheParams()
        p.capacity, p.n_seqs, p.n_heads_kv, p.head_dim = capacity, n_seqs, n_heads_kv, head_dim
        p.dtype, p.cfg = _lib.DTYPE_NAMES[dtype], self.config.to_c()
        ctx = _lib.context(backend)
        h = ctypes.c_void_p()
        _lib.check(ctx, _lib.lib.ifl_kv_cache_create(ctx.handle, ctypes.byref(p), ctypes.byref(h)))
        self._handle = h
        self._destroy = _lib.lib.ifl_kv_cache_destroy
        self.capacity, self.n_seqs, self.n_heads_kv, self.head_dim, self.dtype = \
            capacity, n_seqs, n_heads_kv, head_dim, dtype

    # ---- lifetime ----

    def close(self):
        """Frees the storage now; further calls raise ValueError. Closing twice is harmless."""
        h, self._handle = self._handle, None
        if h:
            self._destroy(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _live(self):
        if not self._handle:
            raise ValueError("KVCache is closed")
        return self._handle

    # ---- queries ----

    def len(self, seq=0):
        """Tokens sequence seq holds."""
        n = _lib.lib.ifl_kv_cache_len(self._live(), int(seq))
        if n < 0:
            raise ValueError("KVCache.len: seq=%d, expected 0 <= seq < %d" % (seq, self.n_seqs))
        return int(n)

    def __len__(self):
        return self.len(0)

    @property
    def nbytes(self):
        """Bytes of storage (K, V and both compressed keys; ifl_kv_cache_bytes)."""
        return int(_lib.lib.ifl_kv_cache_bytes(self._live()))

    # ---- operations ----

    def _site(self, name, x):
        return self._ad.site(self._backend, name, x)

    def append(self, k, v, seq=0):
        """Appends k, v [n, Hkv, D] (any float dtype, rounded to the storage dtype) to sequence seq."""
        h, site = self._live(), self._site("k", k)
        kt, vt = self._ad.describe("k", k, site), self._ad.describe("v", v, site)
        _lib.check(site.ctx, _lib.lib.ifl_kv_cache_append(site.ctx.handle, h, int(seq),
                                                          ctypes.byref(kt), ctypes.byref(vt)))

    def truncate(self, new_len, seq=0):
        """Keeps the first new_len tokens of sequence seq (speculative-decoding rollback)."""
        h, ctx = self._live(), _lib.context(self._backend)
        _lib.check(ctx, _lib.lib.ifl_kv_cache_truncate(ctx.handle, h, int(seq), int(new_len)))

    def attention(self, q, seq=0, *, return_lse=False, return_blocks=False, return_mode=False):
        """Attention of the newest Tq tokens of sequence seq, q [Tq, Hq, D], over its cached
        tokens (append their keys and values first). Returns out (q's dtype), or the tuple
        (out[, lse][, blocks][, mode]) with mode "dense" or "sparse"."""
        h, site = self._live(), self._site("q", q)
        if len(q.shape) != 3:
            raise ValueError("q: expected a rank-3 tensor [Tq, Hq, D], got shape %s" % (tuple(q.shape),))
        tq, hq, d = (int(s) for s in q.shape)
        qt = self._ad.describe("q", q, site)
        out = self._ad.empty(site, (tq, hq, d), site.code)
        lse = self._ad.empty(site, (tq, hq), _lib.F64 if site.code == _lib.F64 else _lib.F32) \
            if return_lse else None
        width = max(1, self.config.select_width(max(1, self.len(seq))))
        sel = self._ad.empty(site, (self.n_heads_kv, tq, width), _lib.I32) if return_blocks else None
        mode = ctypes.c_int()
        ref = [None if x is None else ctypes.byref(self._ad.describe(n, x, site))
               for n, x in (("out", out), ("lse", lse), ("blocks", sel))]
        _lib.check(site.ctx, _lib.lib.ifl_kv_cache_attn(site.ctx.handle, h, int(seq), ctypes.byref(qt),
                                                        *ref, ctypes.byref(mode)))
        extra = [x for x, want in ((lse, return_lse), (sel, return_blocks),
                                   ("dense" if mode.value == _lib.MODE_DENSE else "sparse", return_mode))
                 if want]
        return tuple([out] + extra) if extra else out
