/* data_tools/pth.h: torch.save checkpoints (zip + safe pickle subset) -> higan safetensors.
   Fixtures from tests/oracle/make_pth.py (PyTorch-written checkpoints and the expected
   tensors as safetensors): every converted tensor must match bit for bit (dtype, shape,
   bytes), also after a round trip through the safetensors writer. Malicious and corrupt
   inputs (os.system in the pickle, unknown opcodes, missing storages, out-of-range views,
   DEFLATE entries, legacy format, every truncation, byte flips of the zip and of the
   pickle) must fail with a message naming the problem and never crash: run once under
   valgrind -q --error-exitcode=9. */
#define HIGAN_IMPLEMENTATION
#include "higan.h"
#include "check.h"
#include "data_tools/pth.h"

#define FIX "tests/oracle/"

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
static int host_is_little(void) { const uint16_t one = 1; return *(const unsigned char *)&one == 1; }

static const pth_tensor *find_tensor(const pth_checkpoint *c, const char *name) {
    int i;
    for (i = 0; i < c->count; ++i)
        if (!strcmp(c->tensors[i].name, name)) return &c->tensors[i];
    return NULL;
}
static const char *meta(const pth_checkpoint *c, const char *key) {
    int i;
    for (i = 0; i < c->meta_count; ++i)
        if (!strcmp(c->meta_keys[i], key)) return c->meta_values[i];
    return NULL;
}

/* every tensor of the expected file, bit for bit (the fixtures are little-endian) */
static int same_as_expected(const char *label, const pth_checkpoint *c, const higan_safetensors *exp) {
    int i, d, bad = 0;
    if (c->count != exp->count) {
        printf("      %s: %d tensors converted, %d expected\n", label, c->count, exp->count);
        ++bad;
    }
    for (i = 0; i < exp->count; ++i) {
        const higan_st_tensor *e = &exp->tensors[i];
        const pth_tensor *t = find_tensor(c, e->name);
        size_t bytes = (size_t)(e->end - e->begin);
        if (!t) { printf("      %s: '%s' missing\n", label, e->name); ++bad; continue; }
        if (t->dtype != e->dtype || t->ndim != e->ndim || t->numel != e->numel) {
            printf("      %s: '%s': dtype %s ndim %d numel %lld, expected %s %d %lld\n", label, e->name,
                   higan_dtype_name(t->dtype), t->ndim, (long long)t->numel, higan_dtype_name(e->dtype), e->ndim, (long long)e->numel);
            ++bad;
            continue;
        }
        for (d = 0; d < e->ndim; ++d)
            if (t->shape[d] != e->shape[d]) { printf("      %s: '%s': shape differs in dim %d\n", label, e->name, d); ++bad; }
        if (bytes != (size_t)t->numel * higan_dtype_size(t->dtype) || (bytes && memcmp(t->data, exp->data + e->begin, bytes))) {
            printf("      %s: '%s': data differs\n", label, e->name);
            ++bad;
        }
    }
    return bad == 0;
}

/* writer -> file -> reader gives the same tensors as the expected file */
static int roundtrip_same(const char *label, pth_checkpoint *c, const higan_safetensors *exp) {
    const char *tmp = "build/test_pth_roundtrip.safetensors";
    higan_safetensors_writer w;
    higan_safetensors st;
    int i, ok = 1;
    higan_safetensors_writer_init(&w);
    if (pth_add_to_writer(c, &w) != 0 || higan_safetensors_writer_save(&w, tmp) != HIGAN_OK) {
        printf("      %s: write failed: %s %s\n", label, c->err, higan_last_error());
        higan_safetensors_writer_free(&w);
        return 0;
    }
    higan_safetensors_writer_free(&w);
    if (higan_safetensors_load(&st, tmp) != HIGAN_OK) { printf("      %s: %s\n", label, higan_last_error()); return 0; }
    ok = st.count == exp->count;
    for (i = 0; i < exp->count && ok; ++i) {
        const higan_st_tensor *e = &exp->tensors[i], *g = higan_safetensors_find(&st, e->name);
        int d;
        if (!g || g->dtype != e->dtype || g->ndim != e->ndim || g->end - g->begin != e->end - e->begin ||
            memcmp(st.data + g->begin, exp->data + e->begin, e->end - e->begin)) { printf("      %s: '%s' differs after the round trip\n", label, e->name); ok = 0; break; }
        for (d = 0; d < e->ndim; ++d) ok &= g->shape[d] == e->shape[d];
    }
    if (ok) ok = higan_safetensors_meta(&st, "format") && !strcmp(higan_safetensors_meta(&st, "format"), "pt");
    for (i = 0; i < c->meta_count && ok; ++i) {
        const char *v = higan_safetensors_meta(&st, c->meta_keys[i]);
        ok = v && !strcmp(v, c->meta_values[i]);
    }
    higan_safetensors_free(&st);
    remove(tmp);
    return ok;
}

