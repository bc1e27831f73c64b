// Matrix products with PyTorch's semantics: matmul (1-D, 2-D, batched with broadcasting), mm,
// bmm, mv, dot, addmm, baddbmm and nn::functional::linear. Every one runs detail::gemm on the
// operands' own strides (transposed and step-sliced views are not copied).
#pragma once

#include <ember/core/error.hpp>
#include <ember/core/parallel.hpp>
#include <ember/core/shape.hpp>
#include <ember/core/view_strides.hpp>
#include <ember/eval/assign.hpp>
#include <ember/expr/operators.hpp>
#include <ember/ops/gemm.hpp>
#include <ember/tensor.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

namespace ember {

// the backward functions below call these (declared here, defined after them)
template <operand A, operand B>
tensor<value_type_t<A>> matmul(const A& a_in, const B& b_in);
template <operand A, operand B>
tensor<value_type_t<A>> mm(const A& a_in, const B& b_in);

namespace detail {

template <class TA, class TB>
constexpr void matmul_check_types() {
  static_assert(std::is_same_v<TA, TB>,
                "ember::matmul/mm/bmm/linear: both operands must have the same element type; "
                "convert one with to<U>() or cast<U>()");
  static_assert(!std::is_same_v<TA, bool>,
                "ember::matmul/mm/bmm/linear: bool tensors cannot be multiplied; convert them "
                "with to<float>() (or another arithmetic type) first");
}

/// Both operands on one device, and that device is the CPU (the only one with a GEMM here).
template <class T>
void matmul_check_devices(const tensor<T>& a, const tensor<T>& b, const char* op) {
  check(a.device() == b.device(), errc::device, op, ": expected both tensors on the same device, ",
        "got ", a.device(), " and ", b.device());
  if (!a.device().is_cpu())
    check(std::is_same_v<T, float> || std::is_same_v<T, double>, errc::not_implemented, op,
          ": ", dtype_of<T>, " tensors on ", a.device(), " (device matrix products are f32 and ",
          "f64)");
}

/// A matrix operand the device GEMM can read: one of its last two strides is 1 and the other
/// spans a row (or column); otherwise a contiguous copy.
template <class T>
tensor<T> gemm_operand(const tensor<T>& t) {
  const std::int64_t rs = t.stride(-2), cs = t.stride(-1), rows = t.size(-2), cols = t.size(-1);
  const bool row_major = cs == 1 && rs >= std::max<std::int64_t>(cols, 1);
  const bool col_major = rs == 1 && cs >= std::max<std::int64_t>(rows, 1);
  return row_major || col_major ? t : t.contiguous();
}

/// matmul_into on a device: one strided batched GEMM for 3-D operands, one GEMM per matrix
/// for more batch dims (Note [Device GEMM]).
template <class T>
void device_matmul_into(const tensor<T>& a_in, const tensor<T>& b_in, const tensor<T>& out,
                        T alpha, T beta) {
  const tensor<T> a = gemm_operand(a_in), b = gemm_operand(b_in);
  const std::int64_t r = out.dim();
  dispatch::gemm_problem g;
  g.dtype = static_cast<std::uint8_t>(dtype_of<T>);
  g.m = out.size(-2);
  g.n = out.size(-1);
  g.k = a.size(-1);
  g.alpha = static_cast<double>(alpha);
  g.beta = static_cast<double>(beta);
  g.a_rs = a.stride(-2);
  g.a_cs = a.stride(-1);
  g.b_rs = b.stride(-2);
  g.b_cs = b.stride(-1);
  g.c_rs = out.stride(-2);
  auto& kern = dispatch::kernel<op::matmul>(out.device(), dtype_of<T>, "matmul");
  if (r <= 3) {
    g.batch = r == 3 ? out.size(0) : 1;
    g.stride_a = r == 3 ? a.stride(0) : 0;
    g.stride_b = r == 3 ? b.stride(0) : 0;
    g.stride_c = r == 3 ? out.stride(0) : 0;
    g.a = a.data();
    g.b = b.data();
    g.c = out.data();
    kern(g, out.device());
    return;
  }
  const std::int64_t batches = out.numel() / std::max<std::int64_t>(g.m * g.n, 1);
  const shape& bs = out.shape();
  for (std::int64_t i = 0; i < batches; ++i) {
    std::int64_t ao = 0, bo = 0, co = 0, rest = i;
    for (std::int64_t d = r - 3; d >= 0; --d) {
      const std::int64_t x = rest % bs[d];
      rest /= bs[d];
      ao += x * a.stride(d);
      bo += x * b.stride(d);
      co += x * out.stride(d);
    }
    g.a = a.data() + ao;
    g.b = b.data() + bo;
    g.c = out.data() + co;
    kern(g, out.device());
  }
}

/// The stride of t's dims [0, r-1) (batch dims and rows) merged into one dim of rows, or
/// nullopt when they do not merge (e.g. a transposed or broadcast batch): lets a batch of
/// matrices times one matrix run as one GEMM. out is contiguous, so its rows always merge.
template <class T>
std::optional<std::int64_t> merged_row_stride(const tensor<T>& t) {
  const shape& s = t.shape();
  const shape& st = t.strides();
  std::int64_t stride = 0;
  bool have = false;
  std::int64_t expect = 0;
  for (std::int64_t d = t.dim() - 2; d >= 0; --d) {
    if (s[d] == 1) continue;
    if (!have) {
      stride = st[d];
      expect = st[d] * s[d];
      have = true;
    } else {
      if (st[d] != expect) return std::nullopt;
      expect *= s[d];
    }
  }
  return have ? stride : std::int64_t{1};
}

/// out[..., m, n] = alpha * a[..., m, k] · b[..., k, n] + beta * out (beta == 0 ignores out).
/// a and b are already broadcast to out's batch dims (stride 0 where broadcast); out is a
/// fresh contiguous tensor. Batches run in parallel when each is too small to thread alone.
template <class T>
void matmul_into(const tensor<T>& a, const tensor<T>& b, const tensor<T>& out, T alpha, T beta) {
  const std::int64_t r = out.dim();
  const std::int64_t m = out.size(-2), n = out.size(-1), k = a.size(-1);
  const std::int64_t batches = r > 2 ? out.numel() / std::max<std::int64_t>(m * n, 1) : 1;
  if (out.numel() == 0) return;
  if (!out.device().is_cpu()) {
    device_matmul_into(a, b, out, alpha, beta);
    return;
  }
  const std::int64_t a_rs = a.stride(-2), a_cs = a.stride(-1);
  const std::int64_t b_rs = b.stride(-2), b_cs = b.stride(-1);
  const std::int64_t c_rs = out.stride(-2), c_cs = out.stride(-1);
  if (batches == 1) {
    gemm<T>(m, n, k, alpha, a.data(), a_rs, a_cs, b.data(), b_rs, b_cs, beta, out.data(), c_rs, c_cs);
    return;
  }
  // one matrix on the right for every batch, and a's (batch, m) rows on one stride: one GEMM
  // of batches * m rows (the common x · W of linear layers and 3-D activations)
  bool b_shared = true;
  for (std::int64_t d = 0; d < r - 2; ++d) b_shared = b_shared && (b.stride(d) == 0 || b.size(d) == 1);
  if (b_shared) {
    if (const auto rs = merged_row_stride(a)) {
      gemm<T>(batches * m, n, k, alpha, a.data(), *rs, a_cs, b.data(), b_rs, b_cs, beta,
              out.data(), c_rs, c_cs);
      return;
    }
  }
  const shape& bs = out.shape();
  auto offsets = [&](std::int64_t i, std::int64_t& ao, std::int64_t& bo, std::int64_t& co) {
    ao = bo = co = 0;
    for (std::int64_t d = r - 3; d >= 0; --d) {
      const std::int64_t x = i % bs[d];
      i /= bs[d];
      ao += x * a.stride(d);
      bo += x * b.stride(d);
      co += x * out.stride(d);
    }
  };
  const std::int64_t work = std::max<std::int64_t>(m * n * std::max<std::int64_t>(k, 1), 1);
  const std::int64_t grain = work >= gemm_thread_work * 4 ? batches : std::max<std::int64_t>(1, gemm_thread_work / work);
  parallel_for(0, batches, grain, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      std::int64_t ao, bo, co;
      offsets(i, ao, bo, co);
      // an empty operand (k == 0) has no buffer: no offset is applied to its null pointer
      const auto at = [](auto* p, std::int64_t off) { return p ? p + off : p; };
      gemm<T>(m, n, k, alpha, at(a.data(), ao), a_rs, a_cs, at(b.data(), bo), b_rs, b_cs, beta,
              at(out.data(), co), c_rs, c_cs);
    }
  });
}

