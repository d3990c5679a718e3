/* SPDX-License-Identifier: MIT
 *
 * tokenizer.h -- the Llama-family tokenizer of MiniCPM4 (minicpm4.md §6; docs/tokenizer.md): a
 * Hugging Face tokenizer.json with a BPE model (byte fallback, unk fusing, merges as "a b" strings
 * or [a, b] pairs), added tokens matched on the raw text, either of the two Llama conversions
 * (legacy: normalizer Prepend("▁") + Replace(" ", "▁"); or pre_tokenizer Metaspace), the
 * TemplateProcessing post-processor (BOS), and the decoder (Replace, ByteFallback, Fuse, Strip
 * or Metaspace). Token ids equal those of the Hugging Face tokenizers library; the test
 * tests/tokenizer/ checks that against its JavaScript port on the Llama 2 tokenizer.
 *
 * Input text is bytes. Invalid UTF-8 is replaced the way a UTF-8 decoder of Python, Rust or the
 * WHATWG Encoding standard replaces it before HF sees a string: one U+FFFD per maximal invalid
 * subpart (Unicode §3.9 "U+FFFD substitution of maximal subparts").
 *
 * A struct tok is read-only after loading: encode/decode may run from several threads at once.
 * Every function returns 0 or -1 with a message in err; nothing exits or aborts.
 */
#ifndef INFLLM_RT_TOKENIZER_H
#define INFLLM_RT_TOKENIZER_H

#include "rt_api.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tok;

/* Loads a tokenizer from the text of a tokenizer.json (json, json_len bytes) and, optionally, of
 * a tokenizer_config.json (config may be NULL): its add_bos_token / add_eos_token override the
 * post-processor, as transformers' LlamaTokenizerFast does, and bos_token / eos_token name the
 * BOS and EOS. name is used in messages ("NAME: ..."), NULL means "tokenizer.json". */
RT_API int tok_load_buffer(const void *json, size_t json_len, const void *config, size_t config_len,
                           const char *name, struct tok **out, char *err, size_t errlen);

/* Loads DIR/tokenizer.json and DIR/tokenizer_config.json when that file exists. */
RT_API int tok_load_dir(const char *dir, struct tok **out, char *err, size_t errlen);

/* Loads a tokenizer.json file, and config_path (NULL: none). */
RT_API int tok_load(const char *path, const char *config_path, struct tok **out, char *err,
                    size_t errlen);

RT_API void tok_free(struct tok *t); /* NULL: no-op */

/* One more than the largest id (vocabulary and added tokens). */
RT_API int32_t tok_n_vocab(const struct tok *t);

/* The special ids, -1 when the tokenizer has none. bos/eos come from tokenizer_config.json's
 * bos_token/eos_token when given, else from "<s>" / "</s>" when the vocabulary has them. */
RT_API int32_t tok_bos(const struct tok *t);
RT_API int32_t tok_eos(const struct tok *t);
RT_API int32_t tok_unk(const struct tok *t);

/* Whether encode with add_special prepends BOS / appends EOS. */
RT_API int tok_adds_bos(const struct tok *t);
RT_API int tok_adds_eos(const struct tok *t);

/* The id of a token given by its exact text (an added token or a vocabulary piece), -1 if none. */
RT_API int32_t tok_find(const struct tok *t, const char *text, size_t len);

/* The text of id's piece as stored ("▁the", "<0x0A>", "<|im_end|>"), NULL when id has none. */
RT_API const char *tok_piece(const struct tok *t, int32_t id, size_t *len);

/* 1 when id is an added token marked special (what skip_special drops), else 0. */
RT_API int tok_is_special(const struct tok *t, int32_t id);

/* Encodes text[0..len). add_special: apply the post-processor (BOS, as HF's add_special_tokens).
 * *ids is malloc'ed (free it; NULL when *n_ids is 0), *n_ids its length. */
RT_API int tok_encode(const struct tok *t, const char *text, size_t len, int add_special, int32_t **ids,
                      size_t *n_ids, char *err, size_t errlen);

/* Decodes ids as HF's decode(ids, skip_special_tokens, clean_up_tokenization_spaces=False):
 * *text is malloc'ed and NUL-terminated (free it), *len its length. An id with no piece decodes
 * as the unk token (nothing when there is none), as the JavaScript port does. */
RT_API int tok_decode(const struct tok *t, const int32_t *ids, size_t n_ids, int skip_special,
                      char **text, size_t *len, char *err, size_t errlen);

/* ---- streaming decode: text as the tokens come, never a partial UTF-8 character ----
 * The concatenation of everything tok_stream_put and tok_stream_flush return equals tok_decode of
 * all the ids whenever every run of byte-fallback pieces is valid UTF-8. In a run that is not,
 * tok_decode follows HF (U+FFFD for every byte of the run), while the stream has already shown
 * the complete characters before the bad byte and gives U+FFFD only for the bytes that cannot
 * form one. */
struct tok_stream;

RT_API int  tok_stream_new(const struct tok *t, int skip_special, struct tok_stream **out, char *err,
                           size_t errlen);
RT_API void tok_stream_free(struct tok_stream *s); /* NULL: no-op */

/* Adds one id; *text (owned by the stream, valid until the next call) gets the bytes now complete,
 * *len of them (possibly 0). */
RT_API int tok_stream_put(struct tok_stream *s, int32_t id, const char **text, size_t *len, char *err,
                          size_t errlen);

/* Ends the stream: the bytes still held (an unfinished character becomes U+FFFD per byte). The
 * stream can then start again from nothing. */
RT_API int tok_stream_flush(struct tok_stream *s, const char **text, size_t *len);

/* ---- a small tokenizer for generated test checkpoints ----
 * Writes a tokenizer.json of this family (the legacy Llama conversion): <unk> <s> </s> at ids
 * 0..2, the byte pieces <0x00>..<0xFF> at 3..258, then pieces and merges learned by BPE on a
 * built-in English text (single characters first, then merges such as "▁ t", "h e"), as many as
 * fit, and the 8 MiniCPM added tokens of §6.1 at the top ids vocab_size-8..vocab_size-1 when
 * vocab_size >= 259 + 8 + 16. Every id is < vocab_size; vocab_size must be >= 259 (ids between
 * the learned pieces and the added tokens are left without a piece: decoding shows them as
 * <unk>). Deterministic: the same vocab_size writes the same bytes. */
RT_API int tok_write_small(const char *path, int32_t vocab_size, char *err, size_t errlen);

/* The matching tokenizer_config.json: add_bos_token true, add_eos_token false, bos <s>, eos
 * <|im_end|> when tok_write_small placed the added tokens, else </s>, legacy true. */
RT_API int tok_write_small_config(const char *path, int32_t vocab_size, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* INFLLM_RT_TOKENIZER_H */
