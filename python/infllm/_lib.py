"""ctypes view of libinfllm (include/infllm.h): the structs, the function prototypes, the error
funnel that turns a status into a Python exception carrying the library's message, and the
per-thread cache of contexts.

Where the library comes from, first match wins:
  1. the environment variable INFLLM_LIB (a path to libinfllm.so);
  2. libinfllm.so next to this file (what `pip install ./python` bundles);
  3. build/libinfllm.so of the source tree this package sits in (`make python`, PYTHONPATH=python).
"""

import ctypes
import os
import threading

# ==== enums (values as in infllm.h) ====

STATUS_NAMES = ("OK", "INVALID_ARG", "SHAPE", "DTYPE", "UNSUPPORTED", "OUT_OF_MEMORY", "DEVICE",
                "CAPACITY", "IO", "BAD_FORMAT", "INTERNAL")
F64, F32, F16, BF16, I32 = range(5)
DTYPE_NAMES = {"f64": F64, "f32": F32, "f16": F16, "bf16": BF16, "i32": I32}
BACKENDS = {"ref": 0, "cpu": 1, "cuda": 2}
MODE_DENSE, MODE_SPARSE = 0, 1
LSE_MODES = {"approx": 0, "exact": 1}
MAX_DIMS = 4


class Tensor(ctypes.Structure):
    """struct ifl_tensor: a descriptor; it does not own (or keep alive) its data."""
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_int64 * MAX_DIMS), ("stride", ctypes.c_int64 * MAX_DIMS)]


class CtxParams(ctypes.Structure):
    _fields_ = [("backend", ctypes.c_int), ("n_threads", ctypes.c_int), ("simd", ctypes.c_int),
                ("check_finite", ctypes.c_int), ("cuda_stream", ctypes.c_void_p)]


class CSparseConfig(ctypes.Structure):
    _fields_ = [("block_size", ctypes.c_int32), ("kernel_size", ctypes.c_int32),
                ("kernel_stride", ctypes.c_int32), ("coarse_kernel_size", ctypes.c_int32),
                ("coarse_kernel_stride", ctypes.c_int32), ("init_blocks", ctypes.c_int32),
                ("window_size", ctypes.c_int32), ("topk", ctypes.c_int32),
                ("dense_len", ctypes.c_int64), ("lse_mode", ctypes.c_int), ("scale", ctypes.c_double)]


class Batch(ctypes.Structure):
    _fields_ = [("n_seqs", ctypes.c_int32), ("cu_seqlens_q", ctypes.POINTER(ctypes.c_int32)),
                ("cu_seqlens_k", ctypes.POINTER(ctypes.c_int32))]


class KVCacheParams(ctypes.Structure):
    _fields_ = [("capacity", ctypes.c_int64), ("n_seqs", ctypes.c_int32),
                ("n_heads_kv", ctypes.c_int32), ("head_dim", ctypes.c_int32),
                ("dtype", ctypes.c_int), ("cfg", CSparseConfig)]


# ==== loading ====

