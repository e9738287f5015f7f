/* convpool.c — fused conv2d + bias + ReLU + 2x2 max-pool for AVX-512 (see convpool.h).
 *
 * The four conv outputs of a pooling window (phases (a,b) in {0,1}^2) are computed as four
 * accumulators, so the pool is a max across registers and nothing at conv resolution is
 * ever stored. Conv output (2i+a, 2j+b) at tap (u,v) reads x[c][2i+s][2j+t] with s = u+a,
 * t = v+b: in the polyphase split of x (planes of even/odd rows × even/odd columns) that is
 * plane (s&1, t&1) at (i + s/2, j + t/2). Two layouts, chosen per shape by FMA count:
 *  - grid: lanes are pooled positions on the polyphase grid (row stride wp, the lanes past
 *    a pooled row unused), so every operand is one load from a plane (layers with many
 *    pooled outputs per channel, e.g. conv1 of the tutorial CNN);
 *  - channel lanes: lanes are output channels (<= 16) and input values are broadcast, for
 *    layers with few pooled outputs (conv2 of the tutorial CNN).
 * The input gradient is dV[c][s][t] = sum over oc and phases of W·G, added back to the
 * planes and interleaved into NCHW. Stores are kept away from the loads that read them
 * back (splits one sample ahead, interleaves one sample behind): a load that overlaps a
 * store still in flight costs ~20 cycles.
 * No allocation here; scratch is the caller's.
 */
#include "tensor/convpool.h"

#include <string.h>

#include "core/err.h"
#include "core/mem.h"
#include "tensor/dense.h"

#ifdef __AVX512F__
#include <immintrin.h>

#include "tensor/simd512.h"
#endif

#define CP_MAXK 7    /* largest kernel */
#define CP_MAXG 64   /* grid layout: at most 64 vectors of lanes per channel */
#define CP_MAXPP 64  /* channel lanes: at most 64 pooled outputs per channel */
#define CP_NOFF 16   /* (k/2+1)^2 scatter offsets for k <= 7 */
#define CP_MAXPV 4   /* in-vector gradient scatter for planes of <= 4 vectors */

struct tn_convpool {
    tn_conv2d g;
    int C, OC, H, W, k, k1, K;     /* K = C·k·k, the reduction length */
    int ph, pw, npp;               /* pooled plane ph × pw = npp outputs */
    int hp, wp, pstride;           /* polyphase planes hp × wp, pstride floats apart */
    int oc_lanes;                  /* layout: 1 channel lanes, 0 grid */
    int nvec;                      /* lane vectors per channel of G and dV */
    int dx_tab, pv;                /* channel lanes: gradient scatter by tables, plane vectors */
    size_t planes;                 /* floats of one sample's planes */
    size_t off_xp, off_wt, off_g, off_gt, off_acc, off_db, off_dv, off_pl, off_pool, scratch_n;
    int32_t *koff;                 /* grid: plane offset of tap k in phase ph: koff[4k+ph] */
    int32_t soff[8][8];            /* offset of window shift (s,t) inside a channel's planes */
    int32_t c0[CP_MAXG];           /* grid: NCHW index (in the channel) of m's first pooled lane */
    uint16_t vmask[CP_MAXG];       /* grid: lanes of vector m that are pooled outputs */
    int32_t xoff[CP_MAXPP];        /* channel lanes: x offset of the window of position pp */
    int32_t rel[CP_MAXPP];         /* channel lanes: plane offset of position pp */
    _Alignas(64) int32_t sidx[CP_NOFF][4][CP_MAXPV][16]; /* scatter: plane lane <- dV lane */
    uint16_t smask[CP_NOFF][4][CP_MAXPV];
};

static size_t up16(size_t n) { return (n + 15) & ~(size_t)15; }

static uint16_t lanes(int n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (uint16_t)((1u << n) - 1); }

