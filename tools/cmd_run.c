/* SPDX-License-Identifier: MIT
 *
 * cmd_run.c -- `infllm run`: text generation with a MiniCPM4 checkpoint directory. Loads the
 * model (runtime/model.h) and its tokenizer (DIR/tokenizer.json, DIR/tokenizer_config.json),
 * takes sampling defaults from DIR/generation_config.json when present (flags override them),
 * prefills the prompt in chunks with a progress display on stderr, then decodes token by token,
 * streaming text to stdout, until an end token, --max-tokens or the context limit. Speeds go to
 * stderr at the end. Spec: minicpm4.md §6 (tokenizer, template, stop ids), §7 (defaults).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "../runtime/chat.h"
#include "../runtime/model.h"
#include "../runtime/readfile.h"
#include "../runtime/sample.h"
#include "../runtime/tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char run_usage[] =
    "usage: infllm run --model DIR (--prompt TEXT | --prompt-file FILE) [options]\n"
    "\n"
    "Generates text with a MiniCPM4 checkpoint directory (config.json, model.safetensors,\n"
    "tokenizer.json; tokenizer_config.json and generation_config.json when present). The text\n"
    "is streamed to stdout; progress and speeds go to stderr.\n"
    "\n"
    "  --model DIR           the checkpoint directory\n"
    "  --prompt TEXT         the prompt (or --prompt-file FILE; '-' reads stdin)\n"
    "  --chat                wrap the prompt as one user turn of the chat template (ChatML)\n"
    "  --system TEXT         a system message (with --chat)\n"
    "  --no-think            with --chat: append an empty <think></think> block (MiniCPM4.1's\n"
    "                        reasoning-off form; unverified, see docs/tokenizer.md)\n"
    "  --max-tokens N        most tokens to generate (256)\n"
    "  --temperature T       0 = greedy; default generation_config.json's, else 0\n"
    "  --top-p P             nucleus sampling mass in (0, 1]; default generation_config.json's, else 1\n"
    "  --top-k K             0 = off; default generation_config.json's, else 50 when sampling\n"
    "                        (transformers' default), 0 when greedy\n"
    "  --seed S              seed of the sampler (1); the same seed gives the same text\n"
    "  --attention MODE      auto (the sparse_config decides), dense or sparse\n"
    "  --threads N           worker threads (0 = all cores)\n"
    "  --chunk N             prefill chunk in tokens (512)\n"
    "  --context N           KV cache capacity in tokens (0 = max_position_embeddings)\n"
    "\n"
    "Stops at an end token (config.json's and generation_config.json's eos_token_id, the\n"
    "tokenizer's EOS, <|im_end|>), after --max-tokens, or when the context is full.\n"
    "Exit status: 0 ok, 1 failure, 2 usage error.\n";

#define MAX_STOP 32

/* ---- prefill progress on stderr: a bar on a terminal, a line every ~10% otherwise ---- */

struct progress {
    int    tty;
    int    last_decile;
    double t0;
};

static void on_progress(void *user, int64_t done, int64_t total) {
    struct progress *p = user;
    if (p->tty) {
        int width = 30, fill = total > 0 ? (int)(width * done / total) : width;
        fprintf(stderr, "\rprefill [");
        for (int i = 0; i < width; i++) fputc(i < fill ? '=' : i == fill ? '>' : ' ', stderr);
        double dt = cli_now() - p->t0;
        fprintf(stderr, "] %lld/%lld tokens, %.0f tok/s", (long long)done, (long long)total,
                dt > 0 ? (double)done / dt : 0.0);
        if (done == total) fprintf(stderr, "\r%*s\r", 80, "");
    } else {
        int decile = total > 0 ? (int)(10 * done / total) : 10;
        if (decile > p->last_decile && done < total) {
            fprintf(stderr, "infllm run: prefill %lld/%lld tokens\n", (long long)done, (long long)total);
            p->last_decile = decile;
        }
    }
    fflush(stderr);
}

static int is_stop(int32_t id, const int32_t *stop, int n_stop) {
    for (int i = 0; i < n_stop; i++)
        if (stop[i] == id) return 1;
    return 0;
}

static void add_stop(int32_t *stop, int *n_stop, int64_t id) {
    if (id < 0 || id > INT32_MAX || *n_stop >= MAX_STOP || is_stop((int32_t)id, stop, *n_stop)) return;
    stop[(*n_stop)++] = (int32_t)id;
}

