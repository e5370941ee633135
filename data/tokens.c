/* data/tokens.c — token shards (the VNMTOKEN format described in data.h): validated,
 * memory-mapped reading and atomic, streaming writing; and token datasets, the shards of one split
 * read as a single stream. */
#include <ctype.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"

static uint32_t get_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

static void put_le64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}

static void put_le16(uint8_t *p, uint16_t v)
{
    v = htole16(v);
    memcpy(p, &v, 2);
}

/* Tokens are stored unaligned-safe and little-endian; memcpy + leNNtoh compile to plain loads. */
static uint32_t token_at(const uint8_t *tokens, int token_bytes, int64_t i)
{
    if (token_bytes == 2) {
        uint16_t v;
        memcpy(&v, tokens + 2 * i, 2);
        return le16toh(v);
    }
    return get_le32(tokens + 4 * i);
}

uint32_t vnm_token_shard_at(const vnm_token_shard *s, int64_t i)
{
    return token_at(s->tokens, s->token_bytes, i);
}

/* The magic as a C-like string for messages: printable ASCII kept, other bytes as \xNN. */
static void show_magic(const uint8_t *m, char out[40])
{
    char *o = out;
    for (int k = 0; k < 8; k++) {
        if (m[k] >= 0x20 && m[k] < 0x7f && m[k] != '"' && m[k] != '\\')
            *o++ = (char)m[k];
        else
            o += sprintf(o, "\\x%02x", m[k]);
    }
    *o = 0;
}

static vnm_status check_vocab(const char *path, uint32_t vocab_size, uint32_t eos_id, char *err,
                              size_t err_len)
{
    if (vocab_size < 1 || vocab_size > VNM_TOKENS_MAX_VOCAB)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "tokens '%s': vocab_size %u, expected 1..%u (ids are used as int32)",
                          path, vocab_size, VNM_TOKENS_MAX_VOCAB);
    if (eos_id != VNM_TOKENS_NO_EOS && eos_id >= vocab_size)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "tokens '%s': eos_id %u, expected < vocab_size %u or 0xFFFFFFFF (none)",
                          path, eos_id, vocab_size);
    return VNM_OK;
}

/* Index of the first token ≥ vocab_size, or -1. Block maxima keep the common all-valid case a
 * vectorisable pass over the mapping. */
static int64_t first_invalid(const uint8_t *tokens, int token_bytes, int64_t count,
                             uint32_t vocab_size)
{
    if (token_bytes == 2 && vocab_size > UINT16_MAX) return -1;
    enum { BLOCK = 4096 };
    for (int64_t b = 0; b < count; b += BLOCK) {
        int64_t e = count - b < BLOCK ? count : b + BLOCK;
        uint32_t hi = 0;
        for (int64_t i = b; i < e; i++) {
            uint32_t t = token_at(tokens, token_bytes, i);
            hi = t > hi ? t : hi;
        }
        if (hi < vocab_size) continue;
        for (int64_t i = b; i < e; i++)
            if (token_at(tokens, token_bytes, i) >= vocab_size) return i;
    }
    return -1;
}

