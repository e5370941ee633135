/* tests/test_tokens.c — token data for language models: the shard format (round trips, every
 * header validation error), the split writer, token datasets over several shards, the
 * packed-sequence loader (windows, targets, shuffle, resume, evaluation order), the byte-level
 * tokenizer, `vnm tokenize` end to end, and agreement with tools/tokenize_text.py --byte through the
 * committed fixture tests/fixtures/tokens_byte/ (made from tests/fixtures/tokens_input_{a,b}.txt
 * with the command in tools/tokenize_text.py's docstring).
 *
 * Every test works in a fresh /tmp/vnm_test_tokens_<pid>_XXXXXX directory removed afterwards. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data.h"
#include "test_util.h"
#include "train/tokenize.h"

static int fx_setup(void **state)
{
    char templ[128];
    snprintf(templ, sizeof templ, "/tmp/vnm_test_tokens_%d_XXXXXX", (int)getpid());
    if (!mkdtemp(templ)) return -1;
    *state = strdup(templ);
    return *state ? 0 : -1;
}

static void assert_err(vnm_status st, const char *err, const char *needle)
{
    assert_int_not_equal(st, VNM_OK);
    if (!strstr(err, needle)) fail_msg("error '%s' lacks '%s'", err, needle);
}

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* dir/name, in one of a few rotating static buffers. */
static const char *at(const char *dir, const char *name)
{
    static char path[8][512];
    static int which;
    char *p = path[which++ % 8];
    int len = snprintf(p, 512, "%s/%s", dir, name);
    assert_true(len > 0 && len < 512);
    return p;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int b = 0; b < 4; b++) p[b] = (uint8_t)(v >> 8 * b);
}

/* A shard file from explicit header fields and payload bytes (which may disagree on purpose). */
static const char *write_raw(const char *dir, const char *name, const char *magic,
                             uint32_t version, uint32_t token_bytes, uint64_t count,
                             uint32_t vocab, uint32_t eos, const void *payload, size_t bytes)
{
    uint8_t h[32];
    memcpy(h, magic, 8);
    put32(h + 8, version);
    put32(h + 12, token_bytes);
    put32(h + 16, (uint32_t)count);
    put32(h + 20, (uint32_t)(count >> 32));
    put32(h + 24, vocab);
    put32(h + 28, eos);
    const char *path = at(dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(h, 1, 32, f), 32);
    if (bytes) assert_int_equal(fwrite(payload, 1, bytes, f), bytes);
    assert_int_equal(fclose(f), 0);
    return path;
}

static void write_shard(const char *path, const uint32_t *tokens, int64_t n, uint32_t vocab,
                        uint32_t eos)
{
    char err[512] = "";
    vnm_status st = vnm_token_shard_write(path, tokens, n, vocab, eos, err, sizeof err);
    if (st) fail_msg("write '%s': %s", path, err);
}

static long file_size(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (long)sb.st_size;
}

/* ---- the shard format ---- */

static void test_shard_round_trip(void **state)
{
    const char *dir = *state;
    /* u16: vocab 258 (the byte tokenizer's), every id including both specials */
    uint32_t small[258];
    for (int i = 0; i < 258; i++) small[i] = (uint32_t)(257 - i);
    const char *p16 = at(dir, "small.tok");
    write_shard(p16, small, 258, 258, 257);
    assert_int_equal(file_size(p16), 32 + 2 * 258);
    assert_false(exists(at(dir, "small.tok.tmp")));
    char *raw = tu_read_file(p16);
    /* magic, version 1, u16, count 258, vocab 258, eos 257 */
    assert_memory_equal(raw,
                        "VNMTOKEN\x01\0\0\0\x02\0\0\0\x02\x01\0\0\0\0\0\0"
                        "\x02\x01\0\0\x01\x01\0\0",
                        32);
    assert_int_equal((uint8_t)raw[32], 1); /* 257 little-endian */
    assert_int_equal((uint8_t)raw[33], 1);
    free(raw);
    vnm_token_shard s;
    char err[512] = "";
    assert_int_equal(vnm_token_shard_open(p16, &s, err, sizeof err), VNM_OK);
    assert_int_equal(s.token_bytes, 2);
    assert_int_equal(s.count, 258);
    assert_int_equal(s.vocab_size, 258);
    assert_int_equal(s.eos_id, 257);
    assert_string_equal(s.path, p16);
    for (int i = 0; i < 258; i++) assert_int_equal(vnm_token_shard_at(&s, i), small[i]);
    vnm_token_shard_close(&s);
    assert_null(s.map);
    vnm_token_shard_close(NULL);

    /* vocab 65536 still fits u16; 65537 needs u32 */
    uint32_t edge[3] = {0, 65535, 12345};
    const char *pe = at(dir, "edge.tok");
    write_shard(pe, edge, 3, 65536, VNM_TOKENS_NO_EOS);
    assert_int_equal(file_size(pe), 32 + 2 * 3);
    uint32_t big[5] = {0, 65536, 99999, 1u << 20, 65535};
    const char *p32 = at(dir, "big.tok");
    write_shard(p32, big, 5, 1u << 21, VNM_TOKENS_NO_EOS);
    assert_int_equal(file_size(p32), 32 + 4 * 5);
    assert_int_equal(vnm_token_shard_open(p32, &s, err, sizeof err), VNM_OK);
    assert_int_equal(s.token_bytes, 4);
    assert_int_equal(s.eos_id, VNM_TOKENS_NO_EOS);
    for (int i = 0; i < 5; i++) assert_int_equal(vnm_token_shard_at(&s, i), big[i]);
    vnm_token_shard_close(&s);

    /* an empty shard is valid; overwriting replaces the file atomically */
    write_shard(p32, NULL, 0, 1000, 3);
    assert_int_equal(vnm_token_shard_open(p32, &s, err, sizeof err), VNM_OK);
    assert_int_equal(s.count, 0);
    assert_int_equal(s.token_bytes, 2);
    vnm_token_shard_close(&s);
}

