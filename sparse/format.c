/* sparse/format.c — the canonical compressed form of a V:N:M weight (METHOD §7): allocation,
 * compression from a dense weight and a (possibly permuted) mask, decompression back to the dense
 * masked weight, and the structure validator. The form is the host/checkpoint/test oracle; the
 * kernels (sparse/kernels.h) read it directly and device layouts are derived from it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Slot code of the ordered pair (s0, s1): the mma.sp ordered-metadata nibble. */
#define SLOT_CODE(s0, s1) ((uint8_t)((s0) | (s1) << 2))

static int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

/* Width of group g: M, or I mod M for a last partial group. */
static int group_width(vnm_pattern p, int64_t I, int64_t g)
{
    int64_t rest = I - g * p.M;
    return (int)(rest < p.M ? rest : p.M);
}

vnm_status vnm_sparse_host_alloc(vnm_sparse_host *w, vnm_pattern p, int64_t O, int64_t I)
{
    if (!w) return VNM_ERR_INPUT;
    *w = (vnm_sparse_host){0};
    char text[64];
    vnm_pattern q;
    /* cols and rows hold indices as int32 */
    if (vnm_pattern_parse(vnm_pattern_str(p, text, sizeof text), &q, NULL, 0) != VNM_OK ||
        O < 1 || I < 1 || O > INT32_MAX || I > INT32_MAX)
        return VNM_ERR_INPUT;
    int64_t O_pad = round_up(O, p.V), G = (I + p.M - 1) / p.M, Gp = round_up(G, 8);
    int64_t n_cols = O_pad / p.V * Gp * 4;
    w->vals = calloc((size_t)(O_pad * Gp * 2), sizeof *w->vals);
    w->slots = malloc((size_t)(O_pad * Gp) * sizeof *w->slots);
    w->cols = malloc((size_t)n_cols * sizeof *w->cols);
    w->rows = malloc((size_t)O_pad * sizeof *w->rows);
    if (!w->vals || !w->slots || !w->cols || !w->rows) {
        vnm_sparse_host_free(w);
        return VNM_ERR_RUNTIME;
    }
    w->pat = p;
    w->O = O, w->I = I, w->O_pad = O_pad, w->G = G, w->Gp = Gp;
    memset(w->slots, SLOT_CODE(0, 1), (size_t)(O_pad * Gp));
    for (int64_t k = 0; k < n_cols; k++) w->cols[k] = -1;
    for (int64_t o = 0; o < O_pad; o++) w->rows[o] = o < O ? (int32_t)o : -1;
    return VNM_OK;
}

void vnm_sparse_host_free(vnm_sparse_host *w)
{
    if (!w) return;
    free(w->vals);
    free(w->slots);
    free(w->cols);
    free(w->rows);
    *w = (vnm_sparse_host){0};
}

/* NULL or a permutation of 0..n-1; seen[n] is scratch. */
static vnm_status check_perm(const char *what, const int32_t *perm, int64_t n, int64_t *seen,
                             char *err, size_t err_len)
{
    if (!perm) return VNM_OK;
    for (int64_t k = 0; k < n; k++) seen[k] = -1;
    for (int64_t k = 0; k < n; k++) {
        if (perm[k] < 0 || perm[k] >= n)
            return vnm_sparse_fail(err, err_len,
                        "compress: %s is not a permutation of 0..%lld: %s[%lld] = %d is out of "
                        "range",
                        what, (long long)(n - 1), what, (long long)k, perm[k]);
        if (seen[perm[k]] >= 0)
            return vnm_sparse_fail(err, err_len,
                        "compress: %s is not a permutation of 0..%lld: value %d appears at "
                        "positions %lld and %lld",
                        what, (long long)(n - 1), perm[k], (long long)seen[perm[k]], (long long)k);
        seen[perm[k]] = k;
    }
    return VNM_OK;
}

/* One (block, group): the columns the block's rows keep, as absolute inputs in ascending order,
 * then each row's slot pair and values. */
