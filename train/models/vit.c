/* train/models/vit.c — the ViT / DeiT model of vit.h: construction with timm's default init, the
 * parameter table under timm names, the forward pass on the autograd ops, and safetensors
 * import/export.
 *
 * Init ('' mode of timm's VisionTransformer.init_weights): Linear weights trunc_normal(std .02)
 * with zero bias, pos_embed and dist_token trunc_normal(.02), cls_token normal(1e-6), LayerNorm
 * ones/zeros. The patch-embedding conv is not an nn.Linear, so timm leaves it at PyTorch's Conv2d
 * default (kaiming_uniform(a=√5)): weight and bias uniform in ±1/√fan_in, fan_in = C·p·p; we do
 * the same. timm's trunc_normal_ bounds are absolute (±2, i.e. ±100 std at std .02, no truncation
 * in practice); we truncate at ±2 std by resampling the out-of-range draws from the context RNG,
 * which changes the distribution negligibly and keeps every draw on the context stream.
 */
#include "vit.h"

#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../safetensors.h"

static void shape_text(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < len) snprintf(buf + k, len - k, "]");
}

vnm_status vnm_vit_config_preset(const char *size, vnm_vit_config *cfg, char *err, size_t err_len)
{
    static const struct {
        const char *name;
        int64_t dim, heads;
    } presets[] = {{"tiny", 192, 3}, {"small", 384, 6}, {"base", 768, 12}};
    for (size_t i = 0; size && i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(size, presets[i].name) != 0) continue;
        *cfg = (vnm_vit_config){.embed_dim = presets[i].dim, .depth = 12,
                                .num_heads = presets[i].heads, .mlp_ratio = 4.0, .patch = 16,
                                .img_size = 224, .in_chans = 3, .num_classes = 1000};
        return VNM_OK;
    }
    return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                "vit: unknown model size '%s' (expected tiny, small or base)",
                size ? size : "(null)");
}

/* ---- init ---- */

/* normal(0, std) truncated at ±2 std: the out-of-range draws are redrawn, each round drawing only
 * as many values as are still missing into the front of t (a contiguous 1-D view of it), so the
 * stream stays on the context RNG and does not depend on the thread count. */
static vnm_status init_trunc_normal(vnm_ctx *ctx, vnm_tensor *t, float std)
{
    int64_t n = vnm_numel(t);
    float *val = malloc((size_t)n * sizeof *val), *draw = malloc((size_t)n * sizeof *draw);
    if (!val || !draw) {
        free(val);
        free(draw);
        return vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "vit: out of memory initialising %s", t->name);
    }
    vnm_status st = VNM_OK;
    for (int64_t filled = 0; st == VNM_OK && filled < n;) {
        vnm_tensor front = *t; // [n - filled], the first elements of t's storage
        front.ndim = 1;
        front.shape[0] = n - filled;
        front.strides[0] = 1;
        int64_t drawn = n - filled;
        st = vnm_rng_normal(ctx, &front, 0.0f, std);
        if (st == VNM_OK) st = vnm_tensor_to_host(ctx, &front, draw);
        for (int64_t i = 0; st == VNM_OK && i < drawn; i++)
            if (fabsf(draw[i]) <= 2.0f * std) val[filled++] = draw[i];
    }
    if (st == VNM_OK) st = vnm_tensor_from_host(ctx, t, val);
    free(val);
    free(draw);
    return st;
}

static vnm_status init_linear(vnm_ctx *ctx, vnm_vit_linear *l)
{
    vnm_status st = init_trunc_normal(ctx, l->weight, 0.02f);
    return st == VNM_OK ? vnm_tensor_fill(ctx, l->bias, 0.0f) : st;
}

/* ---- construction ---- */

