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

/// Where a binary op finds its operands (Note [Operand forms]).
enum class operand_form : std::uint8_t {
  stack = 0,       // both on the stack: pops one
  rhs_scalar = 1,  // top op value
  rhs_leaf = 2,    // top op leaf
  lhs_scalar = 3,  // value op top
};

struct instr {
  std::uint16_t op;     // an ember::op value
  std::uint8_t dtype;   // op::cast: the target dtype
  std::uint8_t leaf;    // op::leaf, and binary ops of form rhs_leaf: the leaf's index
  double value;         // op::scalar, and binary ops of form rhs/lhs_scalar: the constant
  operand_form form = operand_form::stack;  // binary ops
  std::uint16_t key = 0;  // the interpreter's dispatch key (Note [One dispatch]; set by finish)
};

struct elementwise_program {
  std::int32_t rank = 0;
  std::int32_t n_leaves = 0;
  std::int32_t n_code = 0;
  compute ctype = compute::f32;
  std::uint8_t out_dtype = code::f32;
  bool flat = false;  // output and every leaf contiguous with the output's shape: offset == index
  bool finished = false;  // finish() ran: operands fused, dispatch keys set
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

// Note [Op math as text]: the ops' scalar math below (the opc codes, the m_ functions, cast_to,
// unary and binary) is compiled here and also kept as the text op_math_text, from the same
// tokens (EMBER_CODE_AND_TEXT): the CUDA backend's run-time compiled kernels (cuda/jit.cpp,
// Note [Kernel JIT]) are built from that text, so the interpreter, the host tests and the JIT
// kernels compute every op with one definition. The block may hold no preprocessor directive
// and no string literal; the JIT prelude provides EMBER_HD, code::, and the few std names used.
#define EMBER_CODE_AND_TEXT(text, ...) \
  __VA_ARGS__                          \
  inline constexpr char text[] = #__VA_ARGS__;

EMBER_CODE_AND_TEXT(op_math_text,
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

/// Unary op O on compute type C (int64: only the ops lowering admits on integers).
template <std::uint16_t O, class C>
EMBER_HD C unary(C x) {
  const C zero(0), one(1);
  if constexpr (O == opc::neg) return -x;
  else if constexpr (O == opc::abs) return x < zero ? -x : x;
  else if constexpr (O == opc::square) return x * x;
  else if constexpr (O == opc::relu) return x < zero ? zero : x;  // NaN propagates
  else if constexpr (O == opc::sign) return (x > zero ? one : zero) - (x < zero ? one : zero);
  else if constexpr (O == opc::logical_not) return x == zero ? one : zero;
  else if constexpr (std::is_integral_v<C>) return zero;  // not lowered on integers
  else if constexpr (O == opc::exp) return m_exp(x);
  else if constexpr (O == opc::expm1) return m_expm1(x);
  else if constexpr (O == opc::log) return m_log(x);
  else if constexpr (O == opc::log1p) return m_log1p(x);
  else if constexpr (O == opc::log2) return m_log2(x);
  else if constexpr (O == opc::sqrt) return m_sqrt(x);
  else if constexpr (O == opc::rsqrt) return one / m_sqrt(x);
  else if constexpr (O == opc::sin) return m_sin(x);
  else if constexpr (O == opc::cos) return m_cos(x);
  else if constexpr (O == opc::tanh) return m_tanh(x);
  else if constexpr (O == opc::sigmoid) return one / (one + m_exp(-x));
  else if constexpr (O == opc::gelu) return C(0.5) * x * (one + m_erf(x * C(0.70710678118654752440)));
  else if constexpr (O == opc::gelu_tanh) {
    const C k0 = C(0.7978845608028654), k1 = C(0.044715);
    return C(0.5) * x * (one + m_tanh(k0 * (x + k1 * x * x * x)));
  } else if constexpr (O == opc::gelu_tanh_grad) {
    const C k = C(0.7978845608028654), c = C(0.044715), half = C(0.5);
    const C x2 = x * x;
    const C t = m_tanh(k * (x + c * (x2 * x)));
    return half * (one + t) + (half * k) * x * ((one - t * t) * (one + C(3 * 0.044715) * x2));
  } else if constexpr (O == opc::silu) return x / (one + m_exp(-x));
  else if constexpr (O == opc::softplus) return x > C(20) ? x : m_log1p(m_exp(x));
  else if constexpr (O == opc::floor) return m_floor(x);
  else if constexpr (O == opc::ceil) return m_ceil(x);
  else if constexpr (O == opc::round) return m_rint(x);
  else if constexpr (O == opc::reciprocal) return one / x;
  else if constexpr (O == opc::erf) return m_erf(x);
  else return zero;
}

/// Binary op O on compute type C.
template <std::uint16_t O, class C>
EMBER_HD C binary(C a, C b) {
  const C zero(0), one(1);
  if constexpr (O == opc::add) return a + b;
  else if constexpr (O == opc::sub) return a - b;
  else if constexpr (O == opc::mul) return a * b;
  else if constexpr (O == opc::maximum) return (a > b || m_isnan(a)) ? a : b;  // NaN propagates
  else if constexpr (O == opc::minimum) return (a < b || m_isnan(a)) ? a : b;
  else if constexpr (O == opc::eq) return a == b ? one : zero;
  else if constexpr (O == opc::ne) return a == b ? zero : one;
  else if constexpr (O == opc::lt) return a < b ? one : zero;
  else if constexpr (O == opc::le) return a <= b ? one : zero;
  else if constexpr (O == opc::gt) return a > b ? one : zero;
  else if constexpr (O == opc::ge) return a >= b ? one : zero;
  else if constexpr (O == opc::logical_and) return (a != zero && b != zero) ? one : zero;
  else if constexpr (O == opc::logical_or) return (a != zero || b != zero) ? one : zero;
  else if constexpr (O == opc::leaky_relu) return a > zero ? a : a * b;
  else if constexpr (O == opc::div) {
    if constexpr (std::is_integral_v<C>) return b == zero ? zero : a / b;  // no trap on a GPU
    else return a / b;
  } else if constexpr (std::is_integral_v<C>) return zero;  // not lowered on integers
  else if constexpr (O == opc::pow) return m_pow(a, b);
  else if constexpr (O == opc::elu) return a > zero ? a : b * m_expm1(a);
  else return zero;
}

}  // namespace detail
)  // EMBER_CODE_AND_TEXT(op_math_text

