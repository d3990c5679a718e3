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

/* whitespace-separated integers, or a 1-D .npy of '<i4' / '<i8' */
static int read_tokens(const char *path, int32_t **out, int64_t *n, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 0) size = 0;
    unsigned char *buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(buf);
        snprintf(err, errlen, "%s: cannot read", path);
        return -1;
    }
    fclose(f);
    buf[size] = 0;
    int32_t *tok = NULL;
    int64_t  cnt = 0;
    if (size >= 10 && memcmp(buf, "\x93NUMPY", 6) == 0) {
        size_t hl  = buf[6] == 1 ? (size_t)buf[8] | (size_t)buf[9] << 8 : 0;
        size_t off = 10;
        if (buf[6] >= 2 && size >= 12) {
            hl  = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
            off = 12;
        }
        if (hl == 0 || off + hl > (size_t)size) goto bad_npy;
        char hdr[1024];
        snprintf(hdr, sizeof hdr, "%.*s", (int)(hl < sizeof hdr - 1 ? hl : sizeof hdr - 1), (char *)buf + off);
        int         i8 = strstr(hdr, "'<i8'") != NULL, i4 = strstr(hdr, "'<i4'") != NULL;
        const char *sh = strstr(hdr, "'shape': (");
        if ((!i8 && !i4) || strstr(hdr, "'fortran_order': True") || !sh) goto bad_npy;
        char *end;
        long long len = strtoll(sh + 10, &end, 10);
        if (*end == ',') end++;
        while (*end == ' ') end++;
        if (end == sh + 10 || len < 1 || *end != ')') goto bad_npy; /* one dimension only */
        size_t es = i8 ? 8 : 4, data = off + hl;
        if ((size_t)len > ((size_t)size - data) / es) goto bad_npy;
        tok = malloc(sizeof *tok * (size_t)len);
        if (!tok) goto oom;
        for (long long i = 0; i < len; i++) {
            int64_t v = 0;
            for (size_t b = 0; b < es; b++) v |= (int64_t)buf[data + (size_t)i * es + b] << (8 * b);
            if (es == 4) v = (int32_t)(uint32_t)v;
            if (v < 0 || v > INT32_MAX) {
                snprintf(err, errlen, "%s: token %lld has the id %lld", path, i, (long long)v);
                free(tok), free(buf);
                return -1;
            }
            tok[i] = (int32_t)v;
        }
        cnt = len;
    } else {
        int64_t cap = 0;
        char   *p   = (char *)buf;
        for (;;) {
            while (*p && isspace((unsigned char)*p)) p++;
            if (!*p) break;
            char     *end;
            long long v = strtoll(p, &end, 10);
            if (end == p || (*end && !isspace((unsigned char)*end)) || v < 0 || v > INT32_MAX) {
                snprintf(err, errlen, "%s: token %lld: '%.20s' is not a non-negative integer", path,
                         (long long)cnt, p);
                free(tok), free(buf);
                return -1;
            }
            if (cnt == cap) {
                cap         = cap ? 2 * cap : 256;
                int32_t *nt = realloc(tok, sizeof *tok * (size_t)cap);
                if (!nt) goto oom;
                tok = nt;
            }
            tok[cnt++] = (int32_t)v;
            p          = end;
        }
        if (cnt == 0) {
            snprintf(err, errlen, "%s: no token ids", path);
            free(tok), free(buf);
            return -1;
        }
    }
    free(buf);
    *out = tok, *n = cnt;
    return 0;
bad_npy:
    snprintf(err, errlen, "%s: expected a 1-D little-endian int32 or int64 .npy vector in C order", path);
    free(tok), free(buf);
    return -1;
oom:
    snprintf(err, errlen, "%s: out of memory", path);
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
    char     err[1024];
    int32_t *tok = NULL;
    int64_t  n   = 0;
    if (read_tokens(tokens, &tok, &n, err, sizeof err) != 0) {
        cli_error("logits", "%s", err);
        return CLI_FAILURE;
    }
    struct rt_model *m;
    if (rt_model_load(model, &o, &m, err, sizeof err) != 0) {
        cli_error("logits", "%s", err);
        free(tok);
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
    if (npy_write(out, IFL_DTYPE_F32, 2, shape, lg, err, sizeof err) != 0) {
        cli_error("logits", "%s", err);
        goto done;
    }
    rc = CLI_OK;
done:
    free(lg);
    free(tok);
    rt_model_free(m);
    return rc;
}
