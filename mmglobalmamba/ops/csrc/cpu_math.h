// Elementwise math of the mixer kernels (mixer_cpu.cpp): branch-free float versions that
// `omp simd` loops vectorize, libm for double (it serves gradcheck-sized problems), and the
// 8-lane vector types the kernels run on.  Everything is inline, so each ISA clone of a
// kernel (MGM_CLONES) compiles its own copy.
#pragma once

#include <cmath>
#include <cstdint>

namespace mgm {

// Hot loops are compiled for the x86-64 ISA levels v4 (AVX-512), v3 (AVX2 + FMA) and the
// baseline; the dynamic loader picks one at run time (setup.py compiles without
// -march=native, with -ffp-contract=fast so that a * b + c becomes an FMA).  Clones take
// and return no vectors by value (GCC 12 miscompiles that).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MGM_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define MGM_V4 __attribute__((target("arch=x86-64-v4")))  // the AVX-512 clone alone
inline bool mgm_has_v4() { return __builtin_cpu_supports("x86-64-v4"); }
#else
#define MGM_CLONES
#define MGM_V4
inline bool mgm_has_v4() { return false; }
#endif
#define MGM_INLINE inline __attribute__((always_inline))


// ---------------------------------------------------------------------------------------
// 8-lane vectors (GCC / Clang vector extensions), one lane per channel: a ymm register in
// the AVX2 and AVX-512 clones.  (16-lane vectors are lowered lane by lane on AVX2 for
// compares and broadcasts, several times slower.)
constexpr int64_t kLanes = 8;
template <typename T> struct VT;
template <> struct VT<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef float U __attribute__((vector_size(32), aligned(4), may_alias));
};
template <> struct VT<double> {
  typedef double V __attribute__((vector_size(64)));
  typedef double U __attribute__((vector_size(64), aligned(8), may_alias));
};
template <typename T> using Vec = typename VT<T>::V;
typedef int32_t v8i __attribute__((vector_size(32)));

template <typename T> MGM_INLINE Vec<T> splat(T s) { return Vec<T>{} + s; }
template <typename T> MGM_INLINE Vec<T> ld(const T* p) {
  return *reinterpret_cast<const typename VT<T>::U*>(p);
}
template <typename T> MGM_INLINE void st(T* p, Vec<T> v) {
  *reinterpret_cast<typename VT<T>::U*>(p) = v;
}
// cw channels (kFull: all kLanes) from p, cs elements apart; the other lanes are 0.
template <typename T, bool kFull> MGM_INLINE Vec<T> ldn(const T* p, int64_t cw,
                                                        int64_t cs = 1) {
  if (kFull && cs == 1) return ld(p);
  Vec<T> v = {};
  for (int64_t i = 0; i < (kFull ? kLanes : cw); ++i) v[i] = p[i * cs];
  return v;
}
template <typename T, bool kFull> MGM_INLINE void stn(T* p, Vec<T> v, int64_t cw) {
  if (kFull) return st(p, v);
  for (int64_t i = 0; i < cw; ++i) p[i] = v[i];
}

// exp(x) on float lanes: x = k ln2 + r, |r| <= ln2 / 2, by Cody-Waite (k ln2 in two parts,
// so r carries no rounding bias that would add up over the steps of a scan), exp(r) =
// 1 + r + r^2 q(r) with q a cubic fitted for relative error (max 1.8e-7), 2^k in the
// exponent bits; x clamped to [-87, 88] (no denormals, no overflow).
template <typename V = Vec<float>> MGM_INLINE V expv(V x) {  // 8 or 16 lanes
  typedef int32_t VI __attribute__((vector_size(sizeof(V))));
  const V lo = V{} - 87.0f, hi = V{} + 88.0f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  V kf = x * 1.44269504088896341f + shifter;
  const VI e = (reinterpret_cast<VI>(kf) - (0x4B400000 - 127)) << 23;
  kf = kf - shifter;
  const V r = (x - kf * 0.693359375f) + kf * 2.12194440e-4f;
  V p = V{} + 8.3125252e-3f;
  p = p * r + 4.1890115e-2f;
  p = p * r + 1.6667114e-1f;
  p = p * r + 4.9999231e-1f;
  p = p * r * r + r + 1.0f;
  return p * reinterpret_cast<V>(e);
}
MGM_INLINE Vec<double> expv(Vec<double> x) {
  for (int i = 0; i < kLanes; ++i) x[i] = std::exp(x[i]);
  return x;
}

