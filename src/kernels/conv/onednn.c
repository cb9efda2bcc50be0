/* Fast CPU convolution (f32) through oneDNN, the library PyTorch's CPU convolutions run on.
 *
 * Why C and not Rust FFI declarations: oneDNN 2.x's C API passes its descriptors
 * (dnnl_memory_desc_t, dnnl_convolution_desc_t) by value-sized structs whose layouts change
 * between releases, and 3.x replaced them by handles and one create call per primitive kind;
 * compiling against the installed header keeps both right (the few calls that differ are
 * wrapped below, switched on DNNL_VERSION_MAJOR). No Rust crate wraps oneDNN. build.rs compiles
 * this file only when it finds the header and the library: Debian's libdnnl-dev (2.6) or
 * Intel's PyPI build (3.x, scripts/fetch-onednn.sh).
 *
 * One call = one convolution pass on plain NCHW / OIHW f32 buffers (what candle holds):
 *   kind 0: forward         a = x (N,C,H,W),        b = w (O,C,kH,kW) -> out = y  (N,O,Ho,Wo)
 *   kind 1: backward data   a = dy (N,O,Ho,Wo),     b = w             -> out = dx (N,C,H,W)
 *   kind 2: backward weight a = x,                  b = dy            -> out = dw (O,C,kH,kW)
 * The primitive picks its own (blocked) layouts ("any"); inputs and outputs are reordered to and
 * from them around the call, as PyTorch does for NCHW tensors. Each thread keeps the primitives
 * of the geometries it has run (plan_get), so a repeated shape costs a table lookup.
 * Returns 0, or a oneDNN status (> 0) with the failing step in `what`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>

/* oneDNN is opened at run time (dlopen), not linked: a build that found it keeps working where
 * the library is missing (the GEMM kernels take over, see spectral_onednn_available), and a
 * oneDNN outside the loader's search path (Intel's PyPI build under target/onednn) needs no
 * rpath in every binary that links this crate (tests, examples, the notebooks' cells). build.rs
 * passes the path of the library it compiled against; the header's major version must match. */
#ifndef SPECTRAL_DNNL_LIB
#define SPECTRAL_DNNL_LIB ""
#endif
#if DNNL_VERSION_MAJOR >= 3
#define SPECTRAL_DNNL_SONAME "libdnnl.so.3"
#define DNNL_VERSIONED(X) \
    X(dnnl_memory_desc_create_with_tag) \
    X(dnnl_memory_desc_destroy) \
    X(dnnl_convolution_forward_primitive_desc_create) \
    X(dnnl_convolution_backward_data_primitive_desc_create) \
    X(dnnl_convolution_backward_weights_primitive_desc_create)
#else
#define SPECTRAL_DNNL_SONAME "libdnnl.so.2"
#define DNNL_VERSIONED(X) \
    X(dnnl_memory_desc_init_by_tag) \
    X(dnnl_convolution_forward_desc_init) \
    X(dnnl_convolution_backward_data_desc_init) \
    X(dnnl_convolution_backward_weights_desc_init) \
    X(dnnl_primitive_desc_create)
#endif
#define DNNL_FUNCTIONS(X) \
    X(dnnl_engine_create) \
    X(dnnl_get_effective_cpu_isa) \
    X(dnnl_memory_create) \
    X(dnnl_memory_desc_equal) \
    X(dnnl_memory_desc_get_size) \
    X(dnnl_memory_destroy) \
    X(dnnl_primitive_attr_create) \
    X(dnnl_primitive_attr_destroy) \
    X(dnnl_primitive_attr_set_scratchpad_mode) \
    X(dnnl_primitive_create) \
    X(dnnl_primitive_desc_destroy) \
    X(dnnl_primitive_desc_query) \
    X(dnnl_primitive_desc_query_md) \
    X(dnnl_primitive_destroy) \
    X(dnnl_primitive_execute) \
    X(dnnl_reorder_primitive_desc_create) \
    X(dnnl_stream_create) \
    X(dnnl_stream_wait) \
    X(dnnl_version) \
    DNNL_VERSIONED(X)