static void test_shard_header_errors(void **state)
{
    const char *dir = *state;
    const uint16_t ok16[4] = {1, 2, 3, 4};
    vnm_token_shard s;
    char err[512];
    const char *p;
#define EXPECT_OPEN_ERROR(needle)                                                   \
    do {                                                                            \
        assert_err(vnm_token_shard_open(p, &s, err, sizeof err), err, needle);      \
        if (!strstr(err, p)) fail_msg("error '%s' does not name the file", err);   \
        assert_null(s.map);                                                         \
    } while (0)

    p = write_raw(dir, "good.tok", "VNMTOKEN", 1, 2, 4, 10, 9, ok16, 8);
    assert_int_equal(vnm_token_shard_open(p, &s, err, sizeof err), VNM_OK);
    vnm_token_shard_close(&s);

    p = write_raw(dir, "magic.tok", "VNMTOKEX", 1, 2, 4, 10, 9, ok16, 8);
    EXPECT_OPEN_ERROR("bad magic \"VNMTOKEX\", expected \"VNMTOKEN\"");
    p = write_raw(dir, "magic2.tok", "\x93NUMPY\x01\x00", 1, 2, 4, 10, 9, ok16, 8);
    EXPECT_OPEN_ERROR("bad magic \"\\x93NUMPY\\x01\\x00\"");
    p = write_raw(dir, "version.tok", "VNMTOKEN", 2, 2, 4, 10, 9, ok16, 8);
    EXPECT_OPEN_ERROR("version 2, expected 1");
    p = write_raw(dir, "width.tok", "VNMTOKEN", 1, 3, 4, 10, 9, ok16, 8);
    EXPECT_OPEN_ERROR("token_bytes 3, expected 2 (u16) or 4 (u32)");
    p = write_raw(dir, "vocab0.tok", "VNMTOKEN", 1, 2, 4, 0, VNM_TOKENS_NO_EOS, ok16, 8);
    EXPECT_OPEN_ERROR("vocab_size 0, expected 1..2147483648");
    p = write_raw(dir, "vocabhuge.tok", "VNMTOKEN", 1, 4, 0, 0x80000001u, VNM_TOKENS_NO_EOS,
                  NULL, 0);
    EXPECT_OPEN_ERROR("vocab_size 2147483649");
    p = write_raw(dir, "eos.tok", "VNMTOKEN", 1, 2, 4, 10, 10, ok16, 8);
    EXPECT_OPEN_ERROR("eos_id 10, expected < vocab_size 10 or 0xFFFFFFFF (none)");
    /* sizes: short by one token, one byte too many, a u32 header over u16 data, an absurd count */
    p = write_raw(dir, "short.tok", "VNMTOKEN", 1, 2, 4, 10, 9, ok16, 6);
    EXPECT_OPEN_ERROR("size mismatch: expected 40 bytes (header 32 + 4 tokens of 2 bytes), the "
                      "file holds 38");
    p = write_raw(dir, "long.tok", "VNMTOKEN", 1, 2, 4, 10, 9, "\1\0\2\0\3\0\4\0\0", 9);
    EXPECT_OPEN_ERROR("the file holds 41");
    p = write_raw(dir, "wide.tok", "VNMTOKEN", 1, 4, 4, 10, 9, ok16, 8);
    EXPECT_OPEN_ERROR("expected 48 bytes (header 32 + 4 tokens of 4 bytes), the file holds 40");
    p = write_raw(dir, "count.tok", "VNMTOKEN", 1, 4, UINT64_MAX / 2, 10, 9, ok16, 8);
    EXPECT_OPEN_ERROR("more than a file holds");
    /* a token outside the vocabulary, found past the first scan block */
    uint16_t many[5000];
    for (int i = 0; i < 5000; i++) many[i] = (uint16_t)(i % 300);
    many[4321] = 300;
    p = write_raw(dir, "token.tok", "VNMTOKEN", 1, 2, 5000, 300, VNM_TOKENS_NO_EOS, many,
                  sizeof many);
    EXPECT_OPEN_ERROR("token 300 at index 4321, expected < vocab_size 300");
    p = write_raw(dir, "token32.tok", "VNMTOKEN", 1, 4, 2, 70000, VNM_TOKENS_NO_EOS,
                  "\x01\0\0\0\x70\x11\x01\0", 8);
    EXPECT_OPEN_ERROR("token 70000 at index 1, expected < vocab_size 70000");
    /* too short for a header, and absent */
    p = write_raw(dir, "header.tok", "VNMTOKEN", 1, 2, 0, 10, 9, NULL, 0);
    assert_int_equal(truncate(p, 20), 0);
    EXPECT_OPEN_ERROR("truncated header: expected 32 bytes, the file holds 20");
    p = at(dir, "absent.tok");
    EXPECT_OPEN_ERROR("cannot open: No such file or directory");
#undef EXPECT_OPEN_ERROR

    /* the writer refuses what the reader would: nothing is left behind */
    const uint32_t bad[3] = {1, 258, 2};
    const char *wp = at(dir, "written.tok");
    assert_err(vnm_token_shard_write(wp, bad, 3, 258, 257, err, sizeof err), err,
               "token 258 at index 1, expected < vocab_size 258");
    assert_non_null(strstr(err, wp));
    assert_false(exists(wp));
    assert_false(exists(at(dir, "written.tok.tmp")));
    assert_err(vnm_token_shard_write(wp, bad, 1, 5, 7, err, sizeof err), err, "eos_id 7");
    assert_err(vnm_token_shard_write(at(dir, "no/such/dir.tok"), bad, 1, 5, 0, err, sizeof err),
               err, "cannot create");
}

