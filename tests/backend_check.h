/* SPDX-License-Identifier: MIT
 *
 * backend_check.h -- what the backend cross-checks share (house-style 2.8 (b)-(d)): a backend under
 * test against the float64 ref backend. tests/test_backend_ops.c checks the cpu backend,
 * tests/test_cuda.c the cuda backend; each keeps its own sweep (the spec table), its contexts, the
 * runs of the backend under test and its own checks (cpu: thread-count determinism, the scalar path;
 * cuda: device buffers, device-side error paths). This module holds the rest:
 *
 *   - helpers: allocation, the input stream (seeded by --seed and a string), dtype elements, ulps;
 *   - guarded output buffers (guard bytes, padding of strided views, NaN in every logical element),
 *     with an optional device image for a device backend;
 *   - the case spec and the instance: the config builder, the stable name, input generation
 *     (rounded to the dtype first; the same buffers go to both backends);
 *   - the float64 reference results through the ref backend, computed on first use;
 *   - the comparisons and their reporting: continuous outputs (out, LSE, gradients), compressed
 *     keys, and selections compared as sets with the near-tie rule (block scores recomputed here in
 *     float64 from the spec); the table of the worst errors.
 *
 * Two tolerance models (bc.tol), one per program:
 *   TOL_CALIBRATED  the cpu's (docs/numerics.md): max|ut - ref| <= C * r * M with the rms unit
 *                   r = u32 * sqrt((n_acc + D) * zfac), M = max(max|ref|, floor), an NMSE cap in r^2;
 *                   every selection row is also rescored (a self-check of the scorer, near-tie counts);
 *   TOL_PRECISION   the cuda's, from the precision (house-style 2.8 (c)): bf16/f16 inputs
 *                   4 u_dtype M (LSE 1e-3 max(1, max|lse|)), fixed NMSE caps; f32/f64
 *                   C * u_acc * sqrt(n_acc + D) * zfac * M, M = max(max|ref|, floor); only
 *                   differing selection rows are rescored, their near-tie margin in the dtype's
 *                   unit for bf16/f16.
 *
 * Usage: fill `bc` (bc_init parses --full/--quick/--seed and hands the rest to th_init), create
 * ref_ctx, then run_sweep(specs, ...) with the program's run_instance.
 */
#ifndef INFLLM_BACKEND_CHECK_H
#define INFLLM_BACKEND_CHECK_H

#include "harness.h"
#include "infllm.h"

#include <stddef.h>
#include <stdint.h>

#define U32 (1.0 / 16777216.0)         /* 2^-24, f32 unit roundoff */
#define U64 (1.0 / 9007199254740992.0) /* 2^-53 */

/* selection near-tie margin: tau = TAU_C * u * max|finite row score| (u: see bc.tol) */
#define TAU_C 8.0

/* ==== the program's settings ==== */

struct inst;

enum bc_tol { TOL_CALIBRATED, TOL_PRECISION };

struct bc_opts {
    const char *prog;        /* "test_backend_ops": named in out-of-memory messages */
    const char *label;       /* "cpu", "cuda": the backend under test in messages */
    enum bc_tol tol;         /* the tolerance model (above) */
    size_t      guard;       /* guard bytes on each side of an output buffer */
    int         short_names; /* instance names without past= and dense_len= (test_cuda's) */
    int         with_dout;   /* also draw dout (the backward's input) */
    int         full;        /* --full */
    uint64_t    seed;        /* --seed */
    /* a device backend: every output buffer gets a device image (NULL: host outputs) */
    void *(*dev_put)(const void *host, size_t n); /* allocates and uploads n bytes */
    void  (*dev_free)(void *d);
    void  (*sel_ready)(struct inst *in); /* called when ensure_sel has the ref's selections (may be NULL) */
};
extern struct bc_opts  bc;
extern struct ifl_ctx *ref_ctx; /* the float64 reference, created by the program */

/* Parses --full, --quick and (besides passing it on) --seed, and extra_flag (may be NULL) into
 * *extra; hands the rest to th_init. */
