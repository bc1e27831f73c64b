// The graph interpreter: runs one node with ember's eager kernels (so a graph run with grad mode
// on records autograd like eager code), and a whole graph over its inputs.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/autograd/meta.hpp>
#include <ember/core/small_vector.hpp>
#include <ember/eval/reduce.hpp>
#include <ember/expr/operators.hpp>
#include <ember/jit/custom.hpp>
#include <ember/jit/fused.hpp>
#include <ember/jit/graph.hpp>
#include <ember/jit/record.hpp>
#include <ember/ops/attention.hpp>
#include <ember/ops/conv.hpp>
#include <ember/ops/index.hpp>
#include <ember/ops/join.hpp>
#include <ember/ops/matmul.hpp>
#include <ember/ops/norm.hpp>
#include <ember/ops/pool.hpp>
#include <ember/ops/softmax.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ember::jit {
namespace detail {

/// f(tensor<T>) for the dtypes `kind` supports: floats only, or floats and int32/int64.
template <bool Ints, class F>
any_tensor visit_numeric(const any_tensor& x, op kind, F&& f) {
  switch (x.dtype()) {
    case dtype::f32: return f(x.get<float>());
    case dtype::f64: return f(x.get<double>());
    case dtype::i64:
      if constexpr (Ints) return f(x.get<std::int64_t>());
      break;
    case dtype::i32:
      if constexpr (Ints) return f(x.get<std::int32_t>());
      break;
    default: break;
  }
  ::ember::detail::check(false, errc::dtype, "jit: ", name(kind), " is not available for ",
                         x.dtype(), " tensors (shape ", x.shape(), ")");
  return {};
}

/// The graph's element types: f32, f64, i32, i64, bool.
template <class F>
any_tensor visit_graph_dtype(const any_tensor& x, const char* what, F&& f) {
  switch (x.dtype()) {
    case dtype::f32: return f(x.get<float>());
    case dtype::f64: return f(x.get<double>());
    case dtype::i64: return f(x.get<std::int64_t>());
    case dtype::i32: return f(x.get<std::int32_t>());
    case dtype::boolean: return f(x.get<bool>());
    default: break;
  }
  ::ember::detail::check(false, errc::dtype, "jit: ", what, " is not available for ", x.dtype(),
                         " tensors (shape ", x.shape(), ")");
  return {};
}
template <class F>
any_tensor visit_graph_dtype(dtype t, const char* what, F&& f) {
  switch (t) {
    case dtype::f32: return f(float{});
    case dtype::f64: return f(double{});
    case dtype::i64: return f(std::int64_t{});
    case dtype::i32: return f(std::int32_t{});
    case dtype::boolean: return f(bool{});
    default: break;
  }
  ::ember::detail::check(false, errc::dtype, "jit: ", what, " is not available for ", t, " tensors");
  return {};
}

inline shape to_shape(const std::vector<std::int64_t>& v) { return shape(v.begin(), v.end()); }
inline ember::size2 to_size2(const node& n, const char* key) {
  const auto& v = attr<std::vector<std::int64_t>>(n, key);
  ::ember::detail::check(v.size() == 2, errc::value, "jit: ", name(n.kind), " attribute \"", key,
                         "\" must hold 2 values, got ", v.size());
  return {v[0], v[1]};
}

/// A node's inputs during a graph run: pointers into the run's value table, so handing a
/// weight to a kernel costs no reference count (Note [Interpreter hot path]). Indexing is
/// unchecked, as the vectors it replaces (graphs are validated on load: arity, value ids).
class node_args {
 public:
  node_args(const any_tensor* const* p, std::size_t n) noexcept : p_(p), n_(n) {}
  std::size_t size() const noexcept { return n_; }
  const any_tensor& operator[](std::size_t i) const noexcept { return *p_[i]; }
  const any_tensor& at(std::size_t i) const {
    ::ember::detail::check(i < n_, errc::value, "jit: the node has ", n_, " inputs, input ", i,
                           " was asked for");
    return *p_[i];
  }
  const any_tensor& front() const { return at(0); }
  struct iterator {
    const any_tensor* const* p;
    const any_tensor& operator*() const noexcept { return **p; }
    iterator& operator++() noexcept { return ++p, *this; }
    bool operator!=(const iterator& o) const noexcept { return p != o.p; }
  };
  iterator begin() const noexcept { return {p_}; }
  iterator end() const noexcept { return {p_ + n_}; }