vnm_status vnm_token_shard_open(const char *path, vnm_token_shard *out, char *err,
                                size_t err_len)
{
    if (!out) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens '%s': cannot open: %s", path,
                          strerror(errno));
    vnm_status st = VNM_ERR_INPUT;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        vnm_errbuf(err, err_len, st, "tokens '%s': not a regular file", path);
        goto done;
    }
    int64_t size = sb.st_size;
    uint8_t h[VNM_TOKENS_HEADER_BYTES];
    if (size < VNM_TOKENS_HEADER_BYTES) {
        vnm_errbuf(err, err_len, st,
                   "tokens '%s': truncated header: expected %d bytes, the file holds %lld", path,
                   VNM_TOKENS_HEADER_BYTES, (long long)size);
        goto done;
    }
    if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h) {
        vnm_errbuf(err, err_len, st, "tokens '%s': cannot read the header: %s", path,
                   strerror(errno));
        goto done;
    }
    if (memcmp(h, VNM_TOKENS_MAGIC, 8) != 0) {
        char shown[40];
        show_magic(h, shown);
        vnm_errbuf(err, err_len, st,
                   "tokens '%s': bad magic \"%s\", expected \"" VNM_TOKENS_MAGIC
                   "\" (not a token shard)",
                   path, shown);
        goto done;
    }
    uint32_t version = get_le32(h + 8), token_bytes = get_le32(h + 12);
    uint64_t count = get_le64(h + 16);
    uint32_t vocab_size = get_le32(h + 24), eos_id = get_le32(h + 28);
    if (version != VNM_TOKENS_VERSION) {
        vnm_errbuf(err, err_len, st, "tokens '%s': version %u, expected %u", path, version,
                   VNM_TOKENS_VERSION);
        goto done;
    }
    if (token_bytes != 2 && token_bytes != 4) {
        vnm_errbuf(err, err_len, st, "tokens '%s': token_bytes %u, expected 2 (u16) or 4 (u32)",
                   path, token_bytes);
        goto done;
    }
    if ((st = check_vocab(path, vocab_size, eos_id, err, err_len))) goto done;
    st = VNM_ERR_INPUT;
    int64_t payload = size - VNM_TOKENS_HEADER_BYTES;
    if (count > (uint64_t)INT64_MAX / token_bytes ||
        (int64_t)count * token_bytes != payload) {
        if (count > (uint64_t)(INT64_MAX - VNM_TOKENS_HEADER_BYTES) / token_bytes)
            vnm_errbuf(err, err_len, st,
                       "tokens '%s': size mismatch: the header announces %llu tokens of %u bytes, "
                       "more than a file holds; the file holds %lld bytes",
                       path, (unsigned long long)count, token_bytes, (long long)size);
        else
            vnm_errbuf(err, err_len, st,
                       "tokens '%s': size mismatch: expected %lld bytes (header %d + %llu tokens "
                       "of %u bytes), the file holds %lld",
                       path, (long long)(VNM_TOKENS_HEADER_BYTES + (int64_t)count * token_bytes),
                       VNM_TOKENS_HEADER_BYTES, (unsigned long long)count, token_bytes,
                       (long long)size);
        goto done;
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': cannot map %lld bytes: %s",
                        path, (long long)size, strerror(errno));
        goto done;
    }
    const uint8_t *tokens = (const uint8_t *)map + VNM_TOKENS_HEADER_BYTES;
    int64_t bad = first_invalid(tokens, (int)token_bytes, (int64_t)count, vocab_size);
    if (bad >= 0) {
        vnm_errbuf(err, err_len, st,
                   "tokens '%s': token %u at index %lld, expected < vocab_size %u", path,
                   token_at(tokens, (int)token_bytes, bad), (long long)bad, vocab_size);
        munmap(map, (size_t)size);
        goto done;
    }
    char *copy = strdup(path);
    if (!copy) {
        munmap(map, (size_t)size);
        st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': out of memory", path);
        goto done;
    }
    *out = (vnm_token_shard){.path = copy, .token_bytes = (int)token_bytes,
                             .count = (int64_t)count, .vocab_size = vocab_size,
                             .eos_id = eos_id, .tokens = tokens, .map = map,
                             .map_bytes = (size_t)size};
    st = VNM_OK;
done:
    close(fd); /* the mapping outlives the descriptor */
    return st;
}

void vnm_token_shard_close(vnm_token_shard *s)
{
    if (!s) return;
    if (s->map) munmap(s->map, s->map_bytes);
    free(s->path);
    memset(s, 0, sizeof *s);
}

/* ---- writing ---- */

/* A shard being written: tokens stream into path.tmp behind a placeholder header; finishing
 * writes the real header, flushes to disk and renames, so readers never see a partial shard. */
typedef struct {
    FILE *f;
    char *path, *tmp;
    int token_bytes;
    int64_t count;
    uint32_t vocab_size, eos_id;
} shard_out;

static void shard_abandon(shard_out *o)
{
    if (o->f) fclose(o->f);
    if (o->tmp) remove(o->tmp);
    free(o->path);
    free(o->tmp);
    memset(o, 0, sizeof *o);
}

static vnm_status shard_begin(shard_out *o, const char *path, uint32_t vocab_size,
                              uint32_t eos_id, char *err, size_t err_len)
{
    memset(o, 0, sizeof *o);
    vnm_status st = check_vocab(path, vocab_size, eos_id, err, err_len);
    if (st) return st;
    o->path = strdup(path);
    if (!o->path || asprintf(&o->tmp, "%s.tmp", path) < 0) {
        o->tmp = NULL;
        shard_abandon(o);
        return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': out of memory", path);
    }
    o->f = fopen(o->tmp, "wb");
    if (!o->f) {
        st = vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens '%s': cannot create: %s", o->tmp,
                        strerror(errno));
        free(o->tmp); /* nothing was created: nothing to remove */
        o->tmp = NULL;
        shard_abandon(o);
        return st;
    }
    o->token_bytes = vocab_size <= 65536 ? 2 : 4;
    o->vocab_size = vocab_size;
    o->eos_id = eos_id;
    static const uint8_t placeholder[VNM_TOKENS_HEADER_BYTES];
    if (fwrite(placeholder, 1, sizeof placeholder, o->f) != sizeof placeholder) {
        st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': cannot write: %s", o->tmp,
                        strerror(errno));
        shard_abandon(o);
        return st;
    }
    return VNM_OK;
}

