/* autograd/op_embedding.c — token embedding lookup: ids (i32/i64)[...] pick rows of table[V, D].
 * The ids are checked against V on the host before any kernel runs (an out-of-range id would read
 * outside the table), so the check works whatever device holds them. The table gradient is a
 * scatter-add of the output gradient rows; the ids get no gradient. */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* iarg: n (number of ids), V, D */
static void embedding_backward(vnm_ctx *ctx, vnm_node *node)
{
    vnm_tensor *ids = node->in[0];
    vnm_tensor *dtable = vnm_grad_buffer(ctx, node->in[1]);
    if (dtable)
        ctx->be->embedding_bwd(VNM_F32(dtable), ids->data, ids->dtype == VNM_DTYPE_I64,
                               VNM_F32(node->out->grad), node->iarg[0], node->iarg[1],
                               node->iarg[2]);
}

/* Fails with the first id outside [0, V) and its index in ids. */
static bool ids_in_range(vnm_ctx *ctx, const vnm_tensor *ids, int64_t V)
{
    int64_t n = vnm_numel(ids);
    bool ids64 = ids->dtype == VNM_DTYPE_I64;
    void *host = malloc((size_t)n * vnm_dtype_size(ids->dtype) + 1);
    if (!host) {
        vnm_ctx_fail(ctx, VNM_ERR_RUNTIME, "embedding: out of host memory checking %lld ids",
                     (long long)n);
        return false;
    }
    if (vnm_tensor_to_host(ctx, ids, host) != VNM_OK) {
        free(host);
        return false;
    }
    int64_t bad = -1, id = 0;
    for (int64_t i = 0; i < n && bad < 0; i++) {
        id = ids64 ? ((const int64_t *)host)[i] : ((const int32_t *)host)[i];
        if (id < 0 || id >= V) bad = i;
    }
    free(host);
    if (bad < 0) return true;
    int64_t idx[VNM_MAX_DIMS]; /* the row-major index of element `bad` */
    for (int d = ids->ndim - 1; d >= 0; d--) {
        idx[d] = bad % ids->shape[d];
        bad /= ids->shape[d];
    }
    char pos[96], s[96];
    size_t len = 0;
    for (int d = 0; d < ids->ndim; d++)
        len += (size_t)snprintf(pos + len, sizeof pos - len, "%s%lld", d ? ", " : "",
                                (long long)idx[d]);
    vnm_ctx_fail(ctx, VNM_ERR_INPUT,
                 "embedding: id %lld at ids[%s] of %s is out of range for a table of %lld rows",
                 (long long)id, pos, vnm_shape_str(ids, s, sizeof s), (long long)V);
    return false;
}

vnm_tensor *vnm_embedding(vnm_ctx *ctx, vnm_tensor *ids, vnm_tensor *table)
{
    static const char *op = "embedding";
    if (!ids || !table) return NULL;
    char s[96];
    if (ids->dtype != VNM_DTYPE_I32 && ids->dtype != VNM_DTYPE_I64) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "embedding: ids must be i32 or i64, got %s",
                     vnm_shape_str(ids, s, sizeof s));
        return NULL;
    }
    if (!vnm_check_ndim(ctx, op, ids, "ids", 1, VNM_MAX_DIMS - 1) ||
        !vnm_check_f32(ctx, op, table, "table") || !vnm_check_ndim(ctx, op, table, "table", 2, 2) ||
        !vnm_check_kernel(ctx, op, ctx->be->embedding_fwd && ctx->be->embedding_bwd))
        return NULL;
    if (!vnm_is_contiguous(ids)) {
        vnm_ctx_fail(ctx, VNM_ERR_INPUT, "embedding: ids %s must be contiguous",
                     vnm_shape_str(ids, s, sizeof s));
        return NULL;
    }
    int64_t V = table->shape[0], D = table->shape[1], n = vnm_numel(ids);
    if (!ids_in_range(ctx, ids, V)) return NULL;
    table = vnm_contiguous(ctx, table);
    if (!table) return NULL;
    int64_t shape[VNM_MAX_DIMS];
    for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
    shape[ids->ndim] = D;
    vnm_tensor *y = vnm_tensor_empty(ctx, VNM_DTYPE_F32, ids->ndim + 1, shape); /* [..., D] */
    if (!y) return NULL;
    bool ids64 = ids->dtype == VNM_DTYPE_I64;
    ctx->be->embedding_fwd(VNM_F32(y), ids->data, ids64, VNM_F32(table), n, D);
    vnm_tensor *in[2] = {ids, table};
    vnm_node *node = vnm_tape_record(ctx, op, embedding_backward, y, 2, in);
    vnm_node_reads(node, VNM_READS_IN(0)); /* the ids */
    if (node) {
        node->iarg[0] = n;
        node->iarg[1] = V;
        node->iarg[2] = D;
    }
    return y;
}
