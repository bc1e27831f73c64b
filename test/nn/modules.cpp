// nn modules against PyTorch (test/data/nn/modules.safetensors, from test/tools/gen_nn_cases.py):
// for every layer and container, a float64 module loads torch's state_dict strictly (so the keys
// are PyTorch's), its forward output, parameter and input gradients and running statistics match
// torch's within 1e-10 * (1 + |want|), its state_dict keys come out in torch's order, and the
// float32 module prints exactly as torch's repr. Then the module base itself: reflection,
// train/eval, zero_grad, load_state_dict errors, containers, init.
#include "support/errors.hpp"
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace em = ember;
namespace nn = ember::nn;
using ember_test::error_of;
using ember_test::message_of;

namespace {

const ember_test::st_file& cases() {
  static const ember_test::st_file f =
      ember_test::read_safetensors(std::string(EMBER_TEST_DATA) + "/nn/modules.safetensors");
  return f;
}

/// The tensor `name` of the case file as an any_tensor of its stored dtype.
em::any_tensor stored(const std::string& name) {
  const auto& t = cases().at(name);
  if (t.dtype == "I64") return cases().get<std::int64_t>(name);
  return cases().get<double>(name);
}

em::state_dict stored_state(const std::string& prefix) {
  em::state_dict sd;
  for (const auto& [name, t] : cases().tensors)
    if (name.rfind(prefix, 0) == 0) sd.insert(name.substr(prefix.size()), stored(name));
  return sd;
}

template <class T>
double worst_error(const em::tensor<T>& got, const em::tensor<T>& want) {
  REQUIRE(got.shape() == want.shape());
  const auto g = got.contiguous(), w = want.contiguous();
  double worst = 0;
  for (std::int64_t i = 0; i < g.numel(); ++i) {
    const double a = static_cast<double>(g.data()[i]), b = static_cast<double>(w.data()[i]);
    worst = std::max(worst, std::abs(a - b) / (1 + std::abs(b)));
  }
  return worst;
}

/// Runs case `i` on the float64 module m (f32: the same layer in float32, for the printout).
template <class M, class M32>
void check_case(int i, M& m, const M32& m32) {
  const std::string p = "case" + std::to_string(i) + ".";
  const auto meta = ember_test::json::parse(cases().meta("case" + std::to_string(i)));
  INFO("case " << i << ": " << meta.at("module").as_string());

  // strict load: the keys are PyTorch's
  REQUIRE_NOTHROW(m.load_state_dict(stored_state(p + "sd.")));
  std::vector<std::string> want_keys;
  for (const auto& k : meta.at("keys").arr) want_keys.push_back(k.as_string());
  CHECK(m.state_dict().keys() == want_keys);
  CHECK(m32.repr() == meta.at("repr").as_string());

  if (meta.at("mode").as_string() == "train") m.train(); else m.eval();
  const auto& in_t = cases().at(p + "in");
  em::tensor<double> out, x;
  if constexpr (std::is_same_v<M, nn::basic_embedding<double>>) {
    REQUIRE(in_t.dtype == "I64");
    out = m(cases().get<std::int64_t>(p + "in"));
  } else {
    x = cases().get<double>(p + "in").requires_grad_();
    out = m(x);
  }
  CHECK(worst_error(out, cases().get<double>(p + "out")) < 1e-10);

  // gradients of sum(out * U) with respect to every parameter and the input
  auto named = m.named_parameters();
  std::vector<em::tensor<double>> wrt;
  for (auto& [name, t] : named) wrt.push_back(t);
  if (x.defined()) wrt.push_back(x);
  auto grads = em::autograd::grad({em::sum(out * cases().get<double>(p + "upstream"))}, wrt);
  for (std::size_t k = 0; k < named.size(); ++k) {
    INFO("gradient of " << named[k].first);
    CHECK(worst_error(grads[k], cases().get<double>(p + "grad." + named[k].first)) < 1e-10);
  }
  if (x.defined()) CHECK(worst_error(grads.back(), cases().get<double>(p + "grad_in")) < 1e-10);

  for (auto& [name, b] : m.named_buffers()) {
    INFO("buffer " << name << " after the forward");
    if (b.dtype() == em::dtype::i64)
      CHECK(b.template get<std::int64_t>().item() ==
            cases().get<std::int64_t>(p + "after." + name).item());
    else
      CHECK(worst_error(b.template get<double>(), cases().get<double>(p + "after." + name)) < 1e-10);
  }
}

template <class T> auto mlp() {
  return nn::basic_sequential<T>(nn::basic_linear<T>(6, 8), nn::relu(), nn::basic_linear<T>(8, 3), nn::tanh());
}
template <class T> auto cnn() {
  return nn::basic_sequential<T>(nn::basic_conv2d<T>({.in = 1, .out = 4, .kernel = 3, .padding = 1}),
                                 nn::basic_batch_norm2d<T>(4), nn::relu(), nn::max_pool2d({.kernel = 2}),
                                 nn::flatten(), nn::basic_linear<T>(64, 5));
}
template <class T> auto activations() {
  return nn::basic_sequential<T>(nn::basic_linear<T>(6, 6), nn::gelu({.approximate = "tanh"}),
                                 nn::basic_linear<T>(6, 6), nn::silu(), nn::leaky_relu(0.2), nn::elu(0.5),
                                 nn::sigmoid(), nn::basic_linear<T>(6, 4), nn::log_softmax(1));
}
template <class T> auto pools() {
  return nn::basic_sequential<T>(nn::basic_conv2d<T>({.in = 2, .out = 3, .kernel = 3}),
                                 nn::avg_pool2d({.kernel = 2}), nn::basic_conv2d<T>({.in = 3, .out = 2, .kernel = 1}),
                                 nn::adaptive_avg_pool2d({.output_size = 1}), nn::flatten(), nn::softmax(1),
                                 nn::dropout(0.3), nn::gelu());
}

}  // namespace

