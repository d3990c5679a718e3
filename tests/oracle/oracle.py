#!/usr/bin/env python3
"""Independent float64 oracle for InfLLM-V2 (Design B) attention, pure Python 3.11.

Written from /work/shared/docs/infllmv2.md ("Decisions for this project" + §2, §4, §5)
only; it shares no code with the C library.  One sequence; all positions are 0-based
and absolute: query i sits at position p = past + i, keys 0 .. L-1 with L = past + Tq.

Tensors are nested Python lists of floats:
    Q  [Tq][Hq][D]        K, V [L][Hkv][D]        dO like Q
    O  [Tq][Hq][D]        LSE  [Tq][Hq]           SEL [Hkv][Tq][Ksel] (ints, -1 = empty)
Query head h uses KV head g = h // G, G = Hq // Hkv.

Pipeline (sparse):  compress -> select (stage 1: scores, pooling, forced blocks, top-k)
                    -> sparse_fwd (stage 2)        backward: attn_bwd on the same key sets.

As a module:   import oracle; r = oracle.attention(Q, K, V, past, oracle.Config(...))
As a CLI:      oracle.py attn --q Q.npy --k K.npy --v V.npy --out O.npy [...]
               oracle.py grad ... --dout DO.npy --dq DQ.npy --dk DK.npy --dv DV.npy
(same flags as `build/infllm attn|grad`; outputs float32 .npy, SEL int32; --past
defaults to rows of K - Tq).  --blocks-in replaces stage 1 whenever the sparse path runs;
its rows hold ascending block indices < NB then -1 padding, any width.  Oracle-only flag:
--compressed-dtype f64|f32|f16|input rounds the compressed keys C1/C2 to that storage
type (default input: the keys' own type, as spec §2.1 stores them; f64 = unrounded means).
"""

import argparse
import math
import os
import sys
from dataclasses import dataclass
from operator import mul

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import npy  # noqa: E402

INF = math.inf


def dot(a, b):
    return sum(map(mul, a, b))


# ==== configuration ===========================================================

@dataclass
class Config:
    block_size: int = 64            # BS
    kernel_size: int = 32           # KS   (fine compressed keys C1)
    kernel_stride: int = 16         # KST
    coarse_kernel_size: int = None  # CKS  (coarse keys C2); None -> 4 * KS
    coarse_kernel_stride: int = None  # CKST; None -> 4 * KST
    init_blocks: int = 1            # NI
    window: int = 2048              # W tokens; NLOC = W / BS
    topk: int = 64
    dense_len: int = 8192           # -1 = always sparse
    lse_mode: str = "approx"        # approx | exact
    scale: float = None             # None -> 1/sqrt(D)
    # Storage type of the compressed keys C1/C2: None = float64 (unrounded means), or an .npy
    # descr ('<f2', '<f4') to round each mean to, as spec §2.1 stores them ("result stored in
    # the K dtype") and libinfllm does; the CLI's default is the input's type.
    compressed_dtype: str = None

    def resolved(self, D):
        """Copy with defaults filled in and parameters checked (ValueError if invalid)."""
        c = Config(**self.__dict__)
        if c.coarse_kernel_size is None:
            c.coarse_kernel_size = 4 * c.kernel_size
        if c.coarse_kernel_stride is None:
            c.coarse_kernel_stride = 4 * c.kernel_stride
        if c.scale is None:
            c.scale = 1.0 / math.sqrt(D)
        for name in ("block_size", "kernel_size", "kernel_stride",
                     "coarse_kernel_size", "coarse_kernel_stride"):
            if getattr(c, name) <= 0:
                raise ValueError("%s must be positive" % name)
        if c.block_size % c.kernel_stride:
            raise ValueError("block_size must be a multiple of kernel_stride")
        if c.kernel_size % c.kernel_stride:
            raise ValueError("kernel_size must be a multiple of kernel_stride")
        if c.init_blocks < 0 or c.window < 0:
            raise ValueError("init_blocks and window must be >= 0")
        if c.window % c.block_size:
            raise ValueError("window must be a multiple of block_size")
        if c.topk < c.init_blocks + 1:
            raise ValueError("topk must be at least init_blocks + 1")
        if c.lse_mode not in ("approx", "exact"):
            raise ValueError("lse_mode must be approx or exact")
        if c.dense_len < -1:
            raise ValueError("dense_len must be >= -1")
        return c

    @property
    def nloc(self):
        return self.window // self.block_size