int tn_convpool_create(const tn_conv2d *conv, tn_convpool **out)
{
    *out = NULL;
#ifndef __AVX512F__
    (void)conv;
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
    const int ph = g->oh / 2, pw = g->ow / 2, wp = (g->w + 1) / 2;
    const int nq = (ph - 1) * wp + pw; /* grid positions spanned by the pooled outputs */
    if (nq > 16 * CP_MAXG)
        return af_seterr(AF_EINVAL, "fused conv+relu+pool: pooled planes of %dx%d are too large",
                         ph, pw);
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
    p->ph = ph;
    p->pw = pw;
    p->npp = ph * pw;
    p->hp = (p->H + 1) / 2;
    p->wp = wp;
    /* windows read or written at a plane's offsets reach at most 16 floats past its end */
    p->pstride = (int)up16((size_t)p->hp * wp + 16);
    p->planes = (size_t)p->C * 4 * p->pstride;
    for (int s = 0; s < p->k1; s++)
        for (int t = 0; t < p->k1; t++)
            p->soff[s][t] = ((s & 1) * 2 + (t & 1)) * p->pstride + (s >> 1) * wp + (t >> 1);
    /* layout by forward FMA count: grid OC·K·4·(vectors), channel lanes K·4·npp */
    const int nvs = (nq + 15) / 16;
    long cost_grid = (long)p->OC * p->K * 4 * nvs, cost_lanes = (long)p->K * 4 * p->npp;
    p->oc_lanes = p->OC <= 16 && p->k <= 5 && p->npp <= CP_MAXPP && cost_lanes < cost_grid;
    if (!p->oc_lanes) {
        p->nvec = nvs;
        for (int m = 0, c0 = 0; m < nvs; m++) {
            uint16_t vm = 0;
            for (int l = 0; l < 16; l++) {
                int q = 16 * m + l;
                if (q < nq && q % wp < pw)
                    vm |= (uint16_t)(1u << l);
            }
            p->vmask[m] = vm;
            p->c0[m] = c0;
            c0 += __builtin_popcount(vm);
        }
        p->koff = af_alloc(sizeof(int32_t) * 4 * p->K);
        if (!p->koff) {
            af_free(p);
            return af_seterr(AF_ENOMEM, "fused conv+relu+pool: out of memory");
        }
        for (int c = 0, kk = 0; c < p->C; c++)
            for (int u = 0; u < p->k; u++)
                for (int v = 0; v < p->k; v++, kk++)
                    for (int q = 0; q < 4; q++)
                        p->koff[4 * kk + q] = c * 4 * p->pstride + p->soff[u + (q >> 1)][v + (q & 1)];
    } else {
        p->nvec = (p->npp + 15) / 16;
        for (int pp = 0; pp < p->npp; pp++) {
            p->xoff[pp] = 2 * (pp / pw) * p->W + 2 * (pp % pw);
            p->rel[pp] = (pp / pw) * wp + pp % pw;
        }
        p->pv = (p->hp * wp + 15) / 16;
        p->dx_tab = p->pv <= CP_MAXPV && p->nvec <= 4;
        const int no = p->k / 2 + 1;
        for (int s2 = 0; p->dx_tab && s2 < no; s2++)
            for (int t2 = 0; t2 < no; t2++) {
                int o = s2 * no + t2, org = s2 * wp + t2;
                for (int m = 0; m < p->nvec; m++)
                    for (int j = 0; j < p->pv; j++) {
                        uint16_t mk = 0;
                        for (int L = 0; L < 16; L++) {
                            p->sidx[o][m][j][L] = 0;
                            for (int l = 0; l < 16; l++) {
                                int pp = 16 * m + l;
                                if (pp < p->npp && org + p->rel[pp] == 16 * j + L) {
                                    p->sidx[o][m][j][L] = l;
                                    mk |= (uint16_t)(1u << L);
                                }
                            }
                        }
                        p->smask[o][m][j] = mk;
                    }
            }
    }
    /* scratch layout, every block 64-byte aligned */
    const size_t vf = (size_t)p->nvec * 16;
    size_t off = 0;
    p->off_xp = off; /* grid: two polyphase copies of the input (one sample ahead) */
    off += p->oc_lanes ? 0 : 2 * p->planes;
    p->off_wt = off;
    off += p->oc_lanes ? up16((size_t)p->K) * 16 : up16((size_t)p->K * p->OC);
    p->off_g = off;
    off += (size_t)p->OC * 4 * vf;
    p->off_gt = off; /* channel lanes: G^T[phase][pp][oc] and dy^T */
    off += p->oc_lanes ? 5 * vf * 16 : 0;
    p->off_acc = off;
    off += p->oc_lanes ? (size_t)p->K * 16 : (size_t)p->OC * p->K * 16;
    p->off_db = off;
    off += (size_t)p->OC * 16;
    p->off_dv = off;
    off += (size_t)p->C * p->k1 * p->k1 * vf;
    p->off_pl = off; /* two gradient plane sets (interleaved one sample behind) */
    off += 2 * p->planes;
    p->off_pool = off;
    off += p->oc_lanes ? vf * 16 : 0;
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
size_t tn_convpool_mask_n(const tn_convpool *p)
{
    return p->oc_lanes ? (size_t)p->npp * 4 : (size_t)p->OC * p->nvec * 4;
}
size_t tn_convpool_out_n(const tn_convpool *p) { return (size_t)p->OC * p->npp; }

#ifdef __AVX512F__

#define AI static inline __attribute__((always_inline))

/* Pool of the four phase values (bias added): the max, where the first maximum wins as in
 * PyTorch, and the per-phase masks of winners that are > 0 (the only ones with gradient). */
AI __m512 pool4(__m512 z0, __m512 z1, __m512 z2, __m512 z3, __mmask16 valid, uint16_t mk[4])
{
    __mmask16 g1 = _mm512_cmp_ps_mask(z1, z0, _CMP_GT_OQ);
    __mmask16 g3 = _mm512_cmp_ps_mask(z3, z2, _CMP_GT_OQ);
    __m512 b01 = _mm512_mask_blend_ps(g1, z0, z1), b23 = _mm512_mask_blend_ps(g3, z2, z3);
    __mmask16 h = _mm512_cmp_ps_mask(b23, b01, _CMP_GT_OQ);
    __m512 best = _mm512_mask_blend_ps(h, b01, b23);
    __mmask16 act = _mm512_cmp_ps_mask(best, _mm512_setzero_ps(), _CMP_GT_OQ) & valid;
    mk[0] = (uint16_t)(act & ~h & ~g1);
    mk[1] = (uint16_t)(act & ~h & g1);
    mk[2] = (uint16_t)(act & h & ~g3);
    mk[3] = (uint16_t)(act & h & g3);
    return _mm512_maskz_mov_ps(act, best);
}

/* Transposes rows src[i·ss .. +n) for i < nr (others zero; at most 16 rows, n <= 16 columns)
 * into dst[j·16 + i] for j < 16. */
static void transpose_in(const float *src, size_t ss, int nr, int n, float *dst)
{
    __m512 r[16];
    for (int i = 0; i < 16; i++)
        r[i] = i < nr ? _mm512_maskz_loadu_ps(lanes(n), src + i * ss) : _mm512_setzero_ps();
    tr16(r);
    for (int j = 0; j < 16; j++)
        _mm512_store_ps(dst + j * 16, r[j]);
}

/* Polyphase split of one sample: plane (rp,cp) of channel c, at c·4·pstride + (rp·2+cp)·pstride,
 * holds x[c][2R+rp][2Q+cp] at R·wp + Q. Whole vectors are stored: a row's tail spills into
 * the next row (written after it) or into the plane's padding. */
static void split(const tn_convpool *p, const float *x, float *xp)
{
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    const int W = p->W, H = p->H, ps = p->pstride, wp = p->wp;
    for (int c = 0; c < p->C; c++)
        for (int r = 0; r < H; r++) {
            const float *row = x + ((size_t)c * H + r) * W;
            float *de = xp + (size_t)(c * 4 + (r & 1) * 2) * ps + (r >> 1) * wp;
            float *dq = de + ps;
            for (int q0 = 0; q0 < W; q0 += 32) {
                int n = W - q0;
                __m512 lo = _mm512_maskz_loadu_ps(lanes(n), row + q0);
                __m512 hi = _mm512_maskz_loadu_ps(lanes(n - 16), row + q0 + 16);
                _mm512_storeu_ps(de + q0 / 2, _mm512_permutex2var_ps(lo, ie, hi));
                _mm512_storeu_ps(dq + q0 / 2, _mm512_permutex2var_ps(lo, io, hi));
            }
        }
}

/* Interleaves even/odd-column plane rows e, o (n_out floats of output) into row. */
AI void interleave_row(const float *e, const float *o, float *row, int n_out, __m512i ilo,
                       __m512i ihi)
{
    for (int q0 = 0; q0 < n_out; q0 += 32) {
        int n = n_out - q0;
        __m512 ev = _mm512_loadu_ps(e + q0 / 2), ov = _mm512_loadu_ps(o + q0 / 2);
        _mm512_mask_storeu_ps(row + q0, lanes(n), _mm512_permutex2var_ps(ev, ilo, ov));
        _mm512_mask_storeu_ps(row + q0 + 16, lanes(n - 16), _mm512_permutex2var_ps(ev, ihi, ov));
    }
}

/* Gradient planes back into NCHW: dx[c][r][2Q+cp] = plane(r&1,cp)[r>>1][Q]. */
static void interleave(const tn_convpool *p, const float *pl, float *dx)
{
    const __m512i ilo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i ihi = _mm512_add_epi32(ilo, _mm512_set1_epi32(8));
    const int W = p->W, H = p->H, ps = p->pstride, wp = p->wp;
    for (int c = 0; c < p->C; c++)
        for (int r = 0; r < H; r++) {
            const float *se = pl + (size_t)(c * 4 + (r & 1) * 2) * ps + (r >> 1) * wp;
            interleave_row(se, se + ps, dx + ((size_t)c * H + r) * W, W, ilo, ihi);
        }
}

static void zero_floats(float *a, size_t n) /* n a multiple of 16, a aligned */
{
    for (size_t i = 0; i < n; i += 16)
        _mm512_store_ps(a + i, _mm512_setzero_ps());
}

/* ---- grid layout ------------------------------------------------------------------- */

/* Forward of grid vector m for channels oc0..oc0+OB-1: per tap one weight broadcast per
 * channel, one plane load per phase. KK > 0: the kernel size is known at compile time, the
 * taps are unrolled and every address is a constant offset from one of four plane
 * pointers; KK = 0: any size, plane offsets from the koff table. wb holds this channel
 * block's weights, tap-major: wb[k·OB + j]. */
AI void grid_fwd(const tn_convpool *p, const int OB, const int KK, int m, int oc0,
                 const float *xp, const float *wb, const float *bias, float *y, uint16_t *mask)
{
    __m512 acc[6][4];
    for (int j = 0; j < OB; j++)
        for (int q = 0; q < 4; q++)
            acc[j][q] = _mm512_setzero_ps();
    if (KK) {
        const size_t wp = p->wp, ps = p->pstride;
        for (int c = 0; c < p->C; c++) {
            const float *b0 = xp + (size_t)c * 4 * ps + 16 * m;
            const float *pl[4] = {b0, b0 + ps, b0 + 2 * ps, b0 + 3 * ps};
            const float *wc = wb + (size_t)c * KK * KK * OB;
#pragma GCC unroll 8
            for (int u = 0; u < KK; u++)
#pragma GCC unroll 8
                for (int v = 0; v < KK; v++) {
                    __m512 xv[4];
#pragma GCC unroll 4
                    for (int q = 0; q < 4; q++) {
                        const int s = u + (q >> 1), t = v + (q & 1);
                        xv[q] = _mm512_loadu_ps(pl[(s & 1) * 2 + (t & 1)] + (s >> 1) * wp + (t >> 1));
                    }
                    const float *wk = wc + (u * KK + v) * OB;
#pragma GCC unroll 6
                    for (int j = 0; j < OB; j++) {
                        const __m512 wj = _mm512_set1_ps(wk[j]);
                        for (int q = 0; q < 4; q++)
                            acc[j][q] = _mm512_fmadd_ps(wj, xv[q], acc[j][q]);
                    }
                }
        }
    } else {
        const float *xm = xp + 16 * m, *wk = wb;
        const int32_t *ko = p->koff;
        for (int kk = 0; kk < p->K; kk++, ko += 4, wk += OB) {
            __m512 x0 = _mm512_loadu_ps(xm + ko[0]), x1 = _mm512_loadu_ps(xm + ko[1]);
            __m512 x2 = _mm512_loadu_ps(xm + ko[2]), x3 = _mm512_loadu_ps(xm + ko[3]);
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
    const int cnt = __builtin_popcount(vm);
    for (int j = 0; j < OB; j++) {
        const int oc = oc0 + j;
        const __m512 bj = _mm512_set1_ps(bias ? bias[oc] : 0.0f);
        uint16_t *mk = mask + ((size_t)oc * p->nvec + m) * 4;
        __m512 r = pool4(_mm512_add_ps(acc[j][0], bj), _mm512_add_ps(acc[j][1], bj),
                         _mm512_add_ps(acc[j][2], bj), _mm512_add_ps(acc[j][3], bj), vm, mk);
        _mm512_mask_storeu_ps(y + (size_t)oc * p->npp + p->c0[m], lanes(cnt),
                              _mm512_maskz_compress_ps(vm, r));
    }
}

#define GFWD_CASE(ob, kk)                                                                  \
    case (ob) * 8 + (kk):                                                                  \
        grid_fwd(p, ob, kk, m, oc0, xq, wb, bias, yn, mn);                                 \
        break;

static void grid_forward(const tn_convpool *p, int b, const float *x, const float *w,
                         const float *bias, float *y, uint16_t *mask, float *scratch)
{
    const int OC = p->OC, K = p->K;
    const size_t in_n = (size_t)p->C * p->H * p->W, out_n = tn_convpool_out_n(p);
    const size_t mask_n = tn_convpool_mask_n(p), planes = p->planes;
    float *xp = scratch + p->off_xp, *wt = scratch + p->off_wt;
    /* weights by blocks of 6 channels, tap-major inside a block: wt[oc0·K + k·ob + j] */
    for (int oc0 = 0; oc0 < OC; oc0 += 6) {
        const int ob = OC - oc0 < 6 ? OC - oc0 : 6;
        for (int kk = 0; kk < K; kk++)
            for (int j = 0; j < ob; j++)
                wt[(size_t)oc0 * K + (size_t)kk * ob + j] = w[(size_t)(oc0 + j) * K + kk];
    }
    /* unrolled taps for the common kernel sizes (the case value 0 takes the table) */
    const int kk = p->k == 3 || p->k == 5 ? p->k : 0;
    split(p, x, xp);
    for (int n = 0; n < b; n++) {
        if (n + 1 < b) /* split one sample ahead: its stores are done before they are read */
            split(p, x + (n + 1) * in_n, xp + ((n + 1) & 1) * planes);
        const float *xq = xp + (n & 1) * planes;
        float *yn = y + n * out_n;
        uint16_t *mn = mask + n * mask_n;
        for (int m = 0; m < p->nvec; m++)
            for (int oc0 = 0; oc0 < OC; oc0 += 6) {
                const float *wb = wt + (size_t)oc0 * K;
                switch ((OC - oc0 < 6 ? OC - oc0 : 6) * 8 + kk) {
                    GFWD_CASE(1, 0) GFWD_CASE(2, 0) GFWD_CASE(3, 0)
                    GFWD_CASE(4, 0) GFWD_CASE(5, 0) GFWD_CASE(6, 0)
                    GFWD_CASE(1, 3) GFWD_CASE(2, 3) GFWD_CASE(3, 3)
                    GFWD_CASE(4, 3) GFWD_CASE(5, 3) GFWD_CASE(6, 3)
                    GFWD_CASE(1, 5) GFWD_CASE(2, 5) GFWD_CASE(3, 5)
                    GFWD_CASE(4, 5) GFWD_CASE(5, 5) GFWD_CASE(6, 5)
                default: break;
                }
            }
    }
}

/* Weight gradient, grid layout: acc[oc][kk] (16 lanes, summed at the end) += G[oc][phase]
 * · x window of tap kk in that phase, for OB channels × KB taps. */
AI void grid_dw(const tn_convpool *p, const int OB, const int KB, int oc0, int k0,
                const float *G, const float *xp, float *acc)
{
    const int K = p->K, nv = p->nvec;
    __m512 a[6][4];
    for (int j = 0; j < OB; j++)
        for (int i = 0; i < KB; i++)
            a[j][i] = _mm512_load_ps(acc + ((size_t)(oc0 + j) * K + k0 + i) * 16);
    const int32_t *ko = p->koff + 4 * k0;
    for (int m = 0; m < nv; m++) {
        const float *xm = xp + 16 * m;
        for (int ph = 0; ph < 4; ph++) {
            __m512 xv[4];
            for (int i = 0; i < KB; i++)
                xv[i] = _mm512_loadu_ps(xm + ko[4 * i + ph]);
            for (int j = 0; j < OB; j++) {
                __m512 gj = _mm512_load_ps(G + ((size_t)((oc0 + j) * 4 + ph) * nv + m) * 16);
                for (int i = 0; i < KB; i++)
                    a[j][i] = _mm512_fmadd_ps(gj, xv[i], a[j][i]);
            }
        }
    }
    for (int j = 0; j < OB; j++)
        for (int i = 0; i < KB; i++)
            _mm512_store_ps(acc + ((size_t)(oc0 + j) * K + k0 + i) * 16, a[j][i]);
}

#define GDW_CASE(ob, kb)                                                                   \
    case (ob) * 8 + (kb):                                                                  \
        grid_dw(p, ob, kb, oc0, k0, G, xp, acc);                                           \
        break;

static void grid_dw_all(const tn_convpool *p, const float *G, const float *xp, float *acc)
{
    for (int oc0 = 0; oc0 < p->OC; oc0 += 6)
        for (int k0 = 0; k0 < p->K; k0 += 4) {
            int ob = p->OC - oc0 < 6 ? p->OC - oc0 : 6, kb = p->K - k0 < 4 ? p->K - k0 : 4;
            switch (ob * 8 + kb) {
                GDW_CASE(1, 1) GDW_CASE(1, 2) GDW_CASE(1, 3) GDW_CASE(1, 4)
                GDW_CASE(2, 1) GDW_CASE(2, 2) GDW_CASE(2, 3) GDW_CASE(2, 4)
                GDW_CASE(3, 1) GDW_CASE(3, 2) GDW_CASE(3, 3) GDW_CASE(3, 4)
                GDW_CASE(4, 1) GDW_CASE(4, 2) GDW_CASE(4, 3) GDW_CASE(4, 4)
                GDW_CASE(5, 1) GDW_CASE(5, 2) GDW_CASE(5, 3) GDW_CASE(5, 4)
                GDW_CASE(6, 1) GDW_CASE(6, 2) GDW_CASE(6, 3) GDW_CASE(6, 4)
            default: break;
            }
        }
}

/* ---- channel-lane layout ------------------------------------------------------------ */

/* Forward of pooled positions pp0..pp0+3 (clamped at the last; duplicates not stored):
 * acc[i][phase] over output channels in lanes; each input value is broadcast once and
 * meets the weight vectors of the (u,v) = (s-a, t-b) it serves. */
AI void lanes_fwd(const tn_convpool *p, const int KK, int pp0, const float *x, const float *wt,
                  __m512 bias, float *pool, uint16_t *mask)
{
    const int W = p->W, npp = p->npp;
    const size_t hw = (size_t)p->H * W;
    int pi[4];
    for (int i = 0; i < 4; i++)
        pi[i] = pp0 + i < npp ? pp0 + i : npp - 1;
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int q = 0; q < 4; q++)
            acc[i][q] = _mm512_setzero_ps();
    for (int c = 0; c < p->C; c++) {
        const float *xr[4];
        for (int i = 0; i < 4; i++)
            xr[i] = x + c * hw + p->xoff[pi[i]];
        const float *wc = wt + (size_t)c * KK * KK * 16;
#pragma GCC unroll 8
        for (int s = 0; s <= KK; s++, xr[0] += W, xr[1] += W, xr[2] += W, xr[3] += W)
#pragma GCC unroll 8
            for (int t = 0; t <= KK; t++) {
                __m512 xs[4];
                for (int i = 0; i < 4; i++)
                    xs[i] = _mm512_set1_ps(xr[i][t]);
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++) {
                    const int u = s - (q >> 1), v = t - (q & 1);
                    if (u < 0 || u >= KK || v < 0 || v >= KK)
                        continue;
                    const __m512 wv = _mm512_load_ps(wc + (u * KK + v) * 16);
                    for (int i = 0; i < 4; i++)
                        acc[i][q] = _mm512_fmadd_ps(xs[i], wv, acc[i][q]);
                }
            }
    }
    const __mmask16 ocm = lanes(p->OC);
    for (int i = 0; i < 4 && pp0 + i < npp; i++) {
        __m512 r = pool4(_mm512_add_ps(acc[i][0], bias), _mm512_add_ps(acc[i][1], bias),
                         _mm512_add_ps(acc[i][2], bias), _mm512_add_ps(acc[i][3], bias), ocm,
                         mask + (size_t)(pp0 + i) * 4);
        _mm512_store_ps(pool + (size_t)(pp0 + i) * 16, r);
    }
}

static void lanes_forward(const tn_convpool *p, int b, const float *x, const float *w,
                          const float *bias, float *y, uint16_t *mask, float *scratch)
{
    const int OC = p->OC, K = p->K, npp = p->npp;
    const size_t in_n = (size_t)p->C * p->H * p->W, out_n = tn_convpool_out_n(p);
    const size_t mask_n = tn_convpool_mask_n(p);
    float *wt = scratch + p->off_wt, *pool = scratch + p->off_pool;
    for (int k0 = 0; k0 < K; k0 += 16) /* wt (K, 16) = w^T, channels past OC zero */
        transpose_in(w + k0, (size_t)K, OC, K - k0, wt + (size_t)k0 * 16);
    const __m512 bv = bias ? _mm512_maskz_loadu_ps(lanes(OC), bias) : _mm512_setzero_ps();
    for (int n = 0; n < b; n++) {
        const float *xn = x + n * in_n;
        uint16_t *mn = mask + n * mask_n;
        for (int pp0 = 0; pp0 < npp; pp0 += 4)
            switch (p->k) {
            case 1: lanes_fwd(p, 1, pp0, xn, wt, bv, pool, mn); break;
            case 2: lanes_fwd(p, 2, pp0, xn, wt, bv, pool, mn); break;
            case 3: lanes_fwd(p, 3, pp0, xn, wt, bv, pool, mn); break;
            case 4: lanes_fwd(p, 4, pp0, xn, wt, bv, pool, mn); break;
            default: lanes_fwd(p, 5, pp0, xn, wt, bv, pool, mn); break;
            }
        /* pool [pp][oc] -> y [oc][pp] */
        float *yn = y + n * out_n;
        for (int q0 = 0; q0 < npp; q0 += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = q0 + i < npp ? _mm512_load_ps(pool + (size_t)(q0 + i) * 16)
                                    : _mm512_setzero_ps();
            tr16(r);
            for (int oc = 0; oc < OC; oc++)
                _mm512_mask_storeu_ps(yn + (size_t)oc * npp + q0, lanes(npp - q0), r[oc]);
        }
    }
}

/* Weight gradient, channel lanes, one input channel of one sample: acc[u][v] (channels in
 * lanes) += x[c][2i+s][2j+t] · G^T[phase][pos] over positions and the phases with
 * (s,t) = (u+a, v+b); each input value is broadcast once. */
AI void lanes_dw(const tn_convpool *p, const int KK, const float *xc, const float *gt,
                 float *acc)
{
    const int W = p->W, npp = p->npp, nvf = p->nvec * 16;
    __m512 a[5][5];
    for (int u = 0; u < KK; u++)
        for (int v = 0; v < KK; v++)
            a[u][v] = _mm512_load_ps(acc + (u * KK + v) * 16);
    for (int pp = 0; pp < npp; pp++) {
        __m512 g[4];
        for (int q = 0; q < 4; q++)
            g[q] = _mm512_load_ps(gt + ((size_t)q * nvf + pp) * 16);
        const float *xr = xc + p->xoff[pp];
#pragma GCC unroll 8
        for (int s = 0; s <= KK; s++, xr += W)
#pragma GCC unroll 8
            for (int t = 0; t <= KK; t++) {
                const __m512 xv = _mm512_set1_ps(xr[t]);
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++) {
                    const int u = s - (q >> 1), v = t - (q & 1);
                    if (u >= 0 && u < KK && v >= 0 && v < KK)
                        a[u][v] = _mm512_fmadd_ps(xv, g[q], a[u][v]);
                }
            }
    }
    for (int u = 0; u < KK; u++)
        for (int v = 0; v < KK; v++)
            _mm512_store_ps(acc + (u * KK + v) * 16, a[u][v]);
}

