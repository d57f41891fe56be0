/* safetensors reader/writer and parameter-store save/load.
   Round trips of every dtype, PyTorch-written fixtures (tests/oracle/make_safetensors.py),
   a table of malformed files (each must fail cleanly: run once under valgrind), atomic
   saves, and params save/load with Adam state and error reports. */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L   /* mkdir/rmdir/setrlimit for the atomic-save tests */
#endif
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"
#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#define ST_POSIX 1
#endif

/* ---- helpers ------------------------------------------------------------------------- */
static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}
static unsigned char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *b;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    b = (unsigned char *)malloc((size_t)n + 1);
    *size = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}
/* A file image: 8-byte little-endian header length, header, data_len bytes of data. */
static unsigned char *mk_file(const char *json, size_t data_len, size_t *size) {
    size_t n = strlen(json), i;
    unsigned char *b = (unsigned char *)malloc(8 + n + data_len + 1);
    for (i = 0; i < 8; ++i) b[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, n);
    for (i = 0; i < data_len; ++i) b[8 + n + i] = (unsigned char)(i * 37 + 1);
    *size = 8 + n + data_len;
    return b;
}
static int st_is_clear(const higan_safetensors *st) {
    return st->file == NULL && st->tensors == NULL && st->count == 0 && st->meta_count == 0 &&
           st->meta_keys == NULL && st->data == NULL;
}
static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
/* bit-exact float comparison; any NaN equals any NaN (hardware may quiet signalling NaNs) */
static int same_float(float a, float b) { return (a != a && b != b) || f32_bits(a) == f32_bits(b); }

/* ---- dtype table --------------------------------------------------------------------- */
static void test_dtypes(void) {
    CHECK(!strcmp(higan_dtype_name(HIGAN_F32), "F32") && !strcmp(higan_dtype_name(HIGAN_BF16), "BF16") &&
          !strcmp(higan_dtype_name(HIGAN_U8), "U8"), "dtype names");
    CHECK(higan_dtype_size(HIGAN_F32) == 4 && higan_dtype_size(HIGAN_F16) == 2 && higan_dtype_size(HIGAN_BF16) == 2 &&
          higan_dtype_size(HIGAN_I64) == 8 && higan_dtype_size(HIGAN_I32) == 4 && higan_dtype_size(HIGAN_I16) == 2 &&
          higan_dtype_size(HIGAN_U8) == 1, "dtype sizes");
}

