/* convpool.c — fused conv2d + bias + ReLU + 2x2 max-pool for AVX-512 (see convpool.h).
 *
 * Lanes are pooled output positions of one sample. The four conv outputs of a pooling
 * window (phases (a,b) in {0,1}^2) are four accumulators, so the pool is a lane-wise max
 * and nothing at conv resolution is ever stored. Per sample the input windows are gathered
 * once into V[c][s][t] (s,t in [0,k], 16 lanes per vector): V[c][s][t][(i,j)] =
 * x[c][2i+s][2j+t], so conv output (2i+a, 2j+b) at tap (u,v) reads V[c][u+a][v+b]. V comes
 * from the polyphase split of x (even/odd rows × even/odd columns) by one two-source permute
 * per vector. Backward gets the weight gradient either from V (pooled positions in lanes,
 * many pooled outputs) or straight from x with output channels in lanes (few pooled outputs,
 * e.g. conv2 of the tutorial CNN), and the input gradient as dV = W^T G scattered back.
 * No allocation here: plans are made once, scratch comes from the caller.
 */
#include "tensor/convpool.h"

#include <string.h>

#include "core/err.h"
#include "core/mem.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define CP_MAXK 7   /* kernel sizes with instantiated micro-kernels */
#define CP_MAXV 64  /* pooled planes up to 64 vectors (1024 outputs) */
#define CP_NOFF 16  /* (k/2+1)^2 scatter offsets for k <= 7 */
#define CP_MAXPV 4  /* in-register input-gradient scatter for planes of <= 4 vectors */

struct tn_convpool {
    tn_conv2d g;
    int C, OC, H, W, k, k1, K;     /* K = C·k·k, the reduction length */
    int ph, pw, npp, nv;           /* pooled plane ph × pw = npp outputs in nv vectors */
    int hp, wp, plane;             /* polyphase input planes hp × wp */
    int dw_oc_lanes;               /* weight gradient with output channels in lanes */
    int dx_vec;                    /* input-gradient scatter in vectors (small planes) */
    int pv;                        /* vectors per polyphase plane for that scatter */
    size_t off_xp, off_v, off_wt, off_g, off_gt, off_acc, off_dbacc, off_dv, off_pl, scratch_n;
    int32_t *koff;                 /* V offset (floats) of reduction index (c,u,v) */
    _Alignas(64) int32_t idx[CP_MAXV][16]; /* gather: lane -> offset from base, < 32 */
    int32_t base[CP_MAXV];                 /* gather: offset of lane 0 in its plane */
    uint16_t vmask[CP_MAXV];               /* valid lanes of vector m */
    int32_t xoff[4 * 64];                  /* oc-lane dW: x offset of (phase, pooled pos) */
    _Alignas(64) int32_t sidx[CP_NOFF][4][CP_MAXPV][16]; /* scatter: plane lane <- dV lane */
    uint16_t smask[CP_NOFF][4][CP_MAXPV];
};

static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

static uint16_t lanes(int n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (uint16_t)((1u << n) - 1); }

/* Offset of pooled position pp inside a polyphase plane, relative to the plane's origin. */
static int rel(const tn_convpool *p, int pp) { return (pp / p->pw) * p->wp + pp % p->pw; }

