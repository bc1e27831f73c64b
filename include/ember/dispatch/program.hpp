// The elementwise program: an expression lowered to a compact postfix program over the shared
// op enum (expr/op.hpp), with its leaves' pointers and strides (Note [Elementwise program]).
// The CUDA backend runs it with one generic fused kernel; the same interpreter compiles for the
// host, where the tests check it against the SIMD evaluator.
//
// This header is self-contained (no Hana, no xsimd, no other ember header): nvcc compiles it
// into cuda/'s kernels, and it is the whole interface between the two compilers.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define EMBER_HD __host__ __device__ __forceinline__
#define EMBER_UNROLL _Pragma("unroll")
#else
#define EMBER_HD inline
#define EMBER_UNROLL
#endif

namespace ember::dispatch {

// Note [Elementwise program]: an expression tree such as `exp(a * 2) + b` becomes the postfix
// code `leaf0 scalar(2) mul exp leaf1 add`, run on a small value stack for every output element.
// Every value on the stack has one compute type (float when every node of the expression is
// f32 or bool; int64 when every node is an integer or bool; double otherwise), so the kernel is
// instantiated three times, not once per expression type: user code needs no nvcc. The op codes
// are the values of ember::op (the numbers are fixed: the enum is append-only); dtype codes are
// the values of ember::dtype. The program is passed to the kernel by value (kernel parameters
// live in constant memory), which bounds it: max_leaves tensors, max_code instructions, rank up
// to max_rank. Lowering checks every bound and says which was exceeded.
inline constexpr int max_rank = 8;
inline constexpr int max_leaves = 12;
inline constexpr int max_code = 64;
inline constexpr int max_stack = 16;

/// ember::dtype's codes, repeated here (dispatch/lower.hpp checks they agree).
namespace code {
inline constexpr std::uint8_t f32 = 0, f64 = 1, i32 = 2, i64 = 3, u8 = 4, boolean = 5, i8 = 8,
                              i16 = 9;
}  // namespace code

/// The compute type of a program's stack.
enum class compute : std::uint8_t { f32 = 0, f64 = 1, i64 = 2 };

struct leaf_ref {
  const void* data;                // the element at index 0 (storage offset applied)
  std::int64_t stride[max_rank];   // in elements, aligned to the output's shape (0: broadcast)
  std::uint8_t dtype;
};

struct instr {
  std::uint16_t op;     // an ember::op value
  std::uint8_t dtype;   // op::cast: the target dtype
  std::uint8_t leaf;    // op::leaf: the leaf's index
  double value;         // op::scalar: the constant
};

struct elementwise_program {
  std::int32_t rank = 0;
  std::int32_t n_leaves = 0;
  std::int32_t n_code = 0;
  compute ctype = compute::f32;
  std::uint8_t out_dtype = code::f32;
  bool flat = false;  // output and every leaf contiguous with the output's shape: offset == index
  std::int64_t numel = 0;
  std::int64_t shape[max_rank] = {};
  void* out = nullptr;
  std::int64_t out_stride[max_rank] = {};
  leaf_ref leaves[max_leaves] = {};
  instr code[max_code] = {};
};

/// A reduction over some dims of a strided tensor (Note [Device reductions]): every output
/// element combines the input elements that share its kept coordinates. The output is indexed
/// with the input's rank (out_stride is 0 on reduced dims).
enum class reduce_kind : std::uint8_t { sum = 0, prod = 1, max = 2, min = 3, argmax = 4, argmin = 5 };

struct reduce_problem {
  const void* in = nullptr;
  void* out = nullptr;          // T, or int64 for argmax/argmin
  std::uint8_t dtype = code::f32;
  reduce_kind kind = reduce_kind::sum;
  std::int32_t rank = 0;
  std::int64_t shape[max_rank] = {};
  std::int64_t in_stride[max_rank] = {};
  std::int64_t out_stride[max_rank] = {};
  bool reduced[max_rank] = {};
  std::int64_t outputs = 0;     // product of the kept extents
  std::int64_t count = 0;       // product of the reduced extents
};

/// A (strided, batched) matrix product C = alpha * A . B + beta * C on row-major views: A is
/// m x k with element (i, l) at a[i * a_rs + l * a_cs] (one of a_rs, a_cs is 1), likewise B
/// (k x n) and C (m x n, c_cs == 1); batch b adds b * stride_a/b/c (0: the same matrix).
struct gemm_problem {
  std::uint8_t dtype = code::f32;
  std::int64_t m = 0, n = 0, k = 0, batch = 1;
  double alpha = 1, beta = 0;
  const void* a = nullptr;
  std::int64_t a_rs = 0, a_cs = 1, stride_a = 0;
  const void* b = nullptr;
  std::int64_t b_rs = 0, b_cs = 1, stride_b = 0;
  void* c = nullptr;
  std::int64_t c_rs = 0, stride_c = 0;
};

/// Dropout of a contiguous tensor (Note [Device dropout]): element i is kept when word i % 4
/// of Philox4x32-10 block start + i / 4 under key seed is below threshold, and then scaled.
struct dropout_problem {
  const void* in = nullptr;
  void* out = nullptr;
  bool* keep = nullptr;
  std::int64_t n = 0;
  std::uint64_t seed = 0, start = 0, threshold = 0;
  double scale = 1;
  std::uint8_t dtype = code::f32;
};

// op values used by the interpreter (ember::op; checked against the enum in lower.hpp)
namespace opc {
enum : std::uint16_t {
  leaf = 0, scalar = 1,
  neg = 2, abs = 3, exp = 4, expm1 = 5, log = 6, log1p = 7, log2 = 8, sqrt = 9, rsqrt = 10,
  square = 11, sin = 12, cos = 13, tanh = 14, sigmoid = 15, relu = 16, gelu = 17, gelu_tanh = 18,
  silu = 19, softplus = 20, sign = 21, floor = 22, ceil = 23, round = 24, reciprocal = 25,
  erf = 26, logical_not = 27, gelu_tanh_grad = 28,
  add = 40, sub = 41, mul = 42, div = 43, pow = 44, maximum = 45, minimum = 46,
  eq = 47, ne = 48, lt = 49, le = 50, gt = 51, ge = 52, logical_and = 53, logical_or = 54,
  where = 60, clamp = 61, leaky_relu = 62, elu = 63, cast = 64,
};
}  // namespace opc

namespace detail {

// ---- math on the compute types (the C library's functions: CUDA provides them on device) ----
EMBER_HD float m_exp(float x) { return ::expf(x); }
EMBER_HD double m_exp(double x) { return ::exp(x); }
EMBER_HD float m_expm1(float x) { return ::expm1f(x); }
EMBER_HD double m_expm1(double x) { return ::expm1(x); }
EMBER_HD float m_log(float x) { return ::logf(x); }
EMBER_HD double m_log(double x) { return ::log(x); }
EMBER_HD float m_log1p(float x) { return ::log1pf(x); }
EMBER_HD double m_log1p(double x) { return ::log1p(x); }
EMBER_HD float m_log2(float x) { return ::log2f(x); }
EMBER_HD double m_log2(double x) { return ::log2(x); }
EMBER_HD float m_sqrt(float x) { return ::sqrtf(x); }
EMBER_HD double m_sqrt(double x) { return ::sqrt(x); }
EMBER_HD float m_sin(float x) { return ::sinf(x); }
EMBER_HD double m_sin(double x) { return ::sin(x); }
EMBER_HD float m_cos(float x) { return ::cosf(x); }
EMBER_HD double m_cos(double x) { return ::cos(x); }
EMBER_HD float m_tanh(float x) { return ::tanhf(x); }
EMBER_HD double m_tanh(double x) { return ::tanh(x); }
EMBER_HD float m_erf(float x) { return ::erff(x); }
EMBER_HD double m_erf(double x) { return ::erf(x); }
EMBER_HD float m_floor(float x) { return ::floorf(x); }
EMBER_HD double m_floor(double x) { return ::floor(x); }
EMBER_HD float m_ceil(float x) { return ::ceilf(x); }
EMBER_HD double m_ceil(double x) { return ::ceil(x); }
EMBER_HD float m_rint(float x) { return ::rintf(x); }  // half to even, as torch.round
EMBER_HD double m_rint(double x) { return ::rint(x); }
EMBER_HD float m_pow(float a, float b) { return ::powf(a, b); }
EMBER_HD double m_pow(double a, double b) { return ::pow(a, b); }
template <class C>
EMBER_HD bool m_isnan(C x) { return x != x; }

/// Element `off` of a leaf of dtype `dt`, converted to C (bool: 0 or 1).
template <class C>
EMBER_HD C load(std::uint8_t dt, const void* p, std::int64_t off) {
  switch (dt) {
    case code::f32: return static_cast<C>(static_cast<const float*>(p)[off]);
    case code::f64: return static_cast<C>(static_cast<const double*>(p)[off]);
    case code::i32: return static_cast<C>(static_cast<const std::int32_t*>(p)[off]);
    case code::i64: return static_cast<C>(static_cast<const std::int64_t*>(p)[off]);
    case code::u8: return static_cast<C>(static_cast<const std::uint8_t*>(p)[off]);
    case code::boolean: return static_cast<const bool*>(p)[off] ? C(1) : C(0);
    case code::i8: return static_cast<C>(static_cast<const std::int8_t*>(p)[off]);
    case code::i16: return static_cast<C>(static_cast<const std::int16_t*>(p)[off]);
    default: return C(0);  // lowering admits no other dtype
  }
}

/// Stores v, converted as ember::convert does (`!= 0` to bool, a C++ conversion otherwise).
template <class C>
EMBER_HD void store(std::uint8_t dt, void* p, std::int64_t off, C v) {
  switch (dt) {
    case code::f32: static_cast<float*>(p)[off] = static_cast<float>(v); break;
    case code::f64: static_cast<double*>(p)[off] = static_cast<double>(v); break;
    case code::i32: static_cast<std::int32_t*>(p)[off] = static_cast<std::int32_t>(v); break;
    case code::i64: static_cast<std::int64_t*>(p)[off] = static_cast<std::int64_t>(v); break;
    case code::u8: static_cast<std::uint8_t*>(p)[off] = static_cast<std::uint8_t>(v); break;
    case code::boolean: static_cast<bool*>(p)[off] = v != C(0); break;
    case code::i8: static_cast<std::int8_t*>(p)[off] = static_cast<std::int8_t>(v); break;
    case code::i16: static_cast<std::int16_t*>(p)[off] = static_cast<std::int16_t>(v); break;
    default: break;
  }
}

/// op::cast inside a program: the value as the target dtype would hold it, back in C.
template <class C>
EMBER_HD C cast_to(std::uint8_t dt, C v) {
  switch (dt) {
    case code::f32: return static_cast<C>(static_cast<float>(v));
    case code::f64: return static_cast<C>(static_cast<double>(v));
    case code::i32: return static_cast<C>(static_cast<std::int32_t>(v));
    case code::i64: return static_cast<C>(static_cast<std::int64_t>(v));
    case code::u8: return static_cast<C>(static_cast<std::uint8_t>(v));
    case code::boolean: return v != C(0) ? C(1) : C(0);
    case code::i8: return static_cast<C>(static_cast<std::int8_t>(v));
    case code::i16: return static_cast<C>(static_cast<std::int16_t>(v));
    default: return v;
  }
}

/// Applies `f` to each of the N lanes (unrolled: every index is a compile-time constant).
template <int N, class C, class F>
EMBER_HD void each(C (&x)[N], const F& f) {
  EMBER_UNROLL for (int j = 0; j < N; ++j) x[j] = f(x[j]);
}
template <int N, class C, class F>
EMBER_HD void each(C (&a)[N], const C (&b)[N], const F& f) {
  EMBER_UNROLL for (int j = 0; j < N; ++j) a[j] = f(a[j], b[j]);
}

/// x = o(x) on N lanes: one switch on the op for all of them.
template <class C, int N>
EMBER_HD void unary_op(std::uint16_t o, C (&x)[N]) {
  const C zero(0), one(1);
  switch (o) {
    case opc::neg: return each(x, [](C v) { return -v; });
    case opc::abs: return each(x, [zero](C v) { return v < zero ? -v : v; });
    case opc::square: return each(x, [](C v) { return v * v; });
    case opc::relu: return each(x, [zero](C v) { return v < zero ? zero : v; });  // NaN propagates
    case opc::sign:
      return each(x, [zero, one](C v) { return (v > zero ? one : zero) - (v < zero ? one : zero); });
    case opc::logical_not: return each(x, [zero, one](C v) { return v == zero ? one : zero; });
    default: break;
  }
  if constexpr (std::is_integral_v<C>) {  // int64: no other unary op is lowered
    return each(x, [zero](C) { return zero; });
  } else {
    switch (o) {
      case opc::exp: return each(x, [](C v) { return m_exp(v); });
      case opc::expm1: return each(x, [](C v) { return m_expm1(v); });
      case opc::log: return each(x, [](C v) { return m_log(v); });
      case opc::log1p: return each(x, [](C v) { return m_log1p(v); });
      case opc::log2: return each(x, [](C v) { return m_log2(v); });
      case opc::sqrt: return each(x, [](C v) { return m_sqrt(v); });
      case opc::rsqrt: return each(x, [one](C v) { return one / m_sqrt(v); });
      case opc::sin: return each(x, [](C v) { return m_sin(v); });
      case opc::cos: return each(x, [](C v) { return m_cos(v); });
      case opc::tanh: return each(x, [](C v) { return m_tanh(v); });
      case opc::sigmoid: return each(x, [one](C v) { return one / (one + m_exp(-v)); });
      case opc::gelu:
        return each(x, [one](C v) { return C(0.5) * v * (one + m_erf(v * C(0.70710678118654752440))); });
      case opc::gelu_tanh:
        return each(x, [one](C v) {
          const C k0 = C(0.7978845608028654), k1 = C(0.044715);
          return C(0.5) * v * (one + m_tanh(k0 * (v + k1 * v * v * v)));
        });
      case opc::gelu_tanh_grad:
        return each(x, [one](C v) {
          const C k = C(0.7978845608028654), c = C(0.044715), half = C(0.5);
          const C v2 = v * v;
          const C t = m_tanh(k * (v + c * (v2 * v)));
          return half * (one + t) + (half * k) * v * ((one - t * t) * (one + C(3 * 0.044715) * v2));
        });
      case opc::silu: return each(x, [one](C v) { return v / (one + m_exp(-v)); });
      case opc::softplus: return each(x, [](C v) { return v > C(20) ? v : m_log1p(m_exp(v)); });
      case opc::floor: return each(x, [](C v) { return m_floor(v); });
      case opc::ceil: return each(x, [](C v) { return m_ceil(v); });
      case opc::round: return each(x, [](C v) { return m_rint(v); });
      case opc::reciprocal: return each(x, [one](C v) { return one / v; });
      case opc::erf: return each(x, [](C v) { return m_erf(v); });
      default: return each(x, [zero](C) { return zero; });
    }
  }
}

/// a = o(a, b) on N lanes.
template <class C, int N>
EMBER_HD void binary_op(std::uint16_t o, C (&a)[N], const C (&b)[N]) {
  const C zero(0), one(1);
  switch (o) {
    case opc::add: return each(a, b, [](C x, C y) { return x + y; });
    case opc::sub: return each(a, b, [](C x, C y) { return x - y; });
    case opc::mul: return each(a, b, [](C x, C y) { return x * y; });
    case opc::maximum:  // NaN propagates
      return each(a, b, [](C x, C y) { return (x > y || m_isnan(x)) ? x : y; });
    case opc::minimum: return each(a, b, [](C x, C y) { return (x < y || m_isnan(x)) ? x : y; });
    case opc::eq: return each(a, b, [zero, one](C x, C y) { return x == y ? one : zero; });
    case opc::ne: return each(a, b, [zero, one](C x, C y) { return x == y ? zero : one; });
    case opc::lt: return each(a, b, [zero, one](C x, C y) { return x < y ? one : zero; });
    case opc::le: return each(a, b, [zero, one](C x, C y) { return x <= y ? one : zero; });
    case opc::gt: return each(a, b, [zero, one](C x, C y) { return x > y ? one : zero; });
    case opc::ge: return each(a, b, [zero, one](C x, C y) { return x >= y ? one : zero; });
    case opc::logical_and:
      return each(a, b, [zero, one](C x, C y) { return (x != zero && y != zero) ? one : zero; });
    case opc::logical_or:
      return each(a, b, [zero, one](C x, C y) { return (x != zero || y != zero) ? one : zero; });
    case opc::leaky_relu: return each(a, b, [zero](C x, C y) { return x > zero ? x : x * y; });
    default: break;
  }
  if constexpr (std::is_integral_v<C>) {
    if (o == opc::div)  // C++ division; no trap on a GPU
      return each(a, b, [zero](C x, C y) { return y == zero ? zero : x / y; });
    return each(a, b, [zero](C, C) { return zero; });
  } else {
    switch (o) {
      case opc::div: return each(a, b, [](C x, C y) { return x / y; });
      case opc::pow: return each(a, b, [](C x, C y) { return m_pow(x, y); });
      case opc::elu: return each(a, b, [zero](C x, C y) { return x > zero ? x : y * m_expm1(x); });
      default: return each(a, b, [zero](C, C) { return zero; });
    }
  }
}

/// The offset of element `i` (a row-major index over `shape`) in every leaf and the output.
struct offsets {
  std::int64_t leaf[max_leaves];
  std::int64_t out;
};

EMBER_HD void compute_offsets(const elementwise_program& p, std::int64_t i, offsets& o) {
  for (int k = 0; k < p.n_leaves; ++k) o.leaf[k] = 0;
  o.out = 0;
  for (int d = p.rank - 1; d >= 0; --d) {
    const std::int64_t n = p.shape[d];
    const std::int64_t c = i % n;
    i /= n;
    o.out += c * p.out_stride[d];
    for (int k = 0; k < p.n_leaves; ++k) o.leaf[k] += c * p.leaves[k].stride[d];
  }
}

}  // namespace detail

/// The most values p's stack holds at once.
EMBER_HD int program_depth(const elementwise_program& p) {
  int sp = 0, most = 0;
  for (int pc = 0; pc < p.n_code; ++pc) {
    const std::uint16_t o = p.code[pc].op;
    if (o == opc::leaf || o == opc::scalar) ++sp;
    else if (o == opc::where || o == opc::clamp) sp -= 2;
    else if (o >= 40 && o != opc::cast) --sp;  // binary ops
    most = sp > most ? sp : most;
  }
  return most;
}

/// The register stack's slot count for a program of depth d: 4, 8 or 16 (max_stack).
EMBER_HD constexpr int stack_slots(int depth) { return depth <= 4 ? 4 : depth <= 8 ? 8 : 16; }

// Note [Register stack]: a GPU thread's array indexed at run time lives in local memory (a
// stack frame in L1 that spills to L2), which an interpreter with `stack[sp++]` would touch on
// every push and pop. Here the top of the stack is always slot 0, and every slot index is a
// compile-time constant: a push shifts the S slots down one; an op of arity n leaves its result
// in slot n - 1 and shifts the slots up n - 1 (unrolled register moves, no memory). S is the
// program's depth rounded up to 4, 8 or 16 (stack_slots; the kernel is instantiated for each),
// so a shallow program such as E1 (depth 3) moves 4 slots.
namespace detail {

template <int M, int S, int N, class C>
EMBER_HD void pop(C (&r)[S][N]) {
  EMBER_UNROLL for (int s = 0; s + M < S; ++s) {
    EMBER_UNROLL for (int j = 0; j < N; ++j) r[s][j] = r[s + M][j];
  }
}

template <int S, int N, class C>
EMBER_HD void push(C (&r)[S][N]) {
  EMBER_UNROLL for (int s = S - 1; s > 0; --s) {
    EMBER_UNROLL for (int j = 0; j < N; ++j) r[s][j] = r[s - 1][j];
  }
}

}  // namespace detail

/// Runs p for N elements at once on a stack of S slots of N lanes (Note [Register stack],
/// Note [Wide interpretation]); `leaf(k, v)` sets v[j] to lane j's value of leaf k. Leaves
/// the N values, in compute type C, in `result`. p's depth must be at most S.
template <class C, int S, int N, class Leaf>
EMBER_HD void run_program(const elementwise_program& p, const Leaf& leaf, C (&result)[N]) {
  C r[S][N] = {};
  for (int pc = 0; pc < p.n_code; ++pc) {
    const instr in = p.code[pc];
    switch (in.op) {
      case opc::leaf:
        detail::push(r);
        leaf(in.leaf, r[0]);
        break;
      case opc::scalar:
        detail::push(r);
        EMBER_UNROLL for (int j = 0; j < N; ++j) r[0][j] = static_cast<C>(in.value);
        break;
      case opc::cast: detail::each(r[0], [&in](C v) { return detail::cast_to(in.dtype, v); }); break;
      case opc::where:  // (condition, a, b) at slots 2, 1, 0
        EMBER_UNROLL for (int j = 0; j < N; ++j) r[2][j] = r[2][j] != C(0) ? r[1][j] : r[0][j];
        detail::pop<2>(r);
        break;
      case opc::clamp:  // (x, lo, hi) at slots 2, 1, 0; NaN propagates
        EMBER_UNROLL for (int j = 0; j < N; ++j) {
          const C x = r[2][j], lo = r[1][j], hi = r[0][j];
          r[2][j] = x < lo ? lo : (x > hi ? hi : x);
        }
        detail::pop<2>(r);
        break;
      default:
        if (in.op < 40) {
          detail::unary_op(in.op, r[0]);
        } else {
          detail::binary_op(in.op, r[1], r[0]);
          detail::pop<1>(r);
        }
    }
  }
  EMBER_UNROLL for (int j = 0; j < N; ++j) result[j] = r[0][j];
}

/// Elements per thread of the wide path (Note [Wide interpretation]).
inline constexpr int wide = 4;

/// Leaves a flat program loads before it runs (Note [Leaf prefetch]).
inline constexpr int prefetched_leaves = 4;

namespace detail {

/// Lane j of leaf k at element offset(j), in C.
template <class C, int N, class Offset>
EMBER_HD void load_lanes(const leaf_ref& l, const Offset& offset, C (&v)[N]) {
  EMBER_UNROLL for (int j = 0; j < N; ++j) v[j] = load<C>(l.dtype, l.data, offset(j));
}

template <int N, class C>
EMBER_HD void copy_lanes(const C (&from)[N], C (&to)[N]) {
  EMBER_UNROLL for (int j = 0; j < N; ++j) to[j] = from[j];
}

}  // namespace detail

/// Note [Wide interpretation]: for flat programs each thread runs the program once for N
/// elements, on a stack of N-lane values: the instruction fetch and the switch on the op are
/// paid once per N elements instead of once per element. Lanes: elements first + j * step.
/// Programs deeper than 8 run one lane (16 slots of N lanes would not fit in registers).
///
/// Note [Leaf prefetch]: a leaf's loads are issued when the program reaches it, and the
/// instructions before it wait for the previous leaf's: a thread would have one leaf's N loads
/// in flight at a time, too few to cover DRAM latency. A flat program's first
/// prefetched_leaves leaves are loaded for all lanes up front (registers, indexed by constants;
/// the leaf op picks one with a switch), so they are in flight together, as in a compiled
/// kernel. Reading every input before the output is stored is what the interpreter did
/// anyway, so an output that aliases an input is still read before it is written.
template <int S>
inline constexpr int flat_lanes = S <= 8 ? wide : 1;

template <class C, int S>
EMBER_HD void run_flat(const elementwise_program& p, std::int64_t first, std::int64_t step) {
  constexpr int n = flat_lanes<S>;
  const auto offset = [first, step](int j) { return first + j * step; };
  C pre[prefetched_leaves][n];
  EMBER_UNROLL for (int k = 0; k < prefetched_leaves; ++k) {
    if (k < p.n_leaves) detail::load_lanes(p.leaves[k], offset, pre[k]);
  }
  const auto leaf = [&](int k, C (&v)[n]) {
    static_assert(prefetched_leaves == 4);
    switch (k) {
      case 0: return detail::copy_lanes(pre[0], v);
      case 1: return detail::copy_lanes(pre[1], v);
      case 2: return detail::copy_lanes(pre[2], v);
      case 3: return detail::copy_lanes(pre[3], v);
      default: return detail::load_lanes(p.leaves[k], offset, v);
    }
  };
  C v[n];
  run_program<C, S>(p, leaf, v);
  EMBER_UNROLL for (int j = 0; j < n; ++j) detail::store(p.out_dtype, p.out, first + j * step, v[j]);
}

/// Computes and stores output element i, one lane (the body of the CUDA kernel's loop for
/// strided programs and a flat program's tail).
template <class C, int S>
EMBER_HD void run_element(const elementwise_program& p, std::int64_t i) {
  C v[1];
  if (p.flat) {  // every offset is i: no per-leaf offsets to compute or keep
    run_program<C, S>(p, [&p, i](int k, C (&x)[1]) { x[0] = detail::load<C>(p.leaves[k].dtype, p.leaves[k].data, i); }, v);
    detail::store(p.out_dtype, p.out, i, v[0]);
    return;
  }
  detail::offsets o;
  detail::compute_offsets(p, i, o);
  run_program<C, S>(p, [&p, &o](int k, C (&x)[1]) { x[0] = detail::load<C>(p.leaves[k].dtype, p.leaves[k].data, o.leaf[k]); }, v);
  detail::store(p.out_dtype, p.out, o.out, v[0]);
}

// ---- reductions (the index math and the combine step; the CUDA kernel splits the work) ----

/// The accumulator of a reduction over T: double for floating types (as the CPU's sum), int64
/// for integers.
template <class T>
using reduce_acc_t = std::conditional_t<std::is_floating_point_v<T>, double, std::int64_t>;

/// A partial result: a value and, for argmax/argmin, the flat reduced index it came from.
template <class A>
struct reduce_partial {
  A v;
  std::int64_t i;
  bool any;
};

/// Output `o`'s first input offset and its output offset.
EMBER_HD void reduce_bases(const reduce_problem& r, std::int64_t o, std::int64_t& in_base,
                           std::int64_t& out_off) {
  in_base = 0;
  out_off = 0;
  for (int d = r.rank - 1; d >= 0; --d) {
    if (r.reduced[d]) continue;
    const std::int64_t c = o % r.shape[d];
    o /= r.shape[d];
    in_base += c * r.in_stride[d];
    out_off += c * r.out_stride[d];
  }
}

/// The input offset of the j-th reduced element (row-major over the reduced dims).
EMBER_HD std::int64_t reduce_offset(const reduce_problem& r, std::int64_t j) {
  std::int64_t off = 0;
  for (int d = r.rank - 1; d >= 0; --d) {
    if (!r.reduced[d]) continue;
    const std::int64_t c = j % r.shape[d];
    j /= r.shape[d];
    off += c * r.in_stride[d];
  }
  return off;
}

/// Combines two partials: sum, product, NaN-propagating max/min, and first-index argmax/argmin
/// (NaN counts as the extreme, as in PyTorch). Associative and commutative, so any split of
/// the reduced range gives the same index.
template <class A>
EMBER_HD reduce_partial<A> reduce_combine(reduce_kind k, reduce_partial<A> a, reduce_partial<A> b) {
  if (!a.any) return b;
  if (!b.any) return a;
  switch (k) {
    case reduce_kind::sum: return {a.v + b.v, 0, true};
    case reduce_kind::prod: return {a.v * b.v, 0, true};
    case reduce_kind::max:
    case reduce_kind::min: {
      if (detail::m_isnan(a.v)) return a;
      if (detail::m_isnan(b.v)) return b;
      const bool first = k == reduce_kind::max ? !(b.v > a.v) : !(b.v < a.v);
      return first ? a : b;
    }
    case reduce_kind::argmax:
    case reduce_kind::argmin: {
      const bool na = detail::m_isnan(a.v), nb = detail::m_isnan(b.v);
      if (na || nb) {
        if (na && nb) return a.i <= b.i ? a : b;
        return na ? a : b;
      }
      if (a.v == b.v) return a.i <= b.i ? a : b;
      const bool a_wins = k == reduce_kind::argmax ? a.v > b.v : a.v < b.v;
      return a_wins ? a : b;
    }
  }
  return a;
}

/// The partial of reduced elements [j0, j1) of the output whose first input is at in_base.
template <class T>
EMBER_HD reduce_partial<reduce_acc_t<T>> reduce_range(const reduce_problem& r,
                                                      std::int64_t in_base, std::int64_t j0,
                                                      std::int64_t j1, std::int64_t step) {
  using A = reduce_acc_t<T>;
  const T* in = static_cast<const T*>(r.in);
  reduce_partial<A> acc{A(0), 0, false};
  for (std::int64_t j = j0; j < j1; j += step)
    acc = reduce_combine<A>(r.kind, acc, {static_cast<A>(in[in_base + reduce_offset(r, j)]), j, true});
  return acc;
}

/// Stores a finished partial into output offset out_off.
template <class T>
EMBER_HD void reduce_store(const reduce_problem& r, std::int64_t out_off,
                           reduce_partial<reduce_acc_t<T>> acc) {
  if (r.kind == reduce_kind::argmax || r.kind == reduce_kind::argmin)
    static_cast<std::int64_t*>(r.out)[out_off] = acc.i;
  else
    static_cast<T*>(r.out)[out_off] = static_cast<T>(acc.v);
}

/// Runs a reduction on the host (tests), one output at a time.
template <class T>
void reduce_on_host(const reduce_problem& r) {
  for (std::int64_t o = 0; o < r.outputs; ++o) {
    std::int64_t base = 0, out_off = 0;
    reduce_bases(r, o, base, out_off);
    reduce_store<T>(r, out_off, reduce_range<T>(r, base, 0, r.count, 1));
  }
}

// ---- dropout ---------------------------------------------------------------------------------

/// Philox4x32-10 (Salmon et al. 2011) of the 64-bit counter under the 64-bit key: the same
/// words as ember::generator::philox (core/random.hpp), so a GPU draws the CPU's masks.
EMBER_HD void philox4x32_10(std::uint64_t key, std::uint64_t counter, std::uint32_t out[4]) {
  std::uint32_t c0 = static_cast<std::uint32_t>(counter), c1 = static_cast<std::uint32_t>(counter >> 32),
                c2 = 0, c3 = 0;
  std::uint32_t k0 = static_cast<std::uint32_t>(key), k1 = static_cast<std::uint32_t>(key >> 32);
  for (int r = 0; r < 10; ++r) {
    const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * c0;
    const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * c2;
    const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<std::uint32_t>(p1);
    c3 = static_cast<std::uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/// The four elements of counter block b.
template <class T>
EMBER_HD void dropout_block(const dropout_problem& p, std::int64_t b) {
  std::uint32_t w[4];
  philox4x32_10(p.seed, p.start + static_cast<std::uint64_t>(b), w);
  const T* in = static_cast<const T*>(p.in);
  T* out = static_cast<T*>(p.out);
  const T scale = static_cast<T>(p.scale);
  for (int j = 0; j < 4; ++j) {
    const std::int64_t i = 4 * b + j;
    if (i >= p.n) break;
    const bool k = w[j] < p.threshold;
    p.keep[i] = k;
    out[i] = in[i] * (k ? scale : T(0));
  }
}

/// Runs a dropout on the host (tests).
template <class T>
void dropout_on_host(const dropout_problem& p) {
  for (std::int64_t b = 0; b < (p.n + 3) / 4; ++b) dropout_block<T>(p, b);
}

/// Runs a whole program on the host (tests; the CPU path itself is the SIMD evaluator), as the
/// kernel does: flat programs in groups of flat_lanes elements, then element by element.
template <class C, int S>
void run_on_host_as(const elementwise_program& p) {
  std::int64_t i = 0;
  if (p.flat)
    for (; i + flat_lanes<S> <= p.numel; i += flat_lanes<S>) run_flat<C, S>(p, i, 1);
  for (; i < p.numel; ++i) run_element<C, S>(p, i);
}

template <class C>
void run_on_host_as(const elementwise_program& p) {
  switch (stack_slots(program_depth(p))) {
    case 4: return run_on_host_as<C, 4>(p);
    case 8: return run_on_host_as<C, 8>(p);
    default: return run_on_host_as<C, 16>(p);
  }
}

inline void run_on_host(const elementwise_program& p) {
  switch (p.ctype) {
    case compute::f32: return run_on_host_as<float>(p);
    case compute::f64: return run_on_host_as<double>(p);
    case compute::i64: return run_on_host_as<std::int64_t>(p);
  }
}

}  // namespace ember::dispatch