/* ---- writer/reader round trip ---------------------------------------------------------- */
#define NAME_QUOTE "we\"ird"
#define NAME_BSLASH "back\\slash\\"
#define NAME_UNI "caf\xC3\xA9/\xF0\x9F\x98\x80.w"
#define NAME_CTRL "ctrl\n\t\x01\x1f/x"
static void test_roundtrip(void) {
    higan_safetensors_writer w;
    higan_safetensors st, st2;
    const char *path = "build/st_roundtrip.safetensors";
    unsigned char u8[3] = {0, 7, 255};
    float f32[6] = {1.5f, -2.25f, 0.0f, -0.0f, 3.4028235e38f, 1e-40f};
    uint16_t f16[4] = {0x3C00, 0xC000, 0x0001, 0x7C00};      /* 1, -2, 2^-24, inf */
    uint16_t bf16[3] = {0x3F80, 0xC040, 0x0001};              /* 1, -3, tiny subnormal */
    int64_t i64[3] = {INT64_MIN, INT64_MAX, -42};
    int32_t i32[4] = {INT32_MIN, INT32_MAX, -1, 5};
    int16_t i16[2] = {-32768, 32767};
    float scalar = 42.0f, odd[2] = {9, 8};
    int64_t s_u8[1] = {3}, s_f32[2] = {2, 3}, s_f16[3] = {1, 2, 2}, s_bf16[1] = {3}, s_i64[1] = {3},
            s_i32[2] = {2, 2}, s_i16[1] = {2}, s_empty[2] = {0, 5}, s_odd[1] = {2};
    int64_t s8[8] = {1, 1, 1, 1, 1, 1, 1, 2}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, sneg[1] = {-1};
    const higan_st_tensor *t;
    float out[8];
    int64_t iout[4];
    unsigned char *bytes;
    size_t size, hlen;
    int i, ok;
    higan_status s;

    higan_safetensors_writer_init(&w);
    /* U8 first with 3 bytes: every later tensor is unaligned in the data section */
    CHECK(higan_safetensors_writer_add(&w, "u8", HIGAN_U8, 1, s_u8, u8) == HIGAN_OK, "writer add u8");
    CHECK(higan_safetensors_writer_add(&w, "f32", HIGAN_F32, 2, s_f32, f32) == HIGAN_OK, "writer add f32");
    CHECK(higan_safetensors_writer_add(&w, "f16", HIGAN_F16, 3, s_f16, f16) == HIGAN_OK, "writer add f16");
    CHECK(higan_safetensors_writer_add(&w, "bf16", HIGAN_BF16, 1, s_bf16, bf16) == HIGAN_OK, "writer add bf16");
    CHECK(higan_safetensors_writer_add(&w, "i64", HIGAN_I64, 1, s_i64, i64) == HIGAN_OK, "writer add i64");
    CHECK(higan_safetensors_writer_add(&w, "i32", HIGAN_I32, 2, s_i32, i32) == HIGAN_OK, "writer add i32");
    CHECK(higan_safetensors_writer_add(&w, "i16", HIGAN_I16, 1, s_i16, i16) == HIGAN_OK, "writer add i16");
    CHECK(higan_safetensors_writer_add(&w, "scalar", HIGAN_F32, 0, NULL, &scalar) == HIGAN_OK, "writer add 0-d");
    CHECK(higan_safetensors_writer_add(&w, "empty", HIGAN_F32, 2, s_empty, NULL) == HIGAN_OK, "writer add empty");
    CHECK(higan_safetensors_writer_add(&w, "eight", HIGAN_F32, 8, s8, odd) == HIGAN_OK, "writer add 8 dims");
    CHECK(higan_safetensors_writer_add(&w, NAME_QUOTE, HIGAN_F32, 1, s_odd, odd) == HIGAN_OK, "writer add name with quote");
    CHECK(higan_safetensors_writer_add(&w, NAME_BSLASH, HIGAN_F32, 1, s_odd, odd) == HIGAN_OK, "writer add name with backslash");
    CHECK(higan_safetensors_writer_add(&w, NAME_UNI, HIGAN_F32, 1, s_odd, odd) == HIGAN_OK, "writer add unicode name");
    CHECK(higan_safetensors_writer_add(&w, NAME_CTRL, HIGAN_F32, 1, s_odd, odd) == HIGAN_OK, "writer add name with controls");
    CHECK(higan_safetensors_writer_meta(&w, "k", "first") == HIGAN_OK &&
          higan_safetensors_writer_meta(&w, "k", "v \"q\" \\ \xC3\xA9\xF0\x9F\x98\x80\n") == HIGAN_OK &&
          higan_safetensors_writer_meta(&w, NAME_UNI, "") == HIGAN_OK, "writer meta (a repeated key keeps the last value)");
    /* writer argument errors */
    CHECK(higan_safetensors_writer_add(&w, "f32", HIGAN_F32, 1, s_odd, odd) == HIGAN_ERR_ARG &&
          strstr(higan_last_error(), "duplicate") && strstr(higan_last_error(), "f32"), "writer: duplicate name rejected: %s", higan_last_error());
    CHECK(higan_safetensors_writer_add(&w, "__metadata__", HIGAN_F32, 1, s_odd, odd) == HIGAN_ERR_ARG, "writer: reserved name rejected");
    CHECK(higan_safetensors_writer_add(&w, "bad\xFF", HIGAN_F32, 1, s_odd, odd) == HIGAN_ERR_ARG, "writer: invalid UTF-8 name rejected");
    CHECK(higan_safetensors_writer_add(&w, "nine", HIGAN_F32, 9, s9, odd) == HIGAN_ERR_ARG, "writer: 9 dims rejected");
    CHECK(higan_safetensors_writer_add(&w, "neg", HIGAN_F32, 1, sneg, odd) == HIGAN_ERR_ARG, "writer: negative dim rejected");
    CHECK(higan_safetensors_writer_add(&w, "null", HIGAN_F32, 1, s_odd, NULL) == HIGAN_ERR_ARG, "writer: NULL data rejected");
    CHECK(higan_safetensors_writer_add(&w, "dt", (higan_dtype)99, 1, s_odd, odd) == HIGAN_ERR_ARG, "writer: bad dtype rejected");
    CHECK(w.count == 14, "writer: failed adds left no entries (%d)", w.count);

    remove(path);
    s = higan_safetensors_writer_save(&w, path);
    CHECK(s == HIGAN_OK, "writer save: %s", s ? higan_last_error() : "ok");
    CHECK(!file_exists("build/st_roundtrip.safetensors.tmp"), "writer save: no .tmp left behind");
    higan_safetensors_writer_free(&w);

    bytes = read_all(path, &size);
    hlen = 0;
    if (bytes) for (i = 0; i < 8; ++i) hlen |= (size_t)bytes[i] << (8 * i);
    CHECK(bytes && hlen % 8 == 0 && hlen + 8 <= size && bytes[8] == '{', "header padded to a multiple of 8 (%zu)", hlen);

    s = higan_safetensors_load(&st, path);
    CHECK(s == HIGAN_OK, "load round trip: %s", s ? higan_last_error() : "ok");
    CHECK(st.count == 14 && st.meta_count == 2, "count %d tensors, %d metadata", st.count, st.meta_count);
    /* insertion order and offsets */
    ok = st.count == 14 && !strcmp(st.tensors[0].name, "u8") && st.tensors[0].begin == 0 && st.tensors[1].begin == 3 &&
         !strcmp(st.tensors[13].name, NAME_CTRL);
    CHECK(ok, "tensors laid out in insertion order (f32 at unaligned offset 3)");
    t = higan_safetensors_find(&st, "f16");
    CHECK(t && t->dtype == HIGAN_F16 && t->ndim == 3 && t->shape[0] == 1 && t->shape[1] == 2 && t->shape[2] == 2 && t->numel == 4,
          "f16 dtype and shape kept");
    t = higan_safetensors_find(&st, "eight");
    CHECK(t && t->ndim == 8 && t->shape[7] == 2 && t->numel == 2, "8-dim shape kept");
    t = higan_safetensors_find(&st, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1, "0-d tensor: ndim 0, numel 1");
    t = higan_safetensors_find(&st, "empty");
    CHECK(t && t->numel == 0 && t->begin == t->end && t->shape[1] == 5, "empty tensor kept");
    /* exact bytes for every dtype */
    ok = 1;
    t = higan_safetensors_find(&st, "u8");    ok &= t && !memcmp(st.data + t->begin, u8, 3);
    t = higan_safetensors_find(&st, "f32");   ok &= t && !memcmp(st.data + t->begin, f32, sizeof f32);
    t = higan_safetensors_find(&st, "f16");   ok &= t && !memcmp(st.data + t->begin, f16, sizeof f16);
    t = higan_safetensors_find(&st, "bf16");  ok &= t && !memcmp(st.data + t->begin, bf16, sizeof bf16);
    t = higan_safetensors_find(&st, "i64");   ok &= t && !memcmp(st.data + t->begin, i64, sizeof i64);
    t = higan_safetensors_find(&st, "i32");   ok &= t && !memcmp(st.data + t->begin, i32, sizeof i32);
    t = higan_safetensors_find(&st, "i16");   ok &= t && !memcmp(st.data + t->begin, i16, sizeof i16);
    CHECK(ok, "data bytes identical for all 7 dtypes");
    /* conversions */
    CHECK(higan_safetensors_read_f32(&st, "f32", out, 6) == HIGAN_OK && !memcmp(out, f32, sizeof f32), "read_f32 F32 (unaligned source)");
    CHECK(higan_safetensors_read_f32(&st, "f16", out, 4) == HIGAN_OK && out[0] == 1.0f && out[1] == -2.0f &&
          out[2] == 5.9604644775390625e-08f && out[3] == HUGE_VALF, "read_f32 F16");
    CHECK(higan_safetensors_read_f32(&st, "bf16", out, 3) == HIGAN_OK && out[0] == 1.0f && out[1] == -3.0f &&
          f32_bits(out[2]) == 0x00010000u, "read_f32 BF16");
    CHECK(higan_safetensors_read_f32(&st, "u8", out, 3) == HIGAN_OK && out[0] == 0 && out[1] == 7 && out[2] == 255, "read_f32 U8");
    CHECK(higan_safetensors_read_f32(&st, "i16", out, 2) == HIGAN_OK && out[0] == -32768.0f && out[1] == 32767.0f, "read_f32 I16");
    CHECK(higan_safetensors_read_f32(&st, "i32", out, 4) == HIGAN_OK && out[0] == -2147483648.0f && out[2] == -1.0f, "read_f32 I32");
    CHECK(higan_safetensors_read_f32(&st, "i64", out, 3) == HIGAN_OK && out[0] == -9223372036854775808.0f && out[2] == -42.0f, "read_f32 I64");
    CHECK(higan_safetensors_read_i64(&st, "i64", iout, 3) == HIGAN_OK && iout[0] == INT64_MIN && iout[1] == INT64_MAX && iout[2] == -42, "read_i64 I64");
    CHECK(higan_safetensors_read_i64(&st, "i32", iout, 4) == HIGAN_OK && iout[0] == INT32_MIN && iout[1] == INT32_MAX && iout[2] == -1, "read_i64 I32");
    CHECK(higan_safetensors_read_i64(&st, "i16", iout, 2) == HIGAN_OK && iout[0] == -32768 && iout[1] == 32767, "read_i64 I16");
    CHECK(higan_safetensors_read_i64(&st, "u8", iout, 3) == HIGAN_OK && iout[2] == 255, "read_i64 U8");
    CHECK(higan_safetensors_read_f32(&st, "scalar", out, 1) == HIGAN_OK && out[0] == 42.0f, "read 0-d");
    CHECK(higan_safetensors_read_f32(&st, "empty", NULL, 0) == HIGAN_OK, "read empty");
    CHECK(higan_safetensors_read_f32(&st, NAME_QUOTE, out, 2) == HIGAN_OK && out[0] == 9.0f, "find name with quote");
    CHECK(higan_safetensors_find(&st, NAME_BSLASH) != NULL, "find name with backslash");
    CHECK(higan_safetensors_find(&st, NAME_UNI) != NULL, "find unicode name");
    CHECK(higan_safetensors_find(&st, NAME_CTRL) != NULL, "find name with control characters");
    CHECK(higan_safetensors_meta(&st, "k") && !strcmp(higan_safetensors_meta(&st, "k"), "v \"q\" \\ \xC3\xA9\xF0\x9F\x98\x80\n"),
          "metadata string round trip");
    CHECK(higan_safetensors_meta(&st, NAME_UNI) && !*higan_safetensors_meta(&st, NAME_UNI), "metadata with unicode key, empty value");
    CHECK(higan_safetensors_meta(&st, "nope") == NULL, "absent metadata is NULL");
    /* read errors */
    CHECK(higan_safetensors_read_f32(&st, "f32", out, 5) == HIGAN_ERR_FORMAT && strstr(higan_last_error(), "f32") &&
          strstr(higan_last_error(), "6") && strstr(higan_last_error(), "5"), "read_f32 wrong count: %s", higan_last_error());
    CHECK(higan_safetensors_read_f32(&st, "missing.weight", out, 1) == HIGAN_ERR_ARG &&
          strstr(higan_last_error(), "no tensor named") && strstr(higan_last_error(), "missing.weight"),
          "read_f32 absent tensor: %s", higan_last_error());
    CHECK(higan_safetensors_read_i64(&st, "f32", iout, 6) == HIGAN_ERR_FORMAT && strstr(higan_last_error(), "F32"),
          "read_i64 of a float tensor: %s", higan_last_error());
    /* parse from a buffer gives the same */
    if (bytes) {
        CHECK(higan_safetensors_parse(&st2, bytes, size) == HIGAN_OK && st2.count == 14 &&
              higan_safetensors_read_f32(&st2, "f32", out, 6) == HIGAN_OK && !memcmp(out, f32, sizeof f32),
              "parse from buffer (copied)");
        memset(bytes, 0, size);   /* the parsed copy must not depend on the caller's buffer */
        CHECK(higan_safetensors_read_f32(&st2, "f32", out, 6) == HIGAN_OK && !memcmp(out, f32, sizeof f32),
              "parse copies the buffer");
        higan_safetensors_free(&st2);
    }
    free(bytes);
    higan_safetensors_free(&st);
    remove(path);
    CHECK(st_is_clear(&st), "free clears the struct");
    higan_safetensors_free(&st);   /* twice is harmless */

    /* an empty writer makes a valid empty file */
    higan_safetensors_writer_init(&w);
    CHECK(higan_safetensors_writer_save(&w, "build/st_empty.safetensors") == HIGAN_OK &&
          higan_safetensors_load(&st, "build/st_empty.safetensors") == HIGAN_OK && st.count == 0, "empty file round trip");
    higan_safetensors_free(&st);
    higan_safetensors_writer_free(&w);
    remove("build/st_empty.safetensors");

    CHECK(higan_safetensors_load(&st, "build/no_such_file.safetensors") == HIGAN_ERR_IO &&
          strstr(higan_last_error(), "build/no_such_file.safetensors") && st_is_clear(&st),
          "load of a missing file: %s", higan_last_error());
    s = higan_safetensors_load(&st, "build");
    CHECK((s == HIGAN_ERR_IO || s == HIGAN_ERR_FORMAT) && strstr(higan_last_error(), "build") && st_is_clear(&st),
          "load of a directory fails cleanly: %s", higan_last_error());
}

