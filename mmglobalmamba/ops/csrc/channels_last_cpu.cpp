// Forward kernels of the Mamba mixer in the channels-last layout (batch, L, dim).
//
// The linear projections of a mixer produce and consume (batch, L, features) rows.  The
// (batch, dim, L) kernel in selective_scan_cpu.cpp needs a transposed copy of u, delta
// and z going in and of y coming out; these kernels read the rows where they are instead:
//   u, delta, z      : (batch, L, dim)  stride 1 along dim, any other strides
//                      (z is usually the second half of the in_proj output)
//   B, C             : (batch, L, N)    stride 1 along N (slices of the x_proj output)
//   A                : (dim, N);  D, delta_bias: (dim,)
//   out              : (batch, L, dim)  contiguous
// Same math as selective_scan_cpu.cpp.  Here the vector lanes run over 16 channels
// instead of over the states, so B_t[n] and C_t[n] are broadcast scalars and y_t needs no
// horizontal sum.  Tasks are (batch, block of 16 channels); channels past the last full
// block, float64, and builds without vector types take the scalar path (compiler-
// vectorized loops over the block's channels).
//
// causal_conv1d_cl: the depthwise causal convolution (+ optional SiLU) in the same
// layout, out[b, t, c] = act(bias[c] + sum_k w[c, k] x[b, t - W + 1 + k, c]).

#include "channels_last_cpu.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu_math.h"
#include "cpu_parallel.h"

