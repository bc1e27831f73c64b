// run_fused: evaluates a fused elementwise group (the body of an op::fused node) tile by tile,
// with SIMD loops over the ember functors; and fusible(), the predicate saying which nodes it
// can run (the fusion pass in jit/passes.hpp groups only those).
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/parallel.hpp>
#include <ember/core/shape.hpp>
#include <ember/eval/evaluator.hpp>
#include <ember/expr/functors.hpp>
#include <ember/dispatch/program.hpp>
#include <ember/dispatch/registry.hpp>
#include <ember/jit/graph.hpp>
#include <ember/ops/factory.hpp>
#include <ember/simd/batch.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace ember::jit {
struct node;
struct graph;
}  // namespace ember::jit

namespace ember::detail {

/// The dtypes a fused group computes in: f32, f64, and bool (comparisons, masks).
constexpr bool fused_dtype(dtype t) noexcept {
  return t == dtype::f32 || t == dtype::f64 || t == dtype::boolean;
}
constexpr bool fused_float(dtype t) noexcept { return t == dtype::f32 || t == dtype::f64; }

/// What run_fused does with an op (and which operand dtypes it accepts, see fusible()).
enum class fused_class { none, scalar, unary, binary, clamp, compare, logical, where, cast };

constexpr fused_class fused_classify(op k) noexcept {
  const auto v = static_cast<std::uint16_t>(k);
  if (k == op::scalar) return fused_class::scalar;
  if (k == op::logical_not || k == op::logical_and || k == op::logical_or)
    return fused_class::logical;
  if (v >= 2 && v <= 26) return fused_class::unary;  // neg .. erf
  if ((v >= 40 && v <= 46) || k == op::leaky_relu || k == op::elu) return fused_class::binary;
  if (v >= 47 && v <= 52) return fused_class::compare;  // eq .. ge
  if (k == op::where) return fused_class::where;
  if (k == op::clamp) return fused_class::clamp;
  if (k == op::cast) return fused_class::cast;
  return fused_class::none;
}

/// The value of an op::scalar node (attribute "value", a real or an integer).
inline double jit_scalar_value(const jit::node& n) {
  auto it = n.attrs.find("value");
  check(it != n.attrs.end(), errc::value, "jit: scalar node has no attribute \"value\"");
  if (const double* d = std::get_if<double>(&it->second)) return *d;
  if (const std::int64_t* i = std::get_if<std::int64_t>(&it->second)) return static_cast<double>(*i);
  fail(errc::value, "jit: scalar node: attribute \"value\" is not a number");
}

}  // namespace ember::detail

namespace ember::jit {

/// Can run_fused evaluate n (a node of g)? Note [Fusible]: elementwise ops and op::scalar whose
/// values are all f32, f64 or bool, with the operand types the eager ops have:
///  - unary math (neg .. erf), binary math (add .. minimum, pow, leaky_relu, elu), clamp:
///    every operand and the result of one float type;
///  - comparisons (eq .. ge): two operands of one float type, a bool result;
///  - logical_not/and/or: operands of any of the three types (non-zero is true), bool result;
///  - where: a bool condition, two values and the result of one float type;
///  - cast: between any two of f32, f64, bool (to bool is `!= 0`, from bool is 0/1);
///  - scalar: no inputs, a numeric "value", a result of one of the three types.
/// Everything else (integer or half dtypes, mixed float types, other ops) is not fusible, and
/// run_fused rejects it with errc::not_implemented.
inline bool fusible(const node& n, const graph& g) {
  using ember::detail::fused_class;
  const fused_class c = ember::detail::fused_classify(n.kind);
  if (c == fused_class::none || n.body || n.outputs.size() != 1) return false;
  auto type = [&](int id) -> dtype {
    if (id < 0 || id >= static_cast<int>(g.values.size())) return dtype::i64;  // never fusible
    return g.values[static_cast<std::size_t>(id)].type;
  };
  const dtype out = type(n.outputs[0]);
  if (!ember::detail::fused_dtype(out)) return false;
  for (int in : n.inputs)
    if (!ember::detail::fused_dtype(type(in))) return false;
  const std::size_t arity = n.inputs.size();
  auto all_are = [&](dtype t) {
    return std::all_of(n.inputs.begin(), n.inputs.end(), [&](int in) { return type(in) == t; });
  };
  switch (c) {
    case fused_class::scalar: {
      if (arity != 0) return false;
      auto it = n.attrs.find("value");
      return it != n.attrs.end() && (std::holds_alternative<double>(it->second) ||
                                     std::holds_alternative<std::int64_t>(it->second));
    }
    case fused_class::unary: return arity == 1 && ember::detail::fused_float(out) && all_are(out);
    case fused_class::binary: return arity == 2 && ember::detail::fused_float(out) && all_are(out);
    case fused_class::clamp: return arity == 3 && ember::detail::fused_float(out) && all_are(out);
    case fused_class::compare:
      return arity == 2 && out == dtype::boolean && ember::detail::fused_float(type(n.inputs[0])) &&
             all_are(type(n.inputs[0]));
    case fused_class::logical:
      return out == dtype::boolean && arity == (n.kind == op::logical_not ? 1u : 2u);
    case fused_class::where:
      return arity == 3 && ember::detail::fused_float(out) && type(n.inputs[0]) == dtype::boolean &&
             type(n.inputs[1]) == out && type(n.inputs[2]) == out;
    case fused_class::cast: return arity == 1;
    case fused_class::none: return false;
  }
  return false;
}

}  // namespace ember::jit

