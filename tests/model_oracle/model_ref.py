#!/usr/bin/env python3
"""Independent float64 implementation of the MiniCPM4 forward pass, pure Python stdlib.

Written for the tests from /work/shared/docs/minicpm4.md (§2, §3.3, §3.4, §4, §5) only; it shares
no code with the C runtime.  It reads config.json and model.safetensors (or the sharded index)
itself and computes the logits of every position in float64:

    x0 = scale_emb * E[tok]
    per layer: a = RMSNorm(x); q, k, v = a Wq^T, a Wk^T, a Wv^T; LongRoPE (split-half pairs,
               fp32 angle recipe of §2.4); attention over the cache; x += r * att Wo^T;
               m = RMSNorm(x); x += r * (silu(m Wg^T) * m Wu^T) Wd^T      r = scale_depth/sqrt(L)
    logits = (RMSNorm(x) / w) W_head^T                                       w = H/dim_model_base

Attention: dense causal softmax, or the InfLLM-V2 sparse path, through the project's float64
spec oracle (tests/oracle/oracle.py: compressed keys, stage-1 selection, stage-2 attention).
Which path a chunk takes follows the KV-cache rule: sparse iff the cache length after appending
the chunk is >= dense_len (dense_len -1: always).  The only non-float64 steps mirror what the
runtime's KV cache stores: post-RoPE keys, values and the queries are rounded to the cache's
storage type (bf16 or f32), and the compressed keys are rounded likewise (spec §2.1).

As a module: model_ref.logits(model_dir, tokens, attention="auto", kv="auto", chunk=None)
As a CLI:    model_ref.py --model DIR --tokens FILE --out REF.npy [--attention ...] [--chunk N]
"""

import argparse
import json
import math
import os
import struct
import sys
from operator import mul

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
import npy  # noqa: E402  (tests/oracle/npy.py)
import oracle  # noqa: E402


# ---- number formats ----

def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def bf16_bits_to_float(b):
    return struct.unpack("<f", struct.pack("<I", b << 16))[0]


def round_bf16(x):
    """float64 -> nearest bfloat16 (ties to even), via float32 as PyTorch does for an f32 value."""
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    if (u & 0x7F800000) == 0x7F800000:
        return x
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", u))[0]


def rounder(kind):
    if kind == "bf16":
        return lambda v: [round_bf16(x) for x in v]
    return lambda v: [f32(x) for x in v]


# Let the spec oracle round compressed keys to bf16 too ("bf16" is not an .npy descr).
_round_to = npy.round_to
npy.round_to = lambda descr, values: (rounder("bf16")(values) if descr == "bf16"
                                      else _round_to(descr, values))


# ---- safetensors (minicpm4.md §3.3) ----

SIZES = {"F32": 4, "BF16": 2, "F16": 2}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        raw = data[base + b:base + e]
        count = (e - b) // SIZES[t["dtype"]]
        if t["dtype"] == "F32":
            vals = list(struct.unpack("<%df" % count, raw))
        elif t["dtype"] == "F16":
            vals = list(struct.unpack("<%de" % count, raw))
        else:
            vals = [bf16_bits_to_float(h) for h in struct.unpack("<%dH" % count, raw)]
        out[name] = (t["shape"], vals, t["dtype"])
    return out


def read_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        w = {}
        for s in shards:
            w.update(read_safetensors(os.path.join(model_dir, s)))
        return w
    return read_safetensors(os.path.join(model_dir, "model.safetensors"))


def rows(tensor):
    shape, v = tensor[0], tensor[1]
    r, c = shape
    return [v[i * c:(i + 1) * c] for i in range(r)]


# ---- the model ----

