/* sparse/select.c — V:N:M mask selection and validation (METHOD §2.2–2.3). For each block of V
 * rows × one group of M columns, a selector picks the 4 columns the block keeps (l1: largest
 * column sums; exhaustive: best of all C(M,4) sets), then every row keeps its 2 largest scores
 * among them. Tail rule for the last group of width r = I mod M: r ≤ 2 keeps all r columns, r = 3
 * keeps 2 per row of the 3, 4 ≤ r < M is an ordinary group of width r. A last block with fewer
 * than V rows follows the same rules. Ties go to the lower column (and, for exhaustive, to the
 * first set in lexicographic order), so the mask depends on S only. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The pattern rules and their messages live in the parser. */
static vnm_status check_pattern(vnm_pattern p, char *err, size_t err_len)
{
    char text[64];
    vnm_pattern q;
    return vnm_pattern_parse(vnm_pattern_str(p, text, sizeof text), &q, err, err_len);
}

vnm_status vnm_selector_parse(const char *name, vnm_selector *out, char *err, size_t err_len)
{
    if (name && out && strcmp(name, "l1") == 0) *out = VNM_SELECT_L1;
    else if (name && out && strcmp(name, "exhaustive") == 0) *out = VNM_SELECT_EXHAUSTIVE;
    else
        return vnm_sparse_fail(err, err_len, "selector '%s': unknown (expected 'l1' or 'exhaustive')",
                    name ? name : "(null)");
    return VNM_OK;
}

/* Positions (into set[0..n), ascending) of the 2 largest of s[set[k]], ties to the lower one. */
static void top2(const float *s, const int *set, int n, int *k0, int *k1)
{
    int a = 0, b = 1;
    if (s[set[1]] > s[set[0]]) a = 1, b = 0;
    for (int k = 2; k < n; k++) {
        if (s[set[k]] > s[set[a]]) b = a, a = k;
        else if (s[set[k]] > s[set[b]]) b = k;
    }
    *k0 = a < b ? a : b;
    *k1 = a < b ? b : a;
}

/* Sum of the two largest of four values. */
static inline double top2_sum4(float v0, float v1, float v2, float v3)
{
    float hi01 = v0 > v1 ? v0 : v1, lo01 = v0 > v1 ? v1 : v0;
    float hi23 = v2 > v3 ? v2 : v3, lo23 = v2 > v3 ? v3 : v2;
    float first = hi01 > hi23 ? hi01 : hi23, second = hi01 > hi23 ? hi23 : hi01;
    float lo = lo01 > lo23 ? lo01 : lo23; /* the winner's runner-up is at most this */
    return (double)first + (double)(second > lo ? second : lo);
}

/* The 4 columns (ascending offsets in the group) with the largest sums over the block's rows;
 * s points at the block's first row and group's first column, rows are I apart. */
static void set_l1(const float *s, int64_t I, int64_t rows, int w, int set[4])
{
    double sum[64] = {0}; /* w ≤ M ≤ 64 */
    bool taken[64] = {false};
    for (int64_t r = 0; r < rows; r++)
        for (int k = 0; k < w; k++) sum[k] += s[r * I + k];
    for (int t = 0; t < 4; t++) {
        int best = -1;
        for (int k = 0; k < w; k++)
            if (!taken[k] && (best < 0 || sum[k] > sum[best])) best = k;
        taken[best] = true;
    }
    for (int k = 0, t = 0; k < w; k++)
        if (taken[k]) set[t++] = k;
}

/* Every 4-set in lexicographic order, scored by the kept total Σ_rows top-2 within the set; the
 * first best wins (set comes in holding the first set, which stays if every score is NaN).
 * cm[w][rows] is the block's group copied column-major, so the row loop runs over contiguous
 * memory; 8 partial sums (combined in a fixed order) let it vectorise without reassociation. */
static void set_exhaustive(const float *cm, int64_t rows, int w, int set[4])
{
    double best = -INFINITY;
    for (int a = 0; a < w; a++)
        for (int b = a + 1; b < w; b++)
            for (int c = b + 1; c < w; c++)
                for (int d = c + 1; d < w; d++) {
                    const float *xa = cm + a * rows, *xb = cm + b * rows;
                    const float *xc = cm + c * rows, *xd = cm + d * rows;
                    double part[8] = {0};
                    int64_t r = 0;
                    for (; r + 8 <= rows; r += 8)
                        for (int q = 0; q < 8; q++)
                            part[q] += top2_sum4(xa[r + q], xb[r + q], xc[r + q], xd[r + q]);
                    for (; r < rows; r++) part[r % 8] += top2_sum4(xa[r], xb[r], xc[r], xd[r]);
                    double score = 0.0;
                    for (int q = 0; q < 8; q++) score += part[q];
                    if (score > best) {
                        best = score;
                        set[0] = a, set[1] = b, set[2] = c, set[3] = d;
                    }
                }
}

/* Mask of one (block, group): s and m point at its first element, rows are I apart; scratch
 * holds rows × w floats. */
static void select_block_group(vnm_selector sel, const float *s, uint8_t *m, int64_t I,
                               int64_t rows, int w, float *scratch)
{
    bool keep_all = w <= 2; /* the tail rule for narrow last groups */
    for (int64_t r = 0; r < rows; r++) memset(m + r * I, keep_all ? 1 : 0, (size_t)w);
    if (keep_all) return;
    int set[4] = {0, 1, 2, 3};
    int n = w == 3 ? 3 : 4;
    if (w > 4 && sel == VNM_SELECT_L1) {
        set_l1(s, I, rows, w, set);
    } else if (w > 4) {
        for (int64_t r = 0; r < rows; r++)
            for (int k = 0; k < w; k++) scratch[k * rows + r] = s[r * I + k];
        set_exhaustive(scratch, rows, w, set);
    }
    for (int64_t r = 0; r < rows; r++) {
        int k0, k1;
        top2(s + r * I, set, n, &k0, &k1);
        m[r * I + set[k0]] = 1;
        m[r * I + set[k1]] = 1;
    }
}