/* ---- the split writer ---- */

static void read_stream(const char *dir, const char *split, int64_t want_n, int32_t *out)
{
    vnm_token_dataset ds;
    char err[512] = "";
    if (vnm_token_dataset_open(dir, split, &ds, err, sizeof err)) fail_msg("open: %s", err);
    assert_int_equal(ds.n, want_n);
    assert_int_equal(vnm_token_dataset_read(&ds, 0, ds.n, out, err, sizeof err), VNM_OK);
    vnm_token_dataset_close(&ds);
}

static void test_writer_shards(void **state)
{
    const char *dir = *state;
    char err[512] = "";
    uint32_t tok[30];
    for (int i = 0; i < 30; i++) tok[i] = (uint32_t)(i * 7 % 100);
    /* stale shards of an earlier run: 00002 gets overwritten, 00003 and 00005 removed; other
     * splits and non-shard names are left alone */
    write_shard(at(dir, "train-00002.tok"), tok, 1, 100, 0);
    write_shard(at(dir, "train-00003.tok"), tok, 1, 100, 0);
    write_shard(at(dir, "train-00005.tok"), tok, 1, 100, 0);
    write_shard(at(dir, "val-00000.tok"), tok, 1, 100, 0);
    write_shard(at(dir, "train-3.tok"), tok, 1, 100, 0);

    vnm_token_writer *w;
    assert_int_equal(vnm_token_writer_open(dir, "train", 100, 0, 10, &w, err, sizeof err),
                     VNM_OK);
    const int pieces[] = {3, 0, 9, 1, 12};
    int64_t off = 0;
    for (size_t k = 0; k < sizeof pieces / sizeof *pieces; k++) {
        assert_int_equal(vnm_token_writer_append(w, tok + off, pieces[k], err, sizeof err),
                         VNM_OK);
        off += pieces[k];
    }
    int64_t written;
    int shards;
    assert_int_equal(vnm_token_writer_close(w, &written, &shards, err, sizeof err), VNM_OK);
    assert_int_equal(written, 25);
    assert_int_equal(shards, 3);
    assert_int_equal(file_size(at(dir, "train-00000.tok")), 32 + 20);
    assert_int_equal(file_size(at(dir, "train-00002.tok")), 32 + 10);
    assert_false(exists(at(dir, "train-00003.tok")));
    assert_false(exists(at(dir, "train-00005.tok")));
    assert_false(exists(at(dir, "train-00002.tok.tmp")));
    assert_true(exists(at(dir, "val-00000.tok")));
    assert_true(exists(at(dir, "train-3.tok")));
    int32_t got[30];
    read_stream(dir, "train", 25, got);
    for (int i = 0; i < 25; i++) assert_int_equal(got[i], tok[i]);

    /* a stream ending on a shard boundary leaves no empty shard behind */
    assert_int_equal(vnm_token_writer_open(dir, "train", 100, 0, 10, &w, err, sizeof err),
                     VNM_OK);
    assert_int_equal(vnm_token_writer_append(w, tok, 20, err, sizeof err), VNM_OK);
    assert_int_equal(vnm_token_writer_close(w, &written, &shards, err, sizeof err), VNM_OK);
    assert_int_equal(shards, 2);
    assert_false(exists(at(dir, "train-00002.tok")));
    /* no token at all: no shard, and the old ones are gone */
    assert_int_equal(vnm_token_writer_open(dir, "val", 100, 0, 10, &w, err, sizeof err), VNM_OK);
    assert_int_equal(vnm_token_writer_close(w, NULL, &shards, err, sizeof err), VNM_OK);
    assert_int_equal(shards, 0);
    assert_false(exists(at(dir, "val-00000.tok")));
    /* a bad token stops the writer; abort drops the shard in progress */
    assert_int_equal(vnm_token_writer_open(dir, "bad", 100, 0, 10, &w, err, sizeof err), VNM_OK);
    assert_int_equal(vnm_token_writer_append(w, tok, 12, err, sizeof err), VNM_OK);
    uint32_t oops = 100;
    assert_err(vnm_token_writer_append(w, &oops, 1, err, sizeof err), err,
               "token 100 at index 2, expected < vocab_size 100");
    assert_non_null(strstr(err, "bad-00001.tok"));
    vnm_token_writer_abort(w);
    assert_true(exists(at(dir, "bad-00000.tok")));
    assert_false(exists(at(dir, "bad-00001.tok.tmp")));
    /* arguments */
    assert_err(vnm_token_writer_open(dir, "train", 100, 0, 0, &w, err, sizeof err), err,
               "0 tokens per shard, expected ≥ 1");
    assert_err(vnm_token_writer_open(dir, "a/b", 100, 0, 10, &w, err, sizeof err), err,
               "split 'a/b'");
    assert_err(vnm_token_writer_open(dir, "train", 0, 0, 10, &w, err, sizeof err), err,
               "vocab_size 0");
    assert_null(w);
}

