#ifndef HIGAN_EVAL_IMPL_INCLUDED
#define HIGAN_EVAL_IMPL_INCLUDED
/* ==== EVALUATION implementation ============================================================ */

/* ---- edit distance, CER, WER -------------------------------------------------------------- */
HIGAN_DEF int64_t higan_edit_distance(const int *a, int64_t na, const int *b, int64_t nb) {
    int64_t small[256], *row = small, i, j, r;
    if (na < 0 || nb < 0 || (na && !a) || (nb && !b))
        return higan__error(HIGAN_ERR_ARG, "edit_distance: bad arguments");
    if (nb + 1 > 256 && !(row = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)(nb + 1))))
        return higan__error(HIGAN_ERR_NOMEM, "edit_distance: out of memory");
    for (j = 0; j <= nb; ++j) row[j] = j;          /* distance from the empty prefix of a */
    for (i = 1; i <= na; ++i) {
        int64_t diag = row[0];                     /* D[i-1][j-1] */
        row[0] = i;
        for (j = 1; j <= nb; ++j) {
            int64_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;              /* delete a[i-1] */
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;  /* insert b[j-1] */
            diag = up;
            row[j] = best;
        }
    }
    r = row[nb];
    if (row != small) HIGAN_FREE(row);
    return r;
}

/* Code points of a UTF-8 string into out (NULL: count only). A byte that does not start a
   valid sequence becomes 0x110000 + byte (never equal to a real code point). */
static int64_t higan__eval_utf8(const char *str, int *out) {
    const unsigned char *s = (const unsigned char *)str;
    int64_t n = 0;
    while (*s) {
        unsigned c = *s, cp;
        int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0, k;
        cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
        for (k = 1; k < len; ++k) {
            if ((s[k] & 0xC0) != 0x80) { len = 0; break; }
            cp = (cp << 6) | (s[k] & 0x3F);
        }
        if (len == 0) { cp = 0x110000u + c; len = 1; }
        if (out) out[n] = (int)cp;
        ++n;
        s += len;
    }
    return n;
}
HIGAN_DEF int64_t higan_utf8_length(const char *s) { return s ? higan__eval_utf8(s, NULL) : 0; }

HIGAN_DEF int64_t higan_edit_distance_utf8(const char *a, const char *b) {
    int sa[128], sb[128], *ca = sa, *cb = sb;
    int64_t na, nb, r;
    if (!a || !b) return higan__error(HIGAN_ERR_ARG, "edit_distance_utf8: NULL string");
    na = higan__eval_utf8(a, NULL);
    nb = higan__eval_utf8(b, NULL);
    if (na > 128) ca = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)na);
    if (nb > 128) cb = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)nb);
    if (!ca || !cb) r = higan__error(HIGAN_ERR_NOMEM, "edit_distance_utf8: out of memory");
    else {
        higan__eval_utf8(a, ca);
        higan__eval_utf8(b, cb);
        r = higan_edit_distance(ca, na, cb, nb);
    }
    if (ca && ca != sa) HIGAN_FREE(ca);
    if (cb && cb != sb) HIGAN_FREE(cb);
    return r;
}

HIGAN_DEF void higan_text_score_init(higan_text_score *s) { memset(s, 0, sizeof *s); }
HIGAN_DEF higan_status higan_text_score_add(higan_text_score *s, const char *hyp, const char *ref) {
    int64_t d;
    if (!s || !hyp || !ref) return higan__error(HIGAN_ERR_ARG, "text_score_add: NULL argument");
    if ((d = higan_edit_distance_utf8(hyp, ref)) < 0) return (higan_status)d;
    s->edits += d;
    s->ref_chars += higan_utf8_length(ref);
    s->words += 1;
    s->wrong_words += d > 0;
    return HIGAN_OK;
}
HIGAN_DEF double higan_text_score_cer(const higan_text_score *s) {
    return s && s->ref_chars > 0 ? (double)s->edits / (double)s->ref_chars : NAN;
}
HIGAN_DEF double higan_text_score_wer(const higan_text_score *s) {
    return s && s->words > 0 ? (double)s->wrong_words / (double)s->words : NAN;
}

/* ---- writer identification ------------------------------------------------------------------ */
HIGAN_DEF int64_t higan_argmax(const float *x, int64_t n) {
    int64_t i, best = 0;
    HIGAN_ASSERT(x && n >= 1);
    for (i = 1; i < n; ++i) if (x[i] > x[best]) best = i;
    return best;
}
HIGAN_DEF double higan_wier(const int *pred_real, const int *pred_fake, int64_t n) {
    int64_t i, same = 0;
    if (n <= 0 || !pred_real || !pred_fake) return NAN;
    for (i = 0; i < n; ++i) same += pred_real[i] == pred_fake[i];
    return 1.0 - (double)same / (double)n;
}

