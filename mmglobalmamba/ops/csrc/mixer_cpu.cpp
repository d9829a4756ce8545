// CPU kernels of the Mamba mixer's inner part, forward and backward, in the layout the
// projections write: (batch, L, channels) rows.
//
//   scan_fwd / scan_bwd  selective scan: dt = softplus?(delta + delta_bias), with delta =
//                        dt_low @ W^T formed here when W (dt_proj) is given;
//                        h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t,
//                        out_t = (<C_t, h_t> + D u_t) * silu(z_t)
//   conv_fwd / conv_bwd  depthwise causal conv1d (+ SiLU)
//
// Row tensors (u, delta, z, x, dout: (batch, L, k); B, C: (batch, L, G, N)) may have any
// batch / time / group strides; stride 1 along their last dim is the fast case, and
// required of B, C and the conv's rows; the scan gathers u, delta, z, dout along other
// strides (the (batch, dim, L) op's transposed views).  Outputs are contiguous.
// Channel c reads B/C group c / (dim / G).  The work goes in blocks of up to 8 channels of
// one group: the 8 lanes of a vector (Vec<T>, cpu_math.h), so B_t[n], C_t[n] are broadcast
// scalars.  Narrow blocks (channel tails) load into zeroed lanes; their u and dout lanes are
// 0, so the padding adds nothing to the sums over channels.  float32 runs ISA-cloned code
// (the forward on AVX-512: pairs of blocks, 16 lanes); float64 (gradcheck) the same template.
// Backward of a block: a forward pass that stores the states h (L + 1, N, 8), the decays
// exp(dt A) (L, N, 8), dt, the softplus slope and dL/dy in a per-thread buffer, then the
// reverse recurrence.  dB / dC (sums over channels) are lane-reduced per step into per-task
// partials, dA / dD / d(delta_bias) kept per (batch, channel); all are summed in a fixed
// order, so results do not depend on thread timing.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "cpu_math.h"

namespace {

using namespace mgm;

constexpr int64_t kChunk = 32;            // steps whose dt / gates are formed together
constexpr int64_t kMinParallelWork = 1 << 15;
constexpr int64_t kMaxState = 256;

// Runs fn(k, ws) for k in [0, ntasks), the intra-op threads taking the next task from a
// shared counter; ws: a 64-byte aligned per-thread workspace of ws_size elements, kept by
// the thread between calls (grown when needed), so no call pays for fresh pages again.
template <typename T, typename F>
void parallel_tasks(int64_t ntasks, int64_t ws_size, bool parallel, const F& fn) {
  auto worker = [&](std::atomic<int64_t>& next) {
    static thread_local std::vector<T> buf;
    if (buf.size() < static_cast<size_t>(ws_size) + 64 / sizeof(T))
      buf = std::vector<T>(static_cast<size_t>(ws_size) + 64 / sizeof(T));
    T* ws = reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
    for (int64_t k = next.fetch_add(1); k < ntasks; k = next.fetch_add(1)) fn(k, ws);
  };
  std::atomic<int64_t> next{0};
  const int64_t nthreads = parallel ? std::min<int64_t>(at::get_num_threads(), ntasks) : 1;
  if (nthreads <= 1 || at::in_parallel_region()) return worker(next);
  at::parallel_for(0, nthreads, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) worker(next);
  });
}

template <typename T>
struct Scan {
  int64_t batch, L, dim, N, G, R;  // R > 0: delta holds dt rows (batch, L, R), W (dim, R)
  const T *u, *delta, *z, *B, *C, *A, *D, *bias, *W, *dout;
  int64_t su[3], sd[3], sz[3], sB[3], sC[3], so[3];  // batch, time, channel / group
  bool softplus, nonpos;  // nonpos: softplus and A <= 0, so dt A <= 0
  T *out, *du, *ddelta, *dz;  // (batch, L, dim)
  T *dA, *dD, *dbias;         // (batch, N, dim), (batch, dim), (batch, dim)
  T *pB, *pC;                 // per task (L, G, N) partial sums
};

// Per-block constants in ws, zero-padded to 8 lanes: A (N, 8), A log2(e) (N, 8) for the
// decays 2^(dt A log2 e) (rounded once: as if A were off by half an ulp), W^T (R, 8).
template <typename T>
MGM_INLINE void block_consts(const Scan<T>& a, int64_t c0, int64_t cw, T* Ab) {
  for (int64_t i = 0; i < (2 * a.N + a.R) * kLanes; ++i) Ab[i] = T(0);  // A2, Wb follow
  T* A2 = Ab + a.N * kLanes;
  T* Wb = A2 + a.N * kLanes;
  for (int64_t c = 0; c < cw; ++c) {
    for (int64_t n = 0; n < a.N; ++n) {
      const T An = a.A[(c0 + c) * a.N + n];
      Ab[n * kLanes + c] = An;
      A2[n * kLanes + c] = T(static_cast<double>(An) * 1.4426950408889634074);
    }
    for (int64_t r = 0; r < a.R; ++r) Wb[r * kLanes + c] = a.W[(c0 + c) * a.R + r];
  }
}

