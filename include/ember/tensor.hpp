// tensor<T>: a cheap ref-counted handle to (storage, offset, shape, strides, device, autograd
// slot). Views share storage; copies of a handle share everything (like torch::Tensor).
#pragma once

#include <ember/autograd/meta.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>
#include <ember/core/storage.hpp>
#include <ember/core/view_strides.hpp>
#include <ember/dispatch/raw.hpp>
#include <ember/eval/strided.hpp>
#include <ember/expr/concepts.hpp>
#include <ember/jit/record.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <numeric>
#include <type_traits>
#include <utility>

namespace ember {

namespace detail {

/// The shared state behind every handle to one tensor.
struct tensor_impl {
  storage_ptr storage;
  std::int64_t offset = 0;  ///< in elements, from the start of storage
  shape sizes;
  shape strides;  ///< in elements
  dtype type = dtype::f32;
  std::shared_ptr<autograd_meta> autograd;  ///< grad, grad_fn, requires_grad (autograd layer)
};

/// Lowest and highest element offsets (relative to impl offset) a strided view touches.
inline std::pair<std::int64_t, std::int64_t> extent_range(const shape& sizes, const shape& strides) {
  std::int64_t lo = 0, hi = 0;
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) return {0, -1};
    const std::int64_t span = (sizes[d] - 1) * strides[d];
    (span < 0 ? lo : hi) += span;
  }
  return {lo, hi};
}

}  // namespace detail

template <class T = float>
class tensor;

namespace detail {
template <class T>
tensor<T> make_tensor(const shape& sizes, device dev = cpu);
/// Full reductions behind tensor::sum()/mean() (defined in eval/reduce.hpp).
template <class T>
tensor<T> sum_all(const tensor<T>& t);
template <class T>
tensor<T> mean_all(const tensor<T>& t);
}  // namespace detail

namespace autograd::detail {
// defined in autograd/engine.hpp (included at the end of this header)
template <class = void>
void run_backward(const variable_list& roots, const variable_list& grads,
                  const backward_options& opts);
std::string node_name(const std::shared_ptr<node>& fn);
/// Records a differentiable view: `inverse` maps the view's gradient back to the base's shape
/// (bijective views), or else `reapply` takes the same view of a tensor shaped like the base
/// (the gradient is scattered into zeros through it).
template <class T>
tensor<T> record_view(const tensor<T>& base, tensor<T> out,
                      std::function<tensor<T>(const tensor<T>&)> reapply,
                      std::function<tensor<T>(const tensor<T>&)> inverse, const char* name);
template <class T>
tensor<T> record_expand(const tensor<T>& base, tensor<T> out);
template <class T>
tensor<T> record_identity(const tensor<T>& base, tensor<T> out, const char* name);
template <class U, class T>
tensor<U> record_convert(const tensor<T>& src, tensor<U> out);
template <class T>
void record_copy(const tensor<T>& dst, const tensor<T>& src);
template <class T>
void check_inplace(const tensor<T>& dst, const char* op);
template <class T>
void record_fill(const tensor<T>& dst);
}  // namespace autograd::detail

/// An n-dimensional array of T on a device. Copying a tensor copies the handle, not the data:
///   auto a = em::zeros<float>({2, 3});  auto b = a;  b.fill_(1.f);  // a is now all ones
template <class T>
class tensor {
  static_assert(is_element_v<T>,
                "ember::tensor<T>: T must be float, double, std::int8_t, std::int16_t, "
                "std::int32_t, std::int64_t, std::uint8_t, bool, ember::half or ember::bfloat16");

 public:
  using value_type = T;
  /// Can this element type require gradients (float, double)?
  static constexpr bool differentiable =
      is_floating_v<T> && !std::is_same_v<T, half> && !std::is_same_v<T, bfloat16>;

  /// An undefined tensor (no storage): `defined()` is false.
  tensor() = default;
  explicit tensor(std::shared_ptr<detail::tensor_impl> impl) : impl_(std::move(impl)) {
    if (impl_)
      detail::check(impl_->type == dtype_of<T>, errc::dtype, "tensor<", dtype_of<T>,
                    ">: cannot view a tensor of dtype ", impl_->type);
  }

  /// Materializes an elementwise expression in one fused pass:
  ///   em::tensor<float> m = 0.5f * a + em::exp(-a * a) - b;
  template <expression E>
  tensor(const E& e) {  // NOLINT: implicit, like assigning a torch expression result
    static_assert(std::is_same_v<typename E::value_type, T>,
                  "ember: cannot initialize tensor<T> from an expression of another element "
                  "type; convert it with em::cast<T>(expr)");
    *this = detail::evaluate(e);
  }

