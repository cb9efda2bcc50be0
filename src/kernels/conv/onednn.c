/* Fast CPU convolution (f32) through oneDNN, the library PyTorch's CPU convolutions run on.
 *
 * Why C and not Rust FFI declarations: oneDNN 2.x's C API passes its descriptors
 * (dnnl_memory_desc_t, dnnl_convolution_desc_t) by value-sized structs whose layouts change
 * between releases; compiling against the installed header keeps them right. No Rust crate
 * wraps oneDNN. build.rs compiles this file only when it finds the header and the library.
 *
 * One call = one convolution pass on plain NCHW / OIHW f32 buffers (what candle holds):
 *   kind 0: forward         a = x (N,C,H,W),        b = w (O,C,kH,kW) -> out = y  (N,O,Ho,Wo)
 *   kind 1: backward data   a = dy (N,O,Ho,Wo),     b = w             -> out = dx (N,C,H,W)
 *   kind 2: backward weight a = x,                  b = dy            -> out = dw (O,C,kH,kW)
 * The primitive picks its own (blocked) layouts ("any"); inputs and outputs are reordered to and
 * from them around the call, as PyTorch does for NCHW tensors. oneDNN caches primitives (its
 * primitive cache), so a repeated shape costs a descriptor lookup, not a JIT compile.
 * Returns 0, or a oneDNN status (> 0) with the failing step in `what`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <oneapi/dnnl/dnnl.h>

extern void omp_set_num_threads(int);

static dnnl_engine_t engine;
static dnnl_status_t engine_status = dnnl_success;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

static void engine_init(void) { engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0); }

#define CHECK(call, step)                                                                        \
    do {                                                                                          \
        dnnl_status_t s_ = (call);                                                                \
        if (s_ != dnnl_success) {                                                                 \
            *what = (step);                                                                       \
            status = (int)s_;                                                                     \
            goto done;                                                                            \
        }                                                                                         \
    } while (0)

/* One argument of the primitive: the user's plain buffer and, when the primitive wants another
 * layout, a scratch buffer in that layout plus the memory objects for both. */
typedef struct {
    dnnl_memory_t user, inner;
    void *scratch;
} arg_t;

static dnnl_status_t reorder(dnnl_stream_t stream, dnnl_memory_t from, dnnl_memory_t to) {
    const dnnl_memory_desc_t *fmd, *tmd;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_status_t s = dnnl_memory_get_memory_desc(from, &fmd);
    if (s == dnnl_success) s = dnnl_memory_get_memory_desc(to, &tmd);
    if (s == dnnl_success) s = dnnl_reorder_primitive_desc_create(&pd, fmd, engine, tmd, engine, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(&prim, pd);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
        s = dnnl_primitive_execute(prim, stream, 2, args);
    }
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return s;
}

/* Wraps `data` (plain layout `user_md`) for a primitive wanting `want`. */
static dnnl_status_t arg_init(arg_t *a, const dnnl_memory_desc_t *user_md,
                              const dnnl_memory_desc_t *want, void *data) {
    a->user = a->inner = NULL;
    a->scratch = NULL;
    dnnl_status_t s = dnnl_memory_create(&a->user, user_md, engine, data);
    if (s != dnnl_success) return s;
    if (dnnl_memory_desc_equal(user_md, want)) {
        a->inner = a->user;
        return dnnl_success;
    }
    size_t bytes = dnnl_memory_desc_get_size(want);
    a->scratch = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!a->scratch) return dnnl_out_of_memory;
    return dnnl_memory_create(&a->inner, want, engine, a->scratch);
}

static void arg_free(arg_t *a) {
    if (a->inner && a->inner != a->user) dnnl_memory_destroy(a->inner);
    if (a->user) dnnl_memory_destroy(a->user);
    free(a->scratch);
}