int tn_convpool_create(const tn_conv2d *conv, tn_convpool **out)
{
    *out = NULL;
#ifndef __AVX512F__
    (void)conv;
    (void)rel;
    (void)lanes;
    (void)up16;
    return af_seterr(AF_EINVAL, "fused conv+relu+pool: this build has no AVX-512");
#else
    const tn_conv2d *g = conv;
    if (g->stride != 1 || g->pad != 0 || g->kh != g->kw || g->kh > CP_MAXK)
        return af_seterr(AF_EINVAL, "fused conv+relu+pool: needs stride 1, no padding, a square "
                         "kernel of at most %d", CP_MAXK);
    if (g->oh < 2 || g->ow < 2)
        return af_seterr(AF_EINVAL, "fused conv+relu+pool: conv output %dx%d is smaller than "
                         "the pool window", g->oh, g->ow);
    int npp = (g->oh / 2) * (g->ow / 2);
    if (npp > 16 * CP_MAXV)
        return af_seterr(AF_EINVAL, "fused conv+relu+pool: %d pooled outputs per channel, at "
                         "most %d", npp, 16 * CP_MAXV);
    tn_convpool *p = af_alloc(sizeof *p);
    if (!p)
        return af_seterr(AF_ENOMEM, "fused conv+relu+pool: out of memory");
    p->g = *g;
    p->C = g->c;
    p->OC = g->oc;
    p->H = g->h;
    p->W = g->w;
    p->k = g->kh;
    p->k1 = p->k + 1;
    p->K = p->C * p->k * p->k;
    p->ph = g->oh / 2;
    p->pw = g->ow / 2;
    p->npp = npp;
    p->nv = (npp + 15) / 16;
    p->hp = (p->H + 1) / 2;
    p->wp = (p->W + 1) / 2;
    p->plane = p->hp * p->wp;
    for (int m = 0; m < p->nv; m++) {
        p->base[m] = rel(p, 16 * m);
        p->vmask[m] = lanes(npp - 16 * m);
        for (int l = 0; l < 16; l++) {
            int pp = 16 * m + l, d = pp < npp ? rel(p, pp) - p->base[m] : 0;
            if (d >= 32) {
                af_free(p);
                return af_seterr(AF_EINVAL, "fused conv+relu+pool: pooled rows of %d are too "
                                 "narrow for the window gather", p->pw);
            }
            p->idx[m][l] = d;
        }
    }
    /* weight-gradient strategy by FMA count (accumulator traffic counted as 2 FMAs) */
    long cost_v = (long)p->OC * p->K * (4 * p->nv + 2), cost_x = (long)p->K * 4 * npp;
    p->dw_oc_lanes = p->OC <= 16 && p->k >= 2 && p->k <= 5 && npp <= 64 && cost_x < cost_v;
    if (p->dw_oc_lanes)
        for (int ph = 0; ph < 4; ph++)
            for (int pp = 0; pp < npp; pp++)
                p->xoff[ph * npp + pp] =
                    (2 * (pp / p->pw) + (ph >> 1)) * p->W + 2 * (pp % p->pw) + (ph & 1);
    p->pv = (p->plane + 15) / 16;
    p->dx_vec = p->pv <= CP_MAXPV && p->nv <= 4;
    if (p->dx_vec) {
        const int no = p->k / 2 + 1;
        for (int s2 = 0; s2 < no; s2++)
            for (int t2 = 0; t2 < no; t2++) {
                int o = s2 * no + t2, org = s2 * p->wp + t2;
                for (int m = 0; m < p->nv; m++)
                    for (int j = 0; j < p->pv; j++) {
                        uint16_t mk = 0;
                        for (int L = 0; L < 16; L++) {
                            p->sidx[o][m][j][L] = 0;
                            for (int l = 0; l < 16; l++) {
                                int pp = 16 * m + l;
                                if (pp < npp && org + rel(p, pp) == 16 * j + L) {
                                    p->sidx[o][m][j][L] = l;
                                    mk |= (uint16_t)(1u << L);
                                }
                            }
                        }
                        p->smask[o][m][j] = mk;
                    }
            }
    }
    p->koff = af_alloc(sizeof(int32_t) * p->K);
    if (!p->koff) {
        af_free(p);
        return af_seterr(AF_ENOMEM, "fused conv+relu+pool: out of memory");
    }
    for (int c = 0, kk = 0; c < p->C; c++)
        for (int u = 0; u < p->k; u++)
            for (int v = 0; v < p->k; v++)
                p->koff[kk++] = ((c * p->k1 + u) * p->k1 + v) * p->nv * 16;
    /* scratch layout, every block 64-byte aligned */
    const size_t nvf = (size_t)p->nv * 16, vn = (size_t)p->C * p->k1 * p->k1 * nvf;
    size_t off = 0;
    p->off_xp = off;
    off += up16((size_t)p->C * 4 * p->plane + 64); /* + the gather's overread */
    p->off_v = off;
    off += vn;
    p->off_wt = off;
    off += up16((size_t)p->K * p->OC);
    p->off_g = off;
    off += (size_t)p->OC * 4 * nvf;
    p->off_gt = off;
    off += p->dw_oc_lanes ? 4 * nvf * 16 : 0;
    p->off_acc = off;
    off += p->dw_oc_lanes ? (size_t)p->K * 16 : (size_t)p->OC * p->K * 16;
    p->off_dbacc = off;
    off += (size_t)p->OC * 16;
    p->off_dv = off;
    off += vn;
    p->off_pl = off;
    off += p->dx_vec ? (size_t)p->C * 4 * p->pv * 16 : 0;
    p->scratch_n = off;
    *out = p;
    return 0;
#endif
}

