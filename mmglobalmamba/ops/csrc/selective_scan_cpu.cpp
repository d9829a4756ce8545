// Selective scan (Mamba-1 S6) forward and backward for CPU tensors.
//
// Conventions follow mamba_ssm's selective_scan_fn, with one layout change made by the
// Python wrapper (mmglobalmamba/ops/cpu_kernel.py) so that the inner loop over the state
// dimension is contiguous:
//   u, delta, z, out : (batch, dim, L)            contiguous
//   A                : (dim, N)                   real
//   B, C             : (batch, G, L, N)           contiguous (the wrapper transposes N <-> L)
//   D, delta_bias    : (dim,)
// Channel d reads group g = d / (dim / G).  Math (per channel, per step t):
//   dt_t = softplus(delta_t + bias) or delta_t + bias
//   h_t  = exp(dt_t * A) * h_{t-1} + dt_t * u_t * B_t
//   y_t  = <C_t, h_t> + D * u_t ;  out_t = y_t * silu(z_t) when z is given.
// float32 and float64 are computed natively (float64 exists for gradcheck); the wrapper
// converts half / bfloat16 to float32 first.  float32 with N <= 64 takes the vector path
// (state in 16-lane blocks, N zero-padded to a multiple of 16); everything else takes the
// generic per-element path.  The backward recomputes the states of a channel forward into
// a per-thread (L, N) buffer, then runs the reverse recurrence.
//
// Parallelism: (batch, dim) channels in tasks that the intra-op threads take from a shared
// counter.  The backward reduces dB / dC over the channels of a group through per-chunk
// (L, N) buffers summed in a fixed order,
// and dA / dD / d(delta_bias) through per-(batch, channel) partials summed over batch, so
// results do not depend on thread timing.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "channels_last_cpu.h"
#include "cpu_math.h"
#include "cpu_parallel.h"

namespace {

using namespace mgm;


// ---------------------------------------------------------------------------------------
// Per-channel work.  Pointers are already offset to the channel (u, delta, z, out, ...) or
// to its (batch, group) slice (B, C: (L, N)).

struct ChannelIn {
  int64_t L, N;
  const void* u;      // (L)
  const void* delta;  // (L)
  const void* z;      // (L) or null
  const void* A;      // (N)
  const void* B;      // (L, N)
  const void* C;      // (L, N)
  double D, bias;
  bool has_D, has_z, softplus;
};

// dt_t for every step (and, if sig != null, d dt / d delta = sigmoid(delta + bias)).
template <typename T>
MGM_INLINE void compute_dt(const ChannelIn& in, T* dt, T* sig) {
  const T* delta = static_cast<const T*>(in.delta);
  const T bias = static_cast<T>(in.bias);
  const int64_t L = in.L;
  if (in.softplus) {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) dt[t] = softplus(static_cast<T>(delta[t] + bias));
    if (sig) {
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) sig[t] = sigmoid(static_cast<T>(delta[t] + bias));
    }
  } else {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) dt[t] = delta[t] + bias;
    if (sig) {
      for (int64_t t = 0; t < L; ++t) sig[t] = T(1);
    }
  }
}

// Forward for one channel.  work: 2 * L + N scalars.
template <typename T>
MGM_INLINE void fwd_channel(const ChannelIn& in, T* out, T* work) {
  const int64_t L = in.L, N = in.N;
  const T* u = static_cast<const T*>(in.u);
  const T* z = static_cast<const T*>(in.z);
  const T* A = static_cast<const T*>(in.A);
  const T* B = static_cast<const T*>(in.B);
  const T* C = static_cast<const T*>(in.C);
  T* dt = work;          // (L)
  T* y = work + L;       // (L)
  T* h = work + 2 * L;   // (N)
  compute_dt<T>(in, dt, nullptr);
  for (int64_t n = 0; n < N; ++n) h[n] = T(0);
  for (int64_t t = 0; t < L; ++t) {
    const T dtt = dt[t];
    const T dtu = dtt * u[t];
    const T* Bt = B + t * N;
    const T* Ct = C + t * N;
    T acc = T(0);
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < N; ++n) {
      const T hn = fast_exp(dtt * A[n]) * h[n] + dtu * Bt[n];
      h[n] = hn;
      acc += hn * Ct[n];
    }
    y[t] = acc;
  }
  const T Dv = in.has_D ? static_cast<T>(in.D) : T(0);
  if (in.has_z) {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) {
      const T zt = z[t];
      out[t] = (y[t] + Dv * u[t]) * (zt * sigmoid(zt));
    }
  } else {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) out[t] = y[t] + Dv * u[t];
  }
}

struct ChannelGrad {
  const void* dout;  // (L)
  void* du;          // (L)
  void* ddelta;      // (L)
  void* dz;          // (L) or null
  void* dA;          // (N)   this channel's share (per batch)
  void* dB;          // (L, N) accumulated over the channels of a chunk
  void* dC;          // (L, N)
  double dD = 0, dbias = 0;  // outputs
};