/* ---- symmetric eigen-decomposition (cyclic Jacobi) ------------------------------------------- */
HIGAN_DEF higan_status higan_sym_eig(double *a, int64_t n, double *w, double *v) {
    int64_t p, q, k;
    int sweep;
    if (!a || !w || n < 1) return higan__error(HIGAN_ERR_ARG, "sym_eig: bad arguments");
    if (v) for (p = 0; p < n; ++p) for (q = 0; q < n; ++q) v[p * n + q] = p == q;
    for (sweep = 0; sweep < 100; ++sweep) {
        double off = 0.0, diag = 0.0;
        for (p = 0; p < n; ++p) {
            diag += a[p * n + p] * a[p * n + p];
            for (q = p + 1; q < n; ++q) off += 2.0 * a[p * n + q] * a[p * n + q];
        }
        if (off == 0.0 || off <= 1e-30 * diag) break;
        for (p = 0; p < n - 1; ++p)
            for (q = p + 1; q < n; ++q) {
                double apq = a[p * n + q], theta, t, c, s;
                if (apq == 0.0) continue;
                /* rotation J (c at pp and qq, s at pq, -s at qp) with (J^T A J)_pq = 0 */
                theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                t = (theta >= 0.0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                c = 1.0 / sqrt(t * t + 1.0);
                s = t * c;
                for (k = 0; k < n; ++k) {          /* A <- A J (columns p, q) */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (k = 0; k < n; ++k) {          /* A <- J^T A (rows p, q) */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = a[q * n + p] = 0.0;
                if (v)
                    for (k = 0; k < n; ++k) {      /* V <- V J */
                        double vkp = v[k * n + p], vkq = v[k * n + q];
                        v[k * n + p] = c * vkp - s * vkq;
                        v[k * n + q] = s * vkp + c * vkq;
                    }
            }
        if (sweep == 99) return higan__error(HIGAN_ERR_FORMAT, "sym_eig: Jacobi did not converge in 100 sweeps");
    }
    for (p = 0; p < n; ++p) w[p] = a[p * n + p];
    return HIGAN_OK;
}

/* ---- FID ----------------------------------------------------------------------------------- */
/* mean [d] and unbiased covariance [d, d] of x [n, d] (n >= 2), in double */
static void higan__eval_gauss(const float *x, int64_t n, int64_t d, double *mean, double *cov, double *xc) {
    int64_t i, j;
    for (j = 0; j < d; ++j) {
        double acc = 0.0;
        for (i = 0; i < n; ++i) acc += x[i * d + j];
        mean[j] = acc / (double)n;
    }
    for (i = 0; i < n; ++i) for (j = 0; j < d; ++j) xc[i * d + j] = (double)x[i * d + j] - mean[j];
    HIGAN__PARALLEL_FOR
    for (j = 0; j < d; ++j) {            /* row j of the upper triangle: independent outputs */
        int64_t ii, k;
        double *row = cov + j * d;
        for (k = j; k < d; ++k) row[k] = 0.0;
        for (ii = 0; ii < n; ++ii) {
            double xj = xc[ii * d + j];
            const double *xr = xc + ii * d;
            for (k = j; k < d; ++k) row[k] += xj * xr[k];
        }
        for (k = j; k < d; ++k) row[k] /= (double)(n - 1);
    }
    for (j = 0; j < d; ++j) for (i = 0; i < j; ++i) cov[j * d + i] = cov[i * d + j];
}
/* c [d, d] = a b (all [d, d], double) */
static void higan__eval_matmul(double *c, const double *a, const double *b, int64_t d) {
    int64_t i;
    HIGAN__PARALLEL_FOR
    for (i = 0; i < d; ++i) {
        int64_t j, k;
        double *ci = c + i * d;
        for (j = 0; j < d; ++j) ci[j] = 0.0;
        for (k = 0; k < d; ++k) {
            double aik = a[i * d + k];
            const double *bk = b + k * d;
            for (j = 0; j < d; ++j) ci[j] += aik * bk[j];
        }
    }
}
/* Eigenvalues of a positive semi-definite matrix that are below 1e-12 of the largest are
   rounding noise of zero ones (singular covariances): set them to 0 before the square root. */
static void higan__eval_clip_eig(double *w, int64_t d) {
    double mx = 0.0;
    int64_t j;
    for (j = 0; j < d; ++j) if (w[j] > mx) mx = w[j];
    for (j = 0; j < d; ++j) if (w[j] <= 1e-12 * mx) w[j] = 0.0;
}
HIGAN_DEF higan_status higan_fid(const float *a, int64_t na, const float *b, int64_t nb, int64_t d, double *fid) {
    double *mu_a, *mu_b, *ca, *cb, *va, *wa, *sa, *tmp, *xc, diff = 0.0, tr_a = 0.0, tr_b = 0.0, tr_s = 0.0;
    int64_t i, j, nmax = na > nb ? na : nb;
    higan_status rc = HIGAN_OK;
    if (!a || !b || !fid || na < 2 || nb < 2 || d < 1)
        return higan__error(HIGAN_ERR_ARG, "fid: needs at least 2 feature vectors per set (got %lld and %lld) of "
                            "dimension >= 1", (long long)na, (long long)nb);
    mu_a = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(2 * d));
    ca = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(5 * d * d));
    wa = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)d);
    xc = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(nmax * d));
    if (!mu_a || !ca || !wa || !xc) {
        HIGAN_FREE(mu_a); HIGAN_FREE(ca); HIGAN_FREE(wa); HIGAN_FREE(xc);
        return higan__error(HIGAN_ERR_NOMEM, "fid: out of memory (d = %lld)", (long long)d);
    }
    mu_b = mu_a + d;
    cb = ca + d * d; va = cb + d * d; sa = va + d * d; tmp = sa + d * d;
    higan__eval_gauss(a, na, d, mu_a, ca, xc);
    higan__eval_gauss(b, nb, d, mu_b, cb, xc);
    for (j = 0; j < d; ++j) {
        diff += (mu_a[j] - mu_b[j]) * (mu_a[j] - mu_b[j]);
        tr_a += ca[j * d + j];
        tr_b += cb[j * d + j];
    }
    /* sqrt(C_a) = V diag(sqrt(max(w, 0))) V^T */
    memcpy(tmp, ca, sizeof(double) * (size_t)(d * d));
    rc = higan_sym_eig(tmp, d, wa, va);
    if (rc == HIGAN_OK) {
        higan__eval_clip_eig(wa, d);
        for (j = 0; j < d; ++j) wa[j] = sqrt(wa[j]);
        for (i = 0; i < d; ++i) for (j = 0; j < d; ++j) tmp[i * d + j] = va[i * d + j] * wa[j];
        for (i = 0; i < d; ++i)
            for (j = 0; j < d; ++j) {
                double acc = 0.0;
                int64_t k;
                for (k = 0; k < d; ++k) acc += tmp[i * d + k] * va[j * d + k];
                sa[i * d + j] = acc;
            }
        /* M = sqrt(C_a) C_b sqrt(C_a): symmetric, with the eigenvalues of C_a C_b */
        higan__eval_matmul(tmp, sa, cb, d);
        higan__eval_matmul(va, tmp, sa, d);
        for (i = 0; i < d; ++i) for (j = 0; j < i; ++j) va[i * d + j] = va[j * d + i] = 0.5 * (va[i * d + j] + va[j * d + i]);
        rc = higan_sym_eig(va, d, wa, NULL);
    }
    if (rc == HIGAN_OK) {
        higan__eval_clip_eig(wa, d);
        for (j = 0; j < d; ++j) tr_s += sqrt(wa[j]);
        *fid = diff + tr_a + tr_b - 2.0 * tr_s;
    }
    HIGAN_FREE(mu_a); HIGAN_FREE(ca); HIGAN_FREE(wa); HIGAN_FREE(xc);
    return rc;
}