void tn_convpool_free(tn_convpool *p)
{
    if (!p)
        return;
    af_free(p->koff);
    af_free(p);
}

size_t tn_convpool_scratch(const tn_convpool *p) { return p->scratch_n; }
size_t tn_convpool_mask_n(const tn_convpool *p) { return (size_t)p->OC * p->nv * 4; }
size_t tn_convpool_out_n(const tn_convpool *p) { return (size_t)p->OC * p->npp; }

#ifdef __AVX512F__

#define AI static inline __attribute__((always_inline))

/* Polyphase split of one sample: xp[c][rp·2+cp][R·wp + Q] = x[c][2R+rp][2Q+cp]. */
static void split(const tn_convpool *p, const float *x, float *xp)
{
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    const int W = p->W, H = p->H, plane = p->plane, wp = p->wp;
    for (int c = 0; c < p->C; c++)
        for (int r = 0; r < H; r++) {
            const float *row = x + ((size_t)c * H + r) * W;
            float *de = xp + (size_t)(c * 4 + (r & 1) * 2) * plane + (r >> 1) * wp;
            float *dq = de + plane;
            for (int q0 = 0; q0 < W; q0 += 32) {
                int n = W - q0;
                __m512 lo = _mm512_maskz_loadu_ps(lanes(n), row + q0);
                __m512 hi = _mm512_maskz_loadu_ps(lanes(n - 16), row + q0 + 16);
                _mm512_mask_storeu_ps(de + q0 / 2, lanes((n + 1) / 2),
                                      _mm512_permutex2var_ps(lo, ie, hi));
                _mm512_mask_storeu_ps(dq + q0 / 2, lanes(n / 2),
                                      _mm512_permutex2var_ps(lo, io, hi));
            }
        }
}

/* V[c][s][t][m] from the polyphase planes (one permute of two loads per vector). */
static void build_v(const tn_convpool *p, const float *xp, float *V)
{
    const int k1 = p->k1, nv = p->nv;
    float *dst = V;
    for (int c = 0; c < p->C; c++)
        for (int s = 0; s < k1; s++)
            for (int t = 0; t < k1; t++) {
                const float *pl = xp + (size_t)(c * 4 + (s & 1) * 2 + (t & 1)) * p->plane +
                                  (s >> 1) * p->wp + (t >> 1);
                for (int m = 0; m < nv; m++, dst += 16) {
                    const float *q = pl + p->base[m];
                    __m512i ix = _mm512_load_si512(p->idx[m]);
                    _mm512_store_ps(dst, _mm512_permutex2var_ps(_mm512_loadu_ps(q), ix,
                                                                _mm512_loadu_ps(q + 16)));
                }
            }
}

/* Forward of pooled vector m for output channels oc0..oc0+OB-1: 4 phase accumulators per
 * channel over the K = (c,u,v) reduction, then bias, ReLU, pool and the masks. */
