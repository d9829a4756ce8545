// Elementwise float math and 16-lane vector helpers shared by the CPU kernels
// (selective_scan_cpu.cpp, channels_last_cpu.cpp). Everything is inline: each ISA clone of a
// kernel (MGM_CLONES) compiles its own copy.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mgm {

// Hot loops are compiled for AVX-512, AVX2 and the baseline ISA; the dynamic loader
// picks the best one at run time (setup.py compiles without -march=native).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MGM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MGM_CLONES
#endif
#define MGM_INLINE inline __attribute__((always_inline))

#if defined(__has_builtin)
#if __has_builtin(__builtin_bit_cast) && __has_builtin(__builtin_shufflevector)
#define MGM_MODERN_BUILTINS 1
#endif
#endif

// Bit casts that the vectorizer understands (memcpy through a local blocks it).
#ifdef MGM_MODERN_BUILTINS
MGM_INLINE int32_t as_int(float x) { return __builtin_bit_cast(int32_t, x); }
MGM_INLINE float as_float(int32_t x) { return __builtin_bit_cast(float, x); }
#else
MGM_INLINE int32_t as_int(float x) { int32_t i; std::memcpy(&i, &x, 4); return i; }
MGM_INLINE float as_float(int32_t i) { float x; std::memcpy(&x, &i, 4); return x; }
#endif
// Branch-free min / max / abs (std:: versions may stay out-of-line in the ISA clones).
MGM_INLINE float fmin_(float a, float b) { return a < b ? a : b; }
MGM_INLINE float fmax_(float a, float b) { return a > b ? a : b; }
MGM_INLINE float fabs_(float a) { return a < 0.0f ? -a : a; }

// ---------------------------------------------------------------------------------------
// Elementwise math.  The float versions are branch-free so that loops over them vectorize;
// the double versions use libm (they only serve gradcheck-sized problems).

// exp(x) for float: x = k ln2 + r with |r| <= ln2 / 2, exp(r) = 1 + r + r^2 q(r) with q a
// cubic fitted for relative error (max 1.8e-7, ~3 ulp, over [-87, 88]), 2^k assembled in
// the exponent bits.  x is clamped to [-87, 88]: below -87 the result is exp(-87) ~ 1.6e-38
// instead of a denormal or 0, which no sum in the kernels can tell apart.
MGM_INLINE float fast_exp(float x) {
  x = fmin_(fmax_(x, -87.0f), 88.0f);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float kf = x * 1.44269504088896341f + shifter;
  const int32_t ki = as_int(kf) - 0x4B400000;  // the integer k sits in the low mantissa bits
  kf -= shifter;
  float r = x - kf * 0.693359375f;
  r = r + kf * 2.12194440e-4f;
  float p = 8.3125252e-3f;
  p = p * r + 4.1890115e-2f;
  p = p * r + 1.6667114e-1f;
  p = p * r + 4.9999231e-1f;
  p = p * r * r + r + 1.0f;
  return p * as_float((ki + 127) << 23);
}
MGM_INLINE double fast_exp(double x) { return std::exp(x); }

// Polynomial coefficients shared by the scalar and vector versions, highest degree first.
// log(m) = x - x^2 / 2 + x^3 P(x) with x = m - 1, m in [sqrt(1/2), sqrt(2)) (Cephes logf).
constexpr float kLogfPoly[9] = {7.0376836292e-2f, -1.1514610310e-1f, 1.1676998740e-1f,
                                -1.2420140846e-1f, 1.4249322787e-1f, -1.6668057665e-1f,
                                2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f};
// 2^r for |r| <= 1/2, fitted for relative error (max 7.5e-8 in exact arithmetic).
constexpr float kExp2Poly[6] = {1.3276471e-3f, 9.6755410e-3f, 5.5507131e-2f,
                                2.4022120e-1f, 6.9314694e-1f, 1.0f};