static bool linear_make(vnm_ctx *ctx, vnm_vit_linear *l, const char *name, int64_t in,
                        int64_t out)
{
    snprintf(l->name, sizeof l->name, "%s", name);
    l->in = in;
    l->out = out;
    if (l->wndim == 0) {
        l->wndim = 2;
        l->wshape[0] = out;
        l->wshape[1] = in;
    }
    char pname[VNM_VIT_NAME_MAX + 8];
    snprintf(pname, sizeof pname, "%s.weight", name);
    l->weight = vnm_param_new(ctx, VNM_DTYPE_F32, l->wndim, l->wshape, pname);
    snprintf(pname, sizeof pname, "%s.bias", name);
    l->bias = vnm_param_new(ctx, VNM_DTYPE_F32, 1, &out, pname);
    return l->weight && l->bias;
}

static vnm_tensor *vec_param(vnm_ctx *ctx, int64_t n, const char *name, float value)
{
    vnm_tensor *t = vnm_param_new(ctx, VNM_DTYPE_F32, 1, &n, name);
    if (t && vnm_tensor_fill(ctx, t, value) != VNM_OK) return NULL;
    return t;
}

static void add_tensor(vnm_vit *m, vnm_tensor *t)
{
    vnm_vit_param *p = &m->params[m->n_params++];
    snprintf(p->name, sizeof p->name, "%s", t->name);
    p->tensor = t;
    p->linear = NULL;
}

static void add_linear(vnm_vit *m, vnm_vit_linear *l)
{
    vnm_vit_param *p = &m->params[m->n_params++];
    snprintf(p->name, sizeof p->name, "%s.weight", l->name);
    p->tensor = NULL;
    p->linear = l;
    add_tensor(m, l->bias);
    m->linears[m->n_linears++] = l;
}

static vnm_status check_config(vnm_ctx *ctx, const vnm_vit_config *c)
{
    if (c->embed_dim <= 0 || c->depth <= 0 || c->num_heads <= 0 || c->patch <= 0 ||
        c->img_size <= 0 || c->in_chans <= 0 || c->num_classes <= 0 || !(c->mlp_ratio > 0))
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                            "vit: config needs positive embed_dim, depth, num_heads, mlp_ratio, "
                            "patch, img_size, in_chans, num_classes");
    if (c->embed_dim % c->num_heads)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "vit: embed_dim %lld not a multiple of heads %lld",
                            (long long)c->embed_dim, (long long)c->num_heads);
    if (c->img_size % c->patch)
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "vit: img_size %lld not a multiple of patch %lld",
                            (long long)c->img_size, (long long)c->patch);
    if (!(c->drop_path_rate >= 0 && c->drop_path_rate < 1))
        return vnm_ctx_fail(ctx, VNM_ERR_INPUT, "vit: drop_path_rate %g outside [0, 1)",
                            (double)c->drop_path_rate);
    return VNM_OK;
}

static const char *block_name(char name[VNM_VIT_NAME_MAX], int64_t block, const char *suffix)
{
    snprintf(name, VNM_VIT_NAME_MAX, "blocks.%lld.%s", (long long)block, suffix);
    return name;
}

