/* SPDX-License-Identifier: MIT
 *
 * tensor.c -- tensor descriptors, dtype sizes and the f16/bf16 <-> f32 conversions.
 * All conversions to a narrower type round to nearest, ties to even; NaN stays NaN.
 */
#include "internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

size_t ifl_dtype_size(enum ifl_dtype dtype) {
    switch (dtype) {
    case IFL_DTYPE_F64: return 8;
    case IFL_DTYPE_F32: return 4;
    case IFL_DTYPE_F16: return 2;
    case IFL_DTYPE_BF16: return 2;
    case IFL_DTYPE_I32: return 4;
    }
    return 0;
}

const char *ifl_dtype_name(enum ifl_dtype dtype) {
    switch (dtype) {
    case IFL_DTYPE_F64: return "f64";
    case IFL_DTYPE_F32: return "f32";
    case IFL_DTYPE_F16: return "f16";
    case IFL_DTYPE_BF16: return "bf16";
    case IFL_DTYPE_I32: return "i32";
    }
    return "?";
}

int ifl__dtype_is_float(enum ifl_dtype dtype) {
    return dtype == IFL_DTYPE_F64 || dtype == IFL_DTYPE_F32 || dtype == IFL_DTYPE_F16 ||
           dtype == IFL_DTYPE_BF16;
}

struct ifl_tensor ifl_tensor_make(void *data, enum ifl_dtype dtype, int ndim, const int64_t *shape) {
    struct ifl_tensor t;
    memset(&t, 0, sizeof t);
    t.data  = data;
    t.dtype = dtype;
    t.ndim  = ndim < 0 ? 0 : (ndim > IFL_MAX_DIMS ? IFL_MAX_DIMS : ndim);
    int64_t stride = 1;
    for (int i = t.ndim - 1; i >= 0; i--) {
        t.shape[i]  = shape ? shape[i] : 0;
        t.stride[i] = stride;
        stride *= t.shape[i];
    }
    return t;
}

/* ---- scalar conversions ---- */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float ifl_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t ifl_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float ifl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e    = (h >> 10) & 0x1fu;
    uint32_t m    = h & 0x3ffu;
    if (e == 0) { /* zero or subnormal: m * 2^-24 is exact in f32 */
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t ifl_f32_to_f16(float f) {
    uint32_t x    = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);   /* NaN */
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  /* rounds past 65504: inf */
    if (absx < 0x38800000u) {                                    /* below 2^-14: subnormal */
        if (absx < 0x33000000u) return (uint16_t)sign;          /* below 2^-25: zero */
        uint32_t e     = absx >> 23;
        uint32_t mant  = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* value / 2^-24 = mant * 2^(e-126) */
        uint32_t r     = mant >> shift;
        uint32_t rem   = mant & ((1u << shift) - 1u);
        uint32_t half  = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r   = (absx - 0x38000000u) >> 13; /* rebias the exponent from 127 to 15 */
    uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}

/* ---- element access ---- */

double ifl__load(const struct ifl_tensor *t, int64_t off) {
    switch (t->dtype) {
    case IFL_DTYPE_F64: return ((const double *)t->data)[off];
    case IFL_DTYPE_F32: return ((const float *)t->data)[off];
    case IFL_DTYPE_F16: return ifl_f16_to_f32(((const uint16_t *)t->data)[off]);
    case IFL_DTYPE_BF16: return ifl_bf16_to_f32(((const uint16_t *)t->data)[off]);
    case IFL_DTYPE_I32: return ((const int32_t *)t->data)[off];
    }
    return 0.0;
}

double ifl__round(enum ifl_dtype dtype, double x) {
    switch (dtype) {
    case IFL_DTYPE_F32: return (float)x;
    case IFL_DTYPE_F16: return ifl_f16_to_f32(ifl_f32_to_f16((float)x));
    case IFL_DTYPE_BF16: return ifl_bf16_to_f32(ifl_f32_to_bf16((float)x));
    default: return x;
    }
}

void ifl__store(const struct ifl_tensor *t, int64_t off, double x) {
    switch (t->dtype) {
    case IFL_DTYPE_F64: ((double *)t->data)[off] = x; break;
    case IFL_DTYPE_F32: ((float *)t->data)[off] = (float)x; break;
    case IFL_DTYPE_F16: ((uint16_t *)t->data)[off] = ifl_f32_to_f16((float)x); break;
    case IFL_DTYPE_BF16: ((uint16_t *)t->data)[off] = ifl_f32_to_bf16((float)x); break;
    case IFL_DTYPE_I32: ((int32_t *)t->data)[off] = (int32_t)x; break;
    }
}

/* Index of the first NaN or infinity among the n contiguous elements at element offset off, or -1.
 * By bits: an all-ones exponent (a plain loop the compiler vectorises; the scan runs over whole
 * K and V tensors when check_finite is set). */
static int64_t first_nonfinite_in_row(const struct ifl_tensor *t, int64_t off, int64_t n) {
    switch (t->dtype) {
    case IFL_DTYPE_F32: {
        const uint32_t *x = (const uint32_t *)t->data + off;
        for (int64_t i = 0; i < n; i++)
            if ((x[i] & 0x7f800000u) == 0x7f800000u) return i;
        return -1;
    }
    case IFL_DTYPE_BF16: {
        const uint16_t *x = (const uint16_t *)t->data + off;
        for (int64_t i = 0; i < n; i++)
            if ((x[i] & 0x7f80u) == 0x7f80u) return i;
        return -1;
    }
    case IFL_DTYPE_F16: {
        const uint16_t *x = (const uint16_t *)t->data + off;
        for (int64_t i = 0; i < n; i++)
            if ((x[i] & 0x7c00u) == 0x7c00u) return i;
        return -1;
    }
    case IFL_DTYPE_F64: {
        const uint64_t *x = (const uint64_t *)t->data + off;
        for (int64_t i = 0; i < n; i++)
            if ((x[i] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull) return i;
        return -1;
    }
    default: return -1;
    }
}

int ifl_tensor_find_nonfinite(const struct ifl_tensor *t, int64_t pos[IFL_MAX_DIMS]) {
    if (t == NULL || t->data == NULL || !ifl__dtype_is_float(t->dtype) || t->ndim < 1 ||
        t->ndim > IFL_MAX_DIMS)
        return 0;
    int64_t idx[IFL_MAX_DIMS] = {0, 0, 0, 0};
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] <= 0) return 0;
    const int     last = t->ndim - 1;
    const int64_t n    = t->shape[last];
    for (;;) { /* row by row over every dimension but the last, which is contiguous */
        int64_t off = 0;
        for (int i = 0; i < last; i++) off += idx[i] * t->stride[i];
        int64_t at = -1;
        if (t->stride[last] == 1) {
            at = first_nonfinite_in_row(t, off, n);
        } else { /* a strided or broadcast last dimension: element by element */
            for (int64_t j = 0; j < n && at < 0; j++)
                if (!isfinite(ifl__load(t, off + j * t->stride[last]))) at = j;
        }
        if (at >= 0) {
            idx[last] = at;
            if (pos)
                for (int i = 0; i < IFL_MAX_DIMS; i++) pos[i] = i < t->ndim ? idx[i] : 0;
            return 1;
        }
        int i = last - 1;
        while (i >= 0 && ++idx[i] == t->shape[i]) idx[i--] = 0;
        if (i < 0) return 0;
    }
}