// Backward for one channel: recompute the states forward, then a reverse pass.
// work: 4 * L + (2 L + 1) * N + 2 * N scalars.
template <typename T>
MGM_INLINE void bwd_channel(const ChannelIn& in, ChannelGrad& gr, T* work) {
  const int64_t L = in.L, N = in.N;
  const T* u = static_cast<const T*>(in.u);
  const T* z = static_cast<const T*>(in.z);
  const T* A = static_cast<const T*>(in.A);
  const T* B = static_cast<const T*>(in.B);
  const T* C = static_cast<const T*>(in.C);
  const T* dout = static_cast<const T*>(gr.dout);
  T* du = static_cast<T*>(gr.du);
  T* ddelta = static_cast<T*>(gr.ddelta);
  T* dz = static_cast<T*>(gr.dz);
  T* dA = static_cast<T*>(gr.dA);
  T* dB = static_cast<T*>(gr.dB);
  T* dC = static_cast<T*>(gr.dC);

  T* dt = work;                 // (L)
  T* sig = dt + L;              // (L)   d dt / d delta
  T* y = sig + L;               // (L)   pre-gate output, then dL/dy
  T* ddt = y + L;               // (L)
  T* a = ddt + L;               // (L, N)      exp(dt_t A)
  T* h = a + L * N;             // (L + 1, N)  row 0 = h_{-1} = 0
  T* g = h + (L + 1) * N;       // (N)  a_{t+1} * dL/dh_{t+1}, carried backwards
  T* dA_acc = g + N;            // (N)

  compute_dt<T>(in, dt, sig);
  const T Dv = in.has_D ? static_cast<T>(in.D) : T(0);

  // Forward recompute, keeping exp(dt A) and the states.
  for (int64_t n = 0; n < N; ++n) h[n] = T(0);
  for (int64_t t = 0; t < L; ++t) {
    const T dtt = dt[t];
    const T dtu = dtt * u[t];
    const T* Bt = B + t * N;
    const T* Ct = C + t * N;
    const T* hp = h + t * N;
    T* hc = h + (t + 1) * N;
    T* at = a + t * N;
    T acc = T(0);
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < N; ++n) {
      const T an = fast_exp(dtt * A[n]);
      const T hn = an * hp[n] + dtu * Bt[n];
      at[n] = an;
      hc[n] = hn;
      acc += hn * Ct[n];
    }
    y[t] = acc + Dv * u[t];
  }

  // Gate: out = y * silu(z).  Turn y into dL/dy in place.
  if (in.has_z) {
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) {
      const T zt = z[t];
      const T s = sigmoid(zt);
      dz[t] = dout[t] * y[t] * s * (T(1) + zt * (T(1) - s));
      y[t] = dout[t] * zt * s;
    }
  } else {
    for (int64_t t = 0; t < L; ++t) y[t] = dout[t];
  }
  const T* dy = y;

  T dD = T(0);
  for (int64_t n = 0; n < N; ++n) {
    g[n] = T(0);
    dA_acc[n] = T(0);
  }
  for (int64_t t = L - 1; t >= 0; --t) {
    const T dyt = dy[t];
    const T dtt = dt[t];
    const T ut = u[t];
    const T dtu = dtt * ut;
    const T* Bt = B + t * N;
    const T* Ct = C + t * N;
    const T* at = a + t * N;
    const T* hp = h + t * N;
    const T* hc = h + (t + 1) * N;
    T* dBt = dB + t * N;
    T* dCt = dC + t * N;
    T s_gB = T(0), s_gA = T(0);
#pragma omp simd reduction(+ : s_gB, s_gA)
    for (int64_t n = 0; n < N; ++n) {
      const T gn = g[n] + dyt * Ct[n];     // dL/dh_t
      dCt[n] += dyt * hc[n];
      dBt[n] += gn * dtu;
      s_gB += gn * Bt[n];
      const T xn = gn * at[n] * hp[n];     // dL/d(dt_t A_n)
      s_gA += xn * A[n];
      dA_acc[n] += xn * dtt;
      g[n] = gn * at[n];
    }
    ddt[t] = s_gA + ut * s_gB;
    du[t] = dyt * Dv + dtt * s_gB;
    dD += dyt * ut;
  }
  T dbias = T(0);
  for (int64_t t = 0; t < L; ++t) {
    const T dd = ddt[t] * sig[t];
    ddelta[t] = dd;
    dbias += dd;
  }
  for (int64_t n = 0; n < N; ++n) dA[n] = dA_acc[n];
  gr.dD = static_cast<double>(dD);
  gr.dbias = static_cast<double>(dbias);
}

// Non-template entry points carry the ISA clones; the templates inline into each clone.
MGM_CLONES void fwd_channel_f32(const ChannelIn& in, float* out, float* work) {
  fwd_channel<float>(in, out, work);
}
MGM_CLONES void fwd_channel_f64(const ChannelIn& in, double* out, double* work) {
  fwd_channel<double>(in, out, work);
}
MGM_CLONES void bwd_channel_f32(const ChannelIn& in, ChannelGrad& gr, float* work) {
  bwd_channel<float>(in, gr, work);
}
MGM_CLONES void bwd_channel_f64(const ChannelIn& in, ChannelGrad& gr, double* work) {
  bwd_channel<double>(in, gr, work);
}
// ---------------------------------------------------------------------------------------
// float32 fast path: the state dimension in blocks of 16 lanes (GCC/Clang vector types,
// lowered to zmm / 2 ymm / 4 xmm by each ISA clone), the state kept in registers for
// NB = N / 16 <= 4 blocks, and one tree reduction per step instead of the serial sums
// that `omp simd reduction` produces.  N is zero-padded to a multiple of 16 by the caller
// (padded lanes have A = B = C = 0, so their state stays 0 and adds nothing).

