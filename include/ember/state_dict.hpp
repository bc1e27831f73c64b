// state_dict: an ordered map from dotted names ("fc1.weight", "bn.running_mean") to tensors of
// any element type, plus string metadata. What modules and optimizers save and load.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/error.hpp>

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ember {

/// Name -> tensor, in insertion order (as PyTorch's OrderedDict), with string metadata (the
/// safetensors `__metadata__`):
///   em::state_dict sd;  sd.insert("w", em::zeros<float>({2}));  sd.get<float>("w");
///   for (const auto& [name, t] : sd) std::cout << name << " " << t.shape() << "\n";
class state_dict {
 public:
  using value_type = std::pair<std::string, any_tensor>;
  using const_iterator = std::vector<value_type>::const_iterator;

  state_dict() = default;
  state_dict(std::initializer_list<value_type> items) {
    for (const auto& [name, t] : items) insert(name, t);
  }

  /// Adds `name`, or replaces the tensor already stored under it (keeping its position).
  void insert(std::string name, any_tensor t) {
    detail::check(t.defined(), errc::value, "state_dict: the tensor for '", name,
                  "' is undefined");
    if (auto it = index_.find(name); it != index_.end()) {
      items_[it->second].second = std::move(t);
      return;
    }
    items_.emplace_back(name, std::move(t));
    try {
      index_.emplace(std::move(name), items_.size() - 1);
    } catch (...) {
      items_.pop_back();
      throw;
    }
  }
  bool contains(std::string_view name) const { return index_.count(std::string(name)) != 0; }
  /// The tensor under `name`, or nullptr.
  const any_tensor* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &items_[it->second].second;
  }
  /// The tensor under `name`; an ember::error (value) naming the key when absent.
  const any_tensor& at(std::string_view name) const {
    const any_tensor* t = find(name);
    detail::check(t != nullptr, errc::value, "state_dict: no tensor named '", name, "' (",
                  size(), " entries)");
    return *t;
  }
  /// The typed tensor under `name` (checked: the key exists and holds T elements).
  template <class T>
  tensor<T> get(std::string_view name) const {
    const any_tensor& t = at(name);
    detail::check(t.holds<T>(), errc::dtype, "state_dict: '", name, "' holds ", t.dtype(),
                  " elements, not ", dtype_of<T>, " (shape ", t.shape(), ")");
    return t.get<T>();
  }
  /// Removes `name`; returns whether it was there.
  bool erase(std::string_view name) {
    auto it = index_.find(std::string(name));
    if (it == index_.end()) return false;
    items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(it->second));
    rebuild_index();
    return true;
  }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    out.reserve(items_.size());
    for (const auto& [name, t] : items_) out.push_back(name);
    return out;
  }

  std::size_t size() const noexcept { return items_.size(); }
  bool empty() const noexcept { return items_.empty(); }
  const_iterator begin() const noexcept { return items_.begin(); }
  const_iterator end() const noexcept { return items_.end(); }

  /// Free-form string metadata (saved as the safetensors `__metadata__`).
  std::map<std::string, std::string>& metadata() noexcept { return metadata_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

 private:
  void rebuild_index() {
    index_.clear();
    for (std::size_t i = 0; i < items_.size(); ++i) index_.emplace(items_[i].first, i);
  }
  std::vector<value_type> items_;
  std::unordered_map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace ember
