/* SPDX-License-Identifier: MIT
 *
 * npy.h -- reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0), for the tool.
 * Little-endian float16/float32/float64/int32 in C order only; every size in the header is
 * checked against the file before anything is read.
 */
#ifndef INFLLM_NPY_H
#define INFLLM_NPY_H

#include "infllm.h"
#include "outfile.h"

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS     8
#define NPY_MAX_DIMS_STR "8"
#define NPY_MAX_ELEMENTS ((int64_t)1 << 40) /* a larger shape is refused before any arithmetic */

struct npy_array {
    enum ifl_dtype dtype; /* IFL_DTYPE_F16, F32, F64 or I32 (and I32 when int64 is set) */
    int            int64; /* the elements are '<i8' (only where npy_parse was asked to accept it) */
    size_t         esize; /* bytes per element */
    int            ndim;
    int64_t        shape[NPY_MAX_DIMS];
    int64_t        count;  /* number of elements */
    size_t         offset; /* where the data starts in the file */
    void          *data;   /* count elements, C order; owned, free with npy_free (npy_read only) */
};

/* Reads path (a regular file; see runtime/readfile.h) into *a: '<f2', '<f4', '<f8' or '<i4'.
 * Returns 0, or -1 with a message naming the file and the problem (with its byte offset when the
 * header is malformed) in err. */
int npy_read(const char *path, struct npy_array *a, char *err, size_t err_len);

/* The same without the data (a->data NULL): the shape and dtype, to plan memory first. */
int npy_read_header(const char *path, struct npy_array *a, char *err, size_t err_len);

/* Parses the .npy file held in buf[0, size) (name is for messages): the strict header (the dict
 * numpy writes, see npy.c) and a data size that matches the shape exactly. accept_i8: also
 * '<i8'. Sets every field but data (the elements are at buf + a->offset). Returns 0 or -1. */
int npy_parse(const void *buf, size_t size, const char *name, int accept_i8, struct npy_array *a, char *err,
              size_t err_len);

/* Writes the elements of dtype (F32, F64 or I32) with the given shape, C order, as output idx of
 * set (outfile.h: nothing reaches the path before out_set_commit). The shape has at most 6
 * dimensions. Returns 0, or -1 with a message in err. */
int npy_write(struct out_set *set, int idx, enum ifl_dtype dtype, int ndim, const int64_t *shape,
              const void *data, char *err, size_t err_len);

void npy_free(struct npy_array *a);

/* "[2, 3, 4]" into buf. */
const char *npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t len);

#endif /* INFLLM_NPY_H */
