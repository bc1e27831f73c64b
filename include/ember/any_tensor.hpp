// any_tensor: a handle to a tensor whose element type is a runtime property (state_dicts,
// loaders, module buffers of mixed dtypes). Shares the tensor, like tensor<T> itself.
#pragma once

#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/io/print.hpp>
#include <ember/tensor.hpp>

#include <memory>
#include <utility>

namespace ember {

/// A tensor of any element type; convert back with get<T>() (checked) or to<T>() (converting):
///   em::any_tensor a = em::zeros<std::int64_t>({2});  a.dtype() == em::dtype::i64;
///   em::tensor<std::int64_t> t = a.get<std::int64_t>();
class any_tensor {
 public:
  any_tensor() = default;
  template <class T>
  any_tensor(const tensor<T>& t) : impl_(t.impl_ptr()) {}  // NOLINT: implicit, like a base handle
  explicit any_tensor(std::shared_ptr<detail::tensor_impl> impl) : impl_(std::move(impl)) {}

  bool defined() const noexcept { return impl_ != nullptr; }
  ember::dtype dtype() const { return impl().type; }
  const ember::shape& shape() const { return impl().sizes; }
  const ember::shape& strides() const { return impl().strides; }
  std::int64_t dim() const { return impl().sizes.rank(); }
  std::int64_t numel() const { return impl().sizes.numel(); }
  ember::device device() const { return impl().storage->dev(); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * item_size(dtype()); }
  const std::shared_ptr<detail::tensor_impl>& impl_ptr() const noexcept { return impl_; }
  bool is_same(const any_tensor& o) const noexcept { return impl_ == o.impl_; }

  /// Does it hold elements of type T?
  template <class T>
  bool holds() const noexcept {
    return impl_ && impl_->type == dtype_of<T>;
  }
  /// The typed handle (same tensor); an ember::error (dtype) when T is not its element type.
  template <class T>
  tensor<T> get() const {
    detail::check(defined(), errc::value, "any_tensor::get<", dtype_of<T>, ">: undefined tensor");
    detail::check(holds<T>(), errc::dtype, "any_tensor::get<", dtype_of<T>,
                  ">: the tensor holds ", dtype(), " elements (shape ", shape(), ")");
    return tensor<T>(impl_);
  }
  /// A tensor<T>: the same tensor when T matches, else a converted copy.
  template <class T>
  tensor<T> to() const {
    return visit([](const auto& t) { return t.template to<T>(); });
  }
  /// Calls f(tensor<E>) with the typed handle of the runtime element type E.
  template <class F>
  decltype(auto) visit(F&& f) const {
    detail::check(defined(), errc::value, "any_tensor: undefined tensor");
    return visit_dtype(dtype(), [&](auto e) -> decltype(auto) {
      return f(tensor<decltype(e)>(impl_));
    });
  }

 private:
  const detail::tensor_impl& impl() const {
    detail::check(impl_ != nullptr, errc::value, "any_tensor: undefined tensor");
    return *impl_;
  }
  std::shared_ptr<detail::tensor_impl> impl_;
};

// a template (never deduced) so that a program that prints no any_tensor does not compile the
// printers of every dtype (Note [Deferred instantiation])
template <class = void>
std::ostream& operator<<(std::ostream& os, const any_tensor& t) {
  if (!t.defined()) return os << "any_tensor(undefined)";
  t.visit([&](const auto& typed) { os << typed; });
  return os;
}

}  // namespace ember
