#!/usr/bin/env python3
"""Cross-check `build/infllm attn|grad` against the independent float64 oracle (oracle.py).

    python3 tests/oracle/check_cli.py [--seed 1] [--cases 200] [--infllm build/infllm]
                                      [--jobs N] [--only IDX[,IDX..]] [--keep DIR]
                                      [--backend ref] [--tol 1e-5] [-v]

Each case (deterministic from --seed and its index) draws a random small problem and
config, writes Q/K/V (and dO, a selection) as .npy into a temp dir, runs the C tool and
the oracle on the same files, and compares:
  SEL          exactly; a differing block is tolerated (reported as NEAR-TIE) only when
               the oracle's score of every differing block is within 1e-9 relative of the
               selection threshold but not exactly equal to it (exact ties must follow the
               smaller-index rule); stage 2 is then re-checked with the tool's selection.
  O, LSE       max |tool - ref| <= tol * max |ref| (tol 1e-5; -inf must match exactly).
  DQ, DK, DV   the same rule, against max(max |ref|, the largest |gradient| of the case).
Cases 0..2 are fixed long cases with the default config (L=10000 decode row, L=2100).
Prints one line per case (PASS/FAIL + name); exits 1 on any failure.  Failing cases keep
their files under --keep (default /tmp/infllm-oracle-fail) with the command lines to rerun.
"""

import argparse
import math
import multiprocessing
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import npy  # noqa: E402
import oracle as orc  # noqa: E402

TIE_REL = 1e-9
BUDGET = 2.0e6      # rough multiply-adds of Python work per case


# ==== case generation =========================================================

def make_case(seed, idx):
    """A dict describing case `idx`; everything derives from (seed, idx)."""
    rng = random.Random("infllm-oracle:%d:%d" % (seed, idx))
    c = {"idx": idx}
    if idx == 0:
        # spec §6.1: L = 10000 with the full default config, one decode row
        c.update(L=10000, past=9999, Hkv=1, G=2, D=4, dtype="<f4", cfg={}, coarse=None,
                 mode="auto", blocks_in=False, grad=True, qscale=3.0, scale=None,
                 lse_mode=None, dense_len=None, pass_past=True)
        return c
    if idx == 1:
        # default block/kernel sizes, L ~ 2100, topk/window reduced so selection matters
        c.update(L=2100, past=2100 - 24, Hkv=1, G=2, D=8, dtype="<f4",
                 cfg={"topk": 4, "window": 256}, coarse=None, mode="auto", blocks_in=False,
                 grad=True, qscale=3.0, scale=None, lse_mode="approx", dense_len=-1,
                 pass_past=True)
        return c
    if idx == 2:
        # all defaults except dense_len -1: NB = 33 <= 96, every past block selected
        c.update(L=2100, past=2100 - 6, Hkv=2, G=1, D=4, dtype="<f8", cfg={}, coarse=None,
                 mode="auto", blocks_in=False, grad=False, qscale=2.0, scale=None,
                 lse_mode="exact", dense_len=-1, pass_past=False)
        return c
    BS = rng.choice([8, 16, 32])
    strides = [d for d in (2, 4, 8, 16) if BS % d == 0]
    KST = 1 if rng.random() < 0.05 else rng.choice(strides)
    KS = KST * rng.choice([1, 2, 3, 4])
    if rng.random() < 0.5:
        coarse = None
    else:
        ckst = KST * rng.choice([1, 2, 4])
        coarse = (ckst * rng.choice([1, 2, 3]), ckst)
    NI = rng.randint(0, 2)
    nloc = rng.randint(0, 3)
    topk = NI + 1 + rng.randint(0, 3)
    cfg = {"block_size": BS, "kernel_size": KS, "kernel_stride": KST, "init_blocks": NI,
           "window": nloc * BS, "topk": topk}
    D = rng.choice([4, 8, 16, 24])
    Hkv = rng.choice([1, 2, 3])
    G = rng.choice([1, 2, 3, 4])
    cks = coarse[0] if coarse else 4 * KS
    if rng.random() < 0.25:
        L = rng.choice([1, 2, BS - 1, BS, BS + 1, KS - 1, KS, KS + 1, 2 * BS + 3,
                        cks - 1, cks, cks + 1, 3 * BS])
        L = max(1, L)
    else:
        L = rng.randint(2, 700)
    past = 0 if rng.random() < 0.3 else rng.randint(0, L - 1)
    grad = rng.random() < 0.4
    r = rng.random()
    if r < 0.5:
        mode = "auto"
    elif r < 0.65:
        mode = "dense"
    else:
        mode = "sparse"
    dense_len = rng.choice([-1, -1, L, rng.randint(1, L), L + 1, rng.randint(L + 1, 2 * L + 10),
                            8192, None])
    blocks_in = mode == "sparse" and rng.random() < 0.3
    c.update(L=L, past=past, Hkv=Hkv, G=G, D=D, cfg=cfg, coarse=coarse, mode=mode,
             dtype=rng.choice(["<f4", "<f4", "<f8", "<f2"]), grad=grad,
             blocks_in=blocks_in, empty_rows=blocks_in and rng.random() < 0.3,
             qscale=rng.choice([0.5, 1.0, 2.0, 4.0]),
             scale=None if rng.random() < 0.7 else round(rng.uniform(0.05, 1.5), 6),
             lse_mode=rng.choice(["approx", "exact", None]), dense_len=dense_len,
             pass_past=rng.random() < 0.8)
    # keep the Python work bounded: shorten the query chunk (keep L) if needed
    Tq = L - past
    cost = estimate_cost(c, Tq)
    if cost > BUDGET:
        Tq = max(1, int(Tq * BUDGET / cost))
        c["past"] = L - Tq
    return c