  // ---- properties ------------------------------------------------------------------------
  bool defined() const noexcept { return impl_ != nullptr; }
  const ember::shape& shape() const { return impl().sizes; }
  const ember::shape& sizes() const { return impl().sizes; }
  const ember::shape& strides() const { return impl().strides; }
  std::int64_t dim() const { return impl().sizes.rank(); }
  std::int64_t numel() const { return impl().sizes.numel(); }
  /// Extent of dimension d (negative d counts from the end).
  std::int64_t size(std::int64_t d) const { return shape()[wrap_existing(d, "size")]; }
  std::int64_t stride(std::int64_t d) const { return strides()[wrap_existing(d, "stride")]; }
  std::int64_t storage_offset() const { return impl().offset; }
  ember::dtype dtype() const noexcept { return dtype_of<T>; }
  ember::device device() const { return impl().storage->dev(); }
  static constexpr std::size_t element_size() noexcept { return sizeof(T); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * sizeof(T); }
  /// Pointer to the first element (a device pointer for non-CPU tensors).
  T* data() const { return static_cast<T*>(impl().storage->data()) + impl().offset; }
  const detail::storage_ptr& storage() const { return impl().storage; }
  const std::shared_ptr<detail::tensor_impl>& impl_ptr() const noexcept { return impl_; }
  /// True when both handles refer to the same tensor (not merely equal values).
  bool is_same(const tensor& o) const noexcept { return impl_ == o.impl_; }

  /// Row-major dense layout (size-1 dims may have any stride, as in PyTorch).
  bool is_contiguous() const {
    const auto& s = shape();
    const auto& st = strides();
    if (numel() == 0) return true;  // as PyTorch: a tensor without elements is contiguous
    std::int64_t expected = 1;
    for (std::size_t i = s.size(); i-- > 0;) {
      if (s[i] == 1) continue;
      if (st[i] != expected) return false;
      expected *= s[i];
    }
    return true;
  }

  // ---- views (share storage) ---------------------------------------------------------------
  /// Same data, new shape; one extent may be -1. Errors when the strides do not allow a view
  /// (use reshape, which copies then).
  tensor view(const ember::shape& new_shape) const {
    const ember::shape sizes = detail::infer_size(new_shape, numel(), shape(), "view");
    auto st = detail::view_strides(shape(), strides(), sizes);
    detail::check(st.has_value(), errc::shape, "view: shape ", new_shape,
                  " is not compatible with the input's shape ", shape(), " and strides ", strides(),
                  " (a dimension spans non-contiguous memory); use reshape, which copies");
    return reshaped(make_view(sizes, *st, impl().offset), "view");
  }
  template <class U>
  tensor view_as(const tensor<U>& other) const {
    return view(other.shape());
  }

  /// view() when possible, otherwise a contiguous copy with the new shape.
  tensor reshape(const ember::shape& new_shape) const {
    const ember::shape sizes = detail::infer_size(new_shape, numel(), shape(), "reshape");
    if (auto st = detail::view_strides(shape(), strides(), sizes))
      return reshaped(make_view(sizes, *st, impl().offset), "reshape");
    return contiguous().view(sizes);
  }
  template <class U>
  tensor reshape_as(const tensor<U>& other) const {
    return reshape(other.shape());
  }

  tensor transpose(std::int64_t d0, std::int64_t d1) const {
    d0 = wrap(d0, "transpose");
    d1 = wrap(d1, "transpose");
    ember::shape s = shape(), st = strides();
    if (dim() == 0) return reshaped(make_view(s, st, impl().offset), "transpose");
    std::swap(s[d0], s[d1]);
    std::swap(st[d0], st[d1]);
    if (const jit::detail::op_scope traced; traced) {
      std::vector<std::int64_t> order(static_cast<std::size_t>(dim()));
      std::iota(order.begin(), order.end(), std::int64_t{0});
      std::swap(order[static_cast<std::size_t>(d0)], order[static_cast<std::size_t>(d1)]);
      return traced_view(traced, grad_view(make_view(s, st, impl().offset), nullptr,
                                           [d0, d1](const tensor& g) { return g.transpose(d0, d1); },
                                           "transpose"),
                         op::permute, {{"dims", std::move(order)}});
    }
    return grad_view(make_view(s, st, impl().offset), nullptr,
                     [d0, d1](const tensor& g) { return g.transpose(d0, d1); }, "transpose");
  }

  /// Transpose of a matrix (rank <= 2; a no-op for rank 0 and 1).
  tensor t() const {
    detail::check(dim() <= 2, errc::shape, "t: expects a tensor of rank <= 2, got shape ", shape(),
                  "; use transpose(d0, d1) or permute");
    return dim() < 2 ? transpose(0, 0) : transpose(0, 1);
  }

