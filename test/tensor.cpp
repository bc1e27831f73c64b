// Tests for include/ember/tensor.hpp: properties, views, copies/conversions, in-place writes,
// element access. Expected strides and values are computed by hand (PyTorch semantics).
#include <catch2/catch.hpp>

#include <ember/ops/factory.hpp>
#include <ember/tensor.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace em = ember;
using Catch::Matchers::Contains;
using shp = em::shape;

namespace {

/// Row-major element list, read straight from storage with the tensor's offset and strides
/// (independent of ember's copy/contiguous machinery).
template <class T>
std::vector<T> values(const em::tensor<T>& t) {
  std::vector<T> out;
  if (t.numel() == 0) return out;
  const T* base = static_cast<const T*>(t.storage()->data());
  const std::int64_t n = t.dim();
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n), 0);
  for (;;) {
    std::int64_t off = t.storage_offset();
    for (std::int64_t d = 0; d < n; ++d) off += idx[d] * t.strides()[d];
    out.push_back(base[off]);
    std::int64_t d = n - 1;
    while (d >= 0 && ++idx[d] == t.shape()[d]) idx[d--] = 0;
    if (d < 0) return out;
  }
}

/// 0, 1, ..., numel-1 with the given shape.
template <class T = float>
em::tensor<T> seq(const shp& s) {
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(i);
  return em::from_vector<T>(v, s);
}

std::vector<float> fv(std::initializer_list<float> il) { return il; }

}  // namespace

/// Expects `expr` to throw ember::error of category `cat` whose message contains each part.
#define CHECK_EMBER_ERROR(expr, cat, ...)                                    \
  do {                                                                       \
    bool thrown_ = false;                                                    \
    try {                                                                    \
      (void)(expr);                                                          \
    } catch (const em::error& e_) {                                          \
      thrown_ = true;                                                        \
      CHECK(e_.category() == (cat));                                         \
      for (const char* part_ : {__VA_ARGS__})                                \
        CHECK_THAT(std::string(e_.what()), Contains(part_));                 \
    }                                                                        \
    CHECK(thrown_);                                                          \
  } while (0)

TEST_CASE("tensor: properties", "[tensor]") {
  auto a = seq({2, 3, 4});
  CHECK(a.defined());
  CHECK(a.shape() == shp{2, 3, 4});
  CHECK(a.sizes() == shp{2, 3, 4});
  CHECK(a.dim() == 3);
  CHECK(a.numel() == 24);
  CHECK(a.size(0) == 2);
  CHECK(a.size(-1) == 4);
  CHECK(a.size(-3) == 2);
  CHECK(a.strides() == shp{12, 4, 1});
  CHECK(a.stride(0) == 12);
  CHECK(a.stride(-1) == 1);
  CHECK(a.is_contiguous());
  CHECK(a.dtype() == em::dtype::f32);
  CHECK(a.device() == em::cpu);
  CHECK(a.storage_offset() == 0);
  CHECK(a.data()[5] == 5.f);
  CHECK(a.element_size() == 4);
  CHECK(a.nbytes() == 96);
  CHECK(seq<double>({2}).dtype() == em::dtype::f64);
  CHECK(seq<std::int64_t>({2}).dtype() == em::dtype::i64);
  CHECK_EMBER_ERROR(a.size(3), em::errc::index, "size", "3", "rank 3");
  CHECK_EMBER_ERROR(a.stride(-4), em::errc::index, "stride", "-4", "rank 3");

  auto b = a;  // copies the handle
  CHECK(b.is_same(a));
  CHECK_FALSE(a.view({24}).is_same(a));

  auto s = em::full<float>({}, 3.f);  // 0-d
  CHECK(s.dim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.shape() == shp{});
  CHECK(s.strides() == shp{});
  CHECK(s.is_contiguous());
  CHECK(s.item() == 3.f);
  // PyTorch: a 0-d tensor has no dimension to ask the size of
  CHECK_EMBER_ERROR(s.size(0), em::errc::index, "size");
  CHECK_EMBER_ERROR(s.stride(-1), em::errc::index, "stride");
}

