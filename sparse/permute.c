/* sparse/permute.c — the V:N:M channel permutation search of METHOD §4: permute input channels
 * (which columns share a group) and output channels (which rows share a block) so that the V:N:M
 * mask of the permuted scores keeps as much score as possible.
 *
 * Alternating rounds: an input step re-deals columns among groups with the rows fixed, then an
 * output step re-deals rows among blocks with the columns fixed. A step works slot by slot: for
 * slot t the t-th column of every group (t-th row of every block) is a candidate for every group
 * (block); since groups (blocks) are scored independently, the n×n matrix of "score of unit b if it
 * received the candidate of unit a" turns the best re-deal of that slot into a linear sum
 * assignment (lsa.c), and a re-deal is applied only if it raises the score. The first round starts
 * each step from the zig-zag deal of the channels sorted by total score, undone if the step ends
 * below where it started. Chunks (opts->chunk, rounded down to whole groups and blocks) confine
 * channels to fixed ranges of positions. The search never returns less than the identity keeps.
 *
 * The score of a (block, group) follows select.c exactly (ties to the lower column, the tail rules)
 * but is evaluated incrementally: removing one candidate leaves fixed columns (rows) whose
 * contribution is computed once per slot, so a candidate costs O(V) (input) or O(M) (output). */
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_M 64       /* the parser's bound on M: group-sized arrays live on the stack */
#define CACHE_SETS 16  /* column sets remembered per (block, group) in the l1 output gains */
#define PAR_WORK 32768 /* below this much work a loop runs on one thread */

static vnm_status out_of_memory(char *err, size_t err_len)
{
    vnm_sparse_fail(err, err_len, "permute_search: out of memory");
    return VNM_ERR_RUNTIME;
}

/* The k-subsets (k ≤ 4) of n columns, in lexicographic order. */
typedef struct {
    int n, k;
    int64_t count;
    uint8_t (*c)[4];
} combos;

typedef struct {
    double key;
    int32_t idx;
} keyed;

/* Per-thread work space. */
typedef struct {
    float *tile;  /* [V][M] one block's rows × one group's fixed columns */
    double *q2;   /* [V] what a candidate value must exceed to count in its row */
    double *best; /* [max(G, B)] best score per candidate */
    double *ub;   /* [max(G, B)] bound on what a candidate adds (exhaustive) */
    keyed *rank;  /* [sets] column sets ordered by score (exhaustive) */
    /* output step, per group of the block at hand: */
    double *fs;      /* [G][M] column sums without the leaving row */
    double *fixed;   /* [G] value of the fixed rows for the set chosen without a candidate */
    double *lo, *hi; /* [G] its weakest column sum, the strongest sum outside it */
    uint8_t *kept;   /* [G][4] that set */
    uint8_t *others; /* [G][M] the group's other columns */
    int64_t *l1g;    /* [G] the groups scored as l1 (all but exhaustive groups wider than 4) */
} scratch;

typedef struct {
    vnm_pattern p;
    vnm_selector sel;
    const float *S; /* [O][I] */
    int64_t O, I, G, B;
    int32_t *pin, *pout; /* position in the permuted layer → original index */
    combos cmb[6];       /* the subsets the exhaustive selector needs */
    int n_cmb;
    int64_t sets; /* C(M, 4): set table stride of a group */
    scratch *scr;
    int n_scr;
} search;

static const uint8_t iota[MAX_M] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                                    32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
                                    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};

static inline int min_int(int a, int b) { return a < b ? a : b; }

static int width_of(const search *s, int64_t g)
{
    int64_t w = s->I - g * s->p.M;
    return (int)(w < s->p.M ? w : s->p.M);
}

static int rows_of(const search *s, int64_t b)
{
    int64_t r = s->O - b * s->p.V;
    return (int)(r < s->p.V ? r : s->p.V);
}

static int64_t binom(int n, int k)
{
    if (k < 0 || n < k) return 0;
    int64_t c = 1;
    for (int i = 0; i < k; i++) c = c * (n - i) / (i + 1);
    return c;
}

static bool combos_build(combos *cb, int n, int k)
{
    cb->n = n;
    cb->k = k;
    cb->count = binom(n, k);
    cb->c = calloc((size_t)(cb->count ? cb->count : 1), sizeof *cb->c);
    if (!cb->c) return false;
    int idx[4] = {0, 1, 2, 3};
    for (int64_t s = 0; s < cb->count; s++) {
        for (int i = 0; i < k; i++) cb->c[s][i] = (uint8_t)idx[i];
        int i = k - 1;
        while (i >= 0 && idx[i] == n - k + i) i--;
        if (i < 0) break;
        idx[i]++;
        for (int j = i + 1; j < k; j++) idx[j] = idx[j - 1] + 1;
    }
    return true;
}

static const combos *combos_get(const search *s, int n, int k)
{
    for (int i = 0; i < s->n_cmb; i++)
        if (s->cmb[i].n == n && s->cmb[i].k == k) return &s->cmb[i];
    return NULL; /* unreachable: search_init builds every (n, k) the steps ask for */
}

