// Tests of include/ember/nn/utils/clip_grad.hpp against torch.nn.utils 1.13
// (test/data/optim_extra/clip_grad.safetensors, from test/tools/gen_optim_extra.py): total norms
// and clipped gradients for p = 2, 1, inf, -inf, 0, 3, 0.5 in float64 and float32, a single
// tensor, a non-finite gradient, clip_grad_value_, and error_if_nonfinite.
#include "support/errors.hpp"
#include "support/safetensors.hpp"

#include <ember/ember.hpp>
#include <ember/nn/utils/clip_grad.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace em = ember;
namespace et = ember_test;
using et::error_of;
using et::message_of;
using et::json::value;

namespace {

const et::st_file& oracle() {
  static const et::st_file f = et::read_safetensors(et::test_data("optim_extra/clip_grad.safetensors"));
  return f;
}

template <class T>
constexpr double tol = std::is_same_v<T, double> ? 1e-12 : 1e-6;

/// |got - want| <= tol (1 + |want|), NaN matching NaN and infinities matching exactly.
template <class T>
bool close(T got, T want) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::abs(static_cast<double>(got) - static_cast<double>(want)) <= tol<T> * (1 + std::abs(static_cast<double>(want)));
}

template <class T>
void check_grads(const std::vector<em::tensor<T>>& params, const std::string& key) {
  for (std::size_t k = 0; k < 3; ++k) {
    INFO("gradient " << k);
    const auto want = oracle().get<T>(key + ".grad." + std::to_string(k));
    const auto got = params[k].grad().contiguous();
    REQUIRE(got.shape() == want.shape());
    for (std::int64_t i = 0; i < want.numel(); ++i) CHECK(close(got.data()[i], want.data()[i]));
  }
  CHECK_FALSE(params[3].grad().defined());  // the parameter without a gradient stays so
}

/// Four parameters shaped (3, 4), (5), (2, 2), (3); the first three get the stored gradients.
template <class T>
std::vector<em::tensor<T>> params_with_grads(const std::string& which = "grad") {
  const std::string dt = std::is_same_v<T, double> ? "f64" : "f32";
  std::vector<em::tensor<T>> ps;
  for (em::shape s : {em::shape{3, 4}, em::shape{5}, em::shape{2, 2}, em::shape{3}})
    ps.push_back(em::zeros<T>(s).requires_grad_());
  for (std::size_t k = 0; k < 3; ++k) {
    const std::string alt = "input." + dt + "." + which + "." + std::to_string(k);
    const std::string name = oracle().contains(alt) ? alt : "input." + dt + ".grad." + std::to_string(k);
    ps[k].set_grad(oracle().get<T>(name).clone());
  }
  return ps;
}

double norm_type_of(const value& v) {
  if (v.is_string()) return v.as_string() == "inf" ? INFINITY : -INFINITY;
  return v.as_double();
}

template <class T>
void run_case(const std::string& key, const value& c) {
  auto ps = params_with_grads<T>(key.rfind("nonfinite", 0) == 0 ? "nonfinite" : "grad");
  if (c.at("fn").as_string() == "clip_grad_value_") {
    em::nn::utils::clip_grad_value_(ps, c.at("clip_value").as_double());
  } else {
    const em::tensor<T> total =
        em::nn::utils::clip_grad_norm_(ps, c.at("max_norm").as_double(), norm_type_of(c.at("norm_type")));
    CHECK(total.dim() == 0);
    CHECK(close(total.item(), oracle().get<T>(key + ".total").item()));
  }
  check_grads(ps, key);
}

}  // namespace

TEST_CASE("clip_grad_norm_ and clip_grad_value_ follow torch.nn.utils", "[nn][clip_grad][oracle]") {
  int cases = 0;
  for (const auto& [name, json] : oracle().metadata) {
    if (name.rfind("case.", 0) != 0 || name == "case.single_f64") continue;
    const std::string key = name.substr(5);
    INFO("clip case " << key << ": " << json);
    const value c = et::json::parse(json);
    if (c.at("dtype").as_string() == "f64") run_case<double>(key, c);
    else run_case<float>(key, c);
    ++cases;
  }
  CHECK(cases == 19);
}

TEST_CASE("clip_grad_norm_: one tensor, no gradients, non-finite norms", "[nn][clip_grad]") {
  // a single tensor (PyTorch wraps it in a list)
  auto p = em::zeros<double>({3, 4}).requires_grad_();
  p.set_grad(oracle().get<double>("input.f64.grad.0").clone());
  const auto total = em::nn::utils::clip_grad_norm_(p, 0.5);
  CHECK(close(total.item(), oracle().get<double>("single_f64.total").item()));
  const auto want = oracle().get<double>("single_f64.grad.0");
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 4; ++j) CHECK(close(p.grad().at({i, j}), want.at({i, j})));

  // an initializer list, and parameters without gradients: a zero norm, nothing touched
  auto q = em::zeros<float>({2}).requires_grad_();
  CHECK(em::nn::utils::clip_grad_norm_({q}, 1.0).item() == 0.f);
  CHECK_FALSE(q.grad().defined());
  em::nn::utils::clip_grad_value_({q}, 1.0);
  CHECK_FALSE(q.grad().defined());

  // error_if_nonfinite: an ember::error naming the norm, and the gradients left alone
  auto ps = params_with_grads<double>("nonfinite");
  const std::string msg = message_of([&] { em::nn::utils::clip_grad_norm_(ps, 0.5, 2.0, true); });
  CHECK(error_of([&] { em::nn::utils::clip_grad_norm_(ps, 0.5, 2.0, true); }) == em::errc::value);
  CHECK(msg.find("the total norm of order 2 of 3 gradients is inf") != std::string::npos);
  CHECK(std::isinf(ps[1].grad().at({2})));
  CHECK(ps[0].grad().at({0, 0}) == oracle().get<double>("input.f64.grad.0").at({0, 0}));
  // the same call without the flag scales by the non-finite norm, as PyTorch (inf * 0 = nan)
  auto nan_norm = em::nn::utils::clip_grad_norm_(ps, 0.5, INFINITY, false);
  CHECK(std::isinf(nan_norm.item()));
  CHECK(std::isnan(ps[1].grad().at({2})));
}
