#!/usr/bin/env python3
"""Self-checks of the float64 oracle (oracle.py) by identities; no C tool needed.

    python3 tests/oracle/selftest.py        # exits 1 if any check fails

Checks: .npy round trips; compressed-key counts and the spec §6.1 worked example;
pooling ranges for the default config (§2.4: {4b-1..4b+3}); sparse == dense when every
block is selected; rows with p < (topk + W/BS)*BS equal dense; prefix (chunked) vs full
prefill; causality; exact-LSE normalisation; approx with coarse == fine equals exact;
head duplication leaves the selection unchanged; empty selection; backward against
central finite differences (dense and sparse).
"""

import math
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import npy  # noqa: E402
import oracle as orc  # noqa: E402

FAILS = []


def check(name, cond, detail=""):
    print("%s  %s%s" % ("PASS" if cond else "FAIL", name, ("  (" + detail + ")") if detail else ""))
    if not cond:
        FAILS.append(name)


def randn(rng, *shape, scale=1.0):
    if len(shape) == 1:
        return [rng.gauss(0.0, 1.0) * scale for _ in range(shape[0])]
    return [randn(rng, *shape[1:], scale=scale) for _ in range(shape[0])]


def maxabs(x):
    flat, _ = npy.flatten(x)
    return max((abs(v) for v in flat if v not in (math.inf, -math.inf)), default=0.0)


def maxdiff(a, b):
    fa, sa = npy.flatten(a)
    fb, sb = npy.flatten(b)
    assert sa == sb, (sa, sb)
    m = 0.0
    for x, y in zip(fa, fb):
        if x == y:
            continue
        if math.isinf(x) or math.isinf(y) or math.isnan(x) or math.isnan(y):
            return math.inf
        m = max(m, abs(x - y))
    return m


def rel(a, b):
    return maxdiff(a, b) / max(maxabs(b), 1e-300)


def case(rng, L, past, Hkv, G, D, qscale=1.0):
    Tq = L - past
    return (randn(rng, Tq, Hkv * G, D, scale=qscale), randn(rng, L, Hkv, D),
            randn(rng, L, Hkv, D))


# ---------------------------------------------------------------------------

def t_npy():
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as d:
        for descr in ("<f2", "<f4", "<f8", "<i4"):
            for shape in ((7,), (3, 5), (2, 3, 4), (1, 1, 1)):
                n = 1
                for s in shape:
                    n *= s
                if descr == "<i4":
                    data = [rng.randint(-2**31, 2**31 - 1) for _ in range(n)]
                else:
                    data = npy.round_to(descr, [rng.gauss(0, 3) for _ in range(n)])
                path = os.path.join(d, "x.npy")
                npy.save(path, data, shape, descr)
                with open(path, "rb") as f:
                    raw = f.read()
                hl = raw[8] | (raw[9] << 8)
                back, bshape, bdescr = npy.load(path)
                check("npy roundtrip %s %s" % (descr, shape),
                      back == data and bshape == shape and bdescr == descr
                      and (10 + hl) % 64 == 0 and raw[10 + hl - 1:10 + hl] == b"\n")
        # hand-made v2.0 header
        import struct
        hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"
        hdr += " " * ((-(12 + len(hdr) + 1)) % 64) + "\n"
        raw = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(hdr)) + hdr.encode() + \
            struct.pack("<2d", 1.5, -2.25)
        path = os.path.join(d, "v2.npy")
        with open(path, "wb") as f:
            f.write(raw)
        check("npy read v2.0", npy.load(path) == ([1.5, -2.25], (2,), "<f8"))
        check("npy f16 rounding", npy.round_to("<f2", [1.0 + 2**-12, 65504.0, 1e-8]) ==
              [1.0, 65504.0, 0.0])