static int keyed_cmp(const void *pa, const void *pb)
{
    const keyed *a = pa, *b = pb;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static inline float fmax2(float a, float b) { return a > b ? a : b; }
static inline float fmin2(float a, float b) { return a > b ? b : a; }

static inline double dmax(double a, double b) { return a > b ? a : b; }
static inline double dmin(double a, double b) { return a > b ? b : a; }

/* Sum of the 2 largest of v[c[0..k)] (of all of them when k ≤ 2), summed in double as select.c
 * does. k = 3, 4 take the largest pair sum: rounding is monotone, so it is the same number, and
 * plain maxima compile branch-free (the comparisons are data-dependent coin flips). */
static inline double top2_in(const float *v, const uint8_t *c, int k)
{
    if (k <= 2) return (k > 0 ? (double)v[c[0]] : 0.0) + (k > 1 ? (double)v[c[1]] : 0.0);
    double a = v[c[0]], b = v[c[1]], d = v[c[2]];
    if (k == 3) return dmax(dmax(a + b, a + d), b + d);
    if (k == 4) {
        double e = v[c[3]];
        return dmax(dmax(dmax(a + b, a + d), dmax(a + e, b + d)), dmax(b + e, d + e));
    }
    float hi = fmax2(v[c[0]], v[c[1]]), lo = fmin2(v[c[0]], v[c[1]]);
    for (int j = 2; j < k; j++) {
        float x = v[c[j]];
        lo = fmax2(lo, fmin2(hi, x));
        hi = fmax2(hi, x);
    }
    return (double)hi + (double)lo;
}

/* Σ over the rows of a tile [n][w] of top2_in. */
static double set_score(const float *tile, int n, int w, const uint8_t *c, int k)
{
    double t = 0.0;
    for (int i = 0; i < n; i++) t += top2_in(tile + (int64_t)i * w, c, k);
    return t;
}

/* The k columns of largest sum, in rank order (ties to the lower column, as select.c). */
static void l1_top(const double *sum, int w, int k, int *top)
{
    bool taken[MAX_M] = {false};
    for (int t = 0; t < k; t++) {
        int best = -1;
        for (int j = 0; j < w; j++)
            if (!taken[j] && (best < 0 || sum[j] > sum[best])) best = j;
        taken[best] = true;
        top[t] = best;
    }
}

/* The first k entries of a ranking as an ascending column set. */
static void as_set(const int *top, int k, uint8_t *c)
{
    for (int i = 0; i < k; i++) {
        int j = i;
        for (; j > 0 && c[j - 1] > top[i]; j--) c[j] = c[j - 1];
        c[j] = (uint8_t)top[i];
    }
}

/* Kept score of one (block, group) tile [n][w]: select.c's choice, scored. */
static double tile_score(const search *s, const float *tile, int n, int w)
{
    int k = min_int(4, w);
    if (w > 4 && s->sel == VNM_SELECT_EXHAUSTIVE) {
        const combos *cb = combos_get(s, w, k);
        double best = -INFINITY;
        for (int64_t q = 0; q < cb->count; q++)
            best = dmax(best, set_score(tile, n, w, cb->c[q], k));
        return best;
    }
    uint8_t c[4];
    if (w > 4) {
        double sum[MAX_M] = {0};
        int top[4];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < w; j++) sum[j] += tile[(int64_t)i * w + j];
        l1_top(sum, w, k, top);
        as_set(top, k, c);
    } else {
        memcpy(c, iota, 4);
    }
    return set_score(tile, n, w, c, k);
}

static void tile_gather(const search *s, int64_t b, int64_t g, float *tile)
{
    int n = rows_of(s, b), w = width_of(s, g);
    for (int i = 0; i < n; i++) {
        const float *row = s->S + (int64_t)s->pout[b * s->p.V + i] * s->I;
        for (int j = 0; j < w; j++) tile[i * w + j] = row[s->pin[g * s->p.M + j]];
    }
}

/* Kept score of blocks [b0, b1) × groups [g0, g1) under the current permutations; per-block
 * partial sums added in block order, so the result does not depend on the thread count. */
static double region_score(search *s, int64_t b0, int64_t b1, int64_t g0, int64_t g1,
                           double *part /* [b1 - b0] */)
{
#pragma omp parallel for schedule(static) if ((b1 - b0) * (g1 - g0) * s->p.V * s->p.M > PAR_WORK)
    for (int64_t b = b0; b < b1; b++) {
        float *tile = s->scr[omp_get_thread_num()].tile;
        double t = 0.0;
        for (int64_t g = g0; g < g1; g++) {
            tile_gather(s, b, g, tile);
            t += tile_score(s, tile, rows_of(s, b), width_of(s, g));
        }
        part[b - b0] = t;
    }
    double total = 0.0;
    for (int64_t b = b0; b < b1; b++) total += part[b - b0];
    return total;
}

/* Deals the channels at perm[first ..) by decreasing total over `units` units of `size` slots
 * (the last unit has last_size): slot 0 left to right, slot 1 right to left, and so on, so every
 * unit gets a similar mix of strong and weak channels. */
static bool zigzag_deal(int32_t *perm, int64_t first, int64_t units, int size, int last_size,
                        const double *total)
{
    int64_t count = (units - 1) * size + last_size;
    keyed *k = malloc((size_t)count * sizeof *k);
    if (!k) return false;
    for (int64_t i = 0; i < count; i++) k[i] = (keyed){total[perm[first + i]], perm[first + i]};
    qsort(k, (size_t)count, sizeof *k, keyed_cmp);
    int64_t next = 0;
    for (int t = 0; t < size; t++) {
        int64_t n = t < last_size ? units : units - 1;
        for (int64_t a = 0; a < n; a++) {
            int64_t u = t % 2 == 0 ? a : n - 1 - a;
            perm[first + u * size + t] = k[next++].idx;
        }
    }
    free(k);
    return true;
}

/* The assignment candidate a → unit sigma[a] maximising Σ gain[a][sigma[a]] ([n][n]); *delta is
 * its gain over leaving every candidate in place, 0 when that is not a real improvement. */