namespace ember::detail {

/// Elements per tile (Note [Fused tiles]).
inline constexpr std::int64_t fused_tile = 2048;
/// Output elements below which run_fused stays on the calling thread.
inline constexpr std::int64_t fused_grain = 32768;

/// A tile kernel: out[i] = f(in0[i], in1[i], ...) for i < m (m <= fused_tile).
using fused_kernel = void (*)(const void* const* in, void* out, std::int64_t m);

// Note [Fused kernels]: float math runs the ember functors on SIMD batches, and the last
// partial packet of a tile is padded by repeating its last element (as the eager traversal
// does, Note [Traversal]), so every element gets the SIMD formula: results are the eager
// SIMD path's bits, whatever the tile boundaries and the thread count. Ops on bool values
// (comparisons, logical ops, where, casts) are exact, so they are plain loops.
template <class T, class F, std::size_t N>
void fused_map(const T* const (&a)[N], T* o, std::int64_t m) {
#if EMBER_HAS_XSIMD
  constexpr std::int64_t W = static_cast<std::int64_t>(simd::width<T>);
  std::int64_t i = 0;
  auto apply = [](const auto&... x) { return F{}(x...); };
  if constexpr (N == 1) {
    for (; i + W <= m; i += W) simd::store(o + i, apply(simd::load(a[0] + i)));
  } else if constexpr (N == 2) {
    for (; i + W <= m; i += W) simd::store(o + i, apply(simd::load(a[0] + i), simd::load(a[1] + i)));
  } else {
    for (; i + W <= m; i += W)
      simd::store(o + i, apply(simd::load(a[0] + i), simd::load(a[1] + i), simd::load(a[2] + i)));
  }
  if (i < m) {
    alignas(64) T buf[N][W];
    alignas(64) T res[W];
    for (std::size_t k = 0; k < N; ++k)
      for (std::int64_t j = 0; j < W; ++j) buf[k][j] = a[k][i + std::min(j, m - i - 1)];
    if constexpr (N == 1) simd::store(res, apply(simd::load(buf[0])));
    if constexpr (N == 2) simd::store(res, apply(simd::load(buf[0]), simd::load(buf[1])));
    if constexpr (N == 3)
      simd::store(res, apply(simd::load(buf[0]), simd::load(buf[1]), simd::load(buf[2])));
    std::copy(res, res + (m - i), o + i);
  }
#else
  for (std::int64_t i = 0; i < m; ++i) {
    if constexpr (N == 1) o[i] = F{}(a[0][i]);
    if constexpr (N == 2) o[i] = F{}(a[0][i], a[1][i]);
    if constexpr (N == 3) o[i] = F{}(a[0][i], a[1][i], a[2][i]);
  }
#endif
}

template <class T, class F>
void fused_k_unary(const void* const* in, void* out, std::int64_t m) {
  const T* const a[1] = {static_cast<const T*>(in[0])};
  fused_map<T, F, 1>(a, static_cast<T*>(out), m);
}
template <class T, class F>
void fused_k_binary(const void* const* in, void* out, std::int64_t m) {
  const T* const a[2] = {static_cast<const T*>(in[0]), static_cast<const T*>(in[1])};
  fused_map<T, F, 2>(a, static_cast<T*>(out), m);
}
template <class T>
void fused_k_clamp(const void* const* in, void* out, std::int64_t m) {
  const T* const a[3] = {static_cast<const T*>(in[0]), static_cast<const T*>(in[1]),
                         static_cast<const T*>(in[2])};
  fused_map<T, fn::clamp, 3>(a, static_cast<T*>(out), m);
}
template <class T, class F>
void fused_k_compare(const void* const* in, void* out, std::int64_t m) {
  const T* a = static_cast<const T*>(in[0]);
  const T* b = static_cast<const T*>(in[1]);
  bool* o = static_cast<bool*>(out);
  for (std::int64_t i = 0; i < m; ++i) o[i] = F{}(a[i], b[i]);
}
template <class T>
void fused_k_where(const void* const* in, void* out, std::int64_t m) {
  const bool* c = static_cast<const bool*>(in[0]);
  const T* a = static_cast<const T*>(in[1]);
  const T* b = static_cast<const T*>(in[2]);
  T* o = static_cast<T*>(out);
  for (std::int64_t i = 0; i < m; ++i) o[i] = c[i] ? a[i] : b[i];
}
template <class To, class From>
void fused_k_cast(const void* const* in, void* out, std::int64_t m) {
  const From* a = static_cast<const From*>(in[0]);
  To* o = static_cast<To*>(out);
  for (std::int64_t i = 0; i < m; ++i) o[i] = convert<To>(a[i]);
}
template <class A>
void fused_k_not(const void* const* in, void* out, std::int64_t m) {
  const A* a = static_cast<const A*>(in[0]);
  bool* o = static_cast<bool*>(out);
  for (std::int64_t i = 0; i < m; ++i) o[i] = !convert<bool>(a[i]);
}
template <bool Or, class A, class B>
void fused_k_logical(const void* const* in, void* out, std::int64_t m) {
  const A* a = static_cast<const A*>(in[0]);
  const B* b = static_cast<const B*>(in[1]);
  bool* o = static_cast<bool*>(out);
  for (std::int64_t i = 0; i < m; ++i)
    o[i] = Or ? (convert<bool>(a[i]) || convert<bool>(b[i]))
              : (convert<bool>(a[i]) && convert<bool>(b[i]));
}

/// Calls f(T{}) for a fused dtype (f32, f64, bool).
template <class F>
decltype(auto) visit_fused_dtype(dtype t, F&& f) {
  if (t == dtype::f64) return f(double{});
  if (t == dtype::boolean) return f(bool{});
  return f(float{});
}

template <class T>
fused_kernel fused_float_kernel(op k) {
  switch (k) {
    case op::neg: return &fused_k_unary<T, fn::neg>;
    case op::abs: return &fused_k_unary<T, fn::abs>;
    case op::exp: return &fused_k_unary<T, fn::exp>;
    case op::expm1: return &fused_k_unary<T, fn::expm1>;
    case op::log: return &fused_k_unary<T, fn::log>;
    case op::log1p: return &fused_k_unary<T, fn::log1p>;
    case op::log2: return &fused_k_unary<T, fn::log2>;
    case op::sqrt: return &fused_k_unary<T, fn::sqrt>;
    case op::rsqrt: return &fused_k_unary<T, fn::rsqrt>;
    case op::square: return &fused_k_unary<T, fn::square>;
    case op::sin: return &fused_k_unary<T, fn::sin>;
    case op::cos: return &fused_k_unary<T, fn::cos>;
    case op::tanh: return &fused_k_unary<T, fn::tanh>;
    case op::sigmoid: return &fused_k_unary<T, fn::sigmoid>;
    case op::relu: return &fused_k_unary<T, fn::relu>;
    case op::gelu: return &fused_k_unary<T, fn::gelu>;
    case op::gelu_tanh: return &fused_k_unary<T, fn::gelu_tanh>;
    case op::silu: return &fused_k_unary<T, fn::silu>;
    case op::softplus: return &fused_k_unary<T, fn::softplus>;
    case op::sign: return &fused_k_unary<T, fn::sign>;
    case op::floor: return &fused_k_unary<T, fn::floor>;
    case op::ceil: return &fused_k_unary<T, fn::ceil>;
    case op::round: return &fused_k_unary<T, fn::round>;
    case op::reciprocal: return &fused_k_unary<T, fn::reciprocal>;
    case op::erf: return &fused_k_unary<T, fn::erf>;
    case op::gelu_tanh_grad: return &fused_k_unary<T, fn::gelu_tanh_grad>;
    case op::add: return &fused_k_binary<T, fn::add>;
    case op::sub: return &fused_k_binary<T, fn::sub>;
    case op::mul: return &fused_k_binary<T, fn::mul>;
    case op::div: return &fused_k_binary<T, fn::div>;
    case op::pow: return &fused_k_binary<T, fn::pow>;
    case op::maximum: return &fused_k_binary<T, fn::maximum>;
    case op::minimum: return &fused_k_binary<T, fn::minimum>;
    case op::leaky_relu: return &fused_k_binary<T, fn::leaky_relu>;
    case op::elu: return &fused_k_binary<T, fn::elu>;
    case op::clamp: return &fused_k_clamp<T>;
    case op::eq: return &fused_k_compare<T, fn::eq>;
    case op::ne: return &fused_k_compare<T, fn::ne>;
    case op::lt: return &fused_k_compare<T, fn::lt>;
    case op::le: return &fused_k_compare<T, fn::le>;
    case op::gt: return &fused_k_compare<T, fn::gt>;
    case op::ge: return &fused_k_compare<T, fn::ge>;
    case op::where: return &fused_k_where<T>;
    default: return nullptr;
  }
}

/// The kernel of a fusible node of `body` (the operand dtypes decide the instantiation).
template <class = void>
fused_kernel fused_select_kernel(const jit::node& n, const jit::graph& body) {
  auto type = [&](int id) { return body.values[static_cast<std::size_t>(id)].type; };
  switch (fused_classify(n.kind)) {
    case fused_class::compare:
      return type(n.inputs[0]) == dtype::f64 ? fused_float_kernel<double>(n.kind) : fused_float_kernel<float>(n.kind);
    case fused_class::cast:
      return visit_fused_dtype(type(n.outputs[0]), [&](auto to) {
        return visit_fused_dtype(type(n.inputs[0]), [&](auto from) -> fused_kernel {
          return &fused_k_cast<decltype(to), decltype(from)>;
        });
      });
    case fused_class::logical:
      if (n.kind == op::logical_not)
        return visit_fused_dtype(type(n.inputs[0]),
                                 [](auto a) -> fused_kernel { return &fused_k_not<decltype(a)>; });
      return visit_fused_dtype(type(n.inputs[0]), [&](auto a) {
        return visit_fused_dtype(type(n.inputs[1]), [&](auto b) -> fused_kernel {
          using A = decltype(a);
          using B = decltype(b);
          return n.kind == op::logical_or ? &fused_k_logical<true, A, B> : &fused_k_logical<false, A, B>;
        });
      });
    default:
      return type(n.outputs[0]) == dtype::f64 ? fused_float_kernel<double>(n.kind) : fused_float_kernel<float>(n.kind);
  }
}

/// Copies the m elements [t0, t0 + m) of the row-major index space of `sizes` from a tensor
/// with (broadcast, coalesced) `strides` into dst: a strided odometer over rows.
template <class U>
void fused_gather(U* dst, const U* base, const shape& sizes, const shape& strides, std::int64_t t0,
                 std::int64_t m) {
  const std::size_t rank = sizes.size();
  shape idx(rank, 0);
  std::int64_t off = 0;
  for (std::size_t d = rank, r = static_cast<std::size_t>(t0); d-- > 0;) {
    idx[d] = static_cast<std::int64_t>(r % static_cast<std::size_t>(sizes[d]));
    r /= static_cast<std::size_t>(sizes[d]);
    off += idx[d] * strides[d];
  }
  const std::int64_t n = sizes[rank - 1], is = strides[rank - 1];
  std::int64_t done = 0;
  while (done < m) {
    const std::int64_t cnt = std::min(n - idx[rank - 1], m - done);
    const U* src = base + off;
    U* o = dst + done;
    if (is == 0) {  // a broadcast run: one element, then doubling copies (memcpy is SIMD)
      o[0] = *src;
      for (std::int64_t have = 1; have < cnt;) {
        const std::int64_t c = std::min(have, cnt - have);
        std::memcpy(o + have, o, static_cast<std::size_t>(c) * sizeof(U));
        have += c;
      }
    } else if (is == 1)
      std::copy(src, src + cnt, o);
    else
      for (std::int64_t i = 0; i < cnt; ++i) o[i] = src[i * is];
    done += cnt;
    off += cnt * is;
    idx[rank - 1] += cnt;
    if (idx[rank - 1] < n) continue;
    off -= n * is;
    idx[rank - 1] = 0;
    for (std::size_t d = rank - 1; d-- > 0;) {
      off += strides[d];
      if (++idx[d] < sizes[d]) break;
      off -= strides[d] * sizes[d];
      idx[d] = 0;
    }
  }
}

/// How a body value's tile is found: an input read in place, an input gathered into scratch,
/// a splat (0-d input or scalar node, filled once), a scratch buffer, or an output's memory.
enum class fused_home : std::uint8_t { none, direct, gather, splat, scratch, output };

struct fused_input {
  int value = -1;
  fused_home home = fused_home::none;
  const std::byte* base = nullptr;
  shape sizes, strides;  ///< gather: the output shape and the input's strides, coalesced
};

struct fused_step {
  fused_kernel kernel = nullptr;
  int in[3] = {-1, -1, -1};
  int out = -1;
};

/// Drops size-1 dims and merges dims that are contiguous in the input (for the gather loop).
inline void fused_coalesce(const shape& sizes, const shape& strides, shape& cs, shape& cst) {
  cs.clear();
  cst.clear();
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    if (!cs.empty() && cst.back() == strides[d] * sizes[d]) {
      cs.back() *= sizes[d];
      cst.back() = strides[d];
    } else {
      cs.push_back(sizes[d]);
      cst.push_back(strides[d]);
    }
  }
  if (cs.empty()) {
    cs.push_back(1);
    cst.push_back(0);
  }
}