/* ---- KID ------------------------------------------------------------------------------------- */
/* Rows of a then b as one set of na + nb vectors; K (or NULL) holds every kernel value. */
typedef struct {
    const float *a, *b;
    int64_t na, nb, d;
    const double *K;
} higan__kid_set;
static double higan__kid_k(const higan__kid_set *S, int64_t u, int64_t v) {
    const float *x, *y;
    double dot = 0.0, k;
    int64_t j;
    if (S->K) return S->K[u * (S->na + S->nb) + v];
    x = u < S->na ? S->a + u * S->d : S->b + (u - S->na) * S->d;
    y = v < S->na ? S->a + v * S->d : S->b + (v - S->na) * S->d;
    for (j = 0; j < S->d; ++j) dot += (double)x[j] * (double)y[j];
    k = dot / (double)S->d + 1.0;       /* sklearn polynomial_kernel: gamma 1/d, coef0 1, degree 3 */
    return k * k * k;
}
/* Unbiased MMD^2 between the rows ia[0..ma) of a and ib[0..mb) of b (indices into a and b).
   rows: 2 ma + mb doubles of scratch holding per-row sums, added up in a fixed order so the
   result does not depend on the thread count. */
static double higan__kid_mmd2(const higan__kid_set *S, const int64_t *ia, int64_t ma, const int64_t *ib,
                              int64_t mb, double *rows) {
    int64_t i, total = ma + mb;
    double sxx = 0.0, syy = 0.0, sxy = 0.0;
    HIGAN__PARALLEL_FOR
    for (i = 0; i < total; ++i) {
        int64_t j;
        if (i < ma) {                     /* sum_{j != i} k(a_i, a_j) and sum_j k(a_i, b_j) */
            double xx = 0.0, xy = 0.0;
            for (j = 0; j < ma; ++j) if (j != i) xx += higan__kid_k(S, ia[i], ia[j]);
            for (j = 0; j < mb; ++j) xy += higan__kid_k(S, ia[i], S->na + ib[j]);
            rows[i] = xx;
            rows[total + i] = xy;
        } else {                          /* sum_{j != i} k(b_i, b_j) */
            double yy = 0.0;
            int64_t bi = i - ma;
            for (j = 0; j < mb; ++j) if (j != bi) yy += higan__kid_k(S, S->na + ib[bi], S->na + ib[j]);
            rows[i] = yy;
        }
    }
    for (i = 0; i < ma; ++i) { sxx += rows[i]; sxy += rows[total + i]; }
    for (i = ma; i < total; ++i) syy += rows[i];
    return sxx / ((double)ma * (double)(ma - 1)) + syy / ((double)mb * (double)(mb - 1)) -
           2.0 * sxy / ((double)ma * (double)mb);
}
HIGAN_DEF higan_status higan_mmd2_poly(const float *a, int64_t na, const float *b, int64_t nb, int64_t d, double *mmd2) {
    higan__kid_set S;
    int64_t *idx, i, m = na > nb ? na : nb;
    double *rows;
    if (!a || !b || !mmd2 || na < 2 || nb < 2 || d < 1)
        return higan__error(HIGAN_ERR_ARG, "mmd2_poly: needs at least 2 vectors per set (got %lld and %lld)",
                            (long long)na, (long long)nb);
    idx = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)m);
    rows = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(2 * na + nb));
    if (!idx || !rows) { HIGAN_FREE(idx); HIGAN_FREE(rows); return higan__error(HIGAN_ERR_NOMEM, "mmd2_poly: out of memory"); }
    for (i = 0; i < m; ++i) idx[i] = i;
    S.a = a; S.b = b; S.na = na; S.nb = nb; S.d = d; S.K = NULL;
    *mmd2 = higan__kid_mmd2(&S, idx, na, idx, nb, rows);
    HIGAN_FREE(idx); HIGAN_FREE(rows);
    return HIGAN_OK;
}
/* uniform integer in [0, n) without modulo bias */
static int64_t higan__eval_randint(higan_rng *r, int64_t n) {
    uint64_t un = (uint64_t)n, limit = UINT64_MAX - UINT64_MAX % un, x;
    do x = higan_rng_u64(r); while (x >= limit);
    return (int64_t)(x % un);
}
/* kernel matrices of sets up to this many vectors (a and b together) are computed once */
#define HIGAN__KID_FULL_MAX 3072
HIGAN_DEF higan_status higan_kid(const float *a, int64_t na, const float *b, int64_t nb, int64_t d,
                                 int n_subsets, int64_t subset_size, higan_rng *rng, double *kid) {
    higan__kid_set S;
    int64_t m, nt = na + nb, *perm_a, *perm_b, i;
    double *rows, *K = NULL, acc = 0.0;
    int s;
    if (!a || !b || !kid || !rng || na < 2 || nb < 2 || d < 1 || n_subsets < 1 || subset_size < 2)
        return higan__error(HIGAN_ERR_ARG, "kid: needs at least 2 vectors per set (got %lld and %lld), subsets "
                            "of 2 or more (%lld) and at least one subset (%d)", (long long)na, (long long)nb,
                            (long long)subset_size, n_subsets);
    m = subset_size < na ? subset_size : na;
    if (nb < m) m = nb;
    perm_a = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)na);
    perm_b = (int64_t *)HIGAN_MALLOC(sizeof(int64_t) * (size_t)nb);
    rows = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(3 * m));
    if (nt <= HIGAN__KID_FULL_MAX) K = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(nt * nt));
    if (!perm_a || !perm_b || !rows || (nt <= HIGAN__KID_FULL_MAX && !K)) {
        HIGAN_FREE(perm_a); HIGAN_FREE(perm_b); HIGAN_FREE(rows); HIGAN_FREE(K);
        return higan__error(HIGAN_ERR_NOMEM, "kid: out of memory");
    }
    S.a = a; S.b = b; S.na = na; S.nb = nb; S.d = d; S.K = NULL;
    if (K) {
        HIGAN__PARALLEL_FOR
        for (i = 0; i < nt; ++i) {
            int64_t j;
            for (j = i; j < nt; ++j) K[i * nt + j] = higan__kid_k(&S, i, j);
        }
        for (i = 0; i < nt; ++i) {
            int64_t j;
            for (j = 0; j < i; ++j) K[i * nt + j] = K[j * nt + i];
        }
        S.K = K;
    }
    for (s = 0; s < n_subsets; ++s) {
        /* numpy choice(n, m, replace=False) in spirit: the first m of a partial shuffle */
        for (i = 0; i < na; ++i) perm_a[i] = i;
        for (i = 0; i < nb; ++i) perm_b[i] = i;
        for (i = 0; i < m; ++i) {
            int64_t j = i + higan__eval_randint(rng, na - i), t = perm_a[i];
            perm_a[i] = perm_a[j]; perm_a[j] = t;
        }
        for (i = 0; i < m; ++i) {
            int64_t j = i + higan__eval_randint(rng, nb - i), t = perm_b[i];
            perm_b[i] = perm_b[j]; perm_b[j] = t;
        }
        acc += higan__kid_mmd2(&S, perm_a, m, perm_b, m, rows);
    }
    *kid = acc / n_subsets * 100.0;
    HIGAN_FREE(perm_a); HIGAN_FREE(perm_b); HIGAN_FREE(rows); HIGAN_FREE(K);
    return HIGAN_OK;
}

