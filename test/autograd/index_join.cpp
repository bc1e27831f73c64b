// Gradients of include/ember/ops/index.hpp and include/ember/ops/join.hpp: finite-difference
// gradchecks (float64) of every differentiable op, node names, gradients of the backward
// passes themselves (for create_graph), and errors.
#include <ember/autograd/gradcheck.hpp>
#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <vector>

namespace em = ember;
namespace F = ember::nn::functional;

namespace {

using vec = std::vector<em::tensor<double>>;
using idx_t = em::tensor<std::int64_t>;

em::tensor<double> leaf(const em::shape& s) { return em::randn<double>(s).requires_grad_(); }

idx_t ix(const std::vector<std::int64_t>& v, const em::shape& s) {
  return em::from_vector<std::int64_t>(v, s);
}

/// Throws unless gradcheck passes (reports the worst element).
template <class Fn>
void check(Fn&& f, const vec& inputs) {
  CHECK(em::autograd::gradcheck(std::forward<Fn>(f), inputs, {.raise = true}));
}

/// Checks the backward pass as a function of the upstream gradient v (what double backward
/// differentiates): v -> d<op(x), v>/dx, with create_graph.
void check_backward(const std::function<em::tensor<double>(const em::tensor<double>&)>& op,
                    const em::shape& xs) {
  const em::shape ys = op(em::randn<double>(xs)).shape();
  check(
      [&](const vec& in) {
        const bool outer = em::is_grad_enabled();  // off while gradcheck takes differences
        em::enable_grad_guard eg;
        const auto y = op(in[0]);
        return em::autograd::grad<double>({y}, {in[0]}, {in[1]}, {.retain_graph = outer, .create_graph = outer})[0];
      },
      {leaf(xs), leaf(ys)});
}

template <class Fn>
em::errc category_of(Fn&& f) {
  try {
    f();
  } catch (const em::error& e) {
    return e.category();
  }
  FAIL("no em::error thrown");
  return em::errc::internal;
}

}  // namespace

TEST_CASE("index_select, gather, embedding: gradients accumulate over duplicate indices",
          "[autograd][index]") {
  em::manual_seed(1);
  const auto rows = ix({2, 0, 2, 3}, {4});
  check([&](const vec& in) { return em::index_select(in[0], 0, rows); }, {leaf({4, 3})});
  check([&](const vec& in) { return em::index_select(in[0], -1, ix({1, 1, 0}, {3})); },
        {leaf({2, 3, 2})});
  CHECK(em::index_select(leaf({4, 3}), 0, rows).grad_fn_name() == "index_select_backward");

  const auto g1 = ix({0, 0, 3, 1, 2, 2}, {3, 2});
  check([&](const vec& in) { return em::gather(in[0], -1, g1); }, {leaf({3, 4})});
  check([&](const vec& in) { return em::gather(in[0], 0, ix({2, 2, 0, 1, 0, 2}, {2, 3})); },
        {leaf({3, 3})});
  CHECK(em::gather(leaf({3, 4}), 1, g1).grad_fn_name() == "gather_backward");

  const auto ids = ix({1, 4, 1, 0, 4, 4}, {2, 3});
  check([&](const vec& in) { return em::embedding(ids, in[0]); }, {leaf({5, 3})});
  CHECK(em::embedding(ids, leaf({5, 3})).grad_fn_name() == "embedding_backward");

  // one_hot is integer-valued: nothing to record
  CHECK(em::one_hot(ids, 5).grad_fn_name().empty());
}

TEST_CASE("embedding: the padding_idx row gets no gradient", "[autograd][index]") {
  em::manual_seed(2);
  const auto ids = ix({1, 4, 1, 0, 4, 4}, {2, 3});
  for (const std::int64_t p : {std::int64_t{4}, std::int64_t{-1}}) {
    auto w = leaf({5, 2});
    auto y = F::embedding(ids, w, {.padding_idx = p});
    y.backward(em::ones_like(y));
    const std::vector<double> count = {1, 2, 0, 0, 0};  // row 4 is padding
    for (std::int64_t r = 0; r < 5; ++r)
      for (std::int64_t c = 0; c < 2; ++c) CHECK(w.grad().at({r, c}) == count[r]);
  }
  // rows other than padding_idx: exact gradients
  check([&](const vec& in) { return F::embedding(ids, in[0], {.padding_idx = 2}); },
        {leaf({5, 3})});
}