// dt (before bias / softplus) and z of steps [t0, t0 + steps) into dts / zs (steps, 8).
template <typename T, bool kFull>
MGM_INLINE void chunk_inputs(const Scan<T>& a, int64_t b, int64_t c0, int64_t cw,
                             int64_t t0, int64_t steps, const T* Wb, T* dts, T* zs) {
  const Vec<T> bias = a.bias ? ldn<T, kFull>(a.bias + c0, cw) : splat(T(0));
  for (int64_t i = 0; i < steps; ++i) {
    const T* dl = a.delta + b * a.sd[0] + (t0 + i) * a.sd[1];
    Vec<T> dv = splat(T(0));
    if (a.R) {
      for (int64_t r = 0; r < a.R; ++r) dv += ld(Wb + r * kLanes) * dl[r * a.sd[2]];
    } else {
      dv = ldn<T, kFull>(dl + c0 * a.sd[2], cw, a.sd[2]);
    }
    st(dts + i * kLanes, dv + bias);
    if (a.z) {
      const T* zr = a.z + b * a.sz[0] + (t0 + i) * a.sz[1] + c0 * a.sz[2];
      st(zs + i * kLanes, ldn<T, kFull>(zr, cw, a.sz[2]));
    }
  }
}

// E[i, n] = exp(dt_i A_n) for steps [0, steps), in a loop without carried dependencies
// (the backward's forward pass: the reverse pass reads them again).  The forward computes
// them inside the recurrence, which measured ~10% faster there.  A2: A log2(e).
template <typename T, bool kNonPos>
MGM_INLINE void decays(const T* dts, const T* A2, int64_t steps, int64_t N, T* E) {
  for (int64_t i = 0; i < steps; ++i) {
    const Vec<T> dt = ld(dts + i * kLanes);
    for (int64_t n = 0; n < N; ++n)
      st(E + (i * N + n) * kLanes, exp2v<kNonPos>(dt * ld(A2 + n * kLanes)));
  }
}

// Forward of the block (b, channels [c0, c0 + cw)) of group g.  ws: (3N + R) * 8.
template <typename T, bool kFull>
MGM_INLINE void fwd_block(const Scan<T>& a, int64_t b, int64_t c0, int64_t cw, int64_t g,
                          T* ws) {
  using V = Vec<T>;
  const int64_t N = a.N;
  T *Ab = ws, *A2 = Ab + N * kLanes, *Wb = A2 + N * kLanes, *h = Wb + a.R * kLanes;
  block_consts(a, c0, cw, Ab);
  for (int64_t i = 0; i < N * kLanes; ++i) h[i] = T(0);
  const V Dv = a.D ? ldn<T, kFull>(a.D + c0, cw) : splat(T(0));
  alignas(64) T dts[kChunk * kLanes], gts[kChunk * kLanes];
  for (int64_t t0 = 0; t0 < a.L; t0 += kChunk) {
    const int64_t steps = std::min(kChunk, a.L - t0);
    chunk_inputs<T, kFull>(a, b, c0, cw, t0, steps, Wb, dts, gts);
    for (int64_t i = 0; i < steps * kLanes; i += kLanes) {
      if (a.softplus) st(dts + i, softplusv(ld(dts + i)));
      if (a.z) st(gts + i, ld(gts + i) * sigmoidv(ld(gts + i)));
    }
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t t = t0 + i;
      const V uv = ldn<T, kFull>(a.u + b * a.su[0] + t * a.su[1] + c0 * a.su[2], cw, a.su[2]);
      const T* Bt = a.B + b * a.sB[0] + t * a.sB[1] + g * a.sB[2];
      const T* Ct = a.C + b * a.sC[0] + t * a.sC[1] + g * a.sC[2];
      const V dt = ld(dts + i * kLanes), dtu = dt * uv;
      V acc[2] = {};  // <C, h> in 2 chains
      for (int64_t n = 0; n < N; ++n) {
        const V hn = exp2v(dt * ld(A2 + n * kLanes)) * ld(h + n * kLanes) + dtu * Bt[n];
        st(h + n * kLanes, hn);
        acc[n & 1] += hn * Ct[n];
      }
      V y = acc[0] + acc[1] + Dv * uv;
      if (a.z) y *= ld(gts + i * kLanes);
      stn<T, kFull>(a.out + (b * a.L + t) * a.dim + c0, y, cw);
    }
  }
}