 private:
  const any_tensor* const* p_;
  std::size_t n_;
};

template <class F, class T>
any_tensor unary_as(const tensor<T>& t) {
  return tensor<typename expr::unary<F, expr::leaf<T>>::value_type>(
      ::ember::detail::make_unary<F>(t));
}

template <class = void>
any_tensor run_unary(op kind, const any_tensor& x) {
  switch (kind) {
#define EMBER_JIT_UNARY(name_, ints)                                                   \
  case op::name_:                                                                      \
    return visit_numeric<ints>(x, kind, [](const auto& t) { return unary_as<fn::name_>(t); });
    EMBER_JIT_UNARY(neg, true)
    EMBER_JIT_UNARY(abs, true)
    EMBER_JIT_UNARY(exp, false)
    EMBER_JIT_UNARY(expm1, false)
    EMBER_JIT_UNARY(log, false)
    EMBER_JIT_UNARY(log1p, false)
    EMBER_JIT_UNARY(log2, false)
    EMBER_JIT_UNARY(sqrt, false)
    EMBER_JIT_UNARY(rsqrt, false)
    EMBER_JIT_UNARY(square, true)
    EMBER_JIT_UNARY(sin, false)
    EMBER_JIT_UNARY(cos, false)
    EMBER_JIT_UNARY(tanh, false)
    EMBER_JIT_UNARY(sigmoid, false)
    EMBER_JIT_UNARY(relu, true)
    EMBER_JIT_UNARY(gelu, false)
    EMBER_JIT_UNARY(gelu_tanh, false)
    EMBER_JIT_UNARY(silu, false)
    EMBER_JIT_UNARY(softplus, false)
    EMBER_JIT_UNARY(sign, true)
    EMBER_JIT_UNARY(floor, false)
    EMBER_JIT_UNARY(ceil, false)
    EMBER_JIT_UNARY(round, false)
    EMBER_JIT_UNARY(reciprocal, false)
    EMBER_JIT_UNARY(erf, false)
    EMBER_JIT_UNARY(gelu_tanh_grad, false)
#undef EMBER_JIT_UNARY
    case op::logical_not:
      return tensor<bool>(::ember::detail::make_unary<fn::logical_not>(x.get<bool>()));
    default: break;
  }
  ::ember::detail::check(false, errc::internal, "jit: ", name(kind), " is not a unary op");
  return {};
}

template <class F, class T>
any_tensor binary_as(const tensor<T>& a, const any_tensor& b_any) {
  const tensor<T> b = b_any.get<T>();
  return tensor<typename expr::binary<F, expr::leaf<T>, expr::leaf<T>>::value_type>(
      ::ember::detail::make_binary<F>(a, b));
}

/// f over n contiguous elements in place, packet by packet, the last packet padded with the
/// last element: run_elementwise's values bit for bit (Note [Traversal]) without its setup
/// (coalescing, traversal modes), which is most of the cost of a 256-element activation. For
/// tensors below one parallel task (elementwise_grain): larger ones go through run_elementwise.
template <class F, class T>
void apply_in_place(T* p, std::int64_t n) {
#if EMBER_HAS_XSIMD
  constexpr auto W = static_cast<std::int64_t>(simd::width<T>);
  std::int64_t i = 0;
  for (; i + W <= n; i += W) simd::store(p + i, F{}(simd::load(p + i)));
  if (i < n) {
    alignas(64) T buf[W];
    for (std::int64_t k = 0; k < W; ++k) buf[k] = p[i + std::min(k, n - i - 1)];
    simd::store(buf, F{}(simd::load(buf)));
    for (std::int64_t k = 0; k < n - i; ++k) p[i + k] = buf[k];
  }
#else
  for (std::int64_t i = 0; i < n; ++i) p[i] = F{}(p[i]);
#endif
}

/// Applies a float unary op in place to a tensor nothing else refers to (the interpreter's
/// last use of an intermediate, with grad mode off): no new buffer, one pass over hot memory.
template <class = void>
bool run_unary_in_place(op kind, any_tensor& x) {
  if (is_grad_enabled() || (x.dtype() != dtype::f32 && x.dtype() != dtype::f64)) return false;
  const auto& impl = x.impl_ptr();
  if (impl.use_count() != 1 || impl->storage.use_count() != 1 || impl->autograd) return false;
  if (kind == op::logical_not || !x.device().is_cpu()) return false;
  bool done = false;
  x.visit([&](const auto& t) {
    using T = typename std::remove_cvref_t<decltype(t)>::value_type;
    if constexpr (std::is_floating_point_v<T>) {
    if (!t.is_contiguous()) return;
    switch (kind) {
#define EMBER_JIT_IN_PLACE(name_)                                                              \
  case op::name_:                                                                              \
    if (t.numel() < ::ember::detail::elementwise_grain)                                        \
      apply_in_place<fn::name_>(t.data(), t.numel());                                          \
    else                                                                                       \
      ::ember::detail::run_elementwise(t.data(), t.strides(), t.shape(),                       \
                                       ::ember::detail::make_unary<fn::name_>(t));             \
    done = true;                                                                               \
    break;
      EMBER_JIT_IN_PLACE(neg) EMBER_JIT_IN_PLACE(abs) EMBER_JIT_IN_PLACE(exp)
      EMBER_JIT_IN_PLACE(expm1) EMBER_JIT_IN_PLACE(log) EMBER_JIT_IN_PLACE(log1p)
      EMBER_JIT_IN_PLACE(log2) EMBER_JIT_IN_PLACE(sqrt) EMBER_JIT_IN_PLACE(rsqrt)
      EMBER_JIT_IN_PLACE(square) EMBER_JIT_IN_PLACE(sin) EMBER_JIT_IN_PLACE(cos)
      EMBER_JIT_IN_PLACE(tanh) EMBER_JIT_IN_PLACE(sigmoid) EMBER_JIT_IN_PLACE(relu)
      EMBER_JIT_IN_PLACE(gelu) EMBER_JIT_IN_PLACE(gelu_tanh) EMBER_JIT_IN_PLACE(silu)
      EMBER_JIT_IN_PLACE(softplus) EMBER_JIT_IN_PLACE(sign) EMBER_JIT_IN_PLACE(floor)
      EMBER_JIT_IN_PLACE(ceil) EMBER_JIT_IN_PLACE(round) EMBER_JIT_IN_PLACE(reciprocal)
      EMBER_JIT_IN_PLACE(erf)
#undef EMBER_JIT_IN_PLACE
      default: break;
    }
    }
  });
  return done;
}

/// Note [Scalars beside device values]: a scalar node's value is a 0-d CPU tensor; beside a
/// device tensor in an elementwise node it moves to that device (as PyTorch lets 0-d CPU
/// tensors join CUDA ops). Other mixes stay the eager ops' device errors. A template (Note
/// [Deferred instantiation]): as an inline function it instantiated `to` for every dtype in
/// every program that includes ember.hpp (1.8 s of clang's 13.7 s on that file alone).
template <int = 0>
any_tensor beside(const any_tensor& x, const any_tensor& other) {
  if (!x.device().is_cpu() || other.device().is_cpu() || !x.shape().empty()) return x;
  return x.visit([&](const auto& t) -> any_tensor { return t.to(other.device()); });
}

template <class = void>
any_tensor run_binary(op kind, const any_tensor& a_in, const any_tensor& b_in) {
  const any_tensor a = beside(a_in, b_in), b = beside(b_in, a_in);
  ::ember::detail::check(a.dtype() == b.dtype(), errc::dtype, "jit: ", name(kind),
                         " of a ", a.dtype(), " and a ", b.dtype(), " value (shapes ", a.shape(),
                         ", ", b.shape(), ")");
  switch (kind) {
#define EMBER_JIT_BINARY(name_, ints)                                                         \
  case op::name_:                                                                             \
    return visit_numeric<ints>(a, kind, [&](const auto& t) { return binary_as<fn::name_>(t, b); });
    EMBER_JIT_BINARY(add, true)
    EMBER_JIT_BINARY(sub, true)
    EMBER_JIT_BINARY(mul, true)
    EMBER_JIT_BINARY(div, true)
    EMBER_JIT_BINARY(pow, false)
    EMBER_JIT_BINARY(maximum, true)
    EMBER_JIT_BINARY(minimum, true)
    EMBER_JIT_BINARY(eq, true)
    EMBER_JIT_BINARY(ne, true)
    EMBER_JIT_BINARY(lt, true)
    EMBER_JIT_BINARY(le, true)
    EMBER_JIT_BINARY(gt, true)
    EMBER_JIT_BINARY(ge, true)
    EMBER_JIT_BINARY(leaky_relu, false)
    EMBER_JIT_BINARY(elu, false)
#undef EMBER_JIT_BINARY
    case op::logical_and:
      return tensor<bool>(::ember::detail::make_binary<fn::logical_and>(a.get<bool>(), b.get<bool>()));
    case op::logical_or:
      return tensor<bool>(::ember::detail::make_binary<fn::logical_or>(a.get<bool>(), b.get<bool>()));
    default: break;
  }
  ::ember::detail::check(false, errc::internal, "jit: ", name(kind), " is not a binary op");
  return {};
}

template <class = void>
any_tensor run_ternary(op kind, const any_tensor& a_in, const any_tensor& b_in, const any_tensor& c_in) {
  const any_tensor& dev = !a_in.device().is_cpu() ? a_in : !b_in.device().is_cpu() ? b_in : c_in;
  const any_tensor a = beside(a_in, dev), b = beside(b_in, dev), c = beside(c_in, dev);
  if (kind == op::where) {
    const tensor<bool> cond = a.get<bool>();
    return visit_graph_dtype(b, "where", [&](const auto& tb) -> any_tensor {
      using T = typename std::remove_cvref_t<decltype(tb)>::value_type;
      return tensor<T>(ember::where(cond, tb, c.get<T>()));
    });
  }
  return visit_numeric<true>(a, kind, [&](const auto& x) -> any_tensor {
    using T = typename std::remove_cvref_t<decltype(x)>::value_type;
    using L = expr::leaf<T>;
    return tensor<T>(expr::ternary<fn::clamp, L, L, L>(L(x), L(b.get<T>()), L(c.get<T>())));
  });
}

template <class = void>
any_tensor run_reduction(const node& n, const any_tensor& x) {
  const shape dims = to_shape(attr<std::vector<std::int64_t>>(n, "dims"));
  const bool keepdim = attr<std::int64_t>(n, "keepdim") != 0;
  switch (n.kind) {
    case op::sum:
      return visit_numeric<true>(x, n.kind, [&](const auto& t) -> any_tensor { return ember::sum(t, dims, keepdim); });
    case op::prod:
      return visit_numeric<true>(x, n.kind, [&](const auto& t) -> any_tensor { return ember::prod(t, dims, keepdim); });
    case op::amax:
      return visit_numeric<true>(x, n.kind, [&](const auto& t) -> any_tensor { return ember::amax(t, dims, keepdim); });
    case op::amin:
      return visit_numeric<true>(x, n.kind, [&](const auto& t) -> any_tensor { return ember::amin(t, dims, keepdim); });
    case op::mean:
      return visit_numeric<false>(x, n.kind, [&](const auto& t) -> any_tensor { return ember::mean(t, dims, keepdim); });
    case op::logsumexp:
      return visit_numeric<false>(x, n.kind, [&](const auto& t) -> any_tensor { return ember::logsumexp(t, dims, keepdim); });
    case op::var:
    case op::std: {
      const bool unbiased = attr<std::int64_t>(n, "correction") != 0;
      return visit_numeric<false>(x, n.kind, [&](const auto& t) -> any_tensor {
        using T = typename std::remove_cvref_t<decltype(t)>::value_type;
        tensor<T> v = ember::var(t, dims, unbiased, keepdim);
        if (n.kind == op::std) return tensor<T>(ember::sqrt(v));
        return v;
      });
    }
    default: break;
  }
  ::ember::detail::check(false, errc::internal, "jit: ", name(n.kind), " is not a reduction");
  return {};
}

/// reshape's target: 0 copies the input's extent at that position (the symbolic batch).
inline shape reshape_target(const node& n, const shape& in) {
  shape s = to_shape(attr<std::vector<std::int64_t>>(n, "shape"));
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s[i] == 0) {
      ::ember::detail::check(i < in.size(), errc::shape, "jit: reshape of ", in, " to ", s,
                             ": no input dimension ", i, " to copy");
      s[i] = in[i];
    }
  return s;
}