TEST_CASE("tensor: view", "[tensor][view]") {
  auto a = seq({3, 4});
  auto v = a.view({2, 6});
  CHECK(v.shape() == shp{2, 6});
  CHECK(v.strides() == shp{6, 1});
  CHECK(v.storage() == a.storage());
  CHECK(v.data() == a.data());
  CHECK(a.view({-1, 3}).shape() == shp{4, 3});
  CHECK(a.view({2, -1, 2}).shape() == shp{2, 3, 2});
  CHECK(a.view({-1}).shape() == shp{12});
  CHECK(a.view({1, 12, 1}).strides() == shp{12, 1, 1});
  CHECK(values(a.view({-1})) == fv({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));

  CHECK_EMBER_ERROR(a.view({-1, -1}), em::errc::shape, "view", "(-1,-1)");
  CHECK_EMBER_ERROR(a.view({5, -1}), em::errc::shape, "view", "(5,-1)", "(3,4)");
  CHECK_EMBER_ERROR(a.view({5}), em::errc::shape, "view", "(5)", "(3,4)");
  CHECK_EMBER_ERROR(a.view({-2, 6}), em::errc::shape, "view", "(-2,6)");

  SECTION("splitting a dim of a transposed tensor") {
    auto t = seq({4, 6}).t();  // (6,4) strides (1,6): t[r,c] = 6c + r
    REQUIRE(t.strides() == shp{1, 6});
    auto w = t.view({2, 3, 4});  // r = 3i + j  ->  offset 3i + j + 6k
    CHECK(w.strides() == shp{3, 1, 6});
    CHECK(w.storage() == t.storage());
    CHECK(w.at({1, 2, 3}) == 3 + 2 + 18);
  }
  SECTION("merging a contiguous chunk of a permuted tensor") {
    auto p = seq({2, 3, 4}).permute({2, 0, 1});  // (4,2,3) strides (1,12,4)
    REQUIRE(p.strides() == shp{1, 12, 4});
    auto m = p.view({4, 6});  // m[k, 3i+j] = 12i + 4j + k = 4(3i+j) + k
    CHECK(m.strides() == shp{1, 4});
    CHECK(m.at({1, 5}) == 21.f);
    auto s = p.view({4, 3, 2});  // split 6 = (3,2) over stride 4: (1, 8, 4)
    CHECK(s.strides() == shp{1, 8, 4});
    CHECK(p.view({4, 1, 6, 1}).strides()[0] == 1);
    CHECK_EMBER_ERROR(p.view({24}), em::errc::shape, "view", "(24)", "(4,2,3)", "(1,12,4)");
    CHECK_EMBER_ERROR(p.view({8, 3}), em::errc::shape, "view", "(8,3)", "(4,2,3)");
  }
  SECTION("0-d and empty") {
    auto s = em::full<float>({}, 2.f);
    CHECK(s.view({1, 1}).shape() == shp{1, 1});
    CHECK(s.view({1, 1}).strides() == shp{1, 1});
    CHECK(s.view({-1}).shape() == shp{1});
    CHECK(seq({1}).view({}).dim() == 0);
    auto e = em::zeros<float>({0, 3});
    CHECK(e.view({3, 0}).shape() == shp{3, 0});
    CHECK_EMBER_ERROR(e.view({-1, 0}), em::errc::shape, "view");
  }
  SECTION("view_as") {
    auto w = a.view_as(em::zeros<double>({6, 2}));
    CHECK(w.shape() == shp{6, 2});
    CHECK(w.dtype() == em::dtype::f32);
    CHECK(w.storage() == a.storage());
  }
}

TEST_CASE("tensor: reshape", "[tensor][view]") {
  auto a = seq({2, 3});
  auto r = a.reshape({3, -1});
  CHECK(r.shape() == shp{3, 2});
  CHECK(r.storage() == a.storage());  // a view when possible
  auto t = a.t();
  auto c = t.reshape({6});  // not viewable: copies
  CHECK(c.storage() != a.storage());
  CHECK(c.is_contiguous());
  CHECK(values(c) == fv({0, 3, 1, 4, 2, 5}));
  auto tv = t.reshape({3, 2, 1});  // viewable: only a trailing 1 added
  CHECK(tv.storage() == a.storage());
  CHECK(tv.strides()[0] == 1);
  CHECK(tv.strides()[1] == 3);
  CHECK(a.reshape_as(em::zeros<std::int64_t>({6, 1})).shape() == shp{6, 1});
  CHECK_EMBER_ERROR(a.reshape({4, -1}), em::errc::shape, "reshape", "(4,-1)", "(2,3)");
}

TEST_CASE("tensor: transpose, t, permute, movedim", "[tensor][view]") {
  auto a = seq({2, 3, 4});
  auto t = a.transpose(0, 2);
  CHECK(t.shape() == shp{4, 3, 2});
  CHECK(t.strides() == shp{1, 4, 12});
  CHECK(t.storage() == a.storage());
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.at({3, 2, 1}) == 12 + 8 + 3);
  CHECK(a.transpose(-1, -3).strides() == shp{1, 4, 12});
  CHECK(a.transpose(1, 1).strides() == shp{12, 4, 1});
  CHECK_EMBER_ERROR(a.transpose(0, 3), em::errc::index, "transpose", "3", "rank 3");

  auto m = seq({2, 3});
  CHECK(m.t().shape() == shp{3, 2});
  CHECK(m.t().strides() == shp{1, 3});
  CHECK(values(m.t()) == fv({0, 3, 1, 4, 2, 5}));
  CHECK(seq({5}).t().shape() == shp{5});
  CHECK(em::full<float>({}, 1.f).t().dim() == 0);
  CHECK_EMBER_ERROR(a.t(), em::errc::shape, "t:", "(2,3,4)");

  auto p = a.permute({2, 0, 1});
  CHECK(p.shape() == shp{4, 2, 3});
  CHECK(p.strides() == shp{1, 12, 4});
  CHECK(a.permute({-1, 0, -2}).strides() == shp{1, 12, 4});
  CHECK(p.storage() == a.storage());
  CHECK_EMBER_ERROR(a.permute({0, 1}), em::errc::shape, "permute", "(0,1)", "(2,3,4)");
  CHECK_EMBER_ERROR(a.permute({0, 0, 1}), em::errc::value, "permute", "(0,0,1)");
  CHECK_EMBER_ERROR(a.permute({0, 1, 3}), em::errc::index, "permute", "3");

  auto mv = a.movedim(0, 2);
  CHECK(mv.shape() == shp{3, 4, 2});
  CHECK(mv.strides() == shp{4, 1, 12});
  auto mv2 = a.movedim(-1, 0);
  CHECK(mv2.shape() == shp{4, 2, 3});
  CHECK(mv2.strides() == shp{1, 12, 4});
  CHECK(a.movedim(1, 1).strides() == shp{12, 4, 1});
  CHECK(em::full<float>({}, 1.f).movedim(0, 0).dim() == 0);  // PyTorch: a no-op on 0-d
  CHECK_EMBER_ERROR(a.movedim(0, 3), em::errc::index, "movedim");
}