def estimate_cost(c, Tq):
    cfg = full_config(c).resolved(c["D"])
    L, D, Hq = c["L"], c["D"], c["Hkv"] * c["G"]
    n1 = orc.num_windows(L, cfg.kernel_size, cfg.kernel_stride)
    n2 = orc.num_windows(L, cfg.coarse_kernel_size, cfg.coarse_kernel_stride)
    keys = min(L, orc.num_select(L, cfg) * cfg.block_size)
    if c["mode"] == "dense":
        keys = L
    cost = Tq * Hq * D * (n1 + n2 + 2 * keys)
    return cost * (2.5 if c["grad"] else 1.0)


def full_config(c):
    kw = dict(c["cfg"])
    if c["coarse"]:
        kw["coarse_kernel_size"], kw["coarse_kernel_stride"] = c["coarse"]
    if c["lse_mode"]:
        kw["lse_mode"] = c["lse_mode"]
    if c["dense_len"] is not None:
        kw["dense_len"] = c["dense_len"]
    if c["scale"] is not None:
        kw["scale"] = c["scale"]
    return orc.Config(**kw)


def case_name(c):
    cfg = full_config(c).resolved(c["D"])
    Tq = c["L"] - c["past"]
    parts = ["%s%s" % ("attn+grad" if c["grad"] else "attn", ""),
             "dt=%s" % {"<f2": "f16", "<f4": "f32", "<f8": "f64"}[c["dtype"]],
             "L=%d" % c["L"], "past=%d" % c["past"], "Tq=%d" % Tq,
             "Hq=%d" % (c["Hkv"] * c["G"]), "Hkv=%d" % c["Hkv"], "D=%d" % c["D"],
             "bs=%d" % cfg.block_size, "ks=%d/%d" % (cfg.kernel_size, cfg.kernel_stride),
             "cks=%d/%d%s" % (cfg.coarse_kernel_size, cfg.coarse_kernel_stride,
                              "" if c["coarse"] else "(def)"),
             "init=%d" % cfg.init_blocks, "win=%d" % cfg.window, "topk=%d" % cfg.topk,
             "dl=%d" % cfg.dense_len, "lse=%s" % cfg.lse_mode, "mode=%s" % c["mode"],
             "scale=%s" % ("def" if c["scale"] is None else repr(c["scale"])),
             "bin=%s" % ("empty" if c.get("empty_rows") else int(c["blocks_in"])),
             "qx=%g" % c["qscale"]]
    return " ".join(parts)


