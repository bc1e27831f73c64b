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
#else
#define EMBER_HD inline
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

template <class C>
EMBER_HD C unary_op(std::uint16_t o, C x) {
  const C zero(0), one(1);
  switch (o) {
    case opc::neg: return -x;
    case opc::abs: return x < zero ? -x : x;
    case opc::square: return x * x;
    case opc::relu: return x < zero ? zero : x;  // NaN propagates
    case opc::sign: return (x > zero ? one : zero) - (x < zero ? one : zero);
    case opc::logical_not: return x == zero ? one : zero;
    default: break;
  }
  if constexpr (std::is_integral_v<C>) {  // int64: no other unary op is lowered
    return zero;
  } else {
    switch (o) {
      case opc::exp: return m_exp(x);
      case opc::expm1: return m_expm1(x);
      case opc::log: return m_log(x);
      case opc::log1p: return m_log1p(x);
      case opc::log2: return m_log2(x);
      case opc::sqrt: return m_sqrt(x);
      case opc::rsqrt: return one / m_sqrt(x);
      case opc::sin: return m_sin(x);
      case opc::cos: return m_cos(x);
      case opc::tanh: return m_tanh(x);
      case opc::sigmoid: return one / (one + m_exp(-x));
      case opc::gelu: return C(0.5) * x * (one + m_erf(x * C(0.70710678118654752440)));
      case opc::gelu_tanh: {
        const C k0 = C(0.7978845608028654), k1 = C(0.044715);
        return C(0.5) * x * (one + m_tanh(k0 * (x + k1 * x * x * x)));
      }
      case opc::gelu_tanh_grad: {
        const C k = C(0.7978845608028654), c = C(0.044715), half = C(0.5);
        const C x2 = x * x;
        const C t = m_tanh(k * (x + c * (x2 * x)));
        return half * (one + t) + (half * k) * x * ((one - t * t) * (one + C(3 * 0.044715) * x2));
      }
      case opc::silu: return x / (one + m_exp(-x));
      case opc::softplus: return x > C(20) ? x : m_log1p(m_exp(x));
      case opc::floor: return m_floor(x);
      case opc::ceil: return m_ceil(x);
      case opc::round: return m_rint(x);
      case opc::reciprocal: return one / x;
      case opc::erf: return m_erf(x);
      default: return zero;
    }
  }
}