int spectral_onednn_conv(int kind, int threads, const int64_t *g, const float *a, const float *b,
                         float *out, const char **what) {
    /* g = n, c_in, h, w, c_out, kh, kw, stride, pad, ho, wo */
    int status = 0;
    *what = "";
    dnnl_stream_t stream = NULL;
    dnnl_primitive_desc_t fwd_pd = NULL, pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_memory_t pad_mem = NULL;
    void *pad_buf = NULL;
    arg_t args[3];
    memset(args, 0, sizeof args);

    pthread_once(&engine_once, engine_init);
    CHECK(engine_status, "engine");
    if (threads > 0) omp_set_num_threads(threads);
    /* The primitive's scratchpad is allocated here and freed after the call: oneDNN's default
     * (library-owned, per thread) keeps the largest one ever needed for the life of the thread
     * (measured: +20 MiB on the peak of a ResNet-50 224 px input-gradient pass). */
    CHECK(dnnl_primitive_attr_create(&attr), "attributes");
    CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "attributes");

    dnnl_dims_t src_d = {g[0], g[1], g[2], g[3]};
    dnnl_dims_t wei_d = {g[4], g[1], g[5], g[6]};
    dnnl_dims_t dst_d = {g[0], g[4], g[9], g[10]};
    dnnl_dims_t strides = {g[7], g[7]};
    dnnl_dims_t pad_l = {g[8], g[8]};
    /* right padding: what makes the output size come out as given (PyTorch's floor rule) */
    dnnl_dims_t pad_r = {(g[9] - 1) * g[7] + g[5] - g[2] - g[8],
                         (g[10] - 1) * g[7] + g[6] - g[3] - g[8]};
    dnnl_memory_desc_t src_u, wei_u, dst_u, src_any, wei_any, dst_any;
    CHECK(dnnl_memory_desc_init_by_tag(&src_u, 4, src_d, dnnl_f32, dnnl_nchw), "src desc");
    CHECK(dnnl_memory_desc_init_by_tag(&wei_u, 4, wei_d, dnnl_f32, dnnl_oihw), "weights desc");
    CHECK(dnnl_memory_desc_init_by_tag(&dst_u, 4, dst_d, dnnl_f32, dnnl_nchw), "dst desc");
    CHECK(dnnl_memory_desc_init_by_tag(&src_any, 4, src_d, dnnl_f32, dnnl_format_tag_any), "src desc");
    CHECK(dnnl_memory_desc_init_by_tag(&wei_any, 4, wei_d, dnnl_f32, dnnl_format_tag_any), "weights desc");
    CHECK(dnnl_memory_desc_init_by_tag(&dst_any, 4, dst_d, dnnl_f32, dnnl_format_tag_any), "dst desc");

    dnnl_convolution_desc_t fwd_desc, desc;
    CHECK(dnnl_convolution_forward_desc_init(&fwd_desc, kind == 0 ? dnnl_forward_inference : dnnl_forward_training,
                                             dnnl_convolution_direct, &src_any, &wei_any, NULL,
                                             &dst_any, strides, pad_l, pad_r),
          "forward desc");
    CHECK(dnnl_primitive_desc_create(&fwd_pd, &fwd_desc, attr, engine, NULL), "forward primitive desc");
    CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream");

    /* args[0], args[1]: inputs a, b; args[2]: output */
    const dnnl_memory_desc_t *ua[3], *wa[3];
    int tags[3];
    if (kind == 0) {
        pd = fwd_pd;
        fwd_pd = NULL;
        ua[0] = &src_u; ua[1] = &wei_u; ua[2] = &dst_u;
        wa[0] = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
        wa[1] = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        wa[2] = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
        tags[0] = DNNL_ARG_SRC; tags[1] = DNNL_ARG_WEIGHTS; tags[2] = DNNL_ARG_DST;
    } else if (kind == 1) {
        CHECK(dnnl_convolution_backward_data_desc_init(&desc, dnnl_convolution_direct, &src_any, &wei_any,
                                                       &dst_any, strides, pad_l, pad_r),
              "backward-data desc");
        CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, engine, fwd_pd), "backward-data primitive desc");
        ua[0] = &dst_u; ua[1] = &wei_u; ua[2] = &src_u;
        wa[0] = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0);
        wa[1] = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        wa[2] = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_src_md, 0);
        tags[0] = DNNL_ARG_DIFF_DST; tags[1] = DNNL_ARG_WEIGHTS; tags[2] = DNNL_ARG_DIFF_SRC;
    } else {
        CHECK(dnnl_convolution_backward_weights_desc_init(&desc, dnnl_convolution_direct, &src_any, &wei_any,
                                                          NULL, &dst_any, strides, pad_l, pad_r),
              "backward-weights desc");
        CHECK(dnnl_primitive_desc_create(&pd, &desc, attr, engine, fwd_pd), "backward-weights primitive desc");
        ua[0] = &src_u; ua[1] = &dst_u; ua[2] = &wei_u;
        wa[0] = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
        wa[1] = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0);
        wa[2] = dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0);
        tags[0] = DNNL_ARG_SRC; tags[1] = DNNL_ARG_DIFF_DST; tags[2] = DNNL_ARG_DIFF_WEIGHTS;
    }
    CHECK(dnnl_primitive_create(&prim, pd), "primitive");
    CHECK(arg_init(&args[0], ua[0], wa[0], (void *)a), "input 1 memory");
    CHECK(arg_init(&args[1], ua[1], wa[1], (void *)b), "input 2 memory");
    CHECK(arg_init(&args[2], ua[2], wa[2], out), "output memory");
    for (int i = 0; i < 2; i++)
        if (args[i].inner != args[i].user) CHECK(reorder(stream, args[i].user, args[i].inner), "input reorder");
    dnnl_exec_arg_t exec[4];
    for (int i = 0; i < 3; i++) {
        exec[i].arg = tags[i];
        exec[i].memory = args[i].inner;
    }
    int nargs = 3;
    const dnnl_memory_desc_t *pad_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t pad_bytes = pad_md ? dnnl_memory_desc_get_size(pad_md) : 0;
    if (pad_bytes > 0) {
        pad_buf = aligned_alloc(64, (pad_bytes + 63) / 64 * 64);
        if (!pad_buf) CHECK(dnnl_out_of_memory, "scratchpad");
        CHECK(dnnl_memory_create(&pad_mem, pad_md, engine, pad_buf), "scratchpad");
        exec[3].arg = DNNL_ARG_SCRATCHPAD;
        exec[3].memory = pad_mem;
        nargs = 4;
    }
    CHECK(dnnl_primitive_execute(prim, stream, nargs, exec), "execute");
    if (args[2].inner != args[2].user) CHECK(reorder(stream, args[2].inner, args[2].user), "output reorder");
    CHECK(dnnl_stream_wait(stream), "wait");

