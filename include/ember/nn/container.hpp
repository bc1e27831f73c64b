// Module containers: sequential (keys "0", "1", ...; accepts modules and callables),
// module_list and module_dict. Children are held by shared_ptr (copies share them).
#pragma once

#include <ember/nn/module.hpp>

#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ember::nn {

}  // namespace ember::nn

namespace ember::detail {

/// A per-type address, so containers can check typed access without RTTI.
template <class M>
inline constexpr char type_tag = 0;

/// One entry of a container: the module (null for a plain callable) and its type tag.
struct container_entry {
  std::shared_ptr<nn::module_base> module;
  const void* tag = nullptr;
  std::string type;
};

template <class M>
container_entry make_entry(std::shared_ptr<M> m) {
  std::string type = m->type_name();
  return {std::move(m), &type_tag<M>, std::move(type)};
}

template <class M>
M& typed_entry(const container_entry& e, const char* container, const std::string& key) {
  ember::detail::check(e.module != nullptr, errc::value, container, ": entry ", key,
                       " is a callable, not a module");
  ember::detail::check(e.tag == &type_tag<M>, errc::value, container, ": entry ", key, " is a ",
                       e.type, ", not the requested module type");
  return static_cast<M&>(*e.module);
}

template <class M>
concept module_type = std::is_base_of_v<nn::module_base, std::remove_cvref_t<M>>;

}  // namespace ember::detail

namespace ember::nn {

/// Modules (or callables) applied in order; state_dict keys "0.weight", "2.bias", ... as
/// torch.nn.Sequential.
///   em::nn::sequential seq(em::nn::linear(64, 32), em::nn::relu(), em::nn::linear(32, 10));
template <class T = float>
class basic_sequential : public module<basic_sequential<T>, T> {
 public:
  basic_sequential() = default;
  template <class First, class... Rest>
    requires(sizeof...(Rest) > 0 || !std::is_same_v<std::remove_cvref_t<First>, basic_sequential>)
  explicit basic_sequential(First&& first, Rest&&... rest) {
    push_back(std::forward<First>(first));
    (push_back(std::forward<Rest>(rest)), ...);
  }

  /// Appends a module (copied/moved in) or a callable tensor<T> -> tensor<T>.
  template <class M>
  void push_back(M&& m) {
    using U = std::remove_cvref_t<M>;
    const std::string key = std::to_string(entries_.size());
    if constexpr (detail::module_type<U>) {
      auto p = std::make_shared<U>(std::forward<M>(m));
      this->register_module(key, p);
      steps_.push_back([p](const tensor<T>& x) -> tensor<T> { return (*p)(x); });
      entries_.push_back(detail::make_entry(std::move(p)));
    } else {
      static_assert(std::is_invocable_v<U&, const tensor<T>&>,
                    "ember::nn::sequential: an entry must be a module or a callable taking a tensor");
      steps_.push_back([f = U(std::forward<M>(m))](const tensor<T>& x) mutable -> tensor<T> { return f(x); });
      entries_.push_back({nullptr, nullptr, "callable"});
    }
  }

  tensor<T> forward(const tensor<T>& x) {
    tensor<T> y = x;
    for (auto& step : steps_) y = step(y);
    return y;
  }

  std::size_t size() const noexcept { return entries_.size(); }
  /// The i-th module (an error for a callable entry or an index out of range).
  module_base& operator[](std::size_t i) {
    check_index(i);
    ember::detail::check(entries_[i].module != nullptr, errc::value, "Sequential: entry ", i,
                         " is a callable, not a module");
    return *entries_[i].module;
  }
  /// The i-th module as its type: seq.at<em::nn::linear>(0).weight
  template <class M>
  M& at(std::size_t i) {
    check_index(i);
    return detail::typed_entry<M>(entries_[i], "Sequential", std::to_string(i));
  }

  std::string type_name() const override { return "Sequential"; }
  /// Entries are type-erased: to<U>() converts only to T (Note [Converting containers]).
  static constexpr bool type_erased_entries = true;