def _library_path():
    env = os.environ.get("INFLLM_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    bundled = os.path.join(here, "libinfllm.so")
    if os.path.exists(bundled):
        return bundled
    tree = os.path.join(os.path.dirname(os.path.dirname(here)), "build", "libinfllm.so")
    if os.path.exists(tree):
        return tree
    raise ImportError("infllm: libinfllm.so not found: set INFLLM_LIB, run `make python` in the "
                      "source tree, or `pip install ./python`")


P = ctypes.POINTER
_c = ctypes
_T = P(Tensor)
_CTX = _c.c_void_p
_CFG = P(CSparseConfig)
_B = P(Batch)
# name: (restype, argtypes)
_PROTOTYPES = {
    "ifl_status_str": (_c.c_char_p, [_c.c_int]),
    "ifl_version": (_c.c_char_p, []),
    "ifl_backend_available": (_c.c_int, [_c.c_int]),
    "ifl_ctx_params_default": (CtxParams, []),
    "ifl_ctx_create": (_c.c_int, [P(CtxParams), P(_CTX)]),
    "ifl_ctx_destroy": (None, [_CTX]),
    "ifl_ctx_errmsg": (_c.c_char_p, [_CTX]),
    "ifl_ctx_threads": (_c.c_int, [_CTX]),
    "ifl_sparse_config_default": (CSparseConfig, []),
    "ifl_sparse_config_check": (_c.c_int, [_CTX, _CFG]),
    "ifl_compressed_len": (_c.c_int64, [_c.c_int64, _c.c_int32, _c.c_int32]),
    "ifl_select_width": (_c.c_int64, [_CFG, _c.c_int64]),
    "ifl_compress_keys": (_c.c_int, [_CTX, _CFG, _B, _T, _T, _T]),
    "ifl_select": (_c.c_int, [_CTX, _CFG, _B, _T, _T, _T]),
    "ifl_sparse_attn_fwd": (_c.c_int, [_CTX, _CFG, _B, _T, _T, _T, _T, _T, _T]),
    "ifl_dense_attn_fwd": (_c.c_int, [_CTX, _CFG, _B, _T, _T, _T, _T, _T]),
    "ifl_infllmv2_fwd": (_c.c_int, [_CTX, _CFG, _B, _T, _T, _T, _T, _T, _T, P(_c.c_int)]),
    "ifl_sparse_attn_bwd": (_c.c_int, [_CTX, _CFG, _B] + [_T] * 10),
    "ifl_dense_attn_bwd": (_c.c_int, [_CTX, _CFG, _B] + [_T] * 9),
    "ifl_kv_cache_params_default": (KVCacheParams, []),
    "ifl_kv_cache_create": (_c.c_int, [_CTX, P(KVCacheParams), P(_c.c_void_p)]),
    "ifl_kv_cache_destroy": (None, [_c.c_void_p]),
    "ifl_kv_cache_len": (_c.c_int64, [_c.c_void_p, _c.c_int32]),
    "ifl_kv_cache_bytes": (_c.c_size_t, [_c.c_void_p]),
    "ifl_kv_cache_append": (_c.c_int, [_CTX, _c.c_void_p, _c.c_int32, _T, _T]),
    "ifl_kv_cache_truncate": (_c.c_int, [_CTX, _c.c_void_p, _c.c_int32, _c.c_int64]),
    "ifl_kv_cache_attn": (_c.c_int, [_CTX, _c.c_void_p, _c.c_int32, _T, _T, _T, _T, P(_c.c_int)]),
}


def _load():
    path = _library_path()
    lib = ctypes.CDLL(path)
    for name, (res, args) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib, path


lib, LIBRARY_PATH = _load()


# ==== errors ====

def exception_for(status, message):
    """The Python exception of a failed call: bad values and shapes are ValueError, a wrong dtype
    TypeError, no memory MemoryError, anything else (unsupported, device, capacity) RuntimeError.
    .status holds the library's status name."""
    name = STATUS_NAMES[status] if 0 <= status < len(STATUS_NAMES) else "UNKNOWN"
    cls = {"INVALID_ARG": ValueError, "SHAPE": ValueError, "DTYPE": TypeError,
           "OUT_OF_MEMORY": MemoryError}.get(name, RuntimeError)
    err = cls(message)
    err.status = name
    return err


def check(ctx, status):
    """Raises the exception of a non-OK status with the context's message."""
    if status != 0:
        msg = lib.ifl_ctx_errmsg(ctx.handle).decode("utf-8", "replace")
        raise exception_for(status, msg or lib.ifl_status_str(status).decode())


# ==== contexts ====

class Context:
    """One ifl_ctx, destroyed with the object. Contexts are not thread-safe, so each thread gets
    its own (see context())."""

    def __init__(self, backend, n_threads=0, cuda_stream=None):
        p = lib.ifl_ctx_params_default()
        p.backend = BACKENDS[backend]
        p.n_threads = n_threads
        p.cuda_stream = cuda_stream
        h = ctypes.c_void_p()
        st = lib.ifl_ctx_create(ctypes.byref(p), ctypes.byref(h))
        if st != 0:
            why = lib.ifl_status_str(st).decode()
            if backend == "cuda" and STATUS_NAMES[st] in ("DEVICE", "UNSUPPORTED"):
                why += (" (no usable GPU, or this libinfllm.so was built without CUDA=1: %s)"
                        % LIBRARY_PATH)
            raise exception_for(st, "ifl_ctx_create(backend=%s): %s" % (backend, why))
        self.handle = h
        self.backend = backend
        self._destroy = lib.ifl_ctx_destroy  # kept so __del__ works during interpreter shutdown

    def __del__(self):
        h, self.handle = getattr(self, "handle", None), None
        if h:
            self._destroy(h)


_local = threading.local()
_settings = {"n_threads": 0}


def set_num_threads(n):
    """Worker threads of the cpu backend's contexts made from now on (0 = all cores)."""
    if int(n) < 0:
        raise ValueError("set_num_threads: n=%d, expected >= 0" % n)
    _settings["n_threads"] = int(n)
    _local.__dict__.clear()


def context(backend, cuda_stream=None):
    """This thread's context for a backend (and, on cuda, for a caller's stream)."""
    if backend not in BACKENDS:
        raise ValueError("backend=%r, expected one of %s" % (backend, ", ".join(BACKENDS)))
    cache = _local.__dict__.setdefault("contexts", {})
    key = (backend, cuda_stream)
    ctx = cache.get(key)
    if ctx is None:
        ctx = cache[key] = Context(backend, _settings["n_threads"], cuda_stream)
    return ctx


def backend_available(backend):
    """True when this libinfllm build has the backend ("ref", "cpu", "cuda")."""
    return bool(lib.ifl_backend_available(BACKENDS[backend]))


def version():
    return lib.ifl_version().decode()