static void lanes_dw_all(const tn_convpool *p, const float *x, const float *gt, float *acc)
{
    const size_t hw = (size_t)p->H * p->W, kk = (size_t)p->k * p->k;
    for (int c = 0; c < p->C; c++) {
        const float *xc = x + c * hw;
        float *ac = acc + c * kk * 16;
        switch (p->k) {
        case 1: lanes_dw(p, 1, xc, gt, ac); break;
        case 2: lanes_dw(p, 2, xc, gt, ac); break;
        case 3: lanes_dw(p, 3, xc, gt, ac); break;
        case 4: lanes_dw(p, 4, xc, gt, ac); break;
        default: lanes_dw(p, 5, xc, gt, ac); break;
        }
    }
}

/* ---- input gradient ------------------------------------------------------------------ */

/* dV[c][s][t][m] for window rows s in [S0, S0+SB): sum over oc and phases (a,b) of
 * W[oc][c][s-a][t-b] · G[oc][(a,b)][m]. Each weight is broadcast once per row block and
 * feeds every phase it meets. */
AI void dv_rows(const tn_convpool *p, const int KK, const int S0, const int SB, int c, int m,
                const float *G, const float *w, float *dV)
{
    const int K1 = KK + 1, C = p->C, nv = p->nvec;
    __m512 acc[4][8];
    for (int i = 0; i < SB; i++)
        for (int t = 0; t < K1; t++)
            acc[i][t] = _mm512_setzero_ps();
    for (int oc = 0; oc < p->OC; oc++) {
        __m512 g[4];
        for (int q = 0; q < 4; q++)
            g[q] = _mm512_load_ps(G + ((size_t)(oc * 4 + q) * nv + m) * 16);
        const float *wc = w + (size_t)(oc * C + c) * KK * KK;
#pragma GCC unroll 8
        for (int u = S0 - 1; u < S0 + SB; u++) {
            if (u < 0 || u >= KK)
                continue;
#pragma GCC unroll 8
            for (int v = 0; v < KK; v++) {
                const __m512 wv = _mm512_set1_ps(wc[u * KK + v]);
#pragma GCC unroll 4
                for (int q = 0; q < 4; q++) {
                    const int i = u + (q >> 1) - S0;
                    if (i >= 0 && i < SB)
                        acc[i][v + (q & 1)] = _mm512_fmadd_ps(wv, g[q], acc[i][v + (q & 1)]);
                }
            }
        }
    }
    for (int i = 0; i < SB; i++)
        for (int t = 0; t < K1; t++)
            _mm512_store_ps(dV + ((((size_t)c * K1 + S0 + i) * K1 + t) * nv + m) * 16, acc[i][t]);
}