namespace detail {

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

/// Applies `f` to each of the N lanes (unrolled: every index is a compile-time constant).
template <int N, class C, class F>
EMBER_HD void each(C (&x)[N], const F& f) {
  EMBER_UNROLL for (int j = 0; j < N; ++j) x[j] = f(x[j]);
}
template <int N, class C, class F>
EMBER_HD void each(C (&a)[N], const C (&b)[N], const F& f) {
  EMBER_UNROLL for (int j = 0; j < N; ++j) a[j] = f(a[j], b[j]);
}

// Every unary and binary op the interpreter runs (the opc names), for its dispatch switch.
#define EMBER_DISPATCH_UNARY(X)                                                                  \
  X(neg) X(abs) X(exp) X(expm1) X(log) X(log1p) X(log2) X(sqrt) X(rsqrt) X(square) X(sin)        \
  X(cos) X(tanh) X(sigmoid) X(relu) X(gelu) X(gelu_tanh) X(silu) X(softplus) X(sign) X(floor)    \
  X(ceil) X(round) X(reciprocal) X(erf) X(logical_not) X(gelu_tanh_grad)
#define EMBER_DISPATCH_BINARY(X)                                                                 \
  X(add) X(sub) X(mul) X(div) X(maximum) X(minimum) X(eq) X(ne) X(lt) X(le) X(gt) X(ge)         \
  X(logical_and) X(logical_or) X(leaky_relu)
// binary ops whose operands always come from the stack (finish does not fuse them: each
// operand form would inline another copy of their math into every kernel; Note [One dispatch])
#define EMBER_DISPATCH_BINARY_STACK(X) X(pow) X(elu)

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

EMBER_HD constexpr bool is_binary(std::uint16_t o) {
  return o >= 40 && o != opc::where && o != opc::clamp && o != opc::cast;
}

/// The most values p's stack holds at once.
EMBER_HD int program_depth(const elementwise_program& p) {
  int sp = 0, most = 0;
  for (int pc = 0; pc < p.n_code; ++pc) {
    const instr& in = p.code[pc];
    if (in.op == opc::leaf || in.op == opc::scalar) ++sp;
    else if (in.op == opc::where || in.op == opc::clamp) sp -= 2;
    else if (is_binary(in.op) && in.form == operand_form::stack) --sp;
    most = sp > most ? sp : most;
  }
  return most;
}

/// The register stack's slot count for a program of depth d in compute type C. float, the
/// type that training runs in, has kernels for 2, 4, 8 and 16 slots; double for 4 and 16;
/// int64 (index arithmetic) for 16 (each kernel costs nvcc ~8 s per architecture).
template <class C>
EMBER_HD constexpr int stack_slots(int depth) {
  if constexpr (std::is_same_v<C, float>) return depth <= 2 ? 2 : depth <= 4 ? 4 : depth <= 8 ? 8 : 16;
  else if constexpr (std::is_same_v<C, double>) return depth <= 4 ? 4 : 16;
  else return 16;
}

/// Note [One dispatch]: finish gives each instruction a key, a dense index over every case of
/// the interpreter (each op, and each binary op once per operand form), and the interpreter
/// switches on it once: every case is straight-line code for its op, its operands and its
/// slots, with no second switch on the op inside. Measured on an H200, E1 on 64M floats
/// (microbenchmark): a switch on the op, then on the operand form, then on the op again ran at
/// 0.65 of the copy bandwidth; one switch, 0.74. Run-time switches cost more than the stack's
/// register moves. The keys are dense (0 to key::count) to let nvcc use a jump table; for the
/// full switch (about 100 cases) it still emitted a tree of compares on sm_90 (no BRX in the
/// flat kernel's SASS), which is most of what separates the interpreter from a compiled kernel
/// (docs/benchmarks.md, "G1"). pow and elu keep their operands on the stack: each operand form
/// is another inlined copy of an op's math in every kernel, and nvcc's time grows with them.
namespace key {
enum : std::uint16_t {
  leaf, scalar, cast, where, clamp,
#define EMBER_KEY_UNARY(name) unary_##name,
  EMBER_DISPATCH_UNARY(EMBER_KEY_UNARY)
#undef EMBER_KEY_UNARY
  // in operand_form's order: key = name##_stack + form
#define EMBER_KEY_BINARY(name) name##_stack, name##_rhs_scalar, name##_rhs_leaf, name##_lhs_scalar,
  EMBER_DISPATCH_BINARY(EMBER_KEY_BINARY)
#undef EMBER_KEY_BINARY
#define EMBER_KEY_BINARY_STACK(name) name##_stack,
  EMBER_DISPATCH_BINARY_STACK(EMBER_KEY_BINARY_STACK)
#undef EMBER_KEY_BINARY_STACK
  count
};
}  // namespace key

/// The key of an instruction (key::count: an op the interpreter does not run).
inline std::uint16_t key_of(const instr& in) {
  const auto form = static_cast<std::uint16_t>(in.form);
  switch (in.op) {
    case opc::leaf: return key::leaf;
    case opc::scalar: return key::scalar;
    case opc::cast: return key::cast;
    case opc::where: return key::where;
    case opc::clamp: return key::clamp;
#define EMBER_KEY_UNARY(name) case opc::name: return key::unary_##name;
    EMBER_DISPATCH_UNARY(EMBER_KEY_UNARY)
#undef EMBER_KEY_UNARY
#define EMBER_KEY_BINARY(name) case opc::name: return static_cast<std::uint16_t>(key::name##_stack + form);
    EMBER_DISPATCH_BINARY(EMBER_KEY_BINARY)
#undef EMBER_KEY_BINARY
#define EMBER_KEY_BINARY_STACK(name) case opc::name: return key::name##_stack;
    EMBER_DISPATCH_BINARY_STACK(EMBER_KEY_BINARY_STACK)
#undef EMBER_KEY_BINARY_STACK
    default: return key::count;
  }
}

/// Note [Operand forms]: most binary ops in real expressions take a constant or a tensor as
/// one operand (`1.5f * x`, `m * beta1`, `g + w * decay`). Pushing that operand only to pop it
/// again costs the interpreter a dispatch and two stack shifts (Note [Register stack]). finish
/// rewrites, in place:
///   scalar v; op          ->  op(rhs_scalar v)     top = top op v
///   leaf k; op            ->  op(rhs_leaf k)       top = top op leaf k
///   scalar v; leaf k; op  ->  leaf k; op(lhs_scalar v)
/// (a subexpression that ends with `scalar` or `leaf` is that one instruction, so these are
/// exactly the ops whose right, or left, operand is a constant or a tensor). E1,
/// `1.5 x - 0.5 y + 0.25`, goes from 9 instructions and depth 3 to 6 and depth 2. The
/// arithmetic is unchanged: each op gets the same operands in the same order. Then every
/// instruction gets its dispatch key (Note [One dispatch]).
inline void finish(elementwise_program& p) {
  if (p.finished) return;
  int n = 0;  // instructions kept so far (the rewrite never lengthens the code)
  for (int pc = 0; pc < p.n_code; ++pc) {
    instr in = p.code[pc];
    if (is_binary(in.op) && in.op != opc::pow && in.op != opc::elu &&
        in.form == operand_form::stack && n >= 2) {
      const instr rhs = p.code[n - 1];
      if (rhs.op == opc::leaf && p.code[n - 2].op == opc::scalar) {
        in.form = operand_form::lhs_scalar;  // scalar v; leaf k; op
        in.value = p.code[n - 2].value;
        p.code[n - 2] = rhs;
        --n;
      } else if (rhs.op == opc::scalar || rhs.op == opc::leaf) {
        in.form = rhs.op == opc::scalar ? operand_form::rhs_scalar : operand_form::rhs_leaf;
        in.value = rhs.value;
        in.leaf = rhs.leaf;
        --n;
      }
    }
    p.code[n++] = in;
  }
  p.n_code = n;
  for (int pc = 0; pc < n; ++pc) p.code[pc].key = key_of(p.code[pc]);
  p.finished = true;
}

// Note [Register stack]: a GPU thread's array indexed at run time lives in local memory (a
// stack frame in L1 that spills to L2), which an interpreter with `stack[sp++]` would touch on
// every push and pop. Here the top of the stack is always slot 0, and every slot index is a
// compile-time constant: a push shifts the S slots down one; an op of arity n leaves its result
// in slot n - 1 and shifts the slots up n - 1 (unrolled register moves, no memory). S is the
// program's depth rounded up to one of the sizes the kernels are instantiated for
// (stack_slots), so a shallow program such as E1 (depth 2 once finished) moves 2 slots.
namespace detail {

template <int M, int S, int N, class C>
EMBER_HD void pop(C (&r)[S][N]) {
  EMBER_UNROLL for (int s = 0; s + M < S; ++s) {
    EMBER_UNROLL for (int j = 0; j < N; ++j) r[s][j] = r[s + M][j];
  }
}

template <int N, class C>
EMBER_HD void fill(C (&x)[N], C v) {
  EMBER_UNROLL for (int j = 0; j < N; ++j) x[j] = v;
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
  std::uint16_t next = p.n_code > 0 ? p.code[0].key : std::uint16_t{key::count};
  for (int pc = 0; pc < p.n_code; ++pc) {
    const instr& in = p.code[pc];
    const std::uint16_t k = next;  // the next key is fetched before this one's case runs
    if (pc + 1 < p.n_code) next = p.code[pc + 1].key;
    C o[N];
    switch (k) {
      case key::leaf: detail::push(r); leaf(in.leaf, r[0]); break;
      case key::scalar:
        detail::push(r);
        detail::fill(r[0], static_cast<C>(in.value));
        break;
      case key::cast:
        detail::each(r[0], [&in](C v) { return detail::cast_to(in.dtype, v); });
        break;
      case key::where:  // (condition, a, b) at slots 2, 1, 0 (depth >= 3)
        if constexpr (S >= 3) {
          EMBER_UNROLL for (int j = 0; j < N; ++j) r[2][j] = r[2][j] != C(0) ? r[1][j] : r[0][j];
          detail::pop<2>(r);
        }
        break;
      case key::clamp:  // (x, lo, hi) at slots 2, 1, 0; NaN propagates
        if constexpr (S >= 3) {
          EMBER_UNROLL for (int j = 0; j < N; ++j) {
            const C x = r[2][j], lo = r[1][j], hi = r[0][j];
            r[2][j] = x < lo ? lo : (x > hi ? hi : x);
          }
          detail::pop<2>(r);
        }
        break;
#define EMBER_UNARY_CASE(name)                                                \
      case key::unary_##name:                                                 \
        detail::each(r[0], [](C v) { return detail::unary<opc::name>(v); });  \
        break;
      EMBER_DISPATCH_UNARY(EMBER_UNARY_CASE)
#undef EMBER_UNARY_CASE
#define EMBER_BINARY_CASE(name)                                                                 \
      case key::name##_stack:                                                                  \
        detail::each(r[1], r[0], [](C a, C b) { return detail::binary<opc::name>(a, b); });     \
        detail::pop<1>(r);                                                                      \
        break;                                                                                  \
      case key::name##_rhs_scalar:                                                             \
        detail::fill(o, static_cast<C>(in.value));                                              \
        detail::each(r[0], o, [](C a, C b) { return detail::binary<opc::name>(a, b); });        \
        break;                                                                                  \
      case key::name##_lhs_scalar:                                                             \
        detail::fill(o, static_cast<C>(in.value));                                              \
        detail::each(o, r[0], [](C a, C b) { return detail::binary<opc::name>(a, b); });        \
        detail::each(r[0], o, [](C, C b) { return b; });                                        \
        break;                                                                                  \
      case key::name##_rhs_leaf:                                                               \
        leaf(in.leaf, o);                                                                       \
        detail::each(r[0], o, [](C a, C b) { return detail::binary<opc::name>(a, b); });        \
        break;
#define EMBER_BINARY_STACK_CASE(name)                                                           \
      case key::name##_stack:                                                                  \
        detail::each(r[1], r[0], [](C a, C b) { return detail::binary<opc::name>(a, b); });     \
        detail::pop<1>(r);                                                                      \
        break;
      EMBER_DISPATCH_BINARY(EMBER_BINARY_CASE)
      EMBER_DISPATCH_BINARY_STACK(EMBER_BINARY_STACK_CASE)
#undef EMBER_BINARY_STACK_CASE
#undef EMBER_BINARY_CASE
      default: break;  // key::count: lowering emits no such op
    }
  }
  EMBER_UNROLL for (int j = 0; j < N; ++j) result[j] = r[0][j];
}

/// Elements per thread of the wide path (Note [Wide interpretation]).
inline constexpr int wide = 4;

/// Leaves a flat program loads before it runs (Note [Leaf prefetch]).
inline constexpr int prefetched_leaves = 4;

namespace detail {

template <class T, class C, int N>
EMBER_HD void load_lanes_as(const void* data, const std::int64_t (&at)[N], C (&v)[N]) {
  const T* p = static_cast<const T*>(data);
  if constexpr (std::is_same_v<T, bool>) {
    EMBER_UNROLL for (int j = 0; j < N; ++j) v[j] = p[at[j]] ? C(1) : C(0);
  } else {
    EMBER_UNROLL for (int j = 0; j < N; ++j) v[j] = static_cast<C>(p[at[j]]);
  }
}

/// v[j] = the leaf's element at offset at[j], in C. One switch on the dtype for all N lanes
/// (Note [Leaf prefetch]).
template <class C, int N>
EMBER_HD void load_lanes(const leaf_ref& l, const std::int64_t (&at)[N], C (&v)[N]) {
  switch (l.dtype) {
    case code::f32: return load_lanes_as<float>(l.data, at, v);
    case code::f64: return load_lanes_as<double>(l.data, at, v);
    case code::i32: return load_lanes_as<std::int32_t>(l.data, at, v);
    case code::i64: return load_lanes_as<std::int64_t>(l.data, at, v);
    case code::u8: return load_lanes_as<std::uint8_t>(l.data, at, v);
    case code::boolean: return load_lanes_as<bool>(l.data, at, v);
    case code::i8: return load_lanes_as<std::int8_t>(l.data, at, v);
    case code::i16: return load_lanes_as<std::int16_t>(l.data, at, v);
    default: return fill(v, C(0));  // lowering admits no other dtype
  }
}

template <class T, class C, int N>
EMBER_HD void store_lanes_as(void* data, const std::int64_t (&at)[N], int lanes, const C (&v)[N]) {
  T* p = static_cast<T*>(data);
  EMBER_UNROLL for (int j = 0; j < N; ++j) {
    if (j < lanes) {
      if constexpr (std::is_same_v<T, bool>) p[at[j]] = v[j] != C(0);
      else p[at[j]] = static_cast<T>(v[j]);
    }
  }
}

/// Stores lanes 0..lanes-1 of v at offsets at[j], converted as store() does.
template <class C, int N>
EMBER_HD void store_lanes(std::uint8_t dt, void* data, const std::int64_t (&at)[N], int lanes,
                          const C (&v)[N]) {
  switch (dt) {
    case code::f32: return store_lanes_as<float>(data, at, lanes, v);
    case code::f64: return store_lanes_as<double>(data, at, lanes, v);
    case code::i32: return store_lanes_as<std::int32_t>(data, at, lanes, v);
    case code::i64: return store_lanes_as<std::int64_t>(data, at, lanes, v);
    case code::u8: return store_lanes_as<std::uint8_t>(data, at, lanes, v);
    case code::boolean: return store_lanes_as<bool>(data, at, lanes, v);
    case code::i8: return store_lanes_as<std::int8_t>(data, at, lanes, v);
    case code::i16: return store_lanes_as<std::int16_t>(data, at, lanes, v);
    default: return;
  }
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

/// Runs a flat program for elements first + j * step, j < flat_lanes<S>, of those below
/// p.numel (Note [Flat tail]).
template <class C, int S>
EMBER_HD void run_flat(const elementwise_program& p, std::int64_t first, std::int64_t step) {
  constexpr int n = flat_lanes<S>;
  // Note [Flat tail]: lanes past the end read the last element and store nothing, so the
  // tail of a flat program runs through this same code: a second interpreter in the kernel
  // for the tail (one lane) cost E1 20% (measured on an H200: registers and code size).
  std::int64_t at[n];
  int lanes = 0;
  EMBER_UNROLL for (int j = 0; j < n; ++j) {
    const std::int64_t i = first + j * step;
    lanes += i < p.numel ? 1 : 0;
    at[j] = i < p.numel ? i : p.numel - 1;
  }
  C pre[prefetched_leaves][n];
  EMBER_UNROLL for (int k = 0; k < prefetched_leaves; ++k) {
    if (k < p.n_leaves) detail::load_lanes(p.leaves[k], at, pre[k]);
  }
  const auto leaf = [&](int k, C (&v)[n]) {
    static_assert(prefetched_leaves == 4);
    switch (k) {
      case 0: return detail::copy_lanes(pre[0], v);
      case 1: return detail::copy_lanes(pre[1], v);
      case 2: return detail::copy_lanes(pre[2], v);
      case 3: return detail::copy_lanes(pre[3], v);
      default: return detail::load_lanes(p.leaves[k], at, v);
    }
  };
  C v[n];
  run_program<C, S>(p, leaf, v);
  detail::store_lanes(p.out_dtype, p.out, at, lanes, v);
}

/// Computes and stores output element i of a strided program (the body of the CUDA kernel's
/// loop for strided programs).
template <class C, int S>
EMBER_HD void run_element(const elementwise_program& p, std::int64_t i) {
  C v[1];
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

// ---- indexing --------------------------------------------------------------------------------

/// Note [Device indexing]: gather, index_select, embedding, scatter, scatter_add, index_add
/// and their backward passes are one loop over an iteration shape with three strided operands:
///   gather       dst[d(i)] = src[s(i) + idx[x(i)] * dim_stride]
///   scatter      dst[d(i) + idx[x(i)] * dim_stride] = src[s(i)]
///   scatter_add  dst[d(i) + idx[x(i)] * dim_stride] += alpha * src[s(i)]   (atomic on a GPU)
/// where d, x, s are the offsets of element i (row-major over shape) and the indexed
/// operand's stride along the indexed dim is 0 (its position there comes from the index).
/// index_select is a gather whose index has stride 0 in every dim but the selected one;
/// index_add and embedding's backward are such scatter_adds. Elements whose index equals
/// `skip` are left alone (embedding's padding_idx). The caller has checked every index
/// against its dim (Note [Device index checks]). Duplicate indices in a scatter: on a GPU
/// the writes race, and which lands is unspecified (as in PyTorch on CUDA).
enum class index_kind : std::uint8_t { gather = 0, scatter = 1, scatter_add = 2 };

struct index_problem {
  index_kind kind = index_kind::gather;
  std::uint8_t dtype = code::f32;        // the data's (dst and src)
  std::uint8_t index_dtype = code::i64;  // i64 or i32
  std::int32_t rank = 0;
  std::int64_t numel = 0;
  std::int64_t shape[max_rank] = {};
  void* dst = nullptr;
  std::int64_t dst_stride[max_rank] = {};
  const void* idx = nullptr;
  std::int64_t idx_stride[max_rank] = {};
  const void* src = nullptr;
  std::int64_t src_stride[max_rank] = {};
  std::int64_t dim_stride = 0;
  double alpha = 1;  // scatter_add
  bool has_skip = false;
  std::int64_t skip = 0;
};

namespace detail {

/// *p += v: atomic on a GPU (float, double, int32, int64 as two's complement); integers wrap.
template <class T>
EMBER_HD void add_at(T* p, T v) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, std::int64_t>)
    atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
  else atomicAdd(p, v);
#else
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    *p = static_cast<T>(static_cast<U>(static_cast<U>(*p) + static_cast<U>(v)));
  } else {
    *p += v;
  }
#endif
}

}  // namespace detail

/// Element i of an index problem. T: the data type for scatter_add (float, double, int32,
/// int64); for gather and scatter, an unsigned integer of the element's size (a move of bits).
template <class T, class I>
EMBER_HD void index_element(const index_problem& p, std::int64_t i) {
  std::int64_t d = 0, x = 0, s = 0;
  for (int k = p.rank - 1; k >= 0; --k) {
    const std::int64_t c = i % p.shape[k];
    i /= p.shape[k];
    d += c * p.dst_stride[k];
    x += c * p.idx_stride[k];
    s += c * p.src_stride[k];
  }
  const auto r = static_cast<std::int64_t>(static_cast<const I*>(p.idx)[x]);
  if (p.has_skip && r == p.skip) return;
  T* dst = static_cast<T*>(p.dst);
  const T* src = static_cast<const T*>(p.src);
  switch (p.kind) {
    case index_kind::gather: dst[d] = src[s + r * p.dim_stride]; break;
    case index_kind::scatter: dst[d + r * p.dim_stride] = src[s]; break;
    case index_kind::scatter_add: {
      // visit_index_types runs scatter_add with these types only (the others move bits)
      if constexpr (std::is_floating_point_v<T>) {
        detail::add_at(dst + d + r * p.dim_stride, p.alpha == 1 ? src[s] : static_cast<T>(src[s] * p.alpha));
      } else if constexpr (std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int64_t>) {
        const auto a = static_cast<T>(p.alpha);  // integer alpha: exact
        detail::add_at(dst + d + r * p.dim_stride, a == 1 ? src[s] : static_cast<T>(src[s] * a));
      }
      break;
    }
  }
}

/// Calls f(T{}, I{}) with the element and index types index_element runs p with; false when
/// p's dtypes have none (scatter_add of bool or 8/16-bit integers).
template <class F>
bool visit_index_types(const index_problem& p, F&& f) {
  const auto with_index = [&](auto t) {
    if (p.index_dtype == code::i32) f(t, std::int32_t{});
    else f(t, std::int64_t{});
    return true;
  };
  if (p.kind == index_kind::scatter_add) {
    switch (p.dtype) {
      case code::f32: return with_index(float{});
      case code::f64: return with_index(double{});
      case code::i32: return with_index(std::int32_t{});
      case code::i64: return with_index(std::int64_t{});
      default: return false;
    }
  }
  switch (p.dtype) {
    case code::f64: case code::i64: return with_index(std::uint64_t{});
    case code::f32: case code::i32: return with_index(std::uint32_t{});
    case code::i16: return with_index(std::uint16_t{});
    case code::u8: case code::boolean: case code::i8: return with_index(std::uint8_t{});
    default: return false;
  }
}

/// Runs an index problem on the host (tests), element by element.
inline bool index_on_host(const index_problem& p) {
  return visit_index_types(p, [&p](auto t, auto ix) {
    using T = decltype(t);
    using I = decltype(ix);
    for (std::int64_t i = 0; i < p.numel; ++i) index_element<T, I>(p, i);
  });
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
/// kernels do: flat programs in groups of flat_lanes elements, strided ones element by element.
template <class C, int S>
void run_on_host_as(const elementwise_program& p) {
  if (p.flat) {
    for (std::int64_t i = 0; i < p.numel; i += flat_lanes<S>) run_flat<C, S>(p, i, 1);
  } else {
    for (std::int64_t i = 0; i < p.numel; ++i) run_element<C, S>(p, i);
  }
}

template <class C>
void run_on_host_as(const elementwise_program& p) {
  switch (stack_slots<C>(program_depth(p))) {
    case 2: if constexpr (stack_slots<C>(2) == 2) return run_on_host_as<C, 2>(p); break;
    case 4: if constexpr (stack_slots<C>(4) == 4) return run_on_host_as<C, 4>(p); break;
    case 8: if constexpr (stack_slots<C>(8) == 8) return run_on_host_as<C, 8>(p); break;
    default: break;
  }
  run_on_host_as<C, 16>(p);
}

template <int = 0>  // Note [Deferred instantiation]: three interpreters, for the programs that call it
void run_on_host(elementwise_program p) {
  finish(p);
  switch (p.ctype) {
    case compute::f32: return run_on_host_as<float>(p);
    case compute::f64: return run_on_host_as<double>(p);
    case compute::i64: return run_on_host_as<std::int64_t>(p);
  }
}

}  // namespace ember::dispatch
