/* dense.h — fully connected layers as small-GEMM kernels with the bias and the ReLUs fused.
 *
 * Layer `tensor`: uses core and kernels.h. The shapes of a small CNN's classifier (batch
 * 1..1000 × a few hundred features) are too small for a BLAS to reach its speed, so these
 * are register-blocked AVX-512 kernels written for them (a CBLAS path where AVX-512 is
 * absent). Results equal tn_linear_*_ref followed by tn_relu_* to float32 rounding.
 * Nothing here allocates.
 */
#ifndef AF_TENSOR_DENSE_H
#define AF_TENSOR_DENSE_H

/* x (b,in), w (out,in), bias (out) or NULL -> y (b,out) = x w^T + bias, then max(y,0) when
 * relu != 0. y must not overlap x. */
void tn_dense_forward(int b, int in, int out, const float *x, const float *w, const float *bias,
                      int relu, float *y);

/* The same with the weight already transposed: wt (in,out) = w^T (see tn_transpose). The
 * faster form once b is more than a few rows; the transpose is the caller's, once per
 * weight update. */
void tn_dense_forward_t(int b, int in, int out, const float *x, const float *wt,
                        const float *bias, int relu, float *y);

/* dst (cols,rows) = src (rows,cols)^T. dst must not overlap src. */
void tn_transpose(int rows, int cols, const float *src, float *dst);

/* Backward of y = x w^T + b for dy (b,out): dw (out,in) += dy^T x, db (out) += sum_b dy
 * (db may be NULL), dx (b,in) = dy w (dx may be NULL). relu_in != 0 also applies the
 * backward of a ReLU that produced x: dx = 0 where x <= 0. */
void tn_dense_backward(int b, int in, int out, const float *x, const float *w, const float *dy,
                       float *dx, int relu_in, float *dw, float *db);

#endif