  tensor permute(const ember::shape& dims) const {
    detail::check(dims.rank() == dim(), errc::shape, "permute: got ", dims.rank(),
                  " dims ", dims, " for a tensor of shape ", shape());
    ember::shape s(dims.size()), st(dims.size());
    small_flags seen(dims.size(), 0);
    for (std::size_t i = 0; i < dims.size(); ++i) {
      const auto d = static_cast<std::size_t>(wrap(dims[i], "permute"));
      detail::check(!seen[d], errc::value, "permute: dims ", dims, " repeat dimension ", d);
      seen[d] = 1;
      s[i] = shape()[d];
      st[i] = strides()[d];
    }
    ember::shape inverse(dims.size());
    for (std::size_t i = 0; i < dims.size(); ++i)
      inverse[static_cast<std::size_t>(wrap(dims[i], "permute"))] = static_cast<std::int64_t>(i);
    const jit::detail::op_scope traced;
    tensor out = grad_view(make_view(s, st, impl().offset), nullptr,
                           [inverse](const tensor& g) { return g.permute(inverse); }, "permute");
    if (!traced) return out;
    std::vector<std::int64_t> order;
    for (auto d : dims) order.push_back(wrap(d, "permute"));
    return traced_view(traced, std::move(out), op::permute, {{"dims", std::move(order)}});
  }

  /// Moves dimension `src` to position `dst`, keeping the others in order.
  tensor movedim(std::int64_t src, std::int64_t dst) const {
    if (dim() == 0) return permute({});
    src = wrap(src, "movedim");
    dst = wrap(dst, "movedim");
    ember::shape order;
    for (std::int64_t d = 0; d < dim(); ++d)
      if (d != src) order.push_back(d);
    order.insert(order.begin() + dst, src);
    return permute(order);
  }

  /// Elements start, start+step, ... < end along dim. start/end are clamped to the extent
  /// and may be negative (counted from the end); step must be positive.
  tensor slice(std::int64_t d, std::int64_t start = 0,
               std::int64_t end = std::numeric_limits<std::int64_t>::max(),
               std::int64_t step = 1) const {
    detail::check(dim() > 0, errc::index, "slice: cannot slice a 0-d tensor");
    d = wrap(d, "slice");
    detail::check(step > 0, errc::value, "slice: step must be positive, got ", step);
    const std::int64_t n = shape()[d];
    auto clampi = [n](std::int64_t i) {
      if (i < 0) i += n;
      return std::clamp<std::int64_t>(i, 0, n);
    };
    start = clampi(start);
    end = std::max(clampi(end), start);
    ember::shape s = shape(), st = strides();
    s[d] = (end - start + step - 1) / step;
    st[d] *= step;
    const jit::detail::op_scope traced;
    tensor out =
        grad_view(make_view(s, st, impl().offset + (s[d] > 0 ? start * strides()[d] : 0)),
                  [d, start, end, step](const tensor& b) { return b.slice(d, start, end, step); },
                  nullptr, "slice");
    if (!traced) return out;
    return traced_view(traced, std::move(out), op::slice,
                       {{"dim", d}, {"start", start}, {"end", end}, {"step", step}});
  }

  /// Elements [start, start + length) along dim; out-of-range bounds are an error.
  tensor narrow(std::int64_t d, std::int64_t start, std::int64_t length) const {
    detail::check(dim() > 0, errc::index, "narrow: cannot narrow a 0-d tensor");
    d = wrap(d, "narrow");
    const std::int64_t n = shape()[d];
    if (start < 0 && start >= -n) start += n;
    detail::check(start >= 0 && length >= 0 && start <= n - length, errc::index,
                  "narrow: range [", start, ", ", start, "+", length, ") is out of bounds for ",
                  "dimension ", d, " of size ", n, " (shape ", shape(), ")");
    return slice(d, start, start + length);
  }

  /// Removes dimension d by taking index i along it (negative i counts from the end).
  tensor select(std::int64_t d, std::int64_t i) const {
    detail::check(dim() > 0, errc::index, "select: cannot index a 0-d tensor");
    d = wrap(d, "select");
    const std::int64_t n = shape()[d];
    detail::check(i >= -n && i < n, errc::index, "select: index ", i,
                  " is out of range for dimension ", d, " of size ", n, " (shape ", shape(), ")");
    if (i < 0) i += n;
    ember::shape s = shape(), st = strides();
    s.erase(s.begin() + d);
    st.erase(st.begin() + d);
    const jit::detail::op_scope traced;
    tensor out = grad_view(make_view(s, st, impl().offset + i * strides()[d]),
                           [d, i](const tensor& b) { return b.select(d, i); }, nullptr, "select");
    if (!traced) return out;
    return traced_view(traced, std::move(out), op::select, {{"dim", d}, {"index", i}});
  }
  tensor operator[](std::int64_t i) const { return select(0, i); }

  tensor unsqueeze(std::int64_t d) const {
    d = wrap_dim(d, dim() + 1, "unsqueeze");
    ember::shape s = shape(), st = strides();
    const std::int64_t stride = d < dim() ? strides()[d] * shape()[d] : 1;
    s.insert(s.begin() + d, 1);
    st.insert(st.begin() + d, stride);
    return reshaped(make_view(s, st, impl().offset), "unsqueeze");
  }