TEST_CASE("tensor: slice", "[tensor][view]") {
  auto a = seq({10});
  auto s = a.slice(0, 2, 5);
  CHECK(values(s) == fv({2, 3, 4}));
  CHECK(s.storage_offset() == 2);
  CHECK(s.storage() == a.storage());
  CHECK(values(a.slice(0, -3)) == fv({7, 8, 9}));
  CHECK(values(a.slice(0, -3, -1)) == fv({7, 8}));
  CHECK(values(a.slice(0, -100, 100)) == values(a));
  CHECK(values(a.slice(0, 8, 100)) == fv({8, 9}));
  auto st = a.slice(0, 1, 8, 2);
  CHECK(values(st) == fv({1, 3, 5, 7}));
  CHECK(st.strides() == shp{2});
  CHECK(values(a.slice(0, 1, 9, 2)) == fv({1, 3, 5, 7}));
  CHECK(values(a.slice(0, 0, 10, 3)) == fv({0, 3, 6, 9}));
  CHECK(a.slice(0, 5, 2).shape() == shp{0});
  CHECK(a.slice(0, 20, 30).shape() == shp{0});
  CHECK(a.slice(0, -1, -5).numel() == 0);
  CHECK_EMBER_ERROR(a.slice(0, 0, 5, 0), em::errc::value, "slice", "step", "0");
  CHECK_EMBER_ERROR(a.slice(0, 0, 5, -1), em::errc::value, "slice", "-1");
  CHECK_EMBER_ERROR(a.slice(1, 0, 5), em::errc::index, "slice", "rank 1");
  CHECK_EMBER_ERROR(em::full<float>({}, 1.f).slice(0, 0, 1), em::errc::index, "slice", "0-d");

  auto m = seq({3, 4});
  auto c = m.slice(1, 1, 3);
  CHECK(c.shape() == shp{3, 2});
  CHECK(c.strides() == shp{4, 1});
  CHECK(c.storage_offset() == 1);
  CHECK(values(c) == fv({1, 2, 5, 6, 9, 10}));
  auto r = m.slice(0, 1);
  CHECK(r.shape() == shp{2, 4});
  CHECK(r.storage_offset() == 4);
  CHECK(r.is_contiguous());
  CHECK_FALSE(c.is_contiguous());
  CHECK(values(m.slice(-1, 0, 4, 2)) == fv({0, 2, 4, 6, 8, 10}));

  auto e = seq({4, 6}).slice(0, 2, 2).slice(1, 0, 6, 2);  // (0,3): no elements
  CHECK(e.shape() == shp{0, 3});
  CHECK(e.numel() == 0);
  CHECK(e.is_contiguous());  // PyTorch: every tensor without elements is contiguous
}

