/* SPDX-License-Identifier: MIT
 *
 * ref_backend.c -- the reference backend's vtable and its float64 load/store helpers.
 */
#include "ref.h"

#include <stdlib.h>

const struct ifl__backend ifl__backend_ref = {
    .name          = "ref",
    .compress_keys = ref_compress_keys,
    .select        = ref_select,
    .sparse_fwd    = ref_sparse_fwd,
    .dense_fwd     = ref_dense_fwd,
    .sparse_bwd    = ref_sparse_bwd,
    .dense_bwd     = ref_dense_bwd,
};

static int64_t dim(const struct ifl_tensor *t, int i) { return i < t->ndim ? t->shape[i] : 1; }

double *ref_load(const struct ifl_tensor *t) {
    if (t == NULL) return NULL;
    int64_t n0 = dim(t, 0), n1 = dim(t, 1), n2 = dim(t, 2);
    double *x  = malloc((size_t)(n0 * n1 * n2) * sizeof *x);
    if (x == NULL) return NULL;
    for (int64_t a = 0; a < n0; a++)
        for (int64_t b = 0; b < n1; b++)
            for (int64_t c = 0; c < n2; c++) x[(a * n1 + b) * n2 + c] = ifl__load(t, ifl__off3(t, a, b, c));
    return x;
}

void ref_store_rows(const struct ifl_tensor *t, const double *x, int64_t row0, int64_t n_rows) {
    int64_t n1 = dim(t, 1), n2 = dim(t, 2);
    for (int64_t a = row0; a < row0 + n_rows; a++)
        for (int64_t b = 0; b < n1; b++)
            for (int64_t c = 0; c < n2; c++) ifl__store(t, ifl__off3(t, a, b, c), x[(a * n1 + b) * n2 + c]);
}