AI void fwd_block(const tn_convpool *p, const int OB, int m, int oc0, const float *V,
                  const float *wt, const float *bias, float *y, uint16_t *mask)
{
    const int k = p->k, k1 = p->k1, OC = p->OC;
    const size_t sv = (size_t)p->nv * 16;
    __m512 acc[6][4];
    for (int j = 0; j < OB; j++)
        for (int q = 0; q < 4; q++)
            acc[j][q] = _mm512_setzero_ps();
    const float *wk = wt + oc0;
    for (int c = 0; c < p->C; c++)
        for (int u = 0; u < k; u++) {
            const float *vp = V + ((size_t)(c * k1 + u) * k1) * sv + (size_t)m * 16;
            for (int v = 0; v < k; v++, vp += sv, wk += OC) {
                __m512 x0 = _mm512_load_ps(vp), x1 = _mm512_load_ps(vp + sv);
                __m512 x2 = _mm512_load_ps(vp + k1 * sv), x3 = _mm512_load_ps(vp + (k1 + 1) * sv);
                for (int j = 0; j < OB; j++) {
                    __m512 wj = _mm512_set1_ps(wk[j]);
                    acc[j][0] = _mm512_fmadd_ps(wj, x0, acc[j][0]);
                    acc[j][1] = _mm512_fmadd_ps(wj, x1, acc[j][1]);
                    acc[j][2] = _mm512_fmadd_ps(wj, x2, acc[j][2]);
                    acc[j][3] = _mm512_fmadd_ps(wj, x3, acc[j][3]);
                }
            }
        }
    const __mmask16 vm = p->vmask[m];
    const __m512 zero = _mm512_setzero_ps();
    for (int j = 0; j < OB; j++) {
        const int oc = oc0 + j;
        const __m512 bj = _mm512_set1_ps(bias ? bias[oc] : 0.0f);
        __m512 z0 = _mm512_add_ps(acc[j][0], bj), z1 = _mm512_add_ps(acc[j][1], bj);
        __m512 z2 = _mm512_add_ps(acc[j][2], bj), z3 = _mm512_add_ps(acc[j][3], bj);
        /* first maximum wins: a later phase replaces an earlier one only when greater */
        __mmask16 g1 = _mm512_cmp_ps_mask(z1, z0, _CMP_GT_OQ);
        __mmask16 g3 = _mm512_cmp_ps_mask(z3, z2, _CMP_GT_OQ);
        __m512 b01 = _mm512_mask_blend_ps(g1, z0, z1), b23 = _mm512_mask_blend_ps(g3, z2, z3);
        __mmask16 h = _mm512_cmp_ps_mask(b23, b01, _CMP_GT_OQ);
        __m512 best = _mm512_mask_blend_ps(h, b01, b23);
        __mmask16 act = _mm512_cmp_ps_mask(best, zero, _CMP_GT_OQ) & vm;
        _mm512_mask_storeu_ps(y + (size_t)oc * p->npp + m * 16, vm, _mm512_maskz_mov_ps(act, best));
        uint16_t *mk = mask + ((size_t)oc * p->nv + m) * 4;
        mk[0] = (uint16_t)(act & ~h & ~g1);
        mk[1] = (uint16_t)(act & ~h & g1);
        mk[2] = (uint16_t)(act & h & ~g3);
        mk[3] = (uint16_t)(act & h & g3);
    }
}

void tn_convpool_forward(const tn_convpool *p, int b, const float *x, const float *w,
                         const float *bias, float *y, uint16_t *mask, float *scratch)
{
    const int OC = p->OC, K = p->K;
    const size_t in_n = (size_t)p->C * p->H * p->W, out_n = tn_convpool_out_n(p);
    const size_t mask_n = tn_convpool_mask_n(p);
    float *xp = scratch + p->off_xp, *V = scratch + p->off_v, *wt = scratch + p->off_wt;
    for (int oc = 0; oc < OC; oc++) /* wt (K, OC) = w^T: one broadcast row per tap */
        for (int kk = 0; kk < K; kk++)
            wt[(size_t)kk * OC + oc] = w[(size_t)oc * K + kk];
    for (int n = 0; n < b; n++) {
        split(p, x + n * in_n, xp);
        build_v(p, xp, V);
        float *yn = y + n * out_n;
        uint16_t *mn = mask + n * mask_n;
        for (int m = 0; m < p->nv; m++)
            for (int oc0 = 0; oc0 < OC; oc0 += 6) {
                switch (OC - oc0 < 6 ? OC - oc0 : 6) {
                case 1: fwd_block(p, 1, m, oc0, V, wt, bias, yn, mn); break;
                case 2: fwd_block(p, 2, m, oc0, V, wt, bias, yn, mn); break;
                case 3: fwd_block(p, 3, m, oc0, V, wt, bias, yn, mn); break;
                case 4: fwd_block(p, 4, m, oc0, V, wt, bias, yn, mn); break;
                case 5: fwd_block(p, 5, m, oc0, V, wt, bias, yn, mn); break;
                default: fwd_block(p, 6, m, oc0, V, wt, bias, yn, mn); break;
                }
            }
    }
}