  /// Removes every size-1 dimension.
  tensor squeeze() const {
    ember::shape s, st;
    for (std::int64_t d = 0; d < dim(); ++d)
      if (shape()[d] != 1) {
        s.push_back(shape()[d]);
        st.push_back(strides()[d]);
      }
    return reshaped(make_view(s, st, impl().offset), "squeeze");
  }
  /// Removes dimension d if its size is 1 (otherwise returns the same view, as PyTorch).
  tensor squeeze(std::int64_t d) const {
    d = wrap(d, "squeeze");
    ember::shape s = shape(), st = strides();
    if (dim() > 0 && s[d] == 1) {
      s.erase(s.begin() + d);
      st.erase(st.begin() + d);
    }
    return reshaped(make_view(s, st, impl().offset), "squeeze");
  }

  /// Broadcasts size-1 dims (stride 0) and prepends new leading dims; -1 keeps an extent.
  tensor expand(const ember::shape& target) const {
    detail::check(target.rank() >= dim(), errc::shape, "expand: cannot expand shape ", shape(),
                  " to ", target, " (fewer dimensions)");
    const std::int64_t lead = target.rank() - dim();
    ember::shape s(target.size()), st(target.size());
    for (std::int64_t i = 0; i < target.rank(); ++i) {
      if (i < lead) {
        detail::check(target[i] >= 0, errc::shape, "expand: invalid extent ", target[i],
                      " for a new leading dimension in ", target);
        s[i] = target[i];
        st[i] = 0;
        continue;
      }
      const std::int64_t cur = shape()[i - lead];
      const std::int64_t want = target[i] == -1 ? cur : target[i];
      detail::check(want >= 0 && (want == cur || cur == 1), errc::shape,
                    "expand: cannot expand shape ", shape(), " to ", target, " (dimension ", i,
                    ": ", cur, " vs ", target[i], ")");
      s[i] = want;
      st[i] = want == cur ? strides()[i - lead] : 0;
    }
    const jit::detail::op_scope traced;
    tensor out = make_view(s, st, impl().offset);
    if constexpr (differentiable) {
      if (tracks_grad()) out = autograd::detail::record_expand(*this, std::move(out));
    }
    if (!traced) return out;
    return traced_view(traced, std::move(out), op::expand, {{"shape", jit::detail::ints(target)}});
  }
  template <class U>
  tensor expand_as(const tensor<U>& other) const {
    return expand(other.shape());
  }

  /// Merges dims start..end into one (a view when possible, else a copy, like reshape).
  tensor flatten(std::int64_t start = 0, std::int64_t end = -1) const {
    if (dim() == 0) return reshape({1});
    start = wrap(start, "flatten");
    end = wrap(end, "flatten");
    detail::check(start <= end, errc::value, "flatten: start dim ", start, " is after end dim ",
                  end, " for shape ", shape());
    ember::shape s;
    for (std::int64_t d = 0; d < start; ++d) s.push_back(shape()[d]);
    std::int64_t m = 1;
    for (std::int64_t d = start; d <= end; ++d) m *= shape()[d];
    s.push_back(m);
    for (std::int64_t d = end + 1; d < dim(); ++d) s.push_back(shape()[d]);
    return reshape(s);
  }

  /// Splits dimension d into `sizes` (one may be -1); their product must equal its extent.
  tensor unflatten(std::int64_t d, const ember::shape& sizes) const {
    d = wrap_existing(d, "unflatten");
    const ember::shape inner = detail::infer_size(sizes, shape()[d], shape(), "unflatten");
    ember::shape s;
    for (std::int64_t i = 0; i < d; ++i) s.push_back(shape()[i]);
    for (auto e : inner) s.push_back(e);
    for (std::int64_t i = d + 1; i < dim(); ++i) s.push_back(shape()[i]);
    return view(s);
  }

  /// A view with explicit sizes/strides/offset over the same storage; bounds-checked against
  /// the storage, so it can never reach outside it.
  tensor as_strided(const ember::shape& sizes, const ember::shape& new_strides,
                    std::int64_t offset) const {
    detail::check(sizes.size() == new_strides.size(), errc::shape, "as_strided: shape ", sizes,
                  " and strides ", new_strides, " differ in rank");
    check_shape(sizes, "as_strided");
    for (auto s : new_strides)
      detail::check(s >= 0, errc::value, "as_strided: negative stride in ", new_strides);
    const auto [lo, hi] = detail::extent_range(sizes, new_strides);
    const auto cap = static_cast<std::int64_t>(impl().storage->nbytes() / sizeof(T));
    detail::check(offset >= 0 && (hi < lo || offset + hi < cap), errc::index,
                  "as_strided: shape ", sizes, " with strides ", new_strides, " and offset ",
                  offset, " reaches outside a storage of ", cap, " elements");
    detail::check(!tracks_grad(), errc::not_implemented, "as_strided: not differentiable; ",
                  "call it on a detach()ed tensor or under no_grad_guard");
    return make_view(sizes, new_strides, offset);
  }