TEST_CASE("nn layers match PyTorch: keys, outputs, gradients, running stats, printouts", "[nn]") {
  REQUIRE(cases().meta("num_cases") == "15");
  auto run = [](int i, auto&& m, auto&& m32) { check_case(i, m, m32); };
  run(0, nn::basic_linear<double>(5, 3), nn::linear(5, 3));
  run(1, nn::basic_linear<double>(5, 3, false), nn::linear(5, 3, false));
  run(2, nn::basic_conv2d<double>({.in = 2, .out = 4, .kernel = 3, .stride = 2, .padding = 1}),
      nn::conv2d({.in = 2, .out = 4, .kernel = 3, .stride = 2, .padding = 1}));
  const nn::conv2d_options grouped{.in = 4, .out = 4, .kernel = {3, 1}, .dilation = 2, .groups = 2, .bias = false};
  run(3, nn::basic_conv2d<double>(grouped), nn::conv2d(grouped));
  const nn::conv1d_options c1{.in = 3, .out = 6, .kernel = 3, .padding = 2, .groups = 3};
  run(4, nn::basic_conv1d<double>(c1), nn::conv1d(c1));
  run(5, nn::basic_batch_norm1d<double>(4), nn::batch_norm1d(4));
  const nn::batch_norm_options cumulative{.num_features = 3, .momentum = std::nullopt};
  run(6, nn::basic_batch_norm2d<double>(cumulative), nn::batch_norm2d(cumulative));
  run(7, nn::basic_batch_norm1d<double>(4), nn::batch_norm1d(4));
  run(8, nn::basic_layer_norm<double>(em::shape{4, 5}), nn::layer_norm(em::shape{4, 5}));
  run(9, nn::basic_group_norm<double>(2, 6), nn::group_norm(2, 6));
  const nn::embedding_options emb{.num_embeddings = 10, .embedding_dim = 4, .padding_idx = 0};
  run(10, nn::basic_embedding<double>(emb), nn::embedding(emb));
  run(11, mlp<double>(), mlp<float>());
  run(12, cnn<double>(), cnn<float>());
  run(13, activations<double>(), activations<float>());
  run(14, pools<double>(), pools<float>());
}

