/* pth.h - read PyTorch checkpoints (torch.save zip format, PyTorch >= 1.6) in C, no Python.

   Used by data_tools/pth2safetensors.c and tests/test_pth.c. Include it after "higan.h"
   (it uses higan_dtype and the safetensors writer). Every function is static.

   FILE LAYOUT (torch.save since 1.6): a zip whose entries are STORED (never compressed,
   64-byte aligned data), with
       <root>/data.pkl      the pickled object; every tensor storage is a persistent id
                            ('storage', torch.<T>Storage, key, location, numel)
       <root>/data/<key>    the raw bytes of that storage (little-endian unless a
                            <root>/byteorder entry says "big", as PyTorch >= 2.1 may write)
       <root>/version       format version
   <root> is the file stem at save time: it is found by searching, never assumed.
   The central directory may use ZIP64 records (torch always writes the ZIP64 end record).

   SAFETY: the pickle reader never executes or imports anything. It interprets the opcodes
   that state dicts use and builds a small value tree (pth_value). GLOBAL is allowed only
   for a fixed whitelist (tensor and parameter rebuilders, storage types, OrderedDict,
   torch.Size, numpy scalars); anything else, and every unknown opcode, is an error that
   names it. Every offset, length and count read from the file is bounds-checked, the
   CRC-32 of every entry used is verified, and errors are messages, never crashes.

   USE
       pth_checkpoint c;
       if (pth_open_file(&c, "x.pth") != 0 ||                  // zip + unpickle data.pkl
           pth_extract(&c, NULL, "Generator,StyleEncoder") != 0) { // NULL: all networks
           fprintf(stderr, "%s\n", c.err); pth_close(&c); return 1;
       }
       c.tensors[i]: name "<Network>.<key>", dtype, ndim, shape, numel, data (host order)
       c.notes: what was skipped or converted, one message per line
       pth_add_to_writer(&c, &w) adds every tensor and the scalar metadata; keep c open
       until the writer is saved (data may point into the file buffer). pth_close(&c).
   pth_extract(&c, "Name", NULL) reads a plain state dict (tensors at the top level) and
   names its tensors "Name.<key>". pth_close is safe after any failure. */
#ifndef HIGAN_PTH_H
#define HIGAN_PTH_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#  define PTH_DEF static __attribute__((unused))
#else
#  define PTH_DEF static
#endif

#define PTH_MAX_DIMS 8                  /* = HIGAN_ST_MAX_DIMS */
#define PTH_MAX_VALUES (1 << 22)        /* objects one pickle may create (a real one: ~1e5) */
#define PTH_MAX_PICKLE ((size_t)1 << 30)

typedef enum {
    PTH_NONE, PTH_BOOL, PTH_INT, PTH_FLOAT, PTH_STR, PTH_BYTES, PTH_TUPLE, PTH_LIST, PTH_DICT,
    PTH_GLOBAL, PTH_STORAGE, PTH_TENSOR, PTH_NPDTYPE, PTH_OPAQUE
} pth_kind;

/* element type of a torch storage */
typedef enum { PTH_S_F32, PTH_S_F16, PTH_S_BF16, PTH_S_F64, PTH_S_I64, PTH_S_I32, PTH_S_I16,
               PTH_S_I8, PTH_S_U8, PTH_S_BOOL } pth_stype;

typedef struct pth_tensor_ref {
    struct pth_value *storage;
    int64_t offset;                     /* elements */
    int ndim;
    int64_t shape[PTH_MAX_DIMS], stride[PTH_MAX_DIMS];
} pth_tensor_ref;

/* A node of the unpickled value tree. Nodes may be shared (memo) and even form cycles:
   they live in the checkpoint's pool and are freed together, never recursively. */
typedef struct pth_value {
    pth_kind kind;
    int64_t i;              /* INT, BOOL; GLOBAL: whitelist index; STORAGE: pth_stype */
    double f;               /* FLOAT */
    char *s;                /* STR (UTF-8), BYTES, GLOBAL "module.name", STORAGE key,
                               NPDTYPE code ("f8"), OPAQUE description; NUL-terminated */
    size_t len;             /* bytes in s */
    struct pth_value **items; /* TUPLE, LIST: n items; DICT: keys and values, 2n */
    int n, cap;
    int64_t numel;          /* STORAGE: elements according to the pickle */
    int big;                /* NPDTYPE: big-endian data */
    pth_tensor_ref *t;      /* TENSOR */
} pth_value;

typedef struct pth_zentry {
    char *name;
    uint64_t local_off, csize, usize;
    uint32_t crc;
    int method, flags;
    int checked;            /* local header and CRC verified */
    uint64_t data_off;      /* valid once checked */
} pth_zentry;

typedef struct pth_tensor {
    char *name;             /* "<Network>.<key>" */
    higan_dtype dtype;
    int ndim;
    int64_t shape[PTH_MAX_DIMS];
    int64_t numel;
    const void *data;       /* numel elements, host byte order (into the file, or owned) */
    void *owned;
} pth_tensor;

typedef struct pth_checkpoint {
    unsigned char *file;    /* the whole file, owned */
    size_t size;
    pth_zentry *entries;    /* sorted by name */
    int n_entries;
    char *root;             /* folder holding data.pkl ("" when at the top) */
    int data_big_endian;
    pth_value *obj;         /* the unpickled object */
    pth_value **pool;
    size_t pool_n, pool_cap;
    pth_tensor *tensors;    /* filled by pth_extract */
    int count, cap;
    char **meta_keys, **meta_values;   /* top-level scalars (Epoch, fid, ...) as text */
    int meta_count, meta_cap;
    char *notes;            /* skipped entries and conversions, '\n'-separated */
    size_t notes_len, notes_cap;
    char err[1024];
} pth_checkpoint;

/* ==== small helpers ================================================================= */
static int pth__fail(pth_checkpoint *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return -1;
}
static uint16_t pth__rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t pth__rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t pth__rd64(const unsigned char *p) {
    return (uint64_t)pth__rd32(p) | ((uint64_t)pth__rd32(p + 4) << 32);
}
/* [off, off+len) lies inside [0, n), without overflow */
static int pth__in(uint64_t off, uint64_t len, uint64_t n) { return off <= n && len <= n - off; }
static int pth__host_big(void) { const uint16_t one = 1; return *(const unsigned char *)&one == 0; }
static char *pth__strndup(const char *s, size_t n) {
    char *d = (char *)malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = 0;
    return d;
}
static void pth__note(pth_checkpoint *c, const char *fmt, ...) {
    char line[1024];
    size_t n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    n = strlen(line);
    if (c->notes_len + n + 2 > c->notes_cap) {
        size_t nc = (c->notes_cap ? 2 * c->notes_cap : 1024) + n + 2;
        char *p = (char *)realloc(c->notes, nc);
        if (!p) return;                 /* notes are informative only */
        c->notes = p;
        c->notes_cap = nc;
    }
    memcpy(c->notes + c->notes_len, line, n);
    c->notes_len += n;
    c->notes[c->notes_len++] = '\n';
    c->notes[c->notes_len] = 0;
}

