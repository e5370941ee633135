/* tests/test_safetensors.c — the safetensors reader against files written by the Python library
 * (tools/gen_safetensors_fixture.py; every value in st_expected.txt), sharded lookup, our writer
 * read back and byte-identical to the Python library's output, and corrupt or missing files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "train/safetensors.h"

static char tmpdir[] = "/tmp/vnm_st_XXXXXX";

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return rmdir(tmpdir);
}

static void fixture(char *buf, size_t len, const char *name)
{
    const char *dir = getenv("VNM_TEST_DATA");
    if (!dir) fail_msg("VNM_TEST_DATA is not set");
    snprintf(buf, len, "%s/%s", dir, name);
}

static vnm_safetensors *open_ok(const char *path)
{
    char err[512] = "";
    vnm_safetensors *st = NULL;
    if (vnm_safetensors_open(path, &st, err, sizeof err) != VNM_OK) fail_msg("%s", err);
    return st;
}

static const char *dtype_name(vnm_dtype dt)
{
    switch (dt) {
    case VNM_DTYPE_F32: return "F32";
    case VNM_DTYPE_BF16: return "BF16";
    case VNM_DTYPE_F16: return "F16";
    case VNM_DTYPE_I32: return "I32";
    case VNM_DTYPE_I64: return "I64";
    case VNM_DTYPE_U8: return "U8";
    }
    return "?";
}

/* Every line of st_expected.txt: file name dtype ndim dims... values; values compared exactly
 * (%.9g round-trips a float), which covers the bf16/f16 conversions. */
static void test_python_fixtures_match_expected(void **state)
{
    (void)state;
    char path[1024], line[8192];
    fixture(path, sizeof path, "st_expected.txt");
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int lines = 0, per_file = 0;
    char last_file[256] = "";
    vnm_safetensors *st = NULL;
    while (fgets(line, sizeof line, f)) {
        char *save, *file = strtok_r(line, " \n", &save), *name = strtok_r(NULL, " \n", &save),
                    *dt = strtok_r(NULL, " \n", &save);
        int ndim = atoi(strtok_r(NULL, " \n", &save));
        if (strcmp(file, last_file)) {
            if (st) assert_int_equal(vnm_safetensors_count(st), per_file);
            vnm_safetensors_close(st);
            fixture(path, sizeof path, file);
            st = open_ok(path);
            snprintf(last_file, sizeof last_file, "%s", file);
            per_file = 0;
        }
        const vnm_safetensors_tensor *t = vnm_safetensors_find(st, name);
        if (!t) fail_msg("%s: tensor %s not found", file, name);
        assert_string_equal(dtype_name(t->dtype), dt);
        assert_int_equal(t->ndim, ndim);
        int64_t numel = 1;
        for (int d = 0; d < ndim; d++) {
            int64_t dim = atoll(strtok_r(NULL, " \n", &save));
            assert_int_equal(t->shape[d], dim);
            numel *= dim;
        }
        assert_int_equal(t->numel, numel);
        float *got = malloc((size_t)numel * sizeof *got);
        char err[512] = "";
        if (vnm_safetensors_read_f32(st, name, got, (size_t)numel, err, sizeof err))
            fail_msg("%s", err);
        for (int64_t i = 0; i < numel; i++) {
            float want = strtof(strtok_r(NULL, " \n", &save), NULL);
            if (got[i] != want)
                fail_msg("%s %s[%lld]: got %.9g want %.9g", file, name, (long long)i, got[i], want);
        }
        assert_null(strtok_r(NULL, " \n", &save));
        free(got);
        lines++;
        per_file++;
    }
    assert_int_equal(vnm_safetensors_count(st), per_file);
    vnm_safetensors_close(st);
    fclose(f);
    assert_int_equal(lines, 8);
}