TEST_CASE("tensor: narrow and select", "[tensor][view]") {
  auto m = seq({3, 4});
  auto n = m.narrow(1, 1, 2);
  CHECK(n.shape() == shp{3, 2});
  CHECK(n.storage() == m.storage());
  CHECK(values(n) == fv({1, 2, 5, 6, 9, 10}));
  CHECK(values(m.narrow(0, -2, 2)) == fv({4, 5, 6, 7, 8, 9, 10, 11}));
  CHECK(m.narrow(0, 3, 0).shape() == shp{0, 4});
  CHECK_EMBER_ERROR(m.narrow(1, 3, 2), em::errc::index, "narrow", "(3,4)", "4");
  CHECK_EMBER_ERROR(m.narrow(1, -5, 1), em::errc::index, "narrow", "(3,4)");
  CHECK_EMBER_ERROR(m.narrow(0, 0, -1), em::errc::index, "narrow", "(3,4)");
  CHECK_EMBER_ERROR(m.narrow(2, 0, 1), em::errc::index, "narrow", "2");

  auto r = m.select(0, 1);
  CHECK(r.shape() == shp{4});
  CHECK(r.storage_offset() == 4);
  CHECK(values(r) == fv({4, 5, 6, 7}));
  auto col = m.select(1, -1);
  CHECK(col.shape() == shp{3});
  CHECK(col.strides() == shp{4});
  CHECK(col.storage_offset() == 3);
  CHECK(values(col) == fv({3, 7, 11}));
  CHECK(values(m[2]) == fv({8, 9, 10, 11}));
  CHECK(values(m[-1]) == fv({8, 9, 10, 11}));
  CHECK(values(m[-3]) == fv({0, 1, 2, 3}));
  auto x = seq({5})[3];
  CHECK(x.dim() == 0);
  CHECK(x.item() == 3.f);
  CHECK(m[1][2].item() == 6.f);
  CHECK_EMBER_ERROR(m[3], em::errc::index, "select", "3", "(3,4)");
  CHECK_EMBER_ERROR(m.select(1, -5), em::errc::index, "select", "-5", "(3,4)");
  CHECK_EMBER_ERROR(x.select(0, 0), em::errc::index, "select", "0-d");
}

TEST_CASE("tensor: unsqueeze and squeeze", "[tensor][view]") {
  auto m = seq({3, 4});
  CHECK(m.unsqueeze(0).shape() == shp{1, 3, 4});
  CHECK(m.unsqueeze(0).strides() == shp{12, 4, 1});
  CHECK(m.unsqueeze(1).shape() == shp{3, 1, 4});
  CHECK(m.unsqueeze(1).strides() == shp{4, 4, 1});
  CHECK(m.unsqueeze(2).shape() == shp{3, 4, 1});
  CHECK(m.unsqueeze(2).strides() == shp{4, 1, 1});
  CHECK(m.unsqueeze(-1).shape() == shp{3, 4, 1});
  CHECK(m.unsqueeze(-3).shape() == shp{1, 3, 4});
  CHECK(m.unsqueeze(0).storage() == m.storage());
  CHECK_EMBER_ERROR(m.unsqueeze(3), em::errc::index, "unsqueeze", "3");
  CHECK_EMBER_ERROR(m.unsqueeze(-4), em::errc::index, "unsqueeze", "-4");
  auto tu = m.t().unsqueeze(1);  // (4,1,3): inserted stride = size*stride of dim 1 = 3*4
  CHECK(tu.shape() == shp{4, 1, 3});
  CHECK(tu.strides() == shp{1, 12, 4});
  auto s0 = em::full<float>({}, 1.f).unsqueeze(0);
  CHECK(s0.shape() == shp{1});
  CHECK(s0.strides() == shp{1});

  auto x = em::zeros<float>({1, 3, 1, 2});
  REQUIRE(x.strides() == shp{6, 2, 2, 1});
  CHECK(x.squeeze().shape() == shp{3, 2});
  CHECK(x.squeeze().strides() == shp{2, 1});
  CHECK(x.squeeze().storage() == x.storage());
  CHECK(x.squeeze(0).shape() == shp{3, 1, 2});
  CHECK(x.squeeze(1).shape() == shp{1, 3, 1, 2});  // size 3: no-op
  CHECK(x.squeeze(-2).shape() == shp{1, 3, 2});
  CHECK(x.squeeze(-2).strides() == shp{6, 2, 1});
  CHECK_EMBER_ERROR(x.squeeze(4), em::errc::index, "squeeze", "4");
  CHECK(m.unsqueeze(1).squeeze(1).strides() == shp{4, 1});
  auto one = em::full<float>({1, 1}, 5.f).squeeze();
  CHECK(one.dim() == 0);
  CHECK(one.item() == 5.f);
  CHECK(em::full<float>({}, 1.f).squeeze(0).dim() == 0);
}