/* ==== CRC-32 (zip polynomial) ======================================================== */
static uint32_t pth__crc32(const unsigned char *p, uint64_t n) {
    static uint32_t table[256];
    static int ready = 0;
    uint32_t crc = 0xFFFFFFFFu;
    uint64_t i;
    if (!ready) {
        uint32_t k, b, v;
        for (k = 0; k < 256; ++k) {
            v = k;
            for (b = 0; b < 8; ++b) v = (v & 1) ? 0xEDB88320u ^ (v >> 1) : v >> 1;
            table[k] = v;
        }
        ready = 1;
    }
    for (i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

/* ==== ZIP ============================================================================= */
static int pth__zcmp(const void *a, const void *b) {
    return strcmp(((const pth_zentry *)a)->name, ((const pth_zentry *)b)->name);
}

static int pth__zip_open(pth_checkpoint *c) {
    const unsigned char *b = c->file;
    uint64_t n = c->size, eocd = 0, lo, i, count, cd_size, cd_off, pos;
    uint32_t disk, cd_disk;
    uint64_t n_disk;
    int found = 0, k;
    if (n < 22) return pth__fail(c, "not a zip file: only %llu bytes (a torch.save checkpoint is a zip)", (unsigned long long)n);
    lo = n - 22 > 65535 ? n - 22 - 65535 : 0;
    for (i = n - 22 + 1; i-- > lo;) {
        if (pth__rd32(b + i) == 0x06054b50u && i + 22 + pth__rd16(b + i + 20) <= n) { eocd = i; found = 1; break; }
    }
    if (!found) {
        if (b[0] == 0x80 || (b[0] == 0x1f && b[1] == 0x8b))
            return pth__fail(c, "not a zip file: this looks like the legacy torch.save format (PyTorch < 1.6), which is not "
                                "supported; re-save it with torch.save(torch.load(f), f2) on a newer PyTorch");
        if (n >= 4 && pth__rd32(b) == 0x04034b50u)
            return pth__fail(c, "zip: end-of-central-directory record not found (file truncated?)");
        return pth__fail(c, "not a zip file: no end-of-central-directory record (a torch.save checkpoint is a zip)");
    }
    disk = pth__rd16(b + eocd + 4);
    cd_disk = pth__rd16(b + eocd + 6);
    n_disk = pth__rd16(b + eocd + 8);
    count = pth__rd16(b + eocd + 10);
    cd_size = pth__rd32(b + eocd + 12);
    cd_off = pth__rd32(b + eocd + 16);
    if (eocd >= 20 && pth__rd32(b + eocd - 20) == 0x07064b50u) {
        /* ZIP64 locator right before the end record: the 64-bit record has the real values */
        uint64_t z = pth__rd64(b + eocd - 20 + 8);
        if (!pth__in(z, 56, eocd - 20) || pth__rd32(b + z) != 0x06064b50u)
            return pth__fail(c, "zip: ZIP64 end-of-central-directory record missing or out of range (offset %llu)", (unsigned long long)z);
        disk = pth__rd32(b + z + 16);
        cd_disk = pth__rd32(b + z + 20);
        n_disk = pth__rd64(b + z + 24);
        count = pth__rd64(b + z + 32);
        cd_size = pth__rd64(b + z + 40);
        cd_off = pth__rd64(b + z + 48);
    } else if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        return pth__fail(c, "zip: the end record needs a ZIP64 record, which is missing");
    }
    if (disk != 0 || cd_disk != 0 || n_disk != count)
        return pth__fail(c, "zip: multi-volume archives are not supported");
    if (!pth__in(cd_off, cd_size, eocd))
        return pth__fail(c, "zip: central directory (offset %llu, %llu bytes) lies outside the file",
                         (unsigned long long)cd_off, (unsigned long long)cd_size);
    if (count > cd_size / 46) return pth__fail(c, "zip: %llu entries cannot fit in a central directory of %llu bytes",
                                               (unsigned long long)count, (unsigned long long)cd_size);
    if (count == 0) return pth__fail(c, "zip: the archive is empty");
    if (count > 0x7FFFFFFF) return pth__fail(c, "zip: too many entries (%llu)", (unsigned long long)count);
    c->entries = (pth_zentry *)calloc((size_t)count, sizeof(pth_zentry));
    if (!c->entries) return pth__fail(c, "out of memory");
    pos = cd_off;
    for (k = 0; k < (int)count; ++k) {
        const unsigned char *e = b + pos;
        pth_zentry *z = &c->entries[k];
        uint32_t nl, el, cl, x;
        if (!pth__in(pos, 46, cd_off + cd_size) || pth__rd32(e) != 0x02014b50u)
            return pth__fail(c, "zip: central directory entry %d is damaged (at offset %llu)", k, (unsigned long long)pos);
        nl = pth__rd16(e + 28); el = pth__rd16(e + 30); cl = pth__rd16(e + 32);
        if (!pth__in(pos, 46 + (uint64_t)nl + el + cl, cd_off + cd_size))
            return pth__fail(c, "zip: central directory entry %d runs past the directory", k);
        if (nl == 0 || memchr(e + 46, 0, nl)) return pth__fail(c, "zip: central directory entry %d has an invalid name", k);
        if (!(z->name = pth__strndup((const char *)e + 46, nl))) return pth__fail(c, "out of memory");
        c->n_entries = k + 1;
        z->flags = pth__rd16(e + 8);
        z->method = pth__rd16(e + 10);
        z->crc = pth__rd32(e + 16);
        z->csize = pth__rd32(e + 20);
        z->usize = pth__rd32(e + 24);
        z->local_off = pth__rd32(e + 42);
        /* ZIP64 extended information: 64-bit values for the fields saturated above, in order */
        for (x = 0; x + 4 <= el;) {
            const unsigned char *f = e + 46 + nl + x;
            uint32_t id = pth__rd16(f), sz = pth__rd16(f + 2), q = 4;
            if (x + 4 + sz > el) return pth__fail(c, "zip: entry '%s': extra field runs past its end", z->name);
            if (id == 0x0001) {
                if (z->usize == 0xFFFFFFFFu) { if (q + 8 > 4 + sz) goto bad64; z->usize = pth__rd64(f + q); q += 8; }
                if (z->csize == 0xFFFFFFFFu) { if (q + 8 > 4 + sz) goto bad64; z->csize = pth__rd64(f + q); q += 8; }
                if (z->local_off == 0xFFFFFFFFu) { if (q + 8 > 4 + sz) goto bad64; z->local_off = pth__rd64(f + q); q += 8; }
            }
            x += 4 + sz;
        }
        if (z->usize == 0xFFFFFFFFu || z->csize == 0xFFFFFFFFu || z->local_off == 0xFFFFFFFFu) goto bad64;
        pos += 46 + (uint64_t)nl + el + cl;
        continue;
    bad64:
        return pth__fail(c, "zip: entry '%s': ZIP64 sizes or offset missing", z->name);
    }
    qsort(c->entries, (size_t)c->n_entries, sizeof(pth_zentry), pth__zcmp);
    for (k = 1; k < c->n_entries; ++k)
        if (!strcmp(c->entries[k].name, c->entries[k - 1].name))
            return pth__fail(c, "zip: duplicate entry '%s'", c->entries[k].name);
    return 0;
}

static pth_zentry *pth__zfind(pth_checkpoint *c, const char *name) {
    int lo = 0, hi = c->n_entries - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, r = strcmp(name, c->entries[mid].name);
        if (r == 0) return &c->entries[mid];
        if (r < 0) hi = mid - 1; else lo = mid + 1;
    }
    return NULL;
}

/* The data of an entry: checks method, local header, bounds and CRC (once). */
static int pth__zdata(pth_checkpoint *c, pth_zentry *z, const unsigned char **data, uint64_t *size) {
    if (!z->checked) {
        const unsigned char *b = c->file;
        uint64_t lo = z->local_off, nl, el;
        if (z->flags & 1) return pth__fail(c, "zip: entry '%s' is encrypted", z->name);
        if (z->method != 0)
            return pth__fail(c, "zip: entry '%s' is compressed (method %d%s): compressed entry not supported "
                                "(torch.save writes every entry uncompressed; was the file re-zipped?)",
                             z->name, z->method, z->method == 8 ? ", DEFLATE" : "");
        if (z->csize != z->usize) return pth__fail(c, "zip: stored entry '%s' has different sizes (%llu, %llu)",
                                                   z->name, (unsigned long long)z->csize, (unsigned long long)z->usize);
        if (!pth__in(lo, 30, c->size) || pth__rd32(b + lo) != 0x04034b50u)
            return pth__fail(c, "zip: local header of '%s' missing (offset %llu)", z->name, (unsigned long long)lo);
        nl = pth__rd16(b + lo + 26);
        el = pth__rd16(b + lo + 28);
        if (!pth__in(lo + 30, nl + el, c->size) || nl != strlen(z->name) || memcmp(b + lo + 30, z->name, (size_t)nl) != 0)
            return pth__fail(c, "zip: local header of '%s' does not match the central directory", z->name);
        z->data_off = lo + 30 + nl + el;
        if (!pth__in(z->data_off, z->usize, c->size))
            return pth__fail(c, "zip: data of '%s' (%llu bytes at offset %llu) runs past the end of the file (truncated?)",
                             z->name, (unsigned long long)z->usize, (unsigned long long)z->data_off);
        if (pth__crc32(b + z->data_off, z->usize) != z->crc)
            return pth__fail(c, "zip: CRC mismatch in '%s': the file is corrupt", z->name);
        z->checked = 1;
    }
    *data = c->file + z->data_off;
    *size = z->usize;
    return 0;
}