static void test_metadata_and_raw_read(void **state)
{
    (void)state;
    char path[1024], err[512] = "";
    fixture(path, sizeof path, "st_small.safetensors");
    vnm_safetensors *st = open_ok(path);
    assert_string_equal(vnm_safetensors_metadata(st, "format"), "pt");
    assert_string_equal(vnm_safetensors_metadata(st, "note"), "vnm fixture");
    assert_null(vnm_safetensors_metadata(st, "absent"));
    assert_null(vnm_safetensors_find(st, "__metadata__"));
    /* Raw f32 bytes equal the converted read; raw bf16 bytes widen to the converted values. */
    float raw[12], conv[12];
    assert_int_equal(vnm_safetensors_read(st, "weight", raw, sizeof raw, err, sizeof err), VNM_OK);
    assert_int_equal(vnm_safetensors_read_f32(st, "weight", conv, 12, err, sizeof err), VNM_OK);
    assert_memory_equal(raw, conv, sizeof raw);
    uint16_t bf[5];
    assert_int_equal(vnm_safetensors_read(st, "bias_bf16", bf, sizeof bf, err, sizeof err), VNM_OK);
    assert_int_equal(vnm_safetensors_read_f32(st, "bias_bf16", conv, 5, err, sizeof err), VNM_OK);
    for (int i = 0; i < 5; i++) assert_true(vnm_bf16_to_f32(bf[i]) == conv[i]);
    int64_t steps[4];
    assert_int_equal(vnm_safetensors_read(st, "steps", steps, sizeof steps, err, sizeof err),
                     VNM_OK);
    assert_true(steps[3] == (int64_t)1 << 40); /* exact in the raw read, unlike the f32 one */
    /* Errors name the file and the tensor. */
    assert_int_equal(vnm_safetensors_read(st, "weight", raw, 44, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(
        strstr(err, "st_small.safetensors: tensor 'weight': buffer has 44 bytes, tensor has 48"));
    assert_int_equal(vnm_safetensors_read_f32(st, "half", conv, 5, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "tensor 'half': buffer has 5 floats, tensor has 6"));
    assert_int_equal(vnm_safetensors_read(st, "nope", raw, 4, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "st_small.safetensors: no tensor named 'nope'"));
    vnm_safetensors_close(st);
}

static void test_sharded_lookup(void **state)
{
    (void)state;
    char path[1024];
    fixture(path, sizeof path, "st_sharded.safetensors.index.json");
    vnm_safetensors *st = open_ok(path);
    assert_int_equal(vnm_safetensors_count(st), 4);
    const vnm_safetensors_tensor *a = vnm_safetensors_find(st, "layers.0.w"),
                                 *b = vnm_safetensors_find(st, "layers.1.w");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(strstr(a->file, "/st_sharded-00001-of-00002.safetensors"));
    assert_non_null(strstr(b->file, "/st_sharded-00002-of-00002.safetensors"));
    assert_int_equal(b->dtype, VNM_DTYPE_BF16);
    /* 2·2·4 + 2·4 + 2·2·2 + 3·4 bytes, from the index's metadata. */
    assert_string_equal(vnm_safetensors_metadata(st, "total_size"), "44");
    vnm_safetensors_close(st);
}

/* The tensor set of python_written_set() in tools/gen_safetensors_fixture.py. */
typedef struct {
    float w[6], b[3];
    uint16_t emb[4], h[4];
    int64_t idx[3];
    uint8_t mask[5];
    int32_t cnt[2];
    int64_t s_w[2], s_b[1], s_emb[1], s_h[2], s_idx[1], s_mask[1], s_cnt[1];
    vnm_safetensors_entry e[7];
} python_set;

static void build_python_set(python_set *p)
{
    for (int i = 0; i < 6; i++) p->w[i] = (float)i * 0.5f - 1.0f;
    for (int i = 0; i < 3; i++) p->b[i] = (float)i;
    for (int i = 0; i < 4; i++) p->emb[i] = vnm_f32_to_bf16((float)i * 0.25f);
    for (int i = 0; i < 4; i++) p->h[i] = vnm_f32_to_f16((float)i * 0.125f);
    p->idx[0] = 0, p->idx[1] = -1, p->idx[2] = (int64_t)1 << 40;
    for (int i = 0; i < 5; i++) p->mask[i] = (uint8_t)i;
    p->cnt[0] = 7, p->cnt[1] = -7;
    p->s_w[0] = 2, p->s_w[1] = 3, p->s_b[0] = 3, p->s_emb[0] = 4, p->s_h[0] = 2, p->s_h[1] = 2;
    p->s_idx[0] = 3, p->s_mask[0] = 5, p->s_cnt[0] = 2;
    /* Given out of the file's order, so the writer's sorting is exercised. */
    p->e[0] = (vnm_safetensors_entry){"mask", VNM_DTYPE_U8, 1, p->s_mask, p->mask};
    p->e[1] = (vnm_safetensors_entry){"a.weight", VNM_DTYPE_F32, 2, p->s_w, p->w};
    p->e[2] = (vnm_safetensors_entry){"h", VNM_DTYPE_F16, 2, p->s_h, p->h};
    p->e[3] = (vnm_safetensors_entry){"cnt", VNM_DTYPE_I32, 1, p->s_cnt, p->cnt};
    p->e[4] = (vnm_safetensors_entry){"emb", VNM_DTYPE_BF16, 1, p->s_emb, p->emb};
    p->e[5] = (vnm_safetensors_entry){"a.bias", VNM_DTYPE_F32, 1, p->s_b, p->b};
    p->e[6] = (vnm_safetensors_entry){"idx", VNM_DTYPE_I64, 1, p->s_idx, p->idx};
}

static size_t slurp(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void test_writer_matches_python_bytes(void **state)
{
    (void)state;
    python_set p;
    build_python_set(&p);
    char out[256], ref[1024], err[512] = "";
    snprintf(out, sizeof out, "%s/ours.safetensors", tmpdir);
    fixture(ref, sizeof ref, "st_written_by_python.safetensors");
    const char *meta[] = {"format", "pt"};
    if (vnm_safetensors_write(out, p.e, 7, meta, 1, err, sizeof err)) fail_msg("%s", err);
    static unsigned char a[4096], b[4096];
    size_t na = slurp(out, a, sizeof a), nb = slurp(ref, b, sizeof b);
    if (na != nb || memcmp(a, b, na)) {
        uint64_t ha = 0, hb = 0;
        memcpy(&ha, a, 8);
        memcpy(&hb, b, 8);
        fail_msg("%zu vs %zu bytes; headers:\n%.*s\n%.*s", na, nb, (int)ha, a + 8, (int)hb, b + 8);
    }
    assert_int_equal(unlink(out), 0);
}

static void test_writer_read_back(void **state)
{
    (void)state;
    python_set p;
    build_python_set(&p);
    char out[256], tmp[300], err[512] = "";
    snprintf(out, sizeof out, "%s/back.safetensors", tmpdir);
    const char *meta[] = {"zeta", "last", "alpha", "line\n\"quoted\""};
    if (vnm_safetensors_write(out, p.e, 7, meta, 2, err, sizeof err)) fail_msg("%s", err);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    assert_int_not_equal(access(tmp, F_OK), 0); /* renamed into place */
    vnm_safetensors *st = open_ok(out);
    assert_int_equal(vnm_safetensors_count(st), 7);
    assert_string_equal(vnm_safetensors_metadata(st, "alpha"), "line\n\"quoted\"");
    assert_string_equal(vnm_safetensors_metadata(st, "zeta"), "last");
    for (int i = 0; i < 7; i++) {
        const vnm_safetensors_entry *e = &p.e[i];
        const vnm_safetensors_tensor *t = vnm_safetensors_find(st, e->name);
        assert_non_null(t);
        assert_int_equal(t->dtype, e->dtype);
        assert_int_equal(t->ndim, e->ndim);
        for (int d = 0; d < e->ndim; d++) assert_int_equal(t->shape[d], e->shape[d]);
        size_t bytes = (size_t)(t->end - t->begin);
        unsigned char buf[64];
        assert_int_equal(bytes, (size_t)t->numel * vnm_dtype_size(e->dtype));
        assert_int_equal(vnm_safetensors_read(st, e->name, buf, bytes, err, sizeof err), VNM_OK);
        assert_memory_equal(buf, e->data, bytes);
    }
    vnm_safetensors_close(st);
    /* The data section starts 8-aligned (header padded with spaces). */
    unsigned char raw[8];
    assert_int_equal(slurp(out, raw, 8), 8);
    assert_int_equal(raw[0] % 8, 0);
    assert_int_equal(unlink(out), 0);
}

/* Our sharded writer read back by our reader: the split follows the byte budget. */
static void test_sharded_writer(void **state)
{
    (void)state;
    python_set p;
    build_python_set(&p);
    char index[256], shard[256], err[512] = "";
    snprintf(index, sizeof index, "%s/w.safetensors.index.json", tmpdir);
    const char *meta[] = {"format", "pt"};
    /* Data bytes in e[] order: mask 5, a.weight 24, h 8, cnt 8, emb 8, a.bias 12, idx 24; a
     * 30-byte budget gives [mask,a.weight] [h,cnt,emb] [a.bias] [idx]. */
    if (vnm_safetensors_write_sharded(index, p.e, 7, meta, 1, 30, err, sizeof err))
        fail_msg("%s", err);
    vnm_safetensors *st = open_ok(index);
    assert_int_equal(vnm_safetensors_count(st), 7);
    assert_string_equal(vnm_safetensors_metadata(st, "total_size"), "89");
    static const char *const where[] = {"1", "1", "2", "2", "2", "3", "4"};
    for (int i = 0; i < 7; i++) {
        const vnm_safetensors_tensor *t = vnm_safetensors_find(st, p.e[i].name);
        assert_non_null(t);
        snprintf(shard, sizeof shard, "%s/w-0000%s-of-00004.safetensors", tmpdir, where[i]);
        assert_string_equal(t->file, shard);
        unsigned char buf[64];
        size_t bytes = (size_t)(t->end - t->begin);
        assert_int_equal(vnm_safetensors_read(st, p.e[i].name, buf, bytes, err, sizeof err),
                         VNM_OK);
        assert_memory_equal(buf, p.e[i].data, bytes);
    }
    vnm_safetensors_close(st);
    assert_int_equal(unlink(index), 0);
    for (int k = 1; k <= 4; k++) {
        snprintf(shard, sizeof shard, "%s/w-0000%d-of-00004.safetensors", tmpdir, k);
        assert_int_equal(unlink(shard), 0);
    }
    assert_int_equal(
        vnm_safetensors_write_sharded("/tmp/x.json", p.e, 7, NULL, 0, 30, err, sizeof err),
        VNM_ERR_INPUT);
    assert_non_null(strstr(err, "must be named <base>.safetensors.index.json"));
}

static void test_writer_errors(void **state)
{
    (void)state;
    python_set p;
    build_python_set(&p);
    char out[256], err[512] = "";
    snprintf(out, sizeof out, "%s/bad.safetensors", tmpdir);
    vnm_safetensors_entry dup[3] = {p.e[1], p.e[0], p.e[1]};
    dup[2].dtype = VNM_DTYPE_U8; /* same name, different dtype: not adjacent in file order */
    assert_int_equal(vnm_safetensors_write(out, dup, 3, NULL, 0, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "bad.safetensors: duplicate tensor name 'a.weight'"));
    const char *meta[] = {"k", "1", "k", "2"};
    assert_int_equal(vnm_safetensors_write(out, p.e, 1, meta, 2, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "duplicate metadata key 'k'"));
    vnm_safetensors_entry reserved = p.e[1];
    reserved.name = "__metadata__";
    assert_int_equal(vnm_safetensors_write(out, &reserved, 1, NULL, 0, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "reserved name"));
    assert_int_not_equal(access(out, F_OK), 0);
    snprintf(out, sizeof out, "%s/no/such/dir/x.safetensors", tmpdir);
    assert_int_equal(vnm_safetensors_write(out, p.e, 1, NULL, 0, err, sizeof err), VNM_ERR_INPUT);
    assert_non_null(strstr(err, "x.safetensors.tmp: cannot create"));
}

/* Writes 8-byte length (header_len, or the header's length when 0) + header + data_len zeros. */
static void write_raw(const char *path, const char *header, uint64_t header_len, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = header_len ? header_len : strlen(header);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_len; i++) fputc(0, f);
    fclose(f);
}

static void test_corrupt_files(void **state)
{
    (void)state;
    static const struct {
        const char *header;
        uint64_t header_len;
        size_t data_len;
        const char *needle;
    } cases[] = {
        {"{}", 0, 0, NULL}, /* empty but valid */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 4,
         "tensor 'a': data_offsets [0, 8] extend beyond the 4 data bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         0, 12, "tensors 'a' [0, 8] and 'b' [4, 12] overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8,
         "tensor 'a': shape and dtype F32 need 12 bytes but data_offsets span 8"},
        {"{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 0, 8,
         "tensor 'a': unsupported dtype 'F64'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
         "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
         0, 2, "duplicate tensor name 'a'"},
        {"{not json}", 0, 0, "(header):1:2 (byte 1): expected a string key"},
        {"[1, 2]", 0, 0, "header is a JSON array, expected an object"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, 0,
         "tensor 'a': shape[0] is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", 0, 1,
         "tensor 'a': shape has 5 dims"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 0, 1,
         "tensor 'a': expected \"data_offsets\" [begin, end]"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1,
         "tensor 'a': expected a string \"dtype\""},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,1]}}", 0,
         1, "tensor 'a': shape is too large"},
        {"{\"a\":[]}", 0, 0, "tensor 'a': expected an object, found array"},
        {"{\"__metadata__\":{\"k\":1}}", 0, 0, "__metadata__ key 'k': expected a string value"},
        {"{}", 1000, 0, "header length 1000 is invalid (file has 2 bytes after the length"},
        {"{}", 1, 0, "header length 1 is invalid"},
        {"{}", (uint64_t)1 << 62, 0, "header length 4611686018427387904 is invalid"},
    };
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/corrupt.safetensors", tmpdir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(path, cases[i].header, cases[i].header_len, cases[i].data_len);
        vnm_safetensors *st = NULL;
        err[0] = '\0';
        vnm_status s = vnm_safetensors_open(path, &st, err, sizeof err);
        if (!cases[i].needle) {
            if (s) fail_msg("case %zu: %s", i, err);
            vnm_safetensors_close(st);
            continue;
        }
        if (s != VNM_ERR_INPUT || st || strncmp(err, path, strlen(path)) ||
            !strstr(err, cases[i].needle))
            fail_msg("case %zu: status %d, message \"%s\", expected \"%s: ...%s\"", i, s, err, path,
                     cases[i].needle);
    }
    /* Truncations of a real file at every length give an error, never a crash. */
    char small[1024];
    fixture(small, sizeof small, "st_small.safetensors");
    static unsigned char buf[4096];
    size_t n = slurp(small, buf, sizeof buf);
    for (size_t len = 0; len < n; len++) {
        FILE *f = fopen(path, "wb");
        fwrite(buf, 1, len, f);
        fclose(f);
        vnm_safetensors *st = NULL;
        if (vnm_safetensors_open(path, &st, err, sizeof err) == VNM_OK)
            fail_msg("truncated to %zu of %zu bytes: opened", len, n);
        assert_non_null(strstr(err, path));
    }
    assert_int_equal(unlink(path), 0);
}

