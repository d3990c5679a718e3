/* SPDX-License-Identifier: MIT
 *
 * npy.h -- reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0), for the tool.
 * Little-endian float16/float32/float64/int32 in C order only; every size in the header is
 * checked against the file before anything is read.
 */
#ifndef INFLLM_NPY_H
#define INFLLM_NPY_H

#include "infllm.h"

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8

struct npy_array {
    enum ifl_dtype dtype; /* IFL_DTYPE_F16, F32, F64 or I32 */
    int            ndim;
    int64_t        shape[NPY_MAX_DIMS];
    int64_t        count; /* number of elements */
    void          *data;  /* count elements, C order; owned, free with npy_free */
};

/* Reads path into *a. Returns 0, or -1 with a message naming the file and the problem in err. */
int npy_read(const char *path, struct npy_array *a, char *err, size_t err_len);

/* Writes count elements of dtype (F32 or I32 here) with the given shape, C order. Writes to a
 * temporary file first and renames it, so a failure never leaves a half-written file at path.
 * Returns 0, or -1 with a message in err. */
int npy_write(const char *path, enum ifl_dtype dtype, int ndim, const int64_t *shape,
              const void *data, char *err, size_t err_len);

void npy_free(struct npy_array *a);

/* "[2, 3, 4]" into buf. */
const char *npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t len);

#endif /* INFLLM_NPY_H */