namespace {

using namespace mgm;

constexpr int64_t kLanes = 16;   // channels per block
constexpr int64_t kMaxState = 256;

template <typename T>
struct ScanCL {
  int64_t L, dim, N;
  const T *u, *delta, *z, *B, *C;
  int64_t su_b, su_l, sd_b, sd_l, sz_b, sz_l, sB_b, sB_l, sC_b, sC_l;
  const T* AT;           // (N, dim): A transposed, so a block's A[:, n] is contiguous
  const T* AT2;          // float: AT * log2(e) for the vector path's exp2 (else null)
  const T* WdT;          // (R, dim) dt_proj weight transposed, or null: then ``delta`` holds
  int64_t R;             //   the low-rank dt rows (batch, L, R) and delta = dt @ W^T here
  bool nonpositive;      // dt * A <= 0 everywhere (softplus dt >= 0 and A <= 0)
  const T *D, *bias;     // (dim,) or null
  T* out;                // (batch, L, dim) contiguous
  bool softplus;
};

// Scalar path: channels [c0, c0 + cw), cw <= kLanes.  h: N * kLanes scratch.
template <typename T>
MGM_INLINE void scan_block_scalar(const ScanCL<T>& a, int64_t b, int64_t c0, int64_t cw,
                                  T* h) {
  const int64_t N = a.N, dim = a.dim;
  T bias[kLanes], Dv[kLanes], dt[kLanes], dtu[kLanes], acc[kLanes];
  for (int64_t c = 0; c < cw; ++c) {
    bias[c] = a.bias ? a.bias[c0 + c] : T(0);
    Dv[c] = a.D ? a.D[c0 + c] : T(0);
  }
  std::fill(h, h + N * kLanes, T(0));
  for (int64_t t = 0; t < a.L; ++t) {
    const T* ut = a.u + b * a.su_b + t * a.su_l + c0;
    const T* dl = a.delta + b * a.sd_b + t * a.sd_l;
    const T* Bt = a.B + b * a.sB_b + t * a.sB_l;
    const T* Ct = a.C + b * a.sC_b + t * a.sC_l;
    T* ot = a.out + (b * a.L + t) * dim + c0;
    if (a.WdT) {  // delta = dt_t @ W^T for this block's channels
#pragma omp simd
      for (int64_t c = 0; c < cw; ++c) dt[c] = T(0);
      for (int64_t r = 0; r < a.R; ++r) {
        const T dr = dl[r];
        const T* wr = a.WdT + r * dim + c0;
#pragma omp simd
        for (int64_t c = 0; c < cw; ++c) dt[c] += dr * wr[c];
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < cw; ++c) dt[c] = dl[c0 + c];
    }
#pragma omp simd
    for (int64_t c = 0; c < cw; ++c) {
      const T x = dt[c] + bias[c];
      dt[c] = a.softplus ? softplus(x) : x;
      dtu[c] = dt[c] * ut[c];
      acc[c] = T(0);
    }
    for (int64_t n = 0; n < N; ++n) {
      const T bn = Bt[n], cn = Ct[n];
      const T* An = a.AT + n * dim + c0;
      T* hn = h + n * kLanes;
#pragma omp simd
      for (int64_t c = 0; c < cw; ++c) {
        const T hv = fast_exp(dt[c] * An[c]) * hn[c] + dtu[c] * bn;
        hn[c] = hv;
        acc[c] += hv * cn;
      }
    }
    if (a.z) {
      const T* zt = a.z + b * a.sz_b + t * a.sz_l + c0;
#pragma omp simd
      for (int64_t c = 0; c < cw; ++c) {
        const T zc = zt[c];
        ot[c] = (acc[c] + Dv[c] * ut[c]) * (zc * sigmoid(zc));
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < cw; ++c) ot[c] = acc[c] + Dv[c] * ut[c];
    }
  }
}

MGM_CLONES void scan_block_scalar_f32(const ScanCL<float>& a, int64_t b, int64_t c0,
                                      int64_t cw, float* h) {
  scan_block_scalar<float>(a, b, c0, cw, h);
}
MGM_CLONES void scan_block_scalar_f64(const ScanCL<double>& a, int64_t b, int64_t c0,
                                      int64_t cw, double* h) {
  scan_block_scalar<double>(a, b, c0, cw, h);
}

#if MGM_HAVE_VEC
// Vector path: one full block of 16 channels, the state as NS vectors (NS = N when it is a
// compile-time constant, so the state can live in registers; NS = 0: runtime N).
// exp(dt A) is computed as 2^(dt * A log2(e)) with A pre-scaled (AT2).
template <int NS, bool kNonPositive>
MGM_INLINE void scan_block_vec(const ScanCL<float>& a, int64_t b, int64_t c0) {
  // Steps in chunks, as in the AVX-512 path: dt and the gate of the whole chunk first (long
  // loops the compiler vectorizes), then the recurrence.
  constexpr int64_t kChunk = 32;
  const int64_t N = NS > 0 ? NS : a.N;
  const int64_t dim = a.dim;
  v16 h[NS > 0 ? NS : kMaxState];
  for (int64_t n = 0; n < N; ++n) h[n] = splat(0.0f);
  const v16 bias = a.bias ? load16(a.bias + c0) : splat(0.0f);
  const v16 Dv = a.D ? load16(a.D + c0) : splat(0.0f);
  alignas(64) float dts[kChunk * kLanes], gates[kChunk * kLanes];
  for (int64_t t0 = 0; t0 < a.L; t0 += kChunk) {
    const int64_t steps = std::min(kChunk, a.L - t0);
    for (int64_t i = 0; i < steps; ++i) {
      const float* dl = a.delta + b * a.sd_b + (t0 + i) * a.sd_l;
      v16 dv;
      if (a.WdT) {  // delta = dt_t @ W^T for this block's channels
        dv = splat(0.0f);
        for (int64_t r = 0; r < a.R; ++r) dv += load16(a.WdT + r * dim + c0) * dl[r];
      } else {
        dv = load16(dl + c0);
      }
      store16(dts + i * kLanes, dv + bias);
      if (a.z) store16(gates + i * kLanes, load16(a.z + b * a.sz_b + (t0 + i) * a.sz_l + c0));
    }
    const int64_t n_lanes = steps * kLanes;
    if (a.softplus) {
#pragma omp simd
      for (int64_t c = 0; c < n_lanes; ++c) dts[c] = softplus(dts[c]);
    }
    if (a.z) {
#pragma omp simd
      for (int64_t c = 0; c < n_lanes; ++c) gates[c] = gates[c] * sigmoid(gates[c]);
    }
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t t = t0 + i;
      const v16 uv = load16(a.u + b * a.su_b + t * a.su_l + c0);
      const float* Bt = a.B + b * a.sB_b + t * a.sB_l;
      const float* Ct = a.C + b * a.sC_b + t * a.sC_l;
      const v16 dt = load16(dts + i * kLanes);
      const v16 dtu = dt * uv;
      v16 acc = splat(0.0f);
      for (int64_t n = 0; n < N; ++n) {
        h[n] = fast_exp2_16<kNonPositive>(dt * load16(a.AT2 + n * dim + c0)) * h[n] +
               dtu * Bt[n];
        acc += h[n] * Ct[n];
      }
      v16 y = acc + Dv * uv;
      if (a.z) y *= load16(gates + i * kLanes);
      store16(a.out + (b * a.L + t) * dim + c0, y);
    }
  }
}

