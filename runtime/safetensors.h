/* SPDX-License-Identifier: MIT
 *
 * safetensors.h -- the safetensors format (minicpm4.md §3.3): a reader that validates every
 * byte of the header before anything is used (so it can be fed arbitrary bytes: st_parse is
 * what the fuzzer calls), memory-mapped files, and a streaming writer.
 *
 * Layout: u64 little-endian N, N bytes of JSON ({"name": {"dtype": "BF16", "shape": [..],
 * "data_offsets": [begin, end]}, ..., optional "__metadata__": {string: string}}), then the
 * data buffer. Rules enforced: N <= 100,000,000 and 8 + N <= file size; the header is a JSON
 * object starting with '{' (trailing spaces allowed); every tensor has exactly the keys dtype,
 * shape, data_offsets; known dtype; shape entries are non-negative integers; end - begin =
 * product(shape) * dtype size without overflow; no duplicate names; the tensors cover the data
 * buffer exactly (no hole, no overlap, nothing after the last one).
 */
#ifndef INFLLM_RT_SAFETENSORS_H
#define INFLLM_RT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define ST_MAX_DIMS       8
#define ST_MAX_HEADER_LEN 100000000ull

enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64,
    ST_N_DTYPES
};

struct st_tensor {
    char         *name;
    enum st_dtype dtype;
    int           ndim;
    int64_t       shape[ST_MAX_DIMS];
    uint64_t      begin, end; /* data_offsets, relative to the data buffer */
    const void   *data;       /* start of the bytes (inside the parsed buffer) */
};

struct st_file {
    char             *path;      /* a copy of the name given (messages) */
    struct st_tensor *tensors;   /* sorted by name */
    int64_t           n_tensors;
    uint64_t          header_len;
    const uint8_t    *base;      /* the whole file */
    size_t            size;
    void             *map;       /* st_open's mapping (NULL after st_parse) */
};

/* Validates buf (a whole .safetensors file of len bytes) and indexes its tensors; `name` is used
 * in messages ("NAME: tensor 'x': ..."), NULL means "<buffer>". The tensors point into buf, which
 * must outlive out. Returns 0, or -1 with a message (out is then empty; st_close is still safe). */
int st_parse(const void *buf, size_t len, const char *name, struct st_file *out, char *err,
             size_t errlen);

/* Maps path read-only and parses it. */
int  st_open(const char *path, struct st_file *out, char *err, size_t errlen);
void st_close(struct st_file *f); /* frees and unmaps; a zeroed or failed file is fine */

/* The tensor of that name, or NULL. */
const struct st_tensor *st_find(const struct st_file *f, const char *name);

size_t      st_dtype_size(enum st_dtype dt);
const char *st_dtype_name(enum st_dtype dt); /* "BF16", ... */
int         st_dtype_parse(const char *s, enum st_dtype *out); /* 0 ok, -1 unknown */
int64_t     st_numel(const struct st_tensor *t);

/* ---- writer: declare every tensor first, then stream their bytes in declaration order ---- */

struct st_writer_tensor {
    const char   *name;
    enum st_dtype dtype;
    int           ndim;
    int64_t       shape[ST_MAX_DIMS];
};

struct st_writer {
    FILE    *fp;
    char    *path, *tmp_path;
    uint64_t expected, written; /* data bytes */
};

/* Writes the header (tensors laid out in the order given; metadata {"format": "pt"}) to
 * PATH.tmp; st_writer_close renames it to path once every byte was written. */
int st_writer_open(struct st_writer *w, const char *path, const struct st_writer_tensor *t,
                   int64_t n, char *err, size_t errlen);
int st_writer_write(struct st_writer *w, const void *data, size_t bytes, char *err, size_t errlen);
/* Finishes (ok != 0) or abandons (ok == 0: removes the temporary file). */
int st_writer_close(struct st_writer *w, int ok, char *err, size_t errlen);

#endif /* INFLLM_RT_SAFETENSORS_H */