template <class T>
std::vector<tensor<T>> typed_list(const node_args& in, const char* what) {
  std::vector<tensor<T>> ts;
  for (const auto& t : in) {
    ::ember::detail::check(t.dtype() == dtype_of<T>, errc::dtype, "jit: ", what, " of ",
                           in.front().dtype(), " and ", t.dtype(), " tensors");
    ts.push_back(t.get<T>());
  }
  return ts;
}

template <class = void>
any_tensor run_float_op(const node& n, const node_args& in) {
  namespace F = ember::nn::functional;
  return visit_numeric<false>(in[0], n.kind, [&](const auto& x) -> any_tensor {
    using T = typename std::remove_cvref_t<decltype(x)>::value_type;
    auto arg = [&](std::size_t i) { return in[i].get<T>(); };
    switch (n.kind) {
      case op::matmul: return ember::matmul(x, arg(1));
      case op::linear: return F::linear(x, arg(1), arg(2));
      case op::conv2d:
        return F::conv2d(x, arg(1), {.bias = arg(2), .stride = to_size2(n, "stride"),
                                     .padding = to_size2(n, "padding"),
                                     .dilation = to_size2(n, "dilation"),
                                     .groups = attr<std::int64_t>(n, "groups")});
      case op::batch_norm:
        return F::batch_norm(x, arg(1), arg(2),
                             {.weight = arg(3), .bias = arg(4),
                              .training = attr<std::int64_t>(n, "training") != 0,
                              .momentum = attr<double>(n, "momentum"), .eps = attr<double>(n, "eps")});
      case op::layer_norm:
        return F::layer_norm(x, {.normalized_shape = to_shape(attr<std::vector<std::int64_t>>(n, "normalized_shape")),
                                 .weight = arg(1), .bias = arg(2), .eps = attr<double>(n, "eps")});
      case op::group_norm:
        return F::group_norm(x, attr<std::int64_t>(n, "groups"),
                             {.weight = arg(1), .bias = arg(2), .eps = attr<double>(n, "eps")});
      case op::max_pool2d:
        return F::max_pool2d(x, {.kernel = to_size2(n, "kernel"), .stride = to_size2(n, "stride"),
                                 .padding = to_size2(n, "padding"),
                                 .dilation = to_size2(n, "dilation"),
                                 .ceil_mode = attr<std::int64_t>(n, "ceil_mode") != 0});
      case op::avg_pool2d:
        return F::avg_pool2d(x, {.kernel = to_size2(n, "kernel"), .stride = to_size2(n, "stride"),
                                 .padding = to_size2(n, "padding"),
                                 .count_include_pad = attr<std::int64_t>(n, "count_include_pad") != 0,
                                 .ceil_mode = attr<std::int64_t>(n, "ceil_mode") != 0});
      case op::adaptive_avg_pool2d:
        return F::adaptive_avg_pool2d(x, {.output_size = to_size2(n, "output_size")});
      case op::softmax: return ember::softmax(x, attr<std::int64_t>(n, "dim"));
      case op::log_softmax: return ember::log_softmax(x, attr<std::int64_t>(n, "dim"));
      case op::scaled_dot_product_attention: {
        F::attention_options o{.is_causal = attr<std::int64_t>(n, "is_causal") != 0};
        if (n.attrs.count("scale")) o.scale = attr<double>(n, "scale");
        if (in.size() == 3) return F::scaled_dot_product_attention(x, arg(1), arg(2), o);
        if (in[3].dtype() == dtype::boolean)
          return F::scaled_dot_product_attention(x, arg(1), arg(2), in[3].get<bool>(), o);
        return F::scaled_dot_product_attention(x, arg(1), arg(2), arg(3), o);
      }
      default: break;
    }
    ::ember::detail::check(false, errc::internal, "jit: ", name(n.kind), " is not a float op");
    return {};
  });
}

