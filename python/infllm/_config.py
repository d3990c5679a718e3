"""SparseConfig: InfLLM-V2's knobs (struct ifl_sparse_config), MiniCPM4.1's values by default."""

import dataclasses
from typing import Optional

from . import _lib


@dataclasses.dataclass(frozen=True)
class SparseConfig:
    """Every field of struct ifl_sparse_config (window is its window_size). dense_len=-1 means
    always sparse; scale=None means 1/sqrt(head_dim). Checked by the library when used (or by
    check()), so an invalid value raises ValueError with the library's message."""
    block_size: int = 64
    kernel_size: int = 32
    kernel_stride: int = 16
    coarse_kernel_size: int = 128
    coarse_kernel_stride: int = 64
    init_blocks: int = 1
    window: int = 2048
    topk: int = 64
    dense_len: int = 8192
    lse_mode: str = "approx"
    scale: Optional[float] = None

    def to_c(self):
        """The struct ifl_sparse_config of this config."""
        c = _lib.CSparseConfig()
        ints = self.as_list()
        for name, value in zip(_INT_FIELDS, ints):
            setattr(c, "window_size" if name == "window" else name, value)
        c.lse_mode = ints[-1]
        c.scale = 0.0 if self.scale is None else float(self.scale)
        return c

    def check(self):
        """Raises ValueError when the library refuses this config; returns self otherwise."""
        ctx = _lib.context("ref")
        _lib.check(ctx, _lib.lib.ifl_sparse_config_check(ctx.handle, self.to_c()))
        return self

    def select_width(self, n_keys):
        """Width of a selection row for a sequence of n_keys keys (ifl_select_width)."""
        return int(_lib.lib.ifl_select_width(self.to_c(), int(n_keys)))

    def as_list(self):
        """The integer fields in struct order plus lse_mode as an int: the form torch ops take.
        Plain Python (no ctypes), so torch.compile traces it; the library checks the values."""
        if self.lse_mode not in _lib.LSE_MODES:
            raise ValueError("SparseConfig.lse_mode=%r, expected 'approx' or 'exact'" % (self.lse_mode,))
        return [_int_field(self, name) for name in _INT_FIELDS] + [_lib.LSE_MODES[self.lse_mode]]

    @classmethod
    def from_list(cls, ints, scale):
        """Inverse of as_list() (scale 0 or None means 1/sqrt(D))."""
        kw = dict(zip(_INT_FIELDS, (int(x) for x in ints[:9])))
        lse = {v: k for k, v in _lib.LSE_MODES.items()}[int(ints[9])]
        return cls(lse_mode=lse, scale=(float(scale) or None) if scale is not None else None, **kw)


_INT_FIELDS = ("block_size", "kernel_size", "kernel_stride", "coarse_kernel_size", "coarse_kernel_stride",
               "init_blocks", "window", "topk", "dense_len")


def _int_field(cfg, name):
    lo, hi = (-2**63, 2**63 - 1) if name == "dense_len" else (-2**31, 2**31 - 1)
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
        raise TypeError("SparseConfig.%s=%r, expected an int" % (name, v))
    v = int(v)
    if not lo <= v <= hi:
        raise ValueError("SparseConfig.%s=%d does not fit the library's field" % (name, v))
    return v


def resolve(config):
    """None means the defaults; anything else must be a SparseConfig."""
    if config is None:
        return SparseConfig()
    if not isinstance(config, SparseConfig):
        raise TypeError("config must be an infllm.SparseConfig, got %s" % type(config).__name__)
    return config