// log(1 + e) for e in [0, 1], float: log(m 2^k) with m in [sqrt(1/2), sqrt(2)) by the Cephes
// logf polynomial, then corrected by e / ((1 + e) - 1) so that tiny e keeps full precision.
MGM_INLINE float log1p_unit(float e) {
  const float y = 1.0f + e;  // in [1, 2]
  const int32_t bits = as_int(y);
  // Split y = m * 2^k with m in [sqrt(1/2), sqrt(2)): here k is 0 or 1.
  const bool big = y > 1.41421356f;
  const int32_t mbits = big ? bits - (1 << 23) : bits;
  const float m = as_float(mbits);
  const float k = big ? 1.0f : 0.0f;
  const float x = m - 1.0f;
  const float z = x * x;
  float p = kLogfPoly[0];
  for (int i = 1; i < 9; ++i) p = p * x + kLogfPoly[i];
  float l = x * z * p;
  l += k * -2.12194440e-4f;
  l -= 0.5f * z;
  l = x + l;
  l += k * 0.693359375f;
  // Goldberg's correction: log1p(e) = log(y) * e / (y - 1), exact when y - 1 == e.
  const float ym1 = y - 1.0f;
  return ym1 == 0.0f ? e : l * (e / ym1);
}

MGM_INLINE float softplus(float x) {
  // Same threshold as torch.nn.functional.softplus (beta 1, threshold 20).
  const float v = fmax_(x, 0.0f) + log1p_unit(fast_exp(-fabs_(x)));
  return x > 20.0f ? x : v;
}
MGM_INLINE double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

MGM_INLINE float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }
MGM_INLINE double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// ---------------------------------------------------------------------------------------
// 16-lane float vectors (GCC >= 12 / Clang vector extensions), lowered to one zmm, two ymm
// or four xmm registers by each ISA clone.  MGM_HAVE_VEC is 0 where they are unavailable.
#if defined(__GNUC__) && defined(MGM_MODERN_BUILTINS) && !defined(MGM_DISABLE_VEC)
#define MGM_HAVE_VEC 1
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef int32_t v16i __attribute__((vector_size(64)));

MGM_INLINE v16 splat(float s) { return v16{} + s; }
MGM_INLINE v16 load16(const float* p) { return *reinterpret_cast<const v16u*>(p); }
MGM_INLINE void store16(float* p, v16 v) { *reinterpret_cast<v16u*>(p) = v; }

// Same algorithm as fast_exp(float), on 16 lanes.
MGM_INLINE v16 fast_exp16(v16 x) {
  const v16 lo = splat(-87.0f), hi = splat(88.0f);
  v16 xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  v16 kf = xc * 1.44269504088896341f + 12582912.0f;
  const v16i ki = reinterpret_cast<v16i>(kf) - 0x4B400000;
  kf = kf - 12582912.0f;
  v16 r = xc - kf * 0.693359375f;
  r = r + kf * 2.12194440e-4f;
  v16 p = splat(8.3125252e-3f);
  p = p * r + 4.1890115e-2f;
  p = p * r + 1.6667114e-1f;
  p = p * r + 4.9999231e-1f;
  p = p * r * r + r + 1.0f;
  return p * reinterpret_cast<v16>((ki + 127) << 23);
}

// 2^x on 16 lanes, for x already in log2 units (the channels-last scan folds log2(e) into
// A): x = k + r with |r| <= 1/2, 2^r by a quintic fitted for relative error (max 2.3e-7 in
// float32), 2^k in the exponent bits.  x is clamped to [-125, 127]; kNonPositive skips the
// upper clamp when the caller guarantees x <= 0.  About 12 vector operations, against 17
// for fast_exp16, whose Cody-Waite reduction is only needed when x is in natural units.
template <bool kNonPositive = false>
MGM_INLINE v16 fast_exp2_16(v16 x) {
  const v16 lo = splat(-125.0f);
  x = x < lo ? lo : x;
  if (!kNonPositive) {
    const v16 hi = splat(127.0f);
    x = x > hi ? hi : x;
  }
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer k
  const v16 kf = x + shifter;
  // The integer k sits in the low mantissa bits; the constant also adds the bias 127.
  const v16i e = (reinterpret_cast<v16i>(kf) - (0x4B400000 - 127)) << 23;
  const v16 r = x - (kf - shifter);
  v16 p = splat(kExp2Poly[0]);
  for (int i = 1; i < 6; ++i) p = p * r + kExp2Poly[i];
  return p * reinterpret_cast<v16>(e);
}
#else
#define MGM_HAVE_VEC 0
#endif

}  // namespace mgm