static vnm_status shard_put(shard_out *o, const uint32_t *ids, int64_t n, char *err,
                            size_t err_len)
{
    uint8_t buf[16384];
    int64_t per = (int64_t)sizeof buf / o->token_bytes;
    for (int64_t at = 0; at < n; at += per) {
        int64_t m = n - at < per ? n - at : per;
        for (int64_t i = 0; i < m; i++) {
            uint32_t t = ids[at + i];
            if (t >= o->vocab_size)
                return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                                  "tokens '%s': token %u at index %lld, expected < vocab_size %u",
                                  o->path, t, (long long)(o->count + at + i), o->vocab_size);
            if (o->token_bytes == 2)
                put_le16(buf + 2 * i, (uint16_t)t);
            else
                put_le32(buf + 4 * i, t);
        }
        size_t bytes = (size_t)(m * o->token_bytes);
        if (fwrite(buf, 1, bytes, o->f) != bytes)
            return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': cannot write: %s",
                              o->tmp, strerror(errno));
    }
    o->count += n;
    return VNM_OK;
}

/* Completes the shard and releases o, or abandons it (removing the .tmp) on failure. */
static vnm_status shard_finish(shard_out *o, char *err, size_t err_len)
{
    uint8_t h[VNM_TOKENS_HEADER_BYTES];
    memcpy(h, VNM_TOKENS_MAGIC, 8);
    put_le32(h + 8, VNM_TOKENS_VERSION);
    put_le32(h + 12, (uint32_t)o->token_bytes);
    put_le64(h + 16, (uint64_t)o->count);
    put_le32(h + 24, o->vocab_size);
    put_le32(h + 28, o->eos_id);
    bool ok = fseek(o->f, 0, SEEK_SET) == 0 && fwrite(h, 1, sizeof h, o->f) == sizeof h &&
              fflush(o->f) == 0 && fsync(fileno(o->f)) == 0;
    int closed = fclose(o->f);
    o->f = NULL;
    if (!ok || closed != 0 || rename(o->tmp, o->path) != 0) {
        vnm_status st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME,
                                   "tokens '%s': cannot complete the shard: %s", o->path,
                                   strerror(errno));
        shard_abandon(o);
        return st;
    }
    free(o->tmp);
    o->tmp = NULL; /* renamed: nothing left to remove */
    shard_abandon(o);
    return VNM_OK;
}

vnm_status vnm_token_shard_write(const char *path, const uint32_t *tokens, int64_t count,
                                 uint32_t vocab_size, uint32_t eos_id, char *err, size_t err_len)
{
    if (!path || (count > 0 && !tokens) || count < 0)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "tokens: write needs a path and count ≥ 0 tokens");
    shard_out o;
    vnm_status st = shard_begin(&o, path, vocab_size, eos_id, err, err_len);
    if (st) return st;
    if ((st = shard_put(&o, tokens, count, err, err_len))) {
        shard_abandon(&o);
        return st;
    }
    return shard_finish(&o, err, err_len);
}

/* ---- the shards of a split ---- */

/* Whether name is exactly split-NNNNN.tok as the writer spells it (at least five digits, no
 * extra leading zeros), and its number. */
static bool shard_number(const char *name, const char *split, int *k)
{
    size_t ls = strlen(split);
    if (strncmp(name, split, ls) != 0 || name[ls] != '-') return false;
    const char *d = name + ls + 1;
    if (!isdigit((unsigned char)d[0])) return false;
    char *end;
    errno = 0;
    long v = strtol(d, &end, 10);
    if (errno || v < 0 || v >= INT_MAX || strcmp(end, ".tok") != 0) return false;
    char canon[32];
    snprintf(canon, sizeof canon, "%05ld.tok", v);
    if (strcmp(canon, d) != 0) return false;
    *k = (int)v;
    return true;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The numbers of the split's shards present in dir, ascending (*nums malloc'd, NULL when none). */