class Model:
    def __init__(self, model_dir, attention="auto", kv="auto"):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.c = c
        for key in ("scale_emb", "scale_depth", "dim_model_base"):
            if key not in c:
                raise ValueError("config.json lacks %s" % key)
        self.H = c["hidden_size"]
        self.L = c["num_hidden_layers"]
        self.Hq = c["num_attention_heads"]
        self.Hkv = c.get("num_key_value_heads", self.Hq)
        self.D = self.H // self.Hq
        self.V = c["vocab_size"]
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.r = c["scale_depth"] / math.sqrt(self.L)
        self.w = self.H / c["dim_model_base"]
        w = read_weights(model_dir)
        self.kv = kv if kv != "auto" else ("f32" if w["model.embed_tokens.weight"][2] == "F32" else "bf16")
        self.E = rows(w["model.embed_tokens.weight"])
        tie = c.get("tie_word_embeddings", True)
        self.head = self.E if tie else rows(w["lm_head.weight"])
        self.layers = []
        for l in range(self.L):
            p = "model.layers.%d." % l
            self.layers.append({
                "g_in": w[p + "input_layernorm.weight"][1],
                "g_post": w[p + "post_attention_layernorm.weight"][1],
                "q": rows(w[p + "self_attn.q_proj.weight"]),
                "k": rows(w[p + "self_attn.k_proj.weight"]),
                "v": rows(w[p + "self_attn.v_proj.weight"]),
                "o": rows(w[p + "self_attn.o_proj.weight"]),
                "g": rows(w[p + "mlp.gate_proj.weight"]),
                "u": rows(w[p + "mlp.up_proj.weight"]),
                "d": rows(w[p + "mlp.down_proj.weight"]),
            })
        self.g_final = w["model.norm.weight"][1]
        self._rope_init()
        self._attn_init(attention)

    def _rope_init(self):
        """§2.4: inv_i = f32(1/f32(theta^f32(2i/D))), rext_i = f32(1/f32(ext_i)); s = 1 unless
        max_position_embeddings > original."""
        c, D = self.c, self.D
        theta = c.get("rope_theta", 10000.0)
        rs = c.get("rope_scaling")
        half = D // 2
        self.s = 1.0
        ext = [1.0] * half
        if rs:
            kind = rs.get("rope_type", rs.get("type"))
            if kind == "longrope":
                mp, orig = c["max_position_embeddings"], rs["original_max_position_embeddings"]
                ext = rs["long_factor"] if mp > orig else rs["short_factor"]
                if mp > orig:
                    self.s = math.sqrt(1 + math.log(mp / orig) / math.log(orig))
            elif kind == "linear":
                ext = [rs["factor"]] * half
            else:
                raise ValueError("rope_scaling type %s" % kind)
        self.inv = [f32(1.0 / f32(f32(theta) ** f32(2 * i / D))) for i in range(half)]
        self.rext = [f32(1.0 / f32(e)) for e in ext]
        self.s = f32(self.s)

    def _attn_init(self, attention):
        sc = self.c.get("sparse_config")
        cfg = oracle.Config()  # libinfllm's defaults: 64, 32/16, 1, 2048, 64, 8192
        if sc:
            cfg = oracle.Config(block_size=sc.get("block_size", 64), kernel_size=sc.get("kernel_size", 32),
                                kernel_stride=sc.get("kernel_stride", 16),
                                init_blocks=sc.get("init_blocks", 1), window=sc.get("window_size", 2048),
                                topk=sc.get("topk", 64), dense_len=sc.get("dense_len", 8192))
        cfg.coarse_kernel_size = 4 * cfg.kernel_size    # MiniCPM4.1's coarse kernel rule
        cfg.coarse_kernel_stride = 4 * cfg.kernel_stride
        cfg.lse_mode = "approx"
        cfg.compressed_dtype = "bf16" if self.kv == "bf16" else "<f4"
        if attention == "dense" or (attention == "auto" and not sc):
            cfg.dense_len = 1 << 62
        elif attention == "sparse":
            cfg.dense_len = -1
        self.cfg = cfg

    def rope(self, u, p):
        half = self.D // 2
        out = list(u)
        for i in range(half):
            ang = f32(f32(p * self.rext[i]) * self.inv[i])
            cs, sn = f32(math.cos(ang)) * self.s, f32(math.sin(ang)) * self.s
            x0, x1 = u[i], u[i + half]
            out[i] = x0 * cs - x1 * sn
            out[i + half] = x1 * cs + x0 * sn
        return out

    def rmsnorm(self, x, g, post=1.0):
        s = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + self.eps)
        return [v * s * gv * post for v, gv in zip(x, g)]

    @staticmethod
    def matvec(W, x):
        return [sum(map(mul, row, x)) for row in W]

    def logits(self, tokens, chunk=None):
        """Logits [n][V] of every position; the tokens are appended in chunks of `chunk`
        (None: one chunk), as the runtime's prefill does."""
        D, Hq, Hkv = self.D, self.Hq, self.Hkv
        rnd = rounder(self.kv)
        cache = [([], []) for _ in range(self.L)]  # per layer K, V: [pos][Hkv][D]
        out = []
        n = len(tokens)
        chunk = chunk or n
        for c0 in range(0, n, chunk):
            toks = tokens[c0:c0 + chunk]
            xs = [[self.c["scale_emb"] * v for v in self.E[t]] for t in toks]
            for li, lay in enumerate(self.layers):
                K, V = cache[li]
                Q = []
                for j, x in enumerate(xs):
                    p = c0 + j
                    a = self.rmsnorm(x, lay["g_in"])
                    q, k, v = self.matvec(lay["q"], a), self.matvec(lay["k"], a), self.matvec(lay["v"], a)
                    Q.append([rnd(self.rope(q[h * D:(h + 1) * D], p)) for h in range(Hq)])
                    K.append([rnd(self.rope(k[h * D:(h + 1) * D], p)) for h in range(Hkv)])
                    V.append([rnd(v[h * D:(h + 1) * D]) for h in range(Hkv)])
                res = oracle.attention(Q, K, V, len(K) - len(Q), self.cfg, mode="auto")
                for j, x in enumerate(xs):
                    att = [e for h in range(Hq) for e in res["O"][j][h]]
                    o = self.matvec(lay["o"], att)
                    x = [xv + self.r * ov for xv, ov in zip(x, o)]
                    m = self.rmsnorm(x, lay["g_post"])
                    g, u = self.matvec(lay["g"], m), self.matvec(lay["u"], m)
                    hmid = [gv / (1.0 + math.exp(-gv)) * uv for gv, uv in zip(g, u)]
                    d = self.matvec(lay["d"], hmid)
                    xs[j] = [xv + self.r * dv for xv, dv in zip(x, d)]
            for x in xs:
                h = self.rmsnorm(x, self.g_final, 1.0 / self.w)
                out.append(self.matvec(self.head, h))
        return out


def logits(model_dir, tokens, attention="auto", kv="auto", chunk=None):
    return Model(model_dir, attention, kv).logits(tokens, chunk)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="whitespace-separated token ids")
    ap.add_argument("--out", required=True, help="float64 logits [n, V] (.npy)")
    ap.add_argument("--attention", default="auto", choices=["auto", "dense", "sparse"])
    ap.add_argument("--kv", default="auto", choices=["auto", "bf16", "f32"])
    ap.add_argument("--chunk", type=int, default=None)
    a = ap.parse_args(argv)
    with open(a.tokens) as f:
        toks = [int(t) for t in f.read().split()]
    L = logits(a.model, toks, a.attention, a.kv, a.chunk)
    npy.save(a.out, [v for row in L for v in row], [len(L), len(L[0])], "<f8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