static void convert_and_compare(const char *pth, const char *expected, const char *prefix, const char *only) {
    pth_checkpoint c;
    higan_safetensors exp;
    char label[256];
    snprintf(label, sizeof label, "%s%s%s", pth, prefix ? " --prefix " : "", prefix ? prefix : "");
    if (!check_open_fixture(&exp, expected)) return;
    if (pth_open_file(&c, pth) != 0 || pth_extract(&c, prefix, only) != 0) {
        CHECK(0, "%s: %s", label, c.err);
    } else {
        CHECK(host_is_little(), "host is little-endian (the expected fixtures are; big-endian hosts compare values)");
        CHECK(same_as_expected(label, &c, &exp), "%s: %d tensors equal to PyTorch's bit for bit", label, c.count);
        CHECK(roundtrip_same(label, &c, &exp), "%s: same tensors and metadata after the safetensors round trip", label);
    }
    pth_close(&c);
    higan_safetensors_free(&exp);
}

static void test_nested(void) {
    pth_checkpoint c;
    const pth_tensor *t;
    int i, in_file = 0;
    convert_and_compare(FIX "pth_nested.pth", "pth_nested_expected.safetensors", NULL, NULL);
    if (pth_open_file(&c, FIX "pth_nested.pth") || pth_extract(&c, NULL, NULL)) {
        CHECK(0, "pth_nested: %s", c.err);
        pth_close(&c);
        return;
    }
    CHECK(c.root && !strcmp(c.root, "pth_nested"), "root folder found by search: '%s'", c.root ? c.root : "");
    CHECK(c.notes && strstr(c.notes, "OPT.G (dict") && strstr(c.notes, "optimizer state") && strstr(c.notes, "Epoch (int 3"),
          "skipped entries are listed (Epoch, OPT.G)");
    CHECK(c.notes && strstr(c.notes, "Generator.shared.t: non-contiguous") && strstr(c.notes, "Generator.f64: float64 converted to F32") &&
          strstr(c.notes, "int8 converted to I16") && strstr(c.notes, "bool converted to U8"), "gathers and conversions are noted");
    CHECK(meta(&c, "Epoch") && !strcmp(meta(&c, "Epoch"), "3") && meta(&c, "fid") && !strcmp(meta(&c, "fid"), "12.25") &&
          meta(&c, "WER") && !strcmp(meta(&c, "WER"), "0.125") && meta(&c, "note") && !strcmp(meta(&c, "note"), "hello"),
          "top-level scalars (int, numpy float64, float, str) kept as metadata");
    t = find_tensor(&c, "StyleEncoder.1.num_batches_tracked");
    CHECK(t && t->dtype == HIGAN_I64 && t->ndim == 0 && *(const int64_t *)t->data == 2, "num_batches_tracked: 0-d I64 = 2");
    t = find_tensor(&c, "Generator.shared.view");
    if (t) in_file = (const unsigned char *)t->data >= c.file && (const unsigned char *)t->data < c.file + c.size;
    CHECK(in_file, "a contiguous view at a storage offset is read in place (no copy)");
    for (i = 0; i < c.count; ++i)
        if (!strncmp(c.tensors[i].name, "OPT", 3)) break;
    CHECK(i == c.count, "no optimizer tensors exported");
    pth_close(&c);

    /* --only */
    if (pth_open_file(&c, FIX "pth_nested.pth") == 0 && pth_extract(&c, NULL, " Generator ") == 0) {
        CHECK(c.count == 21 && find_tensor(&c, "Generator.param") && !find_tensor(&c, "StyleEncoder.0.weight") &&
              strstr(c.notes, "network StyleEncoder not selected"), "--only Generator: 21 tensors");
    } else CHECK(0, "--only Generator: %s", c.err);
    pth_close(&c);
    if (pth_open_file(&c, FIX "pth_nested.pth") == 0)
        CHECK(pth_extract(&c, NULL, "StyleEncoder,Generator") == 0 && c.count == 28, "--only StyleEncoder,Generator: all 28");
    pth_close(&c);
    pth_open_file(&c, FIX "pth_nested.pth");
    CHECK(pth_extract(&c, NULL, "Generator,StyleBackbone") != 0 && strstr(c.err, "no network 'StyleBackbone'") &&
          strstr(c.err, "networks: Generator, StyleEncoder"), "--only with an absent network: %s", c.err);
    pth_close(&c);
    pth_open_file(&c, FIX "pth_nested.pth");
    CHECK(pth_extract(&c, NULL, "OPT.G") != 0 && strstr(c.err, "'OPT.G' is not a network"), "--only OPT.G: %s", c.err);
    pth_close(&c);
    pth_open_file(&c, FIX "pth_nested.pth");
    CHECK(pth_extract(&c, "Generator", NULL) != 0 && strstr(c.err, "leave out --prefix"), "--prefix on a nested checkpoint: %s", c.err);
    pth_close(&c);
}