static void dv_all(const tn_convpool *p, const float *G, const float *w, float *dV)
{
    for (int c = 0; c < p->C; c++)
        for (int m = 0; m < p->nvec; m++)
            switch (p->k) { /* window rows in blocks of at most 24 accumulators */
            case 1: dv_rows(p, 1, 0, 2, c, m, G, w, dV); break;
            case 2: dv_rows(p, 2, 0, 3, c, m, G, w, dV); break;
            case 3: dv_rows(p, 3, 0, 4, c, m, G, w, dV); break;
            case 4:
                dv_rows(p, 4, 0, 3, c, m, G, w, dV);
                dv_rows(p, 4, 3, 2, c, m, G, w, dV);
                break;
            case 5:
                dv_rows(p, 5, 0, 3, c, m, G, w, dV);
                dv_rows(p, 5, 3, 3, c, m, G, w, dV);
                break;
            case 6:
                dv_rows(p, 6, 0, 3, c, m, G, w, dV);
                dv_rows(p, 6, 3, 3, c, m, G, w, dV);
                dv_rows(p, 6, 6, 1, c, m, G, w, dV);
                break;
            default:
                dv_rows(p, 7, 0, 3, c, m, G, w, dV);
                dv_rows(p, 7, 3, 3, c, m, G, w, dV);
                dv_rows(p, 7, 6, 2, c, m, G, w, dV);
                break;
            }
}