void bc_init(int argc, char **argv, const char *extra_flag, int *extra);

/* ==== helpers ==== */

void    *xmalloc(size_t n);
void    *xcalloc(size_t n, size_t size);
double   now_s(void);
void     rng_seed(const char *s); /* the input stream, seeded by s and --seed */
double   rng_normal(void);
uint64_t fnv(const void *p, size_t n);
double   unit_roundoff(enum ifl_dtype dt);
int      is_half(enum ifl_dtype dt);
double   ulp_of(enum ifl_dtype dt, double x); /* spacing of the dtype's numbers at |x| */
double   elem_get(const void *p, enum ifl_dtype dt, int64_t i);
void     elem_set(void *p, enum ifl_dtype dt, int64_t i, double x); /* rounded to the dtype */
struct ifl_tensor tmake(void *data, enum ifl_dtype dt, int nd, int64_t a, int64_t b, int64_t c);

/* ==== guarded output buffers ====
 * bc.guard bytes of a pattern on each side; padding between rows of a strided view carries the same
 * pattern; the logical elements start as NaN (i32: 0x7f7f7f7f, never a valid block). After a call
 * everything but the logical elements must equal its initial image. With bc.dev_put the image is
 * also uploaded (dmem, td); the program downloads it into mem before checking. */
struct gbuf {
    unsigned char    *mem, *init, *dmem; /* host image, its initial copy, the device image (or NULL) */
    size_t            total;
    struct ifl_tensor t;                 /* host view */
    struct ifl_tensor td;                /* the view the backend under test gets (device image, or t) */
    int64_t           n;                 /* logical elements */
};

/* nd dims; pad extra elements after each innermost row (a strided view) */
void   gb_make(struct gbuf *g, enum ifl_dtype dt, int nd, int64_t a, int64_t b, int64_t c, int64_t pad);
void   gb_free(struct gbuf *g);
int64_t gb_off(const struct gbuf *g, int64_t i); /* logical index -> element offset */
double gb_get(const struct gbuf *g, int64_t i);
int    gb_untouched_outside(const struct gbuf *g); /* every byte but the logical elements as it was */

/* ==== specs and instances ==== */

/* Input regimes: N(0,1); "peaky" q x8; large logits q x32 (online-softmax stability); exact ties
 * (each sequence's keys repeat with a period of 4 blocks, so stage-1 block scores tie exactly and
 * the tie rule, smaller block first, decides). */
enum regime { REG_NORMAL, REG_PEAKY, REG_LARGE, REG_TIES };

/* One shape of a sweep; run for each of its dtypes. */
struct spec {
    int     nseq;       /* sequences; batched 0 means batch == NULL (nseq 1) */
    int     batched;
    int32_t tq[4], tk[4];
    int     hq, hkv, d;
    int     def_cfg;    /* 1: ifl_sparse_config_default() (bs 64, ...), else the small config */
    int     init, exact, dense_len; /* small config: init_blocks, lse mode, dense_len (0 -> 100) */
    int     regime;
    int     out_bf16;   /* the backend under test writes bf16 outputs (only bf16 inputs) */
    int     strided;    /* its inputs are views into a fused qkv buffer, outputs padded */
    int     masked;     /* also stage 2 with rows that see no key */
    int     det;        /* test_backend_ops: threads 1/2/3/default bitwise, and the scalar path */
    int     errs;       /* test_cuda: also the device-side error paths */
    int     full;       /* --full only */
    int     dtypes;     /* bit mask of 1 << dtype; 0 = DT_ALL */
};

#define DT_HALF ((1 << IFL_DTYPE_BF16) | (1 << IFL_DTYPE_F16))
#define DT_ALL  (DT_HALF | (1 << IFL_DTYPE_F32))
#define DT_BF16 (1 << IFL_DTYPE_BF16)
#define DT_F64  (1 << IFL_DTYPE_F64)

/* Reference results, computed on first use. kind: sparse (ref selection), dense, sparse with
 * masked rows. out_in/lse_in are what both backends' backward get: out rounded to the input
 * dtype, lse as f32. */