/* ---- datasets ---- */

static void test_dataset_shards(void **state)
{
    const char *dir = *state;
    char err[512] = "";
    /* 3 shards (the middle one empty, the last one u32) concatenate into token i = i */
    uint32_t tok[20];
    for (int i = 0; i < 20; i++) tok[i] = (uint32_t)i;
    write_shard(at(dir, "train-00000.tok"), tok, 7, 70000, 19);
    write_shard(at(dir, "train-00001.tok"), NULL, 0, 70000, 19);
    write_shard(at(dir, "train-00002.tok"), tok + 7, 13, 70000, 19);
    write_shard(at(dir, "train-1.tok"), tok, 3, 5, 0); /* not a shard name: ignored */
    vnm_token_dataset ds;
    assert_int_equal(vnm_token_dataset_open(dir, "train", &ds, err, sizeof err), VNM_OK);
    assert_int_equal(ds.n, 20);
    assert_int_equal(ds.shards, 3);
    assert_int_equal(ds.vocab_size, 70000);
    assert_int_equal(ds.eos_id, 19);
    assert_string_equal(ds.dir, dir);
    assert_string_equal(ds.split, "train");
    for (int start = 0; start <= 20; start++)
        for (int n = 0; start + n <= 20; n++) {
            int32_t got[20];
            assert_int_equal(vnm_token_dataset_read(&ds, start, n, got, err, sizeof err), VNM_OK);
            for (int i = 0; i < n; i++) assert_int_equal(got[i], start + i);
        }
    int32_t got[4];
    assert_err(vnm_token_dataset_read(&ds, 18, 3, got, err, sizeof err), err,
               "3 tokens from 18, expected within the stream's 20");
    /* a window straddling the shard boundary: L = 3, window 2 = [6, 7, 8] → [7, 8, 9] */
    vnm_token_loader_config cfg = {.seq_len = 3, .batch = 8, .shuffle = false};
    vnm_token_loader *l;
    assert_int_equal(vnm_token_loader_create(&ds, &cfg, &l, err, sizeof err), VNM_OK);
    vnm_token_batch b;
    assert_int_equal(vnm_token_loader_next(l, &b, err, sizeof err), VNM_OK);
    assert_int_equal(b.size, 6); /* floor(19 / 3) */
    assert_int_equal(b.inputs[6], 6);
    assert_int_equal(b.inputs[7], 7);
    assert_int_equal(b.targets[8], 9);
    vnm_token_loader_free(l);
    vnm_token_dataset_close(&ds);
    assert_null(ds.shard);

    /* shards of a split must agree: vocab_size, then eos_id; both files are named */
    const char *v0 = at(dir, "val-00000.tok"), *v1 = at(dir, "val-00001.tok");
    write_shard(v0, tok, 5, 258, 257);
    write_shard(v1, tok, 5, 300, 257);
    assert_err(vnm_token_dataset_open(dir, "val", &ds, err, sizeof err), err,
               "has vocab_size 258 but");
    assert_non_null(strstr(err, v0));
    assert_non_null(strstr(err, v1));
    assert_non_null(strstr(err, "has 300: the shards of a split must agree"));
    write_shard(v1, tok, 5, 258, VNM_TOKENS_NO_EOS);
    assert_err(vnm_token_dataset_open(dir, "val", &ds, err, sizeof err), err,
               "has eos_id 257 but");
    /* a gap in the numbering, a bad shard, no shard at all */
    write_shard(at(dir, "gap-00000.tok"), tok, 5, 258, 257);
    write_shard(at(dir, "gap-00002.tok"), tok, 5, 258, 257);
    assert_err(vnm_token_dataset_open(dir, "gap", &ds, err, sizeof err), err,
               "split 'gap' has gap-00002.tok but no gap-00001.tok");
    const char *bp = write_raw(dir, "broken-00000.tok", "VNMTOKEN", 1, 2, 9, 10, 9, NULL, 0);
    assert_err(vnm_token_dataset_open(dir, "broken", &ds, err, sizeof err), err, "size mismatch");
    assert_non_null(strstr(err, bp));
    assert_err(vnm_token_dataset_open(dir, "test", &ds, err, sizeof err), err,
               "no shard of split 'test', expected");
    assert_non_null(strstr(err, at(dir, "test-00000.tok")));
    assert_err(vnm_token_dataset_open(at(dir, "nowhere"), "train", &ds, err, sizeof err), err,
               "cannot open directory");
    assert_err(vnm_token_dataset_open(dir, "", &ds, err, sizeof err), err, "split ''");
}

/* ---- the packed-sequence loader ---- */

/* dir/train-00000.tok holding token i = i for i < n (vocab n + 1). */
static void open_counting(const char *dir, int64_t n, vnm_token_dataset *ds)
{
    uint32_t *tok = malloc((size_t)n * sizeof *tok);
    for (int64_t i = 0; i < n; i++) tok[i] = (uint32_t)i;
    write_shard(at(dir, "train-00000.tok"), tok, n, (uint32_t)n + 1, VNM_TOKENS_NO_EOS);
    free(tok);
    char err[512] = "";
    if (vnm_token_dataset_open(dir, "train", ds, err, sizeof err)) fail_msg("%s", err);
}