MGM_CLONES void scan_block_vec_f32(const ScanCL<float>& a, int64_t b, int64_t c0) {
  if (a.nonpositive) {
    if (a.N == 16) return scan_block_vec<16, true>(a, b, c0);
    return scan_block_vec<0, true>(a, b, c0);
  }
  if (a.N == 16) return scan_block_vec<16, false>(a, b, c0);
  scan_block_vec<0, false>(a, b, c0);
}
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MGM_HAVE_AVX512_SCAN 1
// AVX-512 path of a full block: 2^x as p(x - round(x)) scaled by vscalefps, which needs
// no exponent-bit assembly and no upper clamp: about 8 operations per state against the
// 12 of fast_exp2_16.  The lower clamp keeps results out of the denormal range.
#define MGM_AVX512 __attribute__((target("avx512f"))) inline

MGM_AVX512 __m512 exp2_avx512(__m512 x) {  // kExp2Poly, as fast_exp2_16
  x = _mm512_max_ps(x, _mm512_set1_ps(-125.0f));
  const __m512 k = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_sub_ps(x, k);
  __m512 p = _mm512_set1_ps(kExp2Poly[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExp2Poly[i]));
  return _mm512_scalef_ps(p, k);
}

// softplus on 16 lanes, the algorithm of softplus(float) in cpu_math.h (log1p by kLogfPoly
// with Goldberg's correction), vectorized: one division per 16 lanes.
MGM_AVX512 __m512 softplus_avx512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = exp2_avx512(_mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(-1.44269504f)));
  const __m512 y = _mm512_add_ps(one, e);  // in [1, 2]
  const __mmask16 big = _mm512_cmp_ps_mask(y, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
  const __m512 m = _mm512_mask_mul_ps(y, big, y, _mm512_set1_ps(0.5f));
  const __m512 k = _mm512_mask_blend_ps(big, _mm512_setzero_ps(), one);
  const __m512 f = _mm512_sub_ps(m, one);
  const __m512 z = _mm512_mul_ps(f, f);
  __m512 p = _mm512_set1_ps(kLogfPoly[0]);
  for (int i = 1; i < 9; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kLogfPoly[i]));
  __m512 l = _mm512_mul_ps(_mm512_mul_ps(f, z), p);
  l = _mm512_fmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), l);
  l = _mm512_fnmadd_ps(_mm512_set1_ps(0.5f), z, l);
  l = _mm512_add_ps(f, l);
  l = _mm512_fmadd_ps(k, _mm512_set1_ps(0.693359375f), l);
  const __m512 ym1 = _mm512_sub_ps(y, one);
  const __mmask16 exact = _mm512_cmp_ps_mask(ym1, _mm512_setzero_ps(), _CMP_EQ_OQ);
  const __m512 log1p = _mm512_mask_blend_ps(
      exact, _mm512_mul_ps(l, _mm512_div_ps(e, _mm512_mask_blend_ps(exact, ym1, one))), e);
  const __m512 v = _mm512_add_ps(_mm512_max_ps(x, _mm512_setzero_ps()), log1p);
  const __mmask16 large = _mm512_cmp_ps_mask(x, _mm512_set1_ps(20.0f), _CMP_GT_OQ);
  return _mm512_mask_blend_ps(large, v, x);
}