/* ==== PICKLE (safe subset) ============================================================ */
enum {
    PTH_G_ORDEREDDICT, PTH_G_TENSOR_V2, PTH_G_PARAMETER, PTH_G_PARAMETER_STATE, PTH_G_SIZE,
    PTH_G_STORAGE, PTH_G_CODECS_ENCODE, PTH_G_NP_SCALAR, PTH_G_NP_DTYPE, PTH_G_NP_ARRAY
};
typedef struct pth__global { const char *name; int id; int stype; } pth__global;
static const pth__global pth__globals[] = {
    {"collections.OrderedDict", PTH_G_ORDEREDDICT, 0},
    {"torch._utils._rebuild_tensor_v2", PTH_G_TENSOR_V2, 0},
    {"torch._utils._rebuild_parameter", PTH_G_PARAMETER, 0},
    {"torch._utils._rebuild_parameter_with_state", PTH_G_PARAMETER_STATE, 0},
    {"torch.Size", PTH_G_SIZE, 0},
    {"torch.FloatStorage", PTH_G_STORAGE, PTH_S_F32},
    {"torch.HalfStorage", PTH_G_STORAGE, PTH_S_F16},
    {"torch.BFloat16Storage", PTH_G_STORAGE, PTH_S_BF16},
    {"torch.DoubleStorage", PTH_G_STORAGE, PTH_S_F64},
    {"torch.LongStorage", PTH_G_STORAGE, PTH_S_I64},
    {"torch.IntStorage", PTH_G_STORAGE, PTH_S_I32},
    {"torch.ShortStorage", PTH_G_STORAGE, PTH_S_I16},
    {"torch.CharStorage", PTH_G_STORAGE, PTH_S_I8},
    {"torch.ByteStorage", PTH_G_STORAGE, PTH_S_U8},
    {"torch.BoolStorage", PTH_G_STORAGE, PTH_S_BOOL},
    /* numpy scalars (scores such as fid, WER may be numpy floats); arrays become opaque */
    {"_codecs.encode", PTH_G_CODECS_ENCODE, 0},
    {"numpy.core.multiarray.scalar", PTH_G_NP_SCALAR, 0},
    {"numpy._core.multiarray.scalar", PTH_G_NP_SCALAR, 0},
    {"numpy.dtype", PTH_G_NP_DTYPE, 0},
    {"numpy.core.multiarray._reconstruct", PTH_G_NP_ARRAY, 0},
    {"numpy._core.multiarray._reconstruct", PTH_G_NP_ARRAY, 0},
    {"numpy.ndarray", PTH_G_NP_ARRAY, 0}
};
static const char *const pth__stype_names[] = {"float32", "float16", "bfloat16", "float64", "int64",
                                               "int32", "int16", "int8", "uint8", "bool"};