static vnm_token_loader *make_loader(const vnm_token_dataset *ds, int64_t L, int64_t B,
                                     uint64_t seed, bool shuffle, bool drop_last)
{
    vnm_token_loader_config cfg = vnm_token_loader_config_default();
    cfg.seq_len = L;
    cfg.batch = B;
    cfg.seed = seed;
    cfg.shuffle = shuffle;
    cfg.drop_last = drop_last;
    vnm_token_loader *l;
    char err[512] = "";
    if (vnm_token_loader_create(ds, &cfg, &l, err, sizeof err)) fail_msg("create: %s", err);
    return l;
}

static vnm_token_batch next_batch(vnm_token_loader *l)
{
    vnm_token_batch b;
    char err[512] = "";
    if (vnm_token_loader_next(l, &b, err, sizeof err)) fail_msg("next: %s", err);
    return b;
}

/* The batch holds windows order[pos.index …] of a counting stream, exactly as specified. */
static void assert_windows(const vnm_token_batch *b, const int64_t *order, int64_t L)
{
    for (int64_t k = 0; k < b->size; k++) {
        int64_t w = order ? order[b->pos.index + k] : b->pos.index + k;
        for (int64_t t = 0; t < L; t++) {
            assert_int_equal(b->inputs[k * L + t], w * L + t);
            assert_int_equal(b->targets[k * L + t], w * L + t + 1);
        }
    }
}

static void test_loader_windows(void **state)
{
    const char *dir = *state;
    char err[512] = "";
    vnm_token_dataset ds;
    open_counting(dir, 23, &ds);
    /* N = 23, L = 5: floor(22 / 5) = 4 windows; token 20 is the last target, 21 and 22 unused */
    vnm_token_loader *l = make_loader(&ds, 5, 3, 0, false, false);
    assert_int_equal(vnm_token_loader_windows(l), 4);
    assert_int_equal(vnm_token_loader_batches_per_epoch(l), 2);
    for (int e = 0; e < 3; e++) {
        vnm_token_batch b = next_batch(l);
        assert_int_equal(b.size, 3);
        assert_int_equal(b.seq_len, 5);
        assert_int_equal(b.pos.epoch, e);
        assert_int_equal(b.pos.index, 0);
        assert_false(b.last_in_epoch);
        assert_windows(&b, NULL, 5);
        b = next_batch(l);
        assert_int_equal(b.size, 1); /* the smaller last batch */
        assert_int_equal(b.pos.index, 3);
        assert_true(b.last_in_epoch);
        assert_windows(&b, NULL, 5);
        assert_int_equal(b.inputs[0], 15);
        assert_int_equal(b.targets[4], 20);
    }
    vnm_token_loader_free(l);
    /* L = 1: every token but the last is an input */
    l = make_loader(&ds, 1, 100, 0, false, false);
    assert_int_equal(vnm_token_loader_windows(l), 22);
    vnm_token_batch b = next_batch(l);
    assert_int_equal(b.size, 22);
    assert_windows(&b, NULL, 1);
    vnm_token_loader_free(l);
    /* N = L + 1 is the smallest stream with a window */
    l = make_loader(&ds, 22, 4, 0, true, false);
    assert_int_equal(vnm_token_loader_windows(l), 1);
    b = next_batch(l);
    assert_int_equal(b.size, 1);
    assert_windows(&b, NULL, 22);
    vnm_token_loader_free(l);

    /* errors name the split's directory, N and L */
    vnm_token_loader_config cfg = vnm_token_loader_config_default();
    cfg.seq_len = 23;
    assert_err(vnm_token_loader_create(&ds, &cfg, &l, err, sizeof err), err,
               "holds 23 tokens, too few for one window of sequence length 23: expected at "
               "least 24 tokens");
    assert_non_null(strstr(err, dir));
    assert_null(l);
    cfg.seq_len = 0;
    assert_err(vnm_token_loader_create(&ds, &cfg, &l, err, sizeof err), err,
               "sequence length 0, expected ≥ 1");
    cfg.seq_len = 5;
    cfg.batch = 0;
    assert_err(vnm_token_loader_create(&ds, &cfg, &l, err, sizeof err), err,
               "batch 0, expected ≥ 1");
    cfg.batch = 5;
    cfg.drop_last = true;
    assert_err(vnm_token_loader_create(&ds, &cfg, &l, err, sizeof err), err,
               "batch 5 with drop_last exceeds the 4 windows");
    vnm_token_dataset_close(&ds);
}