done:
    for (int i = 0; i < 3; i++) arg_free(&args[i]);
    if (pad_mem) dnnl_memory_destroy(pad_mem);
    free(pad_buf);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (fwd_pd) dnnl_primitive_desc_destroy(fwd_pd);
    if (stream) dnnl_stream_destroy(stream);
    return status;
}

/* The implementation oneDNN picks for a forward pass of this geometry ("jit:avx512_core", ...),
 * for the benchmarks' record; NULL on error. The string is this thread's, valid until its next call. */
const char *spectral_onednn_impl(const int64_t *g) {
    pthread_once(&engine_once, engine_init);
    if (engine_status != dnnl_success) return NULL;
    dnnl_dims_t src_d = {g[0], g[1], g[2], g[3]}, wei_d = {g[4], g[1], g[5], g[6]},
                dst_d = {g[0], g[4], g[9], g[10]}, strides = {g[7], g[7]}, pad_l = {g[8], g[8]};
    dnnl_dims_t pad_r = {(g[9] - 1) * g[7] + g[5] - g[2] - g[8], (g[10] - 1) * g[7] + g[6] - g[3] - g[8]};
    dnnl_memory_desc_t s, w, d;
    dnnl_memory_desc_init_by_tag(&s, 4, src_d, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&w, 4, wei_d, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&d, 4, dst_d, dnnl_f32, dnnl_format_tag_any);
    dnnl_convolution_desc_t desc;
    dnnl_primitive_desc_t pd;
    if (dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &s, &w,
                                           NULL, &d, strides, pad_l, pad_r) != dnnl_success)
        return NULL;
    if (dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL) != dnnl_success) return NULL;
    static __thread char name[128];
    const char *impl = NULL;
    name[0] = 0;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl) {
        strncpy(name, impl, sizeof name - 1);
        name[sizeof name - 1] = 0;
    }
    dnnl_primitive_desc_destroy(pd);
    return name;
}