template <class C>
EMBER_HD C binary_op(std::uint16_t o, C a, C b) {
  const C zero(0), one(1);
  switch (o) {
    case opc::add: return a + b;
    case opc::sub: return a - b;
    case opc::mul: return a * b;
    case opc::maximum: return (a > b || m_isnan(a)) ? a : b;  // NaN propagates
    case opc::minimum: return (a < b || m_isnan(a)) ? a : b;
    case opc::eq: return a == b ? one : zero;
    case opc::ne: return a == b ? zero : one;
    case opc::lt: return a < b ? one : zero;
    case opc::le: return a <= b ? one : zero;
    case opc::gt: return a > b ? one : zero;
    case opc::ge: return a >= b ? one : zero;
    case opc::logical_and: return (a != zero && b != zero) ? one : zero;
    case opc::logical_or: return (a != zero || b != zero) ? one : zero;
    case opc::leaky_relu: return a > zero ? a : a * b;
    default: break;
  }
  if constexpr (std::is_integral_v<C>) {
    if (o == opc::div) return b == zero ? zero : a / b;  // C++ division; no trap on a GPU
    return zero;
  } else {
    switch (o) {
      case opc::div: return a / b;
      case opc::pow: return m_pow(a, b);
      case opc::elu: return a > zero ? a : b * m_expm1(a);
      default: return zero;
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

/// The value of an output element of p, in compute type C; `leaf_offset(k)` is the element's
/// offset in leaf k.
template <class C, class Offsets>
EMBER_HD C run_program(const elementwise_program& p, const Offsets& leaf_offset) {
  C stack[max_stack];
  int sp = 0;
  for (int pc = 0; pc < p.n_code; ++pc) {
    const instr in = p.code[pc];
    switch (in.op) {
      case opc::leaf: {
        const leaf_ref& l = p.leaves[in.leaf];
        stack[sp++] = detail::load<C>(l.dtype, l.data, leaf_offset(in.leaf));
        break;
      }
      case opc::scalar: stack[sp++] = static_cast<C>(in.value); break;
      case opc::cast: stack[sp - 1] = detail::cast_to(in.dtype, stack[sp - 1]); break;
      case opc::where:
        sp -= 2;
        stack[sp - 1] = stack[sp - 1] != C(0) ? stack[sp] : stack[sp + 1];
        break;
      case opc::clamp: {  // (x, lo, hi); NaN propagates
        sp -= 2;
        const C x = stack[sp - 1], lo = stack[sp], hi = stack[sp + 1];
        stack[sp - 1] = x < lo ? lo : (x > hi ? hi : x);
        break;
      }
      default:
        if (in.op < 40) {
          stack[sp - 1] = detail::unary_op(in.op, stack[sp - 1]);
        } else {
          --sp;
          stack[sp - 1] = detail::binary_op(in.op, stack[sp - 1], stack[sp]);
        }
    }
  }
  return stack[0];
}

/// Note [Wide interpretation]: for flat programs each thread runs the program once for N
/// elements (`index(j)`, j < N), on a stack of N-wide values: the instruction fetch and the
/// switch on the op are paid once per N elements instead of once per element.
template <class C, int N, class Index>
EMBER_HD void run_program_wide(const elementwise_program& p, const Index& index) {
  C stack[max_stack][N];
  int sp = 0;
  for (int pc = 0; pc < p.n_code; ++pc) {
    const instr in = p.code[pc];
    switch (in.op) {
      case opc::leaf: {
        const leaf_ref& l = p.leaves[in.leaf];
        for (int j = 0; j < N; ++j) stack[sp][j] = detail::load<C>(l.dtype, l.data, index(j));
        ++sp;
        break;
      }
      case opc::scalar:
        for (int j = 0; j < N; ++j) stack[sp][j] = static_cast<C>(in.value);
        ++sp;
        break;
      case opc::cast:
        for (int j = 0; j < N; ++j) stack[sp - 1][j] = detail::cast_to(in.dtype, stack[sp - 1][j]);
        break;
      case opc::where:
        sp -= 2;
        for (int j = 0; j < N; ++j)
          stack[sp - 1][j] = stack[sp - 1][j] != C(0) ? stack[sp][j] : stack[sp + 1][j];
        break;
      case opc::clamp:
        sp -= 2;
        for (int j = 0; j < N; ++j) {
          const C x = stack[sp - 1][j], lo = stack[sp][j], hi = stack[sp + 1][j];
          stack[sp - 1][j] = x < lo ? lo : (x > hi ? hi : x);
        }
        break;
      default:
        if (in.op < 40) {
          for (int j = 0; j < N; ++j) stack[sp - 1][j] = detail::unary_op(in.op, stack[sp - 1][j]);
        } else {
          --sp;
          for (int j = 0; j < N; ++j)
            stack[sp - 1][j] = detail::binary_op(in.op, stack[sp - 1][j], stack[sp][j]);
        }
    }
  }
  for (int j = 0; j < N; ++j) detail::store(p.out_dtype, p.out, index(j), stack[0][j]);
}

/// Computes and stores output element i (the body of the CUDA kernel's loop; the host tests
/// run it too).
template <class C>
EMBER_HD void run_element(const elementwise_program& p, std::int64_t i) {
  if (p.flat) {  // every offset is i: no per-leaf offsets to compute or keep
    detail::store(p.out_dtype, p.out, i, run_program<C>(p, [i](int) { return i; }));
    return;
  }
  detail::offsets o;
  detail::compute_offsets(p, i, o);
  detail::store(p.out_dtype, p.out, o.out, run_program<C>(p, [&o](int k) { return o.leaf[k]; }));
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

/// Elements per thread of the wide path (Note [Wide interpretation]).
inline constexpr int wide = 4;

/// Runs a whole program on the host (tests; the CPU path itself is the SIMD evaluator). Flat
/// programs take the wide path in groups of `wide` elements, as the kernel does.
inline void run_on_host(const elementwise_program& p) {
  std::int64_t i = 0;
  if (p.flat) {
    for (; i + wide <= p.numel; i += wide) {
      const auto index = [i](int j) { return i + j; };
      switch (p.ctype) {
        case compute::f32: run_program_wide<float, wide>(p, index); break;
        case compute::f64: run_program_wide<double, wide>(p, index); break;
        case compute::i64: run_program_wide<std::int64_t, wide>(p, index); break;
      }
    }
  }
  for (; i < p.numel; ++i) {
    switch (p.ctype) {
      case compute::f32: run_element<float>(p, i); break;
      case compute::f64: run_element<double>(p, i); break;
      case compute::i64: run_element<std::int64_t>(p, i); break;
    }
  }
}

}  // namespace ember::dispatch