/* Channel lanes, small planes: dV of channel c permuted onto the PV vectors of each of its
 * four compact planes, accumulated in registers, stored once. */
AI void scatter_tab(const tn_convpool *p, const int KK, const int PV, const float *dVc,
                    float *plc)
{
    const int K1 = KK + 1, nv = p->nvec, no = KK / 2 + 1;
    __m512 acc[4][CP_MAXPV];
    for (int q = 0; q < 4; q++)
        for (int j = 0; j < PV; j++)
            acc[q][j] = _mm512_setzero_ps();
    for (int m = 0; m < nv; m++)
#pragma GCC unroll 8
        for (int s = 0; s < K1; s++)
#pragma GCC unroll 8
            for (int t = 0; t < K1; t++) {
                const int o = (s >> 1) * no + (t >> 1), q = (s & 1) * 2 + (t & 1);
                const __m512 dv = _mm512_load_ps(dVc + ((size_t)(s * K1 + t) * nv + m) * 16);
#pragma GCC unroll 4
                for (int j = 0; j < PV; j++) {
                    const __mmask16 sm = p->smask[o][m][j];
                    if (sm)
                        acc[q][j] = _mm512_add_ps(
                            acc[q][j], _mm512_maskz_permutexvar_ps(
                                           sm, _mm512_load_si512(p->sidx[o][m][j]), dv));
                }
            }
    for (int q = 0; q < 4; q++)
        for (int j = 0; j < PV; j++)
            _mm512_store_ps(plc + (size_t)q * p->pstride + 16 * j, acc[q][j]);
}