// 2^x on 8 or 16 float lanes, for the scan's decays exp(dt A) = 2^(dt A log2 e): x = k + r,
// |r| <= 1/2, r exact (no Cody-Waite split needed), 2^r = 1 + r p(r), p a quartic fitted
// for relative error (max 2.0e-7, mean -1.3e-8 in float32, about that of expv); x clamped
// to [-126, 127] (no denormals, no inf).  kNonPos: the caller guarantees x <= 0 (dt >= 0,
// A <= 0; a NaN in dt reaches the state through dt u B anyway), so the upper clamp is left
// out and 2^k goes into the exponent bits by an integer add instead of a multiply.
template <bool kNonPos = false, typename V = Vec<float>> MGM_INLINE V exp2v(V x) {
  typedef uint32_t VU __attribute__((vector_size(sizeof(V))));
  const V lo = V{} - 126.0f, hi = V{} + 127.0f;
  x = x < lo ? lo : x;
  if (!kNonPos) x = x > hi ? hi : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const V kf = x + shifter, r = x - (kf - shifter);
  V p = V{} + 1.320300042e-3f;
  p = p * r + 9.674949571e-3f;
  p = p * r + 5.551046878e-2f;
  p = p * r + 2.402219921e-1f;
  p = p * r + 6.931467056e-1f;
  p = p * r + 1.0f;
  const VU kb = reinterpret_cast<VU>(kf);
  if (kNonPos) return reinterpret_cast<V>(reinterpret_cast<VU>(p) + (kb << 23));  // k << 23
  return p * reinterpret_cast<V>((kb - (0x4B400000 - 127)) << 23);                  // 2^k
}
template <bool kNonPos = false> MGM_INLINE Vec<double> exp2v(Vec<double> x) {
  for (int i = 0; i < kLanes; ++i) x[i] = std::exp2(x[i]);
  return x;
}

// log(1 + e) for e in [0, 1]: the Cephes logf polynomial on m in [sqrt(1/2), sqrt(2)) with
// 1 + e = m 2^k for y = fl(1 + e), plus log(1 + c / y) ~ c / y for the rounding error
// c = e - (y - 1) (exact, |c| <= 2^-24), which keeps tiny e exact.  1 / y ~ 1.5 - y / 2
// (exact at y = 1 and 2, within 12% between: an error below 1e-8 on the result), so no
// division.
template <typename V> MGM_INLINE V log1p_unit(V e) {
  constexpr float kP[9] = {7.0376836292e-2f, -1.1514610310e-1f, 1.1676998740e-1f,
                           -1.2420140846e-1f, 1.4249322787e-1f, -1.6668057665e-1f,
                           2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f};
  const V one = V{} + 1.0f, zero = V{}, y = one + e;  // y in [1, 2]
  const auto big = y > 1.41421356f;
  const V x = (big ? y * 0.5f : y) - 1.0f, k = big ? one : zero, z = x * x;
  V p = V{} + kP[0];
  for (int i = 1; i < 9; ++i) p = p * x + kP[i];
  const V l = x + (x * z * p + k * -2.12194440e-4f - 0.5f * z) + k * 0.693359375f;
  return l + (e - (y - 1.0f)) * (1.5f - 0.5f * y);
}

// softplus (beta 1, threshold 20 as torch.nn.functional.softplus) and sigmoid per lane.
template <typename V = Vec<float>> MGM_INLINE V softplusv(V x) {
  const V zero = {};
  const V v = (x > zero ? x : zero) + log1p_unit(expv(x < zero ? x : -x));
  return x > 20.0f ? x : v;
}
template <typename V = Vec<float>> MGM_INLINE V sigmoidv(V x) {
  return 1.0f / (1.0f + expv(-x));
}
MGM_INLINE Vec<double> softplusv(Vec<double> x) {
  for (int i = 0; i < kLanes; ++i) x[i] = x[i] > 20.0 ? x[i] : std::log1p(std::exp(x[i]));
  return x;
}
MGM_INLINE Vec<double> sigmoidv(Vec<double> x) {
  for (int i = 0; i < kLanes; ++i) x[i] = 1.0 / (1.0 + std::exp(-x[i]));
  return x;
}

// Lane j of the result = the sum of the lanes of r[j] (j < 8): a transpose-and-add tree
// of pairwise shuffles instead of eight horizontal sums.
template <typename V> MGM_INLINE V lane_sums(const V* r) {
  V r1[4], r2[2];
  for (int i = 0; i < 4; ++i) {
    const V a = r[2 * i], b = r[2 * i + 1];
    r1[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11) +
            __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
  }
  for (int i = 0; i < 2; ++i) {
    const V a = r1[2 * i], b = r1[2 * i + 1];
    r2[i] = __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13) +
            __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
  }
  const V a = r2[0], b = r2[1];  // lanes: r0 r0 r2 r2 r1 r1 r3 r3 (and r4..r7 in b)
  return __builtin_shufflevector(a, b, 0, 4, 2, 6, 8, 12, 10, 14) +
         __builtin_shufflevector(a, b, 1, 5, 3, 7, 9, 13, 11, 15);
}

}  // namespace mgm