template <class = void>
any_tensor run_shape_op(const node& n, const node_args& in) {
  const any_tensor& x0 = in[0];
  return visit_graph_dtype(x0, name(n.kind).data(), [&](const auto& x) -> any_tensor {
    using T = typename std::remove_cvref_t<decltype(x)>::value_type;
    switch (n.kind) {
      case op::reshape: return x.reshape(reshape_target(n, x.shape()));
      case op::permute: return x.permute(to_shape(attr<std::vector<std::int64_t>>(n, "dims")));
      case op::expand: return x.expand(to_shape(attr<std::vector<std::int64_t>>(n, "shape")));
      case op::slice:
        return x.slice(attr<std::int64_t>(n, "dim"), attr<std::int64_t>(n, "start"),
                       attr<std::int64_t>(n, "end"), attr<std::int64_t>(n, "step"));
      case op::select: return x.select(attr<std::int64_t>(n, "dim"), attr<std::int64_t>(n, "index"));
      case op::contiguous: return x.clone();
      case op::detach: return x.detach();
      case op::cat: return ember::cat(typed_list<T>(in, "cat"), attr<std::int64_t>(n, "dim"));
      case op::stack: return ember::stack(typed_list<T>(in, "stack"), attr<std::int64_t>(n, "dim"));
      default: break;
    }
    ::ember::detail::check(false, errc::internal, "jit: ", name(n.kind), " is not a shape op");
    return {};
  });
}

}  // namespace detail