static void test_plain_and_handmade(void) {
    pth_checkpoint c;
    convert_and_compare(FIX "pth_plain.pth", "pth_plain_expected.safetensors", "StyleBackbone", NULL);
    pth_open_file(&c, FIX "pth_plain.pth");
    CHECK(pth_extract(&c, NULL, NULL) != 0 && strstr(c.err, "plain state dict") && strstr(c.err, "--prefix"),
          "plain state dict without --prefix: %s", c.err);
    pth_close(&c);
    pth_open_file(&c, FIX "pth_plain.pth");
    CHECK(pth_extract(&c, "Style.Backbone", NULL) != 0 && strstr(c.err, "without dots"), "--prefix with a dot: %s", c.err);
    pth_close(&c);
    convert_and_compare(FIX "pth_zip64.pth", "pth_handmade_expected.safetensors", NULL, NULL);
    convert_and_compare(FIX "pth_bigendian.pth", "pth_handmade_expected.safetensors", NULL, NULL);
    if (pth_open_file(&c, FIX "pth_zip64.pth") == 0 && pth_extract(&c, NULL, NULL) == 0)
        CHECK(!strcmp(c.root, "some_root") && meta(&c, "Epoch") && !strcmp(meta(&c, "Epoch"), "1099511627776") &&
              meta(&c, "lr") && !strcmp(meta(&c, "lr"), "0.0002") && !strcmp(meta(&c, "flag"), "True"),
              "ZIP64 + protocol 4: root 'some_root', LONG1 Epoch 2^40, lr 0.0002");
    else CHECK(0, "pth_zip64: %s", c.err);
    pth_close(&c);
}