  // ---- copies and conversions ---------------------------------------------------------------
  /// This tensor if already contiguous, otherwise a contiguous copy.
  tensor contiguous() const { return is_contiguous() ? *this : clone(); }

  /// A new contiguous tensor with a copy of the data.
  tensor clone() const {
    const jit::detail::op_scope traced;
    tensor out = detail::make_tensor<T>(shape(), device());
    out.copy_from(*this);
    if (traced) traced.record(op::contiguous, out, {}, *this);
    if constexpr (differentiable) {
      if (tracks_grad()) return autograd::detail::record_identity(*this, std::move(out), "clone_backward");
    }
    return out;
  }

  /// A new handle to the same data, cut from the autograd graph. Traced as a detach node (a
  /// graph run with grad enabled stops the gradient there too; ONNX: Identity).
  tensor detach() const {
    tensor out = make_view(shape(), strides(), impl().offset);
    if (const jit::detail::op_scope traced; traced) traced.record(op::detach, out, {}, *this);
    return out;
  }

  /// Converts the elements to U (a new tensor; this tensor when U == T).
  template <class U>
  tensor<U> to() const {
    if constexpr (std::is_same_v<U, T>) {
      return *this;
    } else {
      const jit::detail::op_scope traced;
      tensor<U> out = detail::make_tensor<U>(shape(), device());
      {
        no_grad_guard ng;
        out.copy_(*this);
      }
      if (traced) traced.record(op::cast, out, {}, *this);
      if constexpr (differentiable && is_floating_v<U> && !std::is_same_v<U, half> &&
                    !std::is_same_v<U, bfloat16>) {
        if (tracks_grad()) return autograd::detail::record_convert<U>(*this, std::move(out));
      }
      return out;
    }
  }

  /// Moves to a device (this tensor when already there).
  tensor to(ember::device dev) const {
    if (dev == device()) return *this;
    const tensor src = contiguous();
    tensor out = detail::make_tensor<T>(shape(), dev);
    detail::copy_bytes(out.data(), dev, src.data(), device(), nbytes());
    if constexpr (differentiable) {
      if (tracks_grad()) return autograd::detail::record_identity(*this, std::move(out), "to_copy_backward");
    }
    return out;
  }
  tensor cpu() const { return to(ember::cpu); }

  // ---- in-place writes ----------------------------------------------------------------------
  /// Copies src into this tensor, broadcasting src to this shape and converting its elements.
  /// Overlapping source and destination are handled (the source is copied first).
  template <class U>
  tensor& copy_(const tensor<U>& src) {
    detail::check(src.defined(), errc::value, "copy_: source tensor is undefined");
    detail::check(broadcastable_to(src.shape(), shape()), errc::shape, "copy_: cannot copy a ",
                  "tensor of shape ", src.shape(), " into one of shape ", shape());
    check_writable("copy_");
    detail::check(src.device() == device(), errc::device, "copy_: source on ", src.device(),
                  ", destination on ", device(), "; move it with .to(device) first");
    const jit::detail::op_scope traced;
    if (traced) traced_copy(traced, src);
    if constexpr (differentiable) {
      if (is_grad_enabled() && (requires_grad() || src.requires_grad())) {
      autograd::detail::check_inplace(*this, "copy_");
      const tensor<T> s = [&] {
        if constexpr (std::is_same_v<U, T>) return src; else return src.template to<T>();
      }();
      copy_from(s);
      autograd::detail::record_copy(*this, s);
      return *this;
      }
    }
    copy_from(src);
    return *this;
  }

  /// Writes an expression into this tensor (broadcast to its shape; views are written in place;
  /// sources overlapping the destination are evaluated into a temporary first).
  template <expression E>
  tensor& copy_(const E& e) {
    detail::assign(*this, e, "copy_");
    return *this;
  }

  /// In-place arithmetic with a tensor, an expression or a scalar: a += b; a.slice(0, 0, 2) *= 2.f;
  template <class X>
    requires operand<X> || arithmetic_scalar<X>
  tensor& operator+=(const X& x) {
    detail::assign(*this, *this + x, "operator+=");
    return *this;
  }
  template <class X>
    requires operand<X> || arithmetic_scalar<X>
  tensor& operator-=(const X& x) {
    detail::assign(*this, *this - x, "operator-=");
    return *this;
  }
  template <class X>
    requires operand<X> || arithmetic_scalar<X>
  tensor& operator*=(const X& x) {
    detail::assign(*this, *this * x, "operator*=");
    return *this;
  }
  template <class X>
    requires operand<X> || arithmetic_scalar<X>
  tensor& operator/=(const X& x) {
    detail::assign(*this, *this / x, "operator/=");
    return *this;
  }

