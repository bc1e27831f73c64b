// small_vector<T, N>: a vector of trivially copyable T that stores up to N elements inline
// (no heap) and spills to the heap beyond. Used for shapes and strides.
#pragma once

#include <ember/core/config.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <type_traits>

namespace ember::detail {

template <class T, std::size_t N>
class small_vector {
  static_assert(std::is_trivially_copyable_v<T>, "small_vector holds trivially copyable types");

 public:
  using value_type = T;
  using size_type = std::size_t;
  using iterator = T*;
  using const_iterator = const T*;

  small_vector() noexcept = default;
  explicit small_vector(size_type n, T value = T{}) { assign(n, value); }
  small_vector(std::initializer_list<T> il) { assign(il.begin(), il.end()); }
  template <class It>
    requires(!std::is_integral_v<It>)
  small_vector(It first, It last) {
    assign(first, last);
  }
  small_vector(std::span<const T> s) { assign(s.begin(), s.end()); }  // NOLINT: implicit
  small_vector(const small_vector& o) { copy_from(o); }
  small_vector(small_vector&& o) noexcept { steal(o); }
  small_vector& operator=(const small_vector& o) {
    if (this != &o) copy_from(o);
    return *this;
  }
  small_vector& operator=(small_vector&& o) noexcept {
    if (this != &o) {
      release();
      steal(o);
    }
    return *this;
  }
  ~small_vector() { release(); }

  template <class It>
  void assign(It first, It last) {
    const auto n = static_cast<size_type>(std::distance(first, last));
    size_ = 0;
    reserve(n);
    std::copy(first, last, data_);
    size_ = n;
  }
  void assign(size_type n, T value) {
    if (n <= N) {  // every buffer holds N elements: a fixed-length fill (no memset call)
      for (size_type i = 0; i < N; ++i) data_[i] = value;
      size_ = n;
      return;
    }
    size_ = 0;
    reserve(n);
    std::fill_n(data_, n, value);
    size_ = n;
  }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  size_type size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  size_type capacity() const noexcept { return capacity_; }
  bool is_inline() const noexcept { return data_ == inline_; }

  T& operator[](size_type i) noexcept { return data_[i]; }
  const T& operator[](size_type i) const noexcept { return data_[i]; }
  T& front() noexcept { return data_[0]; }
  const T& front() const noexcept { return data_[0]; }
  T& back() noexcept { return data_[size_ - 1]; }
  const T& back() const noexcept { return data_[size_ - 1]; }
  iterator begin() noexcept { return data_; }
  iterator end() noexcept { return data_ + size_; }
  const_iterator begin() const noexcept { return data_; }
  const_iterator end() const noexcept { return data_ + size_; }

  operator std::span<const T>() const noexcept { return {data_, size_}; }  // NOLINT

  void reserve(size_type n) {
    if (n <= capacity_) return;
    size_type cap = std::max(n, capacity_ * 2);
    T* p = static_cast<T*>(::operator new(cap * sizeof(T)));
    if (size_) std::memcpy(p, data_, size_ * sizeof(T));
    release();
    data_ = p;
    capacity_ = cap;
  }
  void resize(size_type n, T value = T{}) {
    reserve(n);
    if (n > size_) std::fill(data_ + size_, data_ + n, value);
    size_ = n;
  }
  void push_back(T v) {
    if (size_ == capacity_) reserve(size_ + 1);
    data_[size_++] = v;
  }
  void pop_back() noexcept { --size_; }
  void clear() noexcept { size_ = 0; }
  iterator insert(const_iterator pos, T v) {
    const auto i = static_cast<size_type>(pos - data_);
    push_back(v);
    std::rotate(data_ + i, data_ + size_ - 1, data_ + size_);
    return data_ + i;
  }
  iterator erase(const_iterator pos) noexcept {
    const auto i = static_cast<size_type>(pos - data_);
    std::move(data_ + i + 1, data_ + size_, data_ + i);
    --size_;
    return data_ + i;
  }

  friend bool operator==(const small_vector& a, const small_vector& b) noexcept {
    // a plain loop: shapes have a handful of extents, and std::equal on integers becomes a
    // memcmp call (7% of an eager add of 16 floats, bench O1)
    if (a.size_ != b.size_) return false;
    for (size_type i = 0; i < a.size_; ++i)
      if (a.data_[i] != b.data_[i]) return false;
    return true;
  }

 private:
  // Shapes are copied and filled on every eager op: with up to N elements the copy is one
  // fixed-length memcpy of the whole inline array, which the compiler inlines (a memmove call
  // per shape was ~8% of an eager add of 16 floats, bench O1). Every buffer, inline or heap,
  // holds at least N elements, so reading N is in bounds.
  void copy_from(const small_vector& o) {
    if (o.size_ > N) return assign(o.begin(), o.end());
    std::memcpy(data_, o.data_, sizeof(inline_));
    size_ = o.size_;
  }
  void release() noexcept {
    if (data_ != inline_) ::operator delete(data_);
    data_ = inline_;
    capacity_ = N;
  }
  void steal(small_vector& o) noexcept {
    if (o.data_ == o.inline_) {
      std::memcpy(inline_, o.inline_, sizeof(inline_));
      data_ = inline_;
      capacity_ = N;
    } else {
      data_ = o.data_;
      capacity_ = o.capacity_;
      o.data_ = o.inline_;
      o.capacity_ = N;
    }
    size_ = o.size_;
    o.size_ = 0;
  }

  T* data_ = inline_;
  size_type size_ = 0;
  size_type capacity_ = N;
  T inline_[N];
};

}  // namespace ember::detail