#define STAB_CASE(kk, pv)                                                                  \
    case (kk) * 8 + (pv):                                                                  \
        scatter_tab(p, kk, pv, dVc, plc);                                                  \
        break;

/* Adds dV back into the gradient planes pl (the adjoint of the window reads). */
static void scatter(const tn_convpool *p, const float *dV, float *pl)
{
    const int k1 = p->k1, nv = p->nvec;
    for (int c = 0; c < p->C; c++) {
        const float *dVc = dV + (size_t)c * k1 * k1 * nv * 16;
        if (!p->oc_lanes) { /* grid lanes are plane positions: one window per vector */
            float *plc = pl + (size_t)c * 4 * p->pstride;
            for (int s = 0; s < k1; s++)
                for (int t = 0; t < k1; t++) {
                    float *q = plc + p->soff[s][t];
                    const float *d = dVc + (size_t)(s * k1 + t) * nv * 16;
                    for (int m = 0; m < nv; m++)
                        _mm512_storeu_ps(q + 16 * m, _mm512_add_ps(_mm512_loadu_ps(q + 16 * m),
                                                                   _mm512_load_ps(d + 16 * m)));
                }
            continue;
        }
        float *plc = pl + (size_t)c * 4 * p->pstride;
        if (p->dx_tab) {
            switch (p->k * 8 + p->pv) {
                STAB_CASE(1, 1) STAB_CASE(1, 2) STAB_CASE(1, 3) STAB_CASE(1, 4)
                STAB_CASE(2, 1) STAB_CASE(2, 2) STAB_CASE(2, 3) STAB_CASE(2, 4)
                STAB_CASE(3, 1) STAB_CASE(3, 2) STAB_CASE(3, 3) STAB_CASE(3, 4)
                STAB_CASE(4, 1) STAB_CASE(4, 2) STAB_CASE(4, 3) STAB_CASE(4, 4)
                STAB_CASE(5, 1) STAB_CASE(5, 2) STAB_CASE(5, 3) STAB_CASE(5, 4)
            default: break;
            }
            continue;
        }
        for (int s = 0; s < k1; s++) /* larger planes: one add per output */
            for (int t = 0; t < k1; t++) {
                float *q = plc + p->soff[s][t];
                const float *d = dVc + (size_t)(s * k1 + t) * nv * 16;
                for (int pp = 0; pp < p->npp; pp++)
                    q[p->rel[pp]] += d[pp];
            }
    }
}