#if MGM_HAVE_VEC  // cpu_math.h: GCC >= 12, Clang

// Sums of 16 vectors at once: lane j of the result = sum of the lanes of tile[j].  A
// transpose-and-add tree (4 levels of pairwise shuffles) that costs about 2 shuffles per
// vector instead of the ~8 of a lone horizontal sum; the scan stores one vector per step in a tile
// and reduces it every 16 steps.
MGM_INLINE v16 reduce_tile(const float* tile) {  // tile: 16 x 16 floats, row j = vector j
  v16 r1[8], r2[4], r3[2];
  for (int i = 0; i < 8; ++i) {
    const v16 a = load16(tile + 32 * i), b = load16(tile + 32 * i + 16);
    r1[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
            __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  }
  for (int i = 0; i < 4; ++i) {
    const v16 a = r1[2 * i], b = r1[2 * i + 1];
    r2[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
            __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  }
  for (int i = 0; i < 2; ++i) {
    const v16 a = r2[2 * i], b = r2[2 * i + 1];
    r3[i] = __builtin_shufflevector(a, b, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
            __builtin_shufflevector(a, b, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  }
  const v16 a = r3[0], b = r3[1];
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// Writes the sums of the tile rows for steps [t0, min(t0 + 16, L)) to dst[t0 ...].
MGM_INLINE void flush_tile(const float* tile, float* dst, int64_t t0, int64_t L) {
  const v16 sums = reduce_tile(tile);
  if (t0 + 16 <= L) {
    store16(dst + t0, sums);
  } else {
    for (int64_t j = 0; t0 + j < L; ++j) dst[t0 + j] = sums[j];
  }
}


// The vector kernels advance CH channels of one (batch, group) slice together: the B_t /
// C_t loads are shared, the CH recurrences interleave (more independent work per step),
// and the backward's dB / dC partial sums get one update per step for all CH channels.

template <int NB, int CH>
MGM_INLINE void fwd_vec(const ChannelIn* in, float* const* out, float* work) {
  constexpr int64_t N = 16 * NB;
  const int64_t L = in[0].L;
  const int64_t Lp = (L + 15) / 16 * 16;
  const float* B = static_cast<const float*>(in[0].B);  // shared by the CH channels
  const float* C = static_cast<const float*>(in[0].C);
  const float* u[CH];
  float* dt[CH];  // (L)
  float* y[CH];   // (L)
  alignas(64) float tile[CH][256];  // <h_t, C_t> lane products of 16 steps, per channel
  v16 A[CH][NB], h[CH][NB];
  for (int ch = 0; ch < CH; ++ch) {
    u[ch] = static_cast<const float*>(in[ch].u);
    dt[ch] = work + 2 * ch * Lp;
    y[ch] = dt[ch] + Lp;
    compute_dt<float>(in[ch], dt[ch], nullptr);
    const float* Ap = static_cast<const float*>(in[ch].A);
    for (int k = 0; k < NB; ++k) {
      A[ch][k] = load16(Ap + 16 * k);
      h[ch][k] = splat(0.0f);
    }
  }
  for (int64_t t = 0; t < L; ++t) {
    v16 Bv[NB], Cv[NB];
    for (int k = 0; k < NB; ++k) {
      Bv[k] = load16(B + t * N + 16 * k);
      Cv[k] = load16(C + t * N + 16 * k);
    }
    for (int ch = 0; ch < CH; ++ch) {
      const float dtt = dt[ch][t];
      const float dtu = dtt * u[ch][t];
      v16 acc = splat(0.0f);
      for (int k = 0; k < NB; ++k) {
        h[ch][k] = fast_exp16(A[ch][k] * dtt) * h[ch][k] + Bv[k] * dtu;
        acc += h[ch][k] * Cv[k];
      }
      store16(tile[ch] + 16 * (t & 15), acc);
    }
    if ((t & 15) == 15 || t == L - 1) {
      for (int ch = 0; ch < CH; ++ch) flush_tile(tile[ch], y[ch], t & ~int64_t(15), L);
    }
  }
  for (int ch = 0; ch < CH; ++ch) {
    const float Dv = in[ch].has_D ? static_cast<float>(in[ch].D) : 0.0f;
    const float* uc = u[ch];
    const float* yc = y[ch];
    float* o = out[ch];
    if (in[ch].has_z) {
      const float* z = static_cast<const float*>(in[ch].z);
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) {
        const float zt = z[t];
        o[t] = (yc[t] + Dv * uc[t]) * (zt * sigmoid(zt));
      }
    } else {
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) o[t] = yc[t] + Dv * uc[t];
    }
  }
}

// Per channel work: dt, sig, y, ddt (Lp each), then a (L, N) and h (L + 1, N).
inline int64_t bwd_vec_work(int64_t L, int64_t N) {
  const int64_t Lp = (L + 15) / 16 * 16;
  return 4 * Lp + (2 * L + 1) * N + 16;
}

template <int NB, int CH>
MGM_INLINE void bwd_vec(const ChannelIn* in, ChannelGrad* gr, float* work) {
  constexpr int64_t N = 16 * NB;
  const int64_t L = in[0].L;
  const int64_t Lp = (L + 15) / 16 * 16;
  const int64_t per_ch = (bwd_vec_work(L, N) + 15) / 16 * 16;
  const float* B = static_cast<const float*>(in[0].B);
  const float* C = static_cast<const float*>(in[0].C);
  float* dB = static_cast<float*>(gr[0].dB);  // the chunk's partial sums, shared
  float* dC = static_cast<float*>(gr[0].dC);

  const float* u[CH];
  float *dt[CH], *sig[CH], *y[CH], *ddt[CH], *a[CH], *h[CH];
  float Dv[CH];
  alignas(64) float tile[CH][256], tile2[CH][256];  // per-step vectors awaiting lane sums
  v16 A[CH][NB], hr[CH][NB];
  for (int ch = 0; ch < CH; ++ch) {
    u[ch] = static_cast<const float*>(in[ch].u);
    dt[ch] = work + ch * per_ch;
    sig[ch] = dt[ch] + Lp;
    y[ch] = sig[ch] + Lp;
    ddt[ch] = y[ch] + Lp;
    a[ch] = ddt[ch] + Lp;      // (L, N)      exp(dt_t A)
    h[ch] = a[ch] + L * N;     // (L + 1, N)  row 0 = h_{-1} = 0
    Dv[ch] = in[ch].has_D ? static_cast<float>(in[ch].D) : 0.0f;
    compute_dt<float>(in[ch], dt[ch], sig[ch]);
    const float* Ap = static_cast<const float*>(in[ch].A);
    for (int k = 0; k < NB; ++k) {
      A[ch][k] = load16(Ap + 16 * k);
      hr[ch][k] = splat(0.0f);
      store16(h[ch] + 16 * k, hr[ch][k]);
    }
  }

  // Forward recompute, keeping exp(dt A) and the states.
  for (int64_t t = 0; t < L; ++t) {
    v16 Bv[NB], Cv[NB];
    for (int k = 0; k < NB; ++k) {
      Bv[k] = load16(B + t * N + 16 * k);
      Cv[k] = load16(C + t * N + 16 * k);
    }
    for (int ch = 0; ch < CH; ++ch) {
      const float dtt = dt[ch][t];
      const float dtu = dtt * u[ch][t];
      float* at = a[ch] + t * N;
      float* hc = h[ch] + (t + 1) * N;
      v16 acc = splat(0.0f);
      for (int k = 0; k < NB; ++k) {
        const v16 ak = fast_exp16(A[ch][k] * dtt);
        hr[ch][k] = ak * hr[ch][k] + Bv[k] * dtu;
        store16(at + 16 * k, ak);
        store16(hc + 16 * k, hr[ch][k]);
        acc += hr[ch][k] * Cv[k];
      }
      store16(tile[ch] + 16 * (t & 15), acc);
    }
    if ((t & 15) == 15 || t == L - 1) {
      for (int ch = 0; ch < CH; ++ch) flush_tile(tile[ch], y[ch], t & ~int64_t(15), L);
    }
  }

  // Gate (out = y * silu(z)), then y becomes dL/dy in place.
  for (int ch = 0; ch < CH; ++ch) {
    const float* dout = static_cast<const float*>(gr[ch].dout);
    const float* uc = u[ch];
    float* yc = y[ch];
    if (in[ch].has_z) {
      const float* z = static_cast<const float*>(in[ch].z);
      float* dz = static_cast<float*>(gr[ch].dz);
      const float D = Dv[ch];
#pragma omp simd
      for (int64_t t = 0; t < L; ++t) {
        const float zt = z[t];
        const float s = sigmoid(zt);
        const float yt = yc[t] + D * uc[t];
        dz[t] = dout[t] * yt * s * (1.0f + zt * (1.0f - s));
        yc[t] = dout[t] * zt * s;
      }
    } else {
      for (int64_t t = 0; t < L; ++t) yc[t] = dout[t];
    }
  }

  v16 g[CH][NB], dA_acc[CH][NB];
  float dD[CH];
  for (int ch = 0; ch < CH; ++ch) {
    dD[ch] = 0.0f;
    for (int k = 0; k < NB; ++k) {
      g[ch][k] = splat(0.0f);
      dA_acc[ch][k] = splat(0.0f);
    }
  }
  for (int64_t t = L - 1; t >= 0; --t) {
    float dyt[CH], dtt[CH], dtu[CH];
    for (int ch = 0; ch < CH; ++ch) {
      dyt[ch] = y[ch][t];
      dtt[ch] = dt[ch][t];
      dtu[ch] = dtt[ch] * u[ch][t];
      dD[ch] += dyt[ch] * u[ch][t];
    }
    v16 s_gB[CH], s_gA[CH];
    for (int ch = 0; ch < CH; ++ch) s_gB[ch] = s_gA[ch] = splat(0.0f);
    for (int k = 0; k < NB; ++k) {
      const v16 Bv = load16(B + t * N + 16 * k);
      const v16 Cv = load16(C + t * N + 16 * k);
      v16 accB = splat(0.0f), accC = splat(0.0f);
      for (int ch = 0; ch < CH; ++ch) {
        const v16 ak = load16(a[ch] + t * N + 16 * k);
        const v16 gn = g[ch][k] + Cv * dyt[ch];                     // dL/dh_t
        accC += load16(h[ch] + (t + 1) * N + 16 * k) * dyt[ch];
        accB += gn * dtu[ch];
        s_gB[ch] += gn * Bv;
        const v16 xn = gn * ak * load16(h[ch] + t * N + 16 * k);    // dL/d(dt_t A)
        s_gA[ch] += xn * A[ch][k];
        dA_acc[ch][k] += xn * dtt[ch];
        g[ch][k] = gn * ak;
      }
      store16(dC + t * N + 16 * k, load16(dC + t * N + 16 * k) + accC);
      store16(dB + t * N + 16 * k, load16(dB + t * N + 16 * k) + accB);
    }
    // Lane sums later, 16 steps at a time: sum(g B) into du, sum(x A) into ddt.
    for (int ch = 0; ch < CH; ++ch) {
      store16(tile[ch] + 16 * (t & 15), s_gB[ch]);
      store16(tile2[ch] + 16 * (t & 15), s_gA[ch]);
    }
    if ((t & 15) == 0) {
      for (int ch = 0; ch < CH; ++ch) {
        flush_tile(tile[ch], static_cast<float*>(gr[ch].du), t, L);
        flush_tile(tile2[ch], ddt[ch], t, L);
      }
    }
  }
  for (int ch = 0; ch < CH; ++ch) {
    float* du = static_cast<float*>(gr[ch].du);
    float* ddelta = static_cast<float*>(gr[ch].ddelta);
    const float* uc = u[ch];
    const float* dy = y[ch];
    const float* dtc = dt[ch];
    const float* sg = sig[ch];
    const float* dd_t = ddt[ch];
    const float D = Dv[ch];
    float dbias = 0.0f;
#pragma omp simd reduction(+ : dbias)
    for (int64_t t = 0; t < L; ++t) {
      const float sgB = du[t];
      du[t] = dy[t] * D + dtc[t] * sgB;
      const float dd = (dd_t[t] + uc[t] * sgB) * sg[t];
      ddelta[t] = dd;
      dbias += dd;
    }
    float* dA = static_cast<float*>(gr[ch].dA);
    for (int k = 0; k < NB; ++k) store16(dA + 16 * k, dA_acc[ch][k]);
    gr[ch].dD = static_cast<double>(dD[ch]);
    gr[ch].dbias = static_cast<double>(dbias);
  }
}

// Channels advanced together by the vector kernels.
constexpr int kPair = 2;

#define MGM_VEC_ENTRY(NB)                                                                 \
  MGM_CLONES void fwd_vec_##NB(const ChannelIn* in, float* const* out, float* work,       \
                               int ch) {                                                  \
    if (ch == kPair) return fwd_vec<NB, kPair>(in, out, work);                             \
    fwd_vec<NB, 1>(in, out, work);                                                        \
  }                                                                                       \
  MGM_CLONES void bwd_vec_##NB(const ChannelIn* in, ChannelGrad* gr, float* work, int ch) { \
    if (ch == kPair) return bwd_vec<NB, kPair>(in, gr, work);                              \
    bwd_vec<NB, 1>(in, gr, work);                                                         \
  }
MGM_VEC_ENTRY(1)
MGM_VEC_ENTRY(2)
MGM_VEC_ENTRY(3)
MGM_VEC_ENTRY(4)
#undef MGM_VEC_ENTRY
constexpr int64_t kMaxVecBlocks = 4;
#else
constexpr int64_t kMaxVecBlocks = 0;
constexpr int kPair = 1;
inline int64_t bwd_vec_work(int64_t, int64_t) { return 0; }
#endif

// Padded state size used by the kernels for a given dtype and N (0 blocks: generic path).
int64_t vec_blocks(at::ScalarType dtype, int64_t N) {
  const int64_t nb = (N + 15) / 16;
  return (dtype == at::kFloat && nb >= 1 && nb <= kMaxVecBlocks) ? nb : 0;
}

// Forward of `count` (1 or kPair) consecutive channels of one slice; the generic path
// does them one by one.
void fwd_dispatch(int64_t nb, int count, const ChannelIn* in, float* const* out, float* work) {
#if MGM_HAVE_VEC
  switch (nb) {
    case 1: return fwd_vec_1(in, out, work, count);
    case 2: return fwd_vec_2(in, out, work, count);
    case 3: return fwd_vec_3(in, out, work, count);
    case 4: return fwd_vec_4(in, out, work, count);
    default: break;
  }
#endif
  for (int i = 0; i < count; ++i) fwd_channel_f32(in[i], out[i], work);
}
void fwd_dispatch(int64_t, int count, const ChannelIn* in, double* const* out, double* work) {
  for (int i = 0; i < count; ++i) fwd_channel_f64(in[i], out[i], work);
}
void bwd_dispatch(int64_t nb, int count, const ChannelIn* in, ChannelGrad* gr, float* work) {
#if MGM_HAVE_VEC
  switch (nb) {
    case 1: return bwd_vec_1(in, gr, work, count);
    case 2: return bwd_vec_2(in, gr, work, count);
    case 3: return bwd_vec_3(in, gr, work, count);
    case 4: return bwd_vec_4(in, gr, work, count);
    default: break;
  }
#endif
  for (int i = 0; i < count; ++i) bwd_channel_f32(in[i], gr[i], work);
}
void bwd_dispatch(int64_t, int count, const ChannelIn* in, ChannelGrad* gr, double* work) {
  for (int i = 0; i < count; ++i) bwd_channel_f64(in[i], gr[i], work);
}

// A work buffer whose start is 64-byte aligned.
template <typename T>
struct AlignedWork {
  std::vector<T> buf;
  T* ptr;
  explicit AlignedWork(int64_t n) : buf(static_cast<size_t>(n) + 64 / sizeof(T)) {
    auto addr = reinterpret_cast<uintptr_t>(buf.data());
    ptr = reinterpret_cast<T*>((addr + 63) & ~static_cast<uintptr_t>(63));
  }
};

// ---------------------------------------------------------------------------------------
// Argument checks shared by forward and backward.

struct Dims {
  int64_t batch, dim, L, N, G;
};

Dims check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                  const at::Tensor& B, const at::Tensor& C, const c10::optional<at::Tensor>& D,
                  const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias) {
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "selective_scan_cpu: inputs must be float32 or float64, got ", dtype);
  auto check = [&](const at::Tensor& t, const char* name, int64_t ndim) {
    TORCH_CHECK(t.device().is_cpu(), "selective_scan_cpu: ", name, " must be a CPU tensor");
    TORCH_CHECK(t.scalar_type() == dtype, "selective_scan_cpu: ", name, " has dtype ",
                t.scalar_type(), ", expected ", dtype);
    TORCH_CHECK(t.dim() == ndim, "selective_scan_cpu: ", name, " must have ", ndim,
                " dims, got shape ", t.sizes());
    TORCH_CHECK(t.is_contiguous(), "selective_scan_cpu: ", name, " must be contiguous");
  };
  check(u, "u", 3);
  check(delta, "delta", 3);
  check(A, "A", 2);
  check(B, "B", 4);
  check(C, "C", 4);
  Dims d{u.size(0), u.size(1), u.size(2), A.size(1), B.size(1)};
  TORCH_CHECK(delta.sizes() == u.sizes(), "selective_scan_cpu: delta shape ", delta.sizes(),
              " != u shape ", u.sizes());
  TORCH_CHECK(A.size(0) == d.dim, "selective_scan_cpu: A must be (dim, N), got ", A.sizes());
  TORCH_CHECK(d.G >= 1 && d.dim % d.G == 0, "selective_scan_cpu: dim ", d.dim,
              " is not divisible by the number of B/C groups ", d.G);
  const std::vector<int64_t> bc{d.batch, d.G, d.L, d.N};
  TORCH_CHECK(B.sizes() == at::IntArrayRef(bc), "selective_scan_cpu: B must be ", bc,
              " (batch, G, L, N), got ", B.sizes());
  TORCH_CHECK(C.sizes() == at::IntArrayRef(bc), "selective_scan_cpu: C must be ", bc,
              " (batch, G, L, N), got ", C.sizes());
  if (D) {
    check(*D, "D", 1);
    TORCH_CHECK(D->size(0) == d.dim, "selective_scan_cpu: D must be (dim,)");
  }
  if (bias) {
    check(*bias, "delta_bias", 1);
    TORCH_CHECK(bias->size(0) == d.dim, "selective_scan_cpu: delta_bias must be (dim,)");
  }
  if (z) {
    check(*z, "z", 3);
    TORCH_CHECK(z->sizes() == u.sizes(), "selective_scan_cpu: z shape ", z->sizes(),
                " != u shape ", u.sizes());
  }
  return d;
}