static vnm_status reassign(const double *gain, double *cost, int64_t n, int32_t *sigma,
                           double *delta)
{
    for (int64_t k = 0; k < n * n; k++) cost[k] = -gain[k];
    if (vnm_lsa_solve(cost, n, sigma) != VNM_OK) return VNM_ERR_RUNTIME;
    double now = 0.0, then = 0.0;
    for (int64_t a = 0; a < n; a++) {
        now += gain[a * n + sigma[a]];
        then += gain[a * n + a];
    }
    *delta = now - then > 1e-12 * fabs(then) ? now - then : 0.0;
    return VNM_OK;
}

/* ---- input step ---- */

/* Per row of a tile [n][w]: q2[i] = the second largest value of row i in the set c (0 if the
 * set has fewer than 2 columns: then a candidate always counts). Returns Σ rows top2_in. With a
 * candidate x added to the set, a row keeps top2_in + max(0, x − q2). */
static double q_profile(const float *tile, int n, int w, const uint8_t *c, int k, double *q2)
{
    double base = 0.0;
    for (int i = 0; i < n; i++) {
        const float *v = tile + (int64_t)i * w;
        base += top2_in(v, c, k);
        if (k < 2) {
            q2[i] = 0.0;
            continue;
        }
        float hi = fmax2(v[c[0]], v[c[1]]), lo = fmin2(v[c[0]], v[c[1]]);
        for (int j = 2; j < k; j++) {
            lo = fmax2(lo, fmin2(hi, v[c[j]]));
            hi = fmax2(hi, v[c[j]]);
        }
        q2[i] = lo;
    }
    return base;
}