static bool build(vnm_ctx *ctx, vnm_vit *m)
{
    const vnm_vit_config *c = &m->cfg;
    int64_t D = c->embed_dim, p = c->patch;
    char name[VNM_VIT_NAME_MAX];
    m->patch_embed.wndim = 4;
    memcpy(m->patch_embed.wshape, (int64_t[]){D, c->in_chans, p, p}, sizeof(int64_t[4]));
    if (!linear_make(ctx, &m->patch_embed, "patch_embed.proj", c->in_chans * p * p, D))
        return false;
    m->cls_token = vnm_param_new(ctx, VNM_DTYPE_F32, 3, VNM_SHAPE(1, 1, D), "cls_token");
    if (c->distilled)
        m->dist_token = vnm_param_new(ctx, VNM_DTYPE_F32, 3, VNM_SHAPE(1, 1, D), "dist_token");
    m->pos_embed = vnm_param_new(ctx, VNM_DTYPE_F32, 3,
                                 VNM_SHAPE(1, m->num_prefix + m->num_patches, D), "pos_embed");
    if (!m->cls_token || (c->distilled && !m->dist_token) || !m->pos_embed) return false;
    for (int64_t i = 0; i < c->depth; i++) {
        vnm_vit_block *b = &m->blocks[i];
        b->drop_path = c->depth > 1 ? c->drop_path_rate * (float)i / (float)(c->depth - 1) : 0.0f;
        if (!(b->norm1_w = vec_param(ctx, D, block_name(name, i, "norm1.weight"), 1.0f)) ||
            !(b->norm1_b = vec_param(ctx, D, block_name(name, i, "norm1.bias"), 0.0f)) ||
            !linear_make(ctx, &b->qkv, block_name(name, i, "attn.qkv"), D, 3 * D) ||
            !linear_make(ctx, &b->proj, block_name(name, i, "attn.proj"), D, D) ||
            !(b->norm2_w = vec_param(ctx, D, block_name(name, i, "norm2.weight"), 1.0f)) ||
            !(b->norm2_b = vec_param(ctx, D, block_name(name, i, "norm2.bias"), 0.0f)) ||
            !linear_make(ctx, &b->fc1, block_name(name, i, "mlp.fc1"), D, m->mlp_hidden) ||
            !linear_make(ctx, &b->fc2, block_name(name, i, "mlp.fc2"), m->mlp_hidden, D))
            return false;
    }
    if (!(m->norm_w = vec_param(ctx, D, "norm.weight", 1.0f)) ||
        !(m->norm_b = vec_param(ctx, D, "norm.bias", 0.0f)) ||
        !linear_make(ctx, &m->head, "head", D, c->num_classes) ||
        (c->distilled && !linear_make(ctx, &m->head_dist, "head_dist", D, c->num_classes)))
        return false;

    /* timm's named_parameters() order */
    add_tensor(m, m->cls_token);
    if (m->dist_token) add_tensor(m, m->dist_token);
    add_tensor(m, m->pos_embed);
    add_linear(m, &m->patch_embed);
    for (int64_t i = 0; i < c->depth; i++) {
        vnm_vit_block *b = &m->blocks[i];
        add_tensor(m, b->norm1_w);
        add_tensor(m, b->norm1_b);
        add_linear(m, &b->qkv);
        add_linear(m, &b->proj);
        add_tensor(m, b->norm2_w);
        add_tensor(m, b->norm2_b);
        add_linear(m, &b->fc1);
        add_linear(m, &b->fc2);
    }
    add_tensor(m, m->norm_w);
    add_tensor(m, m->norm_b);
    add_linear(m, &m->head);
    if (c->distilled) add_linear(m, &m->head_dist);
    return true;
}

static vnm_status init_weights(vnm_ctx *ctx, vnm_vit *m)
{
    vnm_status st = init_trunc_normal(ctx, m->pos_embed, 0.02f);
    if (st == VNM_OK) st = vnm_rng_normal(ctx, m->cls_token, 0.0f, 1e-6f);
    if (st == VNM_OK && m->dist_token) st = init_trunc_normal(ctx, m->dist_token, 0.02f);
    float bound = 1.0f / sqrtf((float)m->patch_embed.in);
    if (st == VNM_OK) st = vnm_rng_uniform(ctx, m->patch_embed.weight, -bound, bound);
    if (st == VNM_OK) st = vnm_rng_uniform(ctx, m->patch_embed.bias, -bound, bound);
    for (int i = 0; st == VNM_OK && i < m->n_linears; i++)
        if (m->linears[i] != &m->patch_embed) st = init_linear(ctx, m->linears[i]);
    return st;
}