/// The batch dims of a matrix operand (all but the last two).
inline shape matmul_batch(const shape& s) { return shape(s.begin(), s.end() - 2); }

}  // namespace detail

namespace detail {

/// matmul's forward (torch.matmul's shape rules), nothing recorded.
template <class T>
tensor<T> matmul_forward(const tensor<T>& a, const tensor<T>& b) {
  matmul_check_devices(a, b, "matmul");
  const std::int64_t da = a.dim(), db = b.dim();
  check(da >= 1 && db >= 1, errc::shape, "matmul: both arguments need at least 1 ",
        "dimension, got shapes ", a.shape(), " and ", b.shape());
  const tensor<T> a2 = da == 1 ? a.unsqueeze(0) : a;
  const tensor<T> b2 = db == 1 ? b.unsqueeze(1) : b;
  check(a2.size(-1) == b2.size(-2), errc::shape, "matmul: cannot multiply ", a.shape(), " by ",
        b.shape());
  const shape ba = matmul_batch(a2.shape()), bb = matmul_batch(b2.shape());
  shape batch;
  {
    const std::size_t nb = std::max(ba.size(), bb.size());
    batch = shape(nb);
    for (std::size_t i = 0; i < nb; ++i) {
      const std::int64_t x = i < nb - ba.size() ? 1 : ba[i - (nb - ba.size())];
      const std::int64_t y = i < nb - bb.size() ? 1 : bb[i - (nb - bb.size())];
      check(x == y || x == 1 || y == 1, errc::shape, "matmul: cannot multiply ", a.shape(),
            " by ", b.shape(), " (batch dimensions ", ba, " and ", bb, " do not broadcast)");
      batch[i] = x == 1 ? y : x;
    }
  }
  const std::int64_t m = a2.size(-2), n = b2.size(-1), k = a2.size(-1);
  shape full = batch;
  full.push_back(m);
  full.push_back(n);
  tensor<T> out = make_tensor<T>(full, a.device());
  shape ea = batch, eb = batch;
  ea.push_back(m), ea.push_back(k);
  eb.push_back(k), eb.push_back(n);
  matmul_into(a2.expand(ea), b2.expand(eb), out, T(1), T(0));
  shape result = batch;
  if (da > 1) result.push_back(m);
  if (db > 1) result.push_back(n);
  return out.view(result);
}

/// The product of all dims but the last (the rows of a stack of matrices seen as one).
inline std::int64_t leading_rows(const shape& s) {
  std::int64_t r = 1;
  for (std::size_t d = 0; d + 1 < s.size(); ++d) r *= s[d];
  return r;
}

/// s * t, or t itself when s == 1 (the alpha/beta of addmm and baddbmm).
template <class T>
tensor<T> scaled(const tensor<T>& t, double s) {
  if (s == 1) return t;
  return tensor<T>(t * static_cast<T>(s));
}

/// Note [Matmul backward]: with the 1-D operands made matrices (a as a row (1,k), b as a
/// column (k,1)) and g given the dims matmul removed, grad_a = g · bᵀ and grad_b = aᵀ · g,
/// each summed over the batch dims its operand was broadcast along (sum_to), then viewed in
/// the operand's shape. When b is one matrix under a stack of a's (x · W), a's batch dims fold
/// into rows and grad_b is one GEMM instead of a stack of products summed afterwards. Only
/// differentiable ops are used, so the gradient can itself be differentiated (create_graph).
template <class T>
std::vector<tensor<T>> matmul_backward(const tensor<T>& g, const tensor<T>& a, const tensor<T>& b,
                                       const shape& a_shape, const shape& b_shape, bool need_a,
                                       bool need_b) {
  const std::size_t da = a_shape.size(), db = b_shape.size();
  tensor<T> gm = g;
  if (da == 1) gm = gm.unsqueeze(gm.dim() - (db == 1 ? 0 : 1));
  if (db == 1) gm = gm.unsqueeze(gm.dim());
  std::vector<tensor<T>> grads(2);
  if (need_a) {
    const tensor<T> bm = db == 1 ? b.unsqueeze(1) : b;
    shape am = a_shape;
    if (da == 1) am.insert(am.begin(), 1);
    const tensor<T> ga = ember::matmul(gm, bm.transpose(-2, -1));
    grads[0] = autograd::detail::sum_to(ga, am).reshape(a_shape);
  }
  if (need_b) {
    const tensor<T> am = da == 1 ? a.unsqueeze(0) : a;
    shape bm = b_shape;
    if (db == 1) bm.push_back(1);
    tensor<T> gb;
    if (am.dim() > 2 && bm.size() == 2) {
      const std::int64_t k = am.size(-1), n = gm.size(-1), rows = leading_rows(am.shape());
      gb = ember::mm(am.reshape({rows, k}).t(), gm.reshape({rows, n}));
    } else {
      gb = autograd::detail::sum_to(ember::matmul(am.transpose(-2, -1), gm), bm);
    }
    grads[1] = gb.reshape(b_shape);
  }
  return grads;
}

}  // namespace detail