int cmd_run(int argc, char **argv) {
    const char *cmd = "run";
    const char *model_dir = NULL, *prompt = NULL, *prompt_file = NULL, *system = NULL, *attention = "auto";
    long long   max_tokens = 256, top_k = 0, seed = 1, threads = 0, chunk = 512, context = 0;
    double      temperature = 0, top_p = 1;
    int         chat = 0, no_think = 0;
    struct cli_opt opts[] = {
        {"model", CLI_STR, &model_dir, 0, 0, 0},
        {"prompt", CLI_STR, &prompt, 0, 0, 0},
        {"prompt-file", CLI_STR, &prompt_file, 0, 0, 0},
        {"chat", CLI_FLAG, &chat, 0, 0, 0},
        {"system", CLI_STR, &system, 0, 0, 0},
        {"no-think", CLI_FLAG, &no_think, 0, 0, 0},
        {"max-tokens", CLI_INT, &max_tokens, 0, (long long)1 << 40, 0},
        {"temperature", CLI_REAL, &temperature, 0, 0, 0},
        {"top-p", CLI_REAL, &top_p, 0, 0, 0},
        {"top-k", CLI_INT, &top_k, 0, (long long)1 << 31, 0},
        {"seed", CLI_INT, &seed, 0, (long long)1 << 62, 0},
        {"attention", CLI_STR, &attention, 0, 0, 0},
        {"threads", CLI_INT, &threads, 0, 4096, 0},
        {"chunk", CLI_INT, &chunk, 1, 1 << 20, 0},
        {"context", CLI_INT, &context, 0, (long long)1 << 40, 0},
    };
    enum { O_MODEL, O_PROMPT, O_PROMPT_FILE, O_CHAT, O_SYSTEM, O_NO_THINK, O_MAX, O_TEMP, O_TOP_P, O_TOP_K };
    int rc = cli_parse(cmd, argc, argv, 2, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc == CLI_HELP) {
        fputs(run_usage, stdout);
        return CLI_OK;
    }
    if (rc != CLI_OK) return rc;
    if (!model_dir) {
        cli_error(cmd, "--model DIR is required");
        return CLI_USAGE;
    }
    if (!prompt == !prompt_file) {
        cli_error(cmd, "give exactly one of --prompt TEXT and --prompt-file FILE");
        return CLI_USAGE;
    }
    if ((system || no_think) && !chat) {
        cli_error(cmd, "--%s needs --chat", system ? "system" : "no-think");
        return CLI_USAGE;
    }
    if (opts[O_TEMP].seen && !(temperature >= 0 && isfinite(temperature))) {
        cli_error(cmd, "--temperature %g: must be a finite number >= 0", temperature);
        return CLI_USAGE;
    }
    if (opts[O_TOP_P].seen && !(top_p > 0 && top_p <= 1)) {
        cli_error(cmd, "--top-p %g: must be in (0, 1]", top_p);
        return CLI_USAGE;
    }
    struct rt_model_options mo = rt_model_options_default();
    mo.n_threads               = (int)threads;
    mo.max_context             = context;
    if (strcmp(attention, "auto") == 0) mo.attention = RT_ATTN_AUTO;
    else if (strcmp(attention, "dense") == 0) mo.attention = RT_ATTN_DENSE;
    else if (strcmp(attention, "sparse") == 0) mo.attention = RT_ATTN_SPARSE;
    else {
        cli_error(cmd, "--attention %s: expected auto, dense or sparse", attention);
        return CLI_USAGE;
    }

    char                err[1024];
    struct rt_gen_config g;
    struct tok         *tok = NULL;
    struct rt_model    *m = NULL;
    struct rt_sampler  *sampler = NULL;
    struct tok_stream  *stream = NULL;
    char               *file_text = NULL, *rendered = NULL;
    int32_t            *ids = NULL;
    float              *logits = NULL;
    rc                        = CLI_FAILURE;

    /* ---- inputs: the prompt, the generation defaults, the tokenizer ---- */
    size_t      text_len = 0;
    const char *text     = prompt;
    if (prompt_file) {
        int bad = strcmp(prompt_file, "-") == 0
                      ? rt_read_stream(stdin, "stdin", RT_MAX_PROMPT_BYTES, &file_text, &text_len, err, sizeof err)
                      : rt_read_file(prompt_file, RT_MAX_PROMPT_BYTES, &file_text, &text_len, err, sizeof err);
        if (bad) {
            cli_error(cmd, "--prompt-file %s", err);
            goto done;
        }
        text = file_text;
    } else
        text_len = strlen(prompt);
    if (rt_gen_config_load(model_dir, &g, err, sizeof err) != 0) {
        cli_error(cmd, "%s", err);
        goto done;
    }
    if (!opts[O_TEMP].seen) temperature = g.do_sample_false ? 0 : g.has_temperature ? g.temperature : 0;
    if (!opts[O_TOP_P].seen) top_p = g.has_top_p ? g.top_p : 1;
    if (!opts[O_TOP_K].seen) top_k = g.has_top_k ? g.top_k : temperature > 0 ? 50 : 0;
    if (!opts[O_MAX].seen && g.has_max_new) max_tokens = g.max_new;
    if (tok_load_dir(model_dir, &tok, err, sizeof err) != 0) {
        cli_error(cmd, "%s", err);
        goto done;
    }
    if (chat) {
        struct rt_chat_msg msgs[2];
        size_t             n = 0;
        if (system) msgs[n++] = (struct rt_chat_msg){"system", system};
        if (memchr(text, 0, text_len)) {
            cli_error(cmd, "the prompt contains a NUL byte, which --chat cannot carry");
            goto done;
        }
        msgs[n++] = (struct rt_chat_msg){"user", text};
        if (rt_chat_render(msgs, n, 1, no_think, &rendered, &text_len, err, sizeof err) != 0) {
            cli_error(cmd, "%s", err);
            goto done;
        }
        text = rendered;
    }
    size_t n_ids;
    if (tok_encode(tok, text, text_len, 1, &ids, &n_ids, err, sizeof err) != 0) {
        cli_error(cmd, "%s", err);
        goto done;
    }
    if (n_ids == 0) {
        cli_error(cmd, "the prompt is empty and the tokenizer adds no BOS: nothing to start from");
        goto done;
    }

    /* ---- the model ---- */
    if (rt_model_load(model_dir, &mo, &m, err, sizeof err) != 0) {
        cli_error(cmd, "%s", err);
        goto done;
    }
    const struct rt_config *cfg = rt_model_config(m);
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= cfg->vocab_size) {
            cli_error(cmd, "token id %d of the prompt is outside the model's vocabulary (%lld): tokenizer.json and "
                           "config.json do not match", (int)ids[i], (long long)cfg->vocab_size);
            goto done;
        }
    int64_t capacity = rt_model_capacity(m);
    if ((int64_t)n_ids > capacity) {
        cli_error(cmd, "the prompt has %zu tokens but the context holds %lld (--context, max_position_embeddings)",
                  n_ids, (long long)capacity);
        goto done;
    }
    int32_t stop[MAX_STOP];
    int     n_stop = 0;
    for (int i = 0; i < cfg->n_eos; i++) add_stop(stop, &n_stop, cfg->eos_token_id[i]);
    for (int i = 0; i < g.n_eos; i++) add_stop(stop, &n_stop, g.eos[i]);
    add_stop(stop, &n_stop, tok_eos(tok));
    add_stop(stop, &n_stop, tok_find(tok, "<|im_end|>", 10));

    struct rt_sampler_params sp = rt_sampler_params_default();
    sp.temperature              = temperature;
    sp.top_p                    = top_p;
    sp.top_k                    = top_k;
    sp.seed                     = (uint64_t)seed;
    if (rt_sampler_new(&sp, cfg->vocab_size, &sampler, err, sizeof err) != 0 ||
        tok_stream_new(tok, 1, &stream, err, sizeof err) != 0) {
        cli_error(cmd, "%s", err);
        goto done;
    }
    logits = malloc((size_t)cfg->vocab_size * sizeof *logits);
    if (!logits) {
        cli_error(cmd, "out of memory");
        goto done;
    }

    /* ---- prefill ---- */
    struct progress pr = {isatty(STDERR_FILENO), 0, cli_now()};
    int             show = (int64_t)n_ids > chunk;
    double          t0   = cli_now();
    if (rt_model_prefill(m, ids, (int64_t)n_ids, chunk, show ? on_progress : NULL, &pr, logits, err, sizeof err) != 0) {
        cli_error(cmd, "%s", err);
        goto done;
    }
    double t_prefill = cli_now() - t0;

    /* ---- decode ---- */
    const char *why = "max tokens";
    long long   n_gen = 0;
    double      t1 = cli_now();
    for (;;) {
        if (n_gen >= max_tokens) break;
        int32_t next = rt_sample(sampler, logits);
        if (next < 0) {
            cli_error(cmd, "the model produced no finite logit (NaN or -inf everywhere)");
            goto done;
        }
        n_gen++;
        if (is_stop(next, stop, n_stop)) {
            why = "end token";
            break;
        }
        const char *piece;
        size_t      len;
        if (tok_stream_put(stream, next, &piece, &len, err, sizeof err) != 0) {
            cli_error(cmd, "%s", err);
            goto done;
        }
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
        if (n_gen >= max_tokens) break;
        if (rt_model_len(m) >= capacity) {
            why = "context full";
            break;
        }
        if (rt_model_decode(m, next, logits, err, sizeof err) != 0) {
            cli_error(cmd, "%s", err);
            goto done;
        }
    }
    double      t_decode = cli_now() - t1;
    const char *tail;
    size_t      tail_len;
    if (tok_stream_flush(stream, &tail, &tail_len) == 0) fwrite(tail, 1, tail_len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    fprintf(stderr,
            "infllm run: prefill %zu tokens in %.3f s (%.1f tok/s); decode %lld tokens in %.3f s (%.1f tok/s); "
            "stopped: %s\n",
            n_ids, t_prefill, t_prefill > 0 ? (double)n_ids / t_prefill : 0.0, n_gen, t_decode,
            t_decode > 0 ? (double)n_gen / t_decode : 0.0, why);
    rc = CLI_OK;
done:
    free(logits);
    tok_stream_free(stream);
    rt_sampler_free(sampler);
    rt_model_free(m);
    tok_free(tok);
    free(ids);
    free(rendered);
    free(file_text);
    return rc;
}