/* ---- PSNR and SSIM ------------------------------------------------------------------------------ */
HIGAN_DEF double higan_psnr(const float *x, const float *y, int64_t n) {
    double mse = 0.0;
    int64_t i;
    if (!x || !y || n < 1) return NAN;
    for (i = 0; i < n; ++i) { double d = (double)x[i] - (double)y[i]; mse += d * d; }
    mse /= (double)n;
    return mse > 0.0 ? 10.0 * log10(1.0 / mse) : INFINITY;
}

HIGAN_DEF double higan_ssim(const float *x, const float *y, int64_t H, int64_t W) {
    const double C1 = 0.01 * 0.01, C2 = 0.03 * 0.03, NP = 49.0, cov_norm = 49.0 / 48.0;
    int64_t OW, r, c, k, q;
    double *hs, total = 0.0;       /* horizontal 7-sums of x, y, xx, yy, xy: [5][H][OW] */
    if (!x || !y || H < 7 || W < 7) return NAN;
    OW = W - 6;
    if (!(hs = (double *)HIGAN_MALLOC(sizeof(double) * (size_t)(5 * H * OW)))) return NAN;
    for (r = 0; r < H; ++r)
        for (c = 0; c < OW; ++c) {
            double s[5] = {0, 0, 0, 0, 0};
            for (k = 0; k < 7; ++k) {
                double a = x[r * W + c + k], b = y[r * W + c + k];
                s[0] += a; s[1] += b; s[2] += a * a; s[3] += b * b; s[4] += a * b;
            }
            for (q = 0; q < 5; ++q) hs[(q * H + r) * OW + c] = s[q];
        }
    for (r = 0; r + 7 <= H; ++r)
        for (c = 0; c < OW; ++c) {
            double s[5] = {0, 0, 0, 0, 0}, ux, uy, vx, vy, vxy;
            for (k = 0; k < 7; ++k) for (q = 0; q < 5; ++q) s[q] += hs[(q * H + r + k) * OW + c];
            ux = s[0] / NP; uy = s[1] / NP;
            vx = cov_norm * (s[2] / NP - ux * ux);
            vy = cov_norm * (s[3] / NP - uy * uy);
            vxy = cov_norm * (s[4] / NP - ux * uy);
            total += ((2.0 * ux * uy + C1) * (2.0 * vxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2));
        }
    HIGAN_FREE(hs);
    return total / (double)((H - 6) * OW);
}