static void compress_block_group(const float *W, const uint8_t *mask, int64_t I,
                                 const int32_t *perm_out, const int32_t *perm_in, int64_t o0,
                                 int64_t rows, int64_t c0, int w, int64_t Gp, int64_t g,
                                 vnm_sparse_host *out)
{
    int32_t col[4] = {-1, -1, -1, -1}; /* absolute input columns, ascending */
    int pos[4];                         /* their positions j in the permuted mask */
    int n = 0;
    for (int k = 0; k < w; k++)
        for (int64_t r = 0; r < rows; r++)
            if (mask[(o0 + r) * I + c0 + k]) {
                int32_t c = perm_in ? perm_in[c0 + k] : (int32_t)(c0 + k);
                int t = n++; /* insertion keeps col ascending; n ≤ 4 for a valid mask */
                for (; t > 0 && col[t - 1] > c; t--) col[t] = col[t - 1], pos[t] = pos[t - 1];
                col[t] = c, pos[t] = (int)(c0 + k);
                break;
            }
    memcpy(out->cols + ((o0 / out->pat.V) * Gp + g) * 4, col, sizeof col);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *m = mask + (o0 + r) * I;
        const float *wrow = W + (int64_t)(perm_out ? perm_out[o0 + r] : o0 + r) * I;
        int s[2] = {0, 1}, kept = 0; /* a width-1 tail keeps slot 0 only; slot 1 reads col -1 */
        for (int t = 0; t < n; t++)
            if (m[pos[t]]) s[kept++] = t;
        float *v = out->vals + ((o0 + r) * Gp + g) * 2;
        for (int k = 0; k < 2; k++) v[k] = col[s[k]] >= 0 && k < kept ? wrow[col[s[k]]] : 0.0f;
        out->slots[(o0 + r) * Gp + g] = SLOT_CODE(s[0], s[1]);
    }
}

vnm_status vnm_sparse_compress(vnm_pattern p, const float *W, const uint8_t *mask, int64_t O,
                               int64_t I, const int32_t *perm_out, const int32_t *perm_in,
                               vnm_sparse_host *out, char *err, size_t err_len)
{
    if (!out) return vnm_sparse_fail(err, err_len, "compress: out is NULL");
    *out = (vnm_sparse_host){0};
    if (!W || !mask) return vnm_sparse_fail(err, err_len, "compress: W and mask must not be NULL");
    char msg[512];
    if (vnm_mask_validate(p, mask, O, I, msg, sizeof msg) != VNM_OK)
        return vnm_sparse_fail(err, err_len, "compress: %s", msg);
    if (O > INT32_MAX || I > INT32_MAX)
        return vnm_sparse_fail(err, err_len, "compress: shape [%lld, %lld] exceeds int32 indices",
                    (long long)O, (long long)I);
    int64_t *seen = malloc((size_t)(O > I ? O : I) * sizeof *seen);
    if (!seen) return VNM_ERR_RUNTIME;
    vnm_status st = check_perm("perm_out", perm_out, O, seen, err, err_len);
    if (st == VNM_OK) st = check_perm("perm_in", perm_in, I, seen, err, err_len);
    free(seen);
    if (st != VNM_OK) return st;
    if (vnm_sparse_host_alloc(out, p, O, I) != VNM_OK) {
        if (err && err_len) snprintf(err, err_len, "compress: out of memory");
        return VNM_ERR_RUNTIME;
    }
    int64_t V = p.V, M = p.M, G = out->G, Gp = out->Gp, blocks = out->O_pad / V;
#pragma omp parallel for schedule(static) if (O * I > 32768)
    for (int64_t k = 0; k < blocks * G; k++) {
        int64_t b = k / G, g = k % G, o0 = b * V;
        compress_block_group(W, mask, I, perm_out, perm_in, o0, O - o0 < V ? O - o0 : V, g * M,
                             group_width(p, I, g), Gp, g, out);
    }
    for (int64_t o = 0; o < O; o++) out->rows[o] = perm_out ? perm_out[o] : (int32_t)o;
    return VNM_OK;
}

/* The position in W[O][I] of value k of stored row o, group g; -1 for padding. Guarded against
 * out-of-range indices, so even an invalid form never reaches outside W. */
static int64_t kept_position(const vnm_sparse_host *w, int64_t o, int64_t g, int k)
{
    int32_t r = w->rows[o];
    if (r < 0 || r >= w->O) return -1;
    const int32_t *blk = w->cols + ((o / w->pat.V) * w->Gp + g) * 4;
    uint8_t code = w->slots[o * w->Gp + g];
    int32_t c = blk[k ? (code >> 2) & 3 : code & 3];
    return c >= 0 && c < w->I ? r * w->I + c : -1;
}

