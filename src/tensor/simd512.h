/* simd512.h — AVX-512 building blocks shared by the specialised kernels (convpool.c,
 * dense.c). Layer `tensor`; include only under #ifdef __AVX512F__ after <immintrin.h>. */
#ifndef AF_TENSOR_SIMD512_H
#define AF_TENSOR_SIMD512_H

#include <immintrin.h>

/* 16×16 transpose of r[0..15] in place. */
static inline __attribute__((always_inline)) void tr16(__m512 r[16])
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

#endif