TEST_CASE("tensor: expand", "[tensor][view]") {
  auto b = em::from_vector<float>({1, 2, 3});
  auto e = b.expand({4, 3});
  CHECK(e.shape() == shp{4, 3});
  CHECK(e.strides() == shp{0, 1});
  CHECK(e.storage() == b.storage());
  CHECK(e.at({3, 2}) == 3.f);
  CHECK(values(e) == fv({1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3}));
  CHECK(b.expand({-1}).shape() == shp{3});

  auto c = seq({3, 1});
  CHECK(c.expand({3, 4}).strides() == shp{1, 0});
  CHECK(c.expand({-1, 4}).shape() == shp{3, 4});
  CHECK(c.expand({-1, 4}).strides() == shp{1, 0});
  CHECK(c.expand({2, 3, 4}).shape() == shp{2, 3, 4});
  CHECK(c.expand({2, 3, 4}).strides() == shp{0, 1, 0});
  CHECK(values(c.expand({3, 2})) == fv({0, 0, 1, 1, 2, 2}));
  CHECK(em::zeros<float>({1}).expand({0}).shape() == shp{0});
  CHECK(em::full<float>({}, 2.f).expand({2, 2}).strides() == shp{0, 0});

  CHECK_EMBER_ERROR(b.expand({2, 4}), em::errc::shape, "expand", "(3)", "(2,4)");
  CHECK_EMBER_ERROR(c.expand({3}), em::errc::shape, "expand", "(3,1)", "(3)");
  CHECK_EMBER_ERROR(b.expand({-1, 3}), em::errc::shape, "expand", "(-1,3)");
  CHECK_EMBER_ERROR(em::zeros<float>({1}).expand({-2}), em::errc::shape, "expand", "(-2)");

  auto ea = b.expand_as(em::zeros<std::int32_t>({2, 3}));
  CHECK(ea.shape() == shp{2, 3});
  CHECK(ea.strides() == shp{0, 1});

  CHECK_EMBER_ERROR(e.fill_(1.f), em::errc::value, "fill_", "(4,3)", "(0,1)");
  CHECK_EMBER_ERROR(e.copy_(em::ones<float>({4, 3})), em::errc::value, "copy_", "(4,3)");
  CHECK(values(b) == fv({1, 2, 3}));
}

TEST_CASE("tensor: flatten and unflatten", "[tensor][view]") {
  auto a = seq({2, 3, 4});
  CHECK(a.flatten().shape() == shp{24});
  CHECK(a.flatten().storage() == a.storage());
  CHECK(a.flatten(1).shape() == shp{2, 12});
  CHECK(a.flatten(1).strides() == shp{12, 1});
  CHECK(a.flatten(0, 1).shape() == shp{6, 4});
  CHECK(a.flatten(-2, -1).shape() == shp{2, 12});
  CHECK(a.flatten(1, 1).shape() == shp{2, 3, 4});
  auto tf = seq({2, 3}).t().flatten();  // not viewable: copies
  CHECK(values(tf) == fv({0, 3, 1, 4, 2, 5}));
  CHECK(tf.is_contiguous());
  auto s = em::full<float>({}, 7.f).flatten();
  CHECK(s.shape() == shp{1});
  CHECK(s.at({0}) == 7.f);
  CHECK_EMBER_ERROR(a.flatten(2, 1), em::errc::value, "flatten", "(2,3,4)");
  CHECK_EMBER_ERROR(a.flatten(0, 3), em::errc::index, "flatten", "3");

  auto u = seq({12}).unflatten(0, {3, 4});
  CHECK(u.shape() == shp{3, 4});
  CHECK(u.strides() == shp{4, 1});
  auto u2 = seq({2, 12}).unflatten(1, {3, -1});
  CHECK(u2.shape() == shp{2, 3, 4});
  CHECK(u2.strides() == shp{12, 4, 1});
  CHECK(seq({2, 12}).unflatten(-1, {2, 6}).shape() == shp{2, 2, 6});
  CHECK_EMBER_ERROR(seq({12}).unflatten(0, {5, -1}), em::errc::shape, "unflatten", "(5,-1)");
  CHECK_EMBER_ERROR(seq({12}).unflatten(0, {5, 2}), em::errc::shape, "unflatten", "(5,2)");
}