/* Σ max(0, x − q2) in four fixed lanes (branch-free, vectorised; the order is fixed). */
static double excess(const float *x, const double *q2, int n)
{
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) {
            double d = (double)x[i + l] - q2[i + l];
            acc[l] += d > 0.0 ? d : 0.0;
        }
    for (; i < n; i++) {
        double d = (double)x[i] - q2[i];
        acc[0] += d > 0.0 ? d : 0.0;
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

typedef struct {
    const float *ST;     /* [I][O] columns of S, rows in permuted order */
    const double *CS;    /* [I][B] column sums per row block */
    int t;               /* slot being re-dealt */
    const int64_t *unit; /* [n] the groups taking part */
    const int32_t *cand; /* [n] the column in slot t of each */
    int64_t n;
    double *gain; /* [n][n] */
} in_slot;

/* gain[a][b] for every candidate a: score of group unit[b] with cand[a] in slot t, summed over
 * row blocks. Within a block, a set holding the candidate is a set Q of fixed columns plus x,
 * worth Σ top2(Q) + Σ max(0, x − q2(Q)); l1 decides by the candidate's block sum whether it is
 * in (then Q = the top k−1 fixed columns) or not (then the top k fixed columns stay). */
static void input_gain(const search *s, scratch *w, const in_slot *z, int64_t b)
{
    const int64_t O = s->O, B = s->B, M = s->p.M, n = z->n, g = z->unit[b];
    const int t = z->t, width = width_of(s, g), k = min_int(4, width), nf = width - 1;
    int32_t fcol[MAX_M];
    int fpos[MAX_M];
    for (int j = 0, f = 0; j < width; j++)
        if (j != t) fcol[f] = s->pin[g * M + j], fpos[f++] = j;
    double *best = w->best; /* [n] */
    for (int64_t a = 0; a < n; a++) z->gain[a * n + b] = 0.0;
    for (int64_t blk = 0; blk < B; blk++) {
        const int64_t o0 = blk * s->p.V;
        const int rows = rows_of(s, blk);
        for (int i = 0; i < rows; i++)
            for (int f = 0; f < nf; f++) w->tile[i * nf + f] = z->ST[fcol[f] * O + o0 + i];
        if (s->sel == VNM_SELECT_L1 || width <= 4) {
            double fsum[MAX_M];
            int top[4];
            uint8_t c[4];
            for (int f = 0; f < nf; f++) fsum[f] = z->CS[fcol[f] * B + blk];
            bool gate = nf >= k; /* else the candidate is always among the kept columns */
            l1_top(fsum, nf, gate ? k : nf, top);
            double stay = 0.0, thr = 0.0;
            int thr_pos = 0;
            if (gate) {
                as_set(top, k, c);
                stay = set_score(w->tile, rows, nf, c, k);
                thr = fsum[top[k - 1]];
                thr_pos = fpos[top[k - 1]];
            }
            as_set(top, k - 1, c);
            double base = q_profile(w->tile, rows, nf, c, k - 1, w->q2);
            for (int64_t a = 0; a < n; a++) {
                double xs = z->CS[z->cand[a] * B + blk];
                bool in = !gate || xs > thr || (xs == thr && t < thr_pos);
                z->gain[a * n + b] +=
                    in ? base + excess(z->ST + z->cand[a] * O + o0, w->q2, rows) : stay;
            }
            continue;
        }
        /* Exhaustive: best of the sets without the candidate, then the sets Q ∪ {x} in order of
         * decreasing Σ top2(Q). q2 of any Q is at least the second smallest fixed value of the
         * row, so ub[a] (the excess over those) bounds what x adds to any Q: once
         * Σ top2(Q) + ub[a] ≤ best[a], no further Q helps candidate a. */
        const combos *fk = combos_get(s, nf, k), *fq = combos_get(s, nf, k - 1);
        double stay = -INFINITY;
        for (int64_t q = 0; q < fk->count; q++)
            stay = dmax(stay, set_score(w->tile, rows, nf, fk->c[q], k));
        for (int i = 0; i < rows; i++) {
            const float *v = w->tile + i * nf;
            float lo = fmin2(v[0], v[1]), lo2 = fmax2(v[0], v[1]);
            for (int f = 2; f < nf; f++) {
                lo2 = fmin2(lo2, fmax2(lo, v[f]));
                lo = fmin2(lo, v[f]);
            }
            w->q2[i] = lo2;
        }
        for (int64_t a = 0; a < n; a++) {
            best[a] = stay;
            w->ub[a] = excess(z->ST + z->cand[a] * O + o0, w->q2, rows);
        }
        for (int64_t q = 0; q < fq->count; q++)
            w->rank[q] = (keyed){set_score(w->tile, rows, nf, fq->c[q], k - 1), (int32_t)q};
        qsort(w->rank, (size_t)fq->count, sizeof *w->rank, keyed_cmp);
        for (int64_t r = 0; r < fq->count; r++) {
            double base = w->rank[r].key, gap = -INFINITY;
            for (int64_t a = 0; a < n; a++) gap = dmax(gap, w->ub[a] - best[a]);
            if (base + gap <= 0.0) break;
            q_profile(w->tile, rows, nf, fq->c[w->rank[r].idx], k - 1, w->q2);
            for (int64_t a = 0; a < n; a++)
                if (base + w->ub[a] > best[a])
                    best[a] =
                        dmax(best[a], base + excess(z->ST + z->cand[a] * O + o0, w->q2, rows));
        }
        for (int64_t a = 0; a < n; a++) z->gain[a * n + b] += best[a];
    }
}

typedef struct {
    double *gain, *cost, *part;
    int32_t *sigma, *cand;
    int64_t *unit;
} slot_bufs;

static bool slot_bufs_alloc(slot_bufs *sb, int64_t units, int64_t parts)
{
    sb->gain = malloc((size_t)(units * units) * sizeof *sb->gain);
    sb->cost = malloc((size_t)(units * units) * sizeof *sb->cost);
    sb->part = malloc((size_t)parts * sizeof *sb->part);
    sb->sigma = malloc((size_t)units * sizeof *sb->sigma);
    sb->cand = malloc((size_t)units * sizeof *sb->cand);
    sb->unit = malloc((size_t)units * sizeof *sb->unit);
    return sb->gain && sb->cost && sb->part && sb->sigma && sb->cand && sb->unit;
}

static void slot_bufs_free(slot_bufs *sb)
{
    free(sb->gain);
    free(sb->cost);
    free(sb->part);
    free(sb->sigma);
    free(sb->cand);
    free(sb->unit);
}

static vnm_status input_step(search *s, int64_t chunk, bool init)
{
    const int64_t O = s->O, I = s->I, V = s->p.V, M = s->p.M, B = s->B, G = s->G;
    float *ST = malloc((size_t)(I * O) * sizeof *ST);  /* [I][O] */
    double *CS = malloc((size_t)(I * B) * sizeof *CS); /* [I][B] */
    double *total = malloc((size_t)I * sizeof *total); /* [I] */
    int32_t *saved = malloc((size_t)(chunk * M) * sizeof *saved);
    slot_bufs sb;
    bool ok = slot_bufs_alloc(&sb, chunk, B) && ST && CS && total && saved;
    vnm_status st = ok ? VNM_OK : VNM_ERR_RUNTIME;
    if (ok) {
#pragma omp parallel for schedule(static) if (O * I > PAR_WORK)
        for (int64_t c = 0; c < I; c++) {
            float *col = ST + c * O;
            for (int64_t o = 0; o < O; o++) col[o] = s->S[(int64_t)s->pout[o] * I + c];
            total[c] = 0.0;
            for (int64_t blk = 0; blk < B; blk++) {
                double t = 0.0;
                for (int i = 0; i < rows_of(s, blk); i++) t += col[blk * V + i];
                CS[c * B + blk] = t;
                total[c] += t;
            }
        }
    }
    for (int64_t g0 = 0; st == VNM_OK && g0 < G; g0 += chunk) {
        const int64_t g1 = g0 + chunk < G ? g0 + chunk : G,
                      npos = (g1 - g0 - 1) * M + width_of(s, g1 - 1);
        double gained = 0.0;
        if (init) {
            double before = region_score(s, 0, B, g0, g1, sb.part);
            memcpy(saved, s->pin + g0 * M, (size_t)npos * sizeof *saved);
            if (!zigzag_deal(s->pin, g0 * M, g1 - g0, (int)M, width_of(s, g1 - 1), total)) {
                st = VNM_ERR_RUNTIME;
                break;
            }
            gained = region_score(s, 0, B, g0, g1, sb.part) - before;
        }
        for (int t = 0; st == VNM_OK && t < M; t++) {
            int64_t n = 0;
            for (int64_t g = g0; g < g1; g++)
                if (width_of(s, g) > t) sb.unit[n++] = g;
            if (n < 2) continue;
            for (int64_t a = 0; a < n; a++) sb.cand[a] = s->pin[sb.unit[a] * M + t];
            in_slot z = {ST, CS, t, sb.unit, sb.cand, n, sb.gain};
#pragma omp parallel for schedule(static) if (n * n * O > PAR_WORK)
            for (int64_t b = 0; b < n; b++) input_gain(s, &s->scr[omp_get_thread_num()], &z, b);
            double delta;
            st = reassign(sb.gain, sb.cost, n, sb.sigma, &delta);
            if (st != VNM_OK || delta <= 0.0) continue;
            for (int64_t a = 0; a < n; a++) s->pin[sb.unit[sb.sigma[a]] * M + t] = sb.cand[a];
            gained += delta;
        }
        if (init && gained < 0.0) memcpy(s->pin + g0 * M, saved, (size_t)npos * sizeof *saved);
    }
    free(ST);
    free(CS);
    free(total);
    free(saved);
    slot_bufs_free(&sb);
    return st;
}

/* ---- output step ---- */

/* A column set of one group and Σ over a block's current rows of top2 within it: what keeping
 * that set is worth to the block before a candidate row replaces one of its rows. */
typedef struct {
    uint64_t key; /* bit mask of c */
    uint8_t c[4];
    double val;
} set_val;

/* The set values of one (block, group): every set in combos order (exhaustive, groups wider than
 * 4), or the sets met so far, replaced round robin (l1: only a few distinct sets occur). */
typedef struct {
    set_val *e;
    int64_t cap, used; /* valid entries: min(used, cap) */
} set_table;

static double rows_value(const search *s, const float *SP, int64_t blk, int64_t p0,
                         const uint8_t *c, int k)
{
    double v = 0.0;
    for (int i = 0; i < rows_of(s, blk); i++)
        v += top2_in(SP + (int64_t)s->pout[blk * s->p.V + i] * s->I + p0, c, k);
    return v;
}

static const set_val *set_find(const search *s, const float *SP, set_table *tab, int64_t blk,
                               int64_t p0, const uint8_t *c, int k)
{
    uint64_t key = 0;
    for (int j = 0; j < k; j++) key |= UINT64_C(1) << c[j];
    int64_t valid = tab->used < tab->cap ? tab->used : tab->cap;
    for (int64_t i = 0; i < valid; i++)
        if (tab->e[i].key == key) return &tab->e[i];
    set_val *v = &tab->e[tab->used++ % tab->cap];
    v->key = key;
    memcpy(v->c, c, 4);
    v->val = rows_value(s, SP, blk, p0, c, k);
    return v;
}

/* Whether the l1 choice over the sums fs + x is still the set `in` (4 columns) that fs alone
 * chose: its weakest member must still outrank the strongest of the `out` columns. lo and hi are
 * the weakest kept and strongest other sum without the candidate: as x ≥ 0 and rounding is
 * monotone, hi + max x_out < lo settles it without adding the candidate to every column. */
static inline bool l1_keeps(const double *fs, const float *x, const uint8_t *in, const uint8_t *out,
                            int n_out, double lo, double hi)
{
    float x_out = 0.0f;
    for (int j = 0; j < n_out; j++) x_out = fmax2(x_out, x[out[j]]);
    if (hi + x_out < lo) return true;
    double weakest = INFINITY, strongest = -INFINITY;
    for (int j = 0; j < 4; j++) weakest = dmin(weakest, fs[in[j]] + x[in[j]]);
    for (int j = 0; j < n_out; j++) strongest = dmax(strongest, fs[out[j]] + x[out[j]]);
    if (weakest != strongest) return weakest > strongest;
    /* An exact tie: ranks go to the lower column. */
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < n_out; j++)
            if (fs[in[i]] + x[in[i]] == weakest && fs[out[j]] + x[out[j]] == weakest &&
                in[i] > out[j])
                return false;
    return true;
}

