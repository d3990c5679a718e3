/* SPDX-License-Identifier: MIT
 *
 * cmd_model_init.c -- `infllm model-init`: a randomly initialised MiniCPM4 checkpoint in the Hugging
 * Face layout (config.json, model.safetensors or shards + index, generation_config.json, and a
 * small tokenizer.json / tokenizer_config.json) for tests and benchmarks (runtime/model_init.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "outfile.h"

#include "../runtime/model_init.h"
#include "../runtime/tokenizer.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: infllm model-init --out DIR --config NAME [options]\n"
    "\n"
    "Writes a randomly initialised checkpoint of a MiniCPM4 shape to DIR, which must be new or\n"
    "empty (the files are written to DIR.tmp.XXXXXX, renamed to DIR when all are complete):\n"
    "config.json with the keys and values of the real config, generation_config.json, the\n"
    "weights as model.safetensors (sharded with model.safetensors.index.json above 5 GB), and a\n"
    "small tokenizer (tokenizer.json, tokenizer_config.json). Tensors are generated and written\n"
    "one piece at a time (little memory even for 8B; progress on stderr for large writes).\n"
    "\n"
    "  --out DIR             output directory\n"
    "  --config NAME         tiny (2 layers, hidden 64, 4 heads, 2 KV heads, vocab 320),\n"
    "                        minicpm4-0.5b, minicpm4-8b\n"
    "  --seed N              seed of the weights (1)\n"
    "  --dtype bf16|f16|f32  weight dtype (bf16)\n"
    "  --sparse              add a sparse_config (InfLLM-V2): the documented block for the real\n"
    "                        shapes; for tiny block 16, kernel 8/4, window 64, topk 4, dense_len 128\n"
    "  --max-position N      override max_position_embeddings (LongRoPE then uses the long\n"
    "                        factors and its attention factor when N exceeds the original)\n"
    "  --kv-heads N          override num_key_value_heads (must divide the heads)\n"
    "  --tied 0|1            override tie_word_embeddings\n"
    "  --shard-kb N          shard the weights in files of about N KiB (0: only above 5 GB)\n";

struct progress {
    double last;
    int    shown;
};

static void show_progress(void *user, int64_t done, int64_t total) {
    struct progress *p = user;
    double           t = cli_now();
    if (total < (64ll << 20) || (t - p->last < 1.0 && done < total)) return;
    p->last  = t;
    p->shown = 1;
    /* on a terminal one line rewritten in place, elsewhere (a log) a line each time */
    int tty = isatty(fileno(stderr));
    fprintf(stderr, "%sinfllm model-init: %.1f of %.1f GB written", tty ? "\r" : "", done / 1e9, total / 1e9);
    if (done == total || !tty) fputc('\n', stderr);
}

int cmd_model_init(int argc, char **argv) {
    const char *out = NULL, *config = NULL, *dtype = "bf16";
    long long   seed = 1, max_pos = 0, shard_kb = 0, kv_heads = 0, tied = -1;
    int         sparse = 0;
    struct cli_opt opts[] = {
        {"out", CLI_STR, &out, 0, 0, 0},
        {"config", CLI_STR, &config, 0, 0, 0},
        {"seed", CLI_INT, &seed, 0, (long long)1 << 62, 0},
        {"dtype", CLI_STR, &dtype, 0, 0, 0},
        {"sparse", CLI_FLAG, &sparse, 0, 0, 0},
        {"max-position", CLI_INT, &max_pos, 1, (long long)1 << 30, 0},
        {"shard-kb", CLI_INT, &shard_kb, 0, (long long)1 << 40, 0},
        {"kv-heads", CLI_INT, &kv_heads, 1, 1 << 20, 0},
        {"tied", CLI_INT, &tied, 0, 1, 0},
    };
    int rc = cli_parse("model-init", argc, argv, 2, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc == CLI_HELP) {
        fputs(usage, stdout);
        return CLI_OK;
    }
    if (rc != CLI_OK) return rc;
    if (!out || !config) {
        cli_error("model-init", "--out and --config are required (see 'infllm model-init --help')");
        return CLI_USAGE;
    }
    struct rt_init_options o = rt_init_options_default();
    if (strcmp(dtype, "bf16") == 0) o.dtype = RT_W_BF16;
    else if (strcmp(dtype, "f16") == 0) o.dtype = RT_W_F16;
    else if (strcmp(dtype, "f32") == 0) o.dtype = RT_W_F32;
    else {
        cli_error("model-init", "--dtype %s: expected bf16, f16 or f32", dtype);
        return CLI_USAGE;
    }
    char             err[1024];
    struct rt_config cfg;
    if (rt_init_preset(config, sparse, &cfg, err, sizeof err) != 0) {
        cli_error("model-init", "--config: %s", err);
        return CLI_USAGE;
    }
    if (max_pos) cfg.max_position_embeddings = max_pos;
    if (tied >= 0) cfg.tie_word_embeddings = (int)tied;
    if (kv_heads) {
        if (cfg.num_attention_heads % kv_heads) {
            cli_error("model-init", "--kv-heads %lld does not divide the %lld heads", kv_heads,
                      (long long)cfg.num_attention_heads);
            return CLI_USAGE;
        }
        cfg.num_key_value_heads = kv_heads;
    }
    struct progress pr = {cli_now(), 0};
    o.seed             = (uint64_t)seed;
    o.shard_bytes      = shard_kb * 1024;
    o.progress         = show_progress;
    o.user             = &pr;
    /* the checkpoint is built in a temporary folder and renamed to --out when complete */
    char *tmp;
    if (out_dir_begin("out", out, &tmp, err, sizeof err) != 0) {
        cli_error("model-init", "%s", err);
        return CLI_FAILURE;
    }
    char path[4096];
    int  ok = rt_init_write(tmp, &cfg, &o, err, sizeof err) == 0;
    if (!ok && pr.shown) fputc('\n', stderr);
    ok = ok && snprintf(path, sizeof path, "%s/tokenizer.json", tmp) > 0 &&
         tok_write_small(path, (int32_t)cfg.vocab_size, err, sizeof err) == 0;
    ok = ok && snprintf(path, sizeof path, "%s/tokenizer_config.json", tmp) > 0 &&
         tok_write_small_config(path, (int32_t)cfg.vocab_size, err, sizeof err) == 0;
    if (!ok) {
        out_dir_abort(tmp);
        cli_error("model-init", "%s", err);
        return CLI_FAILURE;
    }
    if (out_dir_commit("out", out, tmp, err, sizeof err) != 0) {
        cli_error("model-init", "%s", err);
        return CLI_FAILURE;
    }
    return CLI_OK;
}