vnm_vit *vnm_vit_new(vnm_ctx *ctx, const vnm_vit_config *cfg)
{
    if (!cfg) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "vit: NULL config");
        return NULL;
    }
    if (check_config(ctx, cfg) != VNM_OK) return NULL;
    vnm_vit *m = calloc(1, sizeof *m);
    if (!m) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "vit: out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    m->grid = cfg->img_size / cfg->patch;
    m->num_patches = m->grid * m->grid;
    m->num_prefix = cfg->distilled ? 2 : 1;
    m->head_dim = cfg->embed_dim / cfg->num_heads;
    m->mlp_hidden = (int64_t)((double)cfg->embed_dim * cfg->mlp_ratio); /* timm: int(D·ratio) */
    int max_linears = (int)(4 * cfg->depth + 3);
    m->blocks = calloc((size_t)cfg->depth, sizeof *m->blocks);
    m->linears = calloc((size_t)max_linears, sizeof *m->linears);
    m->params = calloc((size_t)(2 * max_linears + 4 * cfg->depth + 5), sizeof *m->params);
    if (!m->blocks || !m->linears || !m->params) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "vit: out of memory");
        vnm_vit_free(m);
        return NULL;
    }
    for (int64_t i = 0; i < cfg->depth; i++) {
        m->blocks[i].model = m;
        m->blocks[i].index = i;
    }
    if (!build(ctx, m) || (!cfg->skip_init && init_weights(ctx, m) != VNM_OK)) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "vit: cannot allocate or initialise the parameters");
        vnm_vit_free(m);
        return NULL;
    }
    return m;
}

void vnm_vit_free(vnm_vit *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_linears; i++) {
        vnm_sparse_weight_free(m->linears[i]->sparse);
        vnm_srste_free(m->linears[i]->srste);
    }
    free(m->blocks);
    free(m->linears);
    free(m->params);
    free(m);
}

void vnm_vit_set_checkpointing(vnm_vit *m, bool on) { m->checkpoint_blocks = on; }

int vnm_vit_param_count(const vnm_vit *m) { return m->n_params; }

vnm_vit_param vnm_vit_param_at(const vnm_vit *m, int i)
{
    vnm_vit_param p = m->params[i];
    if (p.linear) p.tensor = p.linear->sparse ? p.linear->sparse->vals : p.linear->weight;
    return p;
}

int64_t vnm_vit_numel(const vnm_vit *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) {
        const vnm_vit_param *p = &m->params[i];
        n += p->linear ? p->linear->in * p->linear->out : vnm_numel(p->tensor);
    }
    return n;
}

/* ---- linears ---- */

vnm_tensor *vnm_vit_linear_forward(vnm_ctx *ctx, vnm_vit_linear *l, vnm_tensor *x)
{
    if (!x) return NULL;
    if (l->sparse) return vnm_sparse_linear(ctx, x, l->sparse, l->bias);
    if (l->srste) return vnm_srste_linear(ctx, l->srste, x, l->bias, l->srste_step);
    vnm_tensor *w = l->weight; // [out, in] (a view of the conv's [D, C, p, p])
    if (w->ndim != 2) w = vnm_reshape(ctx, w, 2, VNM_SHAPE(l->out, l->in));
    return vnm_linear(ctx, x, w, l->bias);
}

vnm_status vnm_vit_linear_set_sparse(vnm_vit_linear *l, vnm_sparse_weight *sw, char *err,
                                     size_t err_len)
{
    if (!sw)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "vit: %s: NULL sparse weight", l->name);
    if (sw->O != l->out || sw->I != l->in)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                    "vit: %s: sparse weight is [%lld, %lld], the layer needs [%lld, %lld]", l->name,
                    (long long)sw->O, (long long)sw->I, (long long)l->out, (long long)l->in);
    if (l->sparse != sw) vnm_sparse_weight_free(l->sparse);
    l->sparse = sw;
    return VNM_OK;
}

void vnm_vit_linear_set_srste(vnm_vit_linear *l, vnm_srste *s)
{
    if (l->srste != s) vnm_srste_free(l->srste);
    l->srste = s;
}

