/* sparse/lsa.c — linear sum assignment for dense square cost matrices, by the shortest augmenting
 * path method of Jonker and Volgenant in the one-row-at-a-time form analysed by Crouse ("On
 * implementing 2D rectangular assignment algorithms", IEEE TAES 2016). Each row is added to the
 * assignment by a Dijkstra search over reduced costs c[i][j] − u[i] − v[j], which the dual
 * potentials u, v keep non-negative; the path found is flipped and the potentials updated so the
 * next search again sees non-negative reduced costs. n searches of O(n²) each: O(n³). The channel
 * permutation (permute.c) calls it once per slot with n = groups or row blocks of a chunk. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "sparse.h"

/* One search from the unassigned row `cur` to an unassigned column, then the dual update and the
 * flip of the alternating path. c is the scaled n×n cost; row_of_col/col_of_row hold the partial
 * assignment (-1: free). Work arrays: dist (tentative path costs of columns), path (predecessor
 * row of each column), todo (columns not yet scanned), row_seen/col_seen. */
static void augment(const double *c, int32_t n, int32_t cur, double *u, double *v,
                    int32_t *col_of_row, int32_t *row_of_col, double *dist, int32_t *path,
                    int32_t *todo, bool *row_seen, bool *col_seen)
{
    for (int32_t j = 0; j < n; j++) {
        dist[j] = INFINITY;
        path[j] = -1;
        todo[j] = j;
        col_seen[j] = false;
    }
    for (int32_t i = 0; i < n; i++) row_seen[i] = false;
    int32_t n_todo = n, i = cur, sink = -1;
    double reached = 0.0; /* cost of the shortest path to the last column scanned */
    while (sink < 0) {
        row_seen[i] = true;
        double lowest = INFINITY;
        int32_t at = 0;
        for (int32_t k = 0; k < n_todo; k++) {
            int32_t j = todo[k];
            double r = reached + c[(int64_t)i * n + j] - u[i] - v[j];
            if (r < dist[j]) {
                dist[j] = r;
                path[j] = i;
            }
            /* Among equally short columns a free one ends the search at once. */
            if (dist[j] < lowest || (dist[j] == lowest && row_of_col[j] < 0)) {
                lowest = dist[j];
                at = k;
            }
        }
        reached = lowest;
        int32_t j = todo[at];
        col_seen[j] = true;
        todo[at] = todo[--n_todo];
        if (row_of_col[j] < 0) sink = j;
        else i = row_of_col[j];
    }
    u[cur] += reached;
    for (int32_t r = 0; r < n; r++)
        if (row_seen[r] && r != cur) u[r] += reached - dist[col_of_row[r]];
    for (int32_t j = 0; j < n; j++)
        if (col_seen[j]) v[j] -= reached - dist[j];
    for (int32_t j = sink;;) {
        int32_t r = path[j];
        row_of_col[j] = r;
        int32_t prev = col_of_row[r];
        col_of_row[r] = j;
        if (r == cur) break;
        j = prev;
    }
}

vnm_status vnm_lsa_solve(const double *cost, int64_t n, int32_t *col_of_row)
{
    if (n < 0 || n > INT32_MAX) return VNM_ERR_INPUT;
    if (n == 0) return VNM_OK;
    if (!cost || !col_of_row) return VNM_ERR_INPUT;
    double max_abs = 0.0;
    for (int64_t k = 0; k < n * n; k++) {
        if (!isfinite(cost[k])) return VNM_ERR_INPUT;
        max_abs = fmax(max_abs, fabs(cost[k]));
    }
    /* Scaling by a power of two (exact) to |c| < 1 keeps every potential and path cost far from
     * overflow whatever the magnitudes, and changes no comparison. */
    int e = 0;
    frexp(max_abs, &e);
    double *c = malloc((size_t)(n * n) * sizeof *c);
    double *u = calloc((size_t)n, sizeof *u), *v = calloc((size_t)n, sizeof *v);
    double *dist = malloc((size_t)n * sizeof *dist);
    int32_t *row_of_col = malloc((size_t)n * sizeof *row_of_col);
    int32_t *path = malloc((size_t)n * sizeof *path), *todo = malloc((size_t)n * sizeof *todo);
    bool *row_seen = malloc((size_t)n * sizeof *row_seen);
    bool *col_seen = malloc((size_t)n * sizeof *col_seen);
    vnm_status st = VNM_ERR_RUNTIME;
    if (c && u && v && dist && row_of_col && path && todo && row_seen && col_seen) {
        for (int64_t k = 0; k < n * n; k++) c[k] = ldexp(cost[k], -e);
        for (int64_t k = 0; k < n; k++) col_of_row[k] = row_of_col[k] = -1;
        for (int32_t r = 0; r < (int32_t)n; r++)
            augment(c, (int32_t)n, r, u, v, col_of_row, row_of_col, dist, path, todo, row_seen,
                    col_seen);
        st = VNM_OK;
    }
    free(c);
    free(u);
    free(v);
    free(dist);
    free(row_of_col);
    free(path);
    free(todo);
    free(row_seen);
    free(col_seen);
    return st;
}