  /// Sum / mean of all elements as a 0-d tensor (em::sum(t) and em::mean(t) do more).
  tensor sum() const { return detail::sum_all(*this); }
  tensor mean() const { return detail::mean_all(*this); }

  /// Sets every element to v (converted to T).
  template <class S>
    requires std::is_arithmetic_v<S> || is_element_v<S>
  tensor& fill_(S v) {
    check_writable("fill_");
    if constexpr (differentiable) {
      if (is_grad_enabled() && requires_grad()) {
        autograd::detail::check_inplace(*this, "fill_");
        autograd::detail::record_fill(*this);
      }
    }
    const T value = convert<T>(v);
    if (const jit::detail::op_scope traced; traced) {
      auto& r = traced.get();
      const int c = r.emit(op::scalar, {}, {{"value", static_cast<double>(value)}}, {{dtype(), {}}});
      const int id = r.emit(op::expand, {c}, {{"shape", jit::detail::ints(shape())}}, {{dtype(), shape()}});
      r.wrote_in_place(impl_ptr(), "fill_");
      r.bind(impl_ptr(), id);
    }
    if (device().is_cpu()) {
      detail::for_each_element(shape(), {&strides()}, [value](T& x) { x = value; }, data());
    } else {
      // Note [Device writes]: fill_ and copy_ on a device run as hand-written elementwise
      // programs (dispatch/raw.hpp) through the device's fused kernel; a copy between
      // contiguous tensors of one shape and dtype is a plain device-to-device copy.
      if constexpr (std::is_arithmetic_v<T>)
        dispatch::run_raw(device(), data(), dtype(), shape(), strides(), {},
                          {dispatch::constant(static_cast<double>(value))},
                          dispatch::compute_for({dtype()}), "fill_");
      else
        detail::fail(errc::not_implemented, "fill_: ", dtype(), " tensors on ", device(),
                     " are not supported (fill on the CPU, then move)");
    }
    impl().storage->bump_version();
    return *this;
  }
  tensor& zero_() { return fill_(T{}); }

  // ---- element access -------------------------------------------------------------------------
  /// The value of a one-element tensor (any rank).
  T item() const {
    detail::check(defined() && numel() == 1, errc::shape, "item: expects a tensor with one ",
                  "element, got shape ", defined() ? shape() : ember::shape{});
    if (jit::detail::tracing()) jit::detail::active_recorder->host_read(impl_ptr(), "item()");
    if (device().is_cpu()) return *data();
    T v;
    detail::copy_bytes(&v, ember::cpu, data(), device(), sizeof(T));
    return v;
  }

  /// The element at a full index (negative indices count from the end), bounds-checked.
  T at(std::initializer_list<std::int64_t> index) const {
    detail::check(static_cast<std::int64_t>(index.size()) == dim(), errc::index, "at: got ",
                  index.size(), " indices for a tensor of shape ", shape());
    std::int64_t off = impl().offset;
    std::int64_t d = 0;
    for (std::int64_t i : index) {
      const std::int64_t n = shape()[d];
      detail::check(i >= -n && i < n, errc::index, "at: index ", i,
                    " is out of range for dimension ", d, " of size ", n, " (shape ", shape(), ")");
      off += (i < 0 ? i + n : i) * strides()[d];
      ++d;
    }
    const T* p = static_cast<const T*>(impl().storage->data()) + off;
    if (device().is_cpu()) return *p;
    T v;
    detail::copy_bytes(&v, ember::cpu, p, device(), sizeof(T));
    return v;
  }