static void test_loader_shuffle_resume(void **state)
{
    const char *dir = *state;
    char err[512] = "";
    vnm_token_dataset ds;
    open_counting(dir, 1000, &ds);
    const int64_t L = 7, B = 8, n = 999 / 7; /* 142 windows, 18 batches per epoch */
    vnm_token_loader *ref = make_loader(&ds, L, B, 5, true, false);
    assert_int_equal(vnm_token_loader_windows(ref), n);
    assert_int_equal(vnm_token_loader_batches_per_epoch(ref), 18);
    /* 45 batches over three epochs, each following vnm_shuffle_order(seed, epoch) */
    enum { COUNT = 45 };
    int32_t *log = malloc((size_t)(COUNT * B * L) * sizeof *log);
    vnm_sampler_pos pos[COUNT];
    int64_t perm[3][142];
    for (int e = 0; e < 3; e++) vnm_shuffle_order(5, e, n, perm[e]);
    assert_memory_not_equal(perm[0], perm[1], sizeof perm[0]);
    for (int i = 0; i < COUNT; i++) {
        pos[i] = vnm_token_loader_get_pos(ref);
        vnm_token_batch b = next_batch(ref);
        assert_int_equal(b.pos.epoch, i / 18);
        assert_int_equal(b.pos.index, i % 18 * B);
        assert_int_equal(b.size, i % 18 == 17 ? n - 17 * B : B);
        assert_true(b.last_in_epoch == (i % 18 == 17));
        assert_windows(&b, perm[b.pos.epoch], L);
        memset(log + i * B * L, 0xff, (size_t)(B * L) * sizeof *log);
        memcpy(log + i * B * L, b.inputs, (size_t)(b.size * L) * sizeof *log);
    }
    vnm_token_loader_free(ref);
    /* resuming a fresh loader at saved positions continues bit-identically */
    for (int k = 0; k < COUNT; k += 7) {
        vnm_token_loader *l = make_loader(&ds, L, B, 5, true, false);
        assert_int_equal(vnm_token_loader_set_pos(l, pos[k], err, sizeof err), VNM_OK);
        for (int i = k; i < COUNT; i++) {
            vnm_token_batch b = next_batch(l);
            assert_int_equal(b.pos.epoch, pos[i].epoch);
            assert_int_equal(b.pos.index, pos[i].index);
            assert_memory_equal(b.inputs, log + i * B * L, (size_t)(b.size * L) * sizeof *log);
            for (int64_t t = 0; t < b.size * L; t++)
                assert_int_equal(b.targets[t], b.inputs[t] + 1);
        }
        vnm_token_loader_free(l);
    }
    /* another seed, another order */
    vnm_token_loader *other = make_loader(&ds, L, B, 6, true, false);
    vnm_token_batch b = next_batch(other);
    assert_memory_not_equal(b.inputs, log, (size_t)(B * L) * sizeof *log);
    /* positions: past an epoch's end moves to the next; outside the range is refused */
    assert_int_equal(vnm_token_loader_set_pos(other, (vnm_sampler_pos){1, n}, err, sizeof err),
                     VNM_OK);
    assert_int_equal(vnm_token_loader_get_pos(other).epoch, 2);
    assert_int_equal(vnm_token_loader_get_pos(other).index, 0);
    assert_err(vnm_token_loader_set_pos(other, (vnm_sampler_pos){0, n + 1}, err, sizeof err),
               err, "token_loader_set_pos: position {epoch 0, index 143}, expected epoch ≥ 0 and "
                    "index in [0, 142]");
    assert_err(vnm_token_loader_set_pos(other, (vnm_sampler_pos){-1, 0}, err, sizeof err), err,
               "epoch -1");
    vnm_token_loader_free(other);
    /* drop_last: 17 full batches per epoch, the 6 windows left over are skipped */
    vnm_token_loader *dl = make_loader(&ds, L, B, 5, true, true);
    assert_int_equal(vnm_token_loader_batches_per_epoch(dl), 17);
    for (int i = 0; i < 18; i++) {
        b = next_batch(dl);
        assert_int_equal(b.size, B);
        assert_int_equal(b.pos.epoch, i / 17);
        assert_true(b.last_in_epoch == (i == 16));
        assert_windows(&b, perm[b.pos.epoch], L);
    }
    assert_int_equal(vnm_token_loader_set_pos(dl, (vnm_sampler_pos){0, 137}, err, sizeof err),
                     VNM_OK);
    assert_int_equal(vnm_token_loader_get_pos(dl).epoch, 1);
    vnm_token_loader_free(dl);
    free(log);
    vnm_token_dataset_close(&ds);

    /* the image loader draws the very same orders */
    vnm_dataset img = {.n = 37, .channels = 1, .height = 1, .width = 1, .classes = 10};
    img.images = calloc(37, 1);
    img.labels = calloc(37, 1);
    vnm_loader_config icfg = vnm_loader_config_default();
    icfg.seed = 11;
    icfg.augment = false;
    icfg.prefetch = false;
    vnm_loader *il;
    assert_int_equal(vnm_loader_create(&img, &icfg, &il, err, sizeof err), VNM_OK);
    for (int e = 0; e < 3; e++) {
        int64_t a[37], c[37];
        vnm_loader_epoch_order(il, e, a);
        vnm_shuffle_order(11, e, 37, c);
        assert_memory_equal(a, c, sizeof a);
    }
    vnm_loader_free(il);
    vnm_dataset_free(&img);
}

static void test_loader_eval_order(void **state)
{
    const char *dir = *state;
    vnm_token_dataset ds;
    open_counting(dir, 100, &ds);
    /* without shuffle every epoch is 0..n-1 in stream order */
    vnm_token_loader *l = make_loader(&ds, 9, 4, 77, false, false);
    assert_int_equal(vnm_token_loader_windows(l), 11);
    for (int e = 0; e < 2; e++)
        for (int64_t at_w = 0; at_w < 11; at_w += 4) {
            vnm_token_batch b = next_batch(l);
            assert_int_equal(b.pos.epoch, e);
            assert_int_equal(b.pos.index, at_w);
            assert_windows(&b, NULL, 9);
        }
    vnm_token_loader_free(l);
    /* fewer windows than the batch: one smaller batch per epoch */
    l = make_loader(&ds, 30, 8, 0, false, false);
    assert_int_equal(vnm_token_loader_windows(l), 3);
    assert_int_equal(vnm_token_loader_batches_per_epoch(l), 1);
    for (int e = 0; e < 3; e++) {
        vnm_token_batch b = next_batch(l);
        assert_int_equal(b.size, 3);
        assert_int_equal(b.pos.epoch, e);
        assert_true(b.last_in_epoch);
        assert_windows(&b, NULL, 30);
    }
    vnm_token_loader_free(l);
    vnm_token_dataset_close(&ds);
}