namespace detail {
/// One node with one output (everything but fused groups and custom ops).
template <class = void>
any_tensor run_single(const graph& g, const node& n, const node_args& in) {
  const op k = n.kind;
  if (k == op::scalar) {
    const value& out = g.at(n.outputs.at(0));
    const double v = attr<double>(n, "value");
    return {visit_graph_dtype(out.type, "scalar", [&](auto e) -> any_tensor {
      using T = decltype(e);
      tensor<T> t = ::ember::detail::make_tensor<T>(shape{});
      *t.data() = static_cast<T>(v);
      return t;
    })};
  }
  if (k == op::cast) {
    const dtype to = g.at(n.outputs.at(0)).type;
    return visit_graph_dtype(to, "cast", [&](auto e) -> any_tensor {
      using U = decltype(e);
      return visit_graph_dtype(in.at(0), "cast", [](const auto& x) -> any_tensor {
        return x.template to<U>();
      });
    });
  }
  if (k == op::argmax || k == op::argmin) {
    const bool keepdim = attr_or<std::int64_t>(n, "keepdim", 0) != 0;
    const bool has_dim = n.attrs.count("dim") != 0;
    return visit_numeric<true>(in.at(0), k, [&](const auto& x) -> any_tensor {
      if (k == op::argmax) return has_dim ? ember::argmax(x, attr<std::int64_t>(n, "dim"), keepdim) : ember::argmax(x);
      return has_dim ? ember::argmin(x, attr<std::int64_t>(n, "dim"), keepdim) : ember::argmin(x);
    });
  }
  if (k == op::embedding) {
    const auto w = in.at(1);
    return visit_numeric<false>(w, k, [&](const auto& wt) -> any_tensor {
      return ember::embedding(in.at(0).get<std::int64_t>(), wt);
    });
  }
  if (is_elementwise(k)) {
    switch (in.size()) {
      case 1: return run_unary(k, in[0]);
      case 2: return run_binary(k, in[0], in[1]);
      case 3: return run_ternary(k, in[0], in[1], in[2]);
      default: break;
    }
  }
  switch (k) {
    case op::sum: case op::mean: case op::prod: case op::amax: case op::amin:
    case op::var: case op::std: case op::logsumexp:
      return run_reduction(n, in.at(0));
    case op::reshape: case op::permute: case op::expand: case op::slice: case op::select:
    case op::contiguous: case op::detach: case op::cat: case op::stack:
      return run_shape_op(n, in);
    default:
      return run_float_op(n, in);
  }
}

}  // namespace detail