/* ---- backward ----------------------------------------------------------------------- */

/* Weight gradient with pooled positions in lanes: acc[oc][kk] (16 lanes, summed at the end)
 * += G[oc][ph] · V[kk shifted by ph], for OB channels × KB reduction indices. */
AI void dwv_block(const tn_convpool *p, const int OB, const int KB, int oc0, int k0,
                  const float *G, const float *V, float *acc)
{
    const int K = p->K, nv = p->nv, k1 = p->k1;
    __m512 a[6][4];
    for (int j = 0; j < OB; j++)
        for (int i = 0; i < KB; i++)
            a[j][i] = _mm512_load_ps(acc + ((size_t)(oc0 + j) * K + k0 + i) * 16);
    const int32_t *ko = p->koff + k0;
    for (int ph = 0; ph < 4; ph++) {
        const size_t dph = (size_t)((ph >> 1) * k1 + (ph & 1)) * nv * 16;
        for (int m = 0; m < nv; m++) {
            __m512 vv[4];
            for (int i = 0; i < KB; i++)
                vv[i] = _mm512_load_ps(V + ko[i] + dph + m * 16);
            for (int j = 0; j < OB; j++) {
                __m512 gj = _mm512_load_ps(G + ((size_t)((oc0 + j) * 4 + ph) * nv + m) * 16);
                for (int i = 0; i < KB; i++)
                    a[j][i] = _mm512_fmadd_ps(gj, vv[i], a[j][i]);
            }
        }
    }
    for (int j = 0; j < OB; j++)
        for (int i = 0; i < KB; i++)
            _mm512_store_ps(acc + ((size_t)(oc0 + j) * K + k0 + i) * 16, a[j][i]);
}

#define DWV_CASE(ob, kb)                                                                   \
    case (ob) * 8 + (kb):                                                                  \
        dwv_block(p, ob, kb, oc0, k0, G, V, acc);                                          \
        break;

static void dw_v(const tn_convpool *p, const float *G, const float *V, float *acc)
{
    for (int oc0 = 0; oc0 < p->OC; oc0 += 6)
        for (int k0 = 0; k0 < p->K; k0 += 4) {
            int ob = p->OC - oc0 < 6 ? p->OC - oc0 : 6, kb = p->K - k0 < 4 ? p->K - k0 : 4;
            switch (ob * 8 + kb) {
                DWV_CASE(1, 1) DWV_CASE(1, 2) DWV_CASE(1, 3) DWV_CASE(1, 4)
                DWV_CASE(2, 1) DWV_CASE(2, 2) DWV_CASE(2, 3) DWV_CASE(2, 4)
                DWV_CASE(3, 1) DWV_CASE(3, 2) DWV_CASE(3, 3) DWV_CASE(3, 4)
                DWV_CASE(4, 1) DWV_CASE(4, 2) DWV_CASE(4, 3) DWV_CASE(4, 4)
                DWV_CASE(5, 1) DWV_CASE(5, 2) DWV_CASE(5, 3) DWV_CASE(5, 4)
                DWV_CASE(6, 1) DWV_CASE(6, 2) DWV_CASE(6, 3) DWV_CASE(6, 4)
            default: break;
            }
        }
}

/* 16×16 transpose of r[0..15] in place (rows become columns). */
AI void tr16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* r[4G+q] holds, in 128-bit lane L, rows 4G..4G+3 of column 4L+q */
    for (int q = 0; q < 4; q++) {
        __m512 a0 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x44);
        __m512 a1 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xEE);
        __m512 b0 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x44);
        __m512 b1 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xEE);
        t[q] = _mm512_shuffle_f32x4(a0, b0, 0x88);
        t[4 + q] = _mm512_shuffle_f32x4(a0, b0, 0xDD);
        t[8 + q] = _mm512_shuffle_f32x4(a1, b1, 0x88);
        t[12 + q] = _mm512_shuffle_f32x4(a1, b1, 0xDD);
    }
    for (int i = 0; i < 16; i++)
        r[i] = t[i];
}