inline const std::byte* fused_bytes(const any_tensor& t) {
  return t.visit([](const auto& x) { return reinterpret_cast<const std::byte*>(x.data()); });
}

}  // namespace ember::detail

namespace ember::jit {

/// Note [Fused groups on devices]: a fused group whose inputs live on a device runs there as
/// one elementwise program per group output (Note [Elementwise program]): the output's value is
/// written as postfix code by walking the body back from it (a value two nodes read is
/// recomputed by each: the body is elementwise, so recomputing is cheaper than a round trip to
/// memory), the inputs are the program's leaves with their broadcast strides, and the device's
/// fused kernel runs it (compiled for it when large: Note [Kernel JIT]). Every value of the
/// group is f32 and bool, or f64 and bool, so the program computes in that float type exactly
/// as the eager ops do. Returns false, running nothing, when the group does not fit a program
/// (mixed float types, more than max_code instructions, max_leaves inputs or max_rank dims):
/// the caller then runs its nodes one by one on the device.
template <class = void>
bool run_fused_on_device(const graph& body, const std::vector<any_tensor>& inputs,
                         std::vector<any_tensor>& outputs) {
  using namespace ember::detail;
  namespace dp = ember::dispatch;
  const device dev = inputs.at(0).device();
  bool has32 = false, has64 = false;
  for (const value& v : body.values) {
    if (v.type == dtype::f32) has32 = true;
    else if (v.type == dtype::f64) has64 = true;
    else if (v.type != dtype::boolean) return false;
  }
  if (has32 && has64) return false;
  shape out_shape;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    check(inputs[k].defined(), errc::value, "jit::run_fused: input ", k, " is undefined");
    check(inputs[k].device() == dev, errc::device, "jit::run_fused: inputs on ", dev, " and ",
          inputs[k].device());
    out_shape = broadcast_shapes(out_shape, inputs[k].shape(), "jit::run_fused");
  }
  if (out_shape.size() > static_cast<std::size_t>(dp::max_rank)) return false;
  std::vector<int> producer(body.values.size(), -1), input_of(body.values.size(), -1);
  for (std::size_t i = 0; i < body.nodes.size(); ++i) {
    if (!fusible(body.nodes[i], body)) return false;
    for (int o : body.nodes[i].outputs) producer[static_cast<std::size_t>(o)] = static_cast<int>(i);
  }
  for (std::size_t k = 0; k < body.inputs.size(); ++k)
    input_of[static_cast<std::size_t>(body.inputs[k])] = static_cast<int>(k);
  const auto code = [](dtype t) { return static_cast<std::uint8_t>(t); };
  // every program first, so that nothing runs when one does not fit
  std::vector<dp::elementwise_program> programs(body.outputs.size());
  for (std::size_t j = 0; j < body.outputs.size(); ++j) {
    dp::elementwise_program& p = programs[j];
    p.ctype = has64 ? dp::compute::f64 : dp::compute::f32;
    p.rank = static_cast<std::int32_t>(out_shape.size());
    p.numel = out_shape.numel();
    for (std::size_t d = 0; d < out_shape.size(); ++d) p.shape[d] = out_shape[d];
    std::vector<int> leaf_of(inputs.size(), -1);
    bool fits = true;
    const auto emit = [&](dp::instr in) {
      if (p.n_code == dp::max_code) fits = false;
      else p.code[p.n_code++] = in;
    };
    const auto walk = [&](const auto& self, int id) -> void {
      if (!fits) return;
      const int k = input_of[static_cast<std::size_t>(id)];
      if (k >= 0) {
        int& l = leaf_of[static_cast<std::size_t>(k)];
        if (l < 0) {
          if (p.n_leaves == dp::max_leaves) {
            fits = false;
            return;
          }
          l = p.n_leaves++;
          const any_tensor& t = inputs[static_cast<std::size_t>(k)];
          dp::leaf_ref& r = p.leaves[l];
          r.data = fused_bytes(t);
          r.dtype = code(t.dtype());
          const shape st = broadcast_strides(t.shape(), t.strides(), out_shape);
          for (std::size_t d = 0; d < st.size(); ++d) r.stride[d] = st[d];
        }
        emit({dp::opc::leaf, 0, static_cast<std::uint8_t>(l), 0.0});
        return;
      }
      const int ni = producer[static_cast<std::size_t>(id)];
      check(ni >= 0, errc::value, "jit::run_fused: %", body.at(id).name, " has no producer");
      const node& n = body.nodes[static_cast<std::size_t>(ni)];
      if (n.kind == op::scalar) {
        emit({dp::opc::scalar, 0, 0, jit_scalar_value(n)});
        return;
      }
      for (int in : n.inputs) self(self, in);
      dp::instr ins{static_cast<std::uint16_t>(n.kind), 0, 0, 0.0};
      if (n.kind == op::cast) ins.dtype = code(body.at(n.outputs[0]).type);
      emit(ins);
    };
    walk(walk, body.outputs[j]);
    if (!fits || dp::program_depth(p) > dp::max_stack) return false;
    p.out_dtype = code(body.at(body.outputs[j]).type);
  }
  outputs.assign(body.outputs.size(), any_tensor());
  const shape out_strides = contiguous_strides(out_shape);
  for (std::size_t j = 0; j < body.outputs.size(); ++j) {
    dp::elementwise_program& p = programs[j];
    outputs[j] = visit_fused_dtype(body.at(body.outputs[j]).type, [&](auto e) {
      return any_tensor(make_tensor<decltype(e)>(out_shape, dev));
    });
    p.out = const_cast<std::byte*>(fused_bytes(outputs[j]));
    for (std::size_t d = 0; d < out_shape.size(); ++d) p.out_stride[d] = out_strides[d];
    bool flat = true;
    for (int k = 0; flat && k < p.n_leaves; ++k)
      for (int d = 0; flat && d < p.rank; ++d)
        flat = out_shape[static_cast<std::size_t>(d)] == 1 || p.leaves[k].stride[d] == out_strides[static_cast<std::size_t>(d)];
    p.flat = flat;
    if (p.numel == 0) continue;
    dp::finish(p);
    dp::kernel<op::fused>(dev, outputs[j].dtype(), "jit fused group")(p, dev);
  }
  return true;
}