#define DNNL(f) (p_##f)
#define DECLARE(f) static __typeof__(f) *p_##f;
DNNL_FUNCTIONS(DECLARE)
static void (*p_omp_set_num_threads)(int);
static const char *load_note = "not loaded";

static int load(void) {
    /* The one OpenMP team this file starts (the shared weight reorder, spectral_onednn_weights)
     * runs for well under a millisecond; libgomp's default is to keep its workers spinning after
     * each region, which took a core from the rayon workers that run the convolutions next
     * (stop 12). libgomp reads this when it loads, which is here unless something else in the
     * process loaded it before; a user's own setting is kept. */
    setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
    const char *names[2] = {SPECTRAL_DNNL_LIB, SPECTRAL_DNNL_SONAME};
    void *lib = NULL;
    for (int i = 0; i < 2 && !lib; i++)
        if (names[i][0]) {
            lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
            if (lib) load_note = names[i];
        }
    if (!lib) {
        const char *e = dlerror();
        load_note = e ? e : "dlopen failed";
        return 0;
    }
#define LOAD(f)                                                                                   \
    if (!(p_##f = (__typeof__(p_##f))dlsym(lib, #f))) {                                           \
        load_note = "missing symbol " #f;                                                         \
        return 0;                                                                                 \
    }
    DNNL_FUNCTIONS(LOAD)
    /* the OpenMP runtime the library was built with (absent in TBB or sequential builds) */
    p_omp_set_num_threads = (void (*)(int))dlsym(lib, "omp_set_num_threads");
    if (DNNL(dnnl_version)()->major != DNNL_VERSION_MAJOR) {
        load_note = "library's major version differs from the header's";
        return 0;
    }
    return 1;
}

static dnnl_engine_t engine;
static dnnl_status_t engine_status = dnnl_success;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

/* Channel block of the activations' layout (nChw16c / nChw8c), 0 for oneDNN's own choice.
 * Given "any", oneDNN 3.2 picks channels-last (acdb) and its brgconv kernels for every layer;
 * the reorders into and out of acdb cost 2-3x those into nChw16c, and at 2-16 px the direct
 * jit kernels on nChw16c (what PyTorch's oneDNN 3.13 picks for NCHW tensors, ONEDNN_VERBOSE)
 * ran the ResNet-18 64 px stack faster. SPECTRAL_ONEDNN_LAYOUT=any restores oneDNN's choice. */
static int act_block, isa_block;
static int blocked_kinds = 3; /* bit k: pass k asks for the blocked layout */

static void engine_init(void) {
    engine_status = load() ? DNNL(dnnl_engine_create)(&engine, dnnl_cpu, 0) : dnnl_runtime_error;
    if (engine_status != dnnl_success) return;
    /* ISA values are bit sets: AVX-512 core includes all of AVX2's bits */
    int isa = (int)DNNL(dnnl_get_effective_cpu_isa)();
    isa_block = (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ? 16
                : (isa & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2             ? 8
                                                                               : 0;
    const char *layout = getenv("SPECTRAL_ONEDNN_LAYOUT");
    if (layout && strcmp(layout, "any") == 0) return;
    if (layout && strcmp(layout, "all") == 0) blocked_kinds = 7;
    act_block = isa_block;
}

/* The channel block of oneDNN's direct kernels on this CPU: 16 (AVX-512), 8 (AVX2), or 0 (older
 * ISA, or no oneDNN); what kernels::layout::blocked_lanes offers the model's activations. */
int spectral_onednn_block(void) {
    pthread_once(&engine_once, engine_init);
    return engine_status == dnnl_success ? isa_block : 0;
}

/* The caller's layout of an activation: lanes 1 = plain NCHW, 8 = nChw8c, 16 = nChw16c (the
 * model's blocked activations, kernels::layout::blocked_lanes); 0 for anything else. */
static dnnl_format_tag_t user_tag(int64_t lanes) {
    return lanes == 1 ? dnnl_nchw : lanes == 8 ? dnnl_nChw8c : lanes == 16 ? dnnl_nChw16c : dnnl_format_tag_undef;
}

/* The layout asked of an activation with c channels: the caller's own where it is blocked (no
 * reorder at all), else blocked where c fills whole blocks (the 3-channel input of a stem stays
 * oneDNN's choice, plain NCHW). */
static dnnl_format_tag_t act_tag(int kind, int64_t c, int64_t lanes, int blocked) {
    if (!blocked) return dnnl_format_tag_any;
    if (lanes > 1) return user_tag(lanes);
    if (!(blocked_kinds >> kind & 1)) return dnnl_format_tag_any;
    if (act_block == 16 && c % 16 == 0) return dnnl_nChw16c;
    if (act_block == 8 && c % 8 == 0) return dnnl_nChw8c;
    return dnnl_format_tag_any;
}

/* 1 when oneDNN loaded and its CPU engine started; `note` is the library opened, or why not. */
int spectral_onednn_available(const char **note) {
    pthread_once(&engine_once, engine_init);
    *note = load_note;
    return engine_status == dnnl_success;
}

/* What differs between the 2.x and 3.x C APIs. `cmd_t` is what every call takes for a memory
 * descriptor (2.x: a pointer to the struct; 3.x: the handle). */
#if DNNL_VERSION_MAJOR >= 3
typedef const_dnnl_memory_desc_t cmd_t;
typedef dnnl_memory_desc_t md_t; /* a handle, destroyed by md_free */
static dnnl_status_t md_init(md_t *md, const dnnl_dims_t d, dnnl_format_tag_t tag) {
    return DNNL(dnnl_memory_desc_create_with_tag)(md, 4, d, dnnl_f32, tag);
}
static cmd_t md_ref(const md_t *md) { return *md; }
static void md_free(md_t *md) {
    if (*md) DNNL(dnnl_memory_desc_destroy)(*md);
    *md = NULL;
}
#else
typedef const dnnl_memory_desc_t *cmd_t;
typedef dnnl_memory_desc_t md_t; /* the struct itself */
static dnnl_status_t md_init(md_t *md, const dnnl_dims_t d, dnnl_format_tag_t tag) {
    return DNNL(dnnl_memory_desc_init_by_tag)(md, 4, d, dnnl_f32, tag);
}
static cmd_t md_ref(const md_t *md) { return md; }
static void md_free(md_t *md) { (void)md; }
#endif

/* The geometry g = n, c_in, h, w, c_out, kh, kw, stride, pad, ho, wo, src lanes, dst lanes as
 * oneDNN dimensions, and the caller's (NCHW or nChw8c/16c by the lanes; OIHW) and the asked-for
 * ("any" or blocked) descriptors of src, weights and dst. */
#define G_LEN 13
typedef struct {
    dnnl_dims_t src_d, wei_d, dst_d, strides, dilates, pad_l, pad_r;
    md_t src_u, wei_u, dst_u, src_any, wei_any, dst_any;
    int blocked; /* src or dst asked in the blocked layout (act_tag) */
} geom_t;

/* `blocked` 0: oneDNN's own choice for every activation (the fallback in plan_make). */
static dnnl_status_t geom_init(geom_t *t, int kind, const int64_t *g, int blocked) {
    memset(t, 0, sizeof *t);
    int64_t src[4] = {g[0], g[1], g[2], g[3]}, wei[4] = {g[4], g[1], g[5], g[6]},
            dst[4] = {g[0], g[4], g[9], g[10]};
    memcpy(t->src_d, src, sizeof src);
    memcpy(t->wei_d, wei, sizeof wei);
    memcpy(t->dst_d, dst, sizeof dst);
    t->strides[0] = t->strides[1] = g[7];
    t->pad_l[0] = t->pad_l[1] = g[8];
    /* right padding: what makes the output size come out as given (PyTorch's floor rule) */
    t->pad_r[0] = (g[9] - 1) * g[7] + g[5] - g[2] - g[8];
    t->pad_r[1] = (g[10] - 1) * g[7] + g[6] - g[3] - g[8];
    dnnl_format_tag_t src_user = user_tag(g[11]), dst_user = user_tag(g[12]);
    if (src_user == dnnl_format_tag_undef || dst_user == dnnl_format_tag_undef) return dnnl_invalid_arguments;
    dnnl_status_t s = md_init(&t->src_u, t->src_d, src_user);
    if (s == dnnl_success) s = md_init(&t->wei_u, t->wei_d, dnnl_oihw);
    if (s == dnnl_success) s = md_init(&t->dst_u, t->dst_d, dst_user);
    dnnl_format_tag_t src_tag = act_tag(kind, g[1], g[11], blocked),
                      dst_tag = act_tag(kind, g[4], g[12], blocked);
    t->blocked = src_tag != dnnl_format_tag_any || dst_tag != dnnl_format_tag_any;
    if (s == dnnl_success) s = md_init(&t->src_any, t->src_d, src_tag);
    if (s == dnnl_success) s = md_init(&t->wei_any, t->wei_d, dnnl_format_tag_any);
    if (s == dnnl_success) s = md_init(&t->dst_any, t->dst_d, dst_tag);
    return s;
}

static void geom_free(geom_t *t) {
    md_free(&t->src_u);
    md_free(&t->wei_u);
    md_free(&t->dst_u);
    md_free(&t->src_any);
    md_free(&t->wei_any);
    md_free(&t->dst_any);
}

/* The primitive descriptor of one pass (kind 0/1/2; `prop` for the forward: inference or
 * training); the backward passes take the training forward's as their hint. */
static dnnl_status_t pass_pd(dnnl_primitive_desc_t *pd, int kind, dnnl_prop_kind_t prop, const geom_t *t,
                             const_dnnl_primitive_attr_t attr, const_dnnl_primitive_desc_t hint) {
    cmd_t src = md_ref(&t->src_any), wei = md_ref(&t->wei_any), dst = md_ref(&t->dst_any);
#if DNNL_VERSION_MAJOR >= 3
    if (kind == 0)
        return DNNL(dnnl_convolution_forward_primitive_desc_create)(pd, engine, prop, dnnl_convolution_direct, src, wei,
                                                              NULL, dst, t->strides, t->dilates, t->pad_l,
                                                              t->pad_r, attr);
    if (kind == 1)
        return DNNL(dnnl_convolution_backward_data_primitive_desc_create)(pd, engine, dnnl_convolution_direct, src, wei,
                                                                    dst, t->strides, t->dilates, t->pad_l,
                                                                    t->pad_r, hint, attr);
    return DNNL(dnnl_convolution_backward_weights_primitive_desc_create)(pd, engine, dnnl_convolution_direct, src, wei,
                                                                   NULL, dst, t->strides, t->dilates, t->pad_l,
                                                                   t->pad_r, hint, attr);
#else
    dnnl_convolution_desc_t desc;
    dnnl_status_t s;
    if (kind == 0)
        s = DNNL(dnnl_convolution_forward_desc_init)(&desc, prop, dnnl_convolution_direct, src, wei, NULL, dst,
                                               t->strides, t->pad_l, t->pad_r);
    else if (kind == 1)
        s = DNNL(dnnl_convolution_backward_data_desc_init)(&desc, dnnl_convolution_direct, src, wei, dst, t->strides,
                                                     t->pad_l, t->pad_r);
    else
        s = DNNL(dnnl_convolution_backward_weights_desc_init)(&desc, dnnl_convolution_direct, src, wei, NULL, dst,
                                                        t->strides, t->pad_l, t->pad_r);
    if (s != dnnl_success) return s;
    return DNNL(dnnl_primitive_desc_create)(pd, &desc, attr, engine, hint);
#endif
}

#define CHECK(call, step)                                                                        \
    do {                                                                                          \
        dnnl_status_t s_ = (call);                                                                \
        if (s_ != dnnl_success) {                                                                 \
            *what = (step);                                                                       \
            status = (int)s_;                                                                     \
            goto done;                                                                            \
        }                                                                                         \
    } while (0)

/* Everything a pass of one geometry needs besides the data: its primitive, the reorders between
 * the plain buffers and the layouts it picked (NULL where they agree) and the descriptors. Built
 * once per (pass, geometry) and thread and kept: a primitive descriptor takes oneDNN's
 * implementation search (and the backward passes a forward one as hint) on every creation, which
 * cost more than the convolution itself for the small layers of the 32-64 px models. */
typedef struct {
    int64_t key[1 + G_LEN]; /* kind, g; key[0] = -1: empty */
    geom_t t;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim, reorder[3];
    cmd_t user[3], want[3], pad_md; /* user[i] / want[i]: args a, b, out */
    int tags[3];
    size_t want_bytes[3], pad_bytes;
} plan_t;

/* per thread: the rayon workers that call in live as long as the process; the plans' JIT code
 * itself is shared through oneDNN's primitive cache */
#define PLANS 96
static __thread plan_t *plans; /* PLANS of them, allocated on the thread's first call */
static __thread int plans_next;
static __thread dnnl_stream_t stream;

static void plan_free(plan_t *p) {
    for (int i = 0; i < 3; i++)
        if (p->reorder[i]) DNNL(dnnl_primitive_destroy)(p->reorder[i]);
    if (p->prim) DNNL(dnnl_primitive_destroy)(p->prim);
    if (p->pd) DNNL(dnnl_primitive_desc_destroy)(p->pd);
    geom_free(&p->t);
    memset(p, 0, sizeof *p);
    p->key[0] = -1;
}

static dnnl_status_t reorder_make(dnnl_primitive_t *prim, cmd_t from, cmd_t to) {
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = DNNL(dnnl_reorder_primitive_desc_create)(&pd, from, engine, to, engine, NULL);
    if (s == dnnl_success) s = DNNL(dnnl_primitive_create)(prim, pd);
    if (pd) DNNL(dnnl_primitive_desc_destroy)(pd);
    return s;
}

/* The implementation a primitive descriptor picked ("jit:avx2", "brgconv:avx512_core", ...). */
static const char *impl_name(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (DNNL(dnnl_primitive_desc_query)(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success) return NULL;
    return impl;
}

/* oneDNN's reference (naive loop) implementations are named "ref..." */
static int is_reference(const_dnnl_primitive_desc_t pd) {
    const char *impl = impl_name(pd);
    return impl && strncmp(impl, "ref", 3) == 0;
}

static int plan_make(plan_t *p, int kind, const int64_t *g, const char **what) {
    int status = 0;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fwd_pd = NULL;
    p->key[0] = kind;
    memcpy(p->key + 1, g, G_LEN * sizeof *g);
    /* The primitive's scratchpad is allocated per call and freed after it: oneDNN's default
     * (library-owned, per thread) keeps the largest one ever needed for the life of the thread
     * (measured: +20 MiB on the peak of a ResNet-50 224 px input-gradient pass). */
    CHECK(DNNL(dnnl_primitive_attr_create)(&attr), "attributes");
    CHECK(DNNL(dnnl_primitive_attr_set_scratchpad_mode)(attr, dnnl_scratchpad_mode_user), "attributes");
    /* First with the blocked activations (act_tag), then, if that pass has only oneDNN's
     * reference implementation for them, with oneDNN's own layouts. Seen on AVX2 (Zen 3,
     * oneDNN 3.2): the stem's input gradient (3 input channels, 7x7, stride 2) with its
     * output gradient in nChw8c ran "ref:any", 6.3 s per 8 images at 64 px, against 6.7 ms
     * for "brgconv_strided:avx2" on channels-last (ONEDNN_VERBOSE; stop 15). */
    for (int blocked = 1;; blocked = 0) {
        CHECK(geom_init(&p->t, kind, g, blocked), "memory descriptors");
        CHECK(pass_pd(&fwd_pd, 0, kind == 0 ? dnnl_forward_inference : dnnl_forward_training, &p->t, attr, NULL),
              "forward primitive desc");
        if (kind == 0) {
            p->pd = fwd_pd;
            fwd_pd = NULL;
        } else if (kind == 1) {
            CHECK(pass_pd(&p->pd, 1, dnnl_backward_data, &p->t, attr, fwd_pd), "backward-data primitive desc");
        } else {
            CHECK(pass_pd(&p->pd, 2, dnnl_backward_weights, &p->t, attr, fwd_pd), "backward-weights primitive desc");
        }
        if (!blocked || !p->t.blocked || !is_reference(p->pd)) break;
        DNNL(dnnl_primitive_desc_destroy)(p->pd);
        p->pd = NULL;
        if (fwd_pd) DNNL(dnnl_primitive_desc_destroy)(fwd_pd);
        fwd_pd = NULL;
        geom_free(&p->t);
    }
    const geom_t *t = &p->t;
    dnnl_query_t q[3];
    if (kind == 0) {
        p->user[0] = md_ref(&t->src_u); p->user[1] = md_ref(&t->wei_u); p->user[2] = md_ref(&t->dst_u);
        q[0] = dnnl_query_src_md; q[1] = dnnl_query_weights_md; q[2] = dnnl_query_dst_md;
        p->tags[0] = DNNL_ARG_SRC; p->tags[1] = DNNL_ARG_WEIGHTS; p->tags[2] = DNNL_ARG_DST;
    } else if (kind == 1) {
        p->user[0] = md_ref(&t->dst_u); p->user[1] = md_ref(&t->wei_u); p->user[2] = md_ref(&t->src_u);
        q[0] = dnnl_query_diff_dst_md; q[1] = dnnl_query_weights_md; q[2] = dnnl_query_diff_src_md;
        p->tags[0] = DNNL_ARG_DIFF_DST; p->tags[1] = DNNL_ARG_WEIGHTS; p->tags[2] = DNNL_ARG_DIFF_SRC;
    } else {
        p->user[0] = md_ref(&t->src_u); p->user[1] = md_ref(&t->dst_u); p->user[2] = md_ref(&t->wei_u);
        q[0] = dnnl_query_src_md; q[1] = dnnl_query_diff_dst_md; q[2] = dnnl_query_diff_weights_md;
        p->tags[0] = DNNL_ARG_SRC; p->tags[1] = DNNL_ARG_DIFF_DST; p->tags[2] = DNNL_ARG_DIFF_WEIGHTS;
    }
    CHECK(DNNL(dnnl_primitive_create)(&p->prim, p->pd), "primitive");
    for (int i = 0; i < 3; i++) {
        p->want[i] = DNNL(dnnl_primitive_desc_query_md)(p->pd, q[i], 0);
        if (DNNL(dnnl_memory_desc_equal)(p->user[i], p->want[i])) continue;
        p->want_bytes[i] = DNNL(dnnl_memory_desc_get_size)(p->want[i]);
        if (i < 2) CHECK(reorder_make(&p->reorder[i], p->user[i], p->want[i]), "input reorder");
        else CHECK(reorder_make(&p->reorder[i], p->want[i], p->user[i]), "output reorder");
    }
    p->pad_md = DNNL(dnnl_primitive_desc_query_md)(p->pd, dnnl_query_scratchpad_md, 0);
    p->pad_bytes = p->pad_md ? DNNL(dnnl_memory_desc_get_size)(p->pad_md) : 0;
done:
    if (attr) DNNL(dnnl_primitive_attr_destroy)(attr);
    if (fwd_pd) DNNL(dnnl_primitive_desc_destroy)(fwd_pd);
    if (status) plan_free(p);
    return status;
}

/* This thread's plan for (kind, g), made on first use, with the engine and this thread's stream
 * started first; NULL with `*status` set on failure. */
static plan_t *plan_get(int kind, const int64_t *g, int *status, const char **what) {
    pthread_once(&engine_once, engine_init);
    if (engine_status != dnnl_success || !stream) {
        dnnl_status_t s = engine_status != dnnl_success
                              ? engine_status
                              : DNNL(dnnl_stream_create)(&stream, engine, dnnl_stream_default_flags);
        if (s != dnnl_success) {
            *status = (int)s;
            *what = engine_status != dnnl_success ? "engine" : "stream";
            return NULL;
        }
    }
    if (!plans) {
        plans = calloc(PLANS, sizeof *plans);
        if (!plans) {
            *status = dnnl_out_of_memory;
            *what = "plans";
            return NULL;
        }
        for (int i = 0; i < PLANS; i++) plans[i].key[0] = -1;
    }
    for (int i = 0; i < PLANS; i++)
        if (plans[i].key[0] == kind && memcmp(plans[i].key + 1, g, G_LEN * sizeof *g) == 0) return &plans[i];
    plan_t *p = &plans[plans_next];
    plans_next = (plans_next + 1) % PLANS; /* round robin: a model has far fewer geometries */
    if (p->key[0] != -1) plan_free(p);
    *status = plan_make(p, kind, g, what);
    return *status ? NULL : p;
}

static void *scratch_alloc(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64); }

/* Forward and input-gradient passes: the weights `b` in the plain OIHW layout, or with
 * `b_ready` already in the layout this pass's plan wants (spectral_onednn_weights). */
int spectral_onednn_conv(int kind, int threads, const int64_t *g, const float *a, const float *b, int b_ready,
                         float *out, const char **what) {
    /* g: see geom_init */
    int status = 0;
    *what = "";
    dnnl_memory_t user[3] = {NULL, NULL, NULL}, inner[3] = {NULL, NULL, NULL}, pad_mem = NULL;
    void *scratch[3] = {NULL, NULL, NULL}, *pad_buf = NULL;
    void *data[3] = {(void *)a, (void *)b, out};

    plan_t *p = plan_get(kind, g, &status, what); /* loads oneDNN (and its OpenMP) on first use */
    if (!p) return status;
    if (threads > 0 && p_omp_set_num_threads) p_omp_set_num_threads(threads);

    for (int i = 0; i < 3; i++) {
        if (i == 1 && b_ready && kind != 2) {
            /* the weights, already in the wanted layout: used as the primitive's argument */
            CHECK(DNNL(dnnl_memory_create)(&inner[i], p->want[i], engine, data[i]), "memory");
            continue;
        }
        CHECK(DNNL(dnnl_memory_create)(&user[i], p->user[i], engine, data[i]), "memory");
        if (!p->reorder[i]) continue;
        scratch[i] = scratch_alloc(p->want_bytes[i]);
        if (!scratch[i]) CHECK(dnnl_out_of_memory, "layout copy");
        CHECK(DNNL(dnnl_memory_create)(&inner[i], p->want[i], engine, scratch[i]), "memory");
    }
    for (int i = 0; i < 2; i++)
        if (p->reorder[i] && user[i]) {
            dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, user[i]}, {DNNL_ARG_TO, inner[i]}};
            CHECK(DNNL(dnnl_primitive_execute)(p->reorder[i], stream, 2, args), "input reorder");
        }
    dnnl_exec_arg_t exec[4];
    for (int i = 0; i < 3; i++) {
        exec[i].arg = p->tags[i];
        exec[i].memory = inner[i] ? inner[i] : user[i];
    }
    int nargs = 3;
    if (p->pad_bytes > 0) {
        pad_buf = scratch_alloc(p->pad_bytes);
        if (!pad_buf) CHECK(dnnl_out_of_memory, "scratchpad");
        CHECK(DNNL(dnnl_memory_create)(&pad_mem, p->pad_md, engine, pad_buf), "scratchpad");
        exec[3].arg = DNNL_ARG_SCRATCHPAD;
        exec[3].memory = pad_mem;
        nargs = 4;
    }
    CHECK(DNNL(dnnl_primitive_execute)(p->prim, stream, nargs, exec), "execute");
    if (p->reorder[2]) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, inner[2]}, {DNNL_ARG_TO, user[2]}};
        CHECK(DNNL(dnnl_primitive_execute)(p->reorder[2], stream, 2, args), "output reorder");
    }
    CHECK(DNNL(dnnl_stream_wait)(stream), "wait");

