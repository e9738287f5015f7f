/* convpool.h — fused conv2d (stride 1, no padding) + bias + ReLU + 2x2/2 max-pool, the block
 * small image CNNs are made of, as direct AVX-512 kernels (no im2col, no BLAS).
 *
 * Layer `tensor`: uses core only. A plan is made once per shape (tn_convpool_create) and
 * says whether this build and shape are supported; when they are not (no AVX-512, stride or
 * padding, kernel > 7, pooled planes > 1024 outputs) the caller runs the separate kernels of
 * kernels.h instead. The fused result equals maxpool(relu(conv(x) + bias)) of the reference
 * kernels to float32 rounding (sums are taken in another order). Kernels never allocate:
 * scratch comes from the caller (tn_convpool_scratch floats, 64-byte aligned, zeroed once).
 *
 *   tn_convpool *cp;
 *   if (tn_convpool_create(&geo, &cp) == 0) {                  // geo: conv geometry
 *       tn_convpool_forward(cp, b, x, w, bias, y, mask, scratch);
 *       tn_convpool_backward(cp, b, x, w, dy, mask, dx, dw, db, scratch);
 *   }
 *   tn_convpool_free(cp);
 */
#ifndef AF_TENSOR_CONVPOOL_H
#define AF_TENSOR_CONVPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/kernels.h"

typedef struct tn_convpool tn_convpool;

/* A plan for conv geometry *conv (oh/ow filled by tn_conv2d_geometry) followed by ReLU and a
 * 2x2 stride-2 unpadded max-pool. 0 and *out (free with tn_convpool_free), AF_EINVAL when
 * the shape or the build is not supported (message says why), AF_ENOMEM. */
int tn_convpool_create(const tn_conv2d *conv, tn_convpool **out);
void tn_convpool_free(tn_convpool *p);

/* Floats of scratch one call needs (any batch size). */
size_t tn_convpool_scratch(const tn_convpool *p);
/* uint16 words of pool/ReLU mask per sample that forward writes and backward reads. */
size_t tn_convpool_mask_n(const tn_convpool *p);
/* Pooled output per sample: oc × (oh/2) × (ow/2) floats. */
size_t tn_convpool_out_n(const tn_convpool *p);

/* x (b,c,h,w), w (oc,c,k,k), bias (oc) or NULL -> y (b,oc,oh/2,ow/2) =
 * maxpool2x2(relu(conv(x,w) + bias)); mask receives, per output, which window position won
 * (first maximum wins, as in PyTorch) and whether it was positive. */
void tn_convpool_forward(const tn_convpool *p, int b, const float *x, const float *w,
                         const float *bias, float *y, uint16_t *mask, float *scratch);

/* Backward of the same x after forward wrote mask: dy (b,oc,oh/2,ow/2);
 * dw (oc,c,k,k) += dL/dw, db (oc) += dL/db (db may be NULL), dx (b,c,h,w) = dL/dx (dx may
 * be NULL when the input needs no gradient). */
void tn_convpool_backward(const tn_convpool *p, int b, const float *x, const float *w,
                          const float *dy, const uint16_t *mask, float *dx, float *dw,
                          float *db, float *scratch);

#endif