static const int pth__stype_size[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
/* output dtype: float64 becomes F32, int8 I16, bool U8 (safetensors-higan has no F64/I8/BOOL) */
static const higan_dtype pth__stype_out[] = {HIGAN_F32, HIGAN_F16, HIGAN_BF16, HIGAN_F32, HIGAN_I64,
                                             HIGAN_I32, HIGAN_I16, HIGAN_I16, HIGAN_U8, HIGAN_U8};

static const char *pth__kind_name(pth_kind k) {
    static const char *const names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list",
                                        "dict", "global", "storage", "tensor", "numpy dtype", "object"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

typedef struct pth__up {
    pth_checkpoint *c;
    const unsigned char *p;
    size_t n, pos, op_pos;
    int op;
    pth_value **stack;
    size_t sn, scap;
    size_t *marks;
    size_t mn, mcap;
    pth_value **memo;
    size_t memo_cap, memo_count;
} pth__up;

static int pth__ufail(pth__up *u, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pth__fail(u->c, "data.pkl: %s (opcode 0x%02x at byte %llu)", msg, u->op, (unsigned long long)u->op_pos);
}

static pth_value *pth__new(pth__up *u, pth_kind kind) {
    pth_checkpoint *c = u->c;
    pth_value *v;
    if (c->pool_n >= PTH_MAX_VALUES) { pth__ufail(u, "pickle creates more than %d objects", PTH_MAX_VALUES); return NULL; }
    if (c->pool_n == c->pool_cap) {
        size_t nc = c->pool_cap ? 2 * c->pool_cap : 256;
        pth_value **np = (pth_value **)realloc(c->pool, nc * sizeof *np);
        if (!np) { pth__ufail(u, "out of memory"); return NULL; }
        c->pool = np;
        c->pool_cap = nc;
    }
    v = (pth_value *)calloc(1, sizeof *v);
    if (!v) { pth__ufail(u, "out of memory"); return NULL; }
    v->kind = kind;
    c->pool[c->pool_n++] = v;
    return v;
}
static int pth__push(pth__up *u, pth_value *v) {
    if (!v) return -1;
    if (u->sn == u->scap) {
        size_t nc = u->scap ? 2 * u->scap : 64;
        pth_value **ns = (pth_value **)realloc(u->stack, nc * sizeof *ns);
        if (!ns) return pth__ufail(u, "out of memory");
        u->stack = ns;
        u->scap = nc;
    }
    u->stack[u->sn++] = v;
    return 0;
}
static size_t pth__base(const pth__up *u) { return u->mn ? u->marks[u->mn - 1] : 0; }
static pth_value *pth__pop(pth__up *u) {
    if (u->sn <= pth__base(u)) { pth__ufail(u, "stack underflow"); return NULL; }
    return u->stack[--u->sn];
}
static pth_value *pth__top(pth__up *u) {
    if (u->sn <= pth__base(u)) { pth__ufail(u, "stack underflow"); return NULL; }
    return u->stack[u->sn - 1];
}
static int pth__append(pth__up *u, pth_value *seq, pth_value *item) {
    if (seq->n == seq->cap) {
        int nc = seq->cap ? 2 * seq->cap : 4;
        pth_value **ni;
        if (seq->cap > (1 << 28)) return pth__ufail(u, "container too large");
        ni = (pth_value **)realloc(seq->items, (size_t)nc * sizeof *ni);
        if (!ni) return pth__ufail(u, "out of memory");
        seq->items = ni;
        seq->cap = nc;
    }
    seq->items[seq->n++] = item;
    return 0;
}
static int pth__setitem(pth__up *u, pth_value *d, pth_value *k, pth_value *v) {
    /* duplicate keys are not merged (pickled dicts have none); the writer rejects them */
    if (d->kind != PTH_DICT) return pth__ufail(u, "SETITEM on a %s", pth__kind_name(d->kind));
    if (2 * d->n + 2 > d->cap) {    /* cap counts item slots, n counts pairs */
        int nc = d->cap ? 2 * d->cap : 8;
        pth_value **ni;
        if (d->cap > (1 << 28)) return pth__ufail(u, "dict too large");
        ni = (pth_value **)realloc(d->items, (size_t)nc * sizeof *ni);
        if (!ni) return pth__ufail(u, "out of memory");
        d->items = ni;
        d->cap = nc;
    }
    d->items[2 * d->n] = k;
    d->items[2 * d->n + 1] = v;
    ++d->n;
    return 0;
}
/* pops the items above the last MARK into a new tuple/list (kind), and the mark */
static pth_value *pth__pop_mark(pth__up *u, pth_kind kind) {
    pth_value *v;
    size_t base, i;
    if (!u->mn) { pth__ufail(u, "no MARK on the stack"); return NULL; }
    base = u->marks[--u->mn];
    if (!(v = pth__new(u, kind))) return NULL;
    if (u->sn > base) {
        if (u->sn - base > (1u << 28)) { pth__ufail(u, "container too large"); return NULL; }
        v->items = (pth_value **)malloc((u->sn - base) * sizeof(pth_value *));
        if (!v->items) { pth__ufail(u, "out of memory"); return NULL; }
        for (i = base; i < u->sn; ++i) v->items[i - base] = u->stack[i];
        v->n = v->cap = (int)(u->sn - base);
    }
    u->sn = base;
    return v;
}
static pth_value *pth__tuple_of(pth__up *u, int k) {
    pth_value *v;
    int i;
    if (u->sn < pth__base(u) + (size_t)k) { pth__ufail(u, "stack underflow"); return NULL; }
    if (!(v = pth__new(u, PTH_TUPLE))) return NULL;
    if (k) {
        if (!(v->items = (pth_value **)malloc((size_t)k * sizeof(pth_value *)))) { pth__ufail(u, "out of memory"); return NULL; }
        for (i = 0; i < k; ++i) v->items[i] = u->stack[u->sn - (size_t)k + (size_t)i];
        v->n = v->cap = k;
        u->sn -= (size_t)k;
    }
    return v;
}
static int pth__memo_put(pth__up *u, uint64_t idx) {
    pth_value *v = pth__top(u);
    if (!v) return -1;
    if (idx > u->n + 16) return pth__ufail(u, "memo index %llu is implausibly large", (unsigned long long)idx);
    if (idx >= u->memo_cap) {
        size_t nc = u->memo_cap ? u->memo_cap : 64, i;
        pth_value **nm;
        while (nc <= idx) nc *= 2;
        nm = (pth_value **)realloc(u->memo, nc * sizeof *nm);
        if (!nm) return pth__ufail(u, "out of memory");
        for (i = u->memo_cap; i < nc; ++i) nm[i] = NULL;
        u->memo = nm;
        u->memo_cap = nc;
    }
    if (!u->memo[idx]) ++u->memo_count;
    u->memo[idx] = v;
    return 0;
}
static int pth__memo_get(pth__up *u, uint64_t idx) {
    if (idx >= u->memo_cap || !u->memo[idx]) return pth__ufail(u, "memo index %llu was never stored", (unsigned long long)idx);
    return pth__push(u, u->memo[idx]);
}
static pth_value *pth__str(pth__up *u, pth_kind kind, const unsigned char *s, size_t n) {
    pth_value *v = pth__new(u, kind);
    if (!v) return NULL;
    if (!(v->s = pth__strndup((const char *)s, n))) { pth__ufail(u, "out of memory"); return NULL; }
    v->len = n;
    return v;
}
static pth_value *pth__int(pth__up *u, int64_t i) {
    pth_value *v = pth__new(u, PTH_INT);
    if (v) v->i = i;
    return v;
}
/* little-endian two's complement of n <= 8 bytes */
static int pth__long(pth__up *u, const unsigned char *p, uint64_t n, int64_t *out) {
    uint64_t x = 0, i;
    if (n > 8) return pth__ufail(u, "integer of %llu bytes does not fit in 64 bits", (unsigned long long)n);
    for (i = 0; i < n; ++i) x |= (uint64_t)p[i] << (8 * i);
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) x |= ~(uint64_t)0 << (8 * n);
    memcpy(out, &x, 8);
    return 0;
}

static const pth__global *pth__lookup_global(pth__up *u, const char *module, const char *name) {
    char full[600];
    size_t i;
    snprintf(full, sizeof full, "%s.%s", module, name);
    for (i = 0; i < sizeof pth__globals / sizeof pth__globals[0]; ++i)
        if (!strcmp(full, pth__globals[i].name)) return &pth__globals[i];
    if (!strcmp(full, "torch.storage._load_from_bytes"))
        pth__ufail(u, "global 'torch.storage._load_from_bytes' (a storage saved in the legacy format inside the "
                      "pickle) is not supported");
    else if (!strncmp(full, "__torch__.", 10))
        pth__ufail(u, "global '%s': this is a TorchScript archive (torch.jit.save), not a state-dict checkpoint", full);
    else
        pth__ufail(u, "global '%s' is not allowed (only tensors, storages, OrderedDict, torch.Size and numpy "
                      "scalars are read; nothing is ever executed)", full);
    return NULL;
}
static int pth__push_global(pth__up *u, const char *module, const char *name) {
    const pth__global *g = pth__lookup_global(u, module, name);
    pth_value *v;
    if (!g || !(v = pth__new(u, PTH_GLOBAL))) return -1;
    if (!(v->s = pth__strndup(g->name, strlen(g->name)))) return pth__ufail(u, "out of memory");
    v->len = strlen(g->name);
    v->i = (int64_t)(g - pth__globals);
    return pth__push(u, v);
}

static int pth__int_tuple(pth__up *u, const pth_value *t, int64_t *out, int *n, const char *what) {
    int i;
    if (t->kind != PTH_TUPLE && t->kind != PTH_LIST) return pth__ufail(u, "tensor %s is a %s, expected a tuple", what, pth__kind_name(t->kind));
    if (t->n > PTH_MAX_DIMS) return pth__ufail(u, "tensor with %d dimensions (at most %d supported)", t->n, PTH_MAX_DIMS);
    for (i = 0; i < t->n; ++i) {
        if (t->items[i]->kind != PTH_INT) return pth__ufail(u, "tensor %s has a %s element", what, pth__kind_name(t->items[i]->kind));
        if (t->items[i]->i < 0) return pth__ufail(u, "tensor %s has a negative element %lld", what, (long long)t->items[i]->i);
        out[i] = t->items[i]->i;
    }
    *n = t->n;
    return 0;
}

/* REDUCE / NEWOBJ of an allowed global with an argument tuple: builds the value. */
static pth_value *pth__call(pth__up *u, const pth_value *fn, const pth_value *args) {
    const pth__global *g;
    pth_value *v;
    int na;
    if (fn->kind != PTH_GLOBAL) { pth__ufail(u, "cannot call a %s (only allowed globals can be called)", pth__kind_name(fn->kind)); return NULL; }
    if (args->kind != PTH_TUPLE) { pth__ufail(u, "arguments of %s are a %s, not a tuple", fn->s, pth__kind_name(args->kind)); return NULL; }
    g = &pth__globals[fn->i];
    na = args->n;
    switch (g->id) {
    case PTH_G_ORDEREDDICT:
        if (na != 0) { pth__ufail(u, "collections.OrderedDict called with %d arguments (expected none)", na); return NULL; }
        return pth__new(u, PTH_DICT);
    case PTH_G_TENSOR_V2: {
        /* (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
        pth_tensor_ref *t;
        int nd_size, nd_stride;
        if (na < 6 || na > 7) { pth__ufail(u, "_rebuild_tensor_v2 with %d arguments (expected 6 or 7)", na); return NULL; }
        if (args->items[0]->kind != PTH_STORAGE) { pth__ufail(u, "_rebuild_tensor_v2: first argument is a %s, not a storage", pth__kind_name(args->items[0]->kind)); return NULL; }
        if (args->items[1]->kind != PTH_INT || args->items[1]->i < 0) { pth__ufail(u, "_rebuild_tensor_v2: storage offset is not an int >= 0"); return NULL; }
        if (!(v = pth__new(u, PTH_TENSOR))) return NULL;
        if (!(t = (pth_tensor_ref *)calloc(1, sizeof *t))) { pth__ufail(u, "out of memory"); return NULL; }
        v->t = t;
        t->storage = args->items[0];
        t->offset = args->items[1]->i;
        if (pth__int_tuple(u, args->items[2], t->shape, &nd_size, "size") ||
            pth__int_tuple(u, args->items[3], t->stride, &nd_stride, "stride")) return NULL;
        if (nd_size != nd_stride) { pth__ufail(u, "tensor size has %d dimensions but stride %d", nd_size, nd_stride); return NULL; }
        t->ndim = nd_size;
        return v;
    }
    case PTH_G_PARAMETER:
    case PTH_G_PARAMETER_STATE:
        if (na < 1 || args->items[0]->kind != PTH_TENSOR) { pth__ufail(u, "%s: first argument is not a tensor", g->name); return NULL; }
        return args->items[0];
    case PTH_G_SIZE:
        if (na != 1 || args->items[0]->kind != PTH_TUPLE) { pth__ufail(u, "torch.Size: expected one tuple argument"); return NULL; }
        return args->items[0];
    case PTH_G_STORAGE:
        pth__ufail(u, "%s may only appear in a storage persistent id, not be called", g->name);
        return NULL;
    case PTH_G_CODECS_ENCODE: {
        /* _codecs.encode(text, 'latin1'): how protocol 2 pickles bytes */
        const pth_value *s;
        const unsigned char *p;
        size_t i, k = 0;
        if (na != 2 || args->items[0]->kind != PTH_STR || args->items[1]->kind != PTH_STR ||
            (strcmp(args->items[1]->s, "latin1") && strcmp(args->items[1]->s, "latin-1"))) {
            pth__ufail(u, "_codecs.encode: only (str, 'latin1') is supported");
            return NULL;
        }
        s = args->items[0];
        p = (const unsigned char *)s->s;
        if (!(v = pth__str(u, PTH_BYTES, p, s->len))) return NULL;
        for (i = 0; i < s->len; ++k) {      /* UTF-8 code points < 256 -> bytes */
            if (p[i] < 0x80) v->s[k] = (char)p[i++];
            else if ((p[i] & 0xFE) == 0xC2 && i + 1 < s->len && (p[i + 1] & 0xC0) == 0x80) {
                v->s[k] = (char)(((p[i] & 0x03) << 6) | (p[i + 1] & 0x3F));
                i += 2;
            } else { pth__ufail(u, "_codecs.encode: character outside latin-1"); return NULL; }
        }
        v->s[k] = 0;
        v->len = k;
        return v;
    }
    case PTH_G_NP_DTYPE:
        if (na < 1 || args->items[0]->kind != PTH_STR) { pth__ufail(u, "numpy.dtype: expected a type code"); return NULL; }
        if (!(v = pth__str(u, PTH_NPDTYPE, (const unsigned char *)args->items[0]->s, args->items[0]->len))) return NULL;
        return v;
    case PTH_G_NP_SCALAR: {
        /* numpy scalar(dtype, raw bytes): decoded for plain int/float codes */
        const pth_value *dt, *raw;
        unsigned char b[8];
        size_t es, i;
        char code;
        if (na != 2 || args->items[0]->kind != PTH_NPDTYPE || args->items[1]->kind != PTH_BYTES) {
            pth__ufail(u, "numpy scalar: expected (dtype, bytes)");
            return NULL;
        }
        dt = args->items[0];
        raw = args->items[1];
        code = dt->s[0];
        es = (dt->len == 2 && dt->s[1] >= '1' && dt->s[1] <= '8') ? (size_t)(dt->s[1] - '0') : 0;
        if (raw->len != es || !(code == 'f' ? (es == 4 || es == 8) : (code == 'i' || code == 'u' || code == 'b') ? (es == 1 || es == 2 || es == 4 || es == 8) : 0)) {
            if (!(v = pth__new(u, PTH_OPAQUE))) return NULL;
            if (!(v->s = pth__strndup("numpy scalar", 12))) { pth__ufail(u, "out of memory"); return NULL; }
            v->len = 12;
            return v;
        }
        for (i = 0; i < es; ++i) b[i] = (unsigned char)raw->s[dt->big ? es - 1 - i : i];
        if (code == 'f') {
            if (!(v = pth__new(u, PTH_FLOAT))) return NULL;
            if (es == 8) { uint64_t x = pth__rd64(b); memcpy(&v->f, &x, 8); }
            else { uint32_t x = pth__rd32(b); float f; memcpy(&f, &x, 4); v->f = f; }
        } else {
            int64_t x = 0;
            uint64_t ux = 0;
            if (code == 'i') pth__long(u, b, es, &x);
            else { for (i = 0; i < es; ++i) ux |= (uint64_t)b[i] << (8 * i); memcpy(&x, &ux, 8); }
            if (!(v = pth__new(u, code == 'b' ? PTH_BOOL : PTH_INT))) return NULL;
            v->i = code == 'b' ? (x != 0) : x;
        }
        return v;
    }
    case PTH_G_NP_ARRAY:
        if (!(v = pth__new(u, PTH_OPAQUE))) return NULL;
        if (!(v->s = pth__strndup("numpy array", 11))) { pth__ufail(u, "out of memory"); return NULL; }
        v->len = 11;
        return v;
    }
    pth__ufail(u, "cannot call %s", g->name);
    return NULL;
}

/* BINPERSID: ('storage', torch.<T>Storage, key, location, numel) */
static pth_value *pth__persistent(pth__up *u, const pth_value *pid) {
    const pth_value *cls;
    pth_value *v;
    if (pid->kind != PTH_TUPLE || pid->n != 5 || pid->items[0]->kind != PTH_STR || strcmp(pid->items[0]->s, "storage")) {
        pth__ufail(u, "persistent id is not ('storage', type, key, location, numel)");
        return NULL;
    }
    cls = pid->items[1];
    if (cls->kind != PTH_GLOBAL || pth__globals[cls->i].id != PTH_G_STORAGE) {
        pth__ufail(u, "persistent id: storage type is %s, not a torch storage class",
                   cls->kind == PTH_GLOBAL ? cls->s : pth__kind_name(cls->kind));
        return NULL;
    }
    if (pid->items[2]->kind != PTH_STR || pid->items[4]->kind != PTH_INT || pid->items[4]->i < 0) {
        pth__ufail(u, "persistent id: storage key must be a str and numel an int >= 0");
        return NULL;
    }
    if (strlen(pid->items[2]->s) != pid->items[2]->len || pid->items[2]->len == 0 || pid->items[2]->len > 200) {
        pth__ufail(u, "persistent id: invalid storage key");
        return NULL;
    }
    if (!(v = pth__str(u, PTH_STORAGE, (const unsigned char *)pid->items[2]->s, pid->items[2]->len))) return NULL;
    v->i = pth__globals[cls->i].stype;
    v->numel = pid->items[4]->i;
    return v;
}

/* Unpickles buf into c->obj. */
PTH_DEF int pth_unpickle(pth_checkpoint *c, const unsigned char *buf, size_t n) {
    pth__up u;
    int rc = -1;
    memset(&u, 0, sizeof u);
    u.c = c;
    u.p = buf;
    u.n = n;
    if (n > PTH_MAX_PICKLE) return pth__fail(c, "data.pkl: %llu bytes is too large", (unsigned long long)n);
#define PTH__NEED(k) do { if ((uint64_t)(k) > (uint64_t)(u.n - u.pos)) { pth__ufail(&u, "pickle truncated"); goto done; } } while (0)
#define PTH__TRY(x) do { if ((x) != 0) goto done; } while (0)
    for (;;) {
        pth_value *a, *b, *v;
        uint64_t len;
        int64_t iv;
        u.op_pos = u.pos;
        u.op = -1;
        if (u.pos >= u.n) { pth__fail(c, "data.pkl: pickle ended without STOP (truncated?)"); goto done; }
        u.op = u.p[u.pos++];
        switch (u.op) {
        case 0x80: PTH__NEED(1); /* PROTO */
            if (u.p[u.pos] > 5) { pth__ufail(&u, "pickle protocol %d is not supported", u.p[u.pos]); goto done; }
            u.pos += 1;
            break;
        case 0x95: PTH__NEED(8); u.pos += 8; break;  /* FRAME: a length hint only */
        case '.': /* STOP */
            if (!(v = pth__pop(&u))) goto done;
            c->obj = v;
            rc = 0;
            goto done;
        case '}': PTH__TRY(pth__push(&u, pth__new(&u, PTH_DICT))); break;
        case ']': PTH__TRY(pth__push(&u, pth__new(&u, PTH_LIST))); break;
        case ')': PTH__TRY(pth__push(&u, pth__new(&u, PTH_TUPLE))); break;
        case 'N': PTH__TRY(pth__push(&u, pth__new(&u, PTH_NONE))); break;
        case 0x88: case 0x89: /* NEWTRUE, NEWFALSE */
            if (!(v = pth__new(&u, PTH_BOOL))) goto done;
            v->i = u.op == 0x88;
            PTH__TRY(pth__push(&u, v));
            break;
        case '(': /* MARK */
            if (u.mn == u.mcap) {
                size_t nc = u.mcap ? 2 * u.mcap : 32;
                size_t *nm = (size_t *)realloc(u.marks, nc * sizeof *nm);
                if (!nm) { pth__ufail(&u, "out of memory"); goto done; }
                u.marks = nm;
                u.mcap = nc;
            }
            u.marks[u.mn++] = u.sn;
            break;
        case 'X': case 0x8c: case 0x8d: case 'B': case 'C': case 0x8e: case 'T': case 'U': {
            /* BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINBYTES, SHORT_BINBYTES, BINBYTES8,
               BINSTRING, SHORT_BINSTRING */
            int lb = (u.op == 0x8c || u.op == 'C' || u.op == 'U') ? 1 : (u.op == 0x8d || u.op == 0x8e) ? 8 : 4;
            pth_kind k = (u.op == 'X' || u.op == 0x8c || u.op == 0x8d || u.op == 'T' || u.op == 'U') ? PTH_STR : PTH_BYTES;
            PTH__NEED(lb);
            len = lb == 1 ? u.p[u.pos] : lb == 4 ? pth__rd32(u.p + u.pos) : pth__rd64(u.p + u.pos);
            if (u.op == 'T' && (len & 0x80000000u)) { pth__ufail(&u, "negative string length"); goto done; }
            u.pos += (size_t)lb;
            PTH__NEED(len);
            PTH__TRY(pth__push(&u, pth__str(&u, k, u.p + u.pos, (size_t)len)));
            u.pos += (size_t)len;
            break;
        }
        case 'q': PTH__NEED(1); PTH__TRY(pth__memo_put(&u, u.p[u.pos])); u.pos += 1; break;           /* BINPUT */
        case 'r': PTH__NEED(4); PTH__TRY(pth__memo_put(&u, pth__rd32(u.p + u.pos))); u.pos += 4; break; /* LONG_BINPUT */
        case 0x94: PTH__TRY(pth__memo_put(&u, u.memo_count)); break;                                   /* MEMOIZE */
        case 'h': PTH__NEED(1); PTH__TRY(pth__memo_get(&u, u.p[u.pos])); u.pos += 1; break;           /* BINGET */
        case 'j': PTH__NEED(4); PTH__TRY(pth__memo_get(&u, pth__rd32(u.p + u.pos))); u.pos += 4; break; /* LONG_BINGET */
        case 'J': PTH__NEED(4); PTH__TRY(pth__push(&u, pth__int(&u, (int32_t)pth__rd32(u.p + u.pos)))); u.pos += 4; break;
        case 'K': PTH__NEED(1); PTH__TRY(pth__push(&u, pth__int(&u, u.p[u.pos]))); u.pos += 1; break;
        case 'M': PTH__NEED(2); PTH__TRY(pth__push(&u, pth__int(&u, pth__rd16(u.p + u.pos)))); u.pos += 2; break;
        case 0x8a: case 0x8b: /* LONG1, LONG4 */
            PTH__NEED(u.op == 0x8a ? 1 : 4);
            len = u.op == 0x8a ? u.p[u.pos] : pth__rd32(u.p + u.pos);
            u.pos += u.op == 0x8a ? 1 : 4;
            PTH__NEED(len);
            PTH__TRY(pth__long(&u, u.p + u.pos, len, &iv));
            u.pos += (size_t)len;
            PTH__TRY(pth__push(&u, pth__int(&u, iv)));
            break;
        case 'G': { /* BINFLOAT: big-endian double */
            uint64_t x = 0;
            int k;
            PTH__NEED(8);
            for (k = 0; k < 8; ++k) x = (x << 8) | u.p[u.pos + (size_t)k];
            u.pos += 8;
            if (!(v = pth__new(&u, PTH_FLOAT))) goto done;
            memcpy(&v->f, &x, 8);
            PTH__TRY(pth__push(&u, v));
            break;
        }
        case 't': PTH__TRY(pth__push(&u, pth__pop_mark(&u, PTH_TUPLE))); break;  /* TUPLE */
        case 'l': PTH__TRY(pth__push(&u, pth__pop_mark(&u, PTH_LIST))); break;   /* LIST */
        case 0x85: PTH__TRY(pth__push(&u, pth__tuple_of(&u, 1))); break;
        case 0x86: PTH__TRY(pth__push(&u, pth__tuple_of(&u, 2))); break;
        case 0x87: PTH__TRY(pth__push(&u, pth__tuple_of(&u, 3))); break;
        case 'd': { /* DICT: pairs above the mark */
            int i;
            if (!(a = pth__pop_mark(&u, PTH_TUPLE))) goto done;
            if (a->n % 2) { pth__ufail(&u, "odd number of items for a dict"); goto done; }
            if (!(v = pth__new(&u, PTH_DICT))) goto done;
            for (i = 0; i < a->n; i += 2) PTH__TRY(pth__setitem(&u, v, a->items[i], a->items[i + 1]));
            PTH__TRY(pth__push(&u, v));
            break;
        }
        case 's': /* SETITEM */
            if (!(b = pth__pop(&u)) || !(a = pth__pop(&u)) || !(v = pth__top(&u))) goto done;
            PTH__TRY(pth__setitem(&u, v, a, b));
            break;
        case 'u': { /* SETITEMS */
            int i;
            if (!(a = pth__pop_mark(&u, PTH_TUPLE)) || !(v = pth__top(&u))) goto done;
            if (a->n % 2) { pth__ufail(&u, "odd number of items for SETITEMS"); goto done; }
            for (i = 0; i < a->n; i += 2) PTH__TRY(pth__setitem(&u, v, a->items[i], a->items[i + 1]));
            break;
        }
        case 'a': /* APPEND */
            if (!(b = pth__pop(&u)) || !(v = pth__top(&u))) goto done;
            if (v->kind != PTH_LIST) { pth__ufail(&u, "APPEND to a %s", pth__kind_name(v->kind)); goto done; }
            PTH__TRY(pth__append(&u, v, b));
            break;
        case 'e': { /* APPENDS */
            int i;
            if (!(a = pth__pop_mark(&u, PTH_TUPLE)) || !(v = pth__top(&u))) goto done;
            if (v->kind != PTH_LIST) { pth__ufail(&u, "APPENDS to a %s", pth__kind_name(v->kind)); goto done; }
            for (i = 0; i < a->n; ++i) PTH__TRY(pth__append(&u, v, a->items[i]));
            break;
        }
        case '0': if (!pth__pop(&u)) goto done; break;                         /* POP */
        case '1': if (!pth__pop_mark(&u, PTH_TUPLE)) goto done; break;         /* POP_MARK */
        case '2': if (!(v = pth__top(&u))) goto done; PTH__TRY(pth__push(&u, v)); break; /* DUP */
        case 'c': { /* GLOBAL "module\nname\n" */
            char mod[256], name[256];
            const unsigned char *e1, *e2;
            size_t l1, l2;
            e1 = (const unsigned char *)memchr(u.p + u.pos, '\n', u.n - u.pos);
            if (!e1) { pth__ufail(&u, "pickle truncated"); goto done; }
            l1 = (size_t)(e1 - (u.p + u.pos));
            e2 = (const unsigned char *)memchr(e1 + 1, '\n', u.n - u.pos - l1 - 1);
            if (!e2) { pth__ufail(&u, "pickle truncated"); goto done; }
            l2 = (size_t)(e2 - (e1 + 1));
            if (l1 >= sizeof mod || l2 >= sizeof name) { pth__ufail(&u, "global name too long"); goto done; }
            memcpy(mod, u.p + u.pos, l1); mod[l1] = 0;
            memcpy(name, e1 + 1, l2); name[l2] = 0;
            if (strlen(mod) != l1 || strlen(name) != l2) { pth__ufail(&u, "global name contains a NUL byte"); goto done; }
            u.pos += l1 + l2 + 2;
            PTH__TRY(pth__push_global(&u, mod, name));
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(b = pth__pop(&u)) || !(a = pth__pop(&u))) goto done;
            if (a->kind != PTH_STR || b->kind != PTH_STR || strlen(a->s) != a->len || strlen(b->s) != b->len || a->len > 255 || b->len > 255) {
                pth__ufail(&u, "STACK_GLOBAL needs two strings"); goto done;
            }
            PTH__TRY(pth__push_global(&u, a->s, b->s));
            break;
        case 'R': case 0x81: /* REDUCE, NEWOBJ */
            if (!(b = pth__pop(&u)) || !(a = pth__pop(&u))) goto done;
            if (u.op == 0x81 && (a->kind != PTH_GLOBAL || pth__globals[a->i].id != PTH_G_ORDEREDDICT)) {
                pth__ufail(&u, "NEWOBJ of %s is not supported", a->kind == PTH_GLOBAL ? a->s : pth__kind_name(a->kind));
                goto done;
            }
            PTH__TRY(pth__push(&u, pth__call(&u, a, b)));
            break;
        case 'Q': /* BINPERSID */
            if (!(a = pth__pop(&u))) goto done;
            PTH__TRY(pth__push(&u, pth__persistent(&u, a)));
            break;
        case 'b': /* BUILD: set state; ignored for the objects it is allowed on */
            if (!(b = pth__pop(&u)) || !(v = pth__top(&u))) goto done;
            if (v->kind == PTH_NPDTYPE) {
                if (b->kind == PTH_TUPLE && b->n > 1 && b->items[1]->kind == PTH_STR && !strcmp(b->items[1]->s, ">")) v->big = 1;
            } else if (v->kind != PTH_DICT && v->kind != PTH_OPAQUE && v->kind != PTH_TENSOR) {
                pth__ufail(&u, "BUILD on a %s is not supported", pth__kind_name(v->kind));
                goto done;
            }
            break;
        default:
            if (u.op >= 0x20 && u.op < 0x7f) pth__ufail(&u, "unsupported pickle opcode '%c'", u.op);
            else pth__ufail(&u, "unsupported pickle opcode");
            goto done;
        }
    }
#undef PTH__NEED
#undef PTH__TRY
done:
    free(u.stack);
    free(u.marks);
    free(u.memo);
    return rc;
}

/* ==== OPEN / CLOSE ===================================================================== */
PTH_DEF void pth_close(pth_checkpoint *c) {
    size_t i;
    int k;
    if (!c) return;
    for (i = 0; i < c->pool_n; ++i) {
        free(c->pool[i]->s);
        free(c->pool[i]->items);
        free(c->pool[i]->t);
        free(c->pool[i]);
    }
    free(c->pool);
    for (k = 0; k < c->n_entries; ++k) free(c->entries[k].name);
    free(c->entries);
    for (k = 0; k < c->count; ++k) { free(c->tensors[k].name); free(c->tensors[k].owned); }
    free(c->tensors);
    for (k = 0; k < c->meta_count; ++k) { free(c->meta_keys[k]); free(c->meta_values[k]); }
    free(c->meta_keys);
    free(c->meta_values);
    free(c->notes);
    free(c->root);
    free(c->file);
    memset(c, 0, sizeof *c);
}

/* Takes ownership of file (malloc'd, size bytes): zip, root folder, byte order, unpickle. */
static int pth__open_owned(pth_checkpoint *c, unsigned char *file, size_t size) {
    const unsigned char *pkl;
    uint64_t pkl_size;
    pth_zentry *z = NULL;
    char name[512];
    int k;
    c->file = file;
    c->size = size;
    if (pth__zip_open(c)) return -1;
    for (k = 0; k < c->n_entries; ++k) {
        const char *s = c->entries[k].name, *slash = strchr(s, '/');
        size_t l = strlen(s);
        int top = !slash && !strcmp(s, "data.pkl");
        int nested = slash && !strcmp(slash, "/data.pkl");
        if (!top && !nested) continue;
        if (z) return pth__fail(c, "zip holds several checkpoints ('%s' and '%s')", z->name, s);
        z = &c->entries[k];
        if (!(c->root = pth__strndup(s, l - 8 - (top ? 0 : 1)))) return pth__fail(c, "out of memory");
    }
    if (!z) return pth__fail(c, "no '<root>/data.pkl' in the zip: not a torch.save checkpoint");
    if (strlen(c->root) > 200) return pth__fail(c, "zip: root folder name too long");
    snprintf(name, sizeof name, "%s%sconstants.pkl", c->root, *c->root ? "/" : "");
    if (pth__zfind(c, name))
        return pth__fail(c, "'%s' is a TorchScript archive (torch.jit.save), not a torch.save checkpoint", name);
    snprintf(name, sizeof name, "%s%sbyteorder", c->root, *c->root ? "/" : "");
    if (pth__zfind(c, name)) {
        const unsigned char *bo;
        uint64_t bn;
        if (pth__zdata(c, pth__zfind(c, name), &bo, &bn)) return -1;
        if (bn == 3 && !memcmp(bo, "big", 3)) c->data_big_endian = 1;
        else if (!(bn == 6 && !memcmp(bo, "little", 6)))
            return pth__fail(c, "'%s' says neither 'little' nor 'big'", name);
    }
    if (pth__zdata(c, z, &pkl, &pkl_size)) return -1;
    return pth_unpickle(c, pkl, (size_t)pkl_size);
}

/* Opens a checkpoint held in memory (copied). Returns 0, or -1 with c->err set. */
PTH_DEF int pth_open_memory(pth_checkpoint *c, const void *buf, size_t size) {
    unsigned char *copy;
    memset(c, 0, sizeof *c);
    copy = (unsigned char *)malloc(size ? size : 1);
    if (!copy) return pth__fail(c, "out of memory (%llu bytes)", (unsigned long long)size);
    if (size) memcpy(copy, buf, size);
    return pth__open_owned(c, copy, size);
}

PTH_DEF int pth_open_file(pth_checkpoint *c, const char *path) {
    FILE *f;
    unsigned char *buf;
    long n;
    memset(c, 0, sizeof *c);
    if (!(f = fopen(path, "rb"))) return pth__fail(c, "cannot open '%s'", path);
    if (fgetc(f) == EOF && ferror(f)) { fclose(f); return pth__fail(c, "cannot read '%s' (a directory?)", path); }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return pth__fail(c, "cannot read '%s' (not a regular file?)", path);
    }
    buf = (unsigned char *)malloc((size_t)n + 1);
    if (!buf) { fclose(f); return pth__fail(c, "out of memory reading '%s' (%ld bytes)", path, n); }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(buf); return pth__fail(c, "cannot read '%s'", path); }
    fclose(f);
    if (pth__open_owned(c, buf, (size_t)n)) {
        char msg[sizeof c->err];
        snprintf(msg, sizeof msg, "%s", c->err);
        snprintf(c->err, sizeof c->err, "%.300s: %.700s", path, msg);
        return -1;
    }
    return 0;
}

