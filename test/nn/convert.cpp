// module.to<U>() (include/ember/nn/module.hpp) and nn::skip_init (include/ember/nn/init.hpp):
// a float module converted to double holds exactly the double values of its floats, computes
// what the float module computes (within float rounding), keeps requires_grad, gradients and
// train/eval modes, and draws no random numbers; what cannot convert says why.
#include "support/errors.hpp"

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace em = ember;
namespace nn = ember::nn;
using ember_test::error_of;
using ember_test::message_of;

namespace convert_test {
namespace {

/// A user model over its element type, default-constructible (to<U>() builds net<U>()).
template <class T>
struct net : nn::module<net<T>, T> {
  BOOST_HANA_DEFINE_STRUCT(net, (nn::basic_linear<T>, fc1), (nn::basic_batch_norm1d<T>, bn),
                           (nn::basic_linear<T>, fc2), (nn::dropout, drop));
  net() : fc1(4, 6), bn(6), fc2(6, 3), drop(0.5) {}
  em::tensor<T> forward(const em::tensor<T>& x) { return fc2(drop(em::relu(bn(fc1(x))))); }
};

/// A user model whose size is a constructor argument: converts through its converting constructor.
template <class T>
struct sized : nn::module<sized<T>, T> {
  BOOST_HANA_DEFINE_STRUCT(sized, (nn::basic_linear<T>, fc));
  explicit sized(std::int64_t width) : fc(3, width), width(width) {}
  template <class V>
  explicit sized(const sized<V>& other) : sized(other.width) {}
  std::int64_t width;
};

/// A model that builds a container in its constructor: converts (the container is rebuilt).
template <class T>
struct seq_net : nn::module<seq_net<T>, T> {
  BOOST_HANA_DEFINE_STRUCT(seq_net, (nn::basic_sequential<T>, body));
  seq_net() : body(nn::basic_linear<T>(3, 4), nn::relu(), nn::basic_linear<T>(4, 2)) {}
};

/// Not a template over its element type, with parameters: cannot convert.
struct fixed : nn::module<fixed> {
  BOOST_HANA_DEFINE_STRUCT(fixed, (nn::linear, fc));
  fixed() : fc(2, 2) {}
};

/// Every element of a double tensor equals the float element converted (exactly).
void check_exact(const em::tensor<double>& got, const em::tensor<float>& from) {
  REQUIRE(got.shape() == from.shape());
  const auto g = got.contiguous();
  const auto f = from.contiguous();
  for (std::int64_t i = 0; i < g.numel(); ++i) CHECK(g.data()[i] == static_cast<double>(f.data()[i]));
}

}  // namespace
}  // namespace convert_test

using namespace convert_test;

TEST_CASE("module.to<double>(): values, outputs, requires_grad, gradients, modes", "[nn][convert]") {
  em::manual_seed(3);
  net<float> n;
  n.eval();
  n.bn.train();  // a mode set per module survives
  // running statistics that are not the defaults, a frozen parameter, a gradient
  {
    auto x = em::randn<float>({5, 4});
    n.bn(n.fc1(x));  // training-mode batch norm: updates running_mean/var and the counter
  }
  n.fc1.bias.requires_grad_(false);
  auto x = em::randn<float>({5, 4});
  n.bn.eval();
  em::sum(n(x)).backward();
  n.bn.train();

  const auto before = em::default_generator().offset();
  auto d = n.to<double>();
  static_assert(std::is_same_v<decltype(d), net<double>>);
  CHECK(em::default_generator().offset() == before);  // no random numbers drawn

  auto from = n.state_dict();
  auto to = d.state_dict();
  REQUIRE(to.keys() == from.keys());
  for (const auto& name : from.keys()) {
    if (from.at(name).holds<float>()) {
      check_exact(to.at(name).get<double>(), from.at(name).get<float>());
    } else {  // num_batches_tracked stays int64
      REQUIRE(to.at(name).holds<std::int64_t>());
      CHECK(to.at(name).get<std::int64_t>().item() == from.at(name).get<std::int64_t>().item());
    }
  }
  CHECK(d.bn.num_batches_tracked.item() == 1);
  CHECK(!d.is_training());
  CHECK(d.bn.is_training());
  CHECK(!d.fc2.is_training());
  CHECK(!d.fc1.bias.requires_grad());
  CHECK(d.fc1.weight.requires_grad());
  REQUIRE(d.fc2.weight.grad().defined());
  check_exact(d.fc2.weight.grad(), n.fc2.weight.grad());
  CHECK(!d.fc1.bias.grad().defined());

  // the double model computes what the float model does (eval mode: deterministic)
  n.eval();
  d.eval();
  const auto y32 = n(x);
  const auto y64 = d(x.to<double>());
  const auto a = y32.contiguous();
  const auto b = y64.contiguous();
  for (std::int64_t i = 0; i < a.numel(); ++i)
    CHECK(std::abs(static_cast<double>(a.data()[i]) - b.data()[i]) <= 1e-5 * (1 + std::abs(b.data()[i])));

  // independent: changing the copy leaves the original alone
  {
    em::no_grad_guard ng;
    d.fc1.weight.fill_(0.0);
  }
  CHECK(n.fc1.weight.contiguous().data()[0] != 0.0f);
  // and back: double -> float gives the original floats (they were exact in double)
  auto back = d.to<float>();
  static_assert(std::is_same_v<decltype(back), net<float>>);
  check_exact(back.fc2.weight.to<double>(), n.fc2.weight);
}