template <typename T>
ChannelIn channel_in(const Dims& d, int64_t c, const at::Tensor& u, const at::Tensor& delta,
                     const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                     const T* Dp, const T* zp, const T* biasp, bool softplus) {
  const int64_t b = c / d.dim, ch = c % d.dim;
  const int64_t grp = ch / (d.dim / d.G);
  const int64_t bc_off = (b * d.G + grp) * d.L * d.N;
  ChannelIn in;
  in.L = d.L;
  in.N = d.N;
  in.u = u.data_ptr<T>() + c * d.L;
  in.delta = delta.data_ptr<T>() + c * d.L;
  in.z = zp ? zp + c * d.L : nullptr;
  in.A = A.data_ptr<T>() + ch * d.N;
  in.B = B.data_ptr<T>() + bc_off;
  in.C = C.data_ptr<T>() + bc_off;
  in.D = Dp ? static_cast<double>(Dp[ch]) : 0.0;
  in.bias = biasp ? static_cast<double>(biasp[ch]) : 0.0;
  in.has_D = Dp != nullptr;
  in.has_z = zp != nullptr;
  in.softplus = softplus;
  return in;
}

template <typename T>
const T* opt_ptr(const c10::optional<at::Tensor>& t) {
  return t ? t->data_ptr<T>() : nullptr;
}