/* ==== STATE-DICT EXTRACTION ============================================================ */
/* short description of a value for messages: "int 3", "dict (2 entries)" */
static void pth__describe(const pth_value *v, char *out, size_t n) {
    switch (v->kind) {
    case PTH_INT: snprintf(out, n, "int %lld", (long long)v->i); break;
    case PTH_BOOL: snprintf(out, n, "bool %s", v->i ? "True" : "False"); break;
    case PTH_FLOAT: snprintf(out, n, "float %.9g", v->f); break;
    case PTH_STR: snprintf(out, n, "str '%.40s%s'", v->s, v->len > 40 ? "..." : ""); break;
    case PTH_DICT: snprintf(out, n, "dict with %d entries", v->n); break;
    case PTH_LIST: case PTH_TUPLE: snprintf(out, n, "%s of %d items", pth__kind_name(v->kind), v->n); break;
    case PTH_OPAQUE: snprintf(out, n, "%s", v->s ? v->s : "object"); break;
    default: snprintf(out, n, "%s", pth__kind_name(v->kind)); break;
    }
}
static int pth__is_scalar(const pth_value *v) {
    return v->kind == PTH_INT || v->kind == PTH_FLOAT || v->kind == PTH_BOOL || v->kind == PTH_STR || v->kind == PTH_NONE;
}
static int pth__valid_key(const pth_value *k) {
    return k->kind == PTH_STR && strlen(k->s) == k->len && k->len > 0;
}
static int pth__tensor_count(const pth_value *d) {
    int i, n = 0;
    for (i = 0; i < d->n; ++i) n += d->items[2 * i + 1]->kind == PTH_TENSOR;
    return n;
}
static int pth__meta_add(pth_checkpoint *c, const char *key, const pth_value *v) {
    char val[64];
    const char *s = val;
    if (v->kind == PTH_INT) snprintf(val, sizeof val, "%lld", (long long)v->i);
    else if (v->kind == PTH_FLOAT) {   /* shortest text that reads back to the same double */
        int prec;
        for (prec = 1; prec <= 17; ++prec) {
            snprintf(val, sizeof val, "%.*g", prec, v->f);
            if (strtod(val, NULL) == v->f || v->f != v->f) break;
        }
    }
    else if (v->kind == PTH_BOOL) snprintf(val, sizeof val, "%s", v->i ? "True" : "False");
    else if (v->kind == PTH_NONE) snprintf(val, sizeof val, "None");
    else if (v->kind == PTH_STR && strlen(v->s) == v->len) s = v->s;
    else return 0;
    if (c->meta_count == c->meta_cap) {
        int nc = c->meta_cap ? 2 * c->meta_cap : 8;
        char **nk = (char **)realloc(c->meta_keys, (size_t)nc * sizeof(char *)), **nv;
        if (!nk) return pth__fail(c, "out of memory");
        c->meta_keys = nk;
        if (!(nv = (char **)realloc(c->meta_values, (size_t)nc * sizeof(char *)))) return pth__fail(c, "out of memory");
        c->meta_values = nv;
        c->meta_cap = nc;
    }
    c->meta_keys[c->meta_count] = pth__strndup(key, strlen(key));
    c->meta_values[c->meta_count] = pth__strndup(s, strlen(s));
    ++c->meta_count;
    if (!c->meta_keys[c->meta_count - 1] || !c->meta_values[c->meta_count - 1]) return pth__fail(c, "out of memory");
    return 0;
}