/// Matrix product with torch.matmul's rules: 1-D · 1-D is a dot product (0-d result); a 1-D
/// left operand is a row vector and a 1-D right operand a column vector (that dim is removed
/// from the result); operands of rank >= 3 are stacks of matrices whose batch dims broadcast.
///   em::matmul(em::ones<float>({2, 3}), em::ones<float>({3, 4}));     // (2,4), every value 3
///   em::matmul(em::randn<float>({8, 2, 3}), em::randn<float>({3}));  // (8,2)
/// Differentiable (grad_fn "matmul_backward", Note [Matmul backward]).
template <operand A, operand B>
tensor<value_type_t<A>> matmul(const A& a_in, const B& b_in) {
  using T = value_type_t<A>;
  detail::matmul_check_types<T, value_type_t<B>>();
  const tensor<T> a = detail::materialize(a_in);
  const tensor<T> b = detail::materialize(b_in);
  return jit::detail::traced_op(op::matmul, {}, [&]() -> tensor<T> {
    tensor<T> out;
    {
      no_grad_guard ng;
      out = detail::matmul_forward(a, b);
    }
    if constexpr (std::is_floating_point_v<T>) {
      if (!autograd::detail::any_requires_grad(a, b)) return out;
      const bool need_a = a.requires_grad(), need_b = b.requires_grad();
      // grad_a needs b, grad_b needs a: save only those
      autograd::detail::saved<T> sa(need_b ? a : tensor<T>()), sb(need_a ? b : tensor<T>());
      return autograd::detail::record<T>(
          "matmul_backward", std::move(out), {a, b},
          [sa, sb, as = a.shape(), bs = b.shape(), need_a, need_b](const tensor<T>& g) {
            return detail::matmul_backward(g, sa.unpack("matmul_backward"),
                                           sb.unpack("matmul_backward"), as, bs, need_a, need_b);
          });
    } else {
      return out;
    }
  }, a, b);
}