/* ---- the official rescale_images (F.interpolate 'area' / 'bilinear') ------------------------- */
HIGAN_DEF void higan_rescale_width(float *y, int64_t out_w, const float *x, int64_t H, int64_t in_w) {
    int64_t r, j, k;
    HIGAN_ASSERT(y && x && H >= 1 && in_w >= 1 && out_w >= 1);
    if (out_w < in_w) {                  /* adaptive average pooling */
        for (j = 0; j < out_w; ++j) {
            int64_t s0 = (j * in_w) / out_w, s1 = ((j + 1) * in_w + out_w - 1) / out_w;
            for (r = 0; r < H; ++r) {
                float acc = 0.0f;
                for (k = s0; k < s1; ++k) acc += x[r * in_w + k];
                y[r * out_w + j] = acc / (float)(s1 - s0);
            }
        }
    } else {                             /* bilinear, align_corners=False */
        /* PyTorch (CPU, float): the scale in float, the source index in double (acc type),
           lambda rounded to float, 1 - lambda in float */
        float scale = (float)in_w / (float)out_w;
        for (j = 0; j < out_w; ++j) {
            double src = (double)scale * ((double)j + 0.5) - 0.5;
            float l1, l0;
            int64_t i0, i1;
            if (src < 0.0) src = 0.0;
            i0 = (int64_t)floor(src);
            if (i0 > in_w - 1) i0 = in_w - 1;
            l1 = (float)(src - (double)i0);
            if (l1 < 0.0f) l1 = 0.0f;
            if (l1 > 1.0f) l1 = 1.0f;
            l0 = 1.0f - l1;
            i1 = i0 + (i0 < in_w - 1 ? 1 : 0);
            for (r = 0; r < H; ++r) y[r * out_w + j] = l0 * x[r * in_w + i0] + l1 * x[r * in_w + i1];
        }
    }
}

/* ---- backbone features ---------------------------------------------------------------------- */
HIGAN_DEF higan_status higan_backbone_features(const higan_style_backbone *b, higan_tape *t, const float *img,
                                               int64_t W, float *feat) {
    int64_t xs[4], Wp, r, T, C, P, p, c;
    size_t mark;
    higan_var *x, *y;
    higan_status rc = HIGAN_OK;
    if (!b || !t || !img || !feat) return higan__error(HIGAN_ERR_ARG, "backbone_features: NULL argument");
    if (b->cfg.in_channel != 1)
        return higan__error(HIGAN_ERR_ARG, "backbone_features: the backbone takes %d channels, not 1", b->cfg.in_channel);
    if (W < 1 || W > HIGAN_MAX_IMAGE_WIDTH)
        return higan__error(HIGAN_ERR_ARG, "backbone_features: image width %lld", (long long)W);
    Wp = (W + 31) / 32 * 32;
    mark = higan_arena_mark(t->arena);
    higan_no_grad_begin(t);
    xs[0] = 1; xs[1] = 1; xs[2] = HIGAN_IMAGE_HEIGHT; xs[3] = Wp;
    x = higan_var_new(t, 4, xs);
    if (x)
        for (r = 0; r < HIGAN_IMAGE_HEIGHT; ++r) {
            memcpy(x->data + r * Wp, img + r * W, sizeof(float) * (size_t)W);
            for (c = W; c < Wp; ++c) x->data[r * Wp + c] = -1.0f;
        }
    y = x ? higan_style_backbone_forward(t, b, x, 0, NULL, NULL) : NULL;
    higan_no_grad_end(t);
    if (!y) rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;
    else {
        C = y->shape[1]; T = y->shape[2];
        P = (W + HIGAN_BACKBONE_LEN_SCALE - 1) / HIGAN_BACKBONE_LEN_SCALE;
        if (P > T) P = T;
        if (P < 1) P = 1;
        for (c = 0; c < C; ++c) {
            double acc = 0.0;
            for (p = 0; p < P; ++p) acc += y->data[c * T + p];
            feat[c] = (float)(acc / (double)P);
        }
    }
    higan_arena_release(t->arena, mark);
    return rc;
}
/* ---- the test-set evaluation ------------------------------------------------------------------ */
HIGAN_DEF higan_eval_options higan_eval_default_options(void) {
    higan_eval_options o;
    memset(&o, 0, sizeof o);
    o.kid_subsets = 50;
    o.kid_subset_size = 1000;
    o.wid_offset = -1;
    return o;
}