namespace {

struct block : nn::module<block> {
  BOOST_HANA_DEFINE_STRUCT(block, (nn::linear, fc), (nn::buffer<float>, scale), (int, not_state),
                           (em::tensor<float>, gain), (std::optional<nn::layer_norm>, norm));
  block(bool with_norm) : fc(4, 4), scale(em::ones<float>({4})), not_state(7),
                          gain(em::ones<float>({4}).requires_grad_()) {
    if (with_norm) norm.emplace(em::shape{4});
  }
  em::tensor<float> forward(const em::tensor<float>& x) {
    em::tensor<float> y = fc(x) * gain * scale;
    return norm ? (*norm)(y) : y;
  }
};

struct net : nn::module<net> {
  BOOST_HANA_DEFINE_STRUCT(net, (nn::linear, fc1), (nn::batch_norm1d, bn), (block, body),
                           (nn::linear, fc2));
  net() : fc1(64, 4), bn(4), body(true), fc2(4, 10) {}
  em::tensor<float> forward(const em::tensor<float>& x) { return fc2(body(em::relu(bn(fc1(x))))); }
};

std::vector<std::string> names_of(const auto& named) {
  std::vector<std::string> out;
  for (const auto& [name, t] : named) out.push_back(name);
  return out;
}

}  // namespace