/// Product of two matrices (both 2-D): (m,k) · (k,n) -> (m,n). grad_fn "mm_backward".
template <operand A, operand B>
tensor<value_type_t<A>> mm(const A& a_in, const B& b_in) {
  using T = value_type_t<A>;
  detail::matmul_check_types<T, value_type_t<B>>();
  const tensor<T> a = detail::materialize(a_in);
  const tensor<T> b = detail::materialize(b_in);
  return jit::detail::traced_op(op::matmul, {}, [&]() -> tensor<T> {
    detail::matmul_check_devices(a, b, "mm");
    detail::check(a.dim() == 2 && b.dim() == 2, errc::shape, "mm: expects two 2-D tensors, got ",
                  "shapes ", a.shape(), " and ", b.shape());
    detail::check(a.size(1) == b.size(0), errc::shape, "mm: cannot multiply ", a.shape(), " by ",
                  b.shape());
    tensor<T> out = detail::make_tensor<T>({a.size(0), b.size(1)}, a.device());
    detail::matmul_into(a, b, out, T(1), T(0));
    if constexpr (std::is_floating_point_v<T>) {
      if (!autograd::detail::any_requires_grad(a, b)) return out;
      const bool need_a = a.requires_grad(), need_b = b.requires_grad();
      autograd::detail::saved<T> sa(need_b ? a : tensor<T>()), sb(need_a ? b : tensor<T>());
      return autograd::detail::record<T>(
          "mm_backward", std::move(out), {a, b}, [sa, sb, need_a, need_b](const tensor<T>& g) {
            std::vector<tensor<T>> grads(2);
            if (need_a) grads[0] = ember::mm(g, sb.unpack("mm_backward").t());
            if (need_b) grads[1] = ember::mm(sa.unpack("mm_backward").t(), g);
            return grads;
          });
    } else {
      return out;
    }
  }, a, b);
}