TEST_CASE("tensor: as_strided", "[tensor][view]") {
  auto a = seq({12});
  auto w = a.as_strided({4, 3}, {2, 1}, 0);  // sliding windows
  CHECK(w.storage() == a.storage());
  CHECK(values(w) == fv({0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8}));
  auto q = a.as_strided({2, 2}, {1, 2}, 3);
  CHECK(values(q) == fv({3, 5, 4, 6}));
  CHECK(q.storage_offset() == 3);
  CHECK(values(a.as_strided({4, 3}, {3, 1}, 0)) == values(a));  // exactly fits
  // the offset is absolute in storage, not relative to the view's offset (as PyTorch)
  CHECK(values(a.slice(0, 5).as_strided({2}, {1}, 0)) == fv({0, 1}));
  CHECK(a.as_strided({0, 5}, {100, 100}, 12).numel() == 0);
  CHECK_EMBER_ERROR(a.as_strided({4, 3}, {3, 1}, 1), em::errc::index, "as_strided", "(4,3)",
                    "(3,1)", "12");
  CHECK_EMBER_ERROR(a.as_strided({13}, {1}, 0), em::errc::index, "as_strided", "(13)");
  CHECK_EMBER_ERROR(a.as_strided({2}, {1}, -1), em::errc::index, "as_strided");
  CHECK_EMBER_ERROR(a.as_strided({2, 2}, {1}, 0), em::errc::shape, "as_strided", "(2,2)", "(1)");
  CHECK_EMBER_ERROR(a.as_strided({2}, {-1}, 5), em::errc::value, "as_strided", "(-1)");
  CHECK_EMBER_ERROR(a.as_strided({-2}, {1}, 0), em::errc::value, "as_strided", "(-2)");
}

TEST_CASE("tensor: contiguous, clone, detach", "[tensor]") {
  auto a = seq({2, 3});
  CHECK(a.contiguous().is_same(a));
  CHECK(a.contiguous().storage() == a.storage());
  auto t = a.t();
  auto tc = t.contiguous();
  CHECK(tc.storage() != a.storage());
  CHECK(tc.is_contiguous());
  CHECK(tc.strides() == shp{2, 1});
  CHECK(values(tc) == fv({0, 3, 1, 4, 2, 5}));
  CHECK(a.unsqueeze(1).is_contiguous());  // size-1 dims may have any stride

  auto c = a.clone();
  CHECK(c.storage() != a.storage());
  CHECK(values(c) == values(a));
  c.fill_(9.f);
  CHECK(values(a) == fv({0, 1, 2, 3, 4, 5}));
  auto sc = a.slice(1, 1).clone();
  CHECK(sc.storage_offset() == 0);
  CHECK(values(sc) == fv({1, 2, 4, 5}));

  auto d = a.detach();
  CHECK(d.storage() == a.storage());
  CHECK_FALSE(d.is_same(a));
  CHECK(d.shape() == a.shape());
  CHECK(d.strides() == a.strides());
  auto ds = a.slice(1, 1).detach();
  CHECK(ds.storage_offset() == 1);
  d.fill_(4.f);
  CHECK(a.at({1, 2}) == 4.f);
}

TEST_CASE("tensor: to<U> and to(device)", "[tensor]") {
  auto f = em::from_vector<float>({-2.7f, -0.5f, 0.5f, 2.7f, 3.f, -1.5f});
  auto d = f.to<double>();
  CHECK(d.dtype() == em::dtype::f64);
  CHECK(d.storage() != f.storage());
  CHECK(values(d) == std::vector<double>{double(-2.7f), -0.5, 0.5, double(2.7f), 3.0, -1.5});
  auto i = f.to<std::int64_t>();  // truncation toward zero
  CHECK(i.dtype() == em::dtype::i64);
  CHECK(values(i) == std::vector<std::int64_t>{-2, 0, 0, 2, 3, -1});
  CHECK(values(f.to<bool>()) == std::vector<bool>{true, true, true, true, true, true});
  CHECK(values(em::from_vector<float>({0.f, 0.25f}).to<bool>()) == std::vector<bool>{false, true});
  CHECK(values(em::from_vector<std::int64_t>({300, -1}).to<std::int32_t>()) ==
        std::vector<std::int32_t>{300, -1});
  CHECK(f.to<float>().is_same(f));
  auto mt = seq({3, 4}).t().to<double>();  // non-contiguous source
  CHECK(mt.shape() == shp{4, 3});
  CHECK(mt.at({1, 2}) == 9.0);
  CHECK(f.to(em::cpu).is_same(f));
  CHECK(f.cpu().is_same(f));
}