/* Reads one element of storage type st at p (file byte order) as host-order output. */
static void pth__convert(unsigned char *dst, const unsigned char *src, pth_stype st, int swap) {
    unsigned char b[8];
    int es = pth__stype_size[st], k;
    for (k = 0; k < es; ++k) b[k] = src[swap ? es - 1 - k : k];   /* now host order */
    if (st == PTH_S_F64) {
        double d;
        float f;
        memcpy(&d, b, 8);
        f = (float)d;
        memcpy(dst, &f, 4);
    } else if (st == PTH_S_I8) {
        int16_t x = (int16_t)(int8_t)b[0];
        memcpy(dst, &x, 2);
    } else {
        memcpy(dst, b, (size_t)es);
    }
}

static int pth__add_tensor(pth_checkpoint *c, const char *net, const char *key, const pth_value *tv) {
    const pth_tensor_ref *r = tv->t;
    const pth_value *st = r->storage;
    pth_stype stype = (pth_stype)st->i;
    int es = pth__stype_size[stype], d, contiguous = 1, swap;
    size_t oes = higan_dtype_size(pth__stype_out[stype]);
    char ename[512], shp[160], strd[160];
    pth_zentry *z;
    const unsigned char *data;
    uint64_t bytes, numel = 1, extent = 0, expect = 1, avail;
    pth_tensor *t;
    size_t nl = strlen(net) + 1 + strlen(key);
    shp[0] = strd[0] = 0;
    for (d = 0; d < r->ndim; ++d) {
        snprintf(shp + strlen(shp), sizeof shp - strlen(shp), "%s%lld", d ? "," : "", (long long)r->shape[d]);
        snprintf(strd + strlen(strd), sizeof strd - strlen(strd), "%s%lld", d ? "," : "", (long long)r->stride[d]);
    }
    /* element count and the highest element reached, overflow-checked (all values >= 0) */
    for (d = 0; d < r->ndim; ++d) {
        uint64_t s = (uint64_t)r->shape[d];
        if (s && numel > ((uint64_t)1 << 62) / s) return pth__fail(c, "tensor '%s.%s': shape [%s] too large", net, key, shp);
        numel *= s;
    }
    if (numel) {
        extent = (uint64_t)r->offset;
        for (d = 0; d < r->ndim; ++d) {
            uint64_t s = (uint64_t)r->shape[d] - 1, str = (uint64_t)r->stride[d];
            if (str && s > (((uint64_t)1 << 62) - extent) / str)
                return pth__fail(c, "tensor '%s.%s': offset %lld, shape [%s], stride [%s] overflow",
                                 net, key, (long long)r->offset, shp, strd);
            extent += s * str;
        }
    }
    for (d = r->ndim - 1; d >= 0; --d) {
        if (r->shape[d] != 1 && (uint64_t)r->stride[d] != expect) contiguous = 0;
        expect *= (uint64_t)r->shape[d];
    }
    snprintf(ename, sizeof ename, "%s%sdata/%s", c->root, *c->root ? "/" : "", st->s);
    if (!(z = pth__zfind(c, ename)))
        return pth__fail(c, "tensor '%s.%s': its storage '%s' (key '%s') is not in the zip", net, key, ename, st->s);
    if (pth__zdata(c, z, &data, &bytes)) return -1;
    if (bytes % (uint64_t)es)
        return pth__fail(c, "storage '%s' has %llu bytes, not a multiple of the %s element size %d",
                         ename, (unsigned long long)bytes, pth__stype_names[stype], es);
    avail = bytes / (uint64_t)es;
    if ((uint64_t)st->numel > avail)
        return pth__fail(c, "storage '%s' holds %llu %s elements but the pickle says %lld (truncated?)",
                         ename, (unsigned long long)avail, pth__stype_names[stype], (long long)st->numel);
    if (numel && extent >= (uint64_t)st->numel)
        return pth__fail(c, "tensor '%s.%s' (offset %lld, shape [%s], stride [%s]) reaches element %llu but storage '%s' "
                            "holds %lld elements (offset out of range)", net, key, (long long)r->offset, shp, strd,
                         (unsigned long long)extent, ename, (long long)st->numel);
    if (c->count == c->cap) {
        int nc = c->cap ? 2 * c->cap : 64;
        pth_tensor *nt = (pth_tensor *)realloc(c->tensors, (size_t)nc * sizeof *nt);
        if (!nt) return pth__fail(c, "out of memory");
        c->tensors = nt;
        c->cap = nc;
    }
    t = &c->tensors[c->count];
    memset(t, 0, sizeof *t);
    if (!(t->name = (char *)malloc(nl + 1))) return pth__fail(c, "out of memory");
    snprintf(t->name, nl + 1, "%s.%s", net, key);
    ++c->count;
    t->dtype = pth__stype_out[stype];
    t->ndim = r->ndim;
    for (d = 0; d < r->ndim; ++d) t->shape[d] = r->shape[d];
    t->numel = (int64_t)numel;
    swap = es > 1 && c->data_big_endian != pth__host_big();
    if (numel == 0) {
        t->data = NULL;
    } else if (contiguous && !swap && oes == (size_t)es && stype != PTH_S_BOOL) {
        t->data = data + (size_t)r->offset * (size_t)es;    /* zero copy */
    } else {
        /* gather a strided view and/or convert elements (odometer over the index) */
        int64_t idx[PTH_MAX_DIMS];
        uint64_t i, off = (uint64_t)r->offset;
        unsigned char *out;
        if (numel > (uint64_t)SIZE_MAX / oes) return pth__fail(c, "tensor '%s' too large", t->name);
        if (!(out = (unsigned char *)malloc((size_t)(numel * oes)))) return pth__fail(c, "out of memory (tensor '%s')", t->name);
        t->owned = out;
        t->data = out;
        for (d = 0; d < r->ndim; ++d) idx[d] = 0;
        for (i = 0; i < numel; ++i) {
            pth__convert(out + i * oes, data + off * (uint64_t)es, stype, swap);
            if (stype == PTH_S_BOOL) out[i] = out[i] != 0;
            for (d = r->ndim - 1; d >= 0; --d) {
                off += (uint64_t)r->stride[d];
                if (++idx[d] < r->shape[d]) break;
                off -= (uint64_t)r->stride[d] * (uint64_t)r->shape[d];
                idx[d] = 0;
            }
        }
        if (!contiguous) pth__note(c, "%s: non-contiguous view (shape [%s], stride [%s]) gathered", t->name, shp, strd);
        if (stype == PTH_S_F64 || stype == PTH_S_I8 || stype == PTH_S_BOOL)
            pth__note(c, "%s: %s converted to %s", t->name, pth__stype_names[stype], higan_dtype_name(t->dtype));
    }
    return 0;
}

