/* SPDX-License-Identifier: MIT
 *
 * cmd_logits.c -- `infllm logits`: runs a checkpoint over a token sequence (prefill in chunks
 * through the KV caches) and writes the logits of every position as a float32 .npy
 * [n_tokens, vocab]. What the model tests compare against their float64 oracle.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "npy.h"
#include "tokens.h"

#include "../runtime/model.h"
#include "../runtime/readfile.h"

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

/* The token ids of FILE (tokens.h), at most RT_MAX_TOKENS_BYTES. */
static int read_tokens(const char *path, int32_t **out, int64_t *n, char *err, size_t errlen) {
    char  *buf;
    size_t size;
    *out = NULL;
    *n   = 0;
    if (rt_read_file(path, RT_MAX_TOKENS_BYTES, &buf, &size, err, errlen) != 0) return -1;
    int rc = tokens_parse(buf, size, path, out, n, err, errlen);
    free(buf);
    return rc;
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
