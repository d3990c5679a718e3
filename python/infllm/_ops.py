"""The operations once, for any array type. An adapter (numpy in _numpy.py, torch in torch.py)
turns its arrays into ifl_tensor descriptors without copying, allocates outputs next to the
inputs and picks the context; everything else (output shapes, packed batches, the dense/sparse
rule of the backward, the calls themselves) lives here so both front ends behave the same.

Adapter interface:
  describe(name, x, site) -> _lib.Tensor      zero-copy descriptor, or raises TypeError/ValueError
  empty(site, shape, code)  -> array          an uninitialised output where the inputs live
  host_ints(name, x)        -> list of int    a cu_seqlens argument read on the host
  site(backend, name, x)    -> Site           the context, device and dtype of a call whose first input is x
  zero(x)                                     sets a (view of an) output to 0
"""

import ctypes

from . import _lib
from ._config import resolve


class Site:
    """Where one call runs: its context, the device of its inputs and their storage dtype."""

    def __init__(self, ctx, device=None, code=None):
        self.ctx, self.device, self.code = ctx, device, code


def _rank3(name, x):
    if len(x.shape) != 3:
        raise ValueError("%s: expected a rank-3 tensor [T, H, D], got shape %s" % (name, tuple(x.shape)))
    return tuple(int(s) for s in x.shape)


def modes_for(config, seqs, mode):
    """The mode each sequence of attention() runs (the library's rule, for a backward that was
    not handed the forward's modes): dense when forced, or under "auto" when dense_len != -1 and
    the sequence has fewer keys than dense_len; sparse otherwise. (A forward given blocks ran
    sparse: its backward passes mode "sparse".)"""
    cfg = resolve(config)
    if mode == "sparse":
        return ["sparse"] * len(seqs)
    if mode == "dense":
        return ["dense"] * len(seqs)
    return ["dense" if cfg.dense_len != -1 and tk < cfg.dense_len else "sparse" for _, tk in seqs]