// ---------------------------------------------------------------------------------------

// A (dim, N) and B / C (batch, G, L, N) with the state dimension zero-padded to 16 * nb
// for the vector path (nb = 0: unchanged).
struct StateInputs {
  at::Tensor A, B, C;
  Dims d;  // d.N is the padded size
};

StateInputs pad_state(const Dims& d, const at::Tensor& A, const at::Tensor& B,
                      const at::Tensor& C, int64_t nb) {
  StateInputs s{A, B, C, d};
  const int64_t pad = nb > 0 ? 16 * nb - d.N : 0;
  if (pad > 0) {
    s.A = at::constant_pad_nd(A, {0, pad});
    s.B = at::constant_pad_nd(B, {0, pad});
    s.C = at::constant_pad_nd(C, {0, pad});
    s.d.N += pad;
  }
  return s;
}

at::Tensor selective_scan_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                              const at::Tensor& B, const at::Tensor& C,
                              const c10::optional<at::Tensor>& D,
                              const c10::optional<at::Tensor>& z,
                              const c10::optional<at::Tensor>& delta_bias, bool delta_softplus) {
  const Dims d0 = check_inputs(u, delta, A, B, C, D, z, delta_bias);
  at::Tensor out = at::empty_like(u);  // (batch, dim, L)
  if (u.numel() == 0) return out;
  const int64_t nb = vec_blocks(u.scalar_type(), d0.N);
  const StateInputs st = pad_state(d0, A, B, C, nb);
  const Dims& d = st.d;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_fwd", [&] {
    const scalar_t* Dp = opt_ptr<scalar_t>(D);
    const scalar_t* zp = opt_ptr<scalar_t>(z);
    const scalar_t* bp = opt_ptr<scalar_t>(delta_bias);
    scalar_t* outp = out.data_ptr<scalar_t>();
    const int64_t Lp = (d.L + 15) / 16 * 16;
    // Tasks of `per_task` channels; small problems end up as one task on this thread.
    const int64_t channels = d.batch * d.dim;
    const int64_t per_task = std::max<int64_t>(
        {int64_t(1), kMinParallelWork / (d.L * d.N),
         channels / (16 * static_cast<int64_t>(at::get_num_threads()))});
    const int64_t ntasks = (channels + per_task - 1) / per_task;
    parallel_tasks(ntasks, [&](int64_t k) {
      AlignedWork<scalar_t> work(kPair * 2 * Lp + d.N);
      const int64_t end = std::min(channels, (k + 1) * per_task);
      for (int64_t c = k * per_task; c < end;) {
        // Two consecutive channels of the same slice go together (vector path).
        ChannelIn in[kPair];
        scalar_t* out_ptr[kPair];
        int count = 0;
        for (; count < kPair && c + count < end; ++count) {
          in[count] = channel_in<scalar_t>(d, c + count, u, delta, st.A, st.B, st.C, Dp, zp, bp,
                                           delta_softplus);
          out_ptr[count] = outp + (c + count) * d.L;
          if (count > 0 && in[count].B != in[0].B) break;
        }
        fwd_dispatch(nb, count, in, out_ptr, work.ptr);
        c += count;
      }
    });
  });
  return out;
}