void vnm_vit_set_step(vnm_vit *m, int64_t step)
{
    for (int i = 0; i < m->n_linears; i++) m->linears[i]->srste_step = step;
}

/* ---- forward ---- */

/* images[B, C, H, W] → patches[B, N, C·p·p] in (channel, kernel row, kernel col) order, the
 * flattening of the conv weight [D, C, p, p]; within the 4-dim limit of the ops. */
static vnm_tensor *patchify(vnm_ctx *ctx, const vnm_vit *m, vnm_tensor *images)
{
    int64_t B = images->shape[0], C = m->cfg.in_chans, p = m->cfg.patch, g = m->grid;
    static const int swap12[4] = {0, 2, 1, 3};
    vnm_tensor *x = vnm_reshape(ctx, images, 4, VNM_SHAPE(B * C * g, p, g, p)); // [BCi, r, j, s]
    x = vnm_permute(ctx, x, swap12);                                            // [BCi, j, r, s]
    x = vnm_reshape(ctx, x, 4, VNM_SHAPE(B, C, g * g, p * p));                  // [B, C, N, rs]
    x = vnm_permute(ctx, x, swap12);                                            // [B, N, C, rs]
    return vnm_reshape(ctx, x, 3, VNM_SHAPE(B, g * g, C * p * p));              // [B, N, Cpp]
}

/* x[B, T, D] → x + drop_path(proj(attention(qkv(norm1(x))))), on the first `keep` tokens only
 * when keep > 0 (their queries against every token's keys): [B, keep, D] */
static vnm_tensor *attn_branch(vnm_ctx *ctx, const vnm_vit *m, vnm_vit_block *b, vnm_tensor *x,
                               int64_t keep)
{
    vnm_tensor *h = vnm_layernorm(ctx, x, b->norm1_w, b->norm1_b, VNM_VIT_LN_EPS); // [B, T, D]
    vnm_tensor *qkv = vnm_vit_linear_forward(ctx, &b->qkv, h);                    // [B, T, 3D]
    /* q, k, v read in place as [B, H, T, hd] heads; the result comes back as [B, T, D] */
    vnm_tensor *a = vnm_attention_qkv(ctx, qkv, m->cfg.num_heads, keep, false, 0.0f);
    a = vnm_vit_linear_forward(ctx, &b->proj, a);
    if (keep > 0 && x) x = vnm_slice(ctx, x, 1, 0, keep); // [B, keep, D]
    return vnm_add(ctx, x, vnm_drop_path(ctx, a, b->drop_path));
}

/* x[B, T, D] → x + drop_path(fc2(gelu(fc1(norm2(x))))) */
static vnm_tensor *mlp_branch(vnm_ctx *ctx, vnm_vit_block *b, vnm_tensor *x)
{
    vnm_tensor *h = vnm_layernorm(ctx, x, b->norm2_w, b->norm2_b, VNM_VIT_LN_EPS);
    h = vnm_gelu(ctx, vnm_vit_linear_forward(ctx, &b->fc1, h)); // [B, T, hidden]
    h = vnm_vit_linear_forward(ctx, &b->fc2, h);                // [B, T, D]
    return vnm_add(ctx, x, vnm_drop_path(ctx, h, b->drop_path));
}

/* One block. The heads read the prefix tokens (class, distillation) of the last block's output
 * alone, so that block computes only their rows after its keys and values: the same logits and
 * gradients for 1/T of its attention output, projection and MLP. Not while a linear hook
 * (calibration) wants every token's activations. */
static vnm_tensor *block_forward(vnm_ctx *ctx, vnm_vit_block *b, vnm_tensor *x)
{
    const vnm_vit *m = b->model;
    bool last = b->index == m->cfg.depth - 1;
    int64_t keep = last && !vnm_ctx_has_linear_hook(ctx) ? m->num_prefix : 0;
    return mlp_branch(ctx, b, attn_branch(ctx, m, b, x, keep));
}