/* Adds every tensor of a state dict (a dict of str -> tensor) under net. */
static int pth__add_state_dict(pth_checkpoint *c, const char *net, const pth_value *sd) {
    int i;
    for (i = 0; i < sd->n; ++i) {
        const pth_value *k = sd->items[2 * i], *v = sd->items[2 * i + 1];
        char desc[128];
        if (!pth__valid_key(k)) return pth__fail(c, "state dict '%s' has a %s key (expected a non-empty str)", net, pth__kind_name(k->kind));
        if (v->kind == PTH_TENSOR) {
            if (pth__add_tensor(c, net, k->s, v)) return -1;
        } else {
            pth__describe(v, desc, sizeof desc);
            pth__note(c, "skipped %s.%s (%s): not a tensor", net, k->s, desc);
        }
    }
    return 0;
}

static int pth__in_list(const char *list, const char *name) {
    size_t n = strlen(name);
    const char *p = list;
    while (p && *p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        while (l && *p == ' ') { ++p; --l; }
        while (l && p[l - 1] == ' ') --l;
        if (l == n && !strncmp(p, name, n)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* Fills c->tensors. prefix == NULL: the top level is a dict of networks (dicts of tensors),
   each tensor named "<Network>.<key>"; only (comma-separated network names or NULL) selects
   some. prefix != NULL: the top level is one state dict, named "<prefix>.<key>".
   Non-tensor entries are skipped with a note; top-level scalars become metadata. */
PTH_DEF int pth_extract(pth_checkpoint *c, const char *prefix, const char *only) {
    const pth_value *top = c->obj;
    int i, n_nets = 0, n_top_tensors = 0;
    char names[512], skipped[768], desc[128];
    if (!top) return pth__fail(c, "no checkpoint loaded");
    if (top->kind != PTH_DICT)
        return pth__fail(c, "the checkpoint holds a %s, not a dict (state dict or dict of state dicts)", pth__kind_name(top->kind));
    names[0] = skipped[0] = 0;
    for (i = 0; i < top->n; ++i) {
        const pth_value *k = top->items[2 * i], *v = top->items[2 * i + 1];
        if (v->kind == PTH_TENSOR) ++n_top_tensors;
        if (v->kind == PTH_DICT && pth__tensor_count(v) > 0 && pth__valid_key(k)) {
            ++n_nets;
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", n_nets > 1 ? ", " : "", k->s);
        }
    }
    if (prefix) {
        if (only) return pth__fail(c, "--only selects networks of a nested checkpoint; it cannot be used with --prefix");
        if (!*prefix || strchr(prefix, '.')) return pth__fail(c, "--prefix '%s': give a network name without dots", prefix);
        if (n_top_tensors == 0) {
            if (n_nets) return pth__fail(c, "no tensors at the top level: this is a checkpoint of several networks (%s); "
                                            "leave out --prefix", names);
            return pth__fail(c, "no tensors at the top level of the checkpoint");
        }
        return pth__add_state_dict(c, prefix, top);
    }
    if (n_nets == 0) {
        if (n_top_tensors) return pth__fail(c, "this is a plain state dict (%d tensors at the top level): pass --prefix <Network> "
                                               "to name its tensors", n_top_tensors);
        return pth__fail(c, "no networks (dicts of tensors) in the checkpoint");
    }
    if (only) {   /* every requested name must be a network */
        const char *p = only;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            char want[256];
            int j, ok = 0;
            while (l && *p == ' ') { ++p; --l; }
            while (l && p[l - 1] == ' ') --l;
            if (l == 0 || l >= sizeof want) return pth__fail(c, "--only: empty or too long network name in '%s'", only);
            memcpy(want, p, l);
            want[l] = 0;
            for (j = 0; j < top->n && !ok; ++j) {
                const pth_value *k = top->items[2 * j], *v = top->items[2 * j + 1];
                if (pth__valid_key(k) && !strcmp(k->s, want)) {
                    if (!(v->kind == PTH_DICT && pth__tensor_count(v) > 0))
                        return pth__fail(c, "--only: '%s' is not a network (it holds no tensors); networks: %s", want, names);
                    ok = 1;
                }
            }
            if (!ok) return pth__fail(c, "--only: no network '%s' in the checkpoint; networks: %s", want, names);
            if (!e) break;
            p = e + 1;
        }
    }
    for (i = 0; i < top->n; ++i) {
        const pth_value *k = top->items[2 * i], *v = top->items[2 * i + 1];
        int is_net = v->kind == PTH_DICT && pth__tensor_count(v) > 0 && pth__valid_key(k);
        if (is_net) {
            if (only && !pth__in_list(only, k->s)) { pth__note(c, "network %s not selected (--only)", k->s); continue; }
            if (pth__add_state_dict(c, k->s, v)) return -1;
            continue;
        }
        pth__describe(v, desc, sizeof desc);
        if (pth__valid_key(k) && !strncmp(k->s, "OPT.", 4) && v->kind == PTH_DICT)
            snprintf(desc + strlen(desc), sizeof desc - strlen(desc), ": optimizer state, not exported");
        if (pth__valid_key(k) && pth__is_scalar(v)) {
            if (pth__meta_add(c, k->s, v)) return -1;
            snprintf(desc + strlen(desc), sizeof desc - strlen(desc), ", kept as metadata");
        }
        if (strlen(skipped) + 80 < sizeof skipped)
            snprintf(skipped + strlen(skipped), sizeof skipped - strlen(skipped), "%s%s (%s)", *skipped ? ", " : "",
                     pth__valid_key(k) ? k->s : "<non-str key>", desc);
    }
    if (*skipped) pth__note(c, "skipped non-network entries: %s", skipped);
    return 0;
}

/* Adds every extracted tensor and the metadata to w (data referenced: keep c open). */
PTH_DEF int pth_add_to_writer(pth_checkpoint *c, higan_safetensors_writer *w) {
    int i;
    if (higan_safetensors_writer_meta(w, "format", "pt") != HIGAN_OK) return pth__fail(c, "%s", higan_last_error());
    for (i = 0; i < c->meta_count; ++i)
        if (higan_safetensors_writer_meta(w, c->meta_keys[i], c->meta_values[i]) != HIGAN_OK)
            return pth__fail(c, "%s", higan_last_error());
    for (i = 0; i < c->count; ++i) {
        const pth_tensor *t = &c->tensors[i];
        if (higan_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data) != HIGAN_OK)
            return pth__fail(c, "%s", higan_last_error());
    }
    return 0;
}

#endif /* HIGAN_PTH_H */