TEST_CASE("tensor: copy_", "[tensor][inplace]") {
  SECTION("broadcasting") {
    auto z = em::zeros<float>({2, 3});
    z.copy_(em::from_vector<float>({1, 2, 3}));
    CHECK(values(z) == fv({1, 2, 3, 1, 2, 3}));
    z.copy_(em::from_vector<float>({7, 8}, {2, 1}));
    CHECK(values(z) == fv({7, 7, 7, 8, 8, 8}));
    z.copy_(em::full<float>({}, 5.f));
    CHECK(values(z) == fv({5, 5, 5, 5, 5, 5}));
    z.copy_(em::from_vector<float>({1, 2, 3}).expand({2, 3}));  // stride-0 source is fine
    CHECK(values(z) == fv({1, 2, 3, 1, 2, 3}));
  }
  SECTION("dtype conversion") {
    auto z = em::zeros<std::int32_t>({4});
    z.copy_(em::from_vector<double>({1.9, -1.9, 2.5, -0.2}));
    CHECK(values(z) == std::vector<std::int32_t>{1, -1, 2, 0});
    auto f = em::zeros<float>({2});
    f.copy_(em::from_vector<std::int64_t>({-3, 4}));
    CHECK(values(f) == fv({-3, 4}));
  }
  SECTION("into a view writes the base") {
    auto base = em::zeros<float>({3, 4});
    base.slice(1, 1, 3).copy_(em::ones<float>({3, 2}));
    CHECK(values(base) == fv({0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0}));
    base.t().copy_(seq({4, 3}));  // base[r][c] = 3c + r
    CHECK(values(base) == fv({0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11}));
  }
  SECTION("errors") {
    auto z = em::zeros<float>({2, 3});
    CHECK_EMBER_ERROR(z.copy_(em::zeros<float>({3, 2})), em::errc::shape, "copy_", "(3,2)",
                      "(2,3)");
    CHECK_EMBER_ERROR(z.copy_(em::zeros<float>({2, 2, 3})), em::errc::shape, "copy_", "(2,2,3)",
                      "(2,3)");
    CHECK_EMBER_ERROR(z.copy_(em::tensor<float>()), em::errc::value, "copy_", "undefined");
    auto e = em::zeros<float>({3}).expand({2, 3});
    CHECK_EMBER_ERROR(e.copy_(em::ones<float>({2, 3})), em::errc::value, "copy_", "(2,3)",
                      "(0,1)");
  }
  SECTION("aliasing: transpose of itself") {
    auto a = seq({3, 3});
    a.copy_(a.t());
    CHECK(values(a) == fv({0, 3, 6, 1, 4, 7, 2, 5, 8}));
    auto b = seq<double>({3, 3});
    b.t().copy_(b);
    CHECK(values(b) == std::vector<double>{0, 3, 6, 1, 4, 7, 2, 5, 8});
  }
  SECTION("aliasing: shifted overlapping slices") {
    auto x = seq({10});
    x.slice(0, 1).copy_(x.slice(0, 0, 9));
    CHECK(values(x) == fv({0, 0, 1, 2, 3, 4, 5, 6, 7, 8}));
    auto y = seq({10});
    y.slice(0, 0, 9).copy_(y.slice(0, 1));
    CHECK(values(y) == fv({1, 2, 3, 4, 5, 6, 7, 8, 9, 9}));
    auto r = seq({3, 2});  // rows shifted down: r[1:] = r[:2]
    r.slice(0, 1).copy_(r.slice(0, 0, 2));
    CHECK(values(r) == fv({0, 1, 0, 1, 2, 3}));
    auto s = seq({4});
    s.copy_(s);  // identical view
    CHECK(values(s) == fv({0, 1, 2, 3}));
    auto bc = seq({2, 3});  // broadcast from its own first row
    bc.copy_(bc[0]);
    CHECK(values(bc) == fv({0, 1, 2, 0, 1, 2}));
  }
}