  // ---- autograd ---------------------------------------------------------------------------------
  /// Does this tensor record operations for gradients (a leaf marked by requires_grad_, or
  /// the result of an op on one)?
  bool requires_grad() const noexcept {
    return impl_ && impl_->autograd && impl_->autograd->requires_grad;
  }
  /// Marks a leaf for gradient accumulation: auto p = em::randn<float>({3, 2}).requires_grad_();
  tensor& requires_grad_(bool on = true) & {
    set_requires_grad(on);
    return *this;
  }
  tensor requires_grad_(bool on = true) && {
    set_requires_grad(on);
    return std::move(*this);
  }
  /// True unless the tensor was produced by a recorded op (tensors without grad are leaves).
  bool is_leaf() const noexcept { return !grad_fn(); }
  /// The backward function that produced this tensor (null for leaves).
  std::shared_ptr<autograd::node> grad_fn() const noexcept {
    return impl_ && impl_->autograd ? impl_->autograd->grad_fn : nullptr;
  }
  /// The grad_fn's name ("mean_backward", ...), or "" for a leaf.
  std::string grad_fn_name() const { return autograd::detail::node_name(grad_fn()); }
  /// Which output of its grad_fn this tensor is.
  std::uint32_t output_nr() const noexcept {
    return impl_ && impl_->autograd ? impl_->autograd->output_nr : 0;
  }
  /// The accumulated gradient (undefined before a backward reached this tensor).
  tensor grad() const {
    if (!impl_ || !impl_->autograd || !impl_->autograd->grad) return tensor();
    return tensor(impl_->autograd->grad);
  }
  /// Replaces the gradient (an undefined tensor clears it, as optimizer.zero_grad(set_to_none)).
  void set_grad(const tensor& g) {
    if (g.defined())
      detail::check(g.shape() == shape(), errc::shape, "set_grad: gradient of shape ", g.shape(),
                    " for a tensor of shape ", shape());
    if (!g.defined() && (!impl().autograd)) return;
    meta().grad = g.impl_ptr();
  }
  /// Keeps .grad() of a non-leaf after backward (leaves always keep theirs).
  tensor& retain_grad() {
    detail::check(requires_grad(), errc::autograd,
                  "retain_grad: the tensor does not require grad");
    if (is_leaf() || impl_->autograd->retains_grad) return *this;
    impl_->autograd->retains_grad = true;
    auto& fn = *impl_->autograd->grad_fn;
    fn.retained.resize(fn.outputs.size());
    fn.retained[impl_->autograd->output_nr] = impl_;
    return *this;
  }
  bool retains_grad() const noexcept {
    return impl_ && impl_->autograd && impl_->autograd->retains_grad;
  }
  /// Computes gradients of this tensor with respect to the leaves of its graph and
  /// accumulates them into their .grad(). `grad` defaults to 1 for one-element tensors.
  void backward(const tensor& grad = tensor(), const autograd::backward_options& opts = {}) const {
    autograd::detail::run_backward({impl_ptr()}, {grad.impl_ptr()}, opts);
  }
  /// Detaches this handle from the graph in place (it becomes a leaf that does not require grad).
  tensor& detach_() {
    if (impl_) impl_->autograd.reset();
    return *this;
  }
  /// The storage's version counter (bumped by every in-place write through any view).
  std::uint64_t version() const { return impl().storage->version(); }

  // ---- internals shared with the rest of ember ----------------------------------------------
  detail::tensor_impl& impl() const {
    detail::check(impl_ != nullptr, errc::value, "use of an undefined tensor");
    return *impl_;
  }

  /// A new tensor (not sharing autograd state) over this storage.
  tensor make_view(const ember::shape& sizes, const ember::shape& st, std::int64_t offset) const {
    auto p = detail::make_pooled<detail::tensor_impl>();  // Note [Object pool]
    p->storage = impl().storage;
    p->offset = offset;
    p->sizes = sizes;
    p->strides = st;
    p->type = dtype_of<T>;
    return tensor(std::move(p));
  }

  /// Throws unless some element of this tensor could be written twice (stride 0 over a
  /// dimension of size > 1, e.g. an expand()ed view).
  void check_writable(const char* op) const {
    for (std::int64_t d = 0; d < dim(); ++d)
      detail::check(strides()[d] != 0 || shape()[d] <= 1, errc::value, op,
                    ": cannot write into a tensor whose elements overlap (shape ", shape(),
                    ", strides ", strides(), ", e.g. from expand); clone() it first");
  }

 private:
  using small_flags = detail::small_vector<unsigned char, 8>;

  std::int64_t wrap(std::int64_t d, const char* op) const { return wrap_dim(d, dim(), op); }
  /// Like wrap, for ops that index an existing dimension (a 0-d tensor has none).
  std::int64_t wrap_existing(std::int64_t d, const char* op) const {
    detail::check(dim() > 0, errc::index, op, ": dimension ", d,
                  " requested but the tensor is 0-d (shape ())");
    return wrap_dim(d, dim(), op);
  }

  /// Recording applies: grad mode is on and this tensor requires grad.
  bool tracks_grad() const noexcept { return requires_grad() && is_grad_enabled(); }

  detail::autograd_meta& meta() const {
    auto& m = impl().autograd;
    if (!m) m = std::make_shared<detail::autograd_meta>();
    return *m;
  }

  void set_requires_grad(bool on) {
    if (on) {
      detail::check(is_floating_v<T>, errc::dtype, "requires_grad_: only floating-point tensors ",
                    "can require gradients, got dtype ", dtype_of<T>);
      meta().requires_grad = true;
      return;
    }
    detail::check(is_leaf(), errc::autograd, "requires_grad_(false): only leaves can be ",
                  "detached this way; use detach() for a ", grad_fn_name(), " result");
    if (impl().autograd) impl_->autograd->requires_grad = false;
  }

