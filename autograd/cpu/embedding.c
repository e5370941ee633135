/* autograd/cpu/embedding.c — embedding gather (forward) and scatter-add (backward). The op has
 * checked every id against V; the backward still skips ids outside [0, V) so ids changed between
 * forward and backward cannot write outside the gradient. Repeated ids make the scatter a
 * reduction: threads split the columns and each adds the tokens in order, so the sums do not
 * depend on the thread count. */
#include <string.h>

#include "../backend.h"

static inline int64_t id_at(const void *ids, bool ids64, int64_t i)
{
    return ids64 ? ((const int64_t *)ids)[i] : ((const int32_t *)ids)[i];
}

static void cpu_embedding_fwd(float *out, const void *ids, bool ids64, const float *table,
                              int64_t n, int64_t D)
{
#pragma omp parallel for schedule(static) if (n * D > 65536)
    for (int64_t i = 0; i < n; i++)
        memcpy(out + i * D, table + id_at(ids, ids64, i) * D, (size_t)D * sizeof *out);
}

static void cpu_embedding_bwd(float *dtable, const void *ids, bool ids64, const float *dout,
                              int64_t n, int64_t V, int64_t D)
{
    enum { COLS = 64 };
    int64_t blocks = (D + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (n * D > 32768)
    for (int64_t c = 0; c < blocks; c++) {
        int64_t j0 = c * COLS, w = D - j0 < COLS ? D - j0 : COLS;
        for (int64_t i = 0; i < n; i++) {
            int64_t row = id_at(ids, ids64, i);
            if (row < 0 || row >= V) continue;
            float *dr = dtable + row * D + j0;  /* [w] */
            const float *gr = dout + i * D + j0; /* [w] */
            for (int64_t j = 0; j < w; j++) dr[j] += gr[j];
        }
    }
}

void vnm_cpu_register_embedding(vnm_backend *be)
{
    be->embedding_fwd = cpu_embedding_fwd;
    be->embedding_bwd = cpu_embedding_bwd;
}