/// Runs one node on its input tensors (the graph supplies the output value types).
template <class = void>
std::vector<any_tensor> run_node(const graph& g, const node& n, const std::vector<any_tensor>& in) {
  using namespace detail;
  const op k = n.kind;
  if (k == op::fused) {
    ::ember::detail::check(n.body != nullptr, errc::value, "jit: fused node without a body");
    bool grad = false;
    if (is_grad_enabled())
      for (const auto& t : in)
        if (t.dtype() == dtype::f32 || t.dtype() == dtype::f64)
          grad = grad || t.visit([](const auto& x) { return x.requires_grad(); });
    const bool on_device = !in.empty() && !in[0].device().is_cpu();
    if (!grad) {
      std::vector<any_tensor> out;
      if (!on_device) {
        run_fused(*n.body, in, out);
        return out;
      }
      if (run_fused_on_device(*n.body, in, out)) return out;  // Note [Fused groups on devices]
    }
    // with autograd (or a group no device program holds): node by node, so each op records
    // its backward (each runs on the inputs' device)
    std::vector<any_tensor> env(n.body->values.size());
    for (std::size_t i = 0; i < n.body->inputs.size(); ++i)
      env[static_cast<std::size_t>(n.body->inputs[i])] = in.at(i);
    for (const node& b : n.body->nodes) {
      std::vector<any_tensor> bi;
      for (int v : b.inputs) bi.push_back(env[static_cast<std::size_t>(v)]);
      auto bo = run_node(*n.body, b, bi);
      for (std::size_t i = 0; i < b.outputs.size(); ++i) env[static_cast<std::size_t>(b.outputs[i])] = bo[i];
    }
    std::vector<any_tensor> out;
    for (int v : n.body->outputs) out.push_back(env[static_cast<std::size_t>(v)]);
    return out;
  }
  if (k == op::custom) return run_custom(attr<std::string>(n, "name"), in);
  std::vector<const any_tensor*> ptrs;
  ptrs.reserve(in.size());
  for (const auto& t : in) ptrs.push_back(&t);
  return {detail::run_single(g, n, detail::node_args(ptrs.data(), ptrs.size()))};
}