typedef struct {
    higan_arena arena;
    higan_tape tape;
} higan__eval_ws;
static higan_status higan__eval_ws_init(higan__eval_ws *w, size_t bytes) {
    higan_status st;
    if ((st = higan_arena_init(&w->arena, bytes)) != HIGAN_OK) return st;
    if ((st = higan_tape_init(&w->tape, &w->arena, 1024)) != HIGAN_OK) { higan_arena_free(&w->arena); return st; }
    return HIGAN_OK;
}
static void higan__eval_ws_free(higan__eval_ws *w) { higan_tape_free(&w->tape); higan_arena_free(&w->arena); }
/* After HIGAN_ERR_NOMEM: a bigger arena (needed is a lower bound: at least double). */
static higan_status higan__eval_ws_grow(higan__eval_ws *w) {
    size_t need = w->arena.needed + w->arena.needed / 4;
    if (need < 2 * w->arena.capacity) need = 2 * w->arena.capacity;
    if (need > ((size_t)1 << 36)) return higan__error(HIGAN_ERR_NOMEM, "evaluate: more than 64 GB of activations needed");
    higan__eval_ws_free(w);
    return higan__eval_ws_init(w, need);
}

/* [1, 1, 64, W rounded up to 32] var holding img [64, W], padded with -1 */
static higan_var *higan__eval_input(higan_tape *t, const float *img, int64_t W) {
    int64_t xs[4], Wp = (W + 31) / 32 * 32, r, c;
    higan_var *x;
    xs[0] = 1; xs[1] = 1; xs[2] = HIGAN_IMAGE_HEIGHT; xs[3] = Wp;
    if (!(x = higan_var_new(t, 4, xs))) return NULL;
    for (r = 0; r < HIGAN_IMAGE_HEIGHT; ++r) {
        memcpy(x->data + r * Wp, img + r * W, sizeof(float) * (size_t)W);
        for (c = W; c < Wp; ++c) x->data[r * Wp + c] = -1.0f;
    }
    return x;
}
/* The Recognizer's greedy reading of img [64, W] (eval mode). */
static higan_status higan__eval_read(const higan_recognizer *R, higan_tape *t, const float *img, int64_t W,
                                     char *text, int cap) {
    size_t mark = higan_arena_mark(t->arena);
    int lens[1], n;
    higan_var *x, *y;
    higan_status rc = HIGAN_OK;
    lens[0] = (int)W;
    higan_no_grad_begin(t);
    x = higan__eval_input(t, img, W);
    y = x ? higan_recognizer_forward(t, R, x, lens, 0, NULL) : NULL;
    higan_no_grad_end(t);
    if (!y) rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;
    else if ((n = higan_recognizer_decode(y, 0, 0, lens[0], text, cap)) < 0) rc = n;
    higan_arena_release(t->arena, mark);
    return rc;
}
/* The WriterIdentifier's predicted writer of img [64, W]. */
static higan_status higan__eval_writer(const higan_writer_identifier *Wn, const higan_style_backbone *B,
                                       higan_tape *t, const float *img, int64_t W, int *pred) {
    size_t mark = higan_arena_mark(t->arena);
    int lens[1];
    higan_var *x, *f, *y;
    higan_status rc = HIGAN_OK;
    lens[0] = (int)W;
    higan_no_grad_begin(t);
    x = higan__eval_input(t, img, W);
    f = x ? higan_style_backbone_forward(t, B, x, 0, NULL, NULL) : NULL;
    y = f ? higan_writer_identifier_forward(t, Wn, f, lens) : NULL;
    higan_no_grad_end(t);
    if (!y) rc = higan_tape_status(t) != HIGAN_OK ? HIGAN_ERR_NOMEM : HIGAN_ERR_ARG;
    else *pred = (int)higan_argmax(y->data, y->shape[1]);
    higan_arena_release(t->arena, mark);
    return rc;
}

/* per-record buffers of the evaluation */
typedef struct {
    uint8_t *u8, *style_u8;
    float *real, *style, *fake, *fake_w, *real01, *fake01, *z;
    char label[4 * HIGAN_MAX_WORD_LEN + 8], read_real[512], read_fake[512];
    int pred_real, pred_fake;
} higan__eval_buf;