def shape_of(Q, K):
    Tq, Hq, D = len(Q), len(Q[0]), len(Q[0][0])
    L, Hkv = len(K), len(K[0])
    return Tq, Hq, D, L, Hkv


# ==== compressed keys =========================================================

def num_windows(L, ks, st):
    """Number of complete windows [j*st, j*st+ks-1] inside [0, L-1]."""
    return 0 if L < ks else (L - ks) // st + 1


def num_visible(p, ks, st, n):
    """Number of windows (of n existing) whose last token j*st+ks-1 is <= p."""
    return min(n, num_windows(p + 1, ks, st))


def compress(K, ks, st, dtype=None):
    """C[j][g] = mean of K[j*st .. j*st+ks-1][g] for every complete window. [N][Hkv][D].
    dtype (e.g. '<f2'): round each mean to that storage type (None: keep float64)."""
    L = len(K)
    Hkv = len(K[0]) if L else 0
    D = len(K[0][0]) if L else 0
    out = []
    for j in range(num_windows(L, ks, st)):
        rows = []
        for g in range(Hkv):
            acc = [0.0] * D
            for t in range(j * st, j * st + ks):
                acc = [a + b for a, b in zip(acc, K[t][g])]
            mean = [a / ks for a in acc]
            rows.append(npy.round_to(dtype, mean) if dtype else mean)
        out.append(rows)
    return out


# ==== stage 1: selection ======================================================

def logsumexp(z):
    m = max(z)
    if m == -INF:
        return -INF
    return m + math.log(sum(math.exp(x - m) for x in z))