static vnm_status list_shards(const char *dir, const char *split, int **nums, int *count,
                              char *err, size_t err_len)
{
    *nums = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: cannot open directory '%s': %s",
                          dir, strerror(errno));
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int k;
        if (!shard_number(e->d_name, split, &k)) continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 16;
            int *grown = realloc(*nums, (size_t)cap * sizeof **nums);
            if (!grown) {
                closedir(d);
                free(*nums);
                *nums = NULL;
                return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': out of memory",
                                  dir);
            }
            *nums = grown;
        }
        (*nums)[(*count)++] = k;
    }
    closedir(d);
    if (*count) qsort(*nums, (size_t)*count, sizeof **nums, cmp_int);
    return VNM_OK;
}

static char *shard_path(const char *dir, const char *split, int k)
{
    char *p;
    return asprintf(&p, "%s/%s-%05d.tok", dir, split, k) < 0 ? NULL : p;
}

static vnm_status check_split(const char *split, char *err, size_t err_len)
{
    if (!split || !split[0] || strchr(split, '/'))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "tokens: split '%s', expected a name such as train or val (no '/')",
                          split ? split : "(null)");
    return VNM_OK;
}

struct vnm_token_writer {
    char *dir, *split;
    uint32_t vocab_size, eos_id;
    int64_t shard_tokens;
    shard_out cur; /* open while cur.f */
    int shards;    /* completed */
    int64_t tokens;
};

vnm_status vnm_token_writer_open(const char *dir, const char *split, uint32_t vocab_size,
                                 uint32_t eos_id, int64_t shard_tokens, vnm_token_writer **out,
                                 char *err, size_t err_len)
{
    if (!out) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: out is NULL");
    *out = NULL;
    if (!dir) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: directory is NULL");
    vnm_status st = check_split(split, err, err_len);
    if (st) return st;
    if ((st = check_vocab(dir, vocab_size, eos_id, err, err_len))) return st;
    if (shard_tokens < 1)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "tokens '%s': %lld tokens per shard, expected ≥ 1", dir,
                          (long long)shard_tokens);
    vnm_token_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->dir = strdup(dir)) || !(w->split = strdup(split))) {
        vnm_token_writer_abort(w);
        return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': out of memory", dir);
    }
    w->vocab_size = vocab_size;
    w->eos_id = eos_id;
    w->shard_tokens = shard_tokens;
    *out = w;
    return VNM_OK;
}

vnm_status vnm_token_writer_append(vnm_token_writer *w, const uint32_t *tokens, int64_t n,
                                   char *err, size_t err_len)
{
    if (!w || n < 0 || (n > 0 && !tokens))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: append needs a writer and tokens");
    while (n > 0) {
        vnm_status st;
        if (!w->cur.f) {
            /* shards begin on demand, so a stream ending on a shard boundary leaves no empty one */
            char *path = shard_path(w->dir, w->split, w->shards);
            if (!path)
                return vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': out of memory",
                                  w->dir);
            st = shard_begin(&w->cur, path, w->vocab_size, w->eos_id, err, err_len);
            free(path);
            if (st) return st;
        }
        int64_t room = w->shard_tokens - w->cur.count, m = n < room ? n : room;
        if ((st = shard_put(&w->cur, tokens, m, err, err_len))) return st;
        w->tokens += m;
        tokens += m;
        n -= m;
        if (w->cur.count == w->shard_tokens) {
            if ((st = shard_finish(&w->cur, err, err_len))) return st;
            w->shards++;
        }
    }
    return VNM_OK;
}

vnm_status vnm_token_writer_close(vnm_token_writer *w, int64_t *tokens, int *shards, char *err,
                                  size_t err_len)
{
    if (!w) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: close needs a writer");
    vnm_status st = VNM_OK;
    if (w->cur.f) {
        st = shard_finish(&w->cur, err, err_len);
        if (!st) w->shards++;
    }
    int *nums = NULL, count = 0;
    if (!st) st = list_shards(w->dir, w->split, &nums, &count, err, err_len);
    for (int i = 0; !st && i < count; i++) {
        if (nums[i] < w->shards) continue;
        char *path = shard_path(w->dir, w->split, nums[i]);
        if (!path || remove(path) != 0)
            st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME,
                            "tokens '%s': cannot remove the stale shard %s-%05d.tok: %s", w->dir,
                            w->split, nums[i], path ? strerror(errno) : "out of memory");
        free(path);
    }
    free(nums);
    if (tokens) *tokens = w->tokens;
    if (shards) *shards = w->shards;
    vnm_token_writer_abort(w);
    return st;
}

void vnm_token_writer_abort(vnm_token_writer *w)
{
    if (!w) return;
    shard_abandon(&w->cur);
    free(w->dir);
    free(w->split);
    free(w);
}