// AVX-512 only: two adjacent full blocks of one group (channels [c0, c0 + 16), N = 16,
// dt A <= 0) with the state loop on 16-lane vectors, 512 bits, which cores with full-width
// AVX-512 run at twice the 8-lane throughput; the per-step inputs come from the 8-lane code
// of each half, softplus and gates on 16 lanes.  ws: 2 (3N + R) * 8.
typedef float V16 __attribute__((vector_size(64)));
typedef float U16 __attribute__((vector_size(64), aligned(4), may_alias));
MGM_INLINE V16 ld16(const float* p) { return *reinterpret_cast<const U16*>(p); }
MGM_INLINE V16 cat16(Vec<float> lo, Vec<float> hi) {
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
MGM_V4 void fwd_pair_f32(const Scan<float>& a, int64_t b, int64_t c0, int64_t g, float* ws) {
  constexpr int64_t N = 16, W2 = 2 * kLanes;
  const int64_t wsb = (3 * N + a.R) * kLanes;  // one half's block_consts
  alignas(64) float A2[N * W2], dts[2][kChunk * kLanes], gts[2][kChunk * kLanes];
  alignas(64) float dt2[kChunk * W2], gt2[kChunk * W2];  // (steps, 16)
  for (int64_t q = 0; q < 2; ++q) block_consts(a, c0 + q * kLanes, kLanes, ws + q * wsb);
  for (int64_t n = 0; n < N; ++n)
    *reinterpret_cast<U16*>(A2 + n * W2) =
        cat16(ld(ws + (N + n) * kLanes), ld(ws + wsb + (N + n) * kLanes));
  V16 hr[N] = {};
  const V16 Dv = a.D ? ld16(a.D + c0) : V16{};
  for (int64_t t0 = 0; t0 < a.L; t0 += kChunk) {
    const int64_t steps = std::min(kChunk, a.L - t0);
    for (int64_t q = 0; q < 2; ++q)
      chunk_inputs<float, true>(a, b, c0 + q * kLanes, kLanes, t0, steps,
                                ws + q * wsb + 2 * N * kLanes, dts[q], gts[q]);
    for (int64_t i = 0; i < steps; ++i) {
      const V16 d = cat16(ld(dts[0] + i * kLanes), ld(dts[1] + i * kLanes));
      const V16 zv = cat16(ld(gts[0] + i * kLanes), ld(gts[1] + i * kLanes));
      *reinterpret_cast<U16*>(dt2 + i * W2) = softplusv(d);  // a.nonpos: softplus is on
      if (a.z) *reinterpret_cast<U16*>(gt2 + i * W2) = zv * sigmoidv(zv);
    }
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t t = t0 + i;
      const float* ur = a.u + b * a.su[0] + t * a.su[1] + c0 * a.su[2];
      const int64_t s = a.su[2];  // the (batch, dim, L) op's u: gathered per half
      const V16 uv = s == 1 ? ld16(ur)
                            : cat16(ldn<float, true>(ur, kLanes, s),
                                    ldn<float, true>(ur + kLanes * s, kLanes, s));
      const float* Bt = a.B + b * a.sB[0] + t * a.sB[1] + g * a.sB[2];
      const float* Ct = a.C + b * a.sC[0] + t * a.sC[1] + g * a.sC[2];
      const V16 dt = ld16(dt2 + i * W2), dtu = dt * uv;
      V16 acc[4] = {};
#pragma GCC unroll 16
      for (int64_t n = 0; n < N; ++n) {
        hr[n] = exp2v<true>(dt * ld16(A2 + n * W2)) * hr[n] + dtu * Bt[n];
        acc[n & 3] += hr[n] * Ct[n];
      }
      V16 y = (acc[0] + acc[1]) + (acc[2] + acc[3]) + Dv * uv;
      if (a.z) y *= ld16(gt2 + i * W2);
      *reinterpret_cast<U16*>(a.out + (b * a.L + t) * a.dim + c0) = y;
    }
  }
}

inline int64_t bwd_ws(int64_t L, int64_t N, int64_t R) {
  return (4 * N + R + (2 * L + 1) * N + 3 * L) * kLanes;
}