/* ---- the byte tokenizer ---- */

static void test_byte_tokenizer(void **state)
{
    (void)state;
    uint8_t all[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
    uint32_t ids[260];
    assert_int_equal(vnm_byte_encode(all, 256, true, ids), 257);
    for (int i = 0; i < 256; i++) assert_int_equal(ids[i], i);
    assert_int_equal(ids[256], VNM_BYTE_EOS);
    assert_int_equal(vnm_byte_encode(all, 3, false, ids), 3);
    assert_int_equal(vnm_byte_encode(NULL, 0, true, ids), 1);
    assert_int_equal(ids[0], 257);

    /* non-ASCII text round-trips through the ids byte for byte */
    const char *text =
        "na\xc3\xafve caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82 \xff\x01";
    size_t len = strlen(text);
    int32_t doc[64];
    uint32_t enc[64];
    size_t n = vnm_byte_encode(text, len, true, enc);
    assert_int_equal(n, len + 1);
    doc[0] = VNM_BYTE_BOS;
    for (size_t i = 0; i < n; i++) doc[i + 1] = (int32_t)enc[i];
    char out[128];
    assert_int_equal(vnm_byte_decode(doc, n + 1, false, out, sizeof out), len);
    assert_string_equal(out, text);
    assert_int_equal(vnm_byte_decode(doc, n + 1, true, out, sizeof out), len + 10);
    assert_memory_equal(out, "<bos>na\xc3\xafve", 11);
    assert_string_equal(out + 5 + len, "<eos>");
    /* ids outside the vocabulary; output cut like snprintf */
    const int32_t odd[4] = {'a', 258, -1, 'b'};
    assert_int_equal(vnm_byte_decode(odd, 4, false, out, sizeof out), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(vnm_byte_decode(odd, 4, true, out, sizeof out), 12);
    assert_string_equal(out, "a<unk><unk>b");
    assert_int_equal(vnm_byte_decode(odd, 4, true, out, 4), 12);
    assert_string_equal(out, "a<u");
    out[0] = 'x';
    assert_int_equal(vnm_byte_decode(odd, 4, true, out, 0), 12);
    assert_int_equal(out[0], 'x');
}

/* ---- vnm tokenize ---- */

/* Runs `vnm tokenize args...` with stdout captured into out (NUL-terminated). */
static int run_tokenize(const char *dir, char *out, size_t out_len, int argc, const char **args)
{
    char *argv[32];
    for (int i = 0; i < argc; i++) argv[i] = (char *)args[i];
    const char *cap = at(dir, "stdout.txt");
    fflush(stdout);
    int saved = dup(1);
    FILE *f = fopen(cap, "w+");
    assert_non_null(f);
    dup2(fileno(f), 1);
    int rc = vnm_cmd_tokenize(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    rewind(f);
    size_t got = fread(out, 1, out_len - 1, f);
    out[got] = 0;
    fclose(f);
    remove(cap);
    return rc;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* The ids of documents docs[0..n) (each then EOS), concatenated into ids; returns the count. */
static int64_t encode_docs(const char *const *docs, int n, int32_t *ids)
{
    int64_t k = 0;
    for (int d = 0; d < n; d++) {
        uint32_t tmp[256];
        size_t m = vnm_byte_encode(docs[d], strlen(docs[d]), true, tmp);
        for (size_t i = 0; i < m; i++) ids[k++] = (int32_t)tmp[i];
    }
    return k;
}

static void test_cmd_tokenize(void **state)
{
    const char *dir = *state;
    char *a = tu_path(dir, "a.txt"), *b = tu_path(dir, "b.txt"), *e = tu_path(dir, "empty.txt");
    char *seps = tu_path(dir, "seps.txt"), *out_dir = tu_path(dir, "out/nested"), json[1024];
    write_text(a, "one\n%\ntwo \xc3\xa9\n%\n%\r\nthree\n");
    write_text(b, "%\nfour\nstill four\n%\nfive");
    write_text(e, "");
    write_text(seps, "%\n%\n");

    /* documents one..five: every 2nd to val */
    const char *args[] = {"--out", out_dir, "--doc-sep", "%", "--val-every", "2",
                          "--shard-tokens", "4", a, e, b};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 11, args), 0);
    assert_string_equal(json, "{\"documents\":5,\"train\":{\"documents\":3,\"tokens\":17,"
                              "\"shards\":5},\"val\":{\"documents\":2,\"tokens\":25,"
                              "\"shards\":7}}\n");
    const char *train_docs[] = {"one\n", "three\n", "five"};
    const char *val_docs[] = {"two \xc3\xa9\n", "four\nstill four\n"};
    int32_t want[64], got[64];
    int64_t n = encode_docs(train_docs, 3, want);
    read_stream(out_dir, "train", n, got);
    assert_memory_equal(got, want, (size_t)n * sizeof *got);
    n = encode_docs(val_docs, 2, want);
    read_stream(out_dir, "val", n, got);
    assert_memory_equal(got, want, (size_t)n * sizeof *got);
    assert_int_equal(file_size(at(out_dir, "train-00004.tok")), 32 + 2 * 1);
    assert_int_equal(file_size(at(out_dir, "val-00006.tok")), 32 + 2 * 1);

    /* each file one document, no val split, one shard each: the shards of the last run go */
    const char *whole[] = {"--val-every", "0", "--out", out_dir, a, b};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 6, whole), 0);
    assert_non_null(strstr(json, "\"train\":{\"documents\":2,"));
    assert_non_null(strstr(json, "\"val\":{\"documents\":0,\"tokens\":0,\"shards\":0}"));
    const char *files[] = {"one\n%\ntwo \xc3\xa9\n%\n%\r\nthree\n", "%\nfour\nstill four\n%\nfive"};
    n = encode_docs(files, 2, want);
    read_stream(out_dir, "train", n, got);
    assert_memory_equal(got, want, (size_t)n * sizeof *got);
    assert_false(exists(at(out_dir, "train-00001.tok")));
    assert_false(exists(at(out_dir, "val-00000.tok")));

    /* bad input: exit 2, and nothing written */
    const char *missing[] = {"--out", out_dir, a, at(dir, "nope.txt")};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 4, missing), 2);
    const char *empty[] = {"--out", at(dir, "never"), "--doc-sep", "%", e, seps};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 6, empty), 2);
    assert_false(exists(at(dir, "never/train-00000.tok")));
    const char *no_out[] = {a};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 1, no_out), 2);
    const char *no_files[] = {"--out", out_dir};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 2, no_files), 2);
    const char *bad_k[] = {"--out", out_dir, "--val-every", "-1", a};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 5, bad_k), 2);
    const char *bad_n[] = {"--out", out_dir, "--shard-tokens", "0", a};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 5, bad_n), 2);
    const char *unknown[] = {"--out", out_dir, "--vocab", "5", a};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 5, unknown), 2);
    const char *dir_in[] = {"--out", out_dir, dir};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 3, dir_in), 2);
    const char *out_file[] = {"--out", a, b};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 3, out_file), 2);
    read_stream(out_dir, "train", n, got); /* the last good output is intact */
    const char *help[] = {"--help"};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 1, help), 0);
    assert_non_null(strstr(json, "usage: vnm tokenize --out DIR"));
    free(a);
    free(b);
    free(e);
    free(seps);
    free(out_dir);
}