/* ---- datasets ---- */

vnm_status vnm_token_dataset_open(const char *dir, const char *split, vnm_token_dataset *out,
                                  char *err, size_t err_len)
{
    if (!out) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir) return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: directory is NULL");
    vnm_status st = check_split(split, err, err_len);
    if (st) return st;
    int *nums, count;
    if ((st = list_shards(dir, split, &nums, &count, err, err_len))) return st;
    if (count < 1)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "tokens '%s': no shard of split '%s', expected %s/%s-00000.tok", dir,
                          split, dir, split);
    for (int i = 0; i < count; i++)
        if (nums[i] != i) {
            st = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                            "tokens '%s': split '%s' has %s-%05d.tok but no %s-%05d.tok: shards "
                            "are numbered from 00000 without gaps",
                            dir, split, split, nums[i], split, i);
            free(nums);
            return st;
        }
    free(nums);

    vnm_token_dataset ds = {.shards = count};
    ds.dir = strdup(dir);
    ds.split = strdup(split);
    ds.shard = calloc((size_t)count, sizeof *ds.shard);
    ds.start = calloc((size_t)count + 1, sizeof *ds.start);
    if (!ds.dir || !ds.split || !ds.shard || !ds.start) {
        st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': out of memory", dir);
        goto fail;
    }
    for (int i = 0; i < count; i++) {
        char *path = shard_path(dir, split, i);
        if (!path) {
            st = vnm_errbuf(err, err_len, VNM_ERR_RUNTIME, "tokens '%s': out of memory", dir);
            goto fail;
        }
        st = vnm_token_shard_open(path, &ds.shard[i], err, err_len);
        free(path);
        if (st) goto fail;
        const vnm_token_shard *a = &ds.shard[0], *b = &ds.shard[i];
        if (b->vocab_size != a->vocab_size || b->eos_id != a->eos_id) {
            bool vocab = b->vocab_size != a->vocab_size;
            st = vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                            "tokens: '%s' has %s %u but '%s' has %u: the shards of a split must "
                            "agree",
                            a->path, vocab ? "vocab_size" : "eos_id",
                            vocab ? a->vocab_size : a->eos_id, b->path,
                            vocab ? b->vocab_size : b->eos_id);
            goto fail;
        }
        ds.start[i + 1] = ds.start[i] + b->count;
    }
    ds.n = ds.start[count];
    ds.vocab_size = ds.shard[0].vocab_size;
    ds.eos_id = ds.shard[0].eos_id;
    *out = ds;
    return VNM_OK;
fail:
    vnm_token_dataset_close(&ds);
    return st;
}

void vnm_token_dataset_close(vnm_token_dataset *ds)
{
    if (!ds) return;
    for (int i = 0; ds->shard && i < ds->shards; i++) vnm_token_shard_close(&ds->shard[i]);
    free(ds->shard);
    free(ds->start);
    free(ds->dir);
    free(ds->split);
    memset(ds, 0, sizeof *ds);
}

vnm_status vnm_token_dataset_read(const vnm_token_dataset *ds, int64_t start, int64_t n,
                                  int32_t *dst, char *err, size_t err_len)
{
    if (!ds || (n > 0 && !dst))
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT, "tokens: read needs a dataset and dst");
    if (start < 0 || n < 0 || start > ds->n - n)
        return vnm_errbuf(err, err_len, VNM_ERR_INPUT,
                          "tokens '%s' split '%s': %lld tokens from %lld, expected within the "
                          "stream's %lld",
                          ds->dir, ds->split, (long long)n, (long long)start, (long long)ds->n);
    /* the last shard starting at or before `start`: it holds `start` unless the read is empty */
    int lo = 0, hi = ds->shards - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (ds->start[mid] <= start)
            lo = mid;
        else
            hi = mid - 1;
    }
    for (int s = lo; n > 0; s++) {
        const vnm_token_shard *sh = &ds->shard[s];
        int64_t from = start - ds->start[s], m = sh->count - from < n ? sh->count - from : n;
        /* ids are < vocab_size ≤ 2^31, checked when the shard was opened: int32 holds them */
        if (sh->token_bytes == 2)
            for (int64_t i = 0; i < m; i++) dst[i] = (int32_t)token_at(sh->tokens, 2, from + i);
        else
            for (int64_t i = 0; i < m; i++) dst[i] = (int32_t)token_at(sh->tokens, 4, from + i);
        dst += m;
        start += m;
        n -= m;
    }
    return VNM_OK;
}