/* ---- drivers ------------------------------------------------------------------------ */

void tn_convpool_forward(const tn_convpool *p, int b, const float *x, const float *w,
                         const float *bias, float *y, uint16_t *mask, float *scratch)
{
    if (b <= 0)
        return;
    if (p->oc_lanes)
        lanes_forward(p, b, x, w, bias, y, mask, scratch);
    else
        grid_forward(p, b, x, w, bias, y, mask, scratch);
}

/* G[oc][phase][m] for one sample: dy routed to the window position that won, where it was
 * positive; also db lanes. Grid layout: dy is expanded from NCHW onto the grid. */
static void grid_grad(const tn_convpool *p, const float *dy, const uint16_t *mask, float *G,
                      float *dbacc)
{
    const int nv = p->nvec;
    for (int oc = 0; oc < p->OC; oc++) {
        __m512 sb = _mm512_load_ps(dbacc + oc * 16);
        for (int m = 0; m < nv; m++) {
            const __mmask16 vm = p->vmask[m];
            const uint16_t *mk = mask + ((size_t)oc * nv + m) * 4;
            __m512 e = _mm512_maskz_expand_ps(
                vm, _mm512_maskz_loadu_ps(lanes(__builtin_popcount(vm)),
                                          dy + (size_t)oc * p->npp + p->c0[m]));
            for (int q = 0; q < 4; q++)
                _mm512_store_ps(G + ((size_t)(oc * 4 + q) * nv + m) * 16,
                                _mm512_maskz_mov_ps(mk[q], e));
            sb = _mm512_add_ps(sb, _mm512_maskz_mov_ps(mk[0] | mk[1] | mk[2] | mk[3], e));
        }
        _mm512_store_ps(dbacc + oc * 16, sb);
    }
}

/* Channel lanes: gt[phase][pp][oc] = dy^T masked by the phase that won; dbacc lanes += dy^T
 * where it had gradient. With want_g also, positions in lanes for the input gradient:
 * G[oc][m] = the gradient of each pooled output (whichever phase won) and, right after
 * (int32), its window offset a·k + b plus flags a·2^16 + b·2^17 (see dv_sparse). */
static void lanes_grad(const tn_convpool *p, const float *dy, const uint16_t *mask, float *gt,
                       float *G, float *dbacc, int want_g)
{
    const int npp = p->npp, nv = p->nvec, nvf = nv * 16, OC = p->OC;
    float *dyt = gt + 4 * (size_t)nvf * 16;
    for (int q0 = 0; q0 < npp; q0 += 16)
        transpose_in(dy + q0, (size_t)npp, OC, npp - q0, dyt + (size_t)q0 * 16);
    __m512 sb = _mm512_load_ps(dbacc);
    for (int pp = 0; pp < npp; pp++) {
        const __m512 d = _mm512_load_ps(dyt + (size_t)pp * 16);
        const uint16_t *mk = mask + (size_t)pp * 4;
        for (int q = 0; q < 4; q++)
            _mm512_store_ps(gt + ((size_t)q * nvf + pp) * 16, _mm512_maskz_mov_ps(mk[q], d));
        sb = _mm512_add_ps(sb, _mm512_maskz_mov_ps(mk[0] | mk[1] | mk[2] | mk[3], d));
    }
    _mm512_store_ps(dbacc, sb);
    if (!want_g)
        return;
    const __m512i ea = _mm512_set1_epi32(p->k + (1 << 16)), eb = _mm512_set1_epi32(1 + (1 << 17));
    int32_t *P = (int32_t *)(G + (size_t)OC * nvf);
    for (int m = 0; m < nv; m++) {
        __m512 r[16], o[16];
        for (int i = 0; i < 16; i++) {
            const int pp = 16 * m + i;
            if (pp >= npp) {
                r[i] = o[i] = _mm512_setzero_ps();
                continue;
            }
            const uint16_t *mk = mask + (size_t)pp * 4;
            r[i] = _mm512_maskz_mov_ps(mk[0] | mk[1] | mk[2] | mk[3],
                                       _mm512_load_ps(dyt + (size_t)pp * 16));
            /* rows a = 1 for phases 2,3; columns b = 1 for phases 1,3 */
            __m512i e = _mm512_add_epi32(_mm512_maskz_mov_epi32(mk[2] | mk[3], ea),
                                         _mm512_maskz_mov_epi32(mk[1] | mk[3], eb));
            o[i] = _mm512_castsi512_ps(e);
        }
        tr16(r);
        tr16(o);
        for (int oc = 0; oc < OC; oc++) {
            _mm512_store_ps(G + ((size_t)oc * nv + m) * 16, r[oc]);
            _mm512_store_ps((float *)P + ((size_t)oc * nv + m) * 16, o[oc]);
        }
    }
}

/* Channel lanes, input gradient for window rows [S0, S0+SB) of channel c, vector m:
 * dV[c][s][t] = sum over oc of W[oc][c][s-a][t-b] · g[oc], where (a,b) is the phase that won
 * in each lane (the other three phases have no gradient). Kernel rows s-1 and s are 2k
 * consecutive floats, so one load holds every weight row s can use and one permute picks
 * each lane's: index (1-a)·k + t - b = (k + t) - off. */