TEST_CASE("module.to<U>(): built-in layers, converting constructors, same type, errors", "[nn][convert]") {
  SECTION("built-in layers convert through their options") {
    nn::conv2d c({.in = 2, .out = 3, .kernel = 3, .padding = 1, .bias = false});
    auto c64 = c.to<double>();
    static_assert(std::is_same_v<decltype(c64), nn::basic_conv2d<double>>);
    CHECK(!c64.bias.defined());
    check_exact(c64.weight, c.weight);
    CHECK(c64.repr() == c.repr());

    nn::embedding e({.num_embeddings = 5, .embedding_dim = 2, .padding_idx = 1});
    auto e64 = e.to<double>();
    check_exact(e64.weight, e.weight);
    CHECK(e64.options.padding_idx == 1);

    nn::multihead_attention mha({.embed_dim = 4, .num_heads = 2});
    auto mha64 = mha.to<double>();
    CHECK(mha64.state_dict().keys() == mha.state_dict().keys());
    check_exact(mha64.in_proj_weight, mha.in_proj_weight);
  }
  SECTION("a converting constructor") {
    sized<float> s(7);
    auto s64 = s.to<double>();
    CHECK(s64.width == 7);
    check_exact(s64.fc.weight, s.fc.weight);
  }
  SECTION("a model that builds its container converts; a container converts to its own type") {
    seq_net<float> m;
    auto m64 = m.to<double>();
    REQUIRE(m64.state_dict().keys() == m.state_dict().keys());
    check_exact(m64.body.at<nn::basic_linear<double>>(2).weight, m.body.at<nn::linear>(2).weight);
    auto same = m.body.to<float>();
    CHECK(same.size() == 3);
  }
  SECTION("to<T>() shares the tensors, as tensor::to<T>()") {
    nn::linear fc(2, 3);
    auto same = fc.to<float>();
    static_assert(std::is_same_v<decltype(same), nn::linear>);
    CHECK(same.weight.impl_ptr() == fc.weight.impl_ptr());
  }
  SECTION("parameterless modules that are not templates are copied") {
    nn::relu r;
    auto r64 = r.to<double>();
    CHECK(r64.repr() == "ReLU()");
  }
  SECTION("a non-template module with parameters cannot convert, and says how to fix it") {
    fixed f;
    CHECK(error_of([&] { (void)f.to<double>(); }) == em::errc::dtype);
    const auto msg = message_of([&] { (void)f.to<double>(); });
    CHECK(msg.find("fixed") != std::string::npos);
    CHECK(msg.find("template <class T>") != std::string::npos);
  }
}

TEST_CASE("nn::skip_init: no initialization, no random numbers", "[nn][convert]") {
  em::manual_seed(11);
  const auto before = em::default_generator().offset();
  auto fc = nn::skip_init<nn::linear>(8, 4);
  CHECK(em::default_generator().offset() == before);
  CHECK(fc.weight.shape() == em::shape{4, 8});
  CHECK(fc.weight.requires_grad());
  // the guard is scoped: initialization works again afterwards
  nn::linear g(8, 4);
  CHECK(em::default_generator().offset() > before);
  {
    nn::init::skip_guard skip;
    auto w = em::zeros<float>({3, 3});
    nn::init::uniform_(w, 1.0, 2.0);
    CHECK(w.contiguous().data()[0] == 0.0f);  // left as it was
  }
  auto w = em::zeros<float>({3, 3});
  nn::init::uniform_(w, 1.0, 2.0);
  CHECK(w.contiguous().data()[0] >= 1.0f);
}