void vnm_sparse_decompress(const vnm_sparse_host *w, float *W)
{
    memset(W, 0, (size_t)(w->O * w->I) * sizeof *W);
    for (int64_t o = 0; o < w->O_pad; o++)
        for (int64_t g = 0; g < w->Gp; g++)
            for (int k = 0; k < 2; k++) {
                int64_t pos = kept_position(w, o, g, k);
                if (pos >= 0) W[pos] = w->vals[(o * w->Gp + g) * 2 + k];
            }
}

void vnm_sparse_gather(const vnm_sparse_host *w, const float *dense, float *vals)
{
    for (int64_t o = 0; o < w->O_pad; o++)
        for (int64_t g = 0; g < w->Gp; g++)
            for (int k = 0; k < 2; k++) {
                int64_t pos = kept_position(w, o, g, k);
                vals[(o * w->Gp + g) * 2 + k] = pos >= 0 ? dense[pos] : 0.0f;
            }
}

/* Shape fields consistent with the pattern, arrays present. */
static vnm_status validate_shape(const vnm_sparse_host *w, char *err, size_t err_len)
{
    char text[64], msg[400];
    vnm_pattern q;
    if (vnm_pattern_parse(vnm_pattern_str(w->pat, text, sizeof text), &q, msg, sizeof msg) !=
        VNM_OK)
        return vnm_sparse_fail(err, err_len, "sparse weight: %s", msg);
    if (w->O < 1 || w->I < 1)
        return vnm_sparse_fail(err, err_len, "sparse weight: shape [%lld, %lld] must have positive sizes",
                    (long long)w->O, (long long)w->I);
    int64_t O_pad = round_up(w->O, w->pat.V), G = (w->I + w->pat.M - 1) / w->pat.M;
    if (w->O_pad != O_pad || w->G != G || w->Gp != round_up(G, 8))
        return vnm_sparse_fail(err, err_len,
                    "sparse weight %s [%lld, %lld]: O_pad = %lld, G = %lld, Gp = %lld (expected "
                    "%lld, %lld, %lld)",
                    text, (long long)w->O, (long long)w->I, (long long)w->O_pad, (long long)w->G,
                    (long long)w->Gp, (long long)O_pad, (long long)G,
                    (long long)round_up(G, 8));
    if (!w->vals || !w->slots || !w->cols || !w->rows)
        return vnm_sparse_fail(err, err_len, "sparse weight: missing vals, slots, cols or rows array");
    return VNM_OK;
}

/* rows[0..O) a permutation of 0..O-1, padding rows -1; seen[O] is scratch. */
static vnm_status validate_rows(const vnm_sparse_host *w, int64_t *seen, char *err,
                                size_t err_len)
{
    for (int64_t o = 0; o < w->O; o++) seen[o] = -1;
    for (int64_t o = 0; o < w->O_pad; o++) {
        int32_t r = w->rows[o];
        if (o >= w->O && r != -1)
            return vnm_sparse_fail(err, err_len,
                        "sparse weight: padding row %lld has rows[] = %d (expected -1)",
                        (long long)o, r);
        if (o >= w->O) continue;
        if (r < 0 || r >= w->O)
            return vnm_sparse_fail(err, err_len,
                        "sparse weight: rows is not a permutation of 0..%lld: rows[%lld] = %d is "
                        "out of range",
                        (long long)(w->O - 1), (long long)o, r);
        if (seen[r] >= 0)
            return vnm_sparse_fail(err, err_len,
                        "sparse weight: rows is not a permutation of 0..%lld: output row %d is "
                        "stored at rows %lld and %lld",
                        (long long)(w->O - 1), r, (long long)seen[r], (long long)o);
        seen[r] = o;
    }
    return VNM_OK;
}

/* Every (block, group): used columns first, in range, strictly ascending, then -1; no more than
 * the group's width; padding groups empty; no input column in two groups of one block.
 * owner[I] is scratch: the last (block, group) that used each column. */