def tool_flags(c, files):
    f = ["--q", files["q"], "--k", files["k"], "--v", files["v"]]
    if c["pass_past"]:
        f += ["--past", str(c["past"])]
    f += ["--mode", c["mode"]]
    names = {"block_size": "--block-size", "kernel_size": "--kernel-size",
             "kernel_stride": "--kernel-stride", "init_blocks": "--init-blocks",
             "window": "--window", "topk": "--topk"}
    for k, v in c["cfg"].items():
        f += [names[k], str(v)]
    if c["coarse"]:
        f += ["--coarse-kernel-size", str(c["coarse"][0]),
              "--coarse-kernel-stride", str(c["coarse"][1])]
    if c["dense_len"] is not None:
        f += ["--dense-len", str(c["dense_len"])]
    if c["lse_mode"]:
        f += ["--lse-mode", c["lse_mode"]]
    if c["scale"] is not None:
        f += ["--scale", repr(c["scale"])]
    if c["blocks_in"]:
        f += ["--blocks-in", files["bin"]]
    return f


def gen_tensors(c):
    rng = random.Random("infllm-oracle-data:%d" % c["idx"] + ":%r" % sorted(c.items()))
    L, past, Hkv, G, D = c["L"], c["past"], c["Hkv"], c["G"], c["D"]
    Tq, Hq = L - past, Hkv * G
    g = rng.gauss
    qs = c["qscale"]
    dt = c["dtype"]
    Q = npy.round_to(dt, [g(0, 1) * qs for _ in range(Tq * Hq * D)])
    # keys: noise plus a slowly varying per-position drift so blocks differ in relevance
    K = []
    for t in range(L):
        drift = math.sin(t / 37.0) * 0.7
        K.extend(g(0, 1) + drift * (1 if d % 2 else -1) for _ in range(Hkv) for d in range(D))
    K = npy.round_to(dt, K)
    V = npy.round_to(dt, [g(0, 1) for _ in range(L * Hkv * D)])
    dO = [g(0, 1) for _ in range(Tq * Hq * D)] if c["grad"] else None
    if dO is not None:
        dO = npy.round_to(dt, dO)
    sel = None
    if c["blocks_in"]:
        # rows: ascending distinct blocks, -1 padded; usually <= the query's block and
        # Ksel wide; sometimes another width, or including blocks after the query's block
        cfg = full_config(c).resolved(D)
        NB = -(-L // cfg.block_size)
        ksel = orc.num_select(L, cfg)
        if rng.random() < 0.25:
            ksel = rng.randint(1, NB + 2)
        future = rng.random() < 0.25
        sel = []
        for gg in range(Hkv):
            for i in range(Tq):
                qb = (past + i) // cfg.block_size
                pool = NB if future else qb + 1
                k = rng.randint(0 if c.get("empty_rows") else 1, min(ksel, pool))
                row = sorted(rng.sample(range(pool), k))
                sel.extend(row + [-1] * (ksel - k))
        sel = (sel, (Hkv, Tq, ksel))
    return {"q": (Q, (Tq, Hq, D)), "k": (K, (L, Hkv, D)), "v": (V, (L, Hkv, D)),
            "dout": (dO, (Tq, Hq, D)) if dO is not None else None, "bin": sel}


# ==== comparison ==============================================================

def compare_float(name, tool, ref, tol, floor=0.0):
    """(ok, message). tool: (flat, shape, descr); ref: (flat, shape). The error is measured
    against max(max |ref|, floor): a gradient that is exactly 0 by cancellation (one visible key)
    is judged against the scale of the case's other gradients, not against 0."""
    tdata, tshape, tdescr = tool
    rdata, rshape = ref
    if tuple(tshape) != tuple(rshape):
        return False, "%s shape %s != ref %s" % (name, tshape, rshape)
    if tdescr != "<f4":
        return False, "%s dtype %s (expected <f4)" % (name, tdescr)
    err, mref, worst = 0.0, 0.0, None
    for k, (a, b) in enumerate(zip(tdata, rdata)):
        if math.isinf(b) or math.isinf(a) or math.isnan(a):
            if a != b:
                return False, "%s[%s] tool %r ref %r" % (name, unravel(k, rshape), a, b)
            continue
        mref = max(mref, abs(b))
        d = abs(a - b)
        if d > err:
            err, worst = d, k
    mref = max(mref, floor)
    relv = err / mref if mref > 0 else (0.0 if err == 0 else math.inf)
    msg = "%s %.1e" % (name, relv)
    if err > tol * mref:
        msg += " at %s tool %r ref %r" % (unravel(worst, rshape), tdata[worst], rdata[worst])
        return False, msg
    return True, msg


def unravel(k, shape):
    idx = []
    for s in reversed(shape):
        idx.append(k % s)
        k //= s
    return tuple(reversed(idx))


def compare_sel(tool_sel, ref_sel, scores, past, BS):
    """Returns (status, msg): status 'ok' | 'near' | 'fail'."""
    status, notes = "ok", []
    Hkv, Tq = len(ref_sel), len(ref_sel[0])
    for g in range(Hkv):
        for i in range(Tq):
            a, b = tool_sel[g][i], ref_sel[g][i]
            if a == b:
                continue
            sc = scores[g][i]
            ksel = len(b)
            order = sorted(range(len(sc)), key=lambda x: (-sc[x], x))
            thr = sc[order[ksel - 1]] if ksel else math.inf
            sa, sb = set(x for x in a if x >= 0), set(x for x in b if x >= 0)
            diff = sorted(sa ^ sb)
            p = past + i
            desc = "SEL[g=%d,i=%d,p=%d]: tool %s ref %s; differing blocks %s (ref scores %s, threshold %r)" % (
                g, i, p, a, b, diff, [sc[x] if 0 <= x < len(sc) else None for x in diff], thr)
            wellformed = (len(a) == ksel and a[:len(sa)] == sorted(sa)
                          and all(x == -1 for x in a[len(sa):]))
            # tolerated: every differing block scores within TIE_REL of the threshold, and
            # no tool-only block exactly ties an oracle-only one (exact ties must go to the
            # smaller index: both sides compute such ties from the same compressed key)
            near = wellformed and diff and all(
                0 <= x < len(sc) and x <= p // BS and math.isfinite(sc[x]) and math.isfinite(thr)
                and abs(sc[x] - thr) <= TIE_REL * max(abs(sc[x]), abs(thr)) for x in diff) \
                and not any(sc[x] == sc[y] for x in sa - sb for y in sb - sa)
            if near and len(sa) != len(sb):
                # a different count of kept blocks needs a near-tied block after qb
                near = any(abs(sc[x] - thr) <= TIE_REL * max(abs(sc[x]), abs(thr))
                           for x in range(p // BS + 1, len(sc)) if math.isfinite(sc[x]))
            if near:
                if status == "ok":
                    status = "near"
                notes.append("near-tie " + desc)
            else:
                status = "fail"
                notes.append(desc)
                break
        if status == "fail":
            break
    return status, notes


# ==== running one case ========================================================

def run_tool(cmd, timeout=120):
    for attempt in range(20):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            return p.returncode, (p.stdout + p.stderr).strip()
        except subprocess.TimeoutExpired:
            return -1, "timeout after %ds" % timeout
        except OSError as e:   # e.g. the binary is being relinked by a concurrent `make`
            err = str(e)
            time.sleep(0.5)
    return -1, err


def run_case(args_tuple):
    seed, idx, tool, backend, tol, keep, cdt = args_tuple
    c = make_case(seed, idx)
    name = "case %03d seed=%d %s" % (idx, seed, case_name(c))
    d = tempfile.mkdtemp(prefix="infllm-oracle-")
    try:
        ok, lines = check_case(c, d, tool, backend, tol, cdt)
    except Exception as e:  # an oracle/driver bug: report, do not hide
        import traceback
        ok, lines = False, ["driver exception: %r" % e, traceback.format_exc()]
    if not ok and keep:
        dst = os.path.join(keep, "seed%d_case%03d" % (seed, idx))
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(d, dst)
        lines = [x.replace(d, dst) for x in lines]
    shutil.rmtree(d, ignore_errors=True)
    return idx, ok, name, lines


def check_case(c, d, tool, backend, tol, cdt="f64"):
    files = {k: os.path.join(d, k + ".npy") for k in
             ("q", "k", "v", "dout", "bin", "o", "lse", "sel", "dq", "dk", "dv", "o2", "sel2")}
    t = gen_tensors(c)
    for k in ("q", "k", "v", "dout"):
        if t[k] is not None:
            npy.save(files[k], t[k][0], t[k][1], c["dtype"])
    if t["bin"] is not None:
        npy.save(files["bin"], t["bin"][0], t["bin"][1], "<i4")
    flags = tool_flags(c, files)
    if backend != "ref":
        flags += ["--backend", backend]
    attn_cmd = [tool, "attn"] + flags + ["--out", files["o"], "--lse", files["lse"]]
    if not c["blocks_in"]:
        attn_cmd += ["--blocks-out", files["sel"]]
    grad_cmd = [tool, "grad"] + flags + ["--dout", files["dout"], "--dq", files["dq"],
                                         "--dk", files["dk"], "--dv", files["dv"],
                                         "--out", files["o2"]]
    if not c["blocks_in"]:
        grad_cmd += ["--blocks-out", files["sel2"]]
    repro = ["  repro: " + " ".join(shlex.quote(x) for x in attn_cmd)]
    if c["grad"]:
        repro.append("  repro: " + " ".join(shlex.quote(x) for x in grad_cmd))
    oracle_cmd = [sys.executable, os.path.join(HERE, "oracle.py")] + attn_cmd[1:] + \
        (["--compressed-dtype", cdt] if cdt != "f64" else [])
    repro.append("  oracle: " + " ".join(shlex.quote(x) for x in oracle_cmd))

    # ---- oracle on the very files the tool reads ----
    def load(k):
        data, shape, _ = npy.load(files[k])
        return npy.nest([float(x) for x in data], shape)
    Q, K, V = load("q"), load("k"), load("v")
    dO = load("dout") if c["grad"] else None
    cfg = full_config(c).resolved(c["D"])
    if cdt == "input" and c["dtype"] != "<f8":
        cfg.compressed_dtype = c["dtype"]
    elif cdt in ("f32", "f16"):
        cfg.compressed_dtype = {"f32": "<f4", "f16": "<f2"}[cdt]
    past = c["past"]
    ran = orc.resolve_mode(c["mode"], c["L"], cfg)
    scores = None
    if ran == "sparse":
        if c["blocks_in"]:
            bd, bs, _ = npy.load(files["bin"])
            ref_sel = npy.nest([int(x) for x in bd], bs)
        else:
            ref_sel, scores = orc.select(Q, K, past, cfg, want_scores=True)
    else:
        ref_sel = None

    msgs, ok = [], True
    rc, out = run_tool(attn_cmd)
    if rc != 0:
        return False, ["tool attn rc=%d: %s" % (rc, out[-2000:])] + repro
    sel_used = ref_sel
    if ran == "sparse" and not c["blocks_in"]:
        if not os.path.exists(files["sel"]):
            return False, ["sparse ran (oracle) but the tool wrote no --blocks-out"] + repro
        sd, ss, sdescr = npy.load(files["sel"])
        Tq, ksel = c["L"] - past, orc.num_select(c["L"], cfg)
        if sdescr != "<i4" or tuple(ss) != (c["Hkv"], Tq, ksel):
            return False, ["SEL dtype/shape %s %s, expected <i4 %s" % (
                sdescr, ss, (c["Hkv"], Tq, ksel))] + repro
        tool_sel = npy.nest([int(x) for x in sd], ss)
        st, notes = compare_sel(tool_sel, ref_sel, scores, past, cfg.block_size)
        if st == "fail":
            return False, notes[:3] + repro
        if st == "near":
            msgs.append("NEAR-TIE(%d rows)" % len(notes))
            msgs += ["  " + n for n in notes[:3]]
            sel_used = tool_sel   # check stage 2 on the tool's own selection
        else:
            msgs.append("SEL ok")
        # how many rows leave out some past block (i.e. the selection really mattered)
        drop = sum(1 for g in range(c["Hkv"]) for i in range(Tq)
                   if len([x for x in ref_sel[g][i] if x >= 0]) < (past + i) // cfg.block_size + 1)
        msgs.append("drop=%d/%d" % (drop, c["Hkv"] * Tq))
    elif ran == "dense" and os.path.exists(files["sel"]):
        return False, ["dense ran (oracle) but the tool wrote --blocks-out"] + repro

    ks = orc.key_sets(c["L"] - past, c["Hkv"], past, c["L"], sel_used, cfg.block_size)
    O, LSE = orc.attn_fwd(Q, K, V, past, ks, cfg.scale)
    for nm, ref in (("O", O), ("LSE", LSE)):
        good, m = compare_float(nm, npy.load(files[nm.lower()]), npy.flatten(ref), tol)
        ok &= good
        msgs.append(m)
    if c["grad"]:
        rc, out = run_tool(grad_cmd)
        if rc != 0:
            return False, msgs + ["tool grad rc=%d: %s" % (rc, out[-2000:])] + repro
        if ran == "sparse" and not c["blocks_in"]:
            if not os.path.exists(files["sel2"]) or \
                    npy.load(files["sel2"])[0] != npy.load(files["sel"])[0]:
                ok = False
                msgs.append("grad's --blocks-out differs from attn's")
        dQ, dK, dV = orc.attn_bwd(Q, K, V, dO, past, ks, cfg.scale)
        gscale = max(max((abs(x) for x in npy.flatten(g)[0] if not math.isinf(x)), default=0.0)
                     for g in (dQ, dK, dV))
        for nm, ref in (("dQ", dQ), ("dK", dK), ("dV", dV)):
            good, m = compare_float(nm, npy.load(files[nm.lower()]), npy.flatten(ref), tol, gscale)
            ok &= good
            msgs.append(m)
        good, m = compare_float("O(grad)", npy.load(files["o2"]), npy.flatten(O), tol)
        ok &= good
        if not good:
            msgs.append(m)
    msgs.insert(0, "ran=%s" % ran)
    return ok, ([" ".join(x for x in msgs if not x.startswith("  "))] +
                [x for x in msgs if x.startswith("  ")] + ([] if ok else repro))


# ==== invalid arguments =======================================================

def reject_checks(tool):
    """Calls both sides must refuse (non-zero exit, no output written). Returns #failures."""
    import contextlib
    import io
    d = tempfile.mkdtemp(prefix="infllm-oracle-rej-")
    rng = random.Random(12345)
    P = lambda n: os.path.join(d, n)  # noqa: E731

    def put(name, shape, descr="<f4"):
        n = 1
        for x in shape:
            n *= x
        npy.save(P(name), [rng.gauss(0, 1) for _ in range(n)], shape, descr)
    put("q.npy", (4, 2, 4))
    put("k.npy", (8, 1, 4))
    put("v.npy", (8, 1, 4))
    put("q3.npy", (4, 3, 4))
    put("k2.npy", (8, 2, 4))
    put("v2.npy", (8, 2, 4))
    put("kd.npy", (8, 1, 5))
    put("q2d.npy", (4, 8))
    npy.save(P("bin_bad.npy"), [0, -1] * 3, (1, 3, 2), "<i4")      # Tq is 4
    npy.save(P("bin_desc.npy"), [1, 0, -1] * 4, (1, 4, 3), "<i4")   # not ascending
    npy.save(P("bin_gap.npy"), [0, -1, 2] * 4, (1, 4, 3), "<i4")    # -1 then a block
    npy.save(P("bin_big.npy"), [0, 1, 9] * 4, (1, 4, 3), "<i4")       # block 9 >= NB = 4
    base = ["--q", P("q.npy"), "--k", P("k.npy"), "--v", P("v.npy"),
            "--block-size", "2", "--kernel-size", "2", "--kernel-stride", "2",
            "--init-blocks", "1", "--window", "2", "--topk", "2", "--dense-len", "-1"]

    def sub(args, old, new):
        args = list(args)
        args[args.index(old) + 1] = new
        return args
    cases = [
        ("topk < init_blocks + 1", sub(sub(base, "--init-blocks", "2"), "--topk", "2")),
        ("topk 0", sub(base, "--topk", "0")),
        ("window not a multiple of block size", sub(base, "--window", "3")),
        ("block size not a multiple of kernel stride",
         sub(sub(sub(base, "--block-size", "6"), "--kernel-stride", "4"), "--kernel-size", "8")),
        ("kernel size not a multiple of kernel stride",
         sub(sub(base, "--kernel-size", "3"), "--kernel-stride", "2")),
        ("past + Tq != rows of K", base + ["--past", "3"]),
        ("Hq not a multiple of Hkv", sub(sub(sub(base, "--q", P("q3.npy")), "--k", P("k2.npy")),
                                         "--v", P("v2.npy"))),
        ("head dim of K differs from Q", sub(base, "--k", P("kd.npy"))),
        ("Q not 3-dimensional", sub(base, "--q", P("q2d.npy"))),
        ("blocks-in with the wrong Tq", base + ["--mode", "sparse", "--blocks-in", P("bin_bad.npy")]),
        ("blocks-in row not ascending", base + ["--mode", "sparse", "--blocks-in", P("bin_desc.npy")]),
        ("blocks-in row with a block after -1", base + ["--mode", "sparse", "--blocks-in", P("bin_gap.npy")]),
        ("blocks-in entry >= number of blocks", base + ["--mode", "sparse", "--blocks-in", P("bin_big.npy")]),
        ("unknown --lse-mode", base + ["--lse-mode", "fast"]),
        ("unknown --mode", base + ["--mode", "half"]),
    ]
    nfail = 0
    for name, args in cases:
        out = P("o.npy")
        if os.path.exists(out):
            os.remove(out)
        rc, msg = run_tool([tool, "attn"] + args + ["--out", out])
        wrote = os.path.exists(out)
        if os.path.exists(out):
            os.remove(out)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                orc_rc = orc.main(["attn"] + args + ["--out", out])
        except SystemExit as e:          # argparse refusing a choice
            orc_rc = e.code
        ok = rc > 0 and not wrote and orc_rc != 0
        nfail += not ok
        print("%s reject: %s  [tool rc=%d%s: %s | oracle rc=%s]" % (
            "PASS" if ok else "FAIL", name, rc, ", wrote --out" if wrote else "",
            (msg.splitlines() or [""])[-1][:120], orc_rc))
        if not ok:
            print("  repro: " + " ".join(shlex.quote(x) for x in [tool, "attn"] + args +
                                         ["--out", out]))
    if nfail == 0:
        shutil.rmtree(d, ignore_errors=True)
    return nfail


# ==== main ====================================================================

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--only", default=None, help="comma-separated case indices")
    ap.add_argument("--infllm", default="build/infllm")
    ap.add_argument("--backend", default="ref")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", default=os.path.join(tempfile.gettempdir(), "infllm-oracle-fail"),
                    help="where failing cases' files are kept ('' = nowhere)")
    ap.add_argument("--compressed-dtype", default="input", choices=["f64", "f32", "f16", "input"],
                    help="storage type the oracle rounds compressed keys C1/C2 to (input, the "
                         "default: the Q/K/V file's type, as spec §2.1 stores them and as "
                         "libinfllm does; f64: unrounded means)")
    ap.add_argument("--no-reject", action="store_true", help="skip the invalid-argument checks")
    ap.add_argument("-v", "--verbose", action="store_true", help="print details of passing cases")
    a = ap.parse_args()
    tool = os.path.abspath(a.infllm)
    if not os.access(tool, os.X_OK):
        print("check_cli: %s is not an executable" % tool, file=sys.stderr)
        return 2
    idxs = ([int(x) for x in a.only.split(",")] if a.only else list(range(a.cases)))
    work = [(a.seed, i, tool, a.backend, a.tol, a.keep, a.compressed_dtype) for i in idxs]
    t0 = time.time()
    nfail = nnear = 0
    if not a.only and not a.no_reject:
        nfail += reject_checks(tool)
    if a.jobs > 1 and len(work) > 1:
        pool = multiprocessing.Pool(a.jobs)
        results = pool.imap(run_case, work)
    else:
        pool, results = None, map(run_case, work)
    for idx, ok, name, lines in results:
        near = any("NEAR-TIE" in x for x in lines)
        nfail += not ok
        nnear += near
        print("%s %s  [%s]" % ("PASS" if ok else "FAIL", name, lines[0] if lines else ""))
        if not ok or a.verbose or near:
            for x in lines[1:]:
                print(x)
        sys.stdout.flush()
    if pool:
        pool.close()
        pool.join()
    print("check_cli: %d cases, %d failed, %d near-tie, %.1fs (seed %d, %s)" % (
        len(work), nfail, nnear, time.time() - t0, a.seed, tool))
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