/* ---- half -> float against an independent reference, all 65536 patterns ---------------- */
static float half_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) v = m ? NAN : HUGE_VAL;
    else if (e == 0) v = ldexp((double)m, -24);
    else v = ldexp(1024.0 + m, e - 25);
    return (float)(s ? -v : v);
}
static void test_half_exhaustive(void) {
    higan_safetensors_writer w;
    higan_safetensors st;
    uint16_t *h = (uint16_t *)malloc(65536 * sizeof *h);
    float *out = (float *)malloc(65536 * sizeof *out);
    int64_t n = 65536, bad = 0, i;
    for (i = 0; i < n; ++i) h[i] = (uint16_t)i;
    higan_safetensors_writer_init(&w);
    higan_safetensors_writer_add(&w, "h", HIGAN_F16, 1, &n, h);
    higan_safetensors_writer_add(&w, "b", HIGAN_BF16, 1, &n, h);
    if (higan_safetensors_writer_save(&w, "build/st_half.safetensors") == HIGAN_OK &&
        higan_safetensors_load(&st, "build/st_half.safetensors") == HIGAN_OK) {
        higan_safetensors_read_f32(&st, "h", out, n);
        for (i = 0; i < n; ++i) bad += !same_float(out[i], half_ref((uint16_t)i));
        CHECK(bad == 0, "F16 -> F32 exact for all 65536 bit patterns (%lld wrong)", (long long)bad);
        higan_safetensors_read_f32(&st, "b", out, n);
        for (i = 0, bad = 0; i < n; ++i) bad += f32_bits(out[i]) != (uint32_t)i << 16;
        CHECK(bad == 0, "BF16 -> F32 exact for all 65536 bit patterns (%lld wrong)", (long long)bad);
        higan_safetensors_free(&st);
    } else {
        CHECK(0, "half exhaustive: %s", higan_last_error());
    }
    higan_safetensors_writer_free(&w);
    remove("build/st_half.safetensors");
    free(h);
    free(out);
}