static vnm_status validate_cols(const vnm_sparse_host *w, int64_t *owner, char *err,
                                size_t err_len)
{
    int64_t Gp = w->Gp, blocks = w->O_pad / w->pat.V;
    for (int64_t c = 0; c < w->I; c++) owner[c] = -1;
    for (int64_t b = 0; b < blocks; b++)
        for (int64_t g = 0; g < Gp; g++) {
            const int32_t *blk = w->cols + (b * Gp + g) * 4;
            int n = 0;
            for (int t = 0; t < 4; t++) {
                int32_t c = blk[t];
                if (c == -1) continue;
                const char *why = NULL;
                if (c < 0 || c >= w->I) why = "is out of range";
                else if (t > n) why = "follows an unused slot (-1)";
                else if (t > 0 && c <= blk[t - 1]) why = "is not above the previous column";
                if (why)
                    return vnm_sparse_fail(err, err_len,
                                "sparse weight: block %lld, group %lld: column %d in slot %d %s "
                                "(cols must be ascending input indices in [0, %lld), -1 after)",
                                (long long)b, (long long)g, c, t, why, (long long)w->I);
                if (owner[c] >= b * Gp)
                    return vnm_sparse_fail(err, err_len,
                                "sparse weight: block %lld: input column %d appears in groups "
                                "%lld and %lld",
                                (long long)b, c, (long long)(owner[c] - b * Gp), (long long)g);
                owner[c] = b * Gp + g;
                n++;
            }
            int width = g < w->G ? group_width(w->pat, w->I, g) : 0;
            if (n > width)
                return vnm_sparse_fail(err, err_len,
                            "sparse weight: block %lld, group %lld holds %d columns; its width "
                            "is %d%s",
                            (long long)b, (long long)g, n, width,
                            g < w->G ? "" : " (a padding group beyond G)");
        }
    return VNM_OK;
}

/* Every (row, group): a legal slot code, zeros in padding rows and unused slots, and 2 kept
 * columns per real row and group (fewer only in a tail of width 1). */
static vnm_status validate_slots(const vnm_sparse_host *w, char *err, size_t err_len)
{
    int64_t Gp = w->Gp;
    for (int64_t o = 0; o < w->O_pad; o++)
        for (int64_t g = 0; g < Gp; g++) {
            uint8_t code = w->slots[o * Gp + g];
            int s0 = code & 3, s1 = (code >> 2) & 3;
            if (code >> 4 || s0 >= s1)
                return vnm_sparse_fail(err, err_len,
                            "sparse weight: row %lld, group %lld: slot code 0x%x (s0 = %d, "
                            "s1 = %d; need s0 < s1 < 4)",
                            (long long)o, (long long)g, code, s0, s1);
            const int32_t *blk = w->cols + ((o / w->pat.V) * Gp + g) * 4;
            const float *v = w->vals + (o * Gp + g) * 2;
            bool real = w->rows[o] >= 0;
            int kept = 0;
            for (int k = 0; k < 2; k++) {
                int32_t c = blk[k ? s1 : s0];
                if ((!real || c < 0) && v[k] != 0.0f)
                    return vnm_sparse_fail(err, err_len,
                                "sparse weight: row %lld, group %lld: value %g in slot %d must be "
                                "zero (%s)",
                                (long long)o, (long long)g, (double)v[k], k ? s1 : s0,
                                real ? "its column is unused (-1)" : "a padding row");
                kept += c >= 0;
            }
            int want = g < w->G ? group_width(w->pat, w->I, g) : 0;
            want = want < 2 ? want : 2;
            if (real && kept != want)
                return vnm_sparse_fail(err, err_len,
                            "sparse weight: row %lld, group %lld keeps %d columns (expected %d)",
                            (long long)o, (long long)g, kept, want);
        }
    return VNM_OK;
}

vnm_status vnm_sparse_validate(const vnm_sparse_host *w, char *err, size_t err_len)
{
    if (!w) return vnm_sparse_fail(err, err_len, "sparse weight: NULL");
    vnm_status st = validate_shape(w, err, err_len);
    if (st != VNM_OK) return st;
    int64_t *scratch = malloc((size_t)(w->O > w->I ? w->O : w->I) * sizeof *scratch);
    if (!scratch) {
        if (err && err_len) snprintf(err, err_len, "sparse weight: out of memory");
        return VNM_ERR_RUNTIME;
    }
    st = validate_rows(w, scratch, err, err_len);
    if (st == VNM_OK) st = validate_cols(w, scratch, err, err_len);
    if (st == VNM_OK) st = validate_slots(w, err, err_len);
    free(scratch);
    return st;
}
