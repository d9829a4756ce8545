// Channels-last (batch, L, dim) forward kernels of the Mamba mixer; see channels_last_cpu.cpp.
#pragma once

#include <torch/extension.h>

// Selective scan forward on (batch, L, dim) rows: u, delta, z (batch, L, dim), B, C
// (batch, L, N), each with stride 1 along its last dimension; A (dim, N); D, delta_bias
// (dim,).  With delta_proj_weight (dim, R), ``delta`` holds the low-rank rows dt
// (batch, L, R) and delta = dt @ delta_proj_weight^T is formed inside, per block of
// channels (the mixer's dt_proj, never written out).  Returns out (batch, L, dim).
at::Tensor selective_scan_fwd_cl(const at::Tensor& u, const at::Tensor& delta,
                                 const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                 const c10::optional<at::Tensor>& D,
                                 const c10::optional<at::Tensor>& z,
                                 const c10::optional<at::Tensor>& delta_bias,
                                 bool delta_softplus,
                                 const c10::optional<at::Tensor>& delta_proj_weight);

// Whether full channel blocks of the scan take the AVX-512 code (else the portable one).
bool selective_scan_cl_uses_avx512();

// Depthwise causal conv1d (+ SiLU when silu) on x (batch, L, dim) with weight (dim, width)
// and bias (dim,) or None.  Returns (batch, L, dim), contiguous.
at::Tensor causal_conv1d_fwd_cl(const at::Tensor& x, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, bool silu);