class Ops:
    def __init__(self, adapter):
        self.ad = adapter

    # ---- shared pieces ----

    def _t(self, name, x, site):
        return None if x is None else ctypes.byref(self.ad.describe(name, x, site))

    def _batch(self, cu_q, cu_k, tq, tk, past):
        """(struct ifl_batch or None, [(Tq_s, Tk_s) per sequence]); the arrays stay referenced."""
        if cu_q is None and cu_k is None:
            if past and tk != past + tq:
                raise ValueError("past=%d: k has %d rows, expected past + q rows = %d" % (past, tk, past + tq))
            return None, [(tq, tk)]
        if cu_q is None or cu_k is None:
            raise ValueError("cu_seqlens_q and cu_seqlens_k go together: pass both or neither")
        if past:
            raise ValueError("past=%d with cu_seqlens: a packed batch's pasts come from cu_seqlens "
                             "(Tk_s - Tq_s); leave past at 0" % past)
        lq, lk = self.ad.host_ints("cu_seqlens_q", cu_q), self.ad.host_ints("cu_seqlens_k", cu_k)
        if len(lq) != len(lk) or len(lq) < 2:
            raise ValueError("cu_seqlens_q has %d entries and cu_seqlens_k %d: expected the same "
                             "count, n_seqs + 1 >= 2" % (len(lq), len(lk)))
        for name, vals in (("cu_seqlens_q", lq), ("cu_seqlens_k", lk)):
            if any(not -2**31 <= v < 2**31 for v in vals):
                raise ValueError("%s holds a value outside int32" % name)
        arr_q = (ctypes.c_int32 * len(lq))(*lq)
        arr_k = (ctypes.c_int32 * len(lk))(*lk)
        b = _lib.Batch(len(lq) - 1, arr_q, arr_k)
        b.keep = (arr_q, arr_k)
        seqs = [(max(0, lq[i + 1] - lq[i]), max(0, lk[i + 1] - lk[i])) for i in range(len(lq) - 1)]
        return b, seqs

    @staticmethod
    def _ref(b):
        return None if b is None else ctypes.byref(b)

    def _lse_code(self, site):
        return _lib.F64 if site.code == _lib.F64 else _lib.F32

    # ---- stage 1 ----

    def compress_keys(self, k, config, cu_seqlens_k, backend):
        """(c1, c2): fine and coarse compressed keys, rows packed by sequence; None when a batch
        has no complete window."""
        cfg = resolve(config)
        tk, hkv, d = _rank3("k", k)
        site = self.ad.site(backend, "k", k)
        b, seqs = self._batch(cu_seqlens_k, cu_seqlens_k, tk, tk, 0)
        c = cfg.to_c()
        n1 = sum(_lib.lib.ifl_compressed_len(s[1], c.kernel_size, c.kernel_stride) for s in seqs)
        n2 = sum(_lib.lib.ifl_compressed_len(s[1], c.coarse_kernel_size, c.coarse_kernel_stride)
                 for s in seqs)
        kt = self._t("k", k, site)
        c1 = self.ad.empty(site, (n1, hkv, d), site.code) if n1 > 0 else None
        c2 = self.ad.empty(site, (n2, hkv, d), site.code) if n2 > 0 else None
        _lib.check(site.ctx, _lib.lib.ifl_compress_keys(site.ctx.handle, c, self._ref(b), kt,
                                                       self._t("c1", c1, site), self._t("c2", c2, site)))
        return c1, c2

    def select_blocks(self, q, k, config, cu_seqlens_q, cu_seqlens_k, past, backend):
        """The selection, int32 [Hkv, Tq, K] with K = config.select_width(k rows)."""
        cfg = resolve(config)
        tq = _rank3("q", q)[0]
        tk, hkv, _ = _rank3("k", k)
        site = self.ad.site(backend, "q", q)
        b, _ = self._batch(cu_seqlens_q, cu_seqlens_k, tq, tk, past)
        qt, kt = self._t("q", q, site), self._t("k", k, site)
        sel = self.ad.empty(site, (hkv, tq, cfg.select_width(tk)), _lib.I32)
        _lib.check(site.ctx, _lib.lib.ifl_select(site.ctx.handle, cfg.to_c(), self._ref(b), qt, kt,
                                                self._t("blocks", sel, site)))
        return sel

    # ---- forward ----

    def attention(self, q, k, v, config, cu_seqlens_q, cu_seqlens_k, past, mode, blocks, backend,
                  want_lse=True, want_blocks=True):
        """(out, lse or None, blocks or None, modes): the switchable forward. mode "auto" runs each
        sequence dense below config.dense_len keys and sparse from there; "dense" and "sparse" force
        one; given blocks mean stage 2 only (sparse) with that selection (returned as blocks)."""
        cfg = resolve(config)
        if mode not in ("auto", "dense", "sparse"):
            raise ValueError("mode=%r, expected 'auto', 'dense' or 'sparse'" % (mode,))
        if blocks is not None and mode == "dense":
            raise ValueError("blocks given with mode='dense': a selection is only used by sparse attention")
        tq, hq, d = _rank3("q", q)
        tk, hkv, dk = _rank3("k", k)
        site = self.ad.site(backend, "q", q)
        b, seqs = self._batch(cu_seqlens_q, cu_seqlens_k, tq, tk, past)
        qt, kt, vt = self._t("q", q, site), self._t("k", k, site), self._t("v", v, site)
        out = self.ad.empty(site, (tq, hq, d), site.code)
        lse = self.ad.empty(site, (tq, hq), self._lse_code(site)) if want_lse else None
        ot, lt = self._t("out", out, site), self._t("lse", lse, site)
        h = site.ctx.handle
        if blocks is not None:
            sel, modes = blocks, [_lib.MODE_SPARSE] * len(seqs)
            st = _lib.lib.ifl_sparse_attn_fwd(h, cfg.to_c(), self._ref(b), qt, kt, vt,
                                              self._t("blocks", blocks, site), ot, lt)
        elif mode == "dense":
            sel, modes = None, [_lib.MODE_DENSE] * len(seqs)
            st = _lib.lib.ifl_dense_attn_fwd(h, cfg.to_c(), self._ref(b), qt, kt, vt, ot, lt)
        else:
            c = cfg.to_c()
            if mode == "sparse":
                c.dense_len = -1
            sel = self.ad.empty(site, (hkv, tq, cfg.select_width(tk)), _lib.I32) if want_blocks else None
            cmodes = (ctypes.c_int * len(seqs))()
            st = _lib.lib.ifl_infllmv2_fwd(h, c, self._ref(b), qt, kt, vt, ot, lt,
                                           self._t("blocks", sel, site), cmodes)
            modes = list(cmodes)
        _lib.check(site.ctx, st)
        return out, lse, sel, ["dense" if m == _lib.MODE_DENSE else "sparse" for m in modes]

    # ---- backward ----

    def attention_backward(self, q, k, v, out, lse, dout, config, cu_seqlens_q, cu_seqlens_k, past,
                           modes, blocks, backend):
        """(dq, dk, dv) of attention() whose sequences ran in modes ("dense"/"sparse" each, as
        attention() reported them; sparse ones need blocks), or in the modes that attention's mode
        argument ("auto", "dense", "sparse") gives them (modes_for). One library call when every sequence
        ran the same way, else one per sequence on views of its rows (no copies)."""
        cfg = resolve(config)
        tq, hq, d = _rank3("q", q)
        tk, hkv, dk = _rank3("k", k)
        site = self.ad.site(backend, "q", q)
        b, seqs = self._batch(cu_seqlens_q, cu_seqlens_k, tq, tk, past)
        if isinstance(modes, str):
            modes = modes_for(cfg, seqs, modes)
        if len(modes) != len(seqs) or any(m not in ("dense", "sparse") for m in modes):
            raise ValueError("modes=%r: expected one 'dense' or 'sparse' per sequence (%d)" % (modes, len(seqs)))
        if "sparse" in modes and blocks is None:
            raise ValueError("the backward of sparse attention needs the forward's blocks")
        dq = self.ad.empty(site, (tq, hq, d), site.code)
        dkk = self.ad.empty(site, (tk, hkv, dk), site.code)
        dv = self.ad.empty(site, tuple(int(s) for s in v.shape), site.code)
        args = (q, k, v, out, lse, dout, dq, dkk, dv)
        if len(set(modes)) == 1:
            self._bwd_call(site, cfg, b, modes[0], args, blocks)
        else:
            q0 = k0 = 0
            for (lq, lk), m in zip(seqs, modes):
                if lq == 0:  # keys no query attends: zero gradients (the library is not called)
                    self.ad.zero(dkk[k0:k0 + lk])
                    self.ad.zero(dv[k0:k0 + lk])
                    k0 += lk
                    continue
                view = [x[q0:q0 + lq] for x in args[:1]] + [x[k0:k0 + lk] for x in args[1:3]] + \
                       [x[q0:q0 + lq] for x in args[3:7]] + [x[k0:k0 + lk] for x in args[7:]]
                sel = None if m == "dense" else blocks[:, q0:q0 + lq]
                self._bwd_call(site, cfg, None, m, view, sel)
                q0, k0 = q0 + lq, k0 + lk
        return dq, dkk, dv

    def _bwd_call(self, site, cfg, b, mode, args, blocks):
        names = ("q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv")
        t = [self._t(n, x, site) for n, x in zip(names, args)]
        h, c = site.ctx.handle, cfg.to_c()
        if mode == "dense":
            st = _lib.lib.ifl_dense_attn_bwd(h, c, self._ref(b), *t)
        else:
            st = _lib.lib.ifl_sparse_attn_bwd(h, c, self._ref(b), t[0], t[1], t[2],
                                              self._t("blocks", blocks, site), *t[3:])
        _lib.check(site.ctx, st)