// Backward of one block; pB / pC: this task's (L, G, N) partials.  ws: bwd_ws(L, N, R).
template <typename T, bool kFull>
MGM_INLINE void bwd_block(const Scan<T>& a, int64_t b, int64_t c0, int64_t cw, int64_t g,
                          T* ws, T* pB, T* pC) {
  using V = Vec<T>;
  const int64_t N = a.N, L = a.L, NL = N * kLanes, GN = a.G * N;
  T *Ab = ws, *A2 = Ab + NL, *Wb = A2 + NL, *gh = Wb + a.R * kLanes, *dAa = gh + NL;
  T* H = dAa + NL;
  T *AD = H + (L + 1) * NL, *DT = AD + L * NL, *SG = DT + L * kLanes, *DY = SG + L * kLanes;
  block_consts(a, c0, cw, Ab);
  for (int64_t i = 0; i < NL; ++i) H[i] = gh[i] = dAa[i] = T(0);  // H row 0: h_{-1} = 0
  const V Dv = a.D ? ldn<T, kFull>(a.D + c0, cw) : splat(T(0));
  alignas(64) T zs[kChunk * kLanes], gate[kChunk * kLanes], dgate[kChunk * kLanes];

  // Forward: states, dt, d dt / d(delta + bias), dL/dy and dL/dz.
  for (int64_t t0 = 0; t0 < L; t0 += kChunk) {
    const int64_t steps = std::min(kChunk, L - t0), nl = steps * kLanes;
    T *dts = DT + t0 * kLanes, *sg = SG + t0 * kLanes;
    chunk_inputs<T, kFull>(a, b, c0, cw, t0, steps, Wb, dts, zs);
    for (int64_t i = 0; i < nl; i += kLanes) {
      const V x = ld(dts + i), one = splat(T(1)), zv = a.z ? ld(zs + i) : one;
      st(sg + i, a.softplus ? sigmoidv(x) : one);
      if (a.softplus) st(dts + i, softplusv(x));
      if (a.z) {
        const V s = sigmoidv(zv);
        st(gate + i, zv * s);
        st(dgate + i, s * (one + zv * (one - s)));
      }
    }
    if (a.nonpos) decays<T, true>(dts, A2, steps, N, AD + t0 * NL);
    else decays<T, false>(dts, A2, steps, N, AD + t0 * NL);
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t t = t0 + i;
      const V uv = ldn<T, kFull>(a.u + b * a.su[0] + t * a.su[1] + c0 * a.su[2], cw, a.su[2]);
      const T* Bt = a.B + b * a.sB[0] + t * a.sB[1] + g * a.sB[2];
      const T* Ct = a.C + b * a.sC[0] + t * a.sC[1] + g * a.sC[2];
      const V dtu = ld(dts + i * kLanes) * uv;
      const T *hp = H + t * NL, *at = AD + t * NL;
      T* hc = H + (t + 1) * NL;
      V acc = splat(T(0));
      for (int64_t n = 0; n < N; ++n) {
        const V hn = ld(at + n * kLanes) * ld(hp + n * kLanes) + dtu * Bt[n];
        st(hc + n * kLanes, hn);
        acc += hn * Ct[n];
      }
      const V dov = ldn<T, kFull>(a.dout + b * a.so[0] + t * a.so[1] + c0 * a.so[2], cw, a.so[2]);
      if (a.z) {
        const V y = acc + Dv * uv;
        stn<T, kFull>(a.dz + (b * L + t) * a.dim + c0, dov * y * ld(dgate + i * kLanes), cw);
        st(DY + t * kLanes, dov * ld(gate + i * kLanes));
      } else {
        st(DY + t * kLanes, dov);
      }
    }
  }

  // Reverse: gh carries exp(dt_{t+1} A) dL/dh_{t+1}.
  V dDa = splat(T(0)), dba = splat(T(0));
  for (int64_t t = L - 1; t >= 0; --t) {
    const V dy = ld(DY + t * kLanes), dt = ld(DT + t * kLanes);
    const V uv = ldn<T, kFull>(a.u + b * a.su[0] + t * a.su[1] + c0 * a.su[2], cw, a.su[2]);
    const V dtu = dt * uv;
    const T* Bt = a.B + b * a.sB[0] + t * a.sB[1] + g * a.sB[2];
    const T* Ct = a.C + b * a.sC[0] + t * a.sC[1] + g * a.sC[2];
    const T *hp = H + t * NL, *hc = hp + NL;
    V sA = splat(T(0)), sB = splat(T(0));
    for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
      const int64_t nn = std::min(kLanes, N - n0);
      V tB[kLanes], tC[kLanes];
      for (int64_t j = 0; j < nn; ++j) {
        const int64_t o = (n0 + j) * kLanes;
        const V Abn = ld(Ab + o), an = ld(AD + t * NL + o);
        const V dh = ld(gh + o) + dy * Ct[n0 + j];
        const V x = dh * an * ld(hp + o);  // dL/d(dt A)
        tC[j] = dy * ld(hc + o);
        tB[j] = dh * dtu;
        sA += x * Abn;
        sB += dh * Bt[n0 + j];
        st(dAa + o, ld(dAa + o) + x * dt);
        st(gh + o, dh * an);
      }
      for (int64_t j = nn; j < kLanes; ++j) tB[j] = tC[j] = splat(T(0));
      const V sumB = lane_sums(tB), sumC = lane_sums(tC);
      T *qB = pB + t * GN + g * N + n0, *qC = pC + t * GN + g * N + n0;
      for (int64_t j = 0; j < nn; ++j) {
        qB[j] += sumB[j];
        qC[j] += sumC[j];
      }
    }
    const int64_t o = (b * L + t) * a.dim + c0;
    stn<T, kFull>(a.du + o, dy * Dv + dt * sB, cw);
    const V dd = (sA + uv * sB) * ld(SG + t * kLanes);
    stn<T, kFull>(a.ddelta + o, dd, cw);
    dba += dd;
    dDa += dy * uv;
  }
  for (int64_t n = 0; n < N; ++n)
    stn<T, kFull>(a.dA + (b * N + n) * a.dim + c0, ld(dAa + n * kLanes), cw);
  stn<T, kFull>(a.dD + b * a.dim + c0, dDa, cw);
  stn<T, kFull>(a.dbias + b * a.dim + c0, dba, cw);
}

MGM_CLONES void fwd_f32(const Scan<float>& a, int64_t b, int64_t c0, int64_t cw, int64_t g,
                        float* ws) {
  if (cw == kLanes) return fwd_block<float, true>(a, b, c0, cw, g, ws);
  fwd_block<float, false>(a, b, c0, cw, g, ws);
}
MGM_CLONES void bwd_f32(const Scan<float>& a, int64_t b, int64_t c0, int64_t cw, int64_t g,
                        float* ws, float* pB, float* pC) {
  if (cw == kLanes) return bwd_block<float, true>(a, b, c0, cw, g, ws, pB, pC);
  bwd_block<float, false>(a, b, c0, cw, g, ws, pB, pC);
}
void fwd_any(const Scan<float>& a, int64_t b, int64_t c0, int64_t cw, int64_t g, float* ws) {
  fwd_f32(a, b, c0, cw, g, ws);
}
void fwd_pair(const Scan<float>& a, int64_t b, int64_t c0, int64_t g, float* ws) {
  fwd_pair_f32(a, b, c0, g, ws);
}
void fwd_pair(const Scan<double>&, int64_t, int64_t, int64_t, double*) {}  // never called
void fwd_any(const Scan<double>& a, int64_t b, int64_t c0, int64_t cw, int64_t g, double* ws) {
  fwd_block<double, false>(a, b, c0, cw, g, ws);
}
void bwd_any(const Scan<float>& a, int64_t b, int64_t c0, int64_t cw, int64_t g, float* ws,
             float* pB, float* pC) {
  bwd_f32(a, b, c0, cw, g, ws, pB, pC);
}
void bwd_any(const Scan<double>& a, int64_t b, int64_t c0, int64_t cw, int64_t g, double* ws,
             double* pB, double* pC) {
  bwd_block<double, false>(a, b, c0, cw, g, ws, pB, pC);
}