typedef struct {
    const float *SP;     /* [O][I] S with columns permuted, rows in original order */
    const double *cs;    /* [B][I] column sums of each block */
    set_table *tables;   /* [chunk blocks][G] */
    int64_t b0;          /* first block of the chunk */
    int t;               /* slot being re-dealt */
    const int64_t *unit; /* [n] the blocks taking part */
    const int32_t *cand; /* [n] the row in slot t of each */
    int64_t n;
    double *gain; /* [n][n] */
} out_slot;

/* gain[a][b] for every candidate a: score of block unit[b] with row cand[a] in slot t, summed
 * over groups. Within a group the fixed rows are worth (set value − the leaving row's top2), so a
 * candidate costs its own top2 once the kept set is known. Exhaustive takes the best set, trying
 * sets by decreasing fixed value until none can win. l1 finds the set from the block's column
 * sums with the candidate, nearly always the set the sums without it chose; those groups are
 * prepared first and then swept candidate by candidate, reading each candidate row in order. */
static void output_gain(const search *s, scratch *w, const out_slot *z, int64_t b)
{
    const int64_t I = s->I, M = s->p.M, n = z->n, blk = z->unit[b];
    const float *out_row = z->SP + (int64_t)z->cand[b] * I; /* the row leaving slot t */
    set_table *tabs = &z->tables[(blk - z->b0) * s->G];
    int64_t n_l1 = 0;
    for (int64_t a = 0; a < n; a++) z->gain[a * n + b] = 0.0;
    for (int64_t g = 0; g < s->G; g++) {
        const int64_t p0 = g * M;
        const int width = width_of(s, g), k = min_int(4, width);
        if (s->sel == VNM_SELECT_EXHAUSTIVE && width > 4) {
            set_table *tab = &tabs[g];
            for (int64_t q = 0; q < tab->used; q++)
                w->rank[q] =
                    (keyed){tab->e[q].val - top2_in(out_row + p0, tab->e[q].c, k), (int32_t)q};
            qsort(w->rank, (size_t)tab->used, sizeof *w->rank, keyed_cmp);
            for (int64_t a = 0; a < n; a++) {
                const float *x = z->SP + (int64_t)z->cand[a] * I + p0;
                double bound = top2_in(x, iota, width), best = -INFINITY;
                for (int64_t r = 0; r < tab->used && w->rank[r].key + bound > best; r++)
                    best = dmax(best, w->rank[r].key + top2_in(x, tab->e[w->rank[r].idx].c, k));
                z->gain[a * n + b] += best;
            }
            continue;
        }
        double *fs = w->fs + p0;
        uint8_t *kept = w->kept + g * 4, *others = w->others + p0;
        int top[4] = {0, 1, 2, 3};
        for (int j = 0; j < width; j++) fs[j] = z->cs[blk * I + p0 + j] - out_row[p0 + j];
        if (width > 4) l1_top(fs, width, k, top);
        as_set(top, k, kept);
        w->lo[g] = INFINITY;
        w->hi[g] = -INFINITY;
        for (int j = 0, o = 0; j < width; j++)
            if (memchr(kept, j, (size_t)k)) w->lo[g] = dmin(w->lo[g], fs[j]);
            else others[o++] = (uint8_t)j, w->hi[g] = dmax(w->hi[g], fs[j]);
        w->fixed[g] =
            set_find(s, z->SP, &tabs[g], blk, p0, kept, k)->val - top2_in(out_row + p0, kept, k);
        w->l1g[n_l1++] = g;
    }
    for (int64_t a = 0; a < n; a++) {
        const float *xa = z->SP + (int64_t)z->cand[a] * I;
        double acc = 0.0;
        for (int64_t i = 0; i < n_l1; i++) {
            const int64_t g = w->l1g[i], p0 = g * M;
            const int width = width_of(s, g), k = min_int(4, width);
            const float *x = xa + p0;
            const uint8_t *kept = w->kept + g * 4;
            if (width <= 4 ||
                l1_keeps(w->fs + p0, x, kept, w->others + p0, width - k, w->lo[g], w->hi[g])) {
                acc += w->fixed[g] + top2_in(x, kept, k);
                continue;
            }
            double sum[MAX_M];
            int top[4];
            uint8_t c[4];
            for (int j = 0; j < width; j++) sum[j] = w->fs[p0 + j] + x[j];
            l1_top(sum, width, k, top);
            as_set(top, k, c);
            acc += set_find(s, z->SP, &tabs[g], blk, p0, c, k)->val - top2_in(out_row + p0, c, k) +
                   top2_in(x, c, k);
        }
        z->gain[a * n + b] += acc;
    }
}

