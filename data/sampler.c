/* data/sampler.c — what every loader shares about the order of samples: the per-epoch Philox
 * shuffle and the sampler position (which batch comes next, when an epoch ends). The image loader
 * and the token loader both use these, so a position saved by either means the same thing. */
#include "data.h"

void vnm_shuffle_order(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm)
{
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        uint32_t r[4];
        vnm_philox4x32(seed, (uint64_t)i, (uint64_t)epoch, r);
        /* 64 random bits: the modulo bias is below n / 2^64 */
        uint64_t bits = (uint64_t)r[0] << 32 | r[1];
        int64_t j = (int64_t)(bits % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int64_t vnm_sampler_batches_per_epoch(int64_t n, int64_t batch, bool drop_last)
{
    return drop_last ? n / batch : (n + batch - 1) / batch;
}

vnm_sampler_pos vnm_sampler_normalise(vnm_sampler_pos p, int64_t n, int64_t batch, bool drop_last)
{
    int64_t left = n - p.index;
    if (left <= 0 || (drop_last && left < batch)) return (vnm_sampler_pos){p.epoch + 1, 0};
    return p;
}

vnm_status vnm_sampler_seek(const char *who, vnm_sampler_pos pos, int64_t n, int64_t batch,
                            bool drop_last, vnm_sampler_pos *out, char *err, size_t err_len)
{
    if (pos.epoch < 0 || pos.index < 0 || pos.index > n)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "%s: position {epoch %lld, index %lld}, expected epoch ≥ 0 and index in "
                          "[0, %lld]",
                          who, (long long)pos.epoch, (long long)pos.index, (long long)n);
    *out = vnm_sampler_normalise(pos, n, batch, drop_last);
    return VNM_OK;
}