namespace detail {
/// Note [Linear and ReLU]: a linear node whose output only a relu reads (the next node) runs
/// as one: the bias and the ReLU are applied in the pass after the GEMM (Note [Linear
/// epilogue] in ops/matmul.hpp), so the pair costs one node's dispatch and no separate pass
/// over the output. The values are those of linear then relu, bit for bit: the same GEMM, the
/// same bias add, the same max(0, .). Not taken (an undefined result) when the run records
/// anything: autograd (grad mode on and an input that requires grad) or an enclosing trace
/// (a graph_module called inside a model being traced records linear and relu as eager ops).
template <class = void>
any_tensor run_linear_relu(const node_args& in) {
  if (in.size() != 3 || in[0].dtype() != in[1].dtype() || in[0].dtype() != in[2].dtype())
    return {};
  const jit::detail::op_scope traced;
  if (traced) return {};
  auto run = [&](auto e) -> any_tensor {
    using T = decltype(e);
    const tensor<T> x = in[0].get<T>(), w = in[1].get<T>(), b = in[2].get<T>();
    if (is_grad_enabled() && (x.requires_grad() || w.requires_grad() || b.requires_grad()))
      return {};
    no_grad_guard ng;
    return ::ember::detail::linear_impl<T>(x, w, &b, true);
  };
  switch (in[0].dtype()) {
    case dtype::f32: return run(float{});
    case dtype::f64: return run(double{});
    default: return {};
  }
}
}  // namespace detail