/* Column sums and set tables of block blk from its current rows. */
static void block_stats(const search *s, const float *SP, int64_t blk, double *cs,
                        set_table *tables /* [G] */)
{
    const int64_t I = s->I;
    memset(cs, 0, (size_t)I * sizeof *cs);
    for (int i = 0; i < rows_of(s, blk); i++) {
        const float *row = SP + (int64_t)s->pout[blk * s->p.V + i] * I;
        for (int64_t p = 0; p < I; p++) cs[p] += row[p];
    }
    for (int64_t g = 0; g < s->G; g++) {
        const int width = width_of(s, g), k = min_int(4, width);
        set_table *tab = &tables[g];
        tab->used = 0;
        if (s->sel != VNM_SELECT_EXHAUSTIVE || width <= 4) continue;
        const combos *cb = combos_get(s, width, k);
        for (int64_t q = 0; q < cb->count; q++) {
            set_val *v = &tab->e[tab->used++];
            v->key = 0;
            for (int j = 0; j < k; j++) v->key |= UINT64_C(1) << cb->c[q][j];
            memcpy(v->c, cb->c[q], 4);
            v->val = rows_value(s, SP, blk, g * s->p.M, cb->c[q], k);
        }
    }
}

/* Row `out` of block blk is replaced by row `in`: update its column sums and set values. */
static void block_swap_row(const search *s, const float *SP, double *cs, set_table *tables,
                           int32_t out, int32_t in)
{
    const int64_t I = s->I;
    const float *ro = SP + (int64_t)out * I, *ri = SP + (int64_t)in * I;
    for (int64_t p = 0; p < I; p++) cs[p] += (double)ri[p] - ro[p];
    for (int64_t g = 0; g < s->G; g++) {
        const int64_t p0 = g * s->p.M;
        const int k = min_int(4, width_of(s, g));
        set_table *tab = &tables[g];
        int64_t valid = tab->used < tab->cap ? tab->used : tab->cap;
        for (int64_t i = 0; i < valid; i++)
            tab->e[i].val += top2_in(ri + p0, tab->e[i].c, k) - top2_in(ro + p0, tab->e[i].c, k);
    }
}