enum { K_SPARSE, K_DENSE, K_MASKED, N_KINDS };

struct ref_fwd {
    int     done, ok;
    double *out, *lse;
    void   *out_in;
    float  *lse_in;
};
struct ref_bwd {
    int     done, ok;
    double *dq, *dk, *dv;
};

struct inst {
    const struct spec       *sp;
    enum ifl_dtype           dt, out_dt;
    struct ifl_sparse_config cfg;
    double                   scale; /* resolved softmax scale */
    char                     shape[320];
    int64_t                  nseq, TQ, TK, hq, hkv, G, d, K, nq_max, nk_max;
    int32_t                  cuq[5], cuk[5];
    struct ifl_batch         batch;
    const struct ifl_batch  *bp;
    void                    *q, *k, *v, *dout; /* dtype buffers, contiguous (what the ref gets); dout: bc.with_dout */
    double                  *qd;               /* q as double */
    double                   zfac, kmax;
    double                   rq, rk, rv, rdo;   /* rms of the rounded q, k, v, dout */
    void                    *fused;            /* strided spec: the host [T, Hq+2Hkv, D] */
    struct ifl_tensor        tq_ut, tk_ut, tv_ut; /* the views the backend under test gets (host; or device) */
    int64_t                  pad;              /* padding of the outputs' rows */
    uint64_t                 hash_in;          /* inst_hash_now() when made */
    void                    *user;             /* the program's own data for this instance */
    /* reference results */
    int            ck_done, ck_ok;
    double        *c1, *c2;
    int64_t        n1, n2;
    int64_t        off1[5], off2[5]; /* first compressed row of each sequence */
    int            sel_done, sel_ok;
    int32_t       *sel, *sel_masked;
    struct ref_fwd rf[N_KINDS];
    struct ref_bwd rb[N_KINDS];
    int            inf_done, inf_ok;
    double        *inf_out, *inf_lse;
    int32_t       *inf_sel;
    enum ifl_mode  inf_modes[4];
};

void     inst_make(struct inst *in, const struct spec *sp, enum ifl_dtype dt);
void     inst_free(struct inst *in);
uint64_t inst_hash_now(const struct inst *in); /* of the host inputs q, k, v, dout, fused */

/* Makes every instance of the sweep (specs x dtypes in that order; --full-only specs with --full)
 * and hands it to run. */
void run_sweep(const struct spec *specs, size_t n_specs, const enum ifl_dtype *dts, int n_dts,
               void (*run)(struct inst *in));

/* ==== reference results ==== */

struct ifl_tensor in_q(const struct inst *in); /* the host inputs, contiguous */
struct ifl_tensor in_k(const struct inst *in);
struct ifl_tensor in_v(const struct inst *in);

/* Each runs the ref once (later calls return the first answer); 1 when its results are there. */
int ensure_ck(struct inst *in);
/* ensure_sel: also sel_masked (rows that see no block, or only one after the query); then bc.sel_ready */
int ensure_sel(struct inst *in);
int ensure_fwd(struct inst *in, int kind);
int ensure_bwd(struct inst *in, int kind);
int ensure_infllm(struct inst *in);

/* The backward's inputs, as both backends get them. */
struct bwd_in {
    struct ifl_tensor sel, out, lse, dout;
};
struct bwd_in bwd_inputs(struct inst *in, int kind);

/* ==== the ops ==== */

enum op {
    OP_COMPRESS,
    OP_SELECT,
    OP_SPARSE_FWD,
    OP_DENSE_FWD,
    OP_INFLLM_FWD,
    OP_SPARSE_BWD,
    OP_DENSE_BWD,
    OP_MASKED_FWD,
    OP_MASKED_BWD,
    N_OPS
};
extern const char *const op_name[N_OPS];
int op_kind(enum op op); /* K_DENSE, K_MASKED or K_SPARSE */
int op_is_bwd(enum op op);