// ---------------------------------------------------------------------------------------
// Argument checks and the blocks' layout.

using OptT = c10::optional<at::Tensor>;

bool has(const OptT& t) { return t && t->defined(); }

void check_rows(const at::Tensor& t, const char* name, at::ScalarType dtype,
                std::vector<int64_t> shape, bool any_stride = false) {
  TORCH_CHECK(t.device().is_cpu(), "mmglobalmamba._C: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "mmglobalmamba._C: ", name, " has dtype ",
              t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "mmglobalmamba._C: ", name, " must be ",
              at::IntArrayRef(shape), ", got ", t.sizes());
  TORCH_CHECK(any_stride || t.stride(-1) == 1 || shape.back() == 1, "mmglobalmamba._C: ", name,
              " must have stride 1 along its last dimension");
}

template <typename T>
const T* ptr(const OptT& t) { return has(t) ? t->data_ptr<T>() : nullptr; }

struct Layout {
  int64_t per_group, blocks_per_group, nblocks;  // nblocks per batch element
  // Block k of a batch element: group g, channels [c0, c0 + cw).
  void block(int64_t k, int64_t& g, int64_t& c0, int64_t& cw) const {
    g = k / blocks_per_group;
    const int64_t off = (k % blocks_per_group) * kLanes;
    c0 = g * per_group + off;
    cw = std::min(kLanes, per_group - off);
  }
};

template <typename T>
Layout fill_scan(Scan<T>& a, const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                 const at::Tensor& B, const at::Tensor& C, const OptT& D, const OptT& z,
                 const OptT& bias, bool softplus, const OptT& W) {
  a.batch = u.size(0), a.L = u.size(1), a.dim = u.size(2), a.N = A.size(1), a.G = B.size(2);
  a.R = has(W) ? W->size(1) : 0;
  a.u = u.data_ptr<T>(), a.delta = delta.data_ptr<T>(), a.z = ptr<T>(z);
  a.B = B.data_ptr<T>(), a.C = C.data_ptr<T>(), a.A = A.data_ptr<T>();
  a.D = ptr<T>(D), a.bias = ptr<T>(bias), a.W = ptr<T>(W), a.softplus = softplus;
  a.nonpos = softplus && A.numel() > 0 && A.max().template item<T>() <= T(0);
  for (int i = 0; i < 3; ++i) {
    a.su[i] = u.stride(i), a.sd[i] = delta.stride(i), a.sz[i] = has(z) ? z->stride(i) : 0;
    a.sB[i] = B.stride(i), a.sC[i] = C.stride(i);
  }
  const int64_t pg = a.dim / a.G, bpg = (pg + kLanes - 1) / kLanes;
  return Layout{pg, bpg, a.G * bpg};
}

void check_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                const at::Tensor& B, const at::Tensor& C, const OptT& D, const OptT& z,
                const OptT& bias, const OptT& W) {
  TORCH_CHECK(u.dim() == 3, "mmglobalmamba._C: u must be (batch, L, dim), got ", u.sizes());
  const auto dt = u.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble,
              "mmglobalmamba._C: float32 or float64 expected, got ", dt);
  const int64_t batch = u.size(0), L = u.size(1), dim = u.size(2);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == dim && A.size(1) >= 1 && A.size(1) <= kMaxState,
              "mmglobalmamba._C: A must be (dim, N) with 1 <= N <= ", kMaxState, ", got ",
              A.sizes());
  const int64_t N = A.size(1);
  check_rows(A.contiguous(), "A", dt, {dim, N});
  check_rows(u, "u", dt, {batch, L, dim}, true);
  TORCH_CHECK(B.dim() == 4 && B.size(2) >= 1 && dim % B.size(2) == 0,
              "mmglobalmamba._C: B must be (batch, L, G, N) with G dividing dim, got ",
              B.sizes());
  const int64_t G = B.size(2);
  check_rows(B, "B", dt, {batch, L, G, N});
  check_rows(C, "C", dt, {batch, L, G, N});
  if (has(W)) {
    check_rows(*W, "delta_proj_weight", dt, {dim, W->size(1)});
    TORCH_CHECK(W->is_contiguous(), "mmglobalmamba._C: delta_proj_weight must be contiguous");
  }
  check_rows(delta, has(W) ? "dt (delta before delta_proj_weight)" : "delta", dt,
             {batch, L, has(W) ? W->size(1) : dim}, true);
  if (has(z)) check_rows(*z, "z", dt, {batch, L, dim}, true);
  for (const OptT* v : {&D, &bias}) {
    if (has(*v)) check_rows(**v, "D / delta_bias", dt, {dim});
  }
}