/// Batched product of two stacks of matrices with the same batch size (no broadcasting):
/// (B,m,k) · (B,k,n) -> (B,m,n). grad_fn "bmm_backward".
template <operand A, operand B>
tensor<value_type_t<A>> bmm(const A& a_in, const B& b_in) {
  using T = value_type_t<A>;
  detail::matmul_check_types<T, value_type_t<B>>();
  const tensor<T> a = detail::materialize(a_in);
  const tensor<T> b = detail::materialize(b_in);
  return jit::detail::traced_op(op::matmul, {}, [&]() -> tensor<T> {
    detail::matmul_check_devices(a, b, "bmm");
    detail::check(a.dim() == 3 && b.dim() == 3, errc::shape, "bmm: expects two 3-D tensors, got ",
                  "shapes ", a.shape(), " and ", b.shape());
    detail::check(a.size(0) == b.size(0) && a.size(2) == b.size(1), errc::shape,
                  "bmm: cannot multiply ", a.shape(), " by ", b.shape());
    tensor<T> out = detail::make_tensor<T>({a.size(0), a.size(1), b.size(2)}, a.device());
    detail::matmul_into(a, b, out, T(1), T(0));
    if constexpr (std::is_floating_point_v<T>) {
      if (!autograd::detail::any_requires_grad(a, b)) return out;
      const bool need_a = a.requires_grad(), need_b = b.requires_grad();
      autograd::detail::saved<T> sa(need_b ? a : tensor<T>()), sb(need_a ? b : tensor<T>());
      return autograd::detail::record<T>(
          "bmm_backward", std::move(out), {a, b}, [sa, sb, need_a, need_b](const tensor<T>& g) {
            std::vector<tensor<T>> grads(2);
            if (need_a) grads[0] = ember::bmm(g, sb.unpack("bmm_backward").transpose(1, 2));
            if (need_b) grads[1] = ember::bmm(sa.unpack("bmm_backward").transpose(1, 2), g);
            return grads;
          });
    } else {
      return out;
    }
  }, a, b);
}

/// Matrix times vector: (m,k) · (k) -> (m). grad_fn "mv_backward".
template <operand A, operand B>
tensor<value_type_t<A>> mv(const A& a_in, const B& v_in) {
  using T = value_type_t<A>;
  detail::matmul_check_types<T, value_type_t<B>>();
  const tensor<T> a = detail::materialize(a_in);
  const tensor<T> v = detail::materialize(v_in);
  detail::matmul_check_devices(a, v, "mv");
  detail::check(a.dim() == 2 && v.dim() == 1 && a.size(1) == v.size(0), errc::shape,
                "mv: cannot multiply ", a.shape(), " by ", v.shape(),
                " (expects a 2-D matrix and a 1-D vector of matching size)");
  tensor<T> out;
  {
    no_grad_guard ng;
    out = detail::matmul_forward(a, v);
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!autograd::detail::any_requires_grad(a, v)) return out;
    const bool need_a = a.requires_grad(), need_v = v.requires_grad();
    autograd::detail::saved<T> sa(need_v ? a : tensor<T>()), sv(need_a ? v : tensor<T>());
    return autograd::detail::record<T>(
        "mv_backward", std::move(out), {a, v}, [sa, sv, need_a, need_v](const tensor<T>& g) {
          std::vector<tensor<T>> grads(2);
          if (need_a) grads[0] = ember::mm(g.unsqueeze(1), sv.unpack("mv_backward").unsqueeze(0));
          if (need_v) grads[1] = ember::mv(sa.unpack("mv_backward").t(), g);
          return grads;
        });
  } else {
    return out;
  }
}

/// Dot product of two 1-D tensors of the same size (a 0-d result). grad_fn "dot_backward".
template <operand A, operand B>
tensor<value_type_t<A>> dot(const A& a_in, const B& b_in) {
  using T = value_type_t<A>;
  detail::matmul_check_types<T, value_type_t<B>>();
  const tensor<T> a = detail::materialize(a_in);
  const tensor<T> b = detail::materialize(b_in);
  detail::matmul_check_devices(a, b, "dot");
  detail::check(a.dim() == 1 && b.dim() == 1 && a.size(0) == b.size(0), errc::shape,
                "dot: expects two 1-D tensors of the same size, got shapes ", a.shape(), " and ",
                b.shape());
  tensor<T> out;
  {
    no_grad_guard ng;
    out = detail::matmul_forward(a, b);
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!autograd::detail::any_requires_grad(a, b)) return out;
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    autograd::detail::saved<T> sa(need_b ? a : tensor<T>()), sb(need_a ? b : tensor<T>());
    return autograd::detail::record<T>(
        "dot_backward", std::move(out), {a, b}, [sa, sb, need_a, need_b](const tensor<T>& g) {
          std::vector<tensor<T>> grads(2);
          if (need_a) grads[0] = tensor<T>(g * sb.unpack("dot_backward"));
          if (need_b) grads[1] = tensor<T>(g * sa.unpack("dot_backward"));
          return grads;
        });
  } else {
    return out;
  }
}