MGM_AVX512 __m512 silu_avx512(__m512 x) {  // x / (1 + exp(-x))
  const __m512 e = exp2_avx512(_mm512_mul_ps(x, _mm512_set1_ps(-1.44269504f)));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

template <int NS>
MGM_AVX512 void scan_block_avx512_impl(const ScanCL<float>& a, int64_t b, int64_t c0) {
  // Steps go in chunks: first dt (dt_proj, bias, softplus) and the gate silu(z) of every
  // step of the chunk, which do not depend on each other, then the recurrence over the
  // chunk.  Done step by step, the recurrence would wait on each step's softplus.
  constexpr int64_t kChunk = 32;
  const int64_t N = NS > 0 ? NS : a.N;
  const int64_t dim = a.dim;
  __m512 h[NS > 0 ? NS : kMaxState];
  __m512 dts[kChunk], gates[kChunk];
  for (int64_t n = 0; n < N; ++n) h[n] = _mm512_setzero_ps();
  const __m512 bias = a.bias ? _mm512_loadu_ps(a.bias + c0) : _mm512_setzero_ps();
  const __m512 Dv = a.D ? _mm512_loadu_ps(a.D + c0) : _mm512_setzero_ps();
  for (int64_t t0 = 0; t0 < a.L; t0 += kChunk) {
    const int64_t steps = std::min(kChunk, a.L - t0);
    for (int64_t i = 0; i < steps; ++i) {
      const float* dl = a.delta + b * a.sd_b + (t0 + i) * a.sd_l;
      __m512 dv;
      if (a.WdT) {  // delta = dt_t @ W^T for this block's channels
        dv = _mm512_setzero_ps();
        for (int64_t r = 0; r < a.R; ++r)
          dv = _mm512_fmadd_ps(_mm512_loadu_ps(a.WdT + r * dim + c0), _mm512_set1_ps(dl[r]),
                               dv);
      } else {
        dv = _mm512_loadu_ps(dl + c0);
      }
      dv = _mm512_add_ps(dv, bias);
      dts[i] = a.softplus ? softplus_avx512(dv) : dv;
      if (a.z) gates[i] = silu_avx512(_mm512_loadu_ps(a.z + b * a.sz_b + (t0 + i) * a.sz_l + c0));
    }
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t t = t0 + i;
      const __m512 uv = _mm512_loadu_ps(a.u + b * a.su_b + t * a.su_l + c0);
      const float* Bt = a.B + b * a.sB_b + t * a.sB_l;
      const float* Ct = a.C + b * a.sC_b + t * a.sC_l;
      const __m512 dt = dts[i];
      const __m512 dtu = _mm512_mul_ps(dt, uv);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t n = 0; n < N; ++n) {
        const __m512 decay = exp2_avx512(_mm512_mul_ps(dt, _mm512_loadu_ps(a.AT2 + n * dim + c0)));
        h[n] = _mm512_fmadd_ps(decay, h[n], _mm512_mul_ps(dtu, _mm512_set1_ps(Bt[n])));
        acc = _mm512_fmadd_ps(h[n], _mm512_set1_ps(Ct[n]), acc);
      }
      __m512 y = _mm512_fmadd_ps(Dv, uv, acc);
      if (a.z) y = _mm512_mul_ps(y, gates[i]);
      _mm512_storeu_ps(a.out + (b * a.L + t) * dim + c0, y);
    }
  }
}

__attribute__((target("avx512f"))) void scan_block_avx512(const ScanCL<float>& a, int64_t b,
                                                          int64_t c0) {
  if (a.N == 16) return scan_block_avx512_impl<16>(a, b, c0);
  scan_block_avx512_impl<0>(a, b, c0);
}

// MMGLOBALMAMBA_CPU_NO_AVX512=1 takes the portable vector path instead (tests use it to
// cover that path on AVX-512 machines).
bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") &&
                          std::getenv("MMGLOBALMAMBA_CPU_NO_AVX512") == nullptr;
  return has;
}
#endif

void scan_block(const ScanCL<float>& a, int64_t b, int64_t c0, int64_t cw, float* h) {
#ifdef MGM_HAVE_AVX512_SCAN
  if (cw == kLanes && cpu_has_avx512()) return scan_block_avx512(a, b, c0);
#endif
#if MGM_HAVE_VEC
  if (cw == kLanes) return scan_block_vec_f32(a, b, c0);
#endif
  scan_block_scalar_f32(a, b, c0, cw, h);
}
void scan_block(const ScanCL<double>& a, int64_t b, int64_t c0, int64_t cw, double* h) {
  scan_block_scalar_f64(a, b, c0, cw, h);
}