at::Tensor scan_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                    const at::Tensor& B, const at::Tensor& C, const OptT& D, const OptT& z,
                    const OptT& delta_bias, bool delta_softplus, const OptT& W) {
  check_scan(u, delta, A, B, C, D, z, delta_bias, W);
  at::Tensor out = at::empty(u.sizes(), u.options());  // (batch, L, dim)
  if (out.numel() == 0) return out;
  const at::Tensor Ac = A.contiguous();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "scan_fwd", [&] {
    Scan<scalar_t> a{};
    const Layout lay = fill_scan(a, u, delta, Ac, B, C, D, z, delta_bias, delta_softplus, W);
    a.out = out.data_ptr<scalar_t>();
    const bool par = a.batch * a.L * a.dim * a.N >= kMinParallelWork;
    // Tasks: runs of P blocks of one group, P = 2 where fwd_pair applies.
    const int64_t P =
        std::is_same<scalar_t, float>::value && a.N == 16 && a.nonpos && mgm_has_v4() ? 2 : 1;
    const int64_t runs = (lay.blocks_per_group + P - 1) / P, per_b = a.G * runs;
    parallel_tasks<scalar_t>(a.batch * per_b, 2 * (3 * a.N + a.R) * kLanes, par,
                             [&](int64_t k, scalar_t* ws) {
      const int64_t b = k / per_b, g0 = k % per_b / runs, j0 = k % runs * P;
      const int64_t j1 = std::min(j0 + P, lay.blocks_per_group);
      int64_t g, c0, cw, c1 = 0, cw1 = 0;
      lay.block(g0 * lay.blocks_per_group + j0, g, c0, cw);
      if (j1 - j0 == 2) lay.block(g0 * lay.blocks_per_group + j0 + 1, g, c1, cw1);
      if (j1 - j0 == 2 && cw + cw1 == 2 * kLanes) return fwd_pair(a, b, c0, g, ws);
      for (int64_t j = j0; j < j1; ++j) {
        lay.block(g0 * lay.blocks_per_group + j, g, c0, cw);
        fwd_any(a, b, c0, cw, g, ws);
      }
    });
  });
  return out;
}

// Returns du, ddelta (of the full-width delta, after dt_proj when W is given), dA (dim, N),
// dB, dC (batch, L, G, N), dD, dz, ddelta_bias (undefined when the input is absent).
std::vector<at::Tensor> scan_bwd(const at::Tensor& u, const at::Tensor& delta,
                                 const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                 const OptT& D, const OptT& z, const OptT& delta_bias,
                                 bool delta_softplus, const OptT& W, const at::Tensor& dout) {
  check_scan(u, delta, A, B, C, D, z, delta_bias, W);
  check_rows(dout, "dout", u.scalar_type(), u.sizes().vec(), true);
  const int64_t batch = u.size(0), L = u.size(1), dim = u.size(2), N = A.size(1);
  const int64_t G = B.size(2);
  const auto opts = u.options();
  at::Tensor du = at::empty(u.sizes(), opts), ddelta = at::empty(u.sizes(), opts);
  at::Tensor dz = has(z) ? at::empty(u.sizes(), opts) : at::Tensor();
  at::Tensor dA_part = at::zeros({batch, N, dim}, opts);
  at::Tensor dD_part = at::zeros({batch, dim}, opts), db_part = at::zeros({batch, dim}, opts);
  // Tasks: (batch element, run of blocks), about 4 per thread, each with dB / dC partials.
  const int64_t pg = dim / G, nblocks = G * ((pg + kLanes - 1) / kLanes);
  const bool par = batch * L * dim * N >= kMinParallelWork;
  const int64_t want = par ? 4 * static_cast<int64_t>(at::get_num_threads()) : 1;
  const int64_t runs = std::max<int64_t>(1, std::min(nblocks, (want + batch - 1) / batch));
  at::Tensor partial = at::zeros({2, batch, runs, L, G, N}, opts);
  if (u.numel() > 0) {
    const at::Tensor Ac = A.contiguous();
    AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "scan_bwd", [&] {
      Scan<scalar_t> a{};
      const Layout lay = fill_scan(a, u, delta, Ac, B, C, D, z, delta_bias, delta_softplus, W);
      a.dout = dout.data_ptr<scalar_t>();
      for (int i = 0; i < 3; ++i) a.so[i] = dout.stride(i);
      a.du = du.data_ptr<scalar_t>(), a.ddelta = ddelta.data_ptr<scalar_t>();
      a.dz = has(z) ? dz.data_ptr<scalar_t>() : nullptr;
      a.dA = dA_part.data_ptr<scalar_t>(), a.dD = dD_part.data_ptr<scalar_t>();
      a.dbias = db_part.data_ptr<scalar_t>();
      scalar_t* pB = partial.data_ptr<scalar_t>();
      scalar_t* pC = pB + batch * runs * L * G * N;
      parallel_tasks<scalar_t>(batch * runs, bwd_ws(L, N, a.R), par,
                               [&](int64_t k, scalar_t* ws) {
        const int64_t b = k / runs, r = k % runs, off = k * L * G * N;
        for (int64_t j = nblocks * r / runs; j < nblocks * (r + 1) / runs; ++j) {
          int64_t g, c0, cw;
          lay.block(j, g, c0, cw);
          bwd_any(a, b, c0, cw, g, ws, pB + off, pC + off);
        }
      });
    });
  }
  at::Tensor dBC = partial.sum(2);  // (2, batch, L, G, N)
  return {du, ddelta, dA_part.sum(0).t().contiguous(), dBC[0], dBC[1],
          has(D) ? dD_part.sum(0) : at::Tensor(), dz,
          has(delta_bias) ? db_part.sum(0) : at::Tensor()};
}