static vnm_status output_step(search *s, int64_t chunk, bool init)
{
    const int64_t O = s->O, I = s->I, V = s->p.V, B = s->B, G = s->G;
    const int64_t cap = s->sel == VNM_SELECT_EXHAUSTIVE ? s->sets : CACHE_SETS;
    float *SP = malloc((size_t)(O * I) * sizeof *SP);  /* [O][I] */
    double *cs = malloc((size_t)(B * I) * sizeof *cs); /* [B][I] */
    double *total = malloc((size_t)O * sizeof *total); /* [O] */
    set_table *tables = malloc((size_t)(chunk * G) * sizeof *tables);
    set_val *entries = malloc((size_t)(chunk * G * cap) * sizeof *entries);
    int32_t *saved = malloc((size_t)(chunk * V) * sizeof *saved);
    slot_bufs sb;
    bool ok = slot_bufs_alloc(&sb, chunk, chunk) && SP && cs && total && tables && entries && saved;
    vnm_status st = ok ? VNM_OK : VNM_ERR_RUNTIME;
    if (ok) {
        for (int64_t k = 0; k < chunk * G; k++) tables[k] = (set_table){entries + k * cap, cap, 0};
#pragma omp parallel for schedule(static) if (O * I > PAR_WORK)
        for (int64_t r = 0; r < O; r++) {
            const float *src = s->S + r * I;
            float *dst = SP + r * I;
            double t = 0.0;
            for (int64_t j = 0; j < I; j++) t += dst[j] = src[s->pin[j]];
            total[r] = t;
        }
    }
    for (int64_t b0 = 0; st == VNM_OK && b0 < B; b0 += chunk) {
        const int64_t b1 = b0 + chunk < B ? b0 + chunk : B,
                      npos = (b1 - b0 - 1) * V + rows_of(s, b1 - 1);
        double gained = 0.0;
        if (init) {
            double before = region_score(s, b0, b1, 0, G, sb.part);
            memcpy(saved, s->pout + b0 * V, (size_t)npos * sizeof *saved);
            if (!zigzag_deal(s->pout, b0 * V, b1 - b0, (int)V, rows_of(s, b1 - 1), total)) {
                st = VNM_ERR_RUNTIME;
                break;
            }
            gained = region_score(s, b0, b1, 0, G, sb.part) - before;
        }
#pragma omp parallel for schedule(static) if ((b1 - b0) * V * I > PAR_WORK)
        for (int64_t blk = b0; blk < b1; blk++)
            block_stats(s, SP, blk, cs + blk * I, tables + (blk - b0) * G);
        for (int t = 0; st == VNM_OK && t < V; t++) {
            int64_t n = 0;
            for (int64_t blk = b0; blk < b1; blk++)
                if (rows_of(s, blk) > t) sb.unit[n++] = blk;
            if (n < 2) continue;
            for (int64_t a = 0; a < n; a++) sb.cand[a] = s->pout[sb.unit[a] * V + t];
            out_slot z = {SP, cs, tables, b0, t, sb.unit, sb.cand, n, sb.gain};
#pragma omp parallel for schedule(static) if (n * n * I > PAR_WORK)
            for (int64_t b = 0; b < n; b++) output_gain(s, &s->scr[omp_get_thread_num()], &z, b);
            double delta;
            st = reassign(sb.gain, sb.cost, n, sb.sigma, &delta);
            if (st != VNM_OK || delta <= 0.0) continue;
            for (int64_t a = 0; a < n; a++) {
                int64_t blk = sb.unit[sb.sigma[a]];
                int32_t leaving = sb.cand[sb.sigma[a]];
                if (leaving != sb.cand[a])
                    block_swap_row(s, SP, cs + blk * I, tables + (blk - b0) * G, leaving,
                                   sb.cand[a]);
            }
            for (int64_t a = 0; a < n; a++) s->pout[sb.unit[sb.sigma[a]] * V + t] = sb.cand[a];
            gained += delta;
        }
        if (init && gained < 0.0) memcpy(s->pout + b0 * V, saved, (size_t)npos * sizeof *saved);
    }
    free(SP);
    free(cs);
    free(total);
    free(tables);
    free(entries);
    free(saved);
    slot_bufs_free(&sb);
    return st;
}

/* ---- the search ---- */

static void search_free(search *s)
{
    for (int i = 0; i < s->n_cmb; i++) free(s->cmb[i].c);
    for (int i = 0; s->scr && i < s->n_scr; i++) {
        free(s->scr[i].tile);
        free(s->scr[i].q2);
        free(s->scr[i].best);
        free(s->scr[i].ub);
        free(s->scr[i].rank);
        free(s->scr[i].fs);
        free(s->scr[i].fixed);
        free(s->scr[i].lo);
        free(s->scr[i].hi);
        free(s->scr[i].kept);
        free(s->scr[i].others);
        free(s->scr[i].l1g);
    }
    free(s->scr);
}

static bool search_init(search *s)
{
    const int M = s->p.M, r = (int)(s->I % M);
    int64_t max_sets = 1;
    if (s->sel == VNM_SELECT_EXHAUSTIVE) {
        /* For a group of width w (M, and the tail's r): its k-sets, and the fixed columns' k- and
         * (k−1)-sets once a candidate is taken out. */
        const int widths[2] = {M, r};
        for (int i = 0; i < (r ? 2 : 1); i++) {
            const int w = widths[i], k = min_int(4, w);
            const int want[3][2] = {{w, k}, {w - 1, k}, {w - 1, k - 1}};
            for (int j = 0; j < 3; j++) {
                if (combos_get(s, want[j][0], want[j][1])) continue;
                if (!combos_build(&s->cmb[s->n_cmb], want[j][0], want[j][1])) return false;
                max_sets = s->cmb[s->n_cmb].count > max_sets ? s->cmb[s->n_cmb].count : max_sets;
                s->n_cmb++;
            }
        }
    }
    s->sets = binom(M, 4);
    s->n_scr = omp_get_max_threads();
    s->scr = calloc((size_t)s->n_scr, sizeof *s->scr);
    if (!s->scr) return false;
    int64_t units = s->G > s->B ? s->G : s->B;
    for (int i = 0; i < s->n_scr; i++) {
        scratch *w = &s->scr[i];
        w->tile = malloc((size_t)(s->p.V * M) * sizeof *w->tile);
        w->q2 = malloc((size_t)s->p.V * sizeof *w->q2);
        w->best = malloc((size_t)units * sizeof *w->best);
        w->ub = malloc((size_t)units * sizeof *w->ub);
        w->rank = malloc((size_t)max_sets * sizeof *w->rank);
        w->fs = malloc((size_t)(s->G * M) * sizeof *w->fs);
        w->fixed = malloc((size_t)s->G * sizeof *w->fixed);
        w->lo = malloc((size_t)s->G * sizeof *w->lo);
        w->hi = malloc((size_t)s->G * sizeof *w->hi);
        w->kept = malloc((size_t)(s->G * 4));
        w->others = malloc((size_t)(s->G * M));
        w->l1g = malloc((size_t)s->G * sizeof *w->l1g);
        if (!w->tile || !w->q2 || !w->best || !w->ub || !w->rank || !w->fs || !w->fixed || !w->lo ||
            !w->hi || !w->kept || !w->others || !w->l1g)
            return false;
    }
    return true;
}