def t_counts():
    nw = orc.num_windows
    check("N1(L=10000) = 624", nw(10000, 32, 16) == 624)
    check("N2(L=10000) = 155", nw(10000, 128, 64) == 155)
    check("next C1 appears at L = 10016", nw(10015, 32, 16) == 624 and nw(10016, 32, 16) == 625)
    check("next C2 appears at L = 10048", nw(10047, 128, 64) == 155 and nw(10048, 128, 64) == 156)
    check("N1 formula max(0, (L-16)//16) for 32/16",
          all(nw(L, 32, 16) == max(0, (L - 16) // 16) for L in range(0, 3000)))
    check("N2 formula max(0, (L-64)//64) for 128/64",
          all(nw(L, 128, 64) == max(0, (L - 64) // 64) for L in range(0, 3000)))
    # visibility: j < floor((p+1)/16) - 1  (spec §2.2)
    ok = all(orc.num_visible(p, 32, 16, 10 ** 9) == max(0, (p + 1) // 16 - 1) for p in range(3000))
    ok2 = all(orc.num_visible(p, 128, 64, 10 ** 9) == max(0, (p + 1) // 64 - 1) for p in range(3000))
    check("visibility n1(p) = max(0, floor((p+1)/16) - 1)", ok)
    check("visibility n2(p) = max(0, floor((p+1)/64) - 1)", ok2)
    cfg = orc.Config().resolved(128)
    r = orc.block_key_ranges(200, 10 ** 9, cfg)
    check("default pooling ranges are {4b-1 .. 4b+3}",
          r[0] == (0, 3) and all(r[b] == (4 * b - 1, 4 * b + 3) for b in range(1, 200)))
    r = orc.block_key_ranges(157, 624, cfg)
    check("pooling clipped to N1 at L=10000 (block 156 -> 623..623)", r[156] == (623, 623)
          and r[155] == (619, 623))


def t_worked_example():
    """Spec §6.1: L = 10000, last position 9999: forced {0} U {124..156}, 96 entries."""
    rng = random.Random(2)
    L, Hkv, G, D = 10000, 1, 2, 4
    K = randn(rng, L, Hkv, D)
    V = randn(rng, L, Hkv, D)
    Q = randn(rng, 1, Hkv * G, D, scale=3.0)
    cfg = orc.Config().resolved(D)
    sel, scores = orc.select(Q, K, L - 1, cfg, want_scores=True)
    row, sc = sel[0][0], scores[0][0]
    forced = [b for b, s in enumerate(sc) if s == math.inf]
    check("§6.1 NB = 157, Ksel = 96", len(sc) == 157 and len(row) == 96)
    check("§6.1 forced set = {0} U {124..156}", forced == [0] + list(range(124, 157)))
    dyn = [b for b in row if b not in forced]
    check("§6.1 96 entries, no -1, ascending, 62 dynamic from 1..123",
          -1 not in row and row == sorted(set(row)) and len(dyn) == 62
          and all(1 <= b <= 123 for b in dyn))
    thr = min(sc[b] for b in dyn)
    check("§6.1 dynamic blocks are the 62 best of 1..123",
          all(sc[b] <= thr for b in range(1, 124) if b not in dyn))
    r = orc.attention(Q, K, V, L - 1, orc.Config(), "auto")
    check("§6.1 auto mode at L=10000 runs sparse", r["mode"] == "sparse" and r["SEL"] == sel)


def t_sparse_equals_dense():
    rng = random.Random(3)
    for (L, past, BS, KS, KST, NI, W, topk, lse) in (
            (150, 0, 16, 16, 8, 1, 32, 100, "approx"),
            (203, 60, 8, 12, 4, 0, 0, 30, "exact"),
            (97, 10, 32, 32, 16, 2, 64, 3, "approx")):
        Hkv, G, D = 2, 3, 5
        Q, K, V = case(rng, L, past, Hkv, G, D)
        cfg = orc.Config(block_size=BS, kernel_size=KS, kernel_stride=KST, init_blocks=NI,
                         window=W, topk=topk, dense_len=-1, lse_mode=lse)
        rs = orc.attention(Q, K, V, past, cfg, "auto")
        rd = orc.attention(Q, K, V, past, cfg, "dense")
        NB = -(-L // BS)
        full = all(rs["SEL"][g][i] == list(range(0, (past + i) // BS + 1)) +
                   [-1] * (NB - 1 - (past + i) // BS)
                   for g in range(Hkv) for i in range(L - past))
        check("all blocks selected when topk+NLOC >= NB (L=%d)" % L, full)
        check("sparse == dense when all blocks selected (L=%d)" % L,
              rel(rs["O"], rd["O"]) <= 1e-12 and rel(rs["LSE"], rd["LSE"]) <= 1e-12,
              "relO=%.2e" % rel(rs["O"], rd["O"]))
        # explicit all-blocks selection through blocks_in
        Tq = L - past
        ksel = orc.num_select(L, cfg.resolved(D))
        bi = [[list(range(0, min(ksel, (past + i) // BS + 1))) for i in range(Tq)]
              for g in range(Hkv)]
        bi = [[r + [-1] * (ksel - len(r)) for r in rows] for rows in bi]
        if ksel == NB:
            rb = orc.attention(Q, K, V, past, cfg, "sparse", blocks_in=bi)
            check("blocks_in with every block == dense (L=%d)" % L,
                  rel(rb["O"], rd["O"]) <= 1e-12)


def t_early_rows_dense():
    rng = random.Random(4)
    L, BS, topk, W = 400, 8, 3, 16
    Hkv, G, D = 2, 2, 4
    Q, K, V = case(rng, L, 0, Hkv, G, D, qscale=4.0)
    for lse in ("approx", "exact"):
        cfg = orc.Config(block_size=BS, kernel_size=8, kernel_stride=4, init_blocks=1,
                         window=W, topk=topk, dense_len=-1, lse_mode=lse)
        rs = orc.attention(Q, K, V, 0, cfg, "sparse")
        rd = orc.attention(Q, K, V, 0, cfg, "dense")
        lim = (topk + W // BS) * BS
        early = max(rel(rs["O"][i], rd["O"][i]) for i in range(lim))
        late = max(rel(rs["O"][i], rd["O"][i]) for i in range(lim, L))
        check("rows p < (topk+W/BS)*BS = %d equal dense (%s)" % (lim, lse), early <= 1e-12,
              "max rel %.1e" % early)
        check("later rows do differ from dense (selection matters, %s)" % lse, late > 1e-3,
              "max rel %.1e" % late)
        # structural properties of every SEL row
        cfgr = cfg.resolved(D)
        ok = True
        for g in range(Hkv):
            for i in range(L):
                row = rs["SEL"][g][i]
                qb = i // BS
                kept = [b for b in row if b >= 0]
                forced = set(b for b in range(qb + 1)
                             if b < cfgr.init_blocks or qb - cfgr.nloc <= b)
                if (kept != sorted(set(kept)) or any(b > qb for b in kept)
                        or row[len(kept):] != [-1] * (len(row) - len(kept))
                        or not forced <= set(kept)
                        or len(row) != orc.num_select(L, cfgr)):
                    ok = False
        check("SEL rows ascending, unique, <= qb, -1 padded, contain forced (%s)" % lse, ok)


def t_prefix_and_causality():
    rng = random.Random(5)
    L, Hkv, G, D = 260, 2, 2, 4
    Q, K, V = case(rng, L, 0, Hkv, G, D, qscale=3.0)
    cfg = orc.Config(block_size=16, kernel_size=12, kernel_stride=4, coarse_kernel_size=24,
                     coarse_kernel_stride=8, init_blocks=1, window=16, topk=3, dense_len=-1)
    full = orc.attention(Q, K, V, 0, cfg, "sparse")
    for past in (100, 200, 255):
        # rows past..L-1 computed as a chunk with a KV history of `past`
        part = orc.attention(Q[past:], K, V, past, cfg, "sparse")
        same_sel = all(part["SEL"][g][i] == full["SEL"][g][past + i]
                       for g in range(Hkv) for i in range(L - past))
        check("chunk rows (past=%d) == full prefill rows: SEL" % past, same_sel)
        check("chunk rows (past=%d) == full prefill rows: O, LSE" % past,
              maxdiff(part["O"], full["O"][past:]) == 0.0
              and maxdiff(part["LSE"], full["LSE"][past:]) == 0.0)
    # causality: perturbing K/V at positions >= t leaves rows p < t unchanged
    for t in (37, 128, 129, 200):
        K2 = [[list(v) for v in row] for row in K]
        V2 = [[list(v) for v in row] for row in V]
        for s in range(t, L):
            K2[s] = randn(rng, Hkv, D, scale=5.0)
            V2[s] = randn(rng, Hkv, D, scale=5.0)
        pert = orc.attention(Q, K2, V2, 0, cfg, "sparse")
        ok = all(pert["SEL"][g][i] == full["SEL"][g][i] for g in range(Hkv) for i in range(t))
        ok = ok and maxdiff(pert["O"][:t], full["O"][:t]) == 0.0
        changed = maxdiff(pert["O"][t:], full["O"][t:]) > 0
        check("causality: K/V changes at >= %d leave rows < %d unchanged" % (t, t),
              ok and changed)


def t_stage1():
    rng = random.Random(6)
    L, Hkv, G, D = 300, 1, 3, 6
    Q, K, V = case(rng, L, 0, Hkv, G, D, qscale=2.0)
    cfg = orc.Config(block_size=16, kernel_size=16, kernel_stride=8, init_blocks=1,
                     window=16, topk=3, dense_len=-1, lse_mode="exact").resolved(D)
    C1 = orc.compress(K, 16, 8)
    C1h = [c[0] for c in C1]
    ok = True
    for p in (15, 16, 40, 150, 299):
        n1 = orc.num_visible(p, 16, 8, len(C1))
        S = orc.stage1_scores(Q[p], C1h, [], n1, 0, len(C1), cfg)
        ok = ok and abs(sum(S) - G) <= 1e-12 and all(s == 0.0 for s in S[n1:])
    check("exact LSE: group-summed scores sum to G over visible keys", ok)
    # approx with coarse == fine is exact
    for coarse in ((16, 8),):
        ca = orc.Config(block_size=16, kernel_size=16, kernel_stride=8,
                        coarse_kernel_size=coarse[0], coarse_kernel_stride=coarse[1],
                        init_blocks=1, window=16, topk=3, lse_mode="approx").resolved(D)
        ce = orc.Config(**{**ca.__dict__, "lse_mode": "exact"})
        sa, xa = orc.select(Q, K, 0, ca, want_scores=True)
        se, xe = orc.select(Q, K, 0, ce, want_scores=True)
        check("approx LSE with coarse == fine equals exact", sa == se and xa == xe)
    # approx with no visible coarse key falls back to exact over fine keys
    ca = orc.Config(block_size=16, kernel_size=16, kernel_stride=8, init_blocks=1,
                    window=16, topk=3, lse_mode="approx").resolved(D)   # coarse 64/32
    ce = orc.Config(**{**ca.__dict__, "lse_mode": "exact"})
    _, xa = orc.select(Q, K, 0, ca, want_scores=True)
    _, xe = orc.select(Q, K, 0, ce, want_scores=True)
    check("approx with n2(p)=0 (p < 63) equals exact", all(xa[0][p] == xe[0][p] for p in range(63))
          and any(xa[0][p] != xe[0][p] for p in range(63, L)))
    # approx rescales each head: within one head (G=1) the ranking is unchanged
    K1 = [[row[0]] for row in K]
    Q1 = [[row[0]] for row in Q]
    c1 = orc.Config(**{**ca.__dict__})
    c1e = orc.Config(**{**ce.__dict__})
    check("G=1: approx and exact select the same blocks",
          orc.select(Q1, K1, 0, c1) == orc.select(Q1, K1, 0, c1e))
    # head duplication (spec §1: repeat_interleave) leaves selection unchanged, O duplicated
    Q2 = [[q for q in row for _ in range(2)] for row in Q]
    cfgd = orc.Config(block_size=16, kernel_size=16, kernel_stride=8, init_blocks=1,
                      window=16, topk=3, dense_len=-1)
    r1 = orc.attention(Q, K, V, 0, cfgd, "sparse")
    r2 = orc.attention(Q2, K, V, 0, cfgd, "sparse")
    check("duplicating each query head keeps SEL, duplicates O",
          r1["SEL"] == r2["SEL"] and
          maxdiff([[o for o in row for _ in range(2)] for row in r1["O"]], r2["O"]) == 0.0)
    # tiny L: L < KS (no compressed keys): still well defined
    Qs, Ks, Vs = case(rng, 5, 0, 1, 2, 3)
    cs = orc.Config(block_size=2, kernel_size=8, kernel_stride=2, init_blocks=0, window=0,
                    topk=1, dense_len=-1)
    rs = orc.attention(Qs, Ks, Vs, 0, cs, "sparse")
    check("L < kernel_size: each query keeps exactly its own block",
          rs["SEL"][0] == [[0], [0], [1], [1], [2]])


def t_empty_selection():
    rng = random.Random(7)
    L, past, Hkv, G, D = 20, 14, 2, 2, 3
    Q, K, V = case(rng, L, past, Hkv, G, D)
    dO = randn(rng, L - past, Hkv * G, D)
    cfg = orc.Config(block_size=4, kernel_size=4, kernel_stride=2, init_blocks=0, window=0,
                     topk=1, dense_len=-1)
    bi = [[[-1] if i % 2 == 0 else [(past + i) // 4] for i in range(L - past)]
          for g in range(Hkv)]
    r = orc.attention(Q, K, V, past, cfg, "sparse", blocks_in=bi, dO=dO)
    ok = all(r["LSE"][i][h] == -math.inf and r["O"][i][h] == [0.0] * D and
             r["dQ"][i][h] == [0.0] * D
             for i in range(0, L - past, 2) for h in range(Hkv * G))
    ok = ok and all(math.isfinite(r["LSE"][i][h]) for i in range(1, L - past, 2)
                    for h in range(Hkv * G))
    check("empty selection row: O = 0, LSE = -inf, dQ = 0", ok)


def fd_check(name, Q, K, V, dO, past, scale, sel, BS, tol=1e-6):
    Tq, Hq, D, L, Hkv = orc.shape_of(Q, K)
    ks = orc.key_sets(Tq, Hkv, past, L, sel, BS)
    dQ, dK, dV = orc.attn_bwd(Q, K, V, dO, past, ks, scale)

    def loss():
        O, _ = orc.attn_fwd(Q, K, V, past, ks, scale)
        return sum(o * d for orow, drow in zip(O, dO) for oh, dh in zip(orow, drow)
                   for o, d in zip(oh, dh))
    worst = 0.0
    gmax = max(maxabs(dQ), maxabs(dK), maxabs(dV))
    for X, dX in ((Q, dQ), (K, dK), (V, dV)):
        for a in range(len(X)):
            for b in range(len(X[0])):
                for c in range(D):
                    x0 = X[a][b][c]
                    h = 1e-6 * max(1.0, abs(x0))
                    X[a][b][c] = x0 + h
                    lp = loss()
                    X[a][b][c] = x0 - h
                    lm = loss()
                    X[a][b][c] = x0
                    fd = (lp - lm) / (2 * h)
                    worst = max(worst, abs(fd - dX[a][b][c]))
    check("backward vs central differences: %s" % name, worst <= tol * gmax,
          "max err %.2e of max|grad| %.2e" % (worst, gmax))


def t_backward():
    rng = random.Random(8)
    L, past, Hkv, G, D = 13, 4, 2, 2, 3
    Q, K, V = case(rng, L, past, Hkv, G, D, qscale=1.5)
    dO = randn(rng, L - past, Hkv * G, D)
    fd_check("dense causal", Q, K, V, dO, past, 0.7, None, None)
    cfg = orc.Config(block_size=2, kernel_size=2, kernel_stride=1, coarse_kernel_size=4,
                     coarse_kernel_stride=2, init_blocks=1, window=2, topk=2,
                     dense_len=-1).resolved(D)
    sel = orc.select(Q, K, past, cfg)
    # make sure the selection really drops something
    drops = any(len([b for b in sel[g][i] if b >= 0]) < (past + i) // 2 + 1
                for g in range(Hkv) for i in range(L - past))
    check("FD case selection is sparse", drops)
    fd_check("sparse (selection fixed)", Q, K, V, dO, past, cfg.scale, sel, 2)
    # the full pipeline's gradient equals the fixed-selection gradient
    r = orc.attention(Q, K, V, past, cfg, "sparse", dO=dO)
    ks = orc.key_sets(L - past, Hkv, past, L, sel, 2)
    g2 = orc.attn_bwd(Q, K, V, dO, past, ks, cfg.scale)
    check("attention(dO) gradients == attn_bwd on its selection",
          (r["dQ"], r["dK"], r["dV"]) == g2)
    # keys no query attends get zero dK/dV rows (selection: own block only)
    bi = [[[(past + i) // 2, -1, -1] for i in range(L - past)] for g in range(Hkv)]
    r = orc.attention(Q, K, V, past, cfg, "sparse", blocks_in=bi, dO=dO)
    unused = list(range(0, past))
    check("unattended key rows have dK = dV = 0",
          all(r["dK"][t][g] == [0.0] * D and r["dV"][t][g] == [0.0] * D
              for t in unused for g in range(Hkv))
          and all(any(x != 0.0 for x in r["dK"][t][g]) for t in range(past, L - 1)
                  for g in range(Hkv)), "unused rows %s" % unused)


def t_cli():
    """The CLI writes what the module computes, and --blocks-out only when sparse ran."""
    rng = random.Random(9)
    L, past, Hkv, G, D = 70, 30, 1, 2, 4
    Q, K, V = case(rng, L, past, Hkv, G, D)
    with tempfile.TemporaryDirectory() as d:
        P = lambda n: os.path.join(d, n)  # noqa: E731
        orc.save_nested(P("q.npy"), Q, "<f8")
        orc.save_nested(P("k.npy"), K, "<f8")
        orc.save_nested(P("v.npy"), V, "<f8")
        flags = ["--q", P("q.npy"), "--k", P("k.npy"), "--v", P("v.npy"), "--past", str(past),
                 "--block-size", "8", "--kernel-size", "8", "--kernel-stride", "4",
                 "--window", "8", "--topk", "2", "--init-blocks", "1"]
        rc = orc.main(["attn"] + flags + ["--out", P("o.npy"), "--lse", P("l.npy"),
                                          "--blocks-out", P("s.npy"), "--dense-len", "71"])
        check("CLI dense run: rc 0, no --blocks-out file",
              rc == 0 and not os.path.exists(P("s.npy")))
        rc = orc.main(["attn"] + flags + ["--out", P("o.npy"), "--lse", P("l.npy"),
                                          "--blocks-out", P("s.npy"), "--dense-len", "70"])
        r = orc.attention(Q, K, V, past, orc.Config(block_size=8, kernel_size=8,
                                                    kernel_stride=4, window=8, topk=2,
                                                    dense_len=70))
        o, oshape, odescr = npy.load(P("o.npy"))
        s, sshape, sdescr = npy.load(P("s.npy"))
        check("CLI sparse run: O float32 == module, SEL int32 == module",
              rc == 0 and odescr == "<f4" and oshape == (L - past, Hkv * G, D)
              and o == npy.round_to("<f4", npy.flatten(r["O"])[0])
              and sdescr == "<i4" and npy.nest(s, sshape) == r["SEL"])
        import contextlib
        import io
        with contextlib.redirect_stderr(io.StringIO()) as err:
            rc = orc.main(["attn"] + flags + ["--out", P("o.npy"), "--topk", "1"])
        rc = rc if "topk must be at least" in err.getvalue() else 0
        check("CLI rejects topk < init_blocks + 1", rc != 0)


def main():
    for t in (t_npy, t_counts, t_worked_example, t_sparse_equals_dense, t_early_rows_dense,
              t_prefix_and_causality, t_stage1, t_empty_selection, t_backward, t_cli):
        t()
    print("selftest: %s (%d failed)" % ("FAIL" if FAILS else "OK", len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