TEST_CASE("tensor: fill_ and zero_", "[tensor][inplace]") {
  auto a = em::zeros<float>({4, 3});
  a.slice(0, 1, 3).fill_(7.f);
  CHECK(values(a) == fv({0, 0, 0, 7, 7, 7, 7, 7, 7, 0, 0, 0}));
  a.select(1, 1).fill_(5);  // a column, int converted
  CHECK(values(a) == fv({0, 5, 0, 7, 5, 7, 7, 5, 7, 0, 5, 0}));
  a.t().slice(0, 2).fill_(-1.0);
  CHECK(values(a) == fv({0, 5, -1, 7, 5, -1, 7, 5, -1, 0, 5, -1}));
  a.zero_();
  CHECK(values(a) == fv(std::initializer_list<float>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  auto i = em::zeros<std::int32_t>({2});
  i.fill_(2.9);  // static_cast: truncates
  CHECK(values(i) == std::vector<std::int32_t>{2, 2});
  i.fill_(-2.9f);
  CHECK(values(i) == std::vector<std::int32_t>{-2, -2});
  auto bl = em::zeros<bool>({2});
  bl.fill_(3);
  CHECK(values(bl) == std::vector<bool>{true, true});
  auto s = em::zeros<double>({});
  s.fill_(1.5f);
  CHECK(s.item() == 1.5);
  auto e = em::zeros<float>({0, 3});
  e.fill_(1.f);  // nothing to write
  CHECK(e.numel() == 0);
}

TEST_CASE("tensor: at and item", "[tensor]") {
  auto m = seq({3, 4});
  CHECK(m.at({1, 2}) == 6.f);
  CHECK(m.at({-1, -1}) == 11.f);
  CHECK(m.at({-3, 0}) == 0.f);
  CHECK(m.t().at({3, 1}) == 7.f);
  CHECK(m.slice(1, 1).at({2, 0}) == 9.f);
  CHECK_EMBER_ERROR(m.at({3, 0}), em::errc::index, "at", "3", "(3,4)");
  CHECK_EMBER_ERROR(m.at({0, -5}), em::errc::index, "at", "-5", "(3,4)");
  CHECK_EMBER_ERROR(m.at({1}), em::errc::index, "at", "1 indices", "(3,4)");
  CHECK_EMBER_ERROR(m.at({1, 1, 1}), em::errc::index, "at", "3 indices", "(3,4)");
  auto s = em::full<std::int64_t>({}, 4);
  CHECK(s.at({}) == 4);
  CHECK(s.item() == 4);
  CHECK(em::full<float>({1, 1, 1}, 2.5f).item() == 2.5f);
  CHECK(m.select(0, 2).select(0, 3).item() == 11.f);
  CHECK_EMBER_ERROR(seq({3}).item(), em::errc::shape, "item", "(3)");
  CHECK_EMBER_ERROR(em::zeros<float>({0}).item(), em::errc::shape, "item", "(0)");
}

TEST_CASE("tensor: version counter", "[tensor][inplace]") {
  auto t = em::zeros<float>({2, 3});
  const auto v0 = t.storage()->version();
  t.fill_(1.f);
  CHECK(t.storage()->version() == v0 + 1);
  t.copy_(em::ones<float>({3}));
  CHECK(t.storage()->version() == v0 + 2);
  t.zero_();
  CHECK(t.storage()->version() == v0 + 3);
  t.slice(0, 1).fill_(2.f);  // a write through a view bumps the shared storage
  CHECK(t.storage()->version() == v0 + 4);
  t.copy_(t.t().t());  // aliasing path still counts once
  CHECK(t.storage()->version() == v0 + 5);
  (void)t.view({6});  // views and reads do not bump
  (void)t.at({0, 0});
  (void)t.clone();
  CHECK(t.storage()->version() == v0 + 5);
}

TEST_CASE("tensor: undefined and dtype mismatch", "[tensor][error]") {
  em::tensor<float> u;
  CHECK_FALSE(u.defined());
  CHECK(u.impl_ptr() == nullptr);
  CHECK(u.is_same(em::tensor<float>()));
  CHECK_EMBER_ERROR(u.shape(), em::errc::value, "undefined");
  CHECK_EMBER_ERROR(u.numel(), em::errc::value, "undefined");
  CHECK_EMBER_ERROR(u.data(), em::errc::value, "undefined");
  CHECK_EMBER_ERROR(u.view({1}), em::errc::value, "undefined");
  CHECK_EMBER_ERROR(u.fill_(1.f), em::errc::value, "undefined");
  CHECK_THROWS_AS(u.item(), em::error);
  CHECK_EMBER_ERROR(em::zeros<float>({1}).copy_(u), em::errc::value, "copy_", "undefined");

  auto d = em::zeros<double>({2});
  CHECK_EMBER_ERROR(em::tensor<float>(d.impl_ptr()), em::errc::dtype, "tensor<f32>", "f64");
  CHECK_EMBER_ERROR(em::tensor<std::int64_t>(d.impl_ptr()), em::errc::dtype, "i64", "f64");
  em::tensor<double> ok(d.impl_ptr());
  CHECK(ok.is_same(d));
  em::tensor<float> null_impl(std::shared_ptr<em::detail::tensor_impl>{});
  CHECK_FALSE(null_impl.defined());
}