AI void dv_sparse(const tn_convpool *p, const int KK, const int S0, const int SB, int c, int m,
                  const float *G, const float *w, float *dV)
{
    const int K1 = KK + 1, C = p->C, nv = p->nvec, OC = p->OC;
    const int32_t *P = (const int32_t *)(G + (size_t)OC * nv * 16);
    __m512 acc[4][8];
    for (int i = 0; i < SB; i++)
        for (int t = 0; t < K1; t++)
            acc[i][t] = _mm512_setzero_ps();
    const __m512i fa = _mm512_set1_epi32(1 << 16), fb = _mm512_set1_epi32(1 << 17);
    for (int oc = 0; oc < OC; oc++) {
        const float *wc = w + (size_t)(oc * C + c) * KK * KK;
        const __m512 g = _mm512_load_ps(G + ((size_t)oc * nv + m) * 16);
        /* off = a·k + b in the low bits (the permute reads only the low 4 bits of
         * (k + t) - off, so the flags above them do no harm), a and b as flags */
        const __m512i off = _mm512_load_si512(P + ((size_t)oc * nv + m) * 16);
        const __mmask16 a1 = _mm512_test_epi32_mask(off, fa), b1 = _mm512_test_epi32_mask(off, fb);
        __m512i idx[8];
#pragma GCC unroll 8
        for (int t = 0; t < K1; t++)
            idx[t] = _mm512_sub_epi32(_mm512_set1_epi32(KK + t), off);
#pragma GCC unroll 4
        for (int i = 0; i < SB; i++) {
            const int s = S0 + i;
            /* rows s-1, s of the kernel (row -1 and row k do not exist: those lanes stay
             * zero, and the lanes that would use them are masked below) */
            const __m512 T = s == 0    ? _mm512_maskz_loadu_ps((__mmask16)(lanes(2 * KK) & ~lanes(KK)), wc - KK)
                             : s == KK ? _mm512_maskz_loadu_ps(lanes(KK), wc + (s - 1) * KK)
                                       : _mm512_maskz_loadu_ps(lanes(2 * KK), wc + (s - 1) * KK);
            /* s - a must be a kernel row: row 0 only for a = 0, row k only for a = 1 */
            const __mmask16 ms = s == 0 ? (__mmask16)~a1 : s == KK ? a1 : (__mmask16)0xFFFF;
#pragma GCC unroll 8
            for (int t = 0; t < K1; t++) {
                const __mmask16 mt = t == 0 ? (__mmask16)~b1 : t == KK ? b1 : (__mmask16)0xFFFF;
                const __m512 wv = (s == 0 || s == KK || t == 0 || t == KK)
                                      ? _mm512_maskz_permutexvar_ps(ms & mt, idx[t], T)
                                      : _mm512_permutexvar_ps(idx[t], T);
                acc[i][t] = _mm512_fmadd_ps(wv, g, acc[i][t]);
            }
        }
    }
    for (int i = 0; i < SB; i++)
        for (int t = 0; t < K1; t++)
            _mm512_store_ps(dV + ((((size_t)c * K1 + S0 + i) * K1 + t) * nv + m) * 16, acc[i][t]);
}

static void dv_sparse_all(const tn_convpool *p, const float *G, const float *w, float *dV)
{
    for (int c = 0; c < p->C; c++)
        for (int m = 0; m < p->nvec; m++)
            switch (p->k) { /* window rows in blocks of at most 24 accumulators */
            case 1: dv_sparse(p, 1, 0, 2, c, m, G, w, dV); break;
            case 2: dv_sparse(p, 2, 0, 3, c, m, G, w, dV); break;
            case 3: dv_sparse(p, 3, 0, 4, c, m, G, w, dV); break;
            case 4:
                dv_sparse(p, 4, 0, 3, c, m, G, w, dV);
                dv_sparse(p, 4, 3, 2, c, m, G, w, dV);
                break;
            default:
                dv_sparse(p, 5, 0, 3, c, m, G, w, dV);
                dv_sparse(p, 5, 3, 3, c, m, G, w, dV);
                break;
            }
}

void tn_convpool_backward(const tn_convpool *p, int b, const float *x, const float *w,
                          const float *dy, const uint16_t *mask, float *dx, float *dw,
                          float *db, float *scratch)
{
    if (b <= 0)
        return;
    const int OC = p->OC, K = p->K;
    const size_t in_n = (size_t)p->C * p->H * p->W, out_n = tn_convpool_out_n(p);
    const size_t mask_n = tn_convpool_mask_n(p), planes = p->planes;
    float *xp = scratch + p->off_xp, *G = scratch + p->off_g, *gt = scratch + p->off_gt;
    float *acc = scratch + p->off_acc, *dbacc = scratch + p->off_db;
    float *dV = scratch + p->off_dv, *pl = scratch + p->off_pl;
    zero_floats(acc, p->oc_lanes ? (size_t)K * 16 : (size_t)OC * K * 16);
    zero_floats(dbacc, (size_t)OC * 16);
    if (dx)
        zero_floats(pl, 2 * planes);
    if (!p->oc_lanes)
        split(p, x, xp);
    for (int n = 0; n < b; n++) {
        const float *xn = x + n * in_n, *dyn = dy + n * out_n;
        const uint16_t *mn = mask + n * mask_n;
        if (!p->oc_lanes && n + 1 < b)
            split(p, x + (n + 1) * in_n, xp + ((n + 1) & 1) * planes);
        if (p->oc_lanes)
            lanes_grad(p, dyn, mn, gt, G, dbacc, dx != NULL);
        else
            grid_grad(p, dyn, mn, G, dbacc);
        if (dx) {
            if (p->oc_lanes)
                dv_sparse_all(p, G, w, dV);
            else
                dv_all(p, G, w, dV);
            scatter(p, dV, pl + (n & 1) * planes);
        }
        if (p->oc_lanes)
            lanes_dw_all(p, xn, gt, acc);
        else
            grid_dw_all(p, G, xp + (n & 1) * planes, acc);
        if (dx && n > 0) { /* the previous sample's planes: their stores are long done */
            float *prev = pl + ((n - 1) & 1) * planes;
            interleave(p, prev, dx + (n - 1) * in_n);
            if (!p->dx_tab) /* the table scatter overwrites its planes; the others add */
                zero_floats(prev, planes);
        }
    }
    if (dx) {
        interleave(p, pl + ((b - 1) & 1) * planes, dx + (b - 1) * in_n);
    }
    for (int oc = 0; oc < OC; oc++) {
        for (int kk = 0; kk < K; kk++)
            dw[(size_t)oc * K + kk] +=
                p->oc_lanes ? acc[(size_t)kk * 16 + oc]
                            : _mm512_reduce_add_ps(_mm512_load_ps(acc + ((size_t)oc * K + kk) * 16));
        if (db)
            db[oc] += p->oc_lanes ? dbacc[oc] : _mm512_reduce_add_ps(_mm512_load_ps(dbacc + oc * 16));
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