/* gt[ph][pp][oc] = G[oc][ph][pp]: the masked gradients with output channels in lanes. */
static void build_gt(const tn_convpool *p, const float *G, float *gt)
{
    const int nv = p->nv;
    for (int ph = 0; ph < 4; ph++)
        for (int m = 0; m < nv; m++) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < p->OC ? _mm512_load_ps(G + ((size_t)(i * 4 + ph) * nv + m) * 16)
                                 : _mm512_setzero_ps();
            tr16(r);
            float *dst = gt + ((size_t)ph * nv * 16 + m * 16) * 16;
            for (int i = 0; i < 16; i++)
                _mm512_store_ps(dst + i * 16, r[i]);
        }
}

/* Weight gradient with output channels in lanes, one input channel c of one sample:
 * acc[(c,u,v)] += sum over (phase, pooled pos) of x[c][2i+a+u][2j+b+v] · gt[phase][pos]. */
AI void dwx_chan(const tn_convpool *p, const int KK, const float *xc, const float *gt,
                 float *acc)
{
    const int W = p->W, npp = p->npp, nvf = p->nv * 16;
    __m512 a[5][5];
    for (int u = 0; u < KK; u++)
        for (int v = 0; v < KK; v++)
            a[u][v] = _mm512_load_ps(acc + (u * KK + v) * 16);
    for (int ph = 0; ph < 4; ph++) {
        const int32_t *xo = p->xoff + ph * npp;
        const float *gp = gt + (size_t)ph * nvf * 16;
        for (int pp = 0; pp < npp; pp++) {
            const __m512 g = _mm512_load_ps(gp + pp * 16);
            const float *xb = xc + xo[pp];
            for (int u = 0; u < KK; u++)
                for (int v = 0; v < KK; v++)
                    a[u][v] = _mm512_fmadd_ps(_mm512_set1_ps(xb[u * W + v]), g, a[u][v]);
        }
    }
    for (int u = 0; u < KK; u++)
        for (int v = 0; v < KK; v++)
            _mm512_store_ps(acc + (u * KK + v) * 16, a[u][v]);
}

static void dw_x(const tn_convpool *p, const float *x, const float *gt, float *acc)
{
    const size_t hw = (size_t)p->H * p->W, kk = (size_t)p->k * p->k;
    for (int c = 0; c < p->C; c++) {
        const float *xc = x + c * hw;
        float *ac = acc + c * kk * 16;
        switch (p->k) {
        case 2: dwx_chan(p, 2, xc, gt, ac); break;
        case 3: dwx_chan(p, 3, xc, gt, ac); break;
        case 4: dwx_chan(p, 4, xc, gt, ac); break;
        default: dwx_chan(p, 5, xc, gt, ac); break;
        }
    }
}

/* dV[c][s][t][m] = sum over oc and phases (a,b) of W[oc][c][s-a][t-b] · G[oc][(a,b)][m] for
 * CB channels from c0 (clamped at the last one; duplicates are not stored), row s. */
AI void dv_block(const tn_convpool *p, const int KK, const int CB, int m, int s, int c0,
                 const float *G, const float *w, float *dV)
{
    const int K1 = KK + 1, C = p->C, nv = p->nv;
    __m512 acc[12][8];
    int cc[12];
    for (int i = 0; i < CB; i++) {
        cc[i] = c0 + i < C ? c0 + i : C - 1;
        for (int t = 0; t < K1; t++)
            acc[i][t] = _mm512_setzero_ps();
    }
    for (int oc = 0; oc < p->OC; oc++)
        for (int a = 0; a < 2; a++) {
            const int u = s - a;
            if (u < 0 || u >= KK)
                continue;
            for (int bb = 0; bb < 2; bb++) {
                const __m512 g = _mm512_load_ps(G + ((size_t)(oc * 4 + a * 2 + bb) * nv + m) * 16);
                for (int i = 0; i < CB; i++) {
                    const float *wr = w + ((size_t)(oc * C + cc[i]) * KK + u) * KK;
                    for (int v = 0; v < KK; v++)
                        acc[i][v + bb] = _mm512_fmadd_ps(_mm512_set1_ps(wr[v]), g, acc[i][v + bb]);
                }
            }
        }
    for (int i = 0; i < CB && c0 + i < C; i++)
        for (int t = 0; t < K1; t++)
            _mm512_store_ps(dV + ((((size_t)(c0 + i) * K1 + s) * K1 + t) * nv + m) * 16, acc[i][t]);
}

