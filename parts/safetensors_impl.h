/* ---- safetensors: reader, writer, parameter-store save/load ---------------------------
   File layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON header (padded
   with spaces), then the data section. Each tensor's data_offsets [begin, end) are relative
   to the data section, and together the tensors must cover it exactly.
   The reader never trusts the file: every length, offset and count is checked before use,
   and all multi-byte values are assembled from bytes (data may be unaligned, host order
   does not matter). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIGAN__ST_MAX_HEADER 100000000ull   /* 100 MB, the reference (Rust) reader's limit */
#define HIGAN__ST_NDTYPES 7

static const char *const higan__st_dtype_names[HIGAN__ST_NDTYPES] = {
    "F32", "F16", "BF16", "I64", "I32", "I16", "U8"};
static const size_t higan__st_dtype_sizes[HIGAN__ST_NDTYPES] = {4, 2, 2, 8, 4, 2, 1};

HIGAN_DEF const char *higan_dtype_name(higan_dtype d) {
    return ((int)d >= 0 && (int)d < HIGAN__ST_NDTYPES) ? higan__st_dtype_names[(int)d] : "invalid";
}
HIGAN_DEF size_t higan_dtype_size(higan_dtype d) {
    return ((int)d >= 0 && (int)d < HIGAN__ST_NDTYPES) ? higan__st_dtype_sizes[(int)d] : 0;
}
static int higan__st_is_float(higan_dtype d) { return d == HIGAN_F32 || d == HIGAN_F16 || d == HIGAN_BF16; }

/* ---- small helpers ----------------------------------------------------------------- */
static char *higan__st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *r = (char *)HIGAN_MALLOC(n);
    if (r) memcpy(r, s, n);
    return r;
}
static uint16_t higan__st_rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t higan__st_rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t higan__st_rd64(const unsigned char *p) {
    return (uint64_t)higan__st_rd32(p) | ((uint64_t)higan__st_rd32(p + 4) << 32);
}
static int higan__st_host_le(void) {
    uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}