void check_rows(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t batch,
                int64_t L, int64_t width) {
  TORCH_CHECK(t.device().is_cpu(), "selective_scan_fwd_cl: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "selective_scan_fwd_cl: ", name, " has dtype ",
              t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.dim() == 3 && t.size(0) == batch && t.size(1) == L && t.size(2) == width,
              "selective_scan_fwd_cl: ", name, " must be (", batch, ", ", L, ", ", width,
              "), got ", t.sizes());
  TORCH_CHECK(t.stride(2) == 1 || width == 1, "selective_scan_fwd_cl: ", name,
              " must have stride 1 along its last dimension");
}

const void* opt_data(const c10::optional<at::Tensor>& t) {
  return t && t->defined() ? t->data_ptr() : nullptr;
}

}  // namespace

bool selective_scan_cl_uses_avx512() {
#ifdef MGM_HAVE_AVX512_SCAN
  return cpu_has_avx512();
#else
  return false;
#endif
}

at::Tensor selective_scan_fwd_cl(const at::Tensor& u, const at::Tensor& delta,
                                 const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                 const c10::optional<at::Tensor>& D,
                                 const c10::optional<at::Tensor>& z,
                                 const c10::optional<at::Tensor>& delta_bias,
                                 bool delta_softplus,
                                 const c10::optional<at::Tensor>& delta_proj_weight) {
  TORCH_CHECK(u.dim() == 3, "selective_scan_fwd_cl: u must be (batch, L, dim), got ",
              u.sizes());
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "selective_scan_fwd_cl: float32 or float64 expected, got ", dtype);
  const int64_t batch = u.size(0), L = u.size(1), dim = u.size(2);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == dim && A.scalar_type() == dtype,
              "selective_scan_fwd_cl: A must be (dim, N) of u's dtype, got ", A.sizes());
  const int64_t N = A.size(1);
  TORCH_CHECK(N >= 1 && N <= kMaxState, "selective_scan_fwd_cl: N must be in [1, ",
              kMaxState, "], got ", N);
  check_rows(u, "u", dtype, batch, L, dim);
  const bool has_w = delta_proj_weight && delta_proj_weight->defined();
  int64_t R = 0;
  if (has_w) {
    const at::Tensor& w = *delta_proj_weight;
    TORCH_CHECK(w.dim() == 2 && w.size(0) == dim && w.scalar_type() == dtype,
                "selective_scan_fwd_cl: delta_proj_weight must be (dim, R) of u's dtype, got ",
                w.sizes());
    R = w.size(1);
  }
  check_rows(delta, has_w ? "dt (delta before delta_proj_weight)" : "delta", dtype, batch, L,
             has_w ? R : dim);
  check_rows(B, "B", dtype, batch, L, N);
  check_rows(C, "C", dtype, batch, L, N);
  if (z && z->defined()) check_rows(*z, "z", dtype, batch, L, dim);
  for (const auto* v : {&D, &delta_bias}) {
    if (*v && (*v)->defined()) {
      TORCH_CHECK((*v)->dim() == 1 && (*v)->size(0) == dim && (*v)->is_contiguous() &&
                      (*v)->scalar_type() == dtype,
                  "selective_scan_fwd_cl: D and delta_bias must be contiguous (dim,) of u's "
                  "dtype");
    }
  }
  at::Tensor out = at::empty({batch, L, dim}, u.options());
  if (out.numel() == 0) return out;
  const at::Tensor AT = A.t().contiguous();  // (N, dim)
  const at::Tensor AT2 = dtype == at::kFloat ? (AT * M_LOG2E).contiguous() : at::Tensor();
  const at::Tensor WdT = has_w ? delta_proj_weight->t().contiguous() : at::Tensor();  // (R, dim)
  const bool has_z = z && z->defined();
  const bool nonpositive = delta_softplus && A.max().item<double>() <= 0.0;
  AT_DISPATCH_FLOATING_TYPES(dtype, "selective_scan_fwd_cl", [&] {
    ScanCL<scalar_t> a;
    a.L = L;
    a.dim = dim;
    a.N = N;
    a.u = u.data_ptr<scalar_t>();
    a.delta = delta.data_ptr<scalar_t>();
    a.z = has_z ? z->data_ptr<scalar_t>() : nullptr;
    a.B = B.data_ptr<scalar_t>();
    a.C = C.data_ptr<scalar_t>();
    a.su_b = u.stride(0), a.su_l = u.stride(1);
    a.sd_b = delta.stride(0), a.sd_l = delta.stride(1);
    a.sz_b = has_z ? z->stride(0) : 0, a.sz_l = has_z ? z->stride(1) : 0;
    a.sB_b = B.stride(0), a.sB_l = B.stride(1);
    a.sC_b = C.stride(0), a.sC_l = C.stride(1);
    a.AT = AT.data_ptr<scalar_t>();
    a.AT2 = AT2.defined() ? AT2.data_ptr<scalar_t>() : nullptr;
    a.WdT = has_w ? WdT.data_ptr<scalar_t>() : nullptr;
    a.R = R;
    a.nonpositive = nonpositive;
    a.D = static_cast<const scalar_t*>(opt_data(D));
    a.bias = static_cast<const scalar_t*>(opt_data(delta_bias));
    a.out = out.data_ptr<scalar_t>();
    a.softplus = delta_softplus;
    const int64_t nblocks = (dim + kLanes - 1) / kLanes;
    const int64_t ntasks = batch * nblocks;
    auto task = [&](int64_t k) {
      std::vector<scalar_t> h(static_cast<size_t>(N * kLanes));
      const int64_t b = k / nblocks, c0 = (k % nblocks) * kLanes;
      scan_block(a, b, c0, std::min(kLanes, dim - c0), h.data());
    };
    if (batch * L * dim * N < kMinParallelWork) {
      for (int64_t k = 0; k < ntasks; ++k) task(k);
    } else {
      parallel_tasks(ntasks, task);
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// Causal depthwise conv1d, channels last.

namespace {

template <typename T>
struct ConvCL {
  int64_t L, dim, W;
  const T* x;
  int64_t sx_b, sx_l;
  const T* WT;    // (W, dim): weight transposed
  const T* bias;  // (dim,) or null
  T* out;         // (batch, L, dim) contiguous
  bool silu;
};

// Rows [t0, t1) of batch b, channels [c_lo, dim).
template <typename T>
MGM_INLINE void conv_rows(const ConvCL<T>& a, int64_t b, int64_t t0, int64_t t1,
                          int64_t c_lo) {
  const int64_t dim = a.dim, W = a.W;
  for (int64_t t = t0; t < t1; ++t) {
    T* o = a.out + (b * a.L + t) * dim;
    for (int64_t c = c_lo; c < dim; ++c) o[c] = a.bias ? a.bias[c] : T(0);
    for (int64_t k = std::max<int64_t>(0, W - 1 - t); k < W; ++k) {
      const T* xs = a.x + b * a.sx_b + (t - W + 1 + k) * a.sx_l;
      const T* wk = a.WT + k * dim;
#pragma omp simd
      for (int64_t c = c_lo; c < dim; ++c) o[c] += wk[c] * xs[c];
    }
    if (a.silu) {
#pragma omp simd
      for (int64_t c = c_lo; c < dim; ++c) o[c] = o[c] * sigmoid(o[c]);
    }
  }
}

#if MGM_HAVE_VEC
constexpr int64_t kMaxVecWidth = 8;

// One block of 16 channels, rows [t0, t1): the last W inputs stay in registers, so each
// input row is read once.
MGM_INLINE void conv_block_vec(const ConvCL<float>& a, int64_t b, int64_t c0, int64_t t0,
                               int64_t t1) {
  const int64_t W = a.W, dim = a.dim;
  v16 w[kMaxVecWidth], win[kMaxVecWidth];  // win[k] multiplies x[t - W + 1 + k]
  for (int64_t k = 0; k < W; ++k) w[k] = load16(a.WT + k * dim + c0);
  const float* xb = a.x + b * a.sx_b + c0;
  for (int64_t k = 1; k < W; ++k) {  // the window of row t0 - 1
    const int64_t s = t0 - W + k;
    win[k] = s >= 0 ? load16(xb + s * a.sx_l) : splat(0.0f);
  }
  const v16 bias = a.bias ? load16(a.bias + c0) : splat(0.0f);
  alignas(64) float lane[kLanes];
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t k = 0; k + 1 < W; ++k) win[k] = win[k + 1];
    win[W - 1] = load16(xb + t * a.sx_l);
    v16 acc = bias;
    for (int64_t k = 0; k < W; ++k) acc += w[k] * win[k];
    if (a.silu) {
      store16(lane, acc);
#pragma omp simd
      for (int c = 0; c < kLanes; ++c) lane[c] = lane[c] * sigmoid(lane[c]);
      acc = load16(lane);
    }
    store16(a.out + (b * a.L + t) * dim + c0, acc);
  }
}
#endif

MGM_CLONES void conv_rows_f32(const ConvCL<float>& a, int64_t b, int64_t t0, int64_t t1) {
  int64_t c_lo = 0;
#if MGM_HAVE_VEC
  if (a.W <= kMaxVecWidth) {
    for (; c_lo + kLanes <= a.dim; c_lo += kLanes) conv_block_vec(a, b, c_lo, t0, t1);
  }
#endif
  if (c_lo < a.dim) conv_rows<float>(a, b, t0, t1, c_lo);
}
MGM_CLONES void conv_rows_f64(const ConvCL<double>& a, int64_t b, int64_t t0, int64_t t1) {
  conv_rows<double>(a, b, t0, t1, 0);
}
void conv_rows_any(const ConvCL<float>& a, int64_t b, int64_t t0, int64_t t1) {
  conv_rows_f32(a, b, t0, t1);
}
void conv_rows_any(const ConvCL<double>& a, int64_t b, int64_t t0, int64_t t1) {
  conv_rows_f64(a, b, t0, t1);
}

}  // namespace

at::Tensor causal_conv1d_fwd_cl(const at::Tensor& x, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, bool silu) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu(),
              "causal_conv1d_fwd_cl: x must be a (batch, L, dim) CPU tensor, got ", x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "causal_conv1d_fwd_cl: float32 or float64 expected, got ", dtype);
  const int64_t batch = x.size(0), L = x.size(1), dim = x.size(2);
  TORCH_CHECK(x.stride(2) == 1 || dim == 1,
              "causal_conv1d_fwd_cl: x must have stride 1 along dim");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == dim && weight.size(1) >= 1 &&
                  weight.scalar_type() == dtype,
              "causal_conv1d_fwd_cl: weight must be (dim, width) of x's dtype, got ",
              weight.sizes());
  const bool has_bias = bias && bias->defined();
  if (has_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == dim && bias->is_contiguous() &&
                    bias->scalar_type() == dtype,
                "causal_conv1d_fwd_cl: bias must be a contiguous (dim,) tensor of x's dtype");
  }
  at::Tensor out = at::empty({batch, L, dim}, x.options());
  if (out.numel() == 0) return out;
  const at::Tensor WT = weight.t().contiguous();  // (W, dim)
  AT_DISPATCH_FLOATING_TYPES(dtype, "causal_conv1d_fwd_cl", [&] {
    ConvCL<scalar_t> a;
    a.L = L;
    a.dim = dim;
    a.W = weight.size(1);
    a.x = x.data_ptr<scalar_t>();
    a.sx_b = x.stride(0), a.sx_l = x.stride(1);
    a.WT = WT.data_ptr<scalar_t>();
    a.bias = has_bias ? bias->data_ptr<scalar_t>() : nullptr;
    a.out = out.data_ptr<scalar_t>();
    a.silu = silu;
    constexpr int64_t kRows = 64;
    const int64_t chunks = (L + kRows - 1) / kRows;
    auto task = [&](int64_t k) {
      const int64_t b = k / chunks, t0 = (k % chunks) * kRows;
      conv_rows_any(a, b, t0, std::min(L, t0 + kRows));
    };
    if (batch * L * dim * a.W < kMinParallelWork) {
      for (int64_t k = 0; k < batch * chunks; ++k) task(k);
    } else {
      parallel_tasks(batch * chunks, task);
    }
  });
  return out;
}