 private:
  void check_index(std::size_t i) const {
    ember::detail::check(i < entries_.size(), errc::index, "Sequential: index ", i,
                         " is out of range for ", entries_.size(), " entries");
  }
  std::vector<detail::container_entry> entries_;
  std::vector<std::function<tensor<T>(const tensor<T>&)>> steps_;
};
using sequential = basic_sequential<float>;

/// A list of modules registered as children "0", "1", ... (no forward of its own).
///   em::nn::module_list blocks;  blocks.push_back(em::nn::linear(8, 8));
template <class T = float>
class basic_module_list : public module<basic_module_list<T>, T> {
 public:
  basic_module_list() = default;
  template <detail::module_type First, detail::module_type... Rest>
    requires(sizeof...(Rest) > 0 || !std::is_same_v<std::remove_cvref_t<First>, basic_module_list>)
  explicit basic_module_list(First&& first, Rest&&... rest) {
    push_back(std::forward<First>(first));
    (push_back(std::forward<Rest>(rest)), ...);
  }
  template <detail::module_type M>
  void push_back(M&& m) {
    auto p = std::make_shared<std::remove_cvref_t<M>>(std::forward<M>(m));
    this->register_module(std::to_string(entries_.size()), p);
    entries_.push_back(detail::make_entry(std::move(p)));
  }
  std::size_t size() const noexcept { return entries_.size(); }
  module_base& operator[](std::size_t i) {
    check_index(i);
    return *entries_[i].module;
  }
  template <class M>
  M& at(std::size_t i) {
    check_index(i);
    return detail::typed_entry<M>(entries_[i], "ModuleList", std::to_string(i));
  }
  std::string type_name() const override { return "ModuleList"; }
  /// Entries are type-erased: to<U>() converts only to T (Note [Converting containers]).
  static constexpr bool type_erased_entries = true;

 private:
  void check_index(std::size_t i) const {
    ember::detail::check(i < entries_.size(), errc::index, "ModuleList: index ", i,
                         " is out of range for ", entries_.size(), " modules");
  }
  std::vector<detail::container_entry> entries_;
};
using module_list = basic_module_list<float>;

/// Modules by name, in insertion order (keys "<name>.weight", ...).
///   em::nn::module_dict heads;  heads.insert("cls", em::nn::linear(8, 10));
template <class T = float>
class basic_module_dict : public module<basic_module_dict<T>, T> {
 public:
  template <detail::module_type M>
  void insert(const std::string& name, M&& m) {
    ember::detail::check(!name.empty() && name.find('.') == std::string::npos, errc::value,
                         "ModuleDict: key '", name, "' must be non-empty and contain no '.'");
    ember::detail::check(!contains(name), errc::value, "ModuleDict: key '", name, "' already exists");
    auto p = std::make_shared<std::remove_cvref_t<M>>(std::forward<M>(m));
    this->register_module(name, p);
    entries_.emplace_back(name, detail::make_entry(std::move(p)));
  }
  bool contains(const std::string& name) const {
    for (const auto& [k, e] : entries_)
      if (k == name) return true;
    return false;
  }
  std::size_t size() const noexcept { return entries_.size(); }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& [k, e] : entries_) out.push_back(k);
    return out;
  }
  module_base& operator[](const std::string& name) { return *find(name).module; }
  template <class M>
  M& at(const std::string& name) {
    return detail::typed_entry<M>(find(name), "ModuleDict", "'" + name + "'");
  }
  std::string type_name() const override { return "ModuleDict"; }
  /// Entries are type-erased: to<U>() converts only to T (Note [Converting containers]).
  static constexpr bool type_erased_entries = true;

 private:
  const detail::container_entry& find(const std::string& name) const {
    for (const auto& [k, e] : entries_)
      if (k == name) return e;
    ember::detail::raise(errc::value, "ModuleDict: no module named '" + name + "'");
  }
  std::vector<std::pair<std::string, detail::container_entry>> entries_;
};
using module_dict = basic_module_dict<float>;

}  // namespace ember::nn