typedef struct bad_case { const char *file, *expect; } bad_case;
static void test_bad_files(void) {
    static const bad_case cases[] = {
        {"pth_evil_global.pth", "global 'os.system' is not allowed"},
        {"pth_evil_opcode.pth", "unsupported pickle opcode (opcode 0xff at byte 12)"},
        {"pth_bad_key.pth", "storage 'r/data/99' (key '99') is not in the zip"},
        {"pth_bad_offset.pth", "reaches element 4 but storage 'r/data/0' holds 4 elements (offset out of range)"},
        {"pth_bad_numel.pth", "holds 4 float32 elements but the pickle says 10"},
        {"pth_deflate.pth", "compressed entry not supported"},
        {"pth_legacy.pth", "legacy torch.save format"},
        {"does_not_exist.pth", "cannot open"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        pth_checkpoint c;
        char path[256];
        int rc;
        snprintf(path, sizeof path, FIX "%s", cases[i].file);
        rc = pth_open_file(&c, path);
        if (rc == 0) rc = pth_extract(&c, NULL, NULL);
        CHECK(rc != 0 && strstr(c.err, cases[i].expect) != NULL, "%s fails: %s", cases[i].file, c.err);
        pth_close(&c);
    }
}

/* ---- pickles written by hand ---------------------------------------------------------- */
typedef struct pkl_case { const char *bytes; size_t n; const char *expect; } pkl_case;
#define P(s, e) {s, sizeof(s) - 1, e}
static void test_pickles(void) {
    static const pkl_case bad[] = {
        P("\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00hi\x85R.", "global 'os.system' is not allowed"),
        P("\x80\x02" "c__builtin__\neval\n.", "global '__builtin__.eval'"),
        P("\x80\x04\x8c\x05posix\x94\x8c\x06system\x94\x93.", "global 'posix.system'"),
        P("\x80\x02" "ctorch.storage\n_load_from_bytes\n.", "_load_from_bytes' (a storage saved in the legacy format"),
        P("\x80\x02" "c__torch__.Foo\nBar\n.", "TorchScript archive"),
        P("\x80\x02" "cos\nsystem", "pickle truncated"),
        P("\x80\x02}\xff.", "unsupported pickle opcode (opcode 0xff at byte 3)"),
        P("\x80\x02I1\n.", "unsupported pickle opcode 'I'"),
        P("\x80\x02" "h\x05.", "memo index 5 was never stored"),
        P("\x80\x02K\x01r\xff\xff\xff\xff.", "memo index 4294967295 is implausibly large"),
        P("\x80\x02s.", "stack underflow"),
        P("\x80\x02q\x00.", "stack underflow"),
        P("\x80\x02(.", "stack underflow"),                /* STOP cannot pop below a MARK */
        P("\x80\x02t.", "no MARK on the stack"),
        P("\x80\x02X\xff\xff\xff\x7f" "abc.", "pickle truncated"),
        P("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff" "a.", "pickle truncated"),
        P("\x80\x02}", "pickle ended without STOP"),
        P("", "pickle ended without STOP"),
        P("\x80\x06.", "pickle protocol 6 is not supported"),
        P("\x80\x02\x8a\x09" "AAAAAAAAA.", "integer of 9 bytes does not fit in 64 bits"),
        P("\x80\x02\x8b\x09\x00\x00\x00" "AAAAAAAAA.", "integer of 9 bytes does not fit in 64 bits"),
        P("\x80\x02\x8b\x00\x00\x00\x80.", "pickle truncated"),
        P("\x80\x02" "ctorch\nFloatStorage\n)R.", "torch.FloatStorage may only appear in a storage persistent id"),
        P("\x80\x02K\x01K\x02R.", "cannot call a int"),
        P("\x80\x02" "ccollections\nOrderedDict\nK\x01R.", "arguments of collections.OrderedDict are a int"),
        P("\x80\x02" "ccollections\nOrderedDict\nK\x01\x85R.", "OrderedDict called with 1 arguments"),
        P("\x80\x02(X\x07\x00\x00\x00storageK\x00X\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x04tQ.", "storage type is int"),
        P("\x80\x02(X\x03\x00\x00\x00" "fooK\x00tQ.", "persistent id is not ('storage'"),
        P("\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nK\x00X\x03\x00\x00\x00" "cpuK\x04tQ.", "storage key must be a str"),
        P("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)R.", "_rebuild_tensor_v2 with 0 arguments"),
        P("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n(K\x00K\x00)))\x89}tR.", "first argument is a int, not a storage"),
        /* a storage, then offsets/sizes/strides that are not allowed */
        P("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x04tQ"
          "J\xff\xff\xff\xff)))\x89}tR.", "storage offset is not an int >= 0"),
        P("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x04tQ"
          "K\x00K\x02\x85J\xff\xff\xff\xff\x85\x89}tR.", "stride has a negative element -1"),
        P("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x04tQ"
          "K\x00(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01t(K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01K\x01t\x89}tR.", "tensor with 9 dimensions"),
        P("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x04tQ"
          "K\x00K\x02\x85)\x89}tR.", "size has 1 dimensions but stride 0"),
        P("\x80\x02" "ctorch._utils\n_rebuild_parameter\nK\x01\x85R.", "_rebuild_parameter: first argument is not a tensor"),
        P("\x80\x02" "ctorch\nComplexFloatStorage\n.", "global 'torch.ComplexFloatStorage' is not allowed"),
        P("\x80\x02}K\x01" "a.", "APPEND to a dict"),
        P("\x80\x02]K\x01K\x02s.", "SETITEM on a list"),
        P("\x80\x02]K\x01" "b.", "BUILD on a list"),
        P("\x80\x02(K\x01" "d.", "odd number of items for a dict"),
        P("\x80\x02" "ccollections\nOrderedDict\n)\x81" "cos\nsystem\n).", "global 'os.system'"),
        P("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)\x81.", "NEWOBJ of torch._utils._rebuild_tensor_v2 is not supported"),
        P("\x80\x02" "c_codecs\nencode\nX\x02\x00\x00\x00\xe2\x82X\x06\x00\x00\x00latin1\x86R.", "character outside latin-1"),
        P("\x80\x02" "c_codecs\nencode\nX\x01\x00\x00\x00" "aX\x05\x00\x00\x00utf-8\x86R.", "only (str, 'latin1')"),
        P("\x80\x02" "cos\x00x\nsystem\n.", "global name contains a NUL byte"),
    };
    size_t i;
    pth_checkpoint c;
    for (i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        int rc;
        memset(&c, 0, sizeof c);
        rc = pth_unpickle(&c, (const unsigned char *)bad[i].bytes, bad[i].n);
        CHECK(rc != 0 && strstr(c.err, bad[i].expect) != NULL, "bad pickle %d rejected: %s", (int)i, c.err);
        pth_close(&c);
    }
    /* accepted opcodes build the right tree */
    memset(&c, 0, sizeof c);
    {
        static const char ok[] = "\x80\x02]q\x00(K\x01M\x00\x01J\xff\xff\xff\xff\x8a\x02\x00\x80" "2eh\x00" "0(N\x88\x89G\x3f\xf8\x00\x00\x00\x00\x00\x00" "1"
                                 "(X\x01\x00\x00\x00" "aK\x05U\x01" "bK\x06" "d\x8c\x01x\x94\x87.";
        int rc = pth_unpickle(&c, (const unsigned char *)ok, sizeof ok - 1);
        const pth_value *v = c.obj;
        CHECK(rc == 0 && v && v->kind == PTH_TUPLE && v->n == 3 && v->items[0]->kind == PTH_LIST && v->items[0]->n == 5 &&
              v->items[0]->items[0]->i == 1 && v->items[0]->items[1]->i == 256 && v->items[0]->items[2]->i == -1 &&
              v->items[0]->items[3]->i == -32768 && v->items[0]->items[4]->i == -32768 &&
              v->items[1]->kind == PTH_DICT && v->items[1]->n == 2 && v->items[2]->kind == PTH_STR && !strcmp(v->items[2]->s, "x"),
              "list/APPENDS/DUP/POP/POP_MARK/dict/BININT*/LONG1/MEMOIZE/TUPLE3 parse: %s", c.err);
    }
    pth_close(&c);
    /* a self-containing list (cycle) is harmless: nothing walks the tree recursively */
    memset(&c, 0, sizeof c);
    CHECK(pth_unpickle(&c, (const unsigned char *)"\x80\x02]q\x00h\x00" "a.", 9) == 0 && c.obj->n == 1 && c.obj->items[0] == c.obj &&
          pth_extract(&c, NULL, NULL) != 0 && strstr(c.err, "holds a list, not a dict"), "cyclic list: parsed, then rejected: %s", c.err);
    pth_close(&c);
    memset(&c, 0, sizeof c);
    CHECK(pth_unpickle(&c, (const unsigned char *)"\x80\x02}q\x00X\x01\x00\x00\x00" "ah\x00s.", 15) == 0 &&
          pth_extract(&c, NULL, NULL) != 0 && strstr(c.err, "no networks"), "cyclic dict: rejected: %s", c.err);
    pth_close(&c);
}

/* ---- truncation and corruption sweeps ------------------------------------------------- */
static const pth_zentry *entry_named(const pth_checkpoint *c, const char *suffix) {
    int i;
    size_t l = strlen(suffix);
    for (i = 0; i < c->n_entries; ++i) {
        size_t n = strlen(c->entries[i].name);
        if (n >= l && !strcmp(c->entries[i].name + n - l, suffix)) return &c->entries[i];
    }
    return NULL;
}
/* open + extract + write-prep; returns 0 on success; must never crash */
static int try_convert(const unsigned char *buf, size_t n, char *err, size_t errn) {
    pth_checkpoint c;
    higan_safetensors_writer w;
    int rc = pth_open_memory(&c, buf, n);
    if (rc == 0) rc = pth_extract(&c, NULL, NULL);
    if (rc == 0) {
        int i;
        uint64_t sum = 0;
        higan_safetensors_writer_init(&w);
        rc = pth_add_to_writer(&c, &w);
        for (i = 0; i < c.count; ++i) {   /* touch every byte: valgrind checks the reads */
            size_t k, bytes = (size_t)c.tensors[i].numel * higan_dtype_size(c.tensors[i].dtype);
            for (k = 0; k < bytes; ++k) sum += ((const unsigned char *)c.tensors[i].data)[k];
        }
        if (sum == 1) rc = 0;
        higan_safetensors_writer_free(&w);
    }
    if (err) snprintf(err, errn, "%s", c.err);
    pth_close(&c);
    return rc;
}

static void test_sweeps(void) {
    size_t n, i, pkl_off = 0, pkl_n = 0, cd_crc = 0;
    unsigned char *file = read_all(FIX "pth_nested.pth", &n), *copy;
    int fails = 0, crashes_would_show = 0, ok_count = 0, bad_msg = 0, k;
    char err[1024];
    pth_checkpoint c;
    const pth_zentry *z;
    if (!file) { CHECK(0, "read pth_nested.pth"); return; }
    copy = (unsigned char *)malloc(n);
    /* 1. every truncation of the file fails with a message */
    for (i = 0; i < n; ++i) {
        err[0] = 0;
        if (try_convert(file, i, err, sizeof err) != 0 && err[0]) ++fails;
    }
    CHECK(fails == (int)n, "all %d truncations of pth_nested.pth fail cleanly (%d did)", (int)n, fails);
    CHECK(try_convert(file, n, err, sizeof err) == 0, "the whole file converts");

    /* 2. every byte of the file flipped: clean success or clean error */
    fails = ok_count = 0;
    for (i = 0; i < n; ++i) {
        memcpy(copy, file, n);
        copy[i] ^= 0xFF;
        err[0] = 0;
        if (try_convert(copy, n, err, sizeof err) == 0) ++ok_count;
        else if (err[0]) ++fails;
        else ++bad_msg;
    }
    CHECK(bad_msg == 0 && ok_count + fails == (int)n, "byte flips over the whole file: %d converted (bytes no reader checks), "
          "%d failed with a message, %d without", ok_count, fails, bad_msg);

    /* 3. the pickle itself corrupted, with the CRC fixed up so that the parser sees it */
    if (pth_open_memory(&c, file, n) == 0 && (z = entry_named(&c, "/data.pkl")) != NULL) {
        const unsigned char *d;
        uint64_t dn;
        pth__zdata(&c, (pth_zentry *)z, &d, &dn);
        pkl_off = (size_t)z->data_off;
        pkl_n = (size_t)dn;
        for (i = 0; i + 46 < n; ++i)   /* its central directory record: CRC at +16 */
            if (pth__rd32(file + i) == 0x02014b50u && pth__rd16(file + i + 28) == strlen(z->name) &&
                !memcmp(file + i + 46, z->name, strlen(z->name))) cd_crc = i + 16;
    }
    pth_close(&c);
    CHECK(pkl_n > 100 && cd_crc > 0, "found data.pkl (%d bytes) and its CRC", (int)pkl_n);
    fails = ok_count = bad_msg = 0;
    for (i = 0; pkl_n && i < pkl_n; ++i) {
        static const int delta[] = {0x01, 0x80, 0xFF};
        for (k = 0; k < 3; ++k) {
            uint32_t crc;
            memcpy(copy, file, n);
            copy[pkl_off + i] ^= (unsigned char)delta[k];
            crc = pth__crc32(copy + pkl_off, pkl_n);
            copy[cd_crc] = (unsigned char)crc; copy[cd_crc + 1] = (unsigned char)(crc >> 8);
            copy[cd_crc + 2] = (unsigned char)(crc >> 16); copy[cd_crc + 3] = (unsigned char)(crc >> 24);
            err[0] = 0;
            if (try_convert(copy, n, err, sizeof err) == 0) ++ok_count;
            else if (err[0]) ++fails;
            else ++bad_msg;
        }
    }
    CHECK(bad_msg == 0 && fails > 0, "pickle byte changes (%d): %d converted, %d failed with a message, %d without",
          (int)(3 * pkl_n), ok_count, fails, bad_msg);
    /* 4. every prefix of the pickle alone */
    fails = 0;
    for (i = 0; i < pkl_n; ++i) {
        memset(&c, 0, sizeof c);
        if (pth_unpickle(&c, file + pkl_off, i) != 0 && c.err[0]) ++fails;
        pth_close(&c);
    }
    CHECK(fails == (int)pkl_n, "all %d truncations of data.pkl fail cleanly", (int)pkl_n);
    (void)crashes_would_show;
    free(copy);
    free(file);
}

/* ---- zip details ----------------------------------------------------------------------- */
static void test_zip(void) {
    size_t n;
    unsigned char *file = read_all(FIX "pth_zip64.pth", &n), *big;
    char err[1024];
    if (!file) { CHECK(0, "read pth_zip64.pth"); return; }
    /* a zip comment after the end record, and garbage in front of the zip, are tolerated
       only as far as the offsets allow: prepending shifts every offset, so it must fail */
    big = (unsigned char *)malloc(n + 64);
    memcpy(big, file, n);
    big[n - 2] = 5; big[n - 1] = 0;            /* comment length 5 */
    memcpy(big + n, "hello", 5);
    CHECK(try_convert(big, n + 5, err, sizeof err) == 0, "ZIP64 file with a zip comment converts: %s", err);
    memcpy(big, "JUNK", 4);
    memcpy(big + 4, file, n);
    CHECK(try_convert(big, n + 4, err, sizeof err) != 0 && err[0], "shifted zip fails: %s", err);
    CHECK(try_convert((const unsigned char *)"PK\x05\x06", 4, err, sizeof err) != 0 && strstr(err, "not a zip"), "4 bytes: %s", err);
    CHECK(try_convert((const unsigned char *)"", 0, err, sizeof err) != 0 && strstr(err, "not a zip"), "empty file: %s", err);
    free(big);
    free(file);
}

int main(void) {
    test_nested();
    test_plain_and_handmade();
    test_bad_files();
    test_pickles();
    test_zip();
    test_sweeps();
    return check_finish();
}