// ---------------------------------------------------------------------------------------
// Depthwise causal conv1d: out[b, t, c] = act(bias[c] + sum_k w[c, k] x[b, t - W + 1 + k, c]).

template <typename T>
struct Conv {
  int64_t L, dim, W;
  const T *x, *wt, *bias, *dout;  // wt: (W, dim)
  int64_t sx[2], so[2];
  bool silu;
};

template <typename T>
MGM_INLINE void conv_pre(const Conv<T>& a, int64_t b, int64_t t, T* o) {
  const int64_t dim = a.dim;
#pragma omp simd
  for (int64_t c = 0; c < dim; ++c) o[c] = a.bias ? a.bias[c] : T(0);
  for (int64_t k = std::max<int64_t>(0, a.W - 1 - t); k < a.W; ++k) {
    const T* xs = a.x + b * a.sx[0] + (t - a.W + 1 + k) * a.sx[1];
    const T* wk = a.wt + k * dim;
#pragma omp simd
    for (int64_t c = 0; c < dim; ++c) o[c] += wk[c] * xs[c];
  }
}

template <typename T>
MGM_INLINE void conv_fwd_rows(const Conv<T>& a, int64_t b, int64_t t0, int64_t t1, T* out) {
  for (int64_t t = t0; t < t1; ++t) {
    T* o = out + (b * a.L + t) * a.dim;
    conv_pre(a, b, t, o);
    if (!a.silu) continue;
    int64_t c = 0;
    for (; c + kLanes <= a.dim; c += kLanes) st(o + c, ld(o + c) * sigmoidv(ld(o + c)));
    for (; c < a.dim; ++c) o[c] = o[c] / (T(1) + std::exp(-o[c]));
  }
}

// Rows [t0, t1): dx, and this task's partial dw (W, dim) and dbias (dim) in part.
// ws: (t1 - t0 + W - 1) * dim for dL/d(pre-activation).
template <typename T>
MGM_INLINE void conv_bwd_rows(const Conv<T>& a, int64_t b, int64_t t0, int64_t t1, T* dx,
                              T* part, T* ws) {
  const int64_t dim = a.dim, W = a.W, s1 = std::min(a.L, t1 + W - 1);
  for (int64_t s = t0; s < s1; ++s) {
    T* gs = ws + (s - t0) * dim;
    const T* d = a.dout + b * a.so[0] + s * a.so[1];
    if (a.silu) {
      conv_pre(a, b, s, gs);  // then dL/d pre = dout * silu'(pre)
      int64_t c = 0;
      for (; c + kLanes <= dim; c += kLanes) {
        const Vec<T> p = ld(gs + c), sg = sigmoidv(p), one = splat(T(1));
        st(gs + c, ld(d + c) * sg * (one + p * (one - sg)));
      }
      for (; c < dim; ++c) {
        const T sg = T(1) / (T(1) + std::exp(-gs[c]));
        gs[c] = d[c] * sg * (T(1) + gs[c] * (T(1) - sg));
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < dim; ++c) gs[c] = d[c];
    }
  }
  T* db = part + W * dim;
  for (int64_t t = t0; t < t1; ++t) {
    const T* gt = ws + (t - t0) * dim;
    T* o = dx + (b * a.L + t) * dim;
#pragma omp simd
    for (int64_t c = 0; c < dim; ++c) {
      o[c] = T(0);
      db[c] += gt[c];
    }
    for (int64_t k = 0; k < W; ++k) {
      const T* wk = a.wt + k * dim;
      if (t + W - 1 - k < a.L) {  // out[t + W - 1 - k] reads x[t] with weight k
        const T* go = ws + (t + W - 1 - k - t0) * dim;
#pragma omp simd
        for (int64_t c = 0; c < dim; ++c) o[c] += wk[c] * go[c];
      }
      if (t - W + 1 + k >= 0) {  // weight k: out[t] reads x[t - W + 1 + k]
        const T* xs = a.x + b * a.sx[0] + (t - W + 1 + k) * a.sx[1];
        T* dwk = part + k * dim;
#pragma omp simd
        for (int64_t c = 0; c < dim; ++c) dwk[c] += gt[c] * xs[c];
      }
    }
  }
}

MGM_CLONES void conv_fwd_f32(const Conv<float>& a, int64_t b, int64_t t0, int64_t t1,
                             float* out) {
  conv_fwd_rows(a, b, t0, t1, out);
}
MGM_CLONES void conv_bwd_f32(const Conv<float>& a, int64_t b, int64_t t0, int64_t t1,
                             float* dx, float* part, float* ws) {
  conv_bwd_rows(a, b, t0, t1, dx, part, ws);
}
void conv_fwd_any(const Conv<float>& a, int64_t b, int64_t t0, int64_t t1, float* out) {
  conv_fwd_f32(a, b, t0, t1, out);
}
void conv_fwd_any(const Conv<double>& a, int64_t b, int64_t t0, int64_t t1, double* out) {
  conv_fwd_rows(a, b, t0, t1, out);
}
void conv_bwd_any(const Conv<float>& a, int64_t b, int64_t t0, int64_t t1, float* dx,
                  float* part, float* ws) {
  conv_bwd_f32(a, b, t0, t1, dx, part, ws);
}
void conv_bwd_any(const Conv<double>& a, int64_t b, int64_t t0, int64_t t1, double* dx,
                  double* part, double* ws) {
  conv_bwd_rows(a, b, t0, t1, dx, part, ws);
}