#define DV_CASE(kk, cb)                                                                    \
    case kk:                                                                               \
        for (int c0 = 0; c0 < p->C; c0 += (cb))                                            \
            dv_block(p, kk, cb, m, s, c0, G, w, dV);                                       \
        break;

static void dv_all(const tn_convpool *p, const float *G, const float *w, float *dV)
{
    for (int m = 0; m < p->nv; m++)
        for (int s = 0; s < p->k1; s++)
            switch (p->k) {
                DV_CASE(1, 12) DV_CASE(2, 8) DV_CASE(3, 6) DV_CASE(4, 4) DV_CASE(5, 3)
                DV_CASE(6, 3) DV_CASE(7, 3)
            default: break;
            }
}

/* dx of one sample from dV: scatter every window vector back to the input positions it was
 * gathered from (adjoint of build_v). Small planes accumulate in vectors, then interleave. */
static void dx_scatter(const tn_convpool *p, const float *dV, float *pl, float *dx)
{
    const int k1 = p->k1, nv = p->nv, H = p->H, W = p->W, C = p->C;
    if (!p->dx_vec) {
        memset(dx, 0, sizeof(float) * C * H * W);
        for (int c = 0; c < C; c++)
            for (int s = 0; s < k1; s++)
                for (int t = 0; t < k1; t++) {
                    const float *d = dV + (((size_t)c * k1 + s) * k1 + t) * nv * 16;
                    for (int pp = 0; pp < p->npp; pp++)
                        dx[((size_t)c * H + 2 * (pp / p->pw) + s) * W + 2 * (pp % p->pw) + t] +=
                            d[pp];
                }
        return;
    }
    const int pv = p->pv, no = p->k / 2 + 1;
    memset(pl, 0, sizeof(float) * C * 4 * pv * 16);
    for (int c = 0; c < C; c++)
        for (int s = 0; s < k1; s++)
            for (int t = 0; t < k1; t++) {
                const int o = (s >> 1) * no + (t >> 1);
                float *pq = pl + ((size_t)c * 4 + (s & 1) * 2 + (t & 1)) * pv * 16;
                const float *d = dV + (((size_t)c * k1 + s) * k1 + t) * nv * 16;
                for (int m = 0; m < nv; m++) {
                    const __m512 dv = _mm512_load_ps(d + m * 16);
                    for (int j = 0; j < pv; j++) {
                        const __mmask16 sm = p->smask[o][m][j];
                        if (!sm)
                            continue;
                        __m512 e = _mm512_maskz_permutexvar_ps(
                            sm, _mm512_load_si512(p->sidx[o][m][j]), dv);
                        _mm512_store_ps(pq + j * 16, _mm512_add_ps(_mm512_load_ps(pq + j * 16), e));
                    }
                }
            }
    /* interleave the polyphase planes back: dx[c][r][2Q+cp] = plane(r&1, cp)[r>>1][Q] */
    const __m512i ilo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i ihi = _mm512_add_epi32(ilo, _mm512_set1_epi32(8));
    const int wp = p->wp;
    for (int c = 0; c < C; c++)
        for (int r = 0; r < H; r++) {
            const float *se = pl + ((size_t)c * 4 + (r & 1) * 2) * pv * 16 + (r >> 1) * wp;
            const float *so = se + pv * 16;
            float *row = dx + ((size_t)c * H + r) * W;
            for (int q0 = 0; q0 < W; q0 += 32) {
                int n = W - q0;
                __m512 e = _mm512_maskz_loadu_ps(lanes((n + 1) / 2), se + q0 / 2);
                __m512 o = _mm512_maskz_loadu_ps(lanes(n / 2), so + q0 / 2);
                _mm512_mask_storeu_ps(row + q0, lanes(n), _mm512_permutex2var_ps(e, ilo, o));
                _mm512_mask_storeu_ps(row + q0 + 16, lanes(n - 16),
                                      _mm512_permutex2var_ps(e, ihi, o));
            }
        }
}