/// Runs a graph: checks the inputs against the graph's input values (count, dtype, rank, and
/// every extent except the symbolic batch), then runs the nodes in order.
///
/// Note [Interpreter hot path]: a batch-1 model spends microseconds in its kernels, so the run
/// itself must cost little more than eager code's calls. The value table holds pointers: the
/// caller's inputs and the graph's constants are read where they are (no copies, no reference
/// counts), and only values computed by this run are owned (`owned`). Tables of up to 64
/// values live on the stack (small_vector). A single-output node gets its inputs as a
/// node_args view of those pointers. Intermediates are released after their last use (the
/// caching allocator hands the same, cache-hot block to the next op), and a unary op on a dying
/// intermediate runs in place (run_unary_in_place), and a linear-relu pair as one node (Note
/// [Linear and ReLU]).
template <class = void>
std::vector<any_tensor> run_graph(const graph& g, const std::vector<any_tensor>& inputs) {
  ::ember::detail::check(inputs.size() == g.inputs.size(), errc::value, "jit: the graph takes ",
                         g.inputs.size(), " inputs, got ", inputs.size());
  const std::size_t nv = g.values.size();
  ::ember::detail::small_vector<const any_tensor*, 64> ref(nv, nullptr);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const value& v = g.at(g.inputs[i]);
    const any_tensor& t = inputs[i];
    ::ember::detail::check(t.defined(), errc::value, "jit: input ", i, " is undefined");
    bool ok = t.dtype() == v.type && t.dim() == static_cast<std::int64_t>(v.shape.size());
    for (std::size_t d = 0; ok && d < v.shape.size(); ++d)
      ok = v.shape[d] == symbolic || v.shape[d] == t.shape()[d];
    if (!ok) {
      std::string want = std::string(to_string(v.type)) + "[";
      for (std::size_t d = 0; d < v.shape.size(); ++d)
        want += (d ? ", " : "") + (v.shape[d] == symbolic ? std::string("N") : std::to_string(v.shape[d]));
      ::ember::detail::check(false, errc::shape, "jit: input ", i, " (%", v.name, ") must be ",
                             want, "], got ", t.dtype(), " of shape ", t.shape());
    }
    ref[static_cast<std::size_t>(g.inputs[i])] = &t;
  }
  // uses: the nodes still to read each value; graph outputs, inputs and constants are pinned
  // (never released, never overwritten in place)
  constexpr int pinned = 1 << 28;
  ::ember::detail::small_vector<int, 64> uses(nv, 0);
  for (const node& n : g.nodes)
    for (int v : n.inputs) ++uses[static_cast<std::size_t>(v)];
  for (int v : g.outputs) uses[static_cast<std::size_t>(v)] += pinned;
  for (int v : g.inputs) uses[static_cast<std::size_t>(v)] += pinned;
  for (const auto& [id, t] : g.constants) {
    ref[static_cast<std::size_t>(id)] = &t;
    uses[static_cast<std::size_t>(id)] += pinned;
  }
  std::vector<any_tensor> owned(nv);
  auto release_inputs = [&](const node& n) {
    for (int v : n.inputs)
      if (--uses[static_cast<std::size_t>(v)] == 0) owned[static_cast<std::size_t>(v)] = any_tensor();
  };
  auto missing = [&](int v) {
    ::ember::detail::check(false, errc::value, "jit: value %", g.at(v).name,
                           " is read before any node computes it");
  };
  ::ember::detail::small_vector<const any_tensor*, 8> args;
  for (std::size_t ni = 0; ni < g.nodes.size(); ++ni) {
    const node& n = g.nodes[ni];
    args.clear();
    for (int v : n.inputs) {
      const any_tensor* a = ref[static_cast<std::size_t>(v)];
      if (a == nullptr) missing(v);
      args.push_back(a);
    }
    const auto out0 = n.outputs.empty() ? std::size_t{0} : static_cast<std::size_t>(n.outputs[0]);
    if (n.kind == op::linear && n.outputs.size() == 1 && ni + 1 < g.nodes.size()) {
      const node& next = g.nodes[ni + 1];  // Note [Linear and ReLU]
      if (next.kind == op::relu && next.inputs.size() == 1 && next.outputs.size() == 1 &&
          static_cast<std::size_t>(next.inputs[0]) == out0 && uses[out0] == 1) {
        any_tensor y = detail::run_linear_relu(detail::node_args(args.data(), args.size()));
        if (y.defined()) {
          release_inputs(n);
          uses[out0] = 0;  // the relu's read, done
          const auto o = static_cast<std::size_t>(next.outputs[0]);
          owned[o] = std::move(y);
          ref[o] = &owned[o];
          ++ni;
          continue;
        }
      }
    }
    if (n.inputs.size() == 1 && n.outputs.size() == 1 && is_elementwise(n.kind) &&
        n.kind != op::cast && uses[static_cast<std::size_t>(n.inputs[0])] == 1 &&
        g.at(n.inputs[0]).type == g.at(n.outputs[0]).type) {
      auto& x = owned[static_cast<std::size_t>(n.inputs[0])];
      if (x.defined() && detail::run_unary_in_place(n.kind, x)) {
        uses[static_cast<std::size_t>(n.inputs[0])] = 0;
        ref[static_cast<std::size_t>(n.inputs[0])] = nullptr;
        owned[out0] = std::move(x);
        x = any_tensor();
        ref[out0] = &owned[out0];
        continue;
      }
    }
    if (n.kind != op::fused && n.kind != op::custom && n.outputs.size() == 1) {
      any_tensor out = detail::run_single(g, n, detail::node_args(args.data(), args.size()));
      release_inputs(n);
      owned[out0] = std::move(out);
      ref[out0] = &owned[out0];
      continue;
    }
    std::vector<any_tensor> in;
    in.reserve(args.size());
    for (const any_tensor* a : args) in.push_back(*a);
    auto out = run_node(g, n, in);
    ::ember::detail::check(out.size() == n.outputs.size(), errc::internal, "jit: ", name(n.kind),
                           " gave ", out.size(), " outputs, the graph expects ", n.outputs.size());
    in.clear();
    release_inputs(n);
    for (std::size_t i = 0; i < out.size(); ++i) {
      const auto o = static_cast<std::size_t>(n.outputs[i]);
      owned[o] = std::move(out[i]);
      ref[o] = &owned[o];
    }
  }
  std::vector<any_tensor> result;
  result.reserve(g.outputs.size());
  for (int v : g.outputs) {
    const any_tensor* r = ref[static_cast<std::size_t>(v)];
    if (r == nullptr) missing(v);
    result.push_back(*r);
  }
  return result;
}

}  // namespace ember::jit