/// Evaluates a fused elementwise group: `body` is an op::fused node's body, `inputs` the
/// tensors of its inputs (CPU; any strides; broadcasting as PyTorch). `outputs` receives one new
/// contiguous tensor per body output, all of the broadcast shape of the inputs.
///   std::vector<em::any_tensor> out;  em::jit::run_fused(*n.body, {x, b}, out);
/// Note [Fused tiles]: the flattened output is cut into tiles of fused_tile (2048) elements;
/// per tile each input is read in place (contiguous, full shape), gathered through its
/// broadcast strides into scratch, or read from a splat buffer (one element), then the body's
/// nodes run in order over the tile (Note [Fused kernels]), intermediates in scratch buffers
/// reused once dead and node results that are group outputs written straight to the output.
/// Scratch is allocated once per thread's chunk of tiles; tiles run on the thread pool.
template <class = void>
void run_fused(const graph& body, const std::vector<any_tensor>& inputs,
               std::vector<any_tensor>& outputs) {
  using namespace ember::detail;
  constexpr std::int64_t T = fused_tile;
  const std::size_t nv = body.values.size();
  check(inputs.size() == body.inputs.size(), errc::value, "jit::run_fused: the group has ",
        body.inputs.size(), " inputs, got ", inputs.size(), " tensors");
  shape out_shape;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const any_tensor& t = inputs[k];
    const value& v = body.at(body.inputs[k]);
    check(t.defined(), errc::value, "jit::run_fused: input ", k, " (%", v.name, ") is undefined");
    check(t.device().is_cpu(), errc::not_implemented, "jit::run_fused: input ", k, " is on ",
          t.device(), "; fused groups run on the CPU");
    check(t.dtype() == v.type, errc::dtype, "jit::run_fused: input ", k, " (%", v.name,
          ") is ", t.dtype(), ", the group expects ", v.type);
    out_shape = broadcast_shapes(out_shape, t.shape(), "jit::run_fused");
  }
  for (int id : body.outputs) {
    const value& v = body.at(id);
    bool ok = static_cast<std::int64_t>(v.shape.size()) == out_shape.rank();
    for (std::size_t d = 0; ok && d < v.shape.size(); ++d)
      ok = v.shape[d] == symbolic || v.shape[d] == out_shape[d];
    check(ok, errc::shape, "jit::run_fused: the inputs broadcast to ", out_shape,
          " but the group's output %", v.name, " has shape ", shape(v.shape));
  }
  const std::int64_t total = out_shape.numel();

  // ---- plan: where each value lives, the kernels, the scratch slots ------------------------
  std::vector<fused_home> home(nv, fused_home::none);
  std::vector<int> slot(nv, -1);  // scratch / splat slot, input index, or output index
  std::vector<fused_input> ins;
  int nscratch = 0;
  std::vector<std::unique_ptr<std::byte[]>> splats;
  auto add_splat = [&](int id, const std::byte* src) {
    const std::size_t sz = item_size(body.values[static_cast<std::size_t>(id)].type);
    splats.emplace_back(new std::byte[static_cast<std::size_t>(T) * sz]);
    for (std::int64_t i = 0; i < T; ++i) std::memcpy(splats.back().get() + i * sz, src, sz);
    home[static_cast<std::size_t>(id)] = fused_home::splat;
    slot[static_cast<std::size_t>(id)] = static_cast<int>(splats.size()) - 1;
  };
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const int id = body.inputs[k];
    if (home[static_cast<std::size_t>(id)] != fused_home::none) continue;
    const any_tensor& t = inputs[k];
    fused_input fi;
    fi.value = id;
    fi.base = total ? fused_bytes(t) : nullptr;
    const bool contiguous =
        t.visit([](const auto& x) { return x.is_contiguous(); }) && t.numel() == total;
    if (total == 0) {
      fi.home = fused_home::direct;
    } else if (t.numel() == 1) {
      add_splat(id, fi.base);
      continue;
    } else if (contiguous) {
      fi.home = fused_home::direct;
    } else {
      fi.home = fused_home::gather;
      const shape bst = ember::detail::broadcast_strides(t.shape(), t.strides(), out_shape);
      fused_coalesce(out_shape, bst, fi.sizes, fi.strides);
      slot[static_cast<std::size_t>(id)] = nscratch++;
    }
    home[static_cast<std::size_t>(id)] = fi.home;
    ins.push_back(std::move(fi));
  }
  outputs.assign(body.outputs.size(), any_tensor());
  std::vector<std::byte*> out_base(body.outputs.size(), nullptr);
  for (std::size_t j = 0; j < body.outputs.size(); ++j) {
    outputs[j] = visit_fused_dtype(body.at(body.outputs[j]).type, [&](auto e) {
      return any_tensor(empty<decltype(e)>(out_shape));
    });
    out_base[j] = const_cast<std::byte*>(fused_bytes(outputs[j]));
  }
  std::vector<int> last_use(nv, -1);
  for (std::size_t i = 0; i < body.nodes.size(); ++i) {
    const node& n = body.nodes[i];
    if (!fusible(n, body)) {
      std::string types;
      for (int in : n.inputs) types += (types.empty() ? "" : ", ") + std::string(to_string(body.at(in).type));
      for (int o : n.outputs) types += " -> " + std::string(to_string(body.at(o).type));
      fail(errc::not_implemented, "jit::run_fused: cannot run ", name(n.kind), " (", types,
           ") in a fused group: fused groups compute in f32, f64 and bool (Note [Fusible])");
    }
    for (int in : n.inputs) {
      check(home[static_cast<std::size_t>(in)] != fused_home::none, errc::value,
            "jit::run_fused: %", body.at(in).name, " is used before it is defined");
      last_use[static_cast<std::size_t>(in)] = static_cast<int>(i);
    }
    const int out = n.outputs[0];
    if (n.kind == op::scalar) {
      const double s = jit_scalar_value(n);
      visit_fused_dtype(body.at(out).type, [&](auto e) {
        const auto v = convert<decltype(e)>(s);
        add_splat(out, reinterpret_cast<const std::byte*>(&v));
      });
    } else {
      home[static_cast<std::size_t>(out)] = fused_home::scratch;
    }
  }
  std::vector<std::pair<int, std::size_t>> copies;  // (value, output index) copied per tile
  for (std::size_t j = 0; j < body.outputs.size(); ++j) {
    const auto id = static_cast<std::size_t>(body.outputs[j]);
    (void)body.at(body.outputs[j]);  // range check
    check(home[id] != fused_home::none, errc::value, "jit::run_fused: output %",
          body.values[id].name, " is not computed by the group");
    if (home[id] == fused_home::scratch && slot[id] < 0) {
      home[id] = fused_home::output;
      slot[id] = static_cast<int>(j);
    } else {
      copies.emplace_back(static_cast<int>(id), j);
    }
  }
  std::vector<fused_step> steps;
  std::vector<int> free_slots;
  for (std::size_t i = 0; i < body.nodes.size(); ++i) {
    const node& n = body.nodes[i];
    if (n.kind == op::scalar) continue;
    fused_step s;
    s.kernel = fused_select_kernel(n, body);
    check(s.kernel != nullptr, errc::internal, "jit::run_fused: no kernel for ", name(n.kind));
    for (std::size_t k = 0; k < n.inputs.size(); ++k) s.in[k] = n.inputs[k];
    s.out = n.outputs[0];
    const auto o = static_cast<std::size_t>(s.out);
    if (home[o] == fused_home::scratch) {
      if (free_slots.empty()) {
        slot[o] = nscratch++;
      } else {
        slot[o] = free_slots.back();
        free_slots.pop_back();
      }
    }
    for (std::size_t k = 0; k < n.inputs.size(); ++k) {  // free the inputs dead after this node
      const auto v = static_cast<std::size_t>(n.inputs[k]);
      const bool seen = std::find(n.inputs.begin(), n.inputs.begin() + static_cast<std::ptrdiff_t>(k),
                                  n.inputs[k]) != n.inputs.begin() + static_cast<std::ptrdiff_t>(k);
      if (!seen && home[v] == fused_home::scratch && last_use[v] == static_cast<int>(i))
        free_slots.push_back(slot[v]);
    }
    if (home[o] == fused_home::scratch && last_use[o] < 0) free_slots.push_back(slot[o]);
    steps.push_back(s);
  }
  if (total == 0) return;

  // ---- run: tiles [b, e) with this chunk's own scratch -------------------------------------
  const std::int64_t ntiles = (total + T - 1) / T;
  auto run_tiles = [&](std::int64_t tb, std::int64_t te) {
    std::unique_ptr<std::byte[]> scratch(new std::byte[static_cast<std::size_t>(nscratch) * T * 8 + 64]);
    std::vector<std::byte*> ptr(nv, nullptr);
    for (std::size_t v = 0; v < nv; ++v) {
      if (home[v] == fused_home::splat) ptr[v] = splats[static_cast<std::size_t>(slot[v])].get();
      if (home[v] == fused_home::scratch || home[v] == fused_home::gather)
        ptr[v] = scratch.get() + static_cast<std::size_t>(slot[v]) * T * 8;
    }
    for (std::int64_t tile = tb; tile < te; ++tile) {
      const std::int64_t t0 = tile * T, m = std::min(T, total - t0);
      for (const fused_input& fi : ins) {
        const auto v = static_cast<std::size_t>(fi.value);
        const std::size_t sz = item_size(body.values[v].type);
        if (fi.home == fused_home::direct) {
          ptr[v] = const_cast<std::byte*>(fi.base) + static_cast<std::size_t>(t0) * sz;
        } else if (sz == 8) {
          fused_gather(reinterpret_cast<std::uint64_t*>(ptr[v]),
                      reinterpret_cast<const std::uint64_t*>(fi.base), fi.sizes, fi.strides, t0, m);
        } else if (sz == 4) {
          fused_gather(reinterpret_cast<std::uint32_t*>(ptr[v]),
                      reinterpret_cast<const std::uint32_t*>(fi.base), fi.sizes, fi.strides, t0, m);
        } else {
          fused_gather(reinterpret_cast<std::uint8_t*>(ptr[v]),
                      reinterpret_cast<const std::uint8_t*>(fi.base), fi.sizes, fi.strides, t0, m);
        }
      }
      for (const fused_step& s : steps) {
        const auto o = static_cast<std::size_t>(s.out);
        if (home[o] == fused_home::output)
          ptr[o] = out_base[static_cast<std::size_t>(slot[o])] +
                   static_cast<std::size_t>(t0) * item_size(body.values[o].type);
        const void* args[3] = {s.in[0] >= 0 ? ptr[static_cast<std::size_t>(s.in[0])] : nullptr,
                               s.in[1] >= 0 ? ptr[static_cast<std::size_t>(s.in[1])] : nullptr,
                               s.in[2] >= 0 ? ptr[static_cast<std::size_t>(s.in[2])] : nullptr};
        s.kernel(args, ptr[o], m);
      }
      for (const auto& [v, j] : copies) {
        const std::size_t sz = item_size(body.values[static_cast<std::size_t>(v)].type);
        std::memcpy(out_base[j] + static_cast<std::size_t>(t0) * sz,
                    ptr[static_cast<std::size_t>(v)], static_cast<std::size_t>(m) * sz);
      }
    }
  };
  if (total <= fused_grain)
    run_tiles(0, ntiles);
  else
    parallel_for(0, ntiles, fused_grain / T, run_tiles);
}

}  // namespace ember::jit