void tn_convpool_backward(const tn_convpool *p, int b, const float *x, const float *w,
                          const float *dy, const uint16_t *mask, float *dx, float *dw,
                          float *db, float *scratch)
{
    const int OC = p->OC, K = p->K, nv = p->nv, npp = p->npp;
    const size_t in_n = (size_t)p->C * p->H * p->W, out_n = tn_convpool_out_n(p);
    const size_t mask_n = tn_convpool_mask_n(p);
    float *xp = scratch + p->off_xp, *V = scratch + p->off_v, *G = scratch + p->off_g;
    float *gt = scratch + p->off_gt, *acc = scratch + p->off_acc, *dbacc = scratch + p->off_dbacc;
    float *dV = scratch + p->off_dv, *pl = scratch + p->off_pl;
    const size_t acc_n = p->dw_oc_lanes ? (size_t)K * 16 : (size_t)OC * K * 16;
    memset(acc, 0, sizeof(float) * acc_n);
    memset(dbacc, 0, sizeof(float) * OC * 16);
    for (int n = 0; n < b; n++) {
        const float *xn = x + n * in_n, *dyn = dy + n * out_n;
        const uint16_t *mn = mask + n * mask_n;
        /* G[oc][phase][m]: dy routed to the window position that won, where it was > 0 */
        for (int oc = 0; oc < OC; oc++) {
            __m512 sb = _mm512_load_ps(dbacc + oc * 16);
            for (int m = 0; m < nv; m++) {
                const uint16_t *mk = mn + ((size_t)oc * nv + m) * 4;
                const float *src = dyn + (size_t)oc * npp + m * 16;
                for (int ph = 0; ph < 4; ph++)
                    _mm512_store_ps(G + ((size_t)(oc * 4 + ph) * nv + m) * 16,
                                    _mm512_maskz_loadu_ps(mk[ph], src));
                sb = _mm512_add_ps(sb, _mm512_maskz_loadu_ps(mk[0] | mk[1] | mk[2] | mk[3], src));
            }
            _mm512_store_ps(dbacc + oc * 16, sb);
        }
        if (p->dw_oc_lanes) {
            build_gt(p, G, gt);
            dw_x(p, xn, gt, acc);
        } else {
            split(p, xn, xp);
            build_v(p, xp, V);
            dw_v(p, G, V, acc);
        }
        if (dx) {
            dv_all(p, G, w, dV);
            dx_scatter(p, dV, pl, dx + n * in_n);
        }
    }
    for (int oc = 0; oc < OC; oc++) {
        for (int kk = 0; kk < K; kk++)
            dw[(size_t)oc * K + kk] += p->dw_oc_lanes
                                           ? acc[(size_t)kk * 16 + oc]
                                           : _mm512_reduce_add_ps(
                                                 _mm512_load_ps(acc + ((size_t)oc * K + kk) * 16));
        if (db)
            db[oc] += _mm512_reduce_add_ps(_mm512_load_ps(dbacc + oc * 16));
    }
}

#else /* no AVX-512: tn_convpool_create never succeeds, so these are never reached */

void tn_convpool_forward(const tn_convpool *p, int b, const float *x, const float *w,
                         const float *bias, float *y, uint16_t *mask, float *scratch)
{
    (void)p, (void)b, (void)x, (void)w, (void)bias, (void)y, (void)mask, (void)scratch;
}

void tn_convpool_backward(const tn_convpool *p, int b, const float *x, const float *w,
                          const float *dy, const uint16_t *mask, float *dx, float *dw,
                          float *db, float *scratch)
{
    (void)p, (void)b, (void)x, (void)w, (void)dy, (void)mask, (void)dx, (void)dw, (void)db;
    (void)scratch;
}

#endif