namespace detail {

/// The backward of addmm (Mat = false) and baddbmm (Mat = true: stacks, transposing dims 1, 2).
template <bool Batched, class T>
std::vector<tensor<T>> addmm_backward(const tensor<T>& g, const tensor<T>& a, const tensor<T>& b,
                                      const shape& bias_shape, double beta, double alpha,
                                      bool need_bias, bool need_a, bool need_b) {
  auto prod = [](const tensor<T>& x, const tensor<T>& y) {
    if constexpr (Batched) return ember::bmm(x, y); else return ember::mm(x, y);
  };
  auto tr = [](const tensor<T>& x) { return x.transpose(-2, -1); };
  std::vector<tensor<T>> grads(3);
  if (need_bias)
    grads[0] = beta == 0 ? autograd::detail::zeros_shaped<T>(bias_shape, g.device())
                         : autograd::detail::sum_to(scaled(g, beta), bias_shape);
  if (need_a) grads[1] = scaled(prod(g, tr(b)), alpha);
  if (need_b) grads[2] = scaled(prod(tr(a), g), alpha);
  return grads;
}

template <bool Batched, class T>
tensor<T> record_addmm(tensor<T> out, const tensor<T>& bias, const tensor<T>& a,
                       const tensor<T>& b, double beta, double alpha) {
  if constexpr (std::is_floating_point_v<T>) {
    if (!autograd::detail::any_requires_grad(bias, a, b)) return out;
    const char* name = Batched ? "baddbmm_backward" : "addmm_backward";
    const bool need_bias = bias.requires_grad(), need_a = a.requires_grad(),
               need_b = b.requires_grad();
    autograd::detail::saved<T> sa(need_b ? a : tensor<T>()), sb(need_a ? b : tensor<T>());
    return autograd::detail::record<T>(
        name, std::move(out), {bias, a, b},
        [sa, sb, name, bs = bias.shape(), beta, alpha, need_bias, need_a,
         need_b](const tensor<T>& g) {
          return addmm_backward<Batched>(g, sa.unpack(name), sb.unpack(name), bs, beta, alpha,
                                         need_bias, need_a, need_b);
        });
  } else {
    return out;
  }
}

}  // namespace detail

/// beta * bias + alpha * (a · b) for 2-D a and b; bias broadcasts to the (m,n) result. With
/// beta == 0 bias is not read (NaN in it does not propagate), as torch.addmm.
/// grad_fn "addmm_backward".
template <operand C, operand A, operand B>
tensor<value_type_t<A>> addmm(const C& bias_in, const A& a_in, const B& b_in, double beta = 1,
                              double alpha = 1) {
  using T = value_type_t<A>;
  detail::matmul_check_types<T, value_type_t<B>>();
  detail::matmul_check_types<T, value_type_t<C>>();
  const tensor<T> bias = detail::materialize(bias_in);
  const tensor<T> a = detail::materialize(a_in);
  const tensor<T> b = detail::materialize(b_in);
  detail::matmul_check_devices(a, b, "addmm");
  detail::matmul_check_devices(a, bias, "addmm");
  detail::check(a.dim() == 2 && b.dim() == 2, errc::shape, "addmm: expects two 2-D matrices, ",
                "got shapes ", a.shape(), " and ", b.shape());
  detail::check(a.size(1) == b.size(0), errc::shape, "addmm: cannot multiply ", a.shape(), " by ",
                b.shape());
  const shape full{a.size(0), b.size(1)};
  detail::check(broadcastable_to(bias.shape(), full), errc::shape, "addmm: bias of shape ",
                bias.shape(), " does not broadcast to the product's shape ", full);
  tensor<T> out = detail::make_tensor<T>(full, a.device());
  {
    no_grad_guard ng;
    if (beta != 0) out.copy_(bias);
  }
  detail::matmul_into(a, b, out, static_cast<T>(alpha), static_cast<T>(beta));
  return detail::record_addmm<false>(std::move(out), bias, a, b, beta, alpha);
}