/* The guarded outputs of one op. */
struct outs {
    struct gbuf   b[3];
    const char   *name[3];
    int           n;
    enum ifl_mode modes[4];
};
/* Fresh guarded outputs for op (none for an op with no outputs); modes set to an invalid value. */
void outs_make(struct outs *o, enum op op, const struct inst *in);
void outs_free(struct outs *o);

/* Calls op on ctx c with the instance's views (tq_ut, tk_ut, tv_ut) and o's outputs (td). sel: the
 * selection stage 2 and the sparse backward read (the ref's, as the backend under test sees it);
 * b: the backward's out, lse and dout (NULL for a forward op). */
enum ifl_status call_op(struct ifl_ctx *c, enum op op, const struct inst *in, struct outs *o,
                        const struct ifl_tensor *sel, const struct bwd_in *b);

/* LSE in f64 for f64 inputs (an f32 LSE would be rounding, not computation, error), else f32. */
enum ifl_dtype lse_dtype(const struct inst *in);

/* ==== checks ==== */

extern char cur_case[400]; /* the running case's name, for the table of worst errors */

/* A continuous output against the ref. skip (may be NULL): per row of `inner` elements, 1 = do not
 * compare (a row whose selection legitimately differed). NaN fails, infinities must match.
 * TOL_CALIBRATED: max err <= c * r * M + u_out * max|ref|, NMSE <= nmse_c * r^2 + u_out^2 with
 *   r = u32 * sqrt((n_acc + D) * zfac) (LSE: no zfac), M = max(max|ref|, floor),
 *   NMSE = sum (ut-ref)^2 / max(sum ref^2, n * floor^2) (both models), u_out: a narrow output
 *   dtype's unit; floor: 1 for the LSE, for dq/dk the size of the terms that cancel, else 0
 *   (numerics.md).
 * TOL_PRECISION: bf16/f16 inputs 4 u_dtype M (LSE 1e-3 max(1, max|ref|)), NMSE cap 5e-5
 *   (bf16) / 1e-6 (f16) / 1e-8 (LSE); else c * u_acc * sqrt(n_acc + D) * zfac * M with
 *   M = max(max|ref|, floor) (LSE max(1, max|ref|)) and cap nmse_c * u_acc^2 (n_acc + D) zfac^2.
 * Returns 1 on a pass. */
int check_float(const char *qty, struct inst *in, const struct gbuf *ut, const double *ref, int64_t inner,
                const unsigned char *skip, int64_t n_acc, double c, double nmse_c, int is_lse, double floor);

/* Compressed keys: each element within one ulp of the key dtype plus c_acc accumulation units
 * a = u_acc * sqrt(kernel) * max|k| (the sum of `kernel` keys; it matters only for f32/f64 keys). */
void check_ck(const char *qty, struct inst *in, const struct gbuf *ut, const double *ref, int64_t kernel, double c_acc);

/* The selection (ut) against the ref's (ref) row by row as sets; a difference is accepted only at a
 * near-tie of the float64 block scores, and every forced block must be kept. need_seq (may be
 * NULL): sequences whose rows are checked (the others must be all -1 on both sides). differs (may
 * be NULL): set to 1 for each (token, KV head) whose rows differ. */
void check_selection(struct inst *in, const int32_t *ref, const struct gbuf *ut, const unsigned char *need_seq,
                     unsigned char *differs);

/* A program's gates: check_ck's c_acc, and check_float's c and nmse_c per quantity. */
struct gates {
    double ck;                /* compressed keys */
    double out, lse, nmse_fwd; /* forward */
    double dq, dk, dv, nmse_bwd; /* backward */
};

/* Compares op's outputs (from a run that passed) with the ref's, under the gates. Stage 2 and the
 * backward are compared with the ref's results on the ref's selection; the switchable forward's
 * selection first, then out and LSE on the rows whose selection matched. */
void compare_op(struct inst *in, enum op op, struct outs *o, const struct gates *gt);

/* Prints the table of the worst errors over the sweep. */
void print_table(void);

#endif /* INFLLM_BACKEND_CHECK_H */