TEST_CASE("scatter_add, scatter, index_add: gradients for self and src", "[autograd][index]") {
  em::manual_seed(3);
  // idx smaller than src: src elements outside idx's shape get zero gradient
  const auto i1 = ix({1, 1, 3, 0}, {2, 2});
  check([&](const vec& in) { return em::scatter_add(in[0], 1, i1, in[1]); },
        {leaf({3, 4}), leaf({3, 3})});
  check([&](const vec& in) { return em::scatter_add(in[0], -2, ix({2, 0, 2}, {1, 3}), in[1]); },
        {leaf({3, 3}), leaf({1, 3})});
  CHECK(em::scatter_add(leaf({3, 4}), 1, i1, leaf({3, 3})).grad_fn_name() ==
        "scatter_add_backward");

  // duplicates: the last write wins, and only it gets src's gradient
  const auto i2 = ix({0, 2, 0, 1, 1, 1}, {2, 3});
  check([&](const vec& in) { return em::scatter(in[0], 1, i2, in[1]); },
        {leaf({2, 4}), leaf({2, 3})});
  check([&](const vec& in) { return em::scatter(in[0], 0, ix({2, 0}, {1, 2}), in[1]); },
        {leaf({3, 2}), leaf({2, 2})});
  CHECK(em::scatter(leaf({2, 4}), 1, i2, leaf({2, 3})).grad_fn_name() == "scatter_backward");

  const auto i3 = ix({0, 2, 0}, {3});
  check([&](const vec& in) { return em::index_add(in[0], 0, i3, in[1], 2.5); },
        {leaf({4, 3}), leaf({3, 3})});
  check([&](const vec& in) { return em::index_add(in[0], -1, ix({1, 1}, {2}), in[1]); },
        {leaf({2, 3}), leaf({2, 2})});
  CHECK(em::index_add(leaf({4, 3}), 0, i3, leaf({3, 3})).grad_fn_name() == "index_add_backward");

  // in place on a non-leaf, with src alone requiring grad
  check(
      [&](const vec& in) {
        auto z = em::zeros<double>({2, 4});
        em::scatter_add_(z, 1, i2, in[0]);
        return z;
      },
      {leaf({2, 3})});
}

TEST_CASE("masked_fill, masked_select: gradients through broadcasting", "[autograd][index]") {
  em::manual_seed(4);
  const auto m = em::from_vector<bool>({true, false, false, true}, {4});
  const auto m3 = em::from_vector<bool>({true, false, true, true, false, false, true, false},
                                        {2, 1, 4});
  check([&](const vec& in) { return em::masked_fill(in[0], m, 7.0); }, {leaf({3, 4})});
  check([&](const vec& in) { return em::masked_fill(in[0], m3, 0.5); }, {leaf({3, 4})});
  check(
      [&](const vec& in) {
        auto y = in[0].clone();
        em::masked_fill_(y, m, -1.0);
        return y;
      },
      {leaf({3, 4})});
  CHECK(em::masked_fill(leaf({3, 4}), m, 1.0).grad_fn_name() == "masked_fill_backward");

  check([&](const vec& in) { return em::masked_select(in[0], m); }, {leaf({3, 4})});
  check([&](const vec& in) { return em::masked_select(in[0], m3); }, {leaf({3, 4})});
  CHECK(em::masked_select(leaf({3, 4}), m).grad_fn_name() == "masked_select_backward");
}

TEST_CASE("cat, stack: gradients are slices of the output's", "[autograd][join]") {
  em::manual_seed(5);
  const vec three = {leaf({2, 3}), em::randn<double>({4, 3}), leaf({1, 3})};  // middle: no grad
  check([](const vec& in) { return em::cat(in, 0); }, three);
  check([](const vec& in) { return em::cat({in[0], in[1]}, -1); }, {leaf({2, 1}), leaf({2, 3})});
  check([](const vec& in) { return em::cat({in[0], em::zeros<double>({0}), in[1]}, 1); },
        {leaf({2, 2}), leaf({2, 3})});  // legacy empty tensor skipped
  CHECK(em::cat(three, 0).grad_fn_name() == "cat_backward");

  for (const std::int64_t d : {0, 1, 2, -1, -3})
    check([d](const vec& in) { return em::stack(in, d); }, {leaf({2, 3}), leaf({2, 3}),
                                                               em::randn<double>({2, 3})});
  CHECK(em::stack({leaf({2}), leaf({2})}, 1).grad_fn_name() == "stack_backward");
}

// The pieces are views of the input: they are cloned, since gradcheck perturbs the input in
// place and would see both perturbations through a view.
TEST_CASE("split, chunk, unbind: pieces without gradient count as zeros", "[autograd][join]") {
  em::manual_seed(6);
  check(
      [](const vec& in) {
        auto p = em::split(in[0], 3, 0);  // 3, 3, 1
        return vec{p[0].clone(), p[2].clone()};
      },
      {leaf({7, 2})});
  check(
      [](const vec& in) {
        auto p = em::split(in[0], {1, 4, 2}, -1);
        return vec{p[1].clone()};
      },
      {leaf({3, 7})});
  check(
      [](const vec& in) {
        auto p = em::chunk(in[0], 3, 1);  // 3, 3, 1
        return vec{p[2].clone(), p[0].clone()};
      },
      {leaf({2, 7})});
  check(
      [](const vec& in) {
        auto p = em::unbind(in[0], -1);
        return vec{p[1].clone(), p[2].clone()};
      },
      {leaf({2, 4})});
  const auto x = leaf({5, 2});
  const auto pieces = em::split(x, 2, 0);
  CHECK(pieces[0].grad_fn_name() == "split_backward");
  CHECK(pieces[2].output_nr() == 2);
  CHECK(em::split_with_sizes(x, {1, 4})[1].grad_fn_name() == "split_with_sizes_backward");
  CHECK(em::chunk(x, 2, 1)[0].grad_fn_name() == "chunk_backward");
  CHECK(em::unbind(x, 0)[3].grad_fn_name() == "unbind_backward");
  // pieces are views: writing into one in place is refused (as for narrow)
  auto p1 = pieces[1];
  CHECK(category_of([&] { p1.fill_(1.0); }) == em::errc::autograd);
  // the forward is unchanged: pieces share x's storage
  CHECK(pieces[1].data() == x.data() + 4);
}