done:
    for (int i = 0; i < 3; i++) {
        if (inner[i]) DNNL(dnnl_memory_destroy)(inner[i]);
        if (user[i]) DNNL(dnnl_memory_destroy)(user[i]);
        free(scratch[i]);
    }
    if (pad_mem) DNNL(dnnl_memory_destroy)(pad_mem);
    free(pad_buf);
    return status;
}

/* The weights of a forward (kind 0) or input-gradient (kind 1) pass of geometry g, reordered
 * once into the layout that pass wants, with `threads` OpenMP threads, for every run of the
 * batch to share (each run reordered its own copy before: at 64 px, a third of the convolution
 * time was the 512x512x3x3 weights reordered twice per call). `*blocked` is NULL when the plain
 * layout is the wanted one; else free it with spectral_onednn_free. The runs must use the same
 * geometry g (their plans then want the same layout: oneDNN's choice is deterministic). */
int spectral_onednn_weights(int kind, int threads, const int64_t *g, const float *w, float **blocked,
                            const char **what) {
    int status = 0;
    *what = "";
    *blocked = NULL;
    dnnl_memory_t from = NULL, to = NULL;
    void *buf = NULL;
    if (kind != 0 && kind != 1) {
        *what = "weights: forward or input-gradient pass only";
        return (int)dnnl_invalid_arguments;
    }
    plan_t *p = plan_get(kind, g, &status, what);
    if (!p) return status;
    if (!p->reorder[1]) return 0;
    buf = scratch_alloc(p->want_bytes[1]);
    if (!buf) CHECK(dnnl_out_of_memory, "weights copy");
    CHECK(DNNL(dnnl_memory_create)(&from, p->user[1], engine, (void *)w), "memory");
    CHECK(DNNL(dnnl_memory_create)(&to, p->want[1], engine, buf), "memory");
    if (threads > 0 && p_omp_set_num_threads) p_omp_set_num_threads(threads);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    CHECK(DNNL(dnnl_primitive_execute)(p->reorder[1], stream, 2, args), "weights reorder");
    CHECK(DNNL(dnnl_stream_wait)(stream), "wait");
    *blocked = buf;
    buf = NULL;
done:
    if (from) DNNL(dnnl_memory_destroy)(from);
    if (to) DNNL(dnnl_memory_destroy)(to);
    free(buf);
    return status;
}

void spectral_onednn_free(float *p) { free(p); }

/* The implementation the plan of pass `kind` (0 forward, 1 input gradient, 2 weight gradient)
 * and geometry g runs ("brgconv:avx512_core", ...), with oneDNN's version in front ("3.2.0
 * brgconv:..."), for the benchmarks' record and the tests; NULL on error. The string is this
 * thread's, valid until its next call. */
const char *spectral_onednn_impl(int kind, const int64_t *g) {
    static __thread char name[160];
    int status = 0;
    const char *what = "";
    if (kind < 0 || kind > 2) return NULL;
    plan_t *p = plan_get(kind, g, &status, &what);
    if (!p) return NULL;
    const char *impl = impl_name(p->pd);
    if (!impl) return NULL;
    const dnnl_version_t *v = DNNL(dnnl_version)();
    snprintf(name, sizeof name, "%d.%d.%d %s", v->major, v->minor, v->patch, impl);
    return name;
}