// Returns du, ddelta, dA, dB, dC (B/C layout (batch, G, L, N)), dD, dz, ddelta_bias; the last
// three are undefined (None) when the matching input is absent.
std::vector<at::Tensor> selective_scan_bwd(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
    const c10::optional<at::Tensor>& delta_bias, const at::Tensor& dout, bool delta_softplus) {
  const Dims d0 = check_inputs(u, delta, A, B, C, D, z, delta_bias);
  TORCH_CHECK(dout.sizes() == u.sizes() && dout.scalar_type() == u.scalar_type() &&
                  dout.is_contiguous() && dout.device().is_cpu(),
              "selective_scan_cpu: dout must be a contiguous CPU tensor like u");
  const int64_t nb = vec_blocks(u.scalar_type(), d0.N);
  const StateInputs st = pad_state(d0, A, B, C, nb);
  const Dims& d = st.d;
  const auto opts = u.options();
  at::Tensor du = at::empty_like(u);
  at::Tensor ddelta = at::empty_like(u);
  at::Tensor dz = z ? at::empty_like(u) : at::Tensor();
  at::Tensor dB = at::zeros_like(st.B);
  at::Tensor dC = at::zeros_like(st.C);
  at::Tensor dA_part = at::zeros({d.batch, d.dim, d.N}, opts);   // per-batch shares
  at::Tensor dD_part = at::zeros({d.batch, d.dim}, opts);
  at::Tensor dbias_part = at::zeros({d.batch, d.dim}, opts);
  if (u.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_bwd", [&] {
      const scalar_t* Dp = opt_ptr<scalar_t>(D);
      const scalar_t* zp = opt_ptr<scalar_t>(z);
      const scalar_t* bp = opt_ptr<scalar_t>(delta_bias);
      const int64_t per_group = d.dim / d.G;
      const int64_t LN = d.L * d.N;
      const int64_t Lp = (d.L + 15) / 16 * 16;
      const int64_t work_size = std::max<int64_t>(
          4 * Lp + (2 * d.L + 1) * d.N + 2 * d.N,
          kPair * ((bwd_vec_work(d.L, d.N) + 15) / 16 * 16));
      // Tasks = (batch, group) slices x chunks of their channels, each chunk with its own
      // dB / dC partial sums; about 4 tasks per thread so the dynamic queue can balance
      // them.  The task that finishes a slice last sums its partials in chunk order, so the
      // whole backward is one parallel region and the result is deterministic.
      const int64_t nslices = d.batch * d.G;
      const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
      const int64_t cps = std::max<int64_t>(1, std::min<int64_t>(
          {(want + nslices - 1) / nslices, per_group,
           per_group * d.L * d.N / kMinParallelWork}));  // chunks per slice
      const int64_t ntasks = nslices * cps;
      std::vector<scalar_t> partial(static_cast<size_t>(ntasks) * 2 * LN);  // zeroed
      std::unique_ptr<std::atomic<int64_t>[]> left(new std::atomic<int64_t>[nslices]);
      for (int64_t i = 0; i < nslices; ++i) left[i].store(cps);
      parallel_tasks(ntasks, [&](int64_t task) {
        const int64_t slice = task / cps, k = task % cps;
        const int64_t c0 = (slice / d.G) * d.dim + (slice % d.G) * per_group;
        const int64_t lo = c0 + per_group * k / cps;
        const int64_t hi = c0 + per_group * (k + 1) / cps;
        scalar_t* pB = partial.data() + task * 2 * LN;
        scalar_t* pC = pB + LN;
        AlignedWork<scalar_t> work(work_size);
        for (int64_t c = lo; c < hi;) {
          const int count = static_cast<int>(std::min<int64_t>(kPair, hi - c));  // same slice
          ChannelIn in[kPair];
          ChannelGrad gr[kPair];
          for (int i = 0; i < count; ++i) {
            const int64_t ci = c + i;
            in[i] = channel_in<scalar_t>(d, ci, u, delta, st.A, st.B, st.C, Dp, zp, bp,
                                         delta_softplus);
            gr[i].dout = dout.data_ptr<scalar_t>() + ci * d.L;
            gr[i].du = du.data_ptr<scalar_t>() + ci * d.L;
            gr[i].ddelta = ddelta.data_ptr<scalar_t>() + ci * d.L;
            gr[i].dz = zp ? dz.data_ptr<scalar_t>() + ci * d.L : nullptr;
            gr[i].dA = dA_part.data_ptr<scalar_t>() + ci * d.N;
            gr[i].dB = pB;
            gr[i].dC = pC;
          }
          bwd_dispatch(nb, count, in, gr, work.ptr);
          for (int i = 0; i < count; ++i) {
            dD_part.data_ptr<scalar_t>()[c + i] = static_cast<scalar_t>(gr[i].dD);
            dbias_part.data_ptr<scalar_t>()[c + i] = static_cast<scalar_t>(gr[i].dbias);
          }
          c += count;
        }
        if (left[slice].fetch_sub(1) == 1) {  // last chunk of this slice: reduce it
          scalar_t* dBs = dB.data_ptr<scalar_t>() + slice * LN;
          scalar_t* dCs = dC.data_ptr<scalar_t>() + slice * LN;
          for (int64_t j = 0; j < cps; ++j) {
            const scalar_t* qB = partial.data() + (slice * cps + j) * 2 * LN;
            const scalar_t* qC = qB + LN;
            for (int64_t i = 0; i < LN; ++i) {
              dBs[i] += qB[i];
              dCs[i] += qC[i];
            }
          }
        }
      });
    });
  }
  const int64_t N = d0.N;
  at::Tensor dA = dA_part.sum(0).narrow(1, 0, N);  // (dim, N)
  at::Tensor dD = D ? dD_part.sum(0) : at::Tensor();
  at::Tensor dbias = delta_bias ? dbias_part.sum(0) : at::Tensor();
  return {du, ddelta, dA, dB.narrow(3, 0, N), dC.narrow(3, 0, N), dD, dz, dbias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmglobalmamba CPU kernels: selective scan forward and backward, channels-last "
            "mixer forward";
  m.def("selective_scan_fwd", &selective_scan_fwd,
        "Selective scan forward. u, delta, z: (batch, dim, L); A: (dim, N); "
        "B, C: (batch, G, L, N); D, delta_bias: (dim,). Returns out (batch, dim, L).",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"),
        py::arg("D") = py::none(), py::arg("z") = py::none(),
        py::arg("delta_bias") = py::none(), py::arg("delta_softplus") = false);
  m.def("selective_scan_bwd", &selective_scan_bwd,
        "Selective scan backward. Returns [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias] "
        "(dB, dC in the (batch, G, L, N) layout; absent inputs give None).",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"),
        py::arg("D"), py::arg("z"), py::arg("delta_bias"), py::arg("dout"),
        py::arg("delta_softplus"));
  m.def("selective_scan_fwd_cl", &selective_scan_fwd_cl,
        "Selective scan forward, channels last. u, delta, z: (batch, L, dim); B, C: "
        "(batch, L, N), stride 1 along the last dimension; A: (dim, N); D, delta_bias: "
        "(dim,); with delta_proj_weight (dim, R), delta is dt (batch, L, R) and "
        "dt @ delta_proj_weight^T is used. Returns out (batch, L, dim).",
        py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"),
        py::arg("D") = py::none(), py::arg("z") = py::none(),
        py::arg("delta_bias") = py::none(), py::arg("delta_softplus") = false,
        py::arg("delta_proj_weight") = py::none());
  m.def("selective_scan_cl_uses_avx512", &selective_scan_cl_uses_avx512,
        "Whether the channels-last scan runs its AVX-512 code here (set "
        "MMGLOBALMAMBA_CPU_NO_AVX512=1 to take the portable vector code).");
  m.def("causal_conv1d_fwd_cl", &causal_conv1d_fwd_cl,
        "Depthwise causal conv1d (+ SiLU), channels last: x (batch, L, dim), weight "
        "(dim, width), bias (dim,) or None. Returns (batch, L, dim).",
        py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("silu") = false);
}
