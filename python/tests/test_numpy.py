"""The numpy front end: bitwise against the C library (through the infllm tool, which calls the
same functions from C), packed batches, strided views, dtypes, the KV cache and the config's
struct layout."""

import ctypes
import dataclasses
import os
import subprocess

import numpy as np
import pytest

import infllm
from infllm import _lib
from conftest import SMALL

TOOL = os.path.join(os.path.dirname(infllm.LIBRARY_PATH), "infllm")


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def qkv(seed=0, tq=200, tk=200, hq=4, hkv=2, d=32, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rand(rng, tq, hq, d, dtype=dtype), rand(rng, tk, hkv, d, dtype=dtype), rand(rng, tk, hkv, d, dtype=dtype)


def tool_flags(cfg):
    return ["--block-size", cfg.block_size, "--kernel-size", cfg.kernel_size, "--kernel-stride",
            cfg.kernel_stride, "--coarse-kernel-size", cfg.coarse_kernel_size, "--coarse-kernel-stride",
            cfg.coarse_kernel_stride, "--init-blocks", cfg.init_blocks, "--window", cfg.window,
            "--topk", cfg.topk, "--dense-len", cfg.dense_len, "--lse-mode", cfg.lse_mode]


def run_tool(tmp_path, cmd, arrays, outputs, extra):
    if not os.access(TOOL, os.X_OK):
        pytest.skip("the infllm tool is not next to %s (run `make`)" % infllm.LIBRARY_PATH)
    args = [TOOL, cmd]
    for name, a in arrays.items():
        np.save(tmp_path / (name + ".npy"), a)
        args += ["--" + name, str(tmp_path / (name + ".npy"))]
    for name in outputs:
        args += ["--" + name, str(tmp_path / (name + ".npy"))]
    subprocess.run(args + [str(x) for x in extra], check=True, capture_output=True)
    return [np.load(tmp_path / (name + ".npy")) for name in outputs]


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ==== bitwise against the C library ====

@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_forward_and_backward_bitwise_as_the_tool(tmp_path, backend, mode):
    q, k, v = qkv(1)
    dout = rand(np.random.default_rng(9), *q.shape)
    flags = tool_flags(SMALL) + ["--backend", backend, "--mode", mode]
    t_out, t_lse, t_dq, t_dk, t_dv = run_tool(tmp_path, "grad", {"q": q, "k": k, "v": v, "dout": dout},
                                              ["out", "lse", "dq", "dk", "dv"], flags)
    if backend == "ref":  # the tool computes in float64 on ref (out and lse feed its backward),
        q, k, v, dout = (x.astype(np.float64) for x in (q, k, v, dout))  # then writes float32 files
    out, lse, blocks = infllm.attention(q, k, v, config=SMALL, mode=mode, backend=backend,
                                        return_lse=True, return_blocks=True)
    grads = infllm.attention_backward(q, k, v, out, lse, dout, blocks=blocks, config=SMALL, mode=mode,
                                      backend=backend)
    for got, want in zip((out, lse) + grads, (t_out, t_lse, t_dq, t_dk, t_dv)):
        assert same_bits(got.astype(np.float32), want)


def test_selection_as_the_tool(tmp_path):
    q, k, v = qkv(2, tq=150, tk=300)
    (t_sel,) = run_tool(tmp_path, "attn", {"q": q, "k": k, "v": v}, ["out", "blocks-out"],
                        tool_flags(SMALL) + ["--backend", "cpu", "--mode", "sparse"])[1:]
    sel = infllm.select_blocks(q, k, config=SMALL, past=150)
    assert same_bits(sel, t_sel)
    _, blocks = infllm.sparse_attention(q, k, v, config=SMALL, past=150, return_blocks=True)
    assert same_bits(blocks, sel)


# ==== batches, views, dtypes ====

def test_packed_batch_equals_separate_calls():
    q, k, v = qkv(3, tq=170, tk=250)
    cu_q, cu_k = np.array([0, 50, 170], np.int32), np.array([0, 80, 250], np.int32)
    cfg = dataclasses.replace(SMALL, dense_len=100)
    out, modes = infllm.attention(q, k, v, config=cfg, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, return_mode=True)
    assert modes == ["dense", "sparse"]
    first = infllm.attention(q[:50], k[:80], v[:80], config=cfg, past=30)
    second = infllm.attention(q[50:], k[80:], v[80:], config=cfg, past=50)
    assert same_bits(out, np.concatenate([first, second]))


def test_views_into_a_fused_qkv_array_need_no_copy():
    rng = np.random.default_rng(4)
    fused = rand(rng, 120, 8, 32)                       # per token: 4 query heads, then k, v (2 each)
    q, k, v = fused[:, :4], fused[:, 4:6], fused[:, 6:8]
    assert not q.flags.c_contiguous
    out = infllm.attention(q, k, v, config=SMALL, mode="sparse")
    want = infllm.attention(*(np.ascontiguousarray(x) for x in (q, k, v)), config=SMALL, mode="sparse")
    assert same_bits(out, want)


def test_views_the_library_cannot_take_are_refused():
    q, k, v = qkv(5)
    with pytest.raises(ValueError, match="stride"):
        infllm.attention(q[:, :, ::2], k[:, :, ::2], v[:, :, ::2], config=SMALL)
    with pytest.raises(ValueError, match="stride"):
        infllm.attention(q[::-1], k, v, config=SMALL)


@pytest.mark.parametrize("dtype", ["f64", "f32", "f16", "bf16"])
def test_dtypes_against_float64(dtype):
    q, k, v = qkv(6, dtype=np.float64)
    want, blocks = infllm.attention(q, k, v, config=SMALL, backend="ref", return_blocks=True)
    if dtype == "bf16":
        to = lambda x: (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)  # truncation: fine here
        back = lambda x: (x.astype(np.uint32) << 16).view(np.float32)
        ins, flag, u = [to(x) for x in (q, k, v)], "bf16", 2.0 ** -8
    else:
        np_t = {"f64": np.float64, "f32": np.float32, "f16": np.float16}[dtype]
        ins, flag, back = [x.astype(np_t) for x in (q, k, v)], None, lambda x: x
        u = {"f64": 2.0 ** -53, "f32": 2.0 ** -24, "f16": 2.0 ** -11}[dtype]
    exact = infllm.attention(*(back(x).astype(np.float64) for x in ins), config=SMALL, backend="ref", blocks=blocks)
    out = infllm.attention(*ins, config=SMALL, backend="cpu" if dtype != "f64" else "ref", blocks=blocks, dtype=flag)
    assert out.dtype == ins[0].dtype
    # the inputs' rounding is taken out by `exact`; what is left is compute and output rounding
    err = np.abs(back(out).astype(np.float64) - exact).max()
    assert err <= max(16 * u, 1e-12) * np.abs(exact).max() + 4 * u, err
    assert np.abs(want).max() > 0


def test_compress_keys_are_window_means():
    k = qkv(7, tk=100)[1]
    c1, c2 = infllm.compress_keys(k, config=SMALL, backend="ref")
    assert c1.shape == ((100 - 16) // 8 + 1, 2, 32) and c2.shape == ((100 - 32) // 16 + 1, 2, 32)
    np.testing.assert_allclose(c1[3], k[24:40].astype(np.float64).mean(0), rtol=1e-6, atol=1e-6)
    assert infllm.compress_keys(k[:10], config=SMALL) == (None, None)


# ==== the KV cache ====

def test_kv_cache_decode_gives_the_prefill_rows():
    q, k, v = qkv(8, tq=120, tk=120)
    full = infllm.attention(q, k, v, config=SMALL, mode="sparse")
    with infllm.KVCache(capacity=128, n_heads_kv=2, head_dim=32, dtype="f32", config=SMALL) as cache:
        cache.append(k[:100], v[:100])
        rows = [cache.attention(q[90:100])]
        for t in range(100, 120):
            cache.append(k[t:t + 1], v[t:t + 1])
            out, mode = cache.attention(q[t:t + 1], return_mode=True)
            rows.append(out)
        assert mode == "sparse" and len(cache) == 120 and cache.nbytes > 2 * 128 * 2 * 32 * 4
        assert same_bits(np.concatenate(rows), full[90:])
        cache.truncate(110)
        assert cache.len(0) == 110
        with pytest.raises(RuntimeError, match="capacity") as e:
            cache.append(k[:20], v[:20])
        assert e.value.status == "CAPACITY"
    with pytest.raises(ValueError, match="closed"):
        cache.append(k[:1], v[:1])
    cache.close()  # twice is harmless


# ==== the structs match the C library ====

def test_defaults_and_struct_layout_match_the_library():
    c = _lib.lib.ifl_sparse_config_default()
    assert infllm.SparseConfig().as_list() == [c.block_size, c.kernel_size, c.kernel_stride, c.coarse_kernel_size,
                                               c.coarse_kernel_stride, c.init_blocks, c.window_size, c.topk,
                                               c.dense_len, c.lse_mode]
    assert c.scale == 0.0
    p = _lib.lib.ifl_kv_cache_params_default()
    assert (p.capacity, p.n_seqs, p.n_heads_kv, p.head_dim, p.dtype) == (65536, 1, 2, 128, _lib.BF16)
    assert p.cfg.topk == 64 and p.cfg.dense_len == 8192
    assert ctypes.sizeof(_lib.Tensor) == 8 + 4 + 4 + 8 * 8
    assert infllm.SparseConfig().select_width(10000) == 64 + 2048 // 64