static vnm_tensor *block_segment(vnm_ctx *ctx, vnm_tensor *const *in, int n_in, void *block)
{
    (void)n_in;
    return block_forward(ctx, block, in[0]);
}

/* the token at position `pos` of x[B, T, D] through a head: [B, classes] */
static vnm_tensor *pool_head(vnm_ctx *ctx, vnm_vit_linear *head, vnm_tensor *x, int64_t pos)
{
    vnm_tensor *t = vnm_slice(ctx, x, 1, pos, pos + 1); // [B, 1, D]
    t = vnm_reshape(ctx, t, 2, VNM_SHAPE(x->shape[0], x->shape[2]));
    return vnm_vit_linear_forward(ctx, head, t);
}

vnm_tensor *vnm_vit_forward(vnm_ctx *ctx, vnm_vit *m, vnm_tensor *images,
                            vnm_tensor **dist_logits)
{
    if (dist_logits) *dist_logits = NULL;
    if (!images || !m) return NULL;
    const vnm_vit_config *c = &m->cfg;
    char s[96];
    if (images->dtype != VNM_DTYPE_F32 || images->ndim != 4 || images->shape[0] < 1 ||
        images->shape[1] != c->in_chans || images->shape[2] != c->img_size ||
        images->shape[3] != c->img_size) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "vit: images are %s, expected [B, %lld, %lld, %lld] f32",
                     vnm_shape_str(images, s, sizeof s), (long long)c->in_chans,
                     (long long)c->img_size, (long long)c->img_size);
        return NULL;
    }
    int64_t B = images->shape[0], D = c->embed_dim;
    vnm_tensor *x = vnm_vit_linear_forward(ctx, &m->patch_embed, patchify(ctx, m, images));
    /* the tokens broadcast over the batch by adding them to zeros [B, 1, D] */
    vnm_tensor *zeros = vnm_tensor_new(ctx, VNM_DTYPE_F32, 3, VNM_SHAPE(B, 1, D));
    vnm_tensor *parts[3] = {vnm_add(ctx, zeros, m->cls_token), NULL, x};
    int n = 2;
    if (m->dist_token) {
        parts[1] = vnm_add(ctx, zeros, m->dist_token);
        n = 3;
    } else {
        parts[1] = x;
    }
    x = vnm_add(ctx, vnm_concat(ctx, n, parts, 1), m->pos_embed); // [B, T, D]
    for (int64_t i = 0; i < c->depth; i++)
        /* a segment gives back, as it ends, what no backward reads: evaluation holds one
         * block's activations at a time */
        x = m->checkpoint_blocks ? vnm_checkpoint(ctx, block_segment, &m->blocks[i], 1, &x)
                                 : vnm_segment(ctx, block_segment, &m->blocks[i], 1, &x);
    x = vnm_layernorm(ctx, x, m->norm_w, m->norm_b, VNM_VIT_LN_EPS);
    if (!x) return NULL;
    vnm_tensor *logits = pool_head(ctx, &m->head, x, 0); // [B, classes]
    if (!c->distilled) return logits;
    vnm_tensor *dist = pool_head(ctx, &m->head_dist, x, 1);
    if (dist_logits && vnm_ctx_training(ctx)) {
        *dist_logits = dist;
        return logits;
    }
    return vnm_scale(ctx, vnm_add(ctx, logits, dist), 0.5f);
}

/* ---- safetensors ---- */

/* The timm shape of parameter p (a linear's dense weight shape, also when it is sparse). */
static int param_shape(const vnm_vit_param *p, int64_t *shape)
{
    if (p->linear) {
        memcpy(shape, p->linear->wshape, sizeof p->linear->wshape);
        return p->linear->wndim;
    }
    memcpy(shape, p->tensor->shape, sizeof p->tensor->shape);
    return p->tensor->ndim;
}

