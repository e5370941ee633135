/* autograd/tensor.c — tensor headers and storage, views, host transfer, dtype conversion, and the
 * argument checks shared by all ops. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

int64_t vnm_numel(const vnm_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

void vnm_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i];
    }
}

bool vnm_is_contiguous(const vnm_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

bool vnm_same_shape(const vnm_tensor *a, const vnm_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *vnm_shape_str(const vnm_tensor *t, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (n < len) snprintf(buf + n, len - n, "] %s", vnm_dtype_name(t->dtype));
    return buf;
}

static bool shape_ok(vnm_ctx *ctx, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > VNM_MAX_DIMS) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "tensor: %d dims requested, between 0 and %d supported",
                     ndim, VNM_MAX_DIMS);
        return false;
    }
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            vnm_ctx_fail(ctx, VNM_ERR_INPUT, "tensor: dim %d has negative size %lld", i,
                         (long long)shape[i]);
            return false;
        }
    }
    return true;
}

static vnm_tensor *alloc(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape,
                         bool persistent, bool clear)
{
    if (!shape_ok(ctx, ndim, shape)) return NULL;
    vnm_arena *meta = persistent ? &ctx->persist_meta : &ctx->step_meta;
    vnm_arena *data = persistent ? &ctx->persist_data : &ctx->step_data;
    vnm_tensor *t = vnm_arena_alloc(meta, sizeof *t);
    if (!t) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "out of host memory for a tensor header");
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->device = ctx->device;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    vnm_contiguous_strides(ndim, shape, t->strides);
    t->persistent = persistent;
    t->born = ctx->tape_len;
    t->holders = 1;
    if (!persistent) {
        t->prev_made = ctx->last_made;
        ctx->last_made = t;
    }
    size_t bytes = (size_t)vnm_numel(t) * vnm_dtype_size(dt);
    t->data = vnm_arena_alloc(data, bytes);
    if (!t->data) {
        char s[96];
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "out of %s memory for a tensor %s (%zu bytes)",
                     ctx->be->name, vnm_shape_str(t, s, sizeof s), bytes);
        return NULL;
    }
    if (clear) ctx->be->memset0(t->data, bytes);
    return t;
}

vnm_tensor *vnm_tensor_alloc(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape,
                             bool persistent)
{
    return alloc(ctx, dt, ndim, shape, persistent, true);
}

vnm_tensor *vnm_tensor_empty(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape)
{
    return alloc(ctx, dt, ndim, shape, false, false);
}

vnm_tensor *vnm_tensor_new(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape)
{
    return vnm_tensor_alloc(ctx, dt, ndim, shape, false);
}

vnm_tensor *vnm_tensor_like(vnm_ctx *ctx, const vnm_tensor *x)
{
    return vnm_tensor_alloc(ctx, x->dtype, x->ndim, x->shape, false);
}

vnm_tensor *vnm_tensor_from(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape,
                            const void *host)
{
    vnm_tensor *t = vnm_tensor_new(ctx, dt, ndim, shape);
    if (t && vnm_tensor_from_host(ctx, t, host) != VNM_OK) return NULL;
    return t;
}

static const char *copy_name(vnm_ctx *ctx, const char *name)
{
    if (!name) return NULL;
    size_t len = strlen(name) + 1;
    char *s = vnm_arena_alloc(&ctx->persist_meta, len);
    if (s) memcpy(s, name, len);
    return s;
}

vnm_tensor *vnm_param_new(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape,
                          const char *name)
{
    vnm_tensor *t = vnm_tensor_alloc(ctx, dt, ndim, shape, true);
    if (!t) return NULL;
    t->requires_grad = true;
    t->name = copy_name(ctx, name);
    return t;
}

vnm_tensor *vnm_buffer_new(vnm_ctx *ctx, vnm_dtype dt, int ndim, const int64_t *shape,
                           const char *name)
{
    vnm_tensor *t = vnm_tensor_alloc(ctx, dt, ndim, shape, true);
    if (t) t->name = copy_name(ctx, name);
    return t;
}

vnm_tensor *vnm_tensor_view(vnm_ctx *ctx, vnm_tensor *x, int ndim, const int64_t *shape,
                            const int64_t *strides, int64_t elem_offset)
{
    vnm_tensor *t = vnm_arena_alloc(&ctx->step_meta, sizeof *t);
    if (!t) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "out of host memory for a tensor header");
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->dtype = x->dtype;
    t->device = x->device;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->strides[i] = strides[i];
    }
    t->data = (char *)x->data + elem_offset * (int64_t)vnm_dtype_size(x->dtype);
    t->base = x->base ? x->base : x;
    t->born = ctx->tape_len;
    t->base->holders++;
    t->prev_made = ctx->last_made;
    ctx->last_made = t;
    return t;
}

vnm_layout vnm_layout_of(const vnm_tensor *t)
{
    vnm_layout l;
    l.ndim = t->ndim;
    for (int i = 0; i < VNM_MAX_DIMS; i++) {
        l.shape[i] = i < t->ndim ? t->shape[i] : 1;
        l.strides[i] = i < t->ndim ? t->strides[i] : 0;
    }
    return l;
}

vnm_status vnm_tensor_to_host(vnm_ctx *ctx, const vnm_tensor *t, void *host)
{
    size_t bytes = (size_t)vnm_numel(t) * vnm_dtype_size(t->dtype);
    if (vnm_is_contiguous(t)) {
        ctx->be->to_host(host, t->data, bytes);
        return VNM_OK;
    }
    if (t->dtype != VNM_DTYPE_F32)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "to_host: strided %s tensors are not supported",
                            vnm_dtype_name(t->dtype));
    vnm_tensor *c = vnm_tensor_alloc(ctx, t->dtype, t->ndim, t->shape, false);
    if (!c) return ctx->status;
    vnm_layout d = vnm_layout_of(c), s = vnm_layout_of(t);
    ctx->be->copy_strided(VNM_F32(c), &d, VNM_F32(t), &s, false);
    ctx->be->to_host(host, c->data, bytes);
    return VNM_OK;
}

vnm_status vnm_tensor_from_host(vnm_ctx *ctx, vnm_tensor *t, const void *host)
{
    if (!vnm_is_contiguous(t))
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "from_host: destination is not contiguous");
    ctx->be->from_host(t->data, host, (size_t)vnm_numel(t) * vnm_dtype_size(t->dtype));
    return VNM_OK;
}

vnm_status vnm_tensor_fill(vnm_ctx *ctx, vnm_tensor *t, float value)
{
    if (!vnm_check_f32(ctx, "fill", t, "tensor")) return ctx->status;
    if (!vnm_is_contiguous(t))
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "fill: tensor is not contiguous");
    ctx->be->fill(VNM_F32(t), vnm_numel(t), value);
    return VNM_OK;
}

vnm_status vnm_scale_inplace(vnm_ctx *ctx, vnm_tensor *x, float s)
{
    if (!vnm_check_f32(ctx, "scale_inplace", x, "tensor")) return ctx->status;
    if (!vnm_is_contiguous(x))
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "scale_inplace: tensor is not contiguous");
    ctx->be->scale(VNM_F32(x), VNM_F32(x), s, vnm_numel(x));
    return VNM_OK;
}

float vnm_item(vnm_ctx *ctx, const vnm_tensor *t)
{
    if (!t || vnm_numel(t) < 1) return NAN;
    unsigned char buf[8];
    ctx->be->to_host(buf, t->data, vnm_dtype_size(t->dtype));
    switch (t->dtype) {
    case VNM_DTYPE_F32: {
        float f;
        memcpy(&f, buf, 4);
        return f;
    }
    case VNM_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, buf, 2);
        return vnm_bf16_to_f32(h);
    }
    case VNM_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, buf, 2);
        return vnm_f16_to_f32(h);
    }
    case VNM_DTYPE_I32: {
        int32_t i;
        memcpy(&i, buf, 4);
        return (float)i;
    }
    case VNM_DTYPE_I64: {
        int64_t i;
        memcpy(&i, buf, 8);
        return (float)i;
    }
    case VNM_DTYPE_U8: return (float)buf[0];
    }
    return NAN;
}

static bool is_float(vnm_dtype dt)
{
    return dt == VNM_DTYPE_F32 || dt == VNM_DTYPE_BF16 || dt == VNM_DTYPE_F16;
}

vnm_tensor *vnm_to_dtype(vnm_ctx *ctx, vnm_tensor *x, vnm_dtype dt)
{
    if (!x) return NULL;
    if (!is_float(x->dtype) || !is_float(dt)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "to_dtype: converts between f32, bf16 and f16, not %s to %s",
                     vnm_dtype_name(x->dtype), vnm_dtype_name(dt));
        return NULL;
    }
    if (!vnm_is_contiguous(x)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "to_dtype: input is not contiguous");
        return NULL;
    }
    vnm_tensor *y = vnm_tensor_empty(ctx, dt, x->ndim, x->shape);
    if (y) ctx->be->convert(y->data, dt, x->data, x->dtype, vnm_numel(x));
    return y;
}

bool vnm_check_f32(vnm_ctx *ctx, const char *op, const vnm_tensor *t, const char *what)
{
    if (t->dtype == VNM_DTYPE_F32) return true;
    vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: %s must be f32 on %s, got %s", op, what, ctx->be->name,
                 vnm_dtype_name(t->dtype));
    return false;
}

bool vnm_check_ndim(vnm_ctx *ctx, const char *op, const vnm_tensor *t, const char *what, int lo,
                    int hi)
{
    if (t->ndim >= lo && t->ndim <= hi) return true;
    char s[96];
    if (lo == hi)
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: %s must have %d dims, got %s", op, what, lo,
                     vnm_shape_str(t, s, sizeof s));
    else
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: %s must have %d to %d dims, got %s", op, what, lo,
                     hi, vnm_shape_str(t, s, sizeof s));
    return false;
}

bool vnm_check_kernel(vnm_ctx *ctx, const char *op, bool present)
{
    if (present) return true;
    vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "op %s is not implemented on backend %s", op,
                 ctx->be->name);
    return false;
}

int vnm_norm_dim(vnm_ctx *ctx, const char *op, const vnm_tensor *t, int dim)
{
    int d = dim < 0 ? dim + t->ndim : dim;
    if (d >= 0 && d < t->ndim) return d;
    char s[96];
    vnm_ctx_fail(ctx, VNM_ERR_INPUT, "%s: dim %d out of range for %s", op, dim,
                 vnm_shape_str(t, s, sizeof s));
    return -1;
}