/* Kept score of S under the permutations (NULL: identity) through select.c. */
static vnm_status kept_score(vnm_pattern p, vnm_selector sel, const float *S, int64_t O, int64_t I,
                             const int32_t *pout, const int32_t *pin, float *SP, uint8_t *mask,
                             double *kept, char *err, size_t err_len)
{
    const float *src = S;
    if (pout) {
#pragma omp parallel for schedule(static) if (O * I > PAR_WORK)
        for (int64_t o = 0; o < O; o++)
            for (int64_t j = 0; j < I; j++) SP[o * I + j] = S[(int64_t)pout[o] * I + pin[j]];
        src = SP;
    }
    vnm_status st = vnm_mask_select(p, sel, src, O, I, mask, err, err_len);
    if (st == VNM_OK) *kept = vnm_mask_kept_score(mask, src, O * I);
    return st;
}

vnm_status vnm_permute_search(vnm_pattern p, const float *S, int64_t O, int64_t I,
                              const vnm_permute_opts *opts, int32_t *perm_out, int32_t *perm_in,
                              double *kept_before, double *kept_after, char *err, size_t err_len)
{
    char text[64];
    vnm_pattern parsed;
    vnm_status st = vnm_pattern_parse(vnm_pattern_str(p, text, sizeof text), &parsed, err, err_len);
    if (st != VNM_OK) return st;
    vnm_permute_opts o = opts ? *opts : (vnm_permute_opts){2, 0, VNM_SELECT_L1};
    if (O < 1 || I < 1 || O > INT32_MAX || I > INT32_MAX)
        return vnm_sparse_fail(err, err_len,
                    "permute_search: shape [O, I] = [%lld, %lld] must have sizes in 1..%d",
                    (long long)O, (long long)I, INT32_MAX);
    if (!S || !perm_out || !perm_in)
        return vnm_sparse_fail(err, err_len, "permute_search: S, perm_out and perm_in must not be NULL");
    if (o.rounds < 0 || o.chunk < 0)
        return vnm_sparse_fail(err, err_len,
                    "permute_search: rounds (%d) and chunk (%lld) must be >= 0 (0 chunk: none)",
                    o.rounds, (long long)o.chunk);
    if (o.selector != VNM_SELECT_L1 && o.selector != VNM_SELECT_EXHAUSTIVE)
        return vnm_sparse_fail(err, err_len, "permute_search: unknown selector %d", (int)o.selector);
    for (int64_t k = 0; k < O * I; k++)
        if (!(S[k] >= 0.0f) || isinf(S[k]))
            return vnm_sparse_fail(err, err_len,
                        "permute_search: S[%lld][%lld] = %g; scores must be finite and >= 0",
                        (long long)(k / I), (long long)(k % I), (double)S[k]);

    search s = {.p = p, .sel = o.selector, .S = S, .O = O, .I = I};
    s.G = (I + p.M - 1) / p.M;
    s.B = (O + p.V - 1) / p.V;
    /* Chunks are whole groups / blocks: chunk rounded down to a multiple of M (V), at least one. */
    int64_t chunk_in = o.chunk ? o.chunk / p.M : s.G, chunk_out = o.chunk ? o.chunk / p.V : s.B;
    chunk_in = chunk_in < 1 ? 1 : chunk_in > s.G ? s.G : chunk_in;
    chunk_out = chunk_out < 1 ? 1 : chunk_out > s.B ? s.B : chunk_out;
    s.pin = malloc((size_t)I * sizeof *s.pin);
    s.pout = malloc((size_t)O * sizeof *s.pout);
    float *SP = malloc((size_t)(O * I) * sizeof *SP);
    uint8_t *mask = malloc((size_t)(O * I));
    double before = 0.0, after = 0.0;
    st = s.pin && s.pout && SP && mask && search_init(&s) ? VNM_OK : out_of_memory(err, err_len);
    if (st == VNM_OK)
        st = kept_score(p, o.selector, S, O, I, NULL, NULL, SP, mask, &before, err, err_len);
    if (st == VNM_OK) {
        for (int64_t i = 0; i < I; i++) s.pin[i] = (int32_t)i;
        for (int64_t r = 0; r < O; r++) s.pout[r] = (int32_t)r;
        for (int r = 0; st == VNM_OK && r < o.rounds; r++) {
            st = input_step(&s, chunk_in, r == 0);
            if (st == VNM_OK) st = output_step(&s, chunk_out, r == 0);
        }
        if (st != VNM_OK) out_of_memory(err, err_len);
    }
    if (st == VNM_OK)
        st = kept_score(p, o.selector, S, O, I, s.pout, s.pin, SP, mask, &after, err, err_len);
    if (st == VNM_OK) {
        /* The internal scores can differ from select.c's by rounding near ties; the identity is
         * the answer whenever the search did not really gain. */
        bool keep = after > before;
        for (int64_t i = 0; i < I; i++) perm_in[i] = keep ? s.pin[i] : (int32_t)i;
        for (int64_t r = 0; r < O; r++) perm_out[r] = keep ? s.pout[r] : (int32_t)r;
        if (kept_before) *kept_before = before;
        if (kept_after) *kept_after = keep ? after : before;
    }
    search_free(&s);
    free(s.pin);
    free(s.pout);
    free(SP);
    free(mask);
    return st;
}