static float higan__st_f32_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
/* IEEE half -> float, exact for every value (subnormals, +-0, inf, NaN payload kept). */
static float higan__st_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (uint32_t)(h >> 10) & 0x1f, man = h & 0x3ffu;
    if (exp == 0) {   /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    if (exp == 31) return higan__st_f32_bits(sign | 0x7f800000u | (man << 13));
    return higan__st_f32_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

/* Strict UTF-8 check (no overlongs, no surrogates, <= U+10FFFF). Returns the index of the
   first bad byte, or n when valid. */
static size_t higan__st_utf8_check(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len, k;
        uint32_t cp;
        if (c < 0x80) { ++i; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1f; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0f; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return i;
        if (n - i < len) return i;
        for (k = 1; k < len; ++k) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += len;
    }
    return n;
}

/* Growable string (headers, error lists). Allocation failure is sticky in oom. */
typedef struct { char *s; size_t len, cap; int oom; } higan__st_sb;
static void higan__st_sb_put(higan__st_sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *grown;
        while (cap < b->len + n + 1) cap *= 2;
        grown = (char *)HIGAN_REALLOC(b->s, cap);
        if (!grown) { b->oom = 1; return; }
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void higan__st_sb_str(higan__st_sb *b, const char *s) { higan__st_sb_put(b, s, strlen(s)); }
static void higan__st_sb_printf(higan__st_sb *b, const char *fmt, ...) {
    char tmp[512];
    int n;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    higan__st_sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}
/* JSON string literal; the bytes are already valid UTF-8, so only " \ and controls escape. */
static void higan__st_sb_json(higan__st_sb *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    higan__st_sb_put(b, "\"", 1);
    for (; *p; ++p) {
        char e[8];
        switch (*p) {
        case '"': higan__st_sb_put(b, "\\\"", 2); break;
        case '\\': higan__st_sb_put(b, "\\\\", 2); break;
        case '\b': higan__st_sb_put(b, "\\b", 2); break;
        case '\f': higan__st_sb_put(b, "\\f", 2); break;
        case '\n': higan__st_sb_put(b, "\\n", 2); break;
        case '\r': higan__st_sb_put(b, "\\r", 2); break;
        case '\t': higan__st_sb_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                e[0] = '\\'; e[1] = 'u'; e[2] = '0'; e[3] = '0';
                e[4] = hex[*p >> 4]; e[5] = hex[*p & 15];
                higan__st_sb_put(b, e, 6);
            } else {
                higan__st_sb_put(b, (const char *)p, 1);
            }
        }
    }
    higan__st_sb_put(b, "\"", 1);
}
static void higan__st_sb_shape(higan__st_sb *b, int ndim, const int64_t *shape) {
    int d;
    higan__st_sb_put(b, "[", 1);
    for (d = 0; d < ndim; ++d) higan__st_sb_printf(b, d ? ",%lld" : "%lld", (long long)shape[d]);
    higan__st_sb_put(b, "]", 1);
}

/* ---- JSON header parser -------------------------------------------------------------
   Recursive descent over exactly the safetensors schema: a top-level object of
   name -> {"dtype": str, "shape": [uint...], "data_offsets": [uint, uint]} plus an
   optional "__metadata__": {str: str}. No generic recursion, so no depth limit is needed. */
typedef struct {
    const unsigned char *s;   /* header bytes */
    size_t n, i;              /* length, cursor */
    size_t data_size;         /* bytes in the data section (for offset range checks) */
    char err[400];
} higan__st_jp;

static int higan__st_jfail(higan__st_jp *j, const char *fmt, ...) {
    if (!j->err[0]) {
        int k = snprintf(j->err, sizeof j->err, "header JSON, byte %llu: ", (unsigned long long)j->i);
        va_list ap;
        if (k < 0 || (size_t)k >= sizeof j->err) k = 0;
        va_start(ap, fmt);
        vsnprintf(j->err + k, sizeof j->err - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return 0;
}
static void higan__st_ws(higan__st_jp *j) {
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r')) ++j->i;
}
static int higan__st_peek(higan__st_jp *j) { higan__st_ws(j); return j->i < j->n ? j->s[j->i] : -1; }
static const char *higan__st_found(higan__st_jp *j, char *buf) {
    int c = j->i < j->n ? j->s[j->i] : -1;
    if (c < 0) return "end of header";
    if (c >= 0x21 && c < 0x7f) { buf[0] = '\''; buf[1] = (char)c; buf[2] = '\''; buf[3] = 0; }
    else snprintf(buf, 8, "0x%02x", (unsigned)c);
    return buf;
}
static int higan__st_expect(higan__st_jp *j, int c, const char *where) {
    char f[8];
    if (higan__st_peek(j) != c) return higan__st_jfail(j, "expected '%c' %s, found %s", c, where, higan__st_found(j, f));
    ++j->i;
    return 1;
}
static int higan__st_hex4(const unsigned char *p, uint32_t *out) {
    int k;
    uint32_t v = 0;
    for (k = 0; k < 4; ++k) {
        int c = p[k], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return 1;
}
/* Parses a string literal into a new NUL-terminated UTF-8 string (*out, HIGAN_MALLOC). */
static int higan__st_string(higan__st_jp *j, char **out, const char *what) {
    size_t k, end;
    char *o, f[8];
    size_t w = 0;
    *out = NULL;
    if (higan__st_peek(j) != '"') return higan__st_jfail(j, "expected a string (%s), found %s", what, higan__st_found(j, f));
    ++j->i;
    /* find the closing quote; a backslash always consumes the next byte */
    for (k = j->i; k < j->n && j->s[k] != '"'; k += (j->s[k] == '\\') ? 2 : 1) {}
    if (k >= j->n) return higan__st_jfail(j, "unterminated string (%s)", what);
    end = k;
    o = (char *)HIGAN_MALLOC(end - j->i + 1);   /* decoding never grows a string */
    if (!o) return higan__st_jfail(j, "out of memory");
    while (j->i < end) {
        unsigned c = j->s[j->i];
        uint32_t cp, lo;
        if (c < 0x20) { HIGAN_FREE(o); return higan__st_jfail(j, "raw control character 0x%02x in string (%s)", c, what); }
        if (c != '\\') { o[w++] = (char)c; ++j->i; continue; }
        c = j->s[j->i + 1];   /* exists: the scan above stopped only after a complete escape */
        switch (c) {
        case '"': o[w++] = '"'; j->i += 2; continue;
        case '\\': o[w++] = '\\'; j->i += 2; continue;
        case '/': o[w++] = '/'; j->i += 2; continue;
        case 'b': o[w++] = '\b'; j->i += 2; continue;
        case 'f': o[w++] = '\f'; j->i += 2; continue;
        case 'n': o[w++] = '\n'; j->i += 2; continue;
        case 'r': o[w++] = '\r'; j->i += 2; continue;
        case 't': o[w++] = '\t'; j->i += 2; continue;
        case 'u': break;
        default:
            HIGAN_FREE(o);
            return higan__st_jfail(j, "invalid escape '\\%c' in string (%s)", (c >= 0x21 && c < 0x7f) ? (char)c : '?', what);
        }
        if (end - j->i < 6 || !higan__st_hex4(j->s + j->i + 2, &cp)) {
            HIGAN_FREE(o);
            return higan__st_jfail(j, "\\u needs 4 hex digits (%s)", what);
        }
        j->i += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) { HIGAN_FREE(o); return higan__st_jfail(j, "unpaired low surrogate \\u%04X (%s)", (unsigned)cp, what); }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - j->i < 6 || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u' ||
                !higan__st_hex4(j->s + j->i + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                HIGAN_FREE(o);
                return higan__st_jfail(j, "high surrogate \\u%04X not followed by a low surrogate (%s)", (unsigned)cp, what);
            }
            j->i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) { HIGAN_FREE(o); return higan__st_jfail(j, "\\u0000 is not allowed (%s)", what); }
        if (cp < 0x80) o[w++] = (char)cp;
        else if (cp < 0x800) { o[w++] = (char)(0xC0 | (cp >> 6)); o[w++] = (char)(0x80 | (cp & 0x3f)); }
        else if (cp < 0x10000) {
            o[w++] = (char)(0xE0 | (cp >> 12)); o[w++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            o[w++] = (char)(0x80 | (cp & 0x3f));
        } else {
            o[w++] = (char)(0xF0 | (cp >> 18)); o[w++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            o[w++] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[w++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    o[w] = 0;
    j->i = end + 1;
    *out = o;
    return 1;
}
/* Non-negative integer <= INT64_MAX. */
static int higan__st_uint(higan__st_jp *j, uint64_t *out, const char *what) {
    const uint64_t max = (uint64_t)INT64_MAX;
    uint64_t v = 0;
    int c = higan__st_peek(j);
    char f[8];
    if (c == '-') return higan__st_jfail(j, "%s must be non-negative", what);
    if (c < '0' || c > '9') return higan__st_jfail(j, "expected an integer in %s, found %s", what, higan__st_found(j, f));
    if (c == '0' && j->i + 1 < j->n && j->s[j->i + 1] >= '0' && j->s[j->i + 1] <= '9')
        return higan__st_jfail(j, "leading zero in %s", what);
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') {
        uint64_t d = (uint64_t)(j->s[j->i] - '0');
        if (v > (max - d) / 10) return higan__st_jfail(j, "%s value too large", what);
        v = v * 10 + d;
        ++j->i;
    }
    if (j->i < j->n && (j->s[j->i] == '.' || j->s[j->i] == 'e' || j->s[j->i] == 'E'))
        return higan__st_jfail(j, "%s must be an integer", what);
    *out = v;
    return 1;
}
static int higan__st_uint_array(higan__st_jp *j, uint64_t *out, int max, int *count, const char *what) {
    char f[8];
    *count = 0;
    if (!higan__st_expect(j, '[', what)) return 0;
    if (higan__st_peek(j) == ']') { ++j->i; return 1; }
    for (;;) {
        int c;
        if (*count == max) return higan__st_jfail(j, "%s has more than %d entries", what, max);
        if (!higan__st_uint(j, &out[*count], what)) return 0;
        ++*count;
        c = higan__st_peek(j);
        ++j->i;
        if (c == ']') return 1;
        if (c != ',') { --j->i; return higan__st_jfail(j, "expected ',' or ']' in %s, found %s", what, higan__st_found(j, f)); }
    }
}
static int higan__st_parse_dtype(const char *s, higan_dtype *d) {
    int k;
    static const char *const unsupported[] = {"F64", "BOOL", "I8", "U16", "U32", "U64", "F8_E4M3",
                                              "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
                                              "C64", "C128", 0};
    for (k = 0; k < HIGAN__ST_NDTYPES; ++k)
        if (!strcmp(s, higan__st_dtype_names[k])) { *d = (higan_dtype)k; return 1; }
    for (k = 0; unsupported[k]; ++k)
        if (!strcmp(s, unsupported[k])) return 0;
    return -1;
}
/* One tensor entry; t->name is set by the caller (and freed with st on failure). */
static int higan__st_tensor(higan__st_jp *j, higan_st_tensor *t) {
    int have_dtype = 0, have_shape = 0, have_off = 0, n, d;
    uint64_t shape[HIGAN_ST_MAX_DIMS], off[2], numel = 1;
    char f[8];
    if (!higan__st_expect(j, '{', "to open the tensor entry")) return 0;
    if (higan__st_peek(j) == '}') ++j->i;
    else for (;;) {
        char *key;
        int c, field;
        if (!higan__st_string(j, &key, "field name")) return 0;
        field = !strcmp(key, "dtype") ? 0 : !strcmp(key, "shape") ? 1 : !strcmp(key, "data_offsets") ? 2 : -1;
        if (field < 0) {
            higan__st_jfail(j, "tensor '%s': unknown field '%s'", t->name, key);
            HIGAN_FREE(key);
            return 0;
        }
        HIGAN_FREE(key);
        if ((field == 0 && have_dtype) || (field == 1 && have_shape) || (field == 2 && have_off))
            return higan__st_jfail(j, "tensor '%s': duplicate field", t->name);
        if (!higan__st_expect(j, ':', "after a field name")) return 0;
        if (field == 0) {
            char *ds;
            int r;
            if (!higan__st_string(j, &ds, "dtype")) return 0;
            r = higan__st_parse_dtype(ds, &t->dtype);
            if (r <= 0) {
                higan__st_jfail(j, "tensor '%s': %s dtype '%s' (supported: F32 F16 BF16 I64 I32 I16 U8)",
                                t->name, r == 0 ? "unsupported" : "unknown", ds);
                HIGAN_FREE(ds);
                return 0;
            }
            HIGAN_FREE(ds);
            have_dtype = 1;
        } else if (field == 1) {
            if (!higan__st_uint_array(j, shape, HIGAN_ST_MAX_DIMS, &n, "shape")) return 0;
            t->ndim = n;
            for (d = 0; d < n; ++d) {
                /* overflow: numel must stay <= INT64_MAX */
                if (shape[d] != 0 && numel > (uint64_t)INT64_MAX / shape[d])
                    return higan__st_jfail(j, "tensor '%s': shape element count overflows", t->name);
                numel *= shape[d];
                t->shape[d] = (int64_t)shape[d];
            }
            have_shape = 1;
        } else {
            if (!higan__st_uint_array(j, off, 2, &n, "data_offsets")) return 0;
            if (n != 2) return higan__st_jfail(j, "tensor '%s': data_offsets needs 2 entries, has %d", t->name, n);
            if (off[0] > off[1])
                return higan__st_jfail(j, "tensor '%s': data_offsets begin %llu > end %llu", t->name,
                                       (unsigned long long)off[0], (unsigned long long)off[1]);
            if (off[1] > (uint64_t)j->data_size)
                return higan__st_jfail(j, "tensor '%s': data_offsets end %llu is past the data section (%llu bytes)",
                                       t->name, (unsigned long long)off[1], (unsigned long long)j->data_size);
            t->begin = (size_t)off[0];
            t->end = (size_t)off[1];
            have_off = 1;
        }
        c = higan__st_peek(j);
        ++j->i;
        if (c == '}') break;
        if (c != ',') { --j->i; return higan__st_jfail(j, "expected ',' or '}' in tensor '%s', found %s", t->name, higan__st_found(j, f)); }
    }
    if (!have_dtype || !have_shape || !have_off)
        return higan__st_jfail(j, "tensor '%s': missing %s", t->name,
                               !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    t->numel = (int64_t)numel;
    /* byte count: numel * size must not overflow and must match the offsets */
    if (numel > (uint64_t)INT64_MAX / higan_dtype_size(t->dtype))
        return higan__st_jfail(j, "tensor '%s': %llu elements of %s do not fit in 2^63 bytes", t->name,
                               (unsigned long long)numel, higan_dtype_name(t->dtype));
    if ((uint64_t)(t->end - t->begin) != numel * higan_dtype_size(t->dtype))
        return higan__st_jfail(j, "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s with %llu elements needs %llu",
                               t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                               (unsigned long long)(t->end - t->begin), higan_dtype_name(t->dtype),
                               (unsigned long long)numel, (unsigned long long)(numel * higan_dtype_size(t->dtype)));
    return 1;
}
static int higan__st_metadata(higan__st_jp *j, higan_safetensors *st) {
    int cap = 0;
    char f[8];
    if (!higan__st_expect(j, '{', "to open __metadata__")) return 0;
    if (higan__st_peek(j) == '}') { ++j->i; return 1; }
    for (;;) {
        char *k, *v;
        int c;
        if (!higan__st_string(j, &k, "metadata key")) return 0;
        if (!higan__st_expect(j, ':', "after a metadata key")) { HIGAN_FREE(k); return 0; }
        if (higan__st_peek(j) != '"') {
            higan__st_jfail(j, "metadata value of '%s' must be a string", k);
            HIGAN_FREE(k);
            return 0;
        }
        if (!higan__st_string(j, &v, "metadata value")) { HIGAN_FREE(k); return 0; }
        if (st->meta_count == cap) {
            int nc = cap ? 2 * cap : 8;
            char **nk = (char **)HIGAN_REALLOC(st->meta_keys, (size_t)nc * sizeof(char *));
            char **nv;
            if (nk) st->meta_keys = nk;
            nv = nk ? (char **)HIGAN_REALLOC(st->meta_values, (size_t)nc * sizeof(char *)) : NULL;
            if (nv) st->meta_values = nv;
            if (!nk || !nv) { HIGAN_FREE(k); HIGAN_FREE(v); return higan__st_jfail(j, "out of memory"); }
            cap = nc;
        }
        st->meta_keys[st->meta_count] = k;
        st->meta_values[st->meta_count] = v;
        ++st->meta_count;
        c = higan__st_peek(j);
        ++j->i;
        if (c == '}') return 1;
        if (c != ',') { --j->i; return higan__st_jfail(j, "expected ',' or '}' in __metadata__, found %s", higan__st_found(j, f)); }
    }
}
static int higan__st_header(higan__st_jp *j, higan_safetensors *st) {
    int cap = 0, have_meta = 0;
    char f[8];
    if (j->n == 0 || j->s[0] != '{') return higan__st_jfail(j, "the header must start with '{', found %s", higan__st_found(j, f));
    ++j->i;
    if (higan__st_peek(j) == '}') ++j->i;
    else for (;;) {
        char *name;
        int c;
        if (!higan__st_string(j, &name, "tensor name")) return 0;
        if (!higan__st_expect(j, ':', "after a tensor name")) { HIGAN_FREE(name); return 0; }
        if (!strcmp(name, "__metadata__")) {
            HIGAN_FREE(name);
            if (have_meta) return higan__st_jfail(j, "duplicate __metadata__");
            have_meta = 1;
            if (!higan__st_metadata(j, st)) return 0;
        } else {
            if (st->count == cap) {
                int nc = cap ? 2 * cap : 16;
                higan_st_tensor *nt = (higan_st_tensor *)HIGAN_REALLOC(st->tensors, (size_t)nc * sizeof *nt);
                if (!nt) { HIGAN_FREE(name); return higan__st_jfail(j, "out of memory"); }
                st->tensors = nt;
                cap = nc;
            }
            memset(&st->tensors[st->count], 0, sizeof st->tensors[0]);
            st->tensors[st->count].name = name;   /* owned by st from here */
            if (!higan__st_tensor(j, &st->tensors[st->count++])) return 0;
        }
        c = higan__st_peek(j);
        ++j->i;
        if (c == '}') break;
        if (c != ',') { --j->i; return higan__st_jfail(j, "expected ',' or '}' after an entry, found %s", higan__st_found(j, f)); }
    }
    higan__st_ws(j);
    if (j->i != j->n) return higan__st_jfail(j, "unexpected bytes after the header object (only space padding may follow)");
    return 1;
}

/* ---- reader ---------------------------------------------------------------------------- */
static int higan__st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}
static int higan__st_cmp_off(const void *a, const void *b) {
    const higan_st_tensor *x = *(const higan_st_tensor *const *)a, *y = *(const higan_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}
HIGAN_DEF void higan_safetensors_free(higan_safetensors *st) {
    int i;
    if (!st) return;
    for (i = 0; i < st->count; ++i) HIGAN_FREE(st->tensors[i].name);
    for (i = 0; i < st->meta_count; ++i) { HIGAN_FREE(st->meta_keys[i]); HIGAN_FREE(st->meta_values[i]); }
    HIGAN_FREE(st->tensors);
    HIGAN_FREE(st->meta_keys);
    HIGAN_FREE(st->meta_values);
    HIGAN_FREE(st->file);
    memset(st, 0, sizeof *st);
}
/* Sorted copy of n string pointers: the first duplicate, or NULL. (*oom set on failure.) */
static const char *higan__st_find_dup(const char *const *names, int n, int stride_is_tensor,
                                      const higan_st_tensor *ts, int *oom) {
    const char **v;
    const char *dup = NULL;
    int i;
    *oom = 0;
    if (n < 2) return NULL;
    v = (const char **)HIGAN_MALLOC((size_t)n * sizeof *v);
    if (!v) { *oom = 1; return NULL; }
    for (i = 0; i < n; ++i) v[i] = stride_is_tensor ? ts[i].name : names[i];
    qsort(v, (size_t)n, sizeof *v, higan__st_cmp_str);
    for (i = 1; i < n && !dup; ++i) if (!strcmp(v[i - 1], v[i])) dup = v[i];
    HIGAN_FREE(v);
    return dup;   /* points into st's own strings */
}
/* Takes ownership of buf (HIGAN_MALLOC'd, size bytes). src names the input in errors. */
static higan_status higan__st_parse_owned(higan_safetensors *st, unsigned char *buf, size_t size, const char *src) {
    char msg[600];
    higan__st_jp j;
    uint64_t hlen;
    const char *dup;
    const higan_st_tensor **order = NULL;
    size_t bad, pos;
    int i, oom;
    memset(st, 0, sizeof *st);
    st->file = buf;
    st->file_size = size;
    msg[0] = 0;
    if (size < 8) {
        snprintf(msg, sizeof msg, "file is %llu bytes, too short for the 8-byte header length", (unsigned long long)size);
        goto fail;
    }
    hlen = higan__st_rd64(buf);
    if (hlen == 0) { snprintf(msg, sizeof msg, "header length is 0"); goto fail; }
    if (hlen > HIGAN__ST_MAX_HEADER) {
        snprintf(msg, sizeof msg, "header length %llu exceeds the 100 MB limit", (unsigned long long)hlen);
        goto fail;
    }
    if (hlen > (uint64_t)(size - 8)) {
        snprintf(msg, sizeof msg, "header length %llu runs past the end of the file (%llu bytes)",
                 (unsigned long long)hlen, (unsigned long long)size);
        goto fail;
    }
    bad = higan__st_utf8_check(buf + 8, (size_t)hlen);
    if (bad != (size_t)hlen) {
        snprintf(msg, sizeof msg, "header is not valid UTF-8 (byte %llu)", (unsigned long long)bad);
        goto fail;
    }
    st->data = buf + 8 + (size_t)hlen;
    memset(&j, 0, sizeof j);
    j.s = buf + 8;
    j.n = (size_t)hlen;
    j.data_size = size - 8 - (size_t)hlen;
    if (!higan__st_header(&j, st)) { snprintf(msg, sizeof msg, "%s", j.err); goto fail; }
    dup = higan__st_find_dup(NULL, st->count, 1, st->tensors, &oom);
    if (!oom && dup) { snprintf(msg, sizeof msg, "duplicate tensor name '%s'", dup); goto fail; }
    if (!oom) dup = higan__st_find_dup((const char *const *)st->meta_keys, st->meta_count, 0, NULL, &oom);
    if (!oom && dup) { snprintf(msg, sizeof msg, "duplicate metadata key '%s'", dup); goto fail; }
    if (oom) { snprintf(msg, sizeof msg, "out of memory"); goto fail; }
    /* the tensors must tile the data section: no gaps, no overlaps, nothing left over */
    if (st->count > 0) {
        order = (const higan_st_tensor **)HIGAN_MALLOC((size_t)st->count * sizeof *order);
        if (!order) { snprintf(msg, sizeof msg, "out of memory"); goto fail; }
        for (i = 0; i < st->count; ++i) order[i] = &st->tensors[i];
        qsort(order, (size_t)st->count, sizeof *order, higan__st_cmp_off);
    }
    pos = 0;
    for (i = 0; i < st->count; ++i) {
        if (order[i]->begin > pos) {
            snprintf(msg, sizeof msg, "data bytes [%llu, %llu) belong to no tensor (gap before '%s')",
                     (unsigned long long)pos, (unsigned long long)order[i]->begin, order[i]->name);
            goto fail;
        }
        if (order[i]->begin < pos) {
            snprintf(msg, sizeof msg, "tensor '%s' (bytes [%llu, %llu)) overlaps tensor '%s'", order[i]->name,
                     (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end, order[i - 1]->name);
            goto fail;
        }
        pos = order[i]->end;
    }
    if (pos != (size_t)j.data_size) {
        snprintf(msg, sizeof msg, "data section has %llu bytes but the tensors cover %llu",
                 (unsigned long long)j.data_size, (unsigned long long)pos);
        goto fail;
    }
    HIGAN_FREE(order);
    return HIGAN_OK;
fail:
    HIGAN_FREE(order);
    higan_safetensors_free(st);
    return higan__error(HIGAN_ERR_FORMAT, "safetensors %s: %s", src, msg);
}
HIGAN_DEF higan_status higan_safetensors_parse(higan_safetensors *st, const void *buf, size_t size) {
    unsigned char *copy;
    if (!st || (!buf && size)) return higan__error(HIGAN_ERR_ARG, "safetensors_parse: NULL argument");
    copy = (unsigned char *)HIGAN_MALLOC(size ? size : 1);
    if (!copy) { memset(st, 0, sizeof *st); return higan__error(HIGAN_ERR_NOMEM, "safetensors_parse: cannot allocate %llu bytes", (unsigned long long)size); }
    if (size) memcpy(copy, buf, size);
    return higan__st_parse_owned(st, copy, size, "buffer");
}
HIGAN_DEF higan_status higan_safetensors_load(higan_safetensors *st, const char *path) {
    FILE *f;
    unsigned char *buf;
    size_t cap = 1 << 16, len = 0;
    long hint;
    if (!st) return higan__error(HIGAN_ERR_ARG, "safetensors_load: NULL argument");
    memset(st, 0, sizeof *st);
    if (!path) return higan__error(HIGAN_ERR_ARG, "safetensors_load: NULL path");
    f = fopen(path, "rb");
    if (!f) return higan__error(HIGAN_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    /* The size is only a hint (ftell gives LONG_MAX for a directory on Linux): read until
       EOF, starting from the hinted size when it is plausible and can be allocated. */
    buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (hint = ftell(f)) >= 0 && hint < LONG_MAX &&
        (unsigned long)hint < (size_t)-1 / 4 && (size_t)hint + 1 > cap) {
        buf = (unsigned char *)HIGAN_MALLOC((size_t)hint + 1);
        if (buf) cap = (size_t)hint + 1;
    }
    rewind(f);
    if (!buf) buf = (unsigned char *)HIGAN_MALLOC(cap);
    if (!buf) { fclose(f); return higan__error(HIGAN_ERR_NOMEM, "cannot allocate %llu bytes to read '%s'", (unsigned long long)cap, path); }
    for (;;) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len < cap) break;
        {
            unsigned char *grown = (unsigned char *)HIGAN_REALLOC(buf, cap * 2);
            if (!grown) { HIGAN_FREE(buf); fclose(f); return higan__error(HIGAN_ERR_NOMEM, "out of memory reading '%s'", path); }
            buf = grown;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        int e = errno;
        HIGAN_FREE(buf);
        fclose(f);
        return higan__error(HIGAN_ERR_IO, "cannot read '%s': %s", path, strerror(e));
    }
    fclose(f);
    return higan__st_parse_owned(st, buf, len, path);
}
HIGAN_DEF const higan_st_tensor *higan_safetensors_find(const higan_safetensors *st, const char *name) {
    int i;
    if (!st || !name) return NULL;
    for (i = 0; i < st->count; ++i) if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}
HIGAN_DEF const char *higan_safetensors_meta(const higan_safetensors *st, const char *key) {
    int i;
    if (!st || !key) return NULL;
    for (i = 0; i < st->meta_count; ++i) if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}
static higan_status higan__st_lookup(const higan_safetensors *st, const char *name, int64_t numel,
                                     const void *out, const higan_st_tensor **t) {
    if (!st || !name || (!out && numel > 0)) return higan__error(HIGAN_ERR_ARG, "safetensors read: NULL argument");
    *t = higan_safetensors_find(st, name);
    if (!*t) return higan__error(HIGAN_ERR_ARG, "safetensors: no tensor named '%s'", name);
    if ((*t)->numel != numel)
        return higan__error(HIGAN_ERR_FORMAT, "safetensors: tensor '%s' has %lld elements, expected %lld",
                            name, (long long)(*t)->numel, (long long)numel);
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_safetensors_read_f32(const higan_safetensors *st, const char *name,
                                                  float *out, int64_t numel) {
    const higan_st_tensor *t;
    const unsigned char *p;
    int64_t i;
    higan_status s = higan__st_lookup(st, name, numel, out, &t);
    if (s != HIGAN_OK) return s;
    p = st->data + t->begin;
    switch (t->dtype) {
    case HIGAN_F32: for (i = 0; i < numel; ++i) out[i] = higan__st_f32_bits(higan__st_rd32(p + 4 * i)); break;
    case HIGAN_F16: for (i = 0; i < numel; ++i) out[i] = higan__st_half_to_float(higan__st_rd16(p + 2 * i)); break;
    case HIGAN_BF16: for (i = 0; i < numel; ++i) out[i] = higan__st_f32_bits((uint32_t)higan__st_rd16(p + 2 * i) << 16); break;
    case HIGAN_I64: for (i = 0; i < numel; ++i) out[i] = (float)(int64_t)higan__st_rd64(p + 8 * i); break;
    case HIGAN_I32: for (i = 0; i < numel; ++i) out[i] = (float)(int32_t)higan__st_rd32(p + 4 * i); break;
    case HIGAN_I16: for (i = 0; i < numel; ++i) out[i] = (float)(int16_t)higan__st_rd16(p + 2 * i); break;
    case HIGAN_U8: for (i = 0; i < numel; ++i) out[i] = (float)p[i]; break;
    }
    return HIGAN_OK;
}
HIGAN_DEF higan_status higan_safetensors_read_i64(const higan_safetensors *st, const char *name,
                                                  int64_t *out, int64_t numel) {
    const higan_st_tensor *t;
    const unsigned char *p;
    int64_t i;
    higan_status s = higan__st_lookup(st, name, numel, out, &t);
    if (s != HIGAN_OK) return s;
    p = st->data + t->begin;
    switch (t->dtype) {
    case HIGAN_I64: for (i = 0; i < numel; ++i) out[i] = (int64_t)higan__st_rd64(p + 8 * i); break;
    case HIGAN_I32: for (i = 0; i < numel; ++i) out[i] = (int32_t)higan__st_rd32(p + 4 * i); break;
    case HIGAN_I16: for (i = 0; i < numel; ++i) out[i] = (int16_t)higan__st_rd16(p + 2 * i); break;
    case HIGAN_U8: for (i = 0; i < numel; ++i) out[i] = p[i]; break;
    default:
        return higan__error(HIGAN_ERR_FORMAT, "safetensors: tensor '%s' has dtype %s, expected an integer dtype",
                            name, higan_dtype_name(t->dtype));
    }
    return HIGAN_OK;
}

/* ---- writer ------------------------------------------------------------------------------ */
HIGAN_DEF void higan_safetensors_writer_init(higan_safetensors_writer *w) { memset(w, 0, sizeof *w); }
HIGAN_DEF void higan_safetensors_writer_free(higan_safetensors_writer *w) {
    int i;
    if (!w) return;
    for (i = 0; i < w->count; ++i) HIGAN_FREE(w->entries[i].name);
    for (i = 0; i < w->meta_count; ++i) { HIGAN_FREE(w->meta_keys[i]); HIGAN_FREE(w->meta_values[i]); }
    HIGAN_FREE(w->entries);
    HIGAN_FREE(w->meta_keys);
    HIGAN_FREE(w->meta_values);
    memset(w, 0, sizeof *w);
}
/* Bytes of an entry; the shape was validated by writer_add. */
static uint64_t higan__st_entry_bytes(const higan_st_entry *e) {
    uint64_t n = 1;
    int d;
    for (d = 0; d < e->ndim; ++d) n *= (uint64_t)e->shape[d];
    return n * higan_dtype_size(e->dtype);
}
HIGAN_DEF higan_status higan_safetensors_writer_add(higan_safetensors_writer *w, const char *name,
        higan_dtype dtype, int ndim, const int64_t *shape, const void *data) {
    higan_st_entry *e;
    uint64_t numel = 1;
    int d, i;
    if (!w || !name) return higan__error(HIGAN_ERR_ARG, "safetensors writer: NULL argument");
    if (higan_dtype_size(dtype) == 0) return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > HIGAN_ST_MAX_DIMS || (ndim > 0 && !shape))
        return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': bad ndim %d", name, ndim);
    for (d = 0; d < ndim; ++d) {
        if (shape[d] < 0) return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': negative dimension", name);
        if (shape[d] && numel > (uint64_t)(INT64_MAX / 8) / (uint64_t)shape[d])
            return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': shape too large", name);
        numel *= (uint64_t)shape[d];
    }
    if (!data && numel > 0) return higan__error(HIGAN_ERR_ARG, "safetensors writer: '%s': NULL data", name);
    if (!strcmp(name, "__metadata__")) return higan__error(HIGAN_ERR_ARG, "safetensors writer: the name '__metadata__' is reserved");
    if (higan__st_utf8_check((const unsigned char *)name, strlen(name)) != strlen(name))
        return higan__error(HIGAN_ERR_ARG, "safetensors writer: tensor name '%s' is not valid UTF-8", name);
    for (i = 0; i < w->count; ++i)
        if (!strcmp(w->entries[i].name, name)) return higan__error(HIGAN_ERR_ARG, "safetensors writer: duplicate tensor name '%s'", name);
    if (w->count == w->capacity) {
        int nc = w->capacity ? 2 * w->capacity : 32;
        higan_st_entry *ne = (higan_st_entry *)HIGAN_REALLOC(w->entries, (size_t)nc * sizeof *ne);
        if (!ne) return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory");
        w->entries = ne;
        w->capacity = nc;
    }
    e = &w->entries[w->count];
    memset(e, 0, sizeof *e);
    if (!(e->name = higan__st_strdup(name))) return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    for (d = 0; d < ndim; ++d) e->shape[d] = shape[d];
    e->data = data;
    ++w->count;
    return HIGAN_OK;
}
/* Sets a metadata string; a key set twice keeps the last value. */
HIGAN_DEF higan_status higan_safetensors_writer_meta(higan_safetensors_writer *w, const char *key, const char *value) {
    char *k, *v;
    int i;
    if (!w || !key || !value) return higan__error(HIGAN_ERR_ARG, "safetensors writer: NULL argument");
    if (higan__st_utf8_check((const unsigned char *)key, strlen(key)) != strlen(key) ||
        higan__st_utf8_check((const unsigned char *)value, strlen(value)) != strlen(value))
        return higan__error(HIGAN_ERR_ARG, "safetensors writer: metadata '%s' is not valid UTF-8", key);
    if (!(v = higan__st_strdup(value))) return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory");
    for (i = 0; i < w->meta_count; ++i)
        if (!strcmp(w->meta_keys[i], key)) { HIGAN_FREE(w->meta_values[i]); w->meta_values[i] = v; return HIGAN_OK; }
    if (w->meta_count == w->meta_capacity) {
        int nc = w->meta_capacity ? 2 * w->meta_capacity : 8;
        char **nk = (char **)HIGAN_REALLOC(w->meta_keys, (size_t)nc * sizeof(char *));
        char **nv;
        if (nk) w->meta_keys = nk;
        nv = nk ? (char **)HIGAN_REALLOC(w->meta_values, (size_t)nc * sizeof(char *)) : NULL;
        if (nv) w->meta_values = nv;
        if (!nk || !nv) { HIGAN_FREE(v); return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory"); }
        w->meta_capacity = nc;
    }
    if (!(k = higan__st_strdup(key))) { HIGAN_FREE(v); return higan__error(HIGAN_ERR_NOMEM, "safetensors writer: out of memory"); }
    w->meta_keys[w->meta_count] = k;
    w->meta_values[w->meta_count] = v;
    ++w->meta_count;
    return HIGAN_OK;
}
/* Writes n bytes of tensor data in little-endian order (byte-swapped on big-endian hosts). */
static int higan__st_write_data(FILE *f, const higan_st_entry *e, uint64_t n) {
    size_t es = higan_dtype_size(e->dtype);
    const unsigned char *p = (const unsigned char *)e->data;
    unsigned char chunk[4096];
    uint64_t done = 0;
    if (n == 0) return 1;
    if (es == 1 || higan__st_host_le()) return fwrite(p, 1, (size_t)n, f) == (size_t)n;
    while (done < n) {
        size_t m = (size_t)(n - done < sizeof chunk ? n - done : sizeof chunk), i, k;
        for (i = 0; i < m; i += es)
            for (k = 0; k < es; ++k) chunk[i + k] = p[done + i + es - 1 - k];
        if (fwrite(chunk, 1, m, f) != m) return 0;
        done += m;
    }
    return 1;
}
HIGAN_DEF higan_status higan_safetensors_writer_save(const higan_safetensors_writer *w, const char *path) {
    higan__st_sb h, tmp;
    uint64_t off = 0, total;
    unsigned char len8[8];
    FILE *f = NULL;
    int i, k, err = 0;
    const char *what = NULL;
    if (!w || !path) return higan__error(HIGAN_ERR_ARG, "safetensors save: NULL argument");
    memset(&h, 0, sizeof h);
    memset(&tmp, 0, sizeof tmp);
    /* header, tensors in insertion order */
    higan__st_sb_put(&h, "{", 1);
    if (w->meta_count > 0) {
        higan__st_sb_str(&h, "\"__metadata__\":{");
        for (i = 0; i < w->meta_count; ++i) {
            if (i) higan__st_sb_put(&h, ",", 1);
            higan__st_sb_json(&h, w->meta_keys[i]);
            higan__st_sb_put(&h, ":", 1);
            higan__st_sb_json(&h, w->meta_values[i]);
        }
        higan__st_sb_put(&h, "}", 1);
    }
    for (i = 0; i < w->count; ++i) {
        const higan_st_entry *e = &w->entries[i];
        uint64_t bytes = higan__st_entry_bytes(e);
        if (i || w->meta_count > 0) higan__st_sb_put(&h, ",", 1);
        higan__st_sb_json(&h, e->name);
        higan__st_sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":", higan_dtype_name(e->dtype));
        higan__st_sb_shape(&h, e->ndim, e->shape);
        higan__st_sb_printf(&h, ",\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    higan__st_sb_put(&h, "}", 1);
    while (!h.oom && h.len % 8) higan__st_sb_put(&h, " ", 1);   /* keeps the data section 8-byte aligned */
    if (h.oom) return higan__error(HIGAN_ERR_NOMEM, "safetensors save '%s': out of memory", path);
    if ((uint64_t)h.len > HIGAN__ST_MAX_HEADER) {
        HIGAN_FREE(h.s);
        return higan__error(HIGAN_ERR_ARG, "safetensors save '%s': header of %llu bytes exceeds 100 MB", path, (unsigned long long)h.len);
    }
    total = h.len;
    for (k = 0; k < 8; ++k) len8[k] = (unsigned char)(total >> (8 * k));

    higan__st_sb_str(&tmp, path);
    higan__st_sb_str(&tmp, ".tmp");
    if (tmp.oom) { HIGAN_FREE(h.s); return higan__error(HIGAN_ERR_NOMEM, "safetensors save '%s': out of memory", path); }
    f = fopen(tmp.s, "wb");
    if (!f) { err = errno; what = "cannot create"; goto fail; }
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(h.s, 1, h.len, f) != h.len) { err = errno; what = "cannot write"; goto fail; }
    for (i = 0; i < w->count; ++i)
        if (!higan__st_write_data(f, &w->entries[i], higan__st_entry_bytes(&w->entries[i]))) { err = errno; what = "cannot write"; goto fail; }
    if (fflush(f) != 0) { err = errno; what = "cannot write"; goto fail; }
    k = fclose(f);
    f = NULL;
    if (k != 0) { err = errno; what = "cannot close"; goto fail; }
    if (rename(tmp.s, path) != 0) {
#ifdef _WIN32
        /* Windows' rename does not replace an existing file; this fallback is not atomic. */
        if (!(remove(path) == 0 && rename(tmp.s, path) == 0))
#endif
        { err = errno; what = "cannot rename the temporary file onto"; goto fail; }
    }
    HIGAN_FREE(h.s);
    HIGAN_FREE(tmp.s);
    return HIGAN_OK;
fail:
    /* remove only the temporary file we created; what was at path stays untouched */
    if (f) fclose(f);
    if (strcmp(what, "cannot create") != 0) remove(tmp.s);
    higan__error(HIGAN_ERR_IO, "cannot save '%s': %s '%s': %s", path, what,
                 strcmp(what, "cannot rename the temporary file onto") == 0 ? path : tmp.s,
                 err ? strerror(err) : "I/O error");
    HIGAN_FREE(h.s);
    HIGAN_FREE(tmp.s);
    return HIGAN_ERR_IO;
}

/* ---- parameter stores ------------------------------------------------------------------ */
static const char *const higan__st_suffix[3] = {"", ".adam_m", ".adam_v"};
/* which: 0 value (or buffer), 1 adam_m, 2 adam_v */
static void *higan__st_param_ptr(const higan_params *p, const higan_param_entry *e, int which) {
    if (e->kind == HIGAN_BUFFER_I64) return p->ibuffer + e->offset;
    if (e->kind == HIGAN_BUFFER) return p->buffer + e->offset;
    return (which == 0 ? p->value : which == 1 ? p->adam_m : p->adam_v) + e->offset;
}
HIGAN_DEF higan_status higan_params_add_to_writer(const higan_params *p, higan_safetensors_writer *w,
        const char *prefix, const higan_adam *opt) {
    char *name, num[160];
    size_t plen, cap;
    int i, s, n0;
    higan_status st = HIGAN_OK;
    if (!p || !w) return higan__error(HIGAN_ERR_ARG, "params_add_to_writer: NULL argument");
    if (!p->allocated) return higan__error(HIGAN_ERR_ARG, "params_add_to_writer: the store is not allocated");
    if (!prefix) prefix = "";
    plen = strlen(prefix);
    cap = plen + HIGAN_MAX_NAME + 16;
    name = (char *)HIGAN_MALLOC(cap);
    if (!name) return higan__error(HIGAN_ERR_NOMEM, "params_add_to_writer: out of memory");
    n0 = w->count;
    for (i = 0; i < p->count && st == HIGAN_OK; ++i) {
        const higan_param_entry *e = &p->entries[i];
        int ns = (opt && e->kind == HIGAN_PARAM) ? 3 : 1;
        for (s = 0; s < ns && st == HIGAN_OK; ++s) {
            snprintf(name, cap, "%s%s%s", prefix, e->name, higan__st_suffix[s]);
            st = higan_safetensors_writer_add(w, name, e->kind == HIGAN_BUFFER_I64 ? HIGAN_I64 : HIGAN_F32,
                                              e->ndim, e->shape, higan__st_param_ptr(p, e, s));
        }
    }
    if (st == HIGAN_OK && opt) {
        /* the step is what load restores; the hyperparameters are for people reading the file */
        snprintf(name, cap, "%sadam_step", prefix);
        snprintf(num, sizeof num, "%lld", (long long)opt->step);
        st = higan_safetensors_writer_meta(w, name, num);
        if (st == HIGAN_OK) {
            snprintf(name, cap, "%sadam_hparams", prefix);
            snprintf(num, sizeof num, "lr=%.9g beta1=%.9g beta2=%.9g eps=%.9g",
                     (double)opt->lr, (double)opt->beta1, (double)opt->beta2, (double)opt->eps);
            st = higan_safetensors_writer_meta(w, name, num);
        }
    }
    if (st != HIGAN_OK)   /* leave the writer's tensors as they were */
        while (w->count > n0) HIGAN_FREE(w->entries[--w->count].name);
    HIGAN_FREE(name);
    return st;
}

/* Problem lists for higan_params_load: items kept NUL-separated, cut to fit at the end. */
typedef struct { higan__st_sb sb; int n; } higan__st_list;
static void higan__st_list_add(higan__st_list *l, const char *item) {
    higan__st_sb_put(&l->sb, item, strlen(item) + 1);
    ++l->n;
}
/* Appends whole items while they fit in budget bytes (at least one), then "... (N more)". */
static void higan__st_list_emit(higan__st_sb *msg, const higan__st_list *l, size_t budget) {
    size_t at = 0, used = 0;
    int k;
    for (k = 0; k < l->n && l->sb.s && !l->sb.oom; ++k) {
        size_t n = strlen(l->sb.s + at);
        if (k > 0 && used + n + 2 > budget) break;
        if (k > 0) higan__st_sb_put(msg, ", ", 2);
        higan__st_sb_put(msg, l->sb.s + at, n);
        used += n + 2;
        at += n + 1;
    }
    if (k < l->n) higan__st_sb_printf(msg, ", ... (%d more)", l->n - k);
}
/* Checks the tensor called name in st against a store entry; 1 if it can be loaded. */
static int higan__st_check_one(const higan_safetensors *st, const char *name, const higan_param_entry *e,
                               higan__st_list *missing, higan__st_list *shaped, higan__st_list *typed) {
    const higan_st_tensor *t = higan_safetensors_find(st, name);
    higan__st_sb item;
    int d, same;
    if (!t) { higan__st_list_add(missing, name); return 0; }
    same = t->ndim == e->ndim;
    for (d = 0; same && d < e->ndim; ++d) same = t->shape[d] == e->shape[d];
    /* PyTorch stores some one-element tensors (num_batches_tracked) as 0-d: [] matches [1] */
    if (!same && t->numel == 1 && e->numel == 1) same = 1;
    memset(&item, 0, sizeof item);
    if (!same) {
        higan__st_sb_str(&item, name);
        higan__st_sb_str(&item, " (file ");
        higan__st_sb_shape(&item, t->ndim, t->shape);
        higan__st_sb_str(&item, ", model ");
        higan__st_sb_shape(&item, e->ndim, e->shape);
        higan__st_sb_str(&item, ")");
        higan__st_list_add(shaped, item.s && !item.oom ? item.s : name);
    } else if (e->kind == HIGAN_BUFFER_I64 ? higan__st_is_float(t->dtype) : !higan__st_is_float(t->dtype)) {
        higan__st_sb_str(&item, name);
        higan__st_sb_printf(&item, " (file %s, model %s)", higan_dtype_name(t->dtype),
                            e->kind == HIGAN_BUFFER_I64 ? "an integer dtype" : "F32/F16/BF16");
        higan__st_list_add(typed, item.s && !item.oom ? item.s : name);
        same = 0;
    }
    HIGAN_FREE(item.s);
    return same;
}
static int higan__st_ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n > k && !memcmp(s + n - k, suf, k);
}
HIGAN_DEF higan_status higan_params_load(higan_params *p, const higan_safetensors *st,
        const char *prefix, higan_adam *opt) {
    static const char *const label[5] = {"missing", "unexpected", "mis-shaped", "wrong dtype", "metadata"};
    higan__st_list lists[5];   /* in the order of label */
    higan__st_sb msg, item;
    char *name, base[HIGAN_MAX_NAME];
    size_t plen, cap;
    int i, s, l, problems = 0, nonempty = 0;
    int64_t step = 0;
    higan_status rc = HIGAN_OK;
    if (!p || !st) return higan__error(HIGAN_ERR_ARG, "params_load: NULL argument");
    if (!p->allocated) return higan__error(HIGAN_ERR_ARG, "params_load: the store is not allocated");
    if (!prefix) prefix = "";
    plen = strlen(prefix);
    cap = plen + HIGAN_MAX_NAME + 16;
    name = (char *)HIGAN_MALLOC(cap);
    if (!name) return higan__error(HIGAN_ERR_NOMEM, "params_load: out of memory");
    memset(lists, 0, sizeof lists);
    /* 1. validate everything; nothing is written to p unless all checks pass */
    for (i = 0; i < p->count; ++i) {
        const higan_param_entry *e = &p->entries[i];
        int ns = (opt && e->kind == HIGAN_PARAM) ? 3 : 1;
        for (s = 0; s < ns; ++s) {
            snprintf(name, cap, "%s%s%s", prefix, e->name, higan__st_suffix[s]);
            higan__st_check_one(st, name, e, &lists[0], &lists[2], &lists[3]);
        }
    }
    for (i = 0; i < st->count; ++i) {
        const char *tn = st->tensors[i].name, *rest;
        size_t rl;
        if (strncmp(tn, prefix, plen) != 0) continue;
        rest = tn + plen;
        if (higan_params_find(p, rest) >= 0) continue;
        rl = strlen(rest);
        /* optimizer state of a known parameter is expected (and ignored when opt is NULL) */
        if ((higan__st_ends_with(rest, rl, ".adam_m") || higan__st_ends_with(rest, rl, ".adam_v")) && rl - 7 < sizeof base) {
            int h;
            memcpy(base, rest, rl - 7);
            base[rl - 7] = 0;
            h = higan_params_find(p, base);
            if (h >= 0 && p->entries[h].kind == HIGAN_PARAM) continue;
        }
        higan__st_list_add(&lists[1], tn);
    }
    if (opt) {
        const char *v;
        snprintf(name, cap, "%sadam_step", prefix);
        v = higan_safetensors_meta(st, name);
        memset(&item, 0, sizeof item);
        if (!v) {
            higan__st_sb_printf(&item, "'%s' missing", name);
        } else {
            const char *c = v;
            int ok = *c != 0;
            for (; *c && ok; ++c) {
                if (*c < '0' || *c > '9' || step > (INT64_MAX - (*c - '0')) / 10) ok = 0;
                else step = step * 10 + (*c - '0');
            }
            if (!ok) higan__st_sb_printf(&item, "'%s' = '%.40s' is not a step count", name, v);
        }
        if (item.len) higan__st_list_add(&lists[4], item.s);
        HIGAN_FREE(item.s);
    }
    for (l = 0; l < 5; ++l) { problems += lists[l].n; nonempty += lists[l].n > 0; }
    if (problems) {
        /* split what higan_last_error can hold (1 KB) between the non-empty lists */
        size_t budget = 860 / (size_t)nonempty;
        int first = 1;
        memset(&msg, 0, sizeof msg);
        higan__st_sb_printf(&msg, "params_load (prefix '%.40s'): %d problem%s", prefix, problems, problems > 1 ? "s" : "");
        for (l = 0; l < 5; ++l) {
            if (!lists[l].n) continue;
            higan__st_sb_printf(&msg, "%s %s %d: ", first ? ":" : ";", label[l], lists[l].n);
            higan__st_list_emit(&msg, &lists[l], budget);
            first = 0;
        }
        rc = higan__error(HIGAN_ERR_FORMAT, "%s", msg.s && !msg.oom ? msg.s : "params_load: checkpoint does not match (out of memory listing the problems)");
        HIGAN_FREE(msg.s);
    } else {
        /* 2. copy; every read is known to succeed */
        for (i = 0; i < p->count && rc == HIGAN_OK; ++i) {
            const higan_param_entry *e = &p->entries[i];
            int ns = (opt && e->kind == HIGAN_PARAM) ? 3 : 1;
            for (s = 0; s < ns && rc == HIGAN_OK; ++s) {
                snprintf(name, cap, "%s%s%s", prefix, e->name, higan__st_suffix[s]);
                rc = e->kind == HIGAN_BUFFER_I64
                   ? higan_safetensors_read_i64(st, name, (int64_t *)higan__st_param_ptr(p, e, s), e->numel)
                   : higan_safetensors_read_f32(st, name, (float *)higan__st_param_ptr(p, e, s), e->numel);
            }
        }
        if (rc == HIGAN_OK && opt) opt->step = step;
    }
    for (l = 0; l < 5; ++l) HIGAN_FREE(lists[l].sb.s);
    HIGAN_FREE(name);
    return rc;
}