TEST_CASE("pad: constant (with cropping), reflect, replicate, circular", "[autograd][join]") {
  em::manual_seed(7);
  check([](const vec& in) { return em::pad(in[0], {1, 2}, 3.0); }, {leaf({3, 4})});
  check([](const vec& in) { return em::pad(in[0], {1, -1, -1, 2}, 0.0); }, {leaf({3, 4})});
  check([](const vec& in) { return em::pad(in[0], {-2, -1}); }, {leaf({2, 4})});
  check([](const vec& in) { return em::pad(in[0], {2, 1}, em::pad_mode::reflect); },
        {leaf({2, 4})});
  check([](const vec& in) { return em::pad(in[0], {1, 2, 2, 0}, em::pad_mode::replicate); },
        {leaf({2, 3, 3})});
  check([](const vec& in) { return em::pad(in[0], {-1, 2, 1, 1}, em::pad_mode::circular); },
        {leaf({3, 4})});
  check([](const vec& in) { return em::pad(in[0], {0, -1}, em::pad_mode::reflect); },
        {leaf({2, 4})});
  CHECK(em::pad(leaf({2, 2}), {1, 1}, 0.0).grad_fn_name() == "pad_backward");
}

TEST_CASE("backward passes are differentiable (create_graph)", "[autograd][index][join]") {
  em::manual_seed(8);
  using T = em::tensor<double>;
  check_backward([](const T& x) { return em::index_select(x, 1, ix({2, 0, 2}, {3})); }, {2, 3});
  check_backward([](const T& x) { return em::gather(x, 0, ix({1, 1, 0, 2}, {2, 2})); }, {3, 2});
  check_backward(
      [](const T& x) { return F::embedding(ix({0, 3, 3, 1}, {4}), x, {.padding_idx = 1}); },
      {4, 2});
  check_backward([](const T& x) { return em::scatter(x, 1, ix({0, 0, 2}, {1, 3}), x); }, {1, 3});
  check_backward([](const T& x) { return em::index_add(x, 0, ix({1, 1}, {2}), x, 2.0); }, {2, 2});
  check_backward(
      [](const T& x) { return em::masked_select(x, em::from_vector<bool>({true, false}, {2})); },
      {3, 2});
  check_backward([](const T& x) { return em::cat({x, x.narrow(0, 1, 1)}, 0); }, {2, 3});
  check_backward([](const T& x) { return em::stack({x, x}, 1); }, {2, 3});
  check_backward([](const T& x) { return em::split(x, 2, 1)[1].clone(); }, {2, 5});
  check_backward([](const T& x) { return em::pad(x, {2, -1}, em::pad_mode::reflect); }, {2, 4});
}

TEST_CASE("index and join errors with inputs that require grad", "[autograd][index][join]") {
  const auto x = leaf({3, 4});
  CHECK(category_of([&] { em::index_select(x, 0, ix({3}, {1})); }) == em::errc::index);
  CHECK(category_of([&] { em::gather(x, 2, ix({0}, {1, 1})); }) == em::errc::index);
  CHECK(category_of([&] { em::cat({x, leaf({3, 2})}, 0); }) == em::errc::shape);
  CHECK(category_of([&] { em::stack({x, leaf({4, 3})}); }) == em::errc::shape);
  CHECK(category_of([&] { em::split(x, {1, 1}, 0); }) == em::errc::shape);
  CHECK(category_of([&] { em::pad(x, {-3, -2}, 0.0); }) == em::errc::shape);
  CHECK(category_of([&] { F::embedding(ix({0}, {1}), x, {.padding_idx = 3}); }) ==
        em::errc::index);
  // in-place writes into a leaf that requires grad are refused, and leave it unchanged
  const double before = x.at({0, 0});
  CHECK(category_of([&] { em::scatter_add_(x, 1, ix({0}, {1, 1}), leaf({1, 1})); }) ==
        em::errc::autograd);
  CHECK(category_of([&] { em::masked_fill_(x, x.detach() > 0.0, 0.0); }) == em::errc::autograd);
  CHECK(category_of([&] { em::index_add_(x, 0, ix({0}, {1}), leaf({1, 4})); }) ==
        em::errc::autograd);
  CHECK(x.at({0, 0}) == before);
  // an index modified in place after the forward: backward refuses
  auto idx = ix({0, 1}, {2});
  auto y = em::index_select(x, 0, idx);
  idx.fill_(2);
  CHECK(category_of([&] { y.backward(em::ones_like(y)); }) == em::errc::autograd);
}