TEST_CASE("module reflection: dotted names, PyTorch's order, buffers, optional children", "[nn]") {
  net n;
  CHECK(names_of(n.named_parameters()) ==
        std::vector<std::string>{"fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "body.gain",
                                 "body.fc.weight", "body.fc.bias", "body.norm.weight", "body.norm.bias",
                                 "fc2.weight", "fc2.bias"});
  CHECK(names_of(n.named_buffers()) ==
        std::vector<std::string>{"bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "body.scale"});
  CHECK(n.state_dict().keys() ==
        std::vector<std::string>{"fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "bn.running_mean",
                                 "bn.running_var", "bn.num_batches_tracked", "body.gain", "body.scale",
                                 "body.fc.weight", "body.fc.bias", "body.norm.weight", "body.norm.bias",
                                 "fc2.weight", "fc2.bias"});
  CHECK(names_of(n.named_modules()) ==
        std::vector<std::string>{"", "fc1", "bn", "body", "body.fc", "body.norm", "fc2"});
  CHECK(names_of(n.named_children()) == std::vector<std::string>{"fc1", "bn", "body", "fc2"});
  CHECK(n.parameters().size() == 11);
  CHECK(names_of(n.named_parameters(false)).empty());
  block without(false);
  CHECK(names_of(without.named_parameters()) == std::vector<std::string>{"gain", "fc.weight", "fc.bias"});
  // the parameters are the module's own tensors (an optimizer updates the module)
  CHECK(n.parameters()[0].is_same(n.fc1.weight));
  CHECK(n.state_dict().get<float>("fc1.weight").is_same(n.fc1.weight));
  CHECK(n.repr() ==
        "net(\n"
        "  (fc1): Linear(in_features=64, out_features=4, bias=True)\n"
        "  (bn): BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (body): block(\n"
        "    (fc): Linear(in_features=4, out_features=4, bias=True)\n"
        "    (norm): LayerNorm((4,), eps=1e-05, elementwise_affine=True)\n"
        "  )\n"
        "  (fc2): Linear(in_features=4, out_features=10, bias=True)\n"
        ")");
  std::ostringstream os;
  os << n;
  CHECK(os.str() == n.repr());
}

TEST_CASE("train/eval, zero_grad, apply, to(cpu)", "[nn]") {
  net n;
  CHECK(n.is_training());
  n.eval();
  CHECK(!n.is_training());
  CHECK(!n.bn.is_training());
  CHECK(!n.body.fc.is_training());
  n.train();
  CHECK(n.body.norm->is_training());

  auto out = n(em::randn<float>({8, 64}));
  em::sum(out).backward();
  CHECK(n.fc1.weight.grad().defined());
  n.zero_grad(/*set_to_none=*/false);
  REQUIRE(n.fc1.weight.grad().defined());
  CHECK(em::amax(em::abs(n.fc1.weight.grad())).item() == 0.f);
  n.zero_grad();
  CHECK(!n.fc1.weight.grad().defined());
  CHECK(!n.body.gain.grad().defined());

  int visited = 0;
  n.apply([&](nn::module_base&) { ++visited; });
  CHECK(visited == 7);
  auto w = n.fc1.weight;
  n.to(em::cpu);
  CHECK(n.fc1.weight.is_same(w));

  // batch norm counts training batches only
  CHECK(n.bn.num_batches_tracked.item() == 1);
  n.eval();
  (void)n(em::randn<float>({8, 64}));
  CHECK(n.bn.num_batches_tracked.item() == 1);
}

TEST_CASE("load_state_dict: strict and non-strict, all problems in one error, conversion", "[nn]") {
  net a, b;
  {
    em::no_grad_guard ng;
    a.fc1.weight.fill_(0.25f);
  }
  b.load_state_dict(a.state_dict());
  CHECK(em::amax(em::abs(b.fc1.weight - 0.25f)).item() == 0.f);
  CHECK(!b.fc1.weight.is_same(a.fc1.weight));  // copied, not shared
  CHECK(b.fc1.weight.requires_grad());

  em::state_dict sd = a.state_dict();
  sd.erase("fc2.bias");
  sd.erase("bn.running_var");
  sd.insert("extra.weight", em::zeros<float>({2}));
  sd.insert("fc1.bias", em::zeros<float>({5}));  // wrong shape
  const std::string msg = message_of([&] { b.load_state_dict(sd); });
  CHECK(msg.find("[ember.value]") == 0);
  CHECK(msg.find("missing keys (2): bn.running_var, fc2.bias") != std::string::npos);
  CHECK(msg.find("unexpected keys (1): extra.weight") != std::string::npos);
  CHECK(msg.find("fc1.bias: checkpoint (5) vs module (4)") != std::string::npos);

  // nothing was copied by the failed load
  em::state_dict ok = a.state_dict();
  ok.erase("fc2.bias");
  ok.insert("extra.weight", em::zeros<float>({2}));
  {
    em::no_grad_guard ng;
    b.fc1.weight.fill_(1.f);
  }
  CHECK(error_of([&] { b.load_state_dict(ok); }) == em::errc::value);
  CHECK(b.fc1.weight.at({0, 0}) == 1.f);
  const auto result = b.load_state_dict(ok, {.strict = false});
  CHECK(result.missing_keys == std::vector<std::string>{"fc2.bias"});
  CHECK(result.unexpected_keys == std::vector<std::string>{"extra.weight"});
  CHECK(b.fc1.weight.at({0, 0}) == 0.25f);

  // shape mismatches are errors even when not strict
  em::state_dict wrong = a.state_dict();
  wrong.insert("fc2.weight", em::zeros<float>({3, 3}));
  CHECK(error_of([&] { b.load_state_dict(wrong, {.strict = false}); }) == em::errc::value);

  // a float64 checkpoint converts into float32 parameters (as torch's copy_)
  nn::basic_linear<double> d(3, 2);
  nn::linear f(3, 2);
  f.load_state_dict(d.state_dict());
  CHECK(f.weight.at({1, 2}) == static_cast<float>(d.weight.at({1, 2})));
}

TEST_CASE("containers: sequential keys and callables, module_list, module_dict", "[nn]") {
  em::manual_seed(1);
  nn::sequential seq(nn::linear(4, 3), nn::relu(), [](const em::tensor<float>& x) { return x * 2.f; },
                     nn::linear(3, 2));
  CHECK(seq.state_dict().keys() == std::vector<std::string>{"0.weight", "0.bias", "3.weight", "3.bias"});
  CHECK(seq.size() == 4);
  auto x = em::randn<float>({5, 4});
  auto& l0 = seq.at<nn::linear>(0);
  auto& l3 = seq.at<nn::linear>(3);
  em::tensor<float> hidden = em::relu(em::matmul(x, l0.weight.t()) + l0.bias) * 2.f;
  em::tensor<float> want = em::matmul(hidden, l3.weight.t()) + l3.bias;
  CHECK(em::amax(em::abs(seq(x) - want)).item() < 1e-6f);
  CHECK(error_of([&] { (void)seq.at<nn::conv2d>(0); }) == em::errc::value);
  CHECK(error_of([&] { (void)seq[2]; }) == em::errc::value);
  CHECK(error_of([&] { (void)seq[9]; }) == em::errc::index);
  // copies share children (modules are handles to their parameters, like tensors)
  auto copy = seq;
  CHECK(copy.at<nn::linear>(0).weight.is_same(l0.weight));

  nn::module_list list(nn::linear(2, 2), nn::relu());
  list.push_back(nn::linear(2, 1, false));
  CHECK(list.state_dict().keys() == std::vector<std::string>{"0.weight", "0.bias", "2.weight"});
  CHECK(list[1].type_name() == "ReLU");

  nn::module_dict heads;
  heads.insert("cls", nn::linear(4, 10));
  heads.insert("box", nn::linear(4, 4));
  CHECK(heads.keys() == std::vector<std::string>{"cls", "box"});
  CHECK(heads.state_dict().keys() ==
        std::vector<std::string>{"cls.weight", "cls.bias", "box.weight", "box.bias"});
  CHECK(error_of([&] { heads.insert("cls", nn::relu()); }) == em::errc::value);
  CHECK(error_of([&] { (void)heads["nope"]; }) == em::errc::value);
  CHECK(heads.at<nn::linear>("box").options.out == 4);
}

TEST_CASE("layer argument checks name the values", "[nn]") {
  CHECK(error_of([] { nn::linear(-1, 3); }) == em::errc::value);
  CHECK(message_of([] { nn::conv2d({.in = 3, .out = 4, .kernel = 3, .groups = 2}); })
            .find("groups = 2 must divide in = 3") != std::string::npos);
  CHECK(error_of([] { nn::conv2d({.in = 3, .out = 4, .kernel = 0}); }) == em::errc::value);
  CHECK(error_of([] { nn::group_norm(4, 6); }) == em::errc::value);
  CHECK(error_of([] { nn::embedding({.num_embeddings = 3, .embedding_dim = 2, .padding_idx = 5}); }) ==
        em::errc::index);
  CHECK(error_of([] { nn::dropout(1.5); }) == em::errc::value);
  nn::batch_norm1d bn(4);
  CHECK(message_of([&] { (void)bn(em::randn<float>({2, 5})); }).find("expected 4 channels") !=
        std::string::npos);
  nn::batch_norm2d bn2(4);
  CHECK(error_of([&] { (void)bn2(em::randn<float>({2, 4})); }) == em::errc::shape);
  nn::linear fc(3, 2);
  CHECK(error_of([&] { (void)fc(em::randn<float>({2, 4})); }) == em::errc::shape);
  CHECK(error_of([] { nn::gelu({.approximate = "fast"}); }) == em::errc::value);
}

TEST_CASE("default initialization follows PyTorch's bounds and statistics", "[nn]") {
  em::manual_seed(3);
  nn::linear fc(400, 300);
  const double bound = 1.0 / std::sqrt(400.0);
  CHECK(em::amax(em::abs(fc.weight)).item() <= bound);
  CHECK(em::amax(em::abs(fc.bias)).item() <= bound);
  // U(-b, b) has variance b^2 / 3; 120000 samples: the estimate is within ~1% of it
  CHECK(em::var(fc.weight).item() == Approx(bound * bound / 3).epsilon(0.03));
  CHECK(std::abs(em::mean(fc.weight).item()) < 0.01 * bound);

  nn::conv2d c({.in = 8, .out = 16, .kernel = 3, .groups = 2});
  const double cb = 1.0 / std::sqrt(4.0 * 9.0);  // fan_in = in/groups * kh * kw
  CHECK(em::amax(em::abs(c.weight)).item() <= cb);
  CHECK(em::amax(em::abs(c.weight)).item() > 0.9 * cb);

  nn::embedding e({.num_embeddings = 1000, .embedding_dim = 64, .padding_idx = -1});
  CHECK(e.options.padding_idx == 999);
  CHECK(em::amax(em::abs(e.weight[999])).item() == 0.f);
  CHECK(em::std(e.weight.slice(0, 0, 999)).item() == Approx(1.0).epsilon(0.02));

  auto w = em::empty<double>({200, 300});
  nn::init::xavier_uniform_(w, 2.0);
  CHECK(em::amax(em::abs(w)).item() <= 2.0 * std::sqrt(6.0 / 500.0));
  nn::init::kaiming_normal_(w, {.mode = nn::init::fan_mode::fan_out, .nonlinearity = nn::init::nonlinearity::relu});
  CHECK(em::std(w).item() == Approx(std::sqrt(2.0 / 200.0)).epsilon(0.02));
  nn::init::xavier_normal_(w);
  CHECK(em::std(w).item() == Approx(std::sqrt(2.0 / 500.0)).epsilon(0.02));
  nn::init::constant_(w, 0.5);
  CHECK(em::amin(w).item() == 0.5);
  CHECK(nn::init::calculate_gain(nn::init::nonlinearity::tanh) == Approx(5.0 / 3.0));
  CHECK(nn::init::calculate_gain(nn::init::nonlinearity::leaky_relu, 0.2) == Approx(std::sqrt(2.0 / 1.04)));
  auto v = em::empty<float>({5});
  CHECK(error_of([&] { nn::init::xavier_uniform_(v); }) == em::errc::shape);
  CHECK(error_of([&] { nn::init::uniform_(v, 1.0, 0.0); }) == em::errc::value);
}

namespace {

/// attn<I>: a multihead_attention or transformer_encoder_layer case (float64, train mode).
template <class M, class M32, class Run>
void check_attention(int i, M& m, const M32& m32, const std::vector<std::string>& inputs, Run run) {
  const std::string p = "attn" + std::to_string(i) + ".";
  const auto meta = ember_test::json::parse(cases().meta("attn" + std::to_string(i)));
  INFO("attention case " << i << ": " << meta.at("module").as_string());
  REQUIRE_NOTHROW(m.load_state_dict(stored_state(p + "sd.")));
  std::vector<std::string> want_keys;
  for (const auto& k : meta.at("keys").arr) want_keys.push_back(k.as_string());
  CHECK(m.state_dict().keys() == want_keys);
  CHECK(m32.repr() == meta.at("repr").as_string());
  m.train();

  em::nn::attention_forward_options<double> fo;
  if (cases().contains(p + "attn_mask")) fo.attn_mask = cases().get<bool>(p + "attn_mask");
  if (cases().contains(p + "attn_bias")) fo.attn_bias = cases().get<double>(p + "attn_bias");
  if (cases().contains(p + "key_padding_mask")) fo.key_padding_mask = cases().get<bool>(p + "key_padding_mask");
  std::vector<em::tensor<double>> xs;
  for (const auto& name : inputs) xs.push_back(cases().get<double>(p + name).requires_grad_());
  const em::tensor<double> out = run(m, xs, fo);
  CHECK(worst_error(out, cases().get<double>(p + "out")) < 1e-10);

  auto named = m.named_parameters();
  std::vector<em::tensor<double>> wrt;
  for (auto& [name, t] : named) wrt.push_back(t);
  for (auto& x : xs) wrt.push_back(x);
  auto grads = em::autograd::grad({em::sum(out * cases().get<double>(p + "upstream"))}, wrt);
  for (std::size_t k = 0; k < named.size(); ++k) {
    INFO("gradient of " << named[k].first);
    CHECK(worst_error(grads[k], cases().get<double>(p + "grad." + named[k].first)) < 1e-10);
  }
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    INFO("gradient of " << inputs[k]);
    CHECK(worst_error(grads[named.size() + k], cases().get<double>(p + "grad_" + inputs[k])) < 1e-10);
  }
}

}  // namespace

TEST_CASE("multihead_attention and transformer_encoder_layer match PyTorch", "[nn]") {
  REQUIRE(cases().meta("num_attn_cases") == "6");
  using mha = nn::basic_multihead_attention<double>;
  auto attend = [](const std::string& p) {
    return [p](mha& m, const std::vector<em::tensor<double>>& x, const em::nn::attention_forward_options<double>& fo) {
      auto [out, w] = m(x[0], x[1], x[2], fo);
      CHECK(worst_error(w, cases().get<double>(p + "weights")) < 1e-10);
      return out;
    };
  };
  const std::vector<std::string> qkv{"query", "key", "value"};
  const std::vector<nn::multihead_attention_options> opts{
      {.embed_dim = 8, .num_heads = 2},
      {.embed_dim = 8, .num_heads = 4, .batch_first = true},
      {.embed_dim = 6, .num_heads = 3, .bias = false, .batch_first = true},
      {.embed_dim = 4, .num_heads = 1}};
  for (int i = 0; i < 4; ++i) {
    mha m(opts[i]);
    nn::multihead_attention m32(opts[i]);
    auto run = attend("attn" + std::to_string(i) + ".");
    if (i == 2)
      check_attention(i, m, m32, qkv, [&](mha& mm, const auto& x, auto fo) {
        fo.average_attn_weights = false;
        return run(mm, x, fo);
      });
    else
      check_attention(i, m, m32, qkv, run);
  }
  using enc = nn::basic_transformer_encoder_layer<double>;
  const std::vector<nn::transformer_encoder_layer_options> eopts{
      {.d_model = 8, .nhead = 2, .dim_feedforward = 16, .dropout = 0.0},
      {.d_model = 8, .nhead = 4, .dim_feedforward = 12, .dropout = 0.0, .activation = "gelu",
       .batch_first = true, .norm_first = true}};
  for (int i = 0; i < 2; ++i) {
    enc m(eopts[i]);
    nn::transformer_encoder_layer m32(eopts[i]);
    check_attention(4 + i, m, m32, {"src"}, [](enc& mm, const auto& x, const auto& fo) { return mm(x[0], fo); });
  }
  // bad shapes and options name the values
  nn::multihead_attention a({.embed_dim = 8, .num_heads = 2});
  CHECK(error_of([&] { (void)a(em::randn<float>({5, 3, 6}), em::randn<float>({5, 3, 6}), em::randn<float>({5, 3, 6})); }) ==
        em::errc::shape);
  CHECK(error_of([] { nn::multihead_attention({.embed_dim = 6, .num_heads = 4}); }) == em::errc::value);
  em::nn::attention_forward_options<float> bad_mask{.attn_mask = em::zeros<bool>({2, 2})};
  auto x = em::randn<float>({5, 3, 8});
  CHECK(error_of([&] { (void)a(x, x, x, bad_mask); }) == em::errc::shape);
}

namespace {

struct tied : nn::module<tied> {
  BOOST_HANA_DEFINE_STRUCT(tied, (nn::embedding, wte), (nn::linear, head));
  tied() : wte(10, 4), head(4, 10, false) { head.weight = wte.weight; }  // weight tying
  em::tensor<float> forward(const em::tensor<std::int64_t>& ix) { return head(wte(ix)); }
};

struct frozen_norm : nn::module<frozen_norm> {
  BOOST_HANA_DEFINE_STRUCT(frozen_norm, (nn::linear, fc), (nn::batch_norm1d, bn));
  frozen_norm() : fc(4, 4), bn(4) {}
  void train(bool on = true) override {
    nn::module<frozen_norm>::train(on);
    bn.eval();  // the user's override runs even when a parent switches modes
  }
  em::tensor<float> forward(const em::tensor<float>& x) { return bn(fc(x)); }
};

struct registers : nn::module<registers> {
  BOOST_HANA_DEFINE_STRUCT(registers, (nn::linear, fc));
  registers() : fc(2, 2) { register_parameter("scale", em::ones<float>({2}).requires_grad_()); }
  void add(const std::string& name) { register_buffer(name, em::zeros<float>({1})); }
  em::tensor<float> forward(const em::tensor<float>& x) { return fc(x); }
};

}  // namespace

TEST_CASE("PyTorch details: tied weights, nesting, old checkpoints, train overrides, names", "[nn]") {
  // tied weights: listed once as parameters, under both names in the state_dict (as PyTorch)
  tied t;
  CHECK(names_of(t.named_parameters()) == std::vector<std::string>{"wte.weight"});
  CHECK(t.state_dict().keys() == std::vector<std::string>{"wte.weight", "head.weight"});
  tied u;
  u.load_state_dict(t.state_dict());
  CHECK(u.head.weight.is_same(u.wte.weight));
  CHECK(em::amax(em::abs(u.wte.weight - t.wte.weight)).item() == 0.f);

  // a sequential nests as the first entry of another, keys "0.0.weight" as torch
  nn::sequential inner(nn::linear(3, 3), nn::relu());
  nn::sequential outer(inner, nn::linear(3, 1));
  CHECK(outer.state_dict().keys() ==
        std::vector<std::string>{"0.0.weight", "0.0.bias", "1.weight", "1.bias"});

  // checkpoints without num_batches_tracked load (the counter restarts at 0), as in PyTorch
  nn::sequential a(nn::linear(3, 4), nn::batch_norm1d(4));
  (void)a(em::randn<float>({5, 3}));
  em::state_dict old = a.state_dict();
  old.erase("1.num_batches_tracked");
  nn::sequential b(nn::linear(3, 4), nn::batch_norm1d(4));
  (void)b(em::randn<float>({5, 3}));
  b.load_state_dict(old);
  CHECK(b.at<nn::batch_norm1d>(1).num_batches_tracked.item() == 0);

  // train() is virtual and recursive: overrides in children run
  nn::sequential host{frozen_norm(), nn::relu()};
  host.train();
  CHECK(host.at<frozen_norm>(0).fc.is_training());
  CHECK(!host.at<frozen_norm>(0).bn.is_training());

  // registered names are checked; extra_repr and children print as PyTorch
  registers r;
  CHECK(names_of(r.named_parameters()) == std::vector<std::string>{"scale", "fc.weight", "fc.bias"});
  CHECK(error_of([&] { r.add("scale"); }) == em::errc::value);
  CHECK(error_of([&] { r.add("fc"); }) == em::errc::value);
  CHECK(error_of([&] { r.add("a.b"); }) == em::errc::value);
  r.add("count");
  CHECK(names_of(r.named_buffers()) == std::vector<std::string>{"count"});
  CHECK(nn::elu(10.0).repr() == "ELU(alpha=10.0)");
  CHECK(nn::leaky_relu(1e-5).repr() == "LeakyReLU(negative_slope=1e-05)");
  nn::multihead_attention mha({.embed_dim = 4, .num_heads = 2});
  CHECK(mha.repr() ==
        "MultiheadAttention(\n  (out_proj): NonDynamicallyQuantizableLinear(in_features=4, "
        "out_features=4, bias=True)\n)");

  // initializers write through views
  nn::embedding e(5, 3);
  nn::init::constant_(e.weight.select(0, 2), 7.0);
  CHECK(e.weight.at({2, 1}) == 7.f);
  auto none = em::empty<float>({0, 3});
  CHECK_NOTHROW(nn::init::kaiming_uniform_(none));
}