static vnm_status check_shape(const char *what, int64_t O, int64_t I, char *err, size_t err_len)
{
    if (O < 1 || I < 1)
        return vnm_sparse_fail(err, err_len, "%s: shape [O, I] = [%lld, %lld] must have positive sizes",
                    what, (long long)O, (long long)I);
    return VNM_OK;
}

vnm_status vnm_mask_select(vnm_pattern p, vnm_selector sel, const float *S, int64_t O, int64_t I,
                           uint8_t *mask, char *err, size_t err_len)
{
    vnm_status st = check_pattern(p, err, err_len);
    if (st == VNM_OK) st = check_shape("mask_select", O, I, err, err_len);
    if (st != VNM_OK) return st;
    if (!S || !mask) return vnm_sparse_fail(err, err_len, "mask_select: S and mask must not be NULL");
    if (sel != VNM_SELECT_L1 && sel != VNM_SELECT_EXHAUSTIVE)
        return vnm_sparse_fail(err, err_len, "mask_select: unknown selector %d", (int)sel);
    int64_t V = p.V, M = p.M;
    int64_t blocks = (O + V - 1) / V, G = (I + M - 1) / M;
    bool parallel = O * I > 32768;
    int threads = parallel ? omp_get_max_threads() : 1;
    float *scratch = malloc((size_t)(threads * V * M) * sizeof *scratch); /* [threads][M][V] */
    if (!scratch) {
        if (err && err_len) snprintf(err, err_len, "mask_select: out of memory");
        return VNM_ERR_RUNTIME;
    }
    /* (block, group) pairs are independent and write disjoint parts of the mask. */
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t k = 0; k < blocks * G; k++) {
        int64_t b = k / G, g = k % G;
        int64_t o0 = b * V, c0 = g * M;
        int64_t rows = O - o0 < V ? O - o0 : V;
        int w = (int)(I - c0 < M ? I - c0 : M);
        select_block_group(sel, S + o0 * I + c0, mask + o0 * I + c0, I, rows, w,
                           scratch + omp_get_thread_num() * V * M);
    }
    free(scratch);
    return VNM_OK;
}

vnm_status vnm_mask_validate(vnm_pattern p, const uint8_t *mask, int64_t O, int64_t I, char *err,
                             size_t err_len)
{
    vnm_status st = check_pattern(p, err, err_len);
    if (st == VNM_OK) st = check_shape("mask", O, I, err, err_len);
    if (st != VNM_OK) return st;
    if (!mask) return vnm_sparse_fail(err, err_len, "mask: NULL");
    for (int64_t k = 0; k < O * I; k++)
        if (mask[k] > 1)
            return vnm_sparse_fail(err, err_len, "mask: row %lld, column %lld holds %u (expected 0 or 1)",
                        (long long)(k / I), (long long)(k % I), (unsigned)mask[k]);
    int64_t V = p.V, M = p.M;
    int64_t blocks = (O + V - 1) / V, G = (I + M - 1) / M;
    for (int64_t b = 0; b < blocks; b++) {
        int64_t o0 = b * V, rows = O - o0 < V ? O - o0 : V;
        for (int64_t g = 0; g < G; g++) {
            int64_t c0 = g * M;
            int w = (int)(I - c0 < M ? I - c0 : M);
            const uint8_t *m = mask + o0 * I + c0;
            char used[64 * 6] = "";
            int n_used = 0;
            for (int k = 0; k < w; k++)
                for (int64_t r = 0; r < rows; r++)
                    if (m[r * I + k]) {
                        size_t len = strlen(used);
                        snprintf(used + len, sizeof used - len, "%s%lld", n_used ? ", " : "",
                                 (long long)(c0 + k));
                        n_used++;
                        break;
                    }
            if (n_used > 4)
                return vnm_sparse_fail(err, err_len,
                            "mask: block %lld (rows %lld..%lld), group %lld (columns %lld..%lld) "
                            "keeps %d distinct columns (%s); a block keeps at most 4",
                            (long long)b, (long long)o0, (long long)(o0 + rows - 1), (long long)g,
                            (long long)c0, (long long)(c0 + w - 1), n_used, used);
            int want = w <= 2 ? w : 2;
            for (int64_t r = 0; r < rows; r++) {
                int kept = 0;
                for (int k = 0; k < w; k++) kept += m[r * I + k];
                if (kept != want)
                    return vnm_sparse_fail(err, err_len,
                                "mask: row %lld, group %lld (columns %lld..%lld) keeps %d "
                                "weights; expected %d%s",
                                (long long)(o0 + r), (long long)g, (long long)c0,
                                (long long)(c0 + w - 1), kept, want,
                                w <= 2 ? " (a tail group of width <= 2 keeps all its columns)"
                                       : "");
            }
        }
    }
    return VNM_OK;
}

double vnm_mask_kept_score(const uint8_t *mask, const float *S, int64_t n)
{
    double total = 0.0;
    for (int64_t k = 0; mask && S && k < n; k++)
        if (mask[k]) total += S[k];
    return total;
}