static bool is_head_name(const char *name)
{
    return strncmp(name, "head.", 5) == 0 || strncmp(name, "head_dist.", 10) == 0;
}

/* DeiT --finetune: a checkpoint head for another class count is dropped. */
static bool head_mismatch(const vnm_vit *m, const vnm_safetensors *st, const char *name)
{
    if (!is_head_name(name)) return false;
    const vnm_safetensors_tensor *t = vnm_safetensors_find(st, name);
    return t && t->ndim >= 1 && t->shape[0] != m->cfg.num_classes;
}

static bool ignored(const char *name, const char *const *ignore, int n_ignore)
{
    for (int i = 0; i < n_ignore; i++)
        if (fnmatch(ignore[i], name, 0) == 0) return true;
    return false;
}

static int find_param(const vnm_vit *m, const char *name)
{
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return i;
    return -1;
}

/* Everything a load needs checked before any parameter changes. */
static vnm_status check_file(const vnm_vit *m, const vnm_safetensors *st, const char *path,
                             const char *const *ignore, int n_ignore, char *err, size_t err_len)
{
    char want[96], got[96];
    for (int i = 0; i < m->n_params; i++) {
        vnm_vit_param p = vnm_vit_param_at(m, i);
        if (p.linear && p.linear->sparse)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                        "vit: %s: cannot load '%s' into a pruned (sparse) layer", path, p.name);
        if (head_mismatch(m, st, p.name)) continue;
        const vnm_safetensors_tensor *t = vnm_safetensors_find(st, p.name);
        int64_t shape[VNM_MAX_DIMS];
        int ndim = param_shape(&p, shape);
        shape_text(ndim, shape, want, sizeof want);
        if (!t)
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "vit: %s: missing tensor '%s' (expected %s)",
                        path, p.name, want);
        if (t->ndim != ndim || memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) != 0) {
            shape_text(t->ndim, t->shape, got, sizeof got);
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                        "vit: %s: tensor '%s' has shape %s, expected %s", path, p.name, got, want);
        }
    }
    for (size_t i = 0; i < vnm_safetensors_count(st); i++) {
        const char *name = vnm_safetensors_tensor_at(st, i)->name;
        if (find_param(m, name) < 0 && !ignored(name, ignore, n_ignore))
            return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                        "vit: %s: unexpected tensor '%s' (not a parameter of this model)", path,
                        name);
    }
    return VNM_OK;
}

vnm_status vnm_vit_load(vnm_ctx *ctx, vnm_vit *m, const char *path, const char *const *ignore,
                        int n_ignore, char *err, size_t err_len)
{
    vnm_safetensors *st = NULL;
    vnm_status rc = vnm_safetensors_open(path, &st, err, err_len);
    if (rc != VNM_OK) return rc;
    rc = check_file(m, st, path, ignore, n_ignore, err, err_len);
    for (int i = 0; rc == VNM_OK && i < m->n_params; i++) {
        vnm_vit_param p = vnm_vit_param_at(m, i);
        if (head_mismatch(m, st, p.name)) continue;
        int64_t n = vnm_numel(p.tensor);
        float *buf = malloc((size_t)n * sizeof *buf);
        if (!buf) rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "vit: %s: out of memory", path);
        if (rc == VNM_OK) rc = vnm_safetensors_read_f32(st, p.name, buf, (size_t)n, err, err_len);
        if (rc == VNM_OK && vnm_tensor_from_host(ctx, p.tensor, buf) != VNM_OK)
            rc = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "vit: %s: cannot set '%s': %s", path,
                      p.name, vnm_ctx_error(ctx));
        free(buf);
    }
    vnm_safetensors_close(st);
    return rc;
}

/* Host copy of p's value in timm layout (malloc'd): a sparse weight decompressed, an SR-STE weight
 * under its current mask (the function the layer computes). */