static void test_missing_file(void **state)
{
    (void)state;
    char err[512];
    vnm_safetensors *st = (vnm_safetensors *)1;
    assert_int_equal(vnm_safetensors_open("/nonexistent/m.safetensors", &st, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_null(st);
    assert_non_null(strstr(err, "/nonexistent/m.safetensors: cannot open"));
    assert_int_equal(vnm_safetensors_open("/nonexistent/m.index.json", &st, err, sizeof err),
                     VNM_ERR_INPUT);
    assert_non_null(strstr(err, "/nonexistent/m.index.json: cannot open"));
}

static void test_index_errors(void **state)
{
    (void)state;
    python_set p;
    build_python_set(&p);
    char shard[256], index[256], err[512];
    snprintf(shard, sizeof shard, "%s/s1.safetensors", tmpdir);
    snprintf(index, sizeof index, "%s/m.safetensors.index.json", tmpdir);
    if (vnm_safetensors_write(shard, p.e, 2, NULL, 0, err, sizeof err)) fail_msg("%s", err);
    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"{\"weight_map\": {\"mask\": \"s1.safetensors\", \"a.weight\": \"s1.safetensors\"}}",
         NULL},
        {"{\"weight_map\": {\"mask\": \"s1.safetensors\"}}", "tensor 'a.weight' of "},
        {"{\"weight_map\": {\"mask\": \"s1.safetensors\", \"a.weight\": \"s1.safetensors\", "
         "\"zzz\": \"s1.safetensors\"}}",
         "weight_map puts tensor 'zzz' in s1.safetensors, but no shard has it"},
        {"{\"weight_map\": {\"mask\": \"s2.safetensors\"}}", "s2.safetensors: cannot open"},
        {"{\"weight_map\": {\"mask\": \"../s1.safetensors\"}}",
         "weight_map['mask']: expected a shard file name"},
        {"{\"metadata\": {}}", "expected an object \"weight_map\""},
        {"{\"weight_map\": {,}}", "m.safetensors.index.json:1:17 (byte 16): expected a string key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(index, "w");
        fputs(cases[i].json, f);
        fclose(f);
        vnm_safetensors *st = NULL;
        err[0] = '\0';
        vnm_status s = vnm_safetensors_open(index, &st, err, sizeof err);
        if (!cases[i].needle) {
            if (s) fail_msg("case %zu: %s", i, err);
            assert_int_equal(vnm_safetensors_count(st), 2);
            vnm_safetensors_close(st);
        } else if (s != VNM_ERR_INPUT || !strstr(err, cases[i].needle)) {
            fail_msg("case %zu: status %d, message \"%s\", expected \"%s\"", i, s, err,
                     cases[i].needle);
        }
    }
    assert_int_equal(unlink(index), 0);
    assert_int_equal(unlink(shard), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_fixtures_match_expected),
        cmocka_unit_test(test_metadata_and_raw_read),
        cmocka_unit_test(test_sharded_lookup),
        cmocka_unit_test(test_writer_matches_python_bytes),
        cmocka_unit_test(test_writer_read_back),
        cmocka_unit_test(test_sharded_writer),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_index_errors),
    };
    return cmocka_run_group_tests_name("safetensors", tests, group_setup, group_teardown);
}