  /// Records `out` (a view of this tensor) as kind(this) in the trace.
  tensor traced_view(const jit::detail::op_scope& traced, tensor out, op kind,
                     jit::attributes attrs) const {
    traced.record(kind, out, std::move(attrs), *this);
    return out;
  }
  /// Records `this = src` (converted, broadcast) in the trace.
  template <class U>
  void traced_copy(const jit::detail::op_scope& traced, const tensor<U>& src) const {
    auto& r = traced.get();
    int id = r.value_of(src.impl_ptr());
    if (!std::is_same_v<U, T>) id = r.emit(op::cast, {id}, {}, {{dtype(), src.shape()}});
    if (src.shape() != shape())
      id = r.emit(op::expand, {id}, {{"shape", jit::detail::ints(shape())}}, {{dtype(), shape()}});
    r.wrote_in_place(impl_ptr(), "copy_");
    r.bind(impl_ptr(), id);
  }

  /// A view whose gradient is the incoming one reshaped to this shape.
  tensor reshaped(tensor out, const char* name) const {
    if (const jit::detail::op_scope traced; traced)
      traced.record(op::reshape, out, {{"shape", jit::detail::ints(out.shape())}}, *this);
    if constexpr (differentiable) {
      if (tracks_grad()) {
        const ember::shape s = shape();
        return autograd::detail::record_view<T>(
            *this, std::move(out), nullptr, [s](const tensor& g) { return g.reshape(s); }, name);
      }
    }
    (void)name;
    return out;
  }
  /// reapply: the same view of a base-shaped tensor; inverse: the gradient's map back (one of
  /// them is nullptr). Nothing is instantiated for element types that cannot require grad.
  template <class R, class I>
  tensor grad_view(tensor out, R reapply, I inverse, const char* name) const {
    if constexpr (differentiable) {
      if (tracks_grad())
        return autograd::detail::record_view<T>(*this, std::move(out), std::move(reapply),
                                                std::move(inverse), name);
    }
    (void)reapply;
    (void)inverse;
    (void)name;
    return out;
  }

  /// Elementwise converting copy with broadcasting; goes through a temporary when source and
  /// destination memory overlap (Note [Aliasing]).
  template <class U>
  void copy_from(const tensor<U>& src_in) {
    tensor<U> src = src_in;
    if (src.storage() == storage() && overlaps(src)) src = src_in.clone();
    const tensor<U> b = src.dim() == dim() && src.shape() == shape() ? src : src.expand(shape());
    if (!device().is_cpu()) {  // Note [Device writes]
      if (std::is_same_v<U, T> && is_contiguous() && b.is_contiguous() && b.shape() == shape()) {
        detail::copy_bytes(data(), device(), b.data(), b.device(), nbytes());
      } else {
        dispatch::run_raw(device(), data(), dtype(), shape(), strides(),
                          {{b.data(), b.dtype(), b.shape(), b.strides()}}, {dispatch::load(0)},
                          dispatch::compute_for({dtype(), b.dtype()}), "copy_");
      }
      impl().storage->bump_version();
      return;
    }
    detail::for_each_element(
        shape(), {&strides(), &b.strides()}, [](T& d, const U& s) { d = convert<T>(s); }, data(),
        b.data());
    impl().storage->bump_version();
  }

  /// Note [Aliasing]: conservative byte-range overlap test; exact self-copies are skipped by
  /// the caller being a no-op-safe elementwise loop only when layouts are identical.
  template <class U>
  bool overlaps(const tensor<U>& o) const {
    if (o.numel() == 0 || numel() == 0) return false;
    if constexpr (std::is_same_v<U, T>)
      if (o.storage_offset() == storage_offset() && o.shape() == shape() &&
          o.strides() == strides())
        return false;  // identical view: element i reads before it writes
    const auto [lo1, hi1] = detail::extent_range(shape(), strides());
    const auto [lo2, hi2] = detail::extent_range(o.shape(), o.strides());
    const auto base = reinterpret_cast<std::uintptr_t>(impl().storage->data());
    const auto a0 = base + static_cast<std::uintptr_t>((storage_offset() + lo1) * std::int64_t(sizeof(T)));
    const auto a1 = base + static_cast<std::uintptr_t>((storage_offset() + hi1 + 1) * std::int64_t(sizeof(T)));
    const auto b0 = base + static_cast<std::uintptr_t>((o.storage_offset() + lo2) * std::int64_t(sizeof(U)));
    const auto b1 = base + static_cast<std::uintptr_t>((o.storage_offset() + hi2 + 1) * std::int64_t(sizeof(U)));
    return a0 < b1 && b0 < a1;
  }

  std::shared_ptr<detail::tensor_impl> impl_;
};

namespace detail {
/// A new contiguous, uninitialized tensor on `dev` from that device's caching allocator.
template <class T>
tensor<T> make_tensor(const shape& sizes, device dev) {
  check_shape(sizes, "empty");
  auto p = make_pooled<tensor_impl>();  // Note [Object pool]
  p->storage = make_storage(static_cast<std::size_t>(sizes.numel()) * sizeof(T), dev);
  p->sizes = sizes;
  p->strides = contiguous_strides(sizes);
  p->type = dtype_of<T>;
  return tensor<T>(std::move(p));
}
}  // namespace detail

}  // namespace ember

#include <ember/autograd/engine.hpp>
