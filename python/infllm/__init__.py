"""infllm: Python bindings of libinfllm, the C implementation of InfLLM-V2 sparse attention.

numpy arrays on the ref and cpu backends here; torch tensors (cpu and cuda, with autograd and
torch.library custom ops) in infllm.torch; the official InfLLM-V2 functions in infllm.compat.
Every refused call raises ValueError, TypeError, MemoryError or RuntimeError carrying the library's
message (and .status, the library's status name).
"""

from . import _kvcache
from ._config import SparseConfig
from ._lib import LIBRARY_PATH, backend_available, set_num_threads, version
from ._numpy import (NumpyAdapter, attention, attention_backward, compress_keys, dense_attention,
                     dense_attention_backward, select_blocks, sparse_attention,
                     sparse_attention_backward)

__version__ = version()


class KVCache(_kvcache.KVCache):
    __doc__ = _kvcache.KVCache.__doc__ + """
    This one takes and returns numpy arrays (uint16 arrays hold bfloat16 words)."""

    def __init__(self, capacity, n_heads_kv, head_dim, *, n_seqs=1, dtype="bf16", config=None,
                 backend="cpu"):
        super().__init__(capacity, n_heads_kv, head_dim, n_seqs=n_seqs, dtype=dtype, config=config,
                         backend=backend, adapter=NumpyAdapter("bf16"))


__all__ = ["SparseConfig", "KVCache", "attention", "attention_backward", "compress_keys",
           "dense_attention", "dense_attention_backward", "select_blocks", "sparse_attention",
           "sparse_attention_backward", "backend_available", "set_num_threads", "version",
           "LIBRARY_PATH"]