/* ---- fixtures written by PyTorch ------------------------------------------------------- */
static void compare_as_f32(const higan_safetensors *st, const char *name) {
    const higan_st_tensor *t = higan_safetensors_find(st, name);
    char ref_name[64];
    float *got, *ref;
    int64_t i, bad = 0, n;
    snprintf(ref_name, sizeof ref_name, "%s_as_f32", name);
    if (!t) { CHECK(0, "fixture tensor %s missing", name); return; }
    n = t->numel;
    got = (float *)malloc(sizeof(float) * (size_t)n);
    ref = (float *)malloc(sizeof(float) * (size_t)n);
    if (higan_safetensors_read_f32(st, name, got, n) != HIGAN_OK || higan_safetensors_read_f32(st, ref_name, ref, n) != HIGAN_OK) {
        CHECK(0, "fixture %s: %s", name, higan_last_error());
    } else {
        for (i = 0; i < n; ++i) bad += !same_float(got[i], ref[i]);
        CHECK(bad == 0, "fixture %s (%s, %lld values) converts exactly as torch .float() (%lld differ)", name,
              higan_dtype_name(t->dtype), (long long)n, (long long)bad);
    }
    free(got);
    free(ref);
}
static void test_fixtures(void) {
    higan_safetensors st;
    const higan_st_tensor *t;
    float v[16];
    int64_t iv[7];
    int i, nan = 0, inf = 0, sub = 0;
    if (!check_open_fixture(&st, "st_dtypes.safetensors")) return;
    compare_as_f32(&st, "f16");
    compare_as_f32(&st, "bf16");
    compare_as_f32(&st, "i64");
    compare_as_f32(&st, "i32");
    compare_as_f32(&st, "i16");
    compare_as_f32(&st, "u8");
    {   /* the F16 fixture really holds the special classes */
        float *h;
        int64_t n;
        h = check_load(&st, "f16", &n);
        for (i = 0; h && i < n; ++i) {
            nan += h[i] != h[i];
            inf += h[i] == HUGE_VALF || h[i] == -HUGE_VALF;
            sub += h[i] != 0 && fabsf(h[i]) < 6.103515625e-05f;
        }
        CHECK(nan > 0 && inf == 2 && sub > 0, "F16 fixture has NaNs (%d), infs (%d), subnormals (%d)", nan, inf, sub);
        free(h);
    }
    CHECK(higan_safetensors_read_i64(&st, "i64", iv, 7) == HIGAN_OK && iv[0] == INT64_MIN && iv[1] == INT64_MAX &&
          iv[2] == 9007199254740993LL && iv[3] == -1 && iv[4] == 0 && iv[5] == 123456789012345LL && iv[6] == 16777217,
          "I64 fixture read exactly");
    CHECK(higan_safetensors_read_f32(&st, "f32_special", v, 10) == HIGAN_OK && v[0] == 0 && f32_bits(v[1]) == 0x80000000u &&
          v[2] == HUGE_VALF && v[3] == -HUGE_VALF && v[4] != v[4] && v[5] == 1e-40f && v[7] == 3.4028235e38f,
          "F32 specials");
    t = higan_safetensors_find(&st, "scalar");
    CHECK(t && t->ndim == 0 && higan_safetensors_read_f32(&st, "scalar", v, 1) == HIGAN_OK && v[0] == 3.5f, "0-d fixture tensor");
    t = higan_safetensors_find(&st, "empty");
    CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 3 && t->numel == 0, "empty fixture tensor");
    CHECK(higan_safetensors_read_f32(&st, "sp\xC3\xA9" "cial/\xF0\x9F\x98\x80.\"q\\uote\"", v, 4) == HIGAN_OK && v[3] == 3.0f,
          "name escaped by json.dumps (u00e9, surrogate pair, quote, backslash) decodes to UTF-8");
    CHECK(higan_safetensors_meta(&st, "note") &&
          !strcmp(higan_safetensors_meta(&st, "note"), "caf\xC3\xA9 \"quoted\" back\\slash \xF0\x9F\x98\x80 tab\tnewline\n"),
          "metadata escapes decoded (u00e9, surrogate pair, quote, backslash, tab, newline)");
    CHECK(higan_safetensors_meta(&st, "torch") != NULL, "metadata torch version present");
    higan_safetensors_free(&st);
}