constexpr int64_t kConvRows = 64;  // rows per conv task

template <typename T>
Conv<T> fill_conv(const at::Tensor& x, const at::Tensor& wt, const OptT& bias, bool silu) {
  Conv<T> a{};
  a.L = x.size(1), a.dim = x.size(2), a.W = wt.size(0), a.silu = silu;
  a.x = x.data_ptr<T>(), a.wt = wt.data_ptr<T>(), a.bias = ptr<T>(bias);
  a.sx[0] = x.stride(0), a.sx[1] = x.stride(1);
  return a;
}

void check_conv(const at::Tensor& x, const at::Tensor& weight, const OptT& bias) {
  TORCH_CHECK(x.dim() == 3, "mmglobalmamba._C: x must be (batch, L, dim), got ", x.sizes());
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble,
              "mmglobalmamba._C: float32 or float64 expected, got ", dt);
  check_rows(x, "x", dt, x.sizes().vec());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == x.size(2) && weight.size(1) >= 1,
              "mmglobalmamba._C: conv weight must be (dim, width), got ", weight.sizes());
  check_rows(weight.contiguous(), "conv weight", dt, weight.sizes().vec());
  if (has(bias)) check_rows(*bias, "conv bias", dt, {x.size(2)});
}

at::Tensor conv_fwd(const at::Tensor& x, const at::Tensor& weight, const OptT& bias,
                    bool silu) {
  check_conv(x, weight, bias);
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  const at::Tensor wt = weight.t().contiguous();  // (W, dim)
  const int64_t chunks = (x.size(1) + kConvRows - 1) / kConvRows;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_fwd", [&] {
    const Conv<scalar_t> a = fill_conv<scalar_t>(x, wt, bias, silu);
    parallel_tasks<scalar_t>(x.size(0) * chunks, 0, out.numel() * a.W >= kMinParallelWork,
                             [&](int64_t k, scalar_t*) {
      const int64_t t0 = (k % chunks) * kConvRows;
      conv_fwd_any(a, k / chunks, t0, std::min(a.L, t0 + kConvRows), out.data_ptr<scalar_t>());
    });
  });
  return out;
}

// Returns dx (batch, L, dim), dweight (dim, width), dbias (dim,) (undefined without bias).
std::vector<at::Tensor> conv_bwd(const at::Tensor& x, const at::Tensor& weight,
                                 const OptT& bias, bool silu, const at::Tensor& dout) {
  check_conv(x, weight, bias);
  check_rows(dout, "dout", x.scalar_type(), x.sizes().vec());
  const int64_t batch = x.size(0), L = x.size(1), dim = x.size(2), W = weight.size(1);
  at::Tensor dx = at::empty(x.sizes(), x.options());
  const int64_t chunks = (L + kConvRows - 1) / kConvRows;
  at::Tensor part = at::zeros({batch * chunks, W + 1, dim}, x.options());
  if (dx.numel() > 0) {
    const at::Tensor wt = weight.t().contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_bwd", [&] {
      Conv<scalar_t> a = fill_conv<scalar_t>(x, wt, bias, silu);
      a.dout = dout.data_ptr<scalar_t>(), a.so[0] = dout.stride(0), a.so[1] = dout.stride(1);
      parallel_tasks<scalar_t>(batch * chunks, (kConvRows + W - 1) * dim,
                               dx.numel() * W >= kMinParallelWork, [&](int64_t k, scalar_t* ws) {
        const int64_t t0 = (k % chunks) * kConvRows;
        conv_bwd_any(a, k / chunks, t0, std::min(L, t0 + kConvRows), dx.data_ptr<scalar_t>(),
                     part.data_ptr<scalar_t>() + k * (W + 1) * dim, ws);
      });
    });
  }
  at::Tensor sums = part.sum(0);  // (W + 1, dim)
  return {dx, sums.narrow(0, 0, W).t().contiguous(),
          has(bias) ? sums[W].contiguous() : at::Tensor()};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmglobalmamba CPU kernels of the Mamba mixer, channels last: selective scan "
            "and depthwise causal conv1d, forward and backward";
  m.def("scan_fwd", &scan_fwd,
        "Selective scan forward. u, z: (batch, L, dim); delta: (batch, L, dim), or dt "
        "(batch, L, R) with delta_proj_weight (dim, R); B, C: (batch, L, G, N); A: (dim, N); "
        "D, delta_bias: (dim,). Returns out (batch, L, dim).",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"),
        py::arg("D"), py::arg("z"), py::arg("delta_bias"), py::arg("delta_softplus"),
        py::arg("delta_proj_weight"));
  m.def("scan_bwd", &scan_bwd,
        "Selective scan backward (arguments of scan_fwd, then dout). Returns [du, ddelta "
        "(of the full-width delta), dA, dB, dC, dD, dz, ddelta_bias].",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"),
        py::arg("D"), py::arg("z"), py::arg("delta_bias"), py::arg("delta_softplus"),
        py::arg("delta_proj_weight"), py::arg("dout"));
  m.def("conv_fwd", &conv_fwd,
        "Depthwise causal conv1d (+ SiLU): x (batch, L, dim), weight (dim, width), bias "
        "(dim,) or None. Returns (batch, L, dim).",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("silu"));
  m.def("conv_bwd", &conv_bwd, "Conv backward. Returns [dx, dweight, dbias].", py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("silu"), py::arg("dout"));
}