def block_key_ranges(NB, N1, cfg):
    """For each block b: (j_lo, j_hi) of fine keys j in [0, N1) whose window overlaps
    tokens [b*BS, b*BS+BS-1]; j_lo > j_hi if none."""
    BS, KS, KST = cfg.block_size, cfg.kernel_size, cfg.kernel_stride
    out = []
    for b in range(NB):
        first, last = b * BS, b * BS + BS - 1
        j_lo = max(0, -((KS - 1 - first) // KST))   # ceil((first - KS + 1) / KST)
        j_hi = min(N1 - 1, last // KST)
        out.append((j_lo, j_hi))
    return out


def stage1_scores(qheads, C1g, C2g, n1, n2, N1, cfg):
    """Group-summed probabilities S[0..N1) for one query and one KV head.
    qheads: the G query vectors of the group; C1g/C2g: compressed keys of head g."""
    S = [0.0] * N1
    if n1 == 0:
        return S
    sc = cfg.scale
    for q in qheads:
        z1 = [sc * dot(q, C1g[j]) for j in range(n1)]
        if cfg.lse_mode == "approx" and n2 > 0:
            lse = logsumexp([sc * dot(q, C2g[j]) for j in range(n2)])
        else:
            lse = logsumexp(z1)
        for j in range(n1):
            S[j] += math.exp(z1[j] - lse)
    return S


def pool_blocks(S, ranges, p, cfg):
    """Block scores: max over overlapping fine keys, -inf if none, +inf if forced."""
    qb = p // cfg.block_size
    lo_loc = qb - cfg.nloc
    out = []
    for b, (j_lo, j_hi) in enumerate(ranges):
        if b < cfg.init_blocks or lo_loc <= b <= qb:
            out.append(INF)
        elif j_lo > j_hi:
            out.append(-INF)
        else:
            out.append(max(S[j_lo:j_hi + 1]))
    return out


def topk_blocks(scores, ksel, qb):
    """ksel largest (ties -> smaller index), drop > qb, ascending, -1 padded to ksel."""
    order = sorted(range(len(scores)), key=lambda b: (-scores[b], b))[:ksel]
    kept = sorted(b for b in order if b <= qb)
    return kept + [-1] * (ksel - len(kept))


def num_select(L, cfg):
    NB = -(-L // cfg.block_size)
    return min(cfg.topk + cfg.nloc, NB)


def select(Q, K, past, cfg, want_scores=False):
    """Stage 1. Returns SEL [Hkv][Tq][Ksel] (and block scores [Hkv][Tq][NB] if asked)."""
    Tq, Hq, D, L, Hkv = shape_of(Q, K)
    G = Hq // Hkv
    BS = cfg.block_size
    C1 = compress(K, cfg.kernel_size, cfg.kernel_stride, cfg.compressed_dtype)
    C2 = compress(K, cfg.coarse_kernel_size, cfg.coarse_kernel_stride, cfg.compressed_dtype)
    N1, N2 = len(C1), len(C2)
    NB = -(-L // BS)
    ksel = num_select(L, cfg)
    ranges = block_key_ranges(NB, N1, cfg)
    C1h = [[C1[j][g] for j in range(N1)] for g in range(Hkv)]
    C2h = [[C2[j][g] for j in range(N2)] for g in range(Hkv)]
    sel = [[None] * Tq for _ in range(Hkv)]
    scores = [[None] * Tq for _ in range(Hkv)]
    for i in range(Tq):
        p = past + i
        n1 = num_visible(p, cfg.kernel_size, cfg.kernel_stride, N1)
        n2 = num_visible(p, cfg.coarse_kernel_size, cfg.coarse_kernel_stride, N2)
        for g in range(Hkv):
            S = stage1_scores(Q[i][g * G:(g + 1) * G], C1h[g], C2h[g], n1, n2, N1, cfg)
            sb = pool_blocks(S, ranges, p, cfg)
            sel[g][i] = topk_blocks(sb, ksel, p // BS)
            scores[g][i] = sb
    return (sel, scores) if want_scores else sel


# ==== stage 2 / dense: forward and backward ===================================

def sparse_keys(sel_row, p, BS):
    """Keys t with t // BS in the selected set and t <= p (ascending)."""
    blocks = sorted(set(b for b in sel_row if b >= 0))
    keys = []
    for b in blocks:
        keys.extend(range(b * BS, min(b * BS + BS - 1, p) + 1))
    return keys


def key_sets(Tq, Hkv, past, L, sel=None, BS=None):
    """keysets[i][g]: dense causal (sel None) or the sparse key list."""
    if sel is None:
        return [[range(0, past + i + 1)] * Hkv for i in range(Tq)]
    return [[sparse_keys(sel[g][i], past + i, BS) for g in range(Hkv)] for i in range(Tq)]


def attn_fwd(Q, K, V, past, keysets, scale):
    """Softmax attention of each (i, h) over keysets[i][g]. Returns O, LSE.
    No key -> O = 0, LSE = -inf."""
    Tq, Hq, D, L, Hkv = shape_of(Q, K)
    G = Hq // Hkv
    O = [[None] * Hq for _ in range(Tq)]
    LSE = [[None] * Hq for _ in range(Tq)]
    for i in range(Tq):
        for g in range(Hkv):
            T = keysets[i][g]
            Krows = [K[t][g] for t in T]
            Vcols = list(zip(*[V[t][g] for t in T])) if T else None
            for h in range(g * G, (g + 1) * G):
                q = Q[i][h]
                if not T:
                    O[i][h] = [0.0] * D
                    LSE[i][h] = -INF
                    continue
                s = [scale * dot(q, k) for k in Krows]
                m = max(s)
                e = [math.exp(x - m) for x in s]
                Z = sum(e)
                O[i][h] = [dot(e, col) / Z for col in Vcols]
                LSE[i][h] = m + math.log(Z)
    return O, LSE


def attn_bwd(Q, K, V, dO, past, keysets, scale):
    """Gradients of the forward above (key sets held fixed). Returns dQ, dK, dV."""
    Tq, Hq, D, L, Hkv = shape_of(Q, K)
    G = Hq // Hkv
    O, LSE = attn_fwd(Q, K, V, past, keysets, scale)
    dQ = [[[0.0] * D for _ in range(Hq)] for _ in range(Tq)]
    dK = [[[0.0] * D for _ in range(Hkv)] for _ in range(L)]
    dV = [[[0.0] * D for _ in range(Hkv)] for _ in range(L)]
    for i in range(Tq):
        for g in range(Hkv):
            T = keysets[i][g]
            if not T:
                continue
            Krows = [K[t][g] for t in T]
            Vrows = [V[t][g] for t in T]
            Kcols = list(zip(*Krows))
            for h in range(g * G, (g + 1) * G):
                q, do, lse = Q[i][h], dO[i][h], LSE[i][h]
                P = [math.exp(scale * dot(q, k) - lse) for k in Krows]
                Di = dot(do, O[i][h])
                dS = [pt * (dot(do, v) - Di) for pt, v in zip(P, Vrows)]
                dQ[i][h] = [scale * dot(dS, col) for col in Kcols]
                for t, pt, ds in zip(T, P, dS):
                    rk, rv = dK[t][g], dV[t][g]
                    c = scale * ds
                    dK[t][g] = [a + c * b for a, b in zip(rk, q)]
                    dV[t][g] = [a + pt * b for a, b in zip(rv, do)]
    return dQ, dK, dV


def dense_fwd(Q, K, V, past, scale):
    Tq, Hq, D, L, Hkv = shape_of(Q, K)
    return attn_fwd(Q, K, V, past, key_sets(Tq, Hkv, past, L), scale)


def sparse_fwd(Q, K, V, past, sel, scale, block_size):
    Tq, Hq, D, L, Hkv = shape_of(Q, K)
    return attn_fwd(Q, K, V, past, key_sets(Tq, Hkv, past, L, sel, block_size), scale)


def backward(Q, K, V, dO, past, scale, sel=None, block_size=None):
    """Dense causal backward if sel is None, else sparse with the given selection."""
    Tq, Hq, D, L, Hkv = shape_of(Q, K)
    return attn_bwd(Q, K, V, dO, past, key_sets(Tq, Hkv, past, L, sel, block_size), scale)


# ==== the switch ==============================================================

def check_shapes(Q, K, V, past):
    Tq, Hq, D, L, Hkv = shape_of(Q, K)
    if len(V) != L or len(V[0]) != Hkv or len(V[0][0]) != D or len(K[0][0]) != D:
        raise ValueError("K and V must both be [L, Hkv, D] with Q's D")
    if Hq % Hkv:
        raise ValueError("Hq must be a multiple of Hkv")
    if L != past + Tq:
        raise ValueError("K/V length %d != past %d + Tq %d" % (L, past, Tq))


def check_blocks(sel, Hkv, Tq, NB):
    """A given selection must be [Hkv, Tq, K] (any K >= 1); each row strictly ascending
    block indices < NB, then -1 padding to the end.  Blocks after the query's own block
    are allowed (stage 2 masks t > p anyway)."""
    if (len(sel) != Hkv or any(len(r) != Tq for r in sel)
            or len(set(len(row) for r in sel for row in r)) != 1 or not sel[0][0]):
        raise ValueError("blocks-in must be [Hkv=%d, Tq=%d, K]" % (Hkv, Tq))
    for r in sel:
        for row in r:
            kept = [b for b in row if b != -1]
            if (row[:len(kept)] != kept or any(b < 0 or b >= NB for b in kept)
                    or any(x >= y for x, y in zip(kept, kept[1:]))):
                raise ValueError("blocks-in row %s: expected ascending block indices < %d, "
                                 "then -1 padding" % (row, NB))


def resolve_mode(mode, L, cfg):
    if mode == "auto":
        return "dense" if (cfg.dense_len != -1 and L < cfg.dense_len) else "sparse"
    if mode not in ("dense", "sparse"):
        raise ValueError("mode must be auto, dense or sparse")
    return mode


def attention(Q, K, V, past, cfg, mode="auto", blocks_in=None, dO=None):
    """Full forward (and backward if dO is given).  blocks_in, if given, replaces
    stage 1 whenever the sparse path runs.  Returns a dict with mode, O, LSE, SEL
    (None when dense ran) and dQ, dK, dV when dO was given."""
    check_shapes(Q, K, V, past)
    Tq, Hq, D, L, Hkv = shape_of(Q, K)
    cfg = cfg.resolved(D)
    ran = resolve_mode(mode, L, cfg)
    sel = None
    if blocks_in is not None:
        check_blocks(blocks_in, Hkv, Tq, -(-L // cfg.block_size))
    if ran == "sparse":
        sel = blocks_in if blocks_in is not None else select(Q, K, past, cfg)
        ks = key_sets(Tq, Hkv, past, L, sel, cfg.block_size)
    else:
        ks = key_sets(Tq, Hkv, past, L)
    O, LSE = attn_fwd(Q, K, V, past, ks, cfg.scale)
    r = {"mode": ran, "O": O, "LSE": LSE, "SEL": sel}
    if dO is not None:
        r["dQ"], r["dK"], r["dV"] = attn_bwd(Q, K, V, dO, past, ks, cfg.scale)
    return r


# ==== CLI =====================================================================

def build_parser():
    ap = argparse.ArgumentParser(prog="oracle.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("attn", "grad"):
        sp = sub.add_parser(name)
        sp.add_argument("--q", required=True)
        sp.add_argument("--k", required=True)
        sp.add_argument("--v", required=True)
        sp.add_argument("--out", required=(name == "attn"))
        sp.add_argument("--lse")
        sp.add_argument("--blocks-out")
        sp.add_argument("--blocks-in")
        sp.add_argument("--past", type=int, default=None,
                        help="keys before the queries (default: rows of K - Tq)")
        sp.add_argument("--mode", default="auto", choices=["auto", "dense", "sparse"])
        sp.add_argument("--backend", default="ref")
        sp.add_argument("--block-size", type=int, default=64)
        sp.add_argument("--kernel-size", type=int, default=32)
        sp.add_argument("--kernel-stride", type=int, default=16)
        sp.add_argument("--coarse-kernel-size", type=int, default=None)
        sp.add_argument("--coarse-kernel-stride", type=int, default=None)
        sp.add_argument("--init-blocks", type=int, default=1)
        sp.add_argument("--window", type=int, default=2048)
        sp.add_argument("--topk", type=int, default=64)
        sp.add_argument("--dense-len", type=int, default=8192)
        sp.add_argument("--lse-mode", default="approx", choices=["approx", "exact"])
        sp.add_argument("--scale", type=float, default=None)
        sp.add_argument("--compressed-dtype", default="input", choices=["f64", "f32", "f16", "input"],
                        help="oracle only: round C1/C2 to this type (input = Q/K/V's type, the default)")
        if name == "grad":
            sp.add_argument("--dout", required=True)
            sp.add_argument("--dq", required=True)
            sp.add_argument("--dk", required=True)
            sp.add_argument("--dv", required=True)
    return ap


def config_from_args(a, input_descr=None):
    cd = {"f64": None, "f32": "<f4", "f16": "<f2", "input": input_descr}[a.compressed_dtype]
    if cd == "<f8":
        cd = None
    return Config(compressed_dtype=cd, block_size=a.block_size, kernel_size=a.kernel_size,
                  kernel_stride=a.kernel_stride, coarse_kernel_size=a.coarse_kernel_size,
                  coarse_kernel_stride=a.coarse_kernel_stride, init_blocks=a.init_blocks,
                  window=a.window, topk=a.topk, dense_len=a.dense_len,
                  lse_mode=a.lse_mode, scale=a.scale)


def load_nested(path, ndim):
    data, shape, _ = npy.load(path)
    if len(shape) != ndim:
        raise ValueError("%s: expected %d dimensions, got shape %s" % (path, ndim, shape))
    return npy.nest([float(x) for x in data], shape)


def save_nested(path, x, descr="<f4"):
    data, shape = npy.flatten(x)
    npy.save(path, data, shape, descr)


def main(argv=None):
    a = build_parser().parse_args(argv)
    try:
        Q = load_nested(a.q, 3)
        K = load_nested(a.k, 3)
        kdescr = npy.load(a.k)[2]
        V = load_nested(a.v, 3)
        dO = load_nested(a.dout, 3) if a.cmd == "grad" else None
        blocks = None
        if a.blocks_in:
            data, shape, _ = npy.load(a.blocks_in)
            blocks = npy.nest([int(x) for x in data], shape)
        past = a.past if a.past is not None else len(K) - len(Q)
        r = attention(Q, K, V, past, config_from_args(a, kdescr), a.mode, blocks, dO)
    except (ValueError, OSError) as e:
        print("oracle: error: %s" % e, file=sys.stderr)
        return 2
    if a.out:
        save_nested(a.out, r["O"])
    if a.lse:
        save_nested(a.lse, r["LSE"])
    if a.blocks_out and r["SEL"] is not None:
        save_nested(a.blocks_out, r["SEL"], "<i4")
    if a.cmd == "grad":
        save_nested(a.dq, r["dQ"])
        save_nested(a.dk, r["dK"])
        save_nested(a.dv, r["dV"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
