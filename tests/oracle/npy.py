"""Minimal .npy reader/writer (format v1.0 / v2.0), standard library only.

Supported dtypes: <f2 <f4 <f8 <i4 (also '|' / '=' byte-order marks on a
little-endian host), C order only.  Arrays are handled as (flat list, shape):

    data, shape, descr = load("Q.npy")        # data: list of float/int, row-major
    save("O.npy", data, shape, "<f4")

float16 goes through struct's 'e' format (round to nearest even on write).
"""

import ast
import struct
import sys
from array import array

MAGIC = b"\x93NUMPY"

# descr (without byte-order char) -> (struct code, item size, array code or None)
_TYPES = {
    "f2": ("e", 2, None),
    "f4": ("f", 4, "f"),
    "f8": ("d", 8, "d"),
    "i4": ("i", 4, None),   # array('i') item size is platform dependent; checked below
}


def _norm_descr(descr):
    """'<f4' -> 'f4'; rejects big-endian and unsupported types."""
    if not isinstance(descr, str) or len(descr) < 2:
        raise ValueError("unsupported dtype descr %r" % (descr,))
    order, kind = descr[0], descr[1:]
    if order == ">":
        raise ValueError("big-endian .npy not supported: %r" % descr)
    if order not in "<|=":
        kind = descr
    if kind not in _TYPES:
        raise ValueError("unsupported dtype descr %r" % descr)
    return kind


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def load(path):
    """Read a .npy file. Returns (flat list, shape tuple, descr like '<f4')."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:6] != MAGIC:
        raise ValueError("%s: not a .npy file" % path)
    major = raw[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", raw, 8)
        off = 10
    elif major in (2, 3):
        (hlen,) = struct.unpack_from("<I", raw, 8)
        off = 12
    else:
        raise ValueError("%s: unsupported .npy version %d" % (path, major))
    header = raw[off:off + hlen].decode("latin1")
    off += hlen
    meta = ast.literal_eval(header)
    if meta.get("fortran_order", False):
        raise ValueError("%s: Fortran order not supported" % path)
    shape = tuple(int(s) for s in meta["shape"])
    kind = _norm_descr(meta["descr"])
    code, size, acode = _TYPES[kind]
    n = _prod(shape)
    body = raw[off:off + n * size]
    if len(body) != n * size:
        raise ValueError("%s: truncated data (%d of %d bytes)" % (path, len(body), n * size))
    if acode is not None and sys.byteorder == "little":
        a = array(acode)
        a.frombytes(body)
        data = a.tolist()
    else:
        data = list(struct.unpack("<%d%s" % (n, code), body))
    return data, shape, "<" + kind


def save(path, data, shape, descr="<f4"):
    """Write flat row-major `data` with `shape` as .npy v1.0 (v2.0 if the header is huge)."""
    kind = _norm_descr(descr)
    code, size, acode = _TYPES[kind]
    shape = tuple(int(s) for s in shape)
    n = _prod(shape)
    if len(data) != n:
        raise ValueError("save %s: %d values for shape %s" % (path, len(data), shape))
    if len(shape) == 1:
        shp = "(%d,)" % shape[0]
    else:
        shp = "(" + ", ".join(str(s) for s in shape) + ")"
    d = "{'descr': '<%s', 'fortran_order': False, 'shape': %s, }" % (kind, shp)
    # header + magic(6) + version(2) + len(2 or 4) must be a multiple of 64, ending in '\n'
    for major, lsize in ((1, 2), (2, 4)):
        pre = 6 + 2 + lsize
        total = pre + len(d) + 1
        pad = (-total) % 64
        hdr = d + " " * pad + "\n"
        if major == 2 or len(hdr) < 65536:
            break
    out = bytearray(MAGIC)
    out += bytes([major, 0])
    out += struct.pack("<H" if major == 1 else "<I", len(hdr))
    out += hdr.encode("latin1")
    if kind == "i4":
        out += struct.pack("<%di" % n, *[int(x) for x in data])
    elif acode is not None and sys.byteorder == "little":
        out += array(acode, [float(x) for x in data]).tobytes()
    else:
        out += struct.pack("<%d%s" % (n, code), *[float(x) for x in data])
    with open(path, "wb") as f:
        f.write(out)


def round_to(descr, values):
    """Round float values through the storage type of `descr` (what a save/load would give)."""
    kind = _norm_descr(descr)
    if kind == "f8":
        return [float(v) for v in values]
    code = _TYPES[kind][0]
    n = len(values)
    return list(struct.unpack("<%d%s" % (n, code), struct.pack("<%d%s" % (n, code), *values)))


# ---- nesting helpers: flat row-major list <-> nested lists ----

def nest(data, shape):
    """Flat row-major list -> nested lists of `shape` (innermost level are lists)."""
    if len(shape) == 0:
        return data[0]
    if len(shape) == 1:
        return list(data)
    inner = _prod(shape[1:])
    return [nest(data[k * inner:(k + 1) * inner], shape[1:]) for k in range(shape[0])]


def flatten(x):
    """Nested lists -> (flat list, shape)."""
    shape = []
    y = x
    while isinstance(y, list):
        shape.append(len(y))
        if not y:
            break
        y = y[0]
    out = []

    def rec(z, depth):
        if depth == len(shape) - 1:
            out.extend(z)
        else:
            for w in z:
                rec(w, depth + 1)
    if shape:
        rec(x, 0)
    return out, tuple(shape)