/// beta * bias + alpha * bmm(a, b) for 3-D a and b; bias broadcasts to the (B,m,n) result.
/// grad_fn "baddbmm_backward".
template <operand C, operand A, operand B>
tensor<value_type_t<A>> baddbmm(const C& bias_in, const A& a_in, const B& b_in, double beta = 1,
                                double alpha = 1) {
  using T = value_type_t<A>;
  detail::matmul_check_types<T, value_type_t<B>>();
  detail::matmul_check_types<T, value_type_t<C>>();
  const tensor<T> bias = detail::materialize(bias_in);
  const tensor<T> a = detail::materialize(a_in);
  const tensor<T> b = detail::materialize(b_in);
  detail::matmul_check_devices(a, b, "baddbmm");
  detail::matmul_check_devices(a, bias, "baddbmm");
  detail::check(a.dim() == 3 && b.dim() == 3, errc::shape, "baddbmm: expects two 3-D tensors, ",
                "got shapes ", a.shape(), " and ", b.shape());
  detail::check(a.size(0) == b.size(0) && a.size(2) == b.size(1), errc::shape,
                "baddbmm: cannot multiply ", a.shape(), " by ", b.shape());
  const shape full{a.size(0), a.size(1), b.size(2)};
  detail::check(broadcastable_to(bias.shape(), full), errc::shape, "baddbmm: bias of shape ",
                bias.shape(), " does not broadcast to the product's shape ", full);
  tensor<T> out = detail::make_tensor<T>(full, a.device());
  {
    no_grad_guard ng;
    if (beta != 0) out.copy_(bias);
  }
  detail::matmul_into(a, b, out, static_cast<T>(alpha), static_cast<T>(beta));
  return detail::record_addmm<true>(std::move(out), bias, a, b, beta, alpha);
}

namespace detail {

/// Note [Linear epilogue]: nn::linear's bias is 1-D of out_features. It is added after the
/// product, row by row, in one pass over the output that also applies an optional ReLU (the
/// interpreter's linear-relu pairs, Note [Linear and ReLU] in jit/interpreter.hpp), instead of
/// a broadcast copy_ of the bias into the output before a beta = 1 GEMM: the copy_ went
/// through the expression machinery, ~3% of an MLP's batch-1 forward (bench J2). Each
/// element is alpha * (x · w) rounded, plus the bias: the value the beta = 1 form computes.
/// ReLU keeps NaN, as fn::relu.
template <class T>
void linear_epilogue(T* out, std::int64_t rows, std::int64_t n, const T* bias, bool relu) {
  auto run = [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      T* o = out + r * n;
      if (bias)
        for (std::int64_t j = 0; j < n; ++j) o[j] += bias[j];
      if (relu)
        for (std::int64_t j = 0; j < n; ++j) o[j] = o[j] < T(0) ? T(0) : o[j];
    }
  };
  parallel_for(0, rows, std::max<std::int64_t>(1, elementwise_grain / std::max<std::int64_t>(n, 1)), run);
}

/// x · wᵀ (+ bias) over the last dim of x (any rank >= 1), as torch.nn.functional.linear;
/// `relu` applies max(0, .) to the result (untracked: the caller records nothing for it).
template <class T>
tensor<T> linear_impl(const tensor<T>& x, const tensor<T>& w, const tensor<T>* bias,
                      bool relu = false) {
  matmul_check_devices(x, w, "linear");
  check(w.dim() == 2, errc::shape, "linear: weight must be 2-D (out_features, in_features), ",
        "got shape ", w.shape());
  check(x.dim() >= 1, errc::shape, "linear: input must have at least 1 dimension, got shape ",
        x.shape());
  check(x.size(-1) == w.size(1), errc::shape, "linear: cannot multiply ", x.shape(), " by ",
        w.shape(), "^T (input has ", x.size(-1), " features, weight expects ", w.size(1), ")");
  shape full(x.shape().begin(), x.shape().end() - 1);
  full.push_back(w.size(0));
  tensor<T> out = make_tensor<T>(full, x.device());
  T beta = T(0);
  const T* row_bias = nullptr;  // Note [Linear epilogue]
  const bool on_cpu = x.device().is_cpu();
  if (bias) {
    matmul_check_devices(x, *bias, "linear");
    check(broadcastable_to(bias->shape(), full), errc::shape, "linear: bias of shape ",
          bias->shape(), " does not broadcast to the output's shape ", full);
    if (on_cpu && bias->dim() == 1 && bias->size(0) == w.size(0) && bias->stride(0) == 1) {
      row_bias = bias->data();
    } else {
      out.copy_(*bias);
      beta = T(1);
    }
  }
  const tensor<T> wt = w.t();
  if (x.dim() <= 2) {
    const tensor<T> x2 = x.dim() == 1 ? x.unsqueeze(0) : x;
    matmul_into(x2, wt, x.dim() == 1 ? out.unsqueeze(0) : out, T(1), beta);
  } else {
    // (..., in) rows: one GEMM when they share a stride, batched otherwise
    shape eb(x.shape().begin(), x.shape().end() - 2);
    eb.push_back(w.size(1));
    eb.push_back(w.size(0));
    matmul_into(x, wt.expand(eb), out, T(1), beta);
  }
  const std::int64_t n = w.size(0);
  if (!on_cpu) {  // the bias went in through beta; ReLU is one more elementwise pass
    if (relu) out = evaluate_raw(ember::relu(out));
    return out;
  }
  if ((row_bias || relu) && out.numel() > 0)
    linear_epilogue(out.data(), out.numel() / n, n, row_bias, relu);
  return out;
}

