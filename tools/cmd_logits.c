/* SPDX-License-Identifier: MIT
 *
 * cmd_logits.c -- `infllm logits`: runs a checkpoint over a token sequence (prefill in chunks
 * through the KV caches) and writes the logits of every position as a float32 .npy
 * [n_tokens, vocab]. What the model tests compare against their float64 oracle.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "npy.h"

#include "../runtime/model.h"
#include "../runtime/readfile.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: infllm logits --model DIR --tokens FILE --out L.npy [options]\n"
    "\n"
    "Runs the checkpoint in DIR over the token ids in FILE and writes the logits of every\n"
    "position, float32 [n_tokens, vocab], to L.npy.\n"
    "\n"
    "  --model DIR           checkpoint directory (config.json, model.safetensors or an index)\n"
    "  --tokens FILE         token ids: whitespace-separated integers, or a .npy int32/int64 vector\n"
    "  --out FILE            output .npy\n"
    "  --attention MODE      auto (the sparse_config decides; dense without one), dense, sparse\n"
    "  --threads N           worker threads (0 = all cores)\n"
    "  --chunk N             tokens per prefill chunk (512); the caches switch to sparse when\n"
    "                        their length reaches dense_len, so the chunking decides which\n"
    "                        positions run sparse, as in the reference implementation\n"
    "  --kv-dtype T          auto (bf16 for 16-bit weights, f32 for f32), bf16, f32\n";

/* The token ids of FILE: a 1-D .npy of '<i4' / '<i8' (the strict reader of npy.c), or text:
 * decimal integers separated by ASCII whitespace, nothing else (a NUL byte or any other character
 * is refused with its offset). At most RT_MAX_TOKENS_BYTES are read. */
static int read_tokens(const char *path, int32_t **out, int64_t *n, char *err, size_t errlen) {
    char  *buf;
    size_t size;
    *out = NULL;
    *n   = 0;
    if (rt_read_file(path, RT_MAX_TOKENS_BYTES, &buf, &size, err, errlen) != 0) return -1;
    int32_t *tok = NULL;
    int64_t  cnt = 0;
    if (size >= 6 && memcmp(buf, "\x93NUMPY", 6) == 0) {
        struct npy_array a;
        if (npy_parse(buf, size, path, 1, &a, err, errlen) != 0) goto fail;
        if (a.ndim != 1 || a.count < 1 || (a.dtype != IFL_DTYPE_I32 && !a.int64)) {
            snprintf(err, errlen, "%s: expected a non-empty 1-D int32 or int64 .npy vector", path);
            goto fail;
        }
        tok = malloc(sizeof *tok * (size_t)a.count);
        if (!tok) goto oom;
        const unsigned char *d = (const unsigned char *)buf + a.offset;
        for (int64_t i = 0; i < a.count; i++) {
            int64_t v = 0;
            for (size_t b = 0; b < a.esize; b++) v |= (int64_t)((uint64_t)d[(size_t)i * a.esize + b] << (8 * b));
            if (a.esize == 4) v = (int32_t)(uint32_t)v;
            if (v < 0 || v > INT32_MAX) {
                snprintf(err, errlen, "%s: token %lld has the id %lld", path, (long long)i, (long long)v);
                goto fail;
            }
            tok[i] = (int32_t)v;
        }
        cnt = a.count;
    } else {
        int64_t cap = 0;
        size_t  i   = 0;
        for (;;) {
            while (i < size && isspace((unsigned char)buf[i])) i++;
            if (i == size) break;
            size_t start = i;
            int64_t v    = 0;
            while (i < size && isdigit((unsigned char)buf[i]) && v <= INT32_MAX) v = v * 10 + (buf[i++] - '0');
            if (i == start || v > INT32_MAX || (i < size && !isspace((unsigned char)buf[i]))) {
                size_t bad = i == start || v > INT32_MAX ? start : i;
                snprintf(err, errlen, "%s: token %lld at byte %zu: %s", path, (long long)cnt, bad,
                         v > INT32_MAX ? "larger than 2^31-1" : buf[bad] == '\0' ? "a NUL byte, expected an integer"
                                                                               : "expected a non-negative integer");
                goto fail;
            }
            if (cnt == cap) {
                cap         = cap ? 2 * cap : 256;
                int32_t *nt = realloc(tok, sizeof *tok * (size_t)cap);
                if (!nt) goto oom;
                tok = nt;
            }
            tok[cnt++] = (int32_t)v;
        }
        if (cnt == 0) {
            snprintf(err, errlen, "%s: no token ids", path);
            goto fail;
        }
    }
    free(buf);
    *out = tok, *n = cnt;
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", path);
fail:
    free(tok), free(buf);
    return -1;
}