static float *param_host(vnm_ctx *ctx, const vnm_vit_param *p, char *err, size_t err_len)
{
    vnm_vit_linear *l = p->linear;
    int64_t n = l ? l->in * l->out : vnm_numel(p->tensor);
    float *buf = malloc((size_t)n * sizeof *buf);
    if (!buf) {
        vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "vit: out of memory saving '%s'", p->name);
        return NULL;
    }
    if (l && l->sparse) {
        vnm_sparse_host h;
        if (vnm_sparse_weight_to_host(ctx, l->sparse, &h) == VNM_OK) {
            vnm_sparse_decompress(&h, buf);
            vnm_sparse_host_free(&h);
            return buf;
        }
    } else if (vnm_tensor_to_host(ctx, p->tensor, buf) == VNM_OK) {
        const uint8_t *mask = l && l->srste ? vnm_srste_mask(l->srste) : NULL;
        for (int64_t k = 0; mask && k < n; k++)
            if (!mask[k]) buf[k] = 0.0f;
        return buf;
    }
    vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "vit: cannot read '%s': %s", p->name, vnm_ctx_error(ctx));
    free(buf);
    return NULL;
}

static int64_t shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* buf[n] f32 → a malloc'd copy in dtype (bf16/f16); buf is freed either way. */
static void *convert_host(float *buf, int64_t n, vnm_dtype dtype)
{
    if (dtype == VNM_DTYPE_F32) return buf;
    uint16_t *out = malloc((size_t)n * sizeof *out);
    for (int64_t i = 0; out && i < n; i++)
        out[i] = dtype == VNM_DTYPE_BF16 ? vnm_f32_to_bf16(buf[i]) : vnm_f32_to_f16(buf[i]);
    free(buf);
    return out;
}

vnm_status vnm_vit_save(vnm_ctx *ctx, const vnm_vit *m, const char *path, char *err,
                        size_t err_len)
{
    return vnm_vit_save_as(ctx, m, path, VNM_DTYPE_F32, err, err_len);
}

vnm_status vnm_vit_save_as(vnm_ctx *ctx, const vnm_vit *m, const char *path, vnm_dtype dtype,
                           char *err, size_t err_len)
{
    if (dtype != VNM_DTYPE_F32 && dtype != VNM_DTYPE_BF16 && dtype != VNM_DTYPE_F16)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "vit: %s: cannot save as %s (f32, bf16 "
                          "or f16)", path, vnm_dtype_name(dtype));
    int n = m->n_params;
    vnm_vit_param *ps = calloc((size_t)n, sizeof *ps);
    vnm_safetensors_entry *es = calloc((size_t)n, sizeof *es);
    int64_t(*shapes)[VNM_MAX_DIMS] = calloc((size_t)n, sizeof *shapes);
    void **data = calloc((size_t)n, sizeof *data);
    vnm_status rc = ps && es && shapes && data
                        ? VNM_OK
                        : vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "vit: %s: out of memory", path);
    for (int i = 0; rc == VNM_OK && i < n; i++) {
        ps[i] = vnm_vit_param_at(m, i);
        int ndim = param_shape(&ps[i], shapes[i]);
        float *host = param_host(ctx, &ps[i], err, err_len);
        data[i] = host ? convert_host(host, shape_numel(ndim, shapes[i]), dtype) : NULL;
        if (!data[i])
            rc = host ? vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "vit: %s: out of memory", path)
                      : VNM_ERR_RUNTIME;
        es[i] = (vnm_safetensors_entry){.name = ps[i].name, .dtype = dtype, .ndim = ndim,
                                        .shape = shapes[i], .data = data[i]};
    }
    static const char *const meta[] = {"format", "pt"};
    if (rc == VNM_OK) rc = vnm_safetensors_write(path, es, (size_t)n, meta, 1, err, err_len);
    for (int i = 0; data && i < n; i++) free(data[i]);
    free(data);
    free(shapes);
    free(es);
    free(ps);
    return rc;
}