template <class T>
tensor<T> linear_untraced(const tensor<T>& x, const tensor<T>& w, const tensor<T>& bias);

/// linear with its backward (grad_fn "linear_backward"): grad_x = g · w, grad_w = gᵀ · x over
/// all leading dims folded into rows (one GEMM), grad_bias = g summed to bias's shape.
template <class T>
tensor<T> linear_recorded(const tensor<T>& x, const tensor<T>& w, const tensor<T>& bias) {
  const jit::detail::op_scope traced;
  tensor<T> out = linear_untraced(x, w, bias);
  if (traced) {
    tensor<T> b = bias;
    if (!b.defined()) b = make_tensor<T>({w.size(0)}, w.device()).zero_();
    traced.record(op::linear, out, {}, x, w, b);
  }
  return out;
}

template <class T>
tensor<T> linear_untraced(const tensor<T>& x, const tensor<T>& w, const tensor<T>& bias) {
  tensor<T> out;
  {
    no_grad_guard ng;
    out = linear_impl<T>(x, w, bias.defined() ? &bias : nullptr);
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!autograd::detail::any_requires_grad(x, w, bias)) return out;
    const bool need_x = x.requires_grad(), need_w = w.requires_grad(),
               need_bias = bias.defined() && bias.requires_grad();
    autograd::detail::saved<T> sx(need_w ? x : tensor<T>()), sw(need_x ? w : tensor<T>());
    return autograd::detail::record<T>(
        "linear_backward", std::move(out), {x, w, bias},
        [sx, sw, xs = x.shape(), bs = bias.defined() ? bias.shape() : shape{}, need_x, need_w,
         need_bias](const tensor<T>& g) {
          std::vector<tensor<T>> grads(3);
          if (need_x) grads[0] = ember::matmul(g, sw.unpack("linear_backward"));
          if (need_w) {
            const tensor<T>& x = sx.unpack("linear_backward");
            const std::int64_t rows = leading_rows(xs), in = xs.back(), out_f = g.size(-1);
            grads[1] = ember::mm(g.reshape({rows, out_f}).t(), x.reshape({rows, in}));
          }
          if (need_bias) grads[2] = autograd::detail::sum_to(g, bs);
          return grads;
        });
  } else {
    return out;
  }
}

}  // namespace detail

namespace nn::functional {

/// y = x · weightᵀ for x of shape (..., in_features) and weight (out_features, in_features).
///   auto y = F::linear(em::randn<float>({8, 64}), em::randn<float>({32, 64}));  // (8,32)
template <operand X, operand W>
tensor<value_type_t<X>> linear(const X& x, const W& weight) {
  using T = value_type_t<X>;
  detail::matmul_check_types<T, value_type_t<W>>();
  return detail::linear_recorded<T>(detail::materialize(x), detail::materialize(weight),
                                    tensor<T>());
}

/// y = x · weightᵀ + bias (bias of shape (out_features), or anything that broadcasts to y).
template <operand X, operand W, operand Bias>
tensor<value_type_t<X>> linear(const X& x, const W& weight, const Bias& bias) {
  using T = value_type_t<X>;
  detail::matmul_check_types<T, value_type_t<W>>();
  detail::matmul_check_types<T, value_type_t<Bias>>();
  return detail::linear_recorded<T>(detail::materialize(x), detail::materialize(weight),
                                    detail::materialize(bias));
}

}  // namespace nn::functional
}  // namespace ember
