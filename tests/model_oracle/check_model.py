#!/usr/bin/env python3
"""End-to-end check of the model runtime against the float64 oracle (model_ref.py).

For each case: `infllm model-init` writes a tiny random checkpoint, `infllm logits` runs it, and
model_ref.py computes the same logits in float64 from the files alone; the largest difference
must stay within the case's tolerance (see README.md for how the tolerances are derived):
    KV cache f32 (f32 weights):   max|C - ref| <= 2^-17 * max|ref|
    KV cache bf16:                max|C - ref| <= 2^-10 * max|ref|
Sparse cases also check that sparse attention mattered: the dense float64 logits differ from
the sparse ones by far more than the tolerance.

usage: check_model.py --infllm build/infllm [--keep DIR]
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
sys.path.insert(0, HERE)
import npy  # noqa: E402
import model_ref  # noqa: E402

# name, model-init flags, tokens, chunk, --attention
CASES = [
    ("f32-dense", ["--dtype", "f32"], 48, 48, "auto"),
    ("bf16-dense-tied-G4", ["--dtype", "bf16", "--tied", "1", "--kv-heads", "1"], 48, 48, "auto"),
    ("f16-sharded-G1", ["--dtype", "f16", "--kv-heads", "4", "--shard-kb", "100"], 40, 16, "auto"),
    ("f32-sparse", ["--dtype", "f32", "--sparse"], 256, 256, "auto"),
    ("bf16-sparse-chunked", ["--dtype", "bf16", "--sparse"], 200, 64, "auto"),
    ("f32-forced-sparse", ["--dtype", "f32", "--sparse"], 150, 150, "sparse"),
]


def run_case(infllm, work, name, flags, n, chunk, attention, seed):
    d = os.path.join(work, name)
    subprocess.run([infllm, "model-init", "--out", d, "--config", "tiny", "--seed", str(seed)] + flags,
                   check=True)
    rng = random.Random(seed)
    toks = [rng.randrange(320) for _ in range(n)]
    tpath = os.path.join(work, name + ".txt")
    with open(tpath, "w") as f:
        f.write(" ".join(map(str, toks)) + "\n")
    out = os.path.join(work, name + ".npy")
    subprocess.run([infllm, "logits", "--model", d, "--tokens", tpath, "--out", out, "--chunk", str(chunk),
                    "--attention", attention], check=True)
    got, shape, _ = npy.load(out)
    m = model_ref.Model(d, attention)
    ref = m.logits(toks, chunk)
    V = len(ref[0])
    ok = shape == (n, V)
    flat = [v for row in ref for v in row]
    big = max(abs(v) for v in flat)
    err = max(abs(a - b) for a, b in zip(got, flat)) if ok else float("inf")
    tol = big * (2.0 ** -17 if m.kv == "f32" else 2.0 ** -10)
    msg = "%-22s n=%3d chunk=%3d kv=%-4s max|ref| %.3g  max|C-ref| %.3g  tol %.3g" % (
        name, n, chunk, m.kv, big, err, tol)
    ok = ok and err <= tol
    if "sparse" in name:  # sparse attention must have changed something
        dense = model_ref.Model(d, "dense").logits(toks, chunk)
        diff = max(abs(a - b) for ra, rb in zip(dense, ref) for a, b in zip(ra, rb))
        msg += "  |dense-sparse| %.3g" % diff
        ok = ok and diff > 100 * tol
    print(("ok    " if ok else "FAIL  ") + msg, flush=True)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infllm", required=True)
    ap.add_argument("--keep", default=None, help="keep the files in this directory")
    ap.add_argument("--filter", default="")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="infllm_model_")
    os.makedirs(work, exist_ok=True)
    fails = 0
    for i, (name, flags, n, chunk, att) in enumerate(CASES):
        if a.filter in name:
            fails += not run_case(a.infllm, work, name, flags, n, chunk, att, 10 + i)
    if not a.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    print("%d case(s) failed" % fails if fails else "all model oracle cases passed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