/* `vnm tokenize` and tools/tokenize_text.py --byte write the same bytes for the same flags. */
static void test_matches_python_fixture(void **state)
{
    const char *dir = *state;
    const char *fx = getenv("VNM_TEST_DATA");
    assert_non_null(fx);
    char *in_a = tu_path(fx, "tokens_input_a.txt"), *in_b = tu_path(fx, "tokens_input_b.txt");
    char *ref = tu_path(fx, "tokens_byte"), json[1024];
    const char *args[] = {"--out", dir, "--doc-sep", "%", "--val-every", "3",
                          "--shard-tokens", "200", in_a, in_b};
    assert_int_equal(run_tokenize(dir, json, sizeof json, 10, args), 0);
    assert_string_equal(json, "{\"documents\":10,\"train\":{\"documents\":7,\"tokens\":229,"
                              "\"shards\":2},\"val\":{\"documents\":3,\"tokens\":88,"
                              "\"shards\":1}}\n");
    const char *names[] = {"train-00000.tok", "train-00001.tok", "val-00000.tok"};
    for (int i = 0; i < 3; i++) {
        const char *mine = at(dir, names[i]), *theirs = at(ref, names[i]);
        long size = file_size(theirs);
        assert_int_equal(file_size(mine), size);
        char *x = tu_read_file(mine), *y = tu_read_file(theirs);
        assert_non_null(y);
        if (memcmp(x, y, (size_t)size) != 0) fail_msg("%s differs from %s", mine, theirs);
        free(x);
        free(y);
    }
    assert_false(exists(at(ref, "train-00002.tok")));
    assert_false(exists(at(ref, "val-00001.tok")));
    /* the fixture read back: document 3 opens the val split, the tokenizer's ids decode to it */
    vnm_token_dataset ds;
    char err[512] = "";
    assert_int_equal(vnm_token_dataset_open(ref, "val", &ds, err, sizeof err), VNM_OK);
    assert_int_equal(ds.vocab_size, VNM_BYTE_VOCAB);
    assert_int_equal(ds.eos_id, VNM_BYTE_EOS);
    int32_t ids[88];
    assert_int_equal(vnm_token_dataset_read(&ds, 0, 88, ids, err, sizeof err), VNM_OK);
    vnm_token_dataset_close(&ds);
    char text[512];
    vnm_byte_decode(ids, 88, true, text, sizeof text);
    const char *doc3 = "A raw byte \xff and a tab\there.\n  % not a separator\n<eos>";
    assert_memory_equal(text, doc3, strlen(doc3));
    assert_non_null(strstr(text, "<eos>Second file, first document.\n<eos>Short.\n<eos>"));
    free(in_a);
    free(in_b);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shard_round_trip, fx_setup, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_shard_header_errors, fx_setup, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_writer_shards, fx_setup, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_dataset_shards, fx_setup, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_loader_windows, fx_setup, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_loader_shuffle_resume, fx_setup, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_loader_eval_order, fx_setup, tu_teardown_tmpdir),
        cmocka_unit_test(test_byte_tokenizer),
        cmocka_unit_test_setup_teardown(test_cmd_tokenize, fx_setup, tu_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_matches_python_fixture, fx_setup,
                                        tu_teardown_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
