/* kernels.h — the compute kernels of the engine, each with a plain scalar reference.
 *
 * Layer `tensor`: uses core and a CBLAS. Kernels work on raw float arrays whose shapes are
 * stated next to each function (PyTorch layouts: activations NCHW, conv weight (OC,C,KH,KW),
 * linear weight (OUT,IN)). Kernels never allocate: scratch comes from the caller, sized by the
 * matching *_scratch function. Gradients of weights are accumulated (+=) so a caller can sum
 * over chunks of a batch; input gradients are overwritten. Every optimised kernel has a
 * `_ref` twin written for clarity, used as the test oracle.
 */
#ifndef AF_TENSOR_KERNELS_H
#define AF_TENSOR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* C[M,N] = alpha * op(A) op(B) + beta * C, row-major, op = transpose when tA/tB != 0. */
void tn_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);
void tn_gemm_ref(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);

/* Geometry of a 2-D convolution (or pooling window): input (c,h,w) per sample. */
typedef struct tn_conv2d {
    int c, h, w;      /* input channels, height, width */
    int oc;           /* output channels (conv only) */
    int kh, kw;       /* window */
    int stride, pad;  /* same in both directions */
    int oh, ow;       /* output height, width: (h + 2 pad - kh) / stride + 1 */
} tn_conv2d;

/* Fills oh/ow; returns 0, or -1 if the window does not fit the (padded) input. */
int tn_conv2d_geometry(tn_conv2d *s);

/* Floats of scratch tn_conv2d_forward/backward need for b samples. */
size_t tn_conv2d_scratch(const tn_conv2d *s, int b);

/* x (b,c,h,w), w (oc,c,kh,kw), bias (oc) -> y (b,oc,oh,ow). */
void tn_conv2d_forward(const tn_conv2d *s, int b, const float *x, const float *w,
                       const float *bias, float *y, float *scratch);
void tn_conv2d_forward_ref(const tn_conv2d *s, int b, const float *x, const float *w,
                           const float *bias, float *y);
/* dy (b,oc,oh,ow): dw (oc,c,kh,kw) += dL/dw, db (oc) += dL/db, dx (b,c,h,w) = dL/dx
 * (dx may be NULL when the input needs no gradient, e.g. the first layer). */
void tn_conv2d_backward(const tn_conv2d *s, int b, const float *x, const float *w,
                        const float *dy, float *dx, float *dw, float *db, float *scratch);
void tn_conv2d_backward_ref(const tn_conv2d *s, int b, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *db);

/* Max-pool over windows of s (oc unused): x (b,c,h,w) -> y (b,c,oh,ow); arg (b,c,oh,ow) holds
 * the flat index within the sample's channel plane (h*w) of each max (first max wins, as in
 * PyTorch). Backward: dx (b,c,h,w) = 0, then dx[arg] += dy. */
void tn_maxpool2d_forward(const tn_conv2d *s, int b, const float *x, float *y, uint32_t *arg);
void tn_maxpool2d_forward_ref(const tn_conv2d *s, int b, const float *x, float *y, uint32_t *arg);
void tn_maxpool2d_backward(const tn_conv2d *s, int b, const float *dy, const uint32_t *arg,
                           float *dx);

/* y = max(x, 0) over n floats (in place allowed); dx = dy * (y > 0). */
void tn_relu_forward(size_t n, const float *x, float *y);
void tn_relu_backward(size_t n, const float *y, const float *dy, float *dx);

/* x (b,in), w (out,in), bias (out) -> y (b,out) = x w^T + bias. */
void tn_linear_forward(int b, int in, int out, const float *x, const float *w, const float *bias,
                       float *y);
void tn_linear_forward_ref(int b, int in, int out, const float *x, const float *w,
                           const float *bias, float *y);
/* dy (b,out): dw (out,in) += dy^T x, db (out) += sum_b dy, dx (b,in) = dy w (dx may be NULL). */
void tn_linear_backward(int b, int in, int out, const float *x, const float *w, const float *dy,
                        float *dx, float *dw, float *db);
void tn_linear_backward_ref(int b, int in, int out, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *db);

/* Softmax cross-entropy over logits (b,k) with integer labels (b).
 * Returns the SUM over the b samples of -log softmax(logits)[label] (double precision sum).
 * If dlogits (b,k) is not NULL it receives scale * (softmax - onehot): pass scale = 1/B_total
 * for the gradient of the mean loss over a batch of B_total split into chunks.
 * If correct is not NULL it receives the number of argmax hits. */
double tn_softmax_xent(int b, int k, const float *logits, const uint8_t *labels, float scale,
                       float *dlogits, int *correct);

/* Inverted dropout: y = x * mask / (1-p) with mask ~ Bernoulli(1-p) written as 0/1 bytes. */
void tn_dropout_forward(size_t n, float p, const float *x, float *y, uint8_t *mask,
                        uint64_t seed);
void tn_dropout_backward(size_t n, float p, const float *dy, const uint8_t *mask, float *dx);

#endif