HIGAN_DEF higan_status higan_evaluate(higan_model *m, const higan_dataset *ds, const higan_eval_options *opt_in,
                                      higan_eval_result *res) {
    const unsigned need = HIGAN_NET_BIT(HIGAN_NET_GENERATOR) | HIGAN_NET_BIT(HIGAN_NET_STYLE_ENCODER) |
                          HIGAN_NET_BIT(HIGAN_NET_STYLE_BACKBONE);
    higan_eval_options opt = opt_in ? *opt_in : higan_eval_default_options();
    const higan_recognizer *R;
    const higan_writer_identifier *Wn;
    const higan_style_backbone *WB, *FB;
    higan__eval_ws ws;
    higan__eval_buf bf;
    higan_text_score sr, sf;
    higan_rng rng;
    float *feat_real = NULL, *feat_fake = NULL, lut[256];
    int *pred_real = NULL, *pred_fake = NULL, wid_min = 0, wid_ok = 1;
    int64_t n_total, i, D, max_w = 1, n = 0, acc_real = 0, acc_fake = 0, Gw, cap;
    double psnr_sum = 0.0, ssim_sum = 0.0;
    higan_status rc = HIGAN_OK;
    if (!res) return higan__error(HIGAN_ERR_ARG, "evaluate: NULL result");
    memset(res, 0, sizeof *res);
    if (!m || !m->initialised || (m->cfg.nets & need) != need)
        return higan__error(HIGAN_ERR_ARG, "evaluate: the model needs a Generator, a StyleEncoder and a StyleBackbone");
    if (16 * m->cfg.G.bottom != HIGAN_IMAGE_HEIGHT)
        return higan__error(HIGAN_ERR_ARG, "evaluate: the Generator makes %lld-pixel-high images, not 64",
                            (long long)(16 * m->cfg.G.bottom));
    if (!ds || ds->count < 1) return higan__error(HIGAN_ERR_ARG, "evaluate: empty dataset");
    R = opt.R ? opt.R : (m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_RECOGNIZER)) ? &m->R : NULL;
    Wn = opt.W ? opt.W : (m->cfg.nets & HIGAN_NET_BIT(HIGAN_NET_WRITER_IDENTIFIER)) ? &m->W : NULL;
    WB = opt.W_backbone ? opt.W_backbone : &m->B;
    FB = opt.feature_backbone ? opt.feature_backbone : &m->B;
    if (Wn && Wn->in_dim != WB->out_dim)
        return higan__error(HIGAN_ERR_ARG, "evaluate: the WriterIdentifier reads %lld features, its backbone gives %lld",
                            (long long)Wn->in_dim, (long long)WB->out_dim);
    if (FB->cfg.in_channel != 1 || WB->cfg.in_channel != 1 || (R && R->cfg.cnn.in_channel != 1))
        return higan__error(HIGAN_ERR_ARG, "evaluate: every backbone must take 1 channel");
    n_total = opt.limit > 0 && opt.limit < ds->count ? opt.limit : ds->count;
    D = FB->out_dim;
    for (i = 0; i < n_total; ++i) if (ds->img_lens[i] > max_w) max_w = ds->img_lens[i];
    for (i = 0; i < ds->count; ++i) if (i == 0 || ds->wids[i] < wid_min) wid_min = ds->wids[i];
    if (opt.wid_offset >= 0) wid_min = opt.wid_offset;
    Gw = 8 * m->cfg.G.bottom * HIGAN_MAX_WORD_LEN;      /* widest generated word */
    cap = max_w > Gw ? max_w : Gw;
    memset(&bf, 0, sizeof bf);
    bf.u8 = (uint8_t *)HIGAN_MALLOC((size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.style_u8 = (uint8_t *)HIGAN_MALLOC((size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.real = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.style = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.fake = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(m->cfg.G.input_nc * HIGAN_IMAGE_HEIGHT * cap));
    bf.fake_w = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.real01 = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.fake01 = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(HIGAN_IMAGE_HEIGHT * cap));
    bf.z = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)m->cfg.G.style_dim);
    feat_real = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(n_total * D));
    feat_fake = (float *)HIGAN_MALLOC(sizeof(float) * (size_t)(n_total * D));
    pred_real = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)n_total);
    pred_fake = (int *)HIGAN_MALLOC(sizeof(int) * (size_t)n_total);
    if (!bf.u8 || !bf.style_u8 || !bf.real || !bf.style || !bf.fake || !bf.fake_w || !bf.real01 || !bf.fake01 ||
        !bf.z || !feat_real || !feat_fake || !pred_real || !pred_fake) {
        rc = higan__error(HIGAN_ERR_NOMEM, "evaluate: out of memory");
        goto done;
    }
    if ((rc = higan__eval_ws_init(&ws, opt.arena_bytes ? opt.arena_bytes : ((size_t)64 << 20))) != HIGAN_OK) goto done;
    for (i = 0; i < 256; ++i) lut[i] = higan_pixel_to_float((uint8_t)i);
    higan_text_score_init(&sr);
    higan_text_score_init(&sf);
    for (i = 0; i < n_total && rc == HIGAN_OK; ++i) {
        int codes[HIGAN_MAX_WORD_LEN], len, Wg = 0;
        int64_t w, ws_w, k;
        higan_tape *t;
        len = higan_dataset_label_codes(ds, i, codes, HIGAN_MAX_WORD_LEN);
        if (len < 1) { ++res->n_skipped; continue; }         /* longer than a generated word can be */
        higan_dataset_label(ds, i, bf.label, (int)sizeof bf.label);
        w = higan_dataset_image(ds, i, bf.u8, HIGAN_IMAGE_HEIGHT * cap);
        if (w < 1) { rc = (higan_status)w; break; }
        /* the loader's process_style: 32 px per character (cv2 area when narrower, else linear) */
        ws_w = (int64_t)HIGAN_CHAR_WIDTH * len;
        if (ws_w < w) higan_resize_area(bf.style_u8, ws_w, HIGAN_IMAGE_HEIGHT, bf.u8, w, HIGAN_IMAGE_HEIGHT, w);
        else higan_resize_linear(bf.style_u8, ws_w, HIGAN_IMAGE_HEIGHT, bf.u8, w, HIGAN_IMAGE_HEIGHT, w);
        for (k = 0; k < HIGAN_IMAGE_HEIGHT * w; ++k) bf.real[k] = lut[bf.u8[k]];
        for (k = 0; k < HIGAN_IMAGE_HEIGHT * ws_w; ++k) bf.style[k] = lut[bf.style_u8[k]];
        for (;;) {                      /* one record; again with a bigger arena on overflow */
            higan_tape_reset(&ws.tape);
            t = &ws.tape;
            rc = higan_style_from_image(m, t, bf.style, ws_w, len, bf.z);     /* E(B(style)): mu */
            if (rc == HIGAN_OK) {
                Wg = higan_generate_word(m, t, bf.label, bf.z, bf.fake, m->cfg.G.input_nc * HIGAN_IMAGE_HEIGHT * cap);
                if (Wg < 0) rc = Wg;
            }
            if (rc == HIGAN_OK && R) rc = higan__eval_read(R, t, bf.style, ws_w, bf.read_real, (int)sizeof bf.read_real);
            if (rc == HIGAN_OK && R) rc = higan__eval_read(R, t, bf.fake, Wg, bf.read_fake, (int)sizeof bf.read_fake);
            if (rc == HIGAN_OK && Wn) rc = higan__eval_writer(Wn, WB, t, bf.style, ws_w, &bf.pred_real);
            if (rc == HIGAN_OK && Wn) rc = higan__eval_writer(Wn, WB, t, bf.fake, Wg, &bf.pred_fake);
            if (rc == HIGAN_OK) {
                higan_rescale_width(bf.fake_w, w, bf.fake, HIGAN_IMAGE_HEIGHT, Wg);   /* channel 0 */
                rc = higan_backbone_features(FB, t, bf.real, w, feat_real + n * D);
            }
            if (rc == HIGAN_OK) rc = higan_backbone_features(FB, t, bf.fake_w, w, feat_fake + n * D);
            if (rc != HIGAN_ERR_NOMEM) break;
            if ((rc = higan__eval_ws_grow(&ws)) != HIGAN_OK) break;
        }
        if (rc != HIGAN_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", higan_last_error());
            rc = higan__error(rc, "evaluate: record %lld ('%s'): %s", (long long)i, bf.label, msg);
            break;
        }
        if (R) {
            higan_text_score_add(&sr, bf.read_real, bf.label);
            higan_text_score_add(&sf, bf.read_fake, bf.label);
        } else bf.read_real[0] = bf.read_fake[0] = 0;
        if (Wn) {
            int truth = ds->wids[i] - wid_min;
            pred_real[n] = bf.pred_real;
            pred_fake[n] = bf.pred_fake;
            if (truth < 0 || truth >= Wn->n_writer) wid_ok = 0;
            acc_real += bf.pred_real == truth;
            acc_fake += bf.pred_fake == truth;
        }
        for (k = 0; k < HIGAN_IMAGE_HEIGHT * w; ++k) {
            bf.real01[k] = (bf.real[k] + 1.0f) / 2.0f;
            bf.fake01[k] = (bf.fake_w[k] + 1.0f) / 2.0f;
        }
        psnr_sum += higan_psnr(bf.real01, bf.fake01, HIGAN_IMAGE_HEIGHT * w);
        if (w >= 7) { ssim_sum += higan_ssim(bf.real01, bf.fake01, HIGAN_IMAGE_HEIGHT, w); ++res->n_ssim; }
        if (opt.on_pair) opt.on_pair(opt.user, i, bf.real, bf.fake_w, w, bf.label, bf.read_real, bf.read_fake);
        ++n;
        if (opt.progress) opt.progress(opt.user, i + 1, n_total);
    }
    higan__eval_ws_free(&ws);
    if (rc != HIGAN_OK) goto done;
    res->n = n;
    res->feature_dim = D;
    res->cer_real = R ? higan_text_score_cer(&sr) : NAN;
    res->wer_real = R ? higan_text_score_wer(&sr) : NAN;
    res->cer_fake = R ? higan_text_score_cer(&sf) : NAN;
    res->wer_fake = R ? higan_text_score_wer(&sf) : NAN;
    res->wier = Wn ? higan_wier(pred_real, pred_fake, n) : NAN;
    res->wid_acc_real = Wn && wid_ok && n > 0 ? (double)acc_real / (double)n : NAN;
    res->wid_acc_fake = Wn && wid_ok && n > 0 ? (double)acc_fake / (double)n : NAN;
    res->psnr = n > 0 ? psnr_sum / (double)n : NAN;
    res->ssim = res->n_ssim > 0 ? ssim_sum / (double)res->n_ssim : NAN;
    res->fid = res->kid = NAN;
    if (n >= 2) {
        higan_rng_seed(&rng, opt.seed);
        if ((rc = higan_fid(feat_real, n, feat_fake, n, D, &res->fid)) == HIGAN_OK)
            rc = higan_kid(feat_real, n, feat_fake, n, D, opt.kid_subsets, opt.kid_subset_size, &rng, &res->kid);
    }
done:
    HIGAN_FREE(bf.u8); HIGAN_FREE(bf.style_u8); HIGAN_FREE(bf.real); HIGAN_FREE(bf.style); HIGAN_FREE(bf.fake);
    HIGAN_FREE(bf.fake_w); HIGAN_FREE(bf.real01); HIGAN_FREE(bf.fake01); HIGAN_FREE(bf.z);
    HIGAN_FREE(feat_real); HIGAN_FREE(feat_fake); HIGAN_FREE(pred_real); HIGAN_FREE(pred_fake);
    return rc;
}
#endif /* HIGAN_EVAL_IMPL_INCLUDED */