int cmd_logits(int argc, char **argv) {
    const char *model = NULL, *tokens = NULL, *out = NULL, *attention = "auto", *kv = "auto";
    long long   threads = 0, chunk = 512;
    struct cli_opt opts[] = {
        {"model", CLI_STR, &model, 0, 0, 0},     {"tokens", CLI_STR, &tokens, 0, 0, 0},
        {"out", CLI_STR, &out, 0, 0, 0},         {"attention", CLI_STR, &attention, 0, 0, 0},
        {"threads", CLI_INT, &threads, 0, 1024, 0}, {"chunk", CLI_INT, &chunk, 1, 1 << 20, 0},
        {"kv-dtype", CLI_STR, &kv, 0, 0, 0},
    };
    int rc = cli_parse("logits", argc, argv, 2, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc == CLI_HELP) {
        fputs(usage, stdout);
        return CLI_OK;
    }
    if (rc != CLI_OK) return rc;
    if (!model || !tokens || !out) {
        cli_error("logits", "--model, --tokens and --out are required (see 'infllm logits --help')");
        return CLI_USAGE;
    }
    struct rt_model_options o = rt_model_options_default();
    o.n_threads               = (int)threads;
    if (strcmp(attention, "auto") == 0) o.attention = RT_ATTN_AUTO;
    else if (strcmp(attention, "dense") == 0) o.attention = RT_ATTN_DENSE;
    else if (strcmp(attention, "sparse") == 0) o.attention = RT_ATTN_SPARSE;
    else {
        cli_error("logits", "--attention %s: expected auto, dense or sparse", attention);
        return CLI_USAGE;
    }
    if (strcmp(kv, "auto") == 0) o.kv_dtype = RT_KV_AUTO;
    else if (strcmp(kv, "bf16") == 0) o.kv_dtype = RT_KV_BF16;
    else if (strcmp(kv, "f32") == 0) o.kv_dtype = RT_KV_F32;
    else {
        cli_error("logits", "--kv-dtype %s: expected auto, bf16 or f32", kv);
        return CLI_USAGE;
    }
    char           err[1024];
    struct out_set set; /* the output is checked before the model is loaded */
    out_set_init(&set);
    int oi = out_set_add(&set, "out", out, err, sizeof err);
    if (oi < 0 || out_set_check_input(&set, "tokens", tokens, err, sizeof err) != 0) {
        cli_error("logits", "%s", err);
        out_set_abort(&set);
        return oi == -1 ? CLI_FAILURE : CLI_USAGE;
    }
    int32_t *tok = NULL;
    int64_t  n   = 0;
    if (read_tokens(tokens, &tok, &n, err, sizeof err) != 0) {
        cli_error("logits", "%s", err);
        out_set_abort(&set);
        return CLI_FAILURE;
    }
    struct rt_model *m;
    if (rt_model_load(model, &o, &m, err, sizeof err) != 0) {
        cli_error("logits", "%s", err);
        free(tok);
        out_set_abort(&set);
        return CLI_FAILURE;
    }
    const int64_t V   = rt_model_config(m)->vocab_size;
    float        *lg  = malloc(sizeof(float) * (size_t)(n * V));
    rc                = CLI_FAILURE;
    if (!lg) {
        cli_error("logits", "out of memory for %lld x %lld logits", (long long)n, (long long)V);
        goto done;
    }
    if (n > rt_model_capacity(m)) {
        cli_error("logits", "%s: %lld tokens exceed the context of %lld", tokens, (long long)n,
                  (long long)rt_model_capacity(m));
        goto done;
    }
    for (int64_t done = 0; done < n; done += chunk) {
        int64_t k = n - done < chunk ? n - done : chunk;
        if (rt_model_forward(m, tok + done, k, lg + done * V, err, sizeof err) != 0) {
            cli_error("logits", "%s", err);
            goto done;
        }
    }
    int64_t shape[2] = {n, V};
    if (npy_write(&set, oi, IFL_DTYPE_F32, 2, shape, lg, err, sizeof err) != 0 ||
        out_set_commit(&set, err, sizeof err) != 0) {
        cli_error("logits", "%s", err);
        goto done;
    }
    rc = CLI_OK;
done:
    out_set_abort(&set);
    free(lg);
    free(tok);
    rt_model_free(m);
    return rc;
}