/* ---- malformed inputs ------------------------------------------------------------------- */
#define VALID_ONE "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
#define ENT(n, dt, sh, b, e) "\"" n "\":{\"dtype\":\"" dt "\",\"shape\":" sh ",\"data_offsets\":[" #b "," #e "]}"
typedef struct { const char *what, *json; size_t data; int ok; } bad_case;
static const bad_case cases[] = {
    /* controls that must parse (to prove the harness builds files correctly) */
    {"valid one tensor", VALID_ONE, 8, 1},
    {"valid with whitespace", "{ \"a\" :\r\n {\"shape\" : [ 2 ] , \"data_offsets\":[0 ,8],\t\"dtype\":\"F32\" } }\n   ", 8, 1},
    {"leading whitespace", " {" ENT("a", "F32", "[2]", 0, 8) "}", 8, 0},
    {"valid with spaces after", VALID_ONE "        ", 8, 1},
    {"valid empty", "{}", 0, 1},
    {"valid empty metadata", "{\"__metadata__\":{}}", 0, 1},
    {"valid zero-size tensor", "{" ENT("z", "F32", "[0,4]", 0, 0) "," ENT("a", "U8", "[3]", 0, 3) "}", 3, 1},
    {"valid escapes in name", "{\"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\":{\"dtype\":\"I16\",\"shape\":[],\"data_offsets\":[0,2]}}", 2, 1},
    {"valid two tensors out of order", "{" ENT("b", "I32", "[1]", 4, 8) "," ENT("a", "BF16", "[2]", 0, 4) "}", 8, 1},
    {"valid 8 dims", "{" ENT("a", "U8", "[1,1,1,1,1,1,1,2]", 0, 2) "}", 2, 1},
    /* JSON structure */
    {"not an object", "[\"a\"]", 0, 0},
    {"empty header content", " ", 0, 0},
    {"open brace only", "{", 0, 0},
    {"open brace and spaces", "{    ", 0, 0},
    {"missing colon", "{\"a\" {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"missing comma", "{" ENT("a", "F32", "[1]", 0, 4) ENT("b", "F32", "[1]", 4, 8) "}", 8, 0},
    {"trailing comma top", "{" ENT("a", "F32", "[2]", 0, 8) ",}", 8, 0},
    {"trailing comma entry", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],}}", 8, 0},
    {"trailing comma array", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,],\"data_offsets\":[0,8]}}", 8, 0},
    {"unterminated object", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, 0},
    {"unterminated string", "{\"a", 0, 0},
    {"unterminated escape", "{\"a\\", 0, 0},
    {"garbage after object", VALID_ONE "x", 8, 0},
    {"second object", VALID_ONE "{}", 8, 0},
    {"tensor entry is a number", "{\"a\":5}", 0, 0},
    {"tensor entry is null", "{\"a\":null}", 0, 0},
    {"tensor entry is an array", "{\"a\":[0,8]}", 8, 0},
    {"key not a string", "{a:{}}", 0, 0},
    {"single quotes", "{'a':{}}", 0, 0},
    /* strings */
    {"bad escape", "{\"a\\x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"bad hex", "{\"a\\u12G4\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"short \\u", "{\"a\\u12\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"lone high surrogate", "{\"a\\ud83d\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"high surrogate + non-low", "{\"a\\ud83d\\u0041\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"lone low surrogate", "{\"a\\ude00\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"\\u0000", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"raw control char", "{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"raw newline in string", "{\"a\nb\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"invalid UTF-8 byte", "{\"a\xFF\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"overlong UTF-8", "{\"a\xC0\xAF\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"UTF-8 surrogate", "{\"a\xED\xA0\x80\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"truncated UTF-8 at end", VALID_ONE "\xE2\x82", 8, 0},
    /* names and fields */
    {"duplicate tensor", "{" ENT("a", "F32", "[1]", 0, 4) "," ENT("a", "F32", "[1]", 4, 8) "}", 8, 0},
    {"duplicate field", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"missing dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, 0},
    {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, 0},
    {"empty entry", "{\"a\":{}}", 0, 0},
    {"unknown field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"foo\":1}}", 8, 0},
    {"dtype F64", "{" ENT("a", "F64", "[1]", 0, 8) "}", 8, 0},
    {"dtype BOOL", "{" ENT("a", "BOOL", "[8]", 0, 8) "}", 8, 0},
    {"dtype unknown", "{" ENT("a", "X", "[8]", 0, 8) "}", 8, 0},
    {"dtype lowercase", "{" ENT("a", "f32", "[2]", 0, 8) "}", 8, 0},
    {"dtype not a string", "{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0},
    /* shapes */
    {"shape not array", "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, 0},
    {"shape negative", "{" ENT("a", "F32", "[-2]", 0, 8) "}", 8, 0},
    {"shape float", "{" ENT("a", "F32", "[2.0]", 0, 8) "}", 8, 0},
    {"shape exponent", "{" ENT("a", "F32", "[2e0]", 0, 8) "}", 8, 0},
    {"shape leading zero", "{" ENT("a", "F32", "[02]", 0, 8) "}", 8, 0},
    {"shape string", "{" ENT("a", "F32", "[\"2\"]", 0, 8) "}", 8, 0},
    {"shape nested", "{" ENT("a", "F32", "[[2]]", 0, 8) "}", 8, 0},
    {"shape 9 dims", "{" ENT("a", "U8", "[1,1,1,1,1,1,1,1,2]", 0, 2) "}", 2, 0},
    {"shape value > int64", "{" ENT("a", "U8", "[99999999999999999999]", 0, 2) "}", 2, 0},
    {"shape value = 2^63", "{" ENT("a", "U8", "[9223372036854775808]", 0, 2) "}", 2, 0},
    {"shape product overflow", "{" ENT("a", "F32", "[4294967296,4294967296]", 0, 8) "}", 8, 0},
    {"shape product just over", "{" ENT("a", "U8", "[3037000500,3037000500]", 0, 8) "}", 8, 0},
    {"numel*size overflow", "{" ENT("a", "I64", "[2305843009213693952]", 0, 8) "}", 8, 0},
    {"shape with zero and huge", "{" ENT("a", "U8", "[0,9223372036854775807,2]", 0, 0) "}", 0, 1},
    /* offsets */
    {"offsets one entry", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8, 0},
    {"offsets three entries", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8, 0},
    {"offsets begin > end", "{" ENT("a", "F32", "[2]", 8, 0) "}", 8, 0},
    {"offsets negative", "{" ENT("a", "F32", "[2]", -8, 0) "}", 8, 0},
    {"offsets past end", "{" ENT("a", "F32", "[4]", 0, 16) "}", 8, 0},
    {"offsets huge", "{" ENT("a", "F32", "[2]", 18446744073709551608, 18446744073709551616) "}", 8, 0},
    {"wrong byte count", "{" ENT("a", "F32", "[3]", 0, 8) "}", 8, 0},
    {"wrong byte count (dtype size)", "{" ENT("a", "F16", "[2]", 0, 8) "}", 8, 0},
    {"hole between tensors", "{" ENT("a", "F32", "[1]", 0, 4) "," ENT("b", "F32", "[1]", 8, 12) "}", 12, 0},
    {"hole at start", "{" ENT("a", "F32", "[1]", 4, 8) "}", 8, 0},
    {"overlap", "{" ENT("a", "F32", "[2]", 0, 8) "," ENT("b", "F32", "[2]", 4, 12) "}", 12, 0},
    {"same range twice", "{" ENT("a", "F32", "[2]", 0, 8) "," ENT("b", "F32", "[2]", 0, 8) "}", 8, 0},
    {"data left over", VALID_ONE, 12, 0},
    {"data left over, no tensors", "{}", 4, 0},
    {"data too short", VALID_ONE, 4, 0},
    /* metadata */
    {"metadata value number", "{\"__metadata__\":{\"k\":1}}", 0, 0},
    {"metadata value object", "{\"__metadata__\":{\"k\":{}}}", 0, 0},
    {"metadata not object", "{\"__metadata__\":\"x\"}", 0, 0},
    {"metadata duplicate key", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, 0},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0},
    {"metadata trailing comma", "{\"__metadata__\":{\"k\":\"a\",}}", 0, 0},
};

static void expect_fail(const char *what, const void *buf, size_t size) {
    higan_safetensors st;
    higan_status s;
    higan__error(HIGAN_OK, "%s", "");
    s = higan_safetensors_parse(&st, buf, size);
    CHECK(s == HIGAN_ERR_FORMAT && higan_last_error()[0] && st_is_clear(&st), "malformed (%s) -> %s", what, higan_last_error());
    if (s == HIGAN_OK) higan_safetensors_free(&st);
}
static void test_malformed(void) {
    size_t i, size;
    unsigned char hdr[32];
    for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        unsigned char *b = mk_file(cases[i].json, cases[i].data, &size);
        if (cases[i].ok) {
            higan_safetensors st;
            higan_status s = higan_safetensors_parse(&st, b, size);
            CHECK(s == HIGAN_OK, "valid control (%s) parses: %s", cases[i].what, s ? higan_last_error() : "ok");
            if (s == HIGAN_OK) higan_safetensors_free(&st);
        } else {
            expect_fail(cases[i].what, b, size);
        }
        free(b);
    }
    {   /* NUL padding after the object (strlen cannot build this one) */
        static const char pad[] = VALID_ONE "\0\0\0\0";
        unsigned char *b = mk_file(VALID_ONE, 8, &size);
        unsigned char *c = (unsigned char *)malloc(size + 4);
        size_t n = sizeof pad - 1, k;
        for (k = 0; k < 8; ++k) c[k] = (unsigned char)((uint64_t)n >> (8 * k));
        memcpy(c + 8, pad, n);
        memcpy(c + 8 + n, b + size - 8, 8);
        expect_fail("NUL padding", c, 8 + n + 8);
        free(b);
        free(c);
    }
    /* the header length itself */
    for (i = 0; i < 8; ++i) {
        char what[32];
        memset(hdr, 0x7b, sizeof hdr);
        snprintf(what, sizeof what, "%u-byte file", (unsigned)i);
        expect_fail(what, hdr, i);
    }
    expect_fail("empty buffer (NULL)", NULL, 0);
    {
        static const struct { const char *what; uint64_t len; } L[] = {
            {"header length 0", 0}, {"header length 100 MB + 1", 100000001ull},
            {"header length 2^64-1", 0xFFFFFFFFFFFFFFFFull}, {"header length 2^63", 0x8000000000000000ull},
            {"header length past end", 25}, {"header length 2^32 + 2", 0x100000002ull}};
        for (i = 0; i < sizeof L / sizeof L[0]; ++i) {
            int k;
            memset(hdr, ' ', sizeof hdr);
            for (k = 0; k < 8; ++k) hdr[k] = (unsigned char)(L[i].len >> (8 * k));
            hdr[8] = '{'; hdr[9] = '}';
            expect_fail(L[i].what, hdr, 8 + 16);
        }
    }
}

/* Every proper prefix of a valid file must fail; random corruptions must never crash. */
static void test_truncation_and_fuzz(void) {
    higan_safetensors_writer w;
    higan_safetensors st;
    float a[3] = {1, 2, 3};
    int16_t b[2] = {4, 5};
    int64_t sa[1] = {3}, sb[2] = {1, 2};
    unsigned char *file, *cut, *mut;
    size_t size, len, bad_prefix = 0, empty_msg = 0, i;
    uint64_t r = 12345;
    int it, parsed = 0, failed = 0, inconsistent = 0;
    higan_safetensors_writer_init(&w);
    higan_safetensors_writer_add(&w, "a", HIGAN_F32, 1, sa, a);
    higan_safetensors_writer_add(&w, "b\xC3\xA9", HIGAN_I16, 2, sb, b);
    higan_safetensors_writer_meta(&w, "m", "x\"y");
    CHECK(higan_safetensors_writer_save(&w, "build/st_small.safetensors") == HIGAN_OK, "save small file");
    higan_safetensors_writer_free(&w);
    file = read_all("build/st_small.safetensors", &size);
    remove("build/st_small.safetensors");
    if (!file) return;
    CHECK(higan_safetensors_parse(&st, file, size) == HIGAN_OK, "small file parses");
    higan_safetensors_free(&st);
    for (len = 0; len < size; ++len) {
        higan_status s;
        cut = (unsigned char *)malloc(len ? len : 1);   /* exact size: valgrind sees any over-read */
        memcpy(cut, file, len);
        higan__error(HIGAN_OK, "%s", "");
        s = higan_safetensors_parse(&st, cut, len);
        if (s == HIGAN_OK) { ++bad_prefix; higan_safetensors_free(&st); }
        else if (!higan_last_error()[0] || !st_is_clear(&st)) ++empty_msg;
        free(cut);
    }
    CHECK(bad_prefix == 0 && empty_msg == 0, "all %zu proper prefixes fail with a message (%zu parsed, %zu without message)",
          size, bad_prefix, empty_msg);
    /* a longer file also fails (data left over) */
    mut = (unsigned char *)malloc(size + 1);
    memcpy(mut, file, size);
    mut[size] = 0;
    expect_fail("one extra byte", mut, size + 1);
    free(mut);
    /* random corruption of 1-4 bytes, mostly in the header */
    mut = (unsigned char *)malloc(size);
    for (it = 0; it < 4000; ++it) {
        int k, nflip;
        memcpy(mut, file, size);
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        nflip = 1 + (int)((r >> 60) & 3);
        for (k = 0; k < nflip; ++k) {
            size_t pos;
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            pos = (size_t)((r >> 33) % (uint64_t)size);
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            mut[pos] = (it & 1) ? (unsigned char)(r >> 40) : (unsigned char)"{}[]\",:\\u0-9 eE."[(r >> 40) % 17];
        }
        higan__error(HIGAN_OK, "%s", "");
        if (higan_safetensors_parse(&st, mut, size) == HIGAN_OK) {
            ++parsed;
            for (i = 0; i < (size_t)st.count; ++i)
                if (st.tensors[i].end > st.file_size - (size_t)(st.data - st.file) ||
                    st.tensors[i].end - st.tensors[i].begin != (size_t)st.tensors[i].numel * higan_dtype_size(st.tensors[i].dtype))
                    ++inconsistent;
            higan_safetensors_free(&st);
        } else {
            ++failed;
            if (!higan_last_error()[0]) ++empty_msg;
        }
    }
    CHECK(inconsistent == 0 && empty_msg == 0, "fuzz: 4000 corruptions, %d rejected with a message, %d still valid and consistent",
          failed, parsed);
    free(mut);
    free(file);
}

/* ---- atomic save -------------------------------------------------------------------------- */
static higan_status save_value(const char *path, float v, int64_t n) {
    higan_safetensors_writer w;
    higan_status s;
    float *x = (float *)malloc(sizeof(float) * (size_t)n);
    int64_t i;
    for (i = 0; i < n; ++i) x[i] = v;
    higan_safetensors_writer_init(&w);
    higan_safetensors_writer_add(&w, "x", HIGAN_F32, 1, &n, x);
    s = higan_safetensors_writer_save(&w, path);
    higan_safetensors_writer_free(&w);
    free(x);
    return s;
}
static float load_value(const char *path) {
    higan_safetensors st;
    float v = -1;
    const higan_st_tensor *t;
    if (higan_safetensors_load(&st, path) != HIGAN_OK) return -1;
    t = higan_safetensors_find(&st, "x");
    if (t && t->numel >= 1) {
        float *x = (float *)malloc(sizeof(float) * (size_t)t->numel);
        if (higan_safetensors_read_f32(&st, "x", x, t->numel) == HIGAN_OK) v = x[0];
        free(x);
    }
    higan_safetensors_free(&st);
    return v;
}
static void test_atomic_save(void) {
    const char *path = "build/st_atomic.safetensors", *tmp = "build/st_atomic.safetensors.tmp";
    higan_status s;
    s = save_value("build/st_no_such_dir/x.safetensors", 1, 4);
    CHECK(s == HIGAN_ERR_IO && strstr(higan_last_error(), "build/st_no_such_dir/x.safetensors") &&
          !file_exists("build/st_no_such_dir/x.safetensors.tmp"),
          "save into a missing directory fails cleanly: %s", higan_last_error());
    remove(path);
    CHECK(save_value(path, 1, 4) == HIGAN_OK && load_value(path) == 1, "save creates a file");
    CHECK(save_value(path, 2, 4) == HIGAN_OK && load_value(path) == 2 && !file_exists(tmp), "save replaces an existing file, no .tmp left");
#ifdef ST_POSIX
    /* the temporary cannot be created (a directory is in the way): the old file stays */
    if (mkdir(tmp, 0755) == 0) {
        s = save_value(path, 3, 4);
        CHECK(s == HIGAN_ERR_IO && strstr(higan_last_error(), path) && load_value(path) == 2,
              "failed create leaves the existing file untouched: %s", higan_last_error());
        rmdir(tmp);
    }
    /* rename fails (path is a non-empty directory): the temporary file is removed */
    mkdir("build/st_dir_target", 0755);
    {
        FILE *f = fopen("build/st_dir_target/keep", "wb");
        if (f) { fputs("keep", f); fclose(f); }
    }
    s = save_value("build/st_dir_target", 4, 4);
    CHECK(s == HIGAN_ERR_IO && strstr(higan_last_error(), "build/st_dir_target") && !file_exists("build/st_dir_target.tmp") &&
          file_exists("build/st_dir_target/keep"), "failed rename removes the .tmp and keeps the target: %s", higan_last_error());
    remove("build/st_dir_target/keep");
    rmdir("build/st_dir_target");
#endif
#if defined(__linux__)
    /* a write error half way (file size limit): the old file stays, the .tmp is removed */
    {
        struct rlimit old, lim;
        void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
        if (getrlimit(RLIMIT_FSIZE, &old) == 0) {
            lim = old;
            lim.rlim_cur = 4096;
            if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
                s = save_value(path, 5, 100000);
                setrlimit(RLIMIT_FSIZE, &old);
                CHECK(s == HIGAN_ERR_IO && strstr(higan_last_error(), path) && load_value(path) == 2 && !file_exists(tmp),
                      "failed write keeps the old file and removes the .tmp: %s", higan_last_error());
            }
        }
        signal(SIGXFSZ, prev);
    }
#endif
    remove(path);
}

/* ---- parameter stores ------------------------------------------------------------------- */
static void reg_store(higan_params *p) {
    int64_t s_w[2] = {3, 4}, s_b[1] = {3}, s_c[4] = {2, 1, 3, 3}, s_one[1] = {1};
    higan_params_init(p);
    higan_params_add(p, "fc.weight", HIGAN_PARAM, 2, s_w);
    higan_params_add(p, "fc.bias", HIGAN_PARAM, 1, s_b);
    higan_params_add(p, "conv.weight", HIGAN_PARAM, 4, s_c);
    higan_params_add(p, "bn.running_mean", HIGAN_BUFFER, 1, s_b);
    higan_params_add(p, "bn.num_batches_tracked", HIGAN_BUFFER_I64, 0, NULL);
    higan_params_add(p, "sn.sv0", HIGAN_BUFFER, 1, s_one);
    higan_params_alloc(p);
}
static void fill_store(higan_params *p, uint64_t seed) {
    higan_rng r;
    int64_t i;
    higan_rng_seed(&r, seed);
    higan_rng_fill_normal(&r, p->value, p->n_param, 0, 1);
    higan_rng_fill_normal(&r, p->adam_m, p->n_param, 0, 1);
    higan_rng_fill_uniform(&r, p->adam_v, p->n_param, 0, 1);
    higan_rng_fill_normal(&r, p->buffer, p->n_buffer, 0, 1);
    for (i = 0; i < p->n_ibuffer; ++i) p->ibuffer[i] = (int64_t)(seed * 1000 + 7 + (uint64_t)i);
}
/* Equal over every registered element (padding between tensors is not saved). */
static int same_store(const higan_params *a, const higan_params *b, int with_adam) {
    int i;
    for (i = 0; i < a->count; ++i) {
        const higan_param_entry *e = &a->entries[i];
        size_t n = (size_t)e->numel;
        if (e->kind == HIGAN_PARAM) {
            if (memcmp(a->value + e->offset, b->value + e->offset, n * 4)) return 0;
            if (with_adam && (memcmp(a->adam_m + e->offset, b->adam_m + e->offset, n * 4) ||
                              memcmp(a->adam_v + e->offset, b->adam_v + e->offset, n * 4))) return 0;
        } else if (e->kind == HIGAN_BUFFER) {
            if (memcmp(a->buffer + e->offset, b->buffer + e->offset, n * 4)) return 0;
        } else if (memcmp(a->ibuffer + e->offset, b->ibuffer + e->offset, n * 8)) return 0;
    }
    return 1;
}
static void test_params(void) {
    const char *path = "build/st_params.safetensors";
    higan_params G, D, G2, D2, Q;
    higan_adam optG = higan_adam_default(2e-4f), optG2 = higan_adam_default(1e-3f), optD2 = higan_adam_default(1e-3f);
    higan_safetensors_writer w;
    higan_safetensors st;
    higan_status s;
    const char *e;
    float keep;
    int ok;
    reg_store(&G); fill_store(&G, 1);
    reg_store(&D); fill_store(&D, 2);
    optG.step = 37;
    higan_safetensors_writer_init(&w);
    s = higan_params_add_to_writer(&G, &w, "G.", &optG);
    CHECK(s == HIGAN_OK, "add G with Adam: %s", s ? higan_last_error() : "ok");
    CHECK(higan_params_add_to_writer(&D, &w, "D.", NULL) == HIGAN_OK, "add D without Adam");
    CHECK(w.count == 3 * 3 + 3 + 6, "writer holds G (values, m, v) and D: %d", w.count);
    CHECK(higan_params_add_to_writer(&D, &w, "D.", NULL) == HIGAN_ERR_ARG && w.count == 18,
          "adding D twice fails and leaves the writer as it was: %s", higan_last_error());
    s = higan_safetensors_writer_save(&w, path);
    CHECK(s == HIGAN_OK, "save params: %s", s ? higan_last_error() : "ok");
    higan_safetensors_writer_free(&w);
    if (higan_safetensors_load(&st, path) != HIGAN_OK) { CHECK(0, "load params: %s", higan_last_error()); return; }
    CHECK(higan_safetensors_meta(&st, "G.adam_step") && !strcmp(higan_safetensors_meta(&st, "G.adam_step"), "37"), "adam_step metadata");
    CHECK(higan_safetensors_find(&st, "G.bn.num_batches_tracked") && higan_safetensors_find(&st, "G.bn.num_batches_tracked")->dtype == HIGAN_I64 &&
          higan_safetensors_find(&st, "G.bn.num_batches_tracked")->ndim == 0, "I64 buffer saved as 0-d I64");
    CHECK(higan_safetensors_find(&st, "G.fc.weight.adam_m") && !higan_safetensors_find(&st, "G.bn.running_mean.adam_m") &&
          !higan_safetensors_find(&st, "D.fc.weight.adam_m"), "Adam state only for parameters, only with an optimizer");

    reg_store(&G2);
    reg_store(&D2);
    s = higan_params_load(&G2, &st, "G.", &optG2);
    CHECK(s == HIGAN_OK, "load G with Adam: %s", s ? higan_last_error() : "ok");
    CHECK(same_store(&G, &G2, 1) && optG2.step == 37 && optG2.lr == 1e-3f, "G values, buffers, Adam m/v and step restored bit-exactly (lr kept)");
    s = higan_params_load(&D2, &st, "D.", NULL);
    CHECK(s == HIGAN_OK && same_store(&D, &D2, 0), "load D without Adam: %s", s ? higan_last_error() : "ok");
    higan_params_free(&G2);
    reg_store(&G2);
    s = higan_params_load(&G2, &st, "G.", NULL);
    CHECK(s == HIGAN_OK && same_store(&G, &G2, 0), "load G weights only: Adam tensors ignored: %s", s ? higan_last_error() : "ok");
    /* Adam requested but absent */
    s = higan_params_load(&D2, &st, "D.", &optD2);
    e = higan_last_error();
    CHECK(s == HIGAN_ERR_FORMAT && strstr(e, "D.fc.weight.adam_m") && strstr(e, "D.conv.weight.adam_v") && strstr(e, "D.adam_step"),
          "Adam state missing is reported: %s", e);
    /* everything that can go wrong at once */
    {
        int64_t s_w[2] = {4, 3}, s_b[1] = {3}, s_c[4] = {2, 1, 3, 3};
        higan_params_init(&Q);
        higan_params_add(&Q, "fc.weight", HIGAN_PARAM, 2, s_w);                /* mis-shaped */
        higan_params_add(&Q, "conv.weight", HIGAN_PARAM, 3, s_c);              /* mis-shaped (rank) */
        higan_params_add(&Q, "extra.weight", HIGAN_PARAM, 1, s_b);             /* missing */
        higan_params_add(&Q, "bn.running_mean", HIGAN_BUFFER, 1, s_b);
        higan_params_add(&Q, "bn.num_batches_tracked", HIGAN_BUFFER, 0, NULL); /* wrong dtype */
        higan_params_add(&Q, "sn.sv0", HIGAN_BUFFER, 1, s_b + 0);              /* mis-shaped [3] vs [1] */
        higan_params_alloc(&Q);                                                /* fc.bias: unexpected */
        Q.buffer[0] = 123.0f;
        keep = Q.buffer[0];
        s = higan_params_load(&Q, &st, "G.", NULL);
        e = higan_last_error();
        ok = s == HIGAN_ERR_FORMAT && strstr(e, "G.extra.weight") && strstr(e, "G.fc.bias") &&
             strstr(e, "G.fc.weight (file [3,4], model [4,3])") && strstr(e, "G.conv.weight (file [2,1,3,3], model [2,1,3])") &&
             strstr(e, "G.sn.sv0") && strstr(e, "G.bn.num_batches_tracked") && strstr(e, "missing") &&
             strstr(e, "unexpected") && strstr(e, "mis-shaped");
        CHECK(ok, "load reports every missing, unexpected, mis-shaped, wrong-dtype name: %s", e);
        CHECK(strstr(e, "G.fc.bias.adam_m") != NULL, "Adam state of an unknown tensor is unexpected too");
        CHECK(!strstr(e, "G.bn.running_mean") && !strstr(e, "D."), "valid tensors and other prefixes not reported");
        CHECK(Q.buffer[0] == keep, "nothing loaded on error");
        higan_params_free(&Q);
    }
    /* without a prefix, every tensor of the file belongs to the store */
    s = higan_params_load(&D2, &st, "", NULL);
    CHECK(s == HIGAN_ERR_FORMAT && strstr(higan_last_error(), "unexpected") && strstr(higan_last_error(), "missing"),
          "empty prefix: other stores' tensors are unexpected: %.200s", higan_last_error());
    /* very long lists are cut to fit */
    {
        int i;
        char name[64];
        int64_t s1[1] = {1};
        higan_params_init(&Q);
        for (i = 0; i < 300; ++i) {
            snprintf(name, sizeof name, "generator.block%03d.conv_with_a_long_name.weight", i);
            higan_params_add(&Q, name, HIGAN_PARAM, 1, s1);
        }
        higan_params_alloc(&Q);
        s = higan_params_load(&Q, &st, "G.", NULL);
        e = higan_last_error();
        CHECK(s == HIGAN_ERR_FORMAT && strlen(e) < 1023 && strstr(e, "more)") && strstr(e, "300") &&
              strstr(e, "G.fc.bias") && strstr(e, "G.generator.block000"),
              "long problem lists truncated, every category still shown (%zu chars): %s", strlen(e), e);
        higan_params_free(&Q);
    }
    higan_safetensors_free(&st);
    CHECK(higan_params_load(&D2, &st, "D.", NULL) == HIGAN_ERR_FORMAT, "load from an empty (freed) file reports missing tensors");
    higan_params_free(&G); higan_params_free(&D); higan_params_free(&G2); higan_params_free(&D2);
    remove(path);
}

/* A PyTorch state_dict (Linear + BatchNorm1d); num_batches_tracked is 0-d there. */
static void test_torch_module(void) {
    higan_safetensors st;
    higan_params P, H;
    int64_t s_w[2] = {3, 4}, s_3[1] = {3}, s_1[1] = {1};
    float ref[12];
    int i, j;
    higan_status s;
    const char *pre[2] = {"net.", "net_f16."};
    if (!check_open_fixture(&st, "st_module.safetensors")) return;
    for (j = 0; j < 2; ++j) {
        higan_params *p = j ? &H : &P;
        higan_params_init(p);
        higan_params_add(p, "fc.weight", HIGAN_PARAM, 2, s_w);
        higan_params_add(p, "fc.bias", HIGAN_PARAM, 1, s_3);
        higan_params_add(p, "bn.weight", HIGAN_PARAM, 1, s_3);
        higan_params_add(p, "bn.bias", HIGAN_PARAM, 1, s_3);
        higan_params_add(p, "bn.running_mean", HIGAN_BUFFER, 1, s_3);
        higan_params_add(p, "bn.running_var", HIGAN_BUFFER, 1, s_3);
        higan_params_add(p, "bn.num_batches_tracked", HIGAN_BUFFER_I64, 1, s_1);   /* [1] vs torch's [] */
        higan_params_alloc(p);
        s = higan_params_load(p, &st, pre[j], NULL);
        CHECK(s == HIGAN_OK, "load torch state_dict with prefix %s: %s", pre[j], s ? higan_last_error() : "ok");
    }
    CHECK(higan_params_idata(&P, 6)[0] == 3, "num_batches_tracked = 3 (%lld)", (long long)higan_params_idata(&P, 6)[0]);
    CHECK(higan_safetensors_read_f32(&st, "net.fc.weight", ref, 12) == HIGAN_OK && !memcmp(ref, higan_params_data(&P, 0), sizeof ref),
          "fc.weight loaded exactly");
    CHECK(higan_safetensors_read_f32(&st, "net.bn.running_var", ref, 3) == HIGAN_OK && !memcmp(ref, higan_params_data(&P, 5), 12),
          "running_var loaded exactly");
    CHECK(higan_safetensors_read_f32(&st, "net_f16.fc.weight", ref, 12) == HIGAN_OK && !memcmp(ref, higan_params_data(&H, 0), sizeof ref),
          "F16 weights converted on load");
    for (i = 0; i < 12; ++i) ref[i] = higan_params_data(&P, 0)[i];
    check_close("F16 copy close to the F32 weights", higan_params_data(&H, 0), ref, 12, 1e-3f, 1e-3f);
    higan_params_free(&P);
    higan_params_free(&H);
    higan_safetensors_free(&st);
}

int main(void) {
    test_dtypes();
    test_roundtrip();
    test_half_exhaustive();
    test_fixtures();
    test_malformed();
    test_truncation_and_fuzz();
    test_atomic_save();
    test_params();
    test_torch_module();
    return check_finish();
}
