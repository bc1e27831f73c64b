// jit::trace, the interpreter, graph_module and whole-model files: traced, optimized, saved and
// loaded models reproduce the eager model (MLP, CNN with batch norm, transformer encoder layer).
#include "support/emulated_device.hpp"

#include <catch2/catch.hpp>
#include <ember/ember.hpp>
#include <ember/jit/extern.hpp>  // the interpreter is instantiated once: jit/instantiate.cpp

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace em = ember;
namespace F = ember::nn::functional;

namespace {

struct mlp : em::nn::module<mlp> {
  BOOST_HANA_DEFINE_STRUCT(mlp, (em::nn::linear, fc1), (em::nn::batch_norm1d, bn), (em::nn::linear, fc2));
  mlp() : fc1(64, 32), bn(32), fc2(32, 10) {}
  em::tensor<float> forward(const em::tensor<float>& x) { return fc2(em::relu(bn(fc1(x)))); }
};

struct cnn : em::nn::module<cnn> {
  BOOST_HANA_DEFINE_STRUCT(cnn, (em::nn::conv2d, conv), (em::nn::batch_norm2d, bn),
                           (em::nn::max_pool2d, pool), (em::nn::linear, fc));
  cnn() : conv({.in = 1, .out = 8, .kernel = 3, .stride = 1, .padding = 1}), bn(8),
          pool({.kernel = 2, .stride = 2}), fc(8 * 4 * 4, 10) {}
  em::tensor<float> forward(const em::tensor<float>& x) {
    const em::tensor<float> h = pool(em::relu(bn(conv(x))));
    return F::log_softmax(fc(h.flatten(1)), -1);
  }
};

struct encoder : em::nn::module<encoder> {
  BOOST_HANA_DEFINE_STRUCT(encoder, (em::nn::transformer_encoder_layer, layer), (em::nn::linear, head));
  encoder() : layer({.d_model = 16, .nhead = 4, .dim_feedforward = 32, .dropout = 0.1, .batch_first = true}),
              head(16, 3) {}
  em::tensor<float> forward(const em::tensor<float>& x) { return head(em::mean(layer(x), 1)); }
};

/// Elementwise chains the optimizer fuses into groups, with two group outputs.
struct gates : em::nn::module<gates> {
  BOOST_HANA_DEFINE_STRUCT(gates, (em::nn::linear, fc));
  gates() : fc(12, 12) {}
  em::tensor<float> forward(const em::tensor<float>& x) {
    const em::tensor<float> h = fc(x);
    const em::tensor<float> g = em::sigmoid(h) * em::tanh(x) + 0.5f * em::gelu(h);
    const em::tensor<float> m = em::where(h > 0.f, g, em::exp(-em::abs(h)) - 1.f);
    return fc(m) * g;
  }
};

/// Gives the model's batch norms non-trivial running statistics.
template <class M>
void warm_up(M& m, const em::shape& in) {
  m.train();
  for (int i = 0; i < 3; ++i) (void)m(em::randn<float>(in) * 2.f + 0.5f);
  m.eval();
}

double max_diff(const em::tensor<float>& a, const em::tensor<float>& b) {
  REQUIRE(a.shape() == b.shape());
  return em::amax(em::abs(a - b)).item();
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("ember_jit_" + name)).string();
}

}  // namespace

TEST_CASE("jit::trace: MLP with batch norm, any batch size, saved and loaded", "[jit]") {
  em::manual_seed(1);
  mlp n;
  warm_up(n, {16, 64});
  auto traced = em::jit::trace(n, {em::randn<float>({1, 64})});

  std::ostringstream text;
  text << traced.graph();
  CHECK(text.str().find("linear") != std::string::npos);
  CHECK(text.str().find("f32[N, 64]") != std::string::npos);  // symbolic batch
  CHECK(text.str().find("batch_norm") == std::string::npos);  // folded into fc1

  for (std::int64_t batch : {1, 5, 33}) {
    const auto x = em::randn<float>({batch, 64});
    const em::tensor<float> want = n(x);
    const em::tensor<float> got = traced({x});
    CHECK(max_diff(got, want) < 1e-6);
  }

  const std::string path = temp_path("mlp.ember");
  em::jit::save(traced, path);
  auto loaded = em::jit::load(path);
  const auto x = em::randn<float>({7, 64});
  const em::tensor<float> want = n(x);
  const em::tensor<float> y = loaded({x});
  CHECK(max_diff(y, want) < 1e-6);
  std::ostringstream t2;
  t2 << loaded.graph();
  CHECK(t2.str() == text.str());
  std::filesystem::remove(path);

  // inputs are checked against the graph
  CHECK_THROWS_WITH(traced({em::randn<float>({5, 63})}), Catch::Contains("input 0") && Catch::Contains("N, 64"));
  CHECK_THROWS_AS(traced({em::randn<double>({5, 64})}), em::error);
  CHECK_THROWS_AS(traced({x, x}), em::error);
}

TEST_CASE("jit::trace: without optimization the graph equals eager exactly", "[jit]") {
  em::manual_seed(2);
  mlp n;
  warm_up(n, {16, 64});
  auto traced = em::jit::trace(n, {em::randn<float>({4, 64})}, {.optimize = false});
  const auto x = em::randn<float>({9, 64});
  const em::tensor<float> want = n(x);
  const em::tensor<float> got = traced({x});
  CHECK(max_diff(got, want) == 0.0);
  std::ostringstream text;
  text << traced.graph();
  CHECK(text.str().find("batch_norm") != std::string::npos);
  CHECK(text.str().find("const %fc1.weight : f32[32, 64]") != std::string::npos);
  CHECK(text.str().find("const %bn.running_mean : f32[32]") != std::string::npos);
}

TEST_CASE("jit::trace: CNN with batch norm, pooling and flatten", "[jit]") {
  em::manual_seed(3);
  cnn n;
  warm_up(n, {8, 1, 8, 8});
  auto traced = em::jit::trace(n, {em::randn<float>({2, 1, 8, 8})});
  for (std::int64_t batch : {1, 6}) {
    const auto x = em::randn<float>({batch, 1, 8, 8});
    const em::tensor<float> want = n(x);
    const em::tensor<float> got = traced({x});
    CHECK(max_diff(got, want) < 1e-6);
  }
  const std::string path = temp_path("cnn.ember");
  em::jit::save(traced, path);
  auto loaded = em::jit::load(path);
  const auto x = em::randn<float>({3, 1, 8, 8});
  const em::tensor<float> want = n(x);
  CHECK(max_diff(loaded({x}), want) < 1e-6);
  std::filesystem::remove(path);
}

TEST_CASE("jit::trace: transformer encoder layer", "[jit]") {
  em::manual_seed(4);
  encoder n;
  n.eval();
  auto traced = em::jit::trace(n, {em::randn<float>({2, 5, 16})});
  for (std::int64_t batch : {2, 3}) {
    const auto x = em::randn<float>({batch, 5, 16});
    const em::tensor<float> want = n(x);
    const em::tensor<float> got = traced({x});
    CHECK(max_diff(got, want) < 1e-6);
  }
  const std::string path = temp_path("enc.ember");
  em::jit::save(traced, path);
  auto loaded = em::jit::load(path);
  const auto x = em::randn<float>({4, 5, 16});
  const em::tensor<float> want = n(x);
  CHECK(max_diff(loaded({x}), want) < 1e-6);
  std::filesystem::remove(path);
}

TEST_CASE("jit::trace: callables, several outputs, elementwise chains, reductions", "[jit]") {
  auto f = [](const em::tensor<double>& a, const em::tensor<double>& b) {
    em::tensor<double> h = em::tanh(a * 0.5 + b) - em::exp(-a * a);
    return std::make_tuple(em::sum(h, 1), em::softmax(h, -1), em::amax(h.t(), 0, true));
  };
  const auto a = em::randn<double>({3, 4}), b = em::randn<double>({4});
  auto traced = em::jit::trace(f, {a, b});
  const auto a2 = em::randn<double>({6, 4}), b2 = em::randn<double>({4});
  auto outs = traced.run({a2, b2});
  auto [s, sm, mx] = f(a2, b2);
  REQUIRE(outs.size() == 3);
  CHECK(em::amax(em::abs(outs[0].get<double>() - s)).item() < 1e-12);
  CHECK(em::amax(em::abs(outs[1].get<double>() - sm)).item() < 1e-12);
  CHECK(outs[2].shape() == mx.shape());
  CHECK(em::amax(em::abs(outs[2].get<double>() - mx)).item() < 1e-12);
}

TEST_CASE("jit: unary ops on dying intermediates run in place with eager's values, bit for bit",
          "[jit]") {
  // Note [Interpreter hot path]: a unary op whose input nothing else reads runs in place, by a
  // plain packet loop below one parallel task and by run_elementwise above; both must give
  // eager code's values exactly, tails (any length mod the packet width) included
  auto chain = [](const em::tensor<float>& x) {
    em::tensor<float> h = x * 3.f;  // a new buffer that only this chain reads
    h = em::tanh(h);
    h = em::sigmoid(h);
    h = em::exp(h);
    h = em::gelu(h);
    h = em::relu(h - 1.5f);
    return em::tensor<float>(em::sqrt(h));
  };
  em::no_grad_guard ng;
  auto traced = em::jit::trace(chain, {em::randn<float>({2, 1})}, {.optimize = false});
  std::ostringstream text;
  text << traced.graph();
  CHECK(text.str().find("tanh") != std::string::npos);  // one node per op: nothing fused
  CHECK(text.str().find("fused") == std::string::npos);
  for (std::int64_t n : {1, 3, 4, 5, 8, 17, 19, 33, 40000}) {
    const auto x = em::randn<float>({n, 1});
    const em::tensor<float> got = traced({x});
    const em::tensor<float> want = chain(x);
    INFO("n = " << n);
    REQUIRE(got.shape() == want.shape());
    CHECK(std::memcmp(got.data(), want.data(), static_cast<std::size_t>(n) * sizeof(float)) == 0);
    CHECK(x.data() != got.data());  // the caller's input is never overwritten
  }
}

TEST_CASE("jit: a linear-relu pair runs as one node with eager's values, bit for bit", "[jit]") {
  // Note [Linear and ReLU]: the pair runs as one GEMM with the bias and ReLU in its
  // write-back pass; a linear output read by anything else runs as two nodes
  em::manual_seed(21);
  em::nn::sequential seq(em::nn::linear(7, 9), em::nn::relu(), em::nn::linear(9, 9), em::nn::relu(),
                         em::nn::linear(9, 3));
  auto shared = [&](const em::tensor<float>& x) {  // fc output read by relu and by the add
    const em::tensor<float> h = F::linear(x, seq.parameters()[0], seq.parameters()[1]);
    return em::tensor<float>(em::relu(h) + h);
  };
  std::vector<em::tensor<float>> inputs;
  {
    em::no_grad_guard ng;
    auto traced = em::jit::trace(seq, {em::randn<float>({1, 7})});
    auto traced_shared = em::jit::trace(shared, {em::randn<float>({1, 7})});
    for (std::int64_t batch : {1, 2, 5, 64}) {
      INFO("batch " << batch);
      const em::tensor<float> x = em::randn<float>({batch, 7}) * 2.f;
      const em::tensor<float> got = traced({x}), want = seq(x);
      REQUIRE(got.shape() == want.shape());
      CHECK(std::memcmp(got.data(), want.data(), static_cast<std::size_t>(got.numel()) * sizeof(float)) == 0);
      const em::tensor<float> got2 = traced_shared({x}), want2 = shared(x);
      CHECK(std::memcmp(got2.data(), want2.data(), static_cast<std::size_t>(got2.numel()) * sizeof(float)) == 0);
    }
  }
  // with grad recording the pair runs as two recorded ops: the same gradients as eager
  auto traced = em::jit::trace(seq, {em::randn<float>({2, 7})});
  const auto x = em::randn<float>({3, 7}).requires_grad_();
  em::sum(em::square(seq(x))).backward();
  const em::tensor<float> gx = x.grad().clone();
  x.grad().zero_();
  em::sum(em::square(em::tensor<float>(traced({x})))).backward();
  CHECK(max_diff(x.grad(), gx) < 1e-6);
  // called inside a model being traced, the block's linear and relu are recorded as such
  em::no_grad_guard ng;
  auto outer = em::jit::trace([&](const em::tensor<float>& in) { return traced.forward(in); },
                              {em::randn<float>({2, 7})}, {.optimize = false});
  std::ostringstream text;
  text << outer.graph();
  CHECK(text.str().find("relu") != std::string::npos);
  const auto x2 = em::randn<float>({4, 7});
  CHECK(max_diff(em::tensor<float>(outer({x2})), seq(x2)) == 0);
}

TEST_CASE("jit: a value no node computes is an error when read, not an undefined tensor", "[jit]") {
  em::jit::graph g;
  const int x = g.add_value(em::dtype::f32, {2}, "x");
  const int y = g.add_value(em::dtype::f32, {2}, "y");
  const int z = g.add_value(em::dtype::f32, {2}, "z");
  g.inputs = {x};
  g.nodes.push_back({.kind = em::op::add, .inputs = {x, y}, .outputs = {z}});
  g.outputs = {z};
  CHECK_THROWS_WITH(em::jit::run_graph(g, {em::ones<float>({2})}),
                    Catch::Contains("%y is read before any node computes it"));
  g.nodes.clear();
  g.outputs = {y};
  CHECK_THROWS_WITH(em::jit::run_graph(g, {em::ones<float>({2})}),
                    Catch::Contains("%y is read before any node computes it"));
  g.outputs = {x};  // an input passed straight through
  const auto one = em::ones<float>({2});
  const auto out = em::jit::run_graph(g, {one});
  REQUIRE(out.size() == 1);
  CHECK(out[0].is_same(one));
}

TEST_CASE("jit::trace: detach() is a node: new inputs flow through it, gradients stop there", "[jit]") {
  // y = w x + (w x)^2 with the square detached (a stop-gradient target)
  auto f = [](const em::tensor<double>& x, const em::tensor<double>& w) {
    const em::tensor<double> wx = w * x;
    const em::tensor<double> target = em::square(wx);
    return em::tensor<double>(wx + target.detach());
  };
  const auto x = em::randn<double>({2, 3}), w = em::randn<double>({3});
  auto traced = em::jit::trace(f, {x, w});
  std::ostringstream text;
  text << traced.graph();
  CHECK(text.str().find("detach") != std::string::npos);
  // other inputs: computed through the detach node, not a value captured at trace time
  const auto x2 = em::randn<double>({5, 3});
  const em::tensor<double> w2 = em::randn<double>({3}).requires_grad_();
  em::tensor<double> y = traced({x2, w2});
  CHECK(em::amax(em::abs(y - f(x2, w2).detach())).item() < 1e-12);
  // d/dw sum(w x + stop(w x)^2) = sum over rows of x: the detached term adds nothing
  em::sum(y).backward();
  CHECK(em::amax(em::abs(w2.grad() - em::sum(x2, 0))).item() < 1e-12);
  // ONNX: an Identity node
  CHECK(std::string(em::jit::detail::onnx_unary(em::op::detach)) == "Identity");
}

TEST_CASE("jit::trace: data-dependent control flow warns; untraceable ops are errors", "[jit]") {
  std::vector<std::string> warnings;
  auto f = [](const em::tensor<float>& x) -> em::tensor<float> {
    if (em::sum(x).item() > 0) return em::relu(x);
    return -x;
  };
  auto traced = em::jit::trace(f, {em::ones<float>({2, 3})},
                               {.on_warning = [&](const std::string& w) { warnings.push_back(w); }});
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("item()") != std::string::npos);
  // the branch is baked in: negative inputs still take relu
  const em::tensor<float> y = traced({em::full<float>({2, 3}, -1.f)});
  CHECK(em::sum(y).item() == 0.f);

  auto g = [](const em::tensor<float>& x) { return F::dropout(x, 0.5, true); };
  CHECK_THROWS_WITH(em::jit::trace(g, {em::ones<float>({2, 3})}), Catch::Contains("dropout"));

  // an op the tracer does not record makes its result a captured constant: the check with
  // perturbed inputs finds it
  auto h = [](const em::tensor<float>& x) { return em::tensor<float>(em::cumsum(x, 1) * 2.f); };
  CHECK_THROWS_WITH(em::jit::trace(h, {em::ones<float>({2, 3})}, {.on_warning = [](const std::string&) {}}),
                    Catch::Contains("does not reproduce"));
}

TEST_CASE("jit: a graph module records autograd and sits inside a dynamic model", "[jit]") {
  em::manual_seed(5);
  em::nn::sequential seq(em::nn::linear(6, 5), em::nn::tanh(), em::nn::linear(5, 2));
  auto traced = em::jit::trace(seq, {em::randn<float>({3, 6})}, {.optimize = false});
  const auto x = em::randn<float>({4, 6});
  {
    em::tensor<float> loss = em::sum(em::square(seq(x)));
    loss.backward();
  }
  std::vector<em::tensor<float>> want;
  for (auto& p : seq.parameters()) {
    want.push_back(p.grad().clone());
    p.grad().zero_();
  }
  em::tensor<float> y = traced({x});
  em::tensor<float> loss = em::sum(em::square(y));
  loss.backward();
  auto ps = seq.parameters();
  for (std::size_t i = 0; i < ps.size(); ++i) CHECK(max_diff(ps[i].grad(), want[i]) < 1e-6);

  // "use the JIT gradually": a traced block inside an eager model
  struct outer : em::nn::module<outer> {
    BOOST_HANA_DEFINE_STRUCT(outer, (em::nn::linear, pre));
    em::jit::graph_module block;
    outer(em::jit::graph_module b) : pre(6, 6), block(std::move(b)) {}
    em::tensor<float> forward(const em::tensor<float>& x) { return block.forward(em::tensor<float>(em::relu(pre(x)))); }
  };
  outer o(traced);
  CHECK(o(x).shape() == em::shape{4, 2});
}

namespace {
struct cube : em::autograd::function<cube> {
  static constexpr const char* name = "test_cube";
  static em::tensor<float> forward(em::autograd::context& ctx, const em::tensor<float>& x) {
    ctx.save_for_backward({x});
    return x * x * x;
  }
  static std::vector<em::tensor<float>> backward(em::autograd::context& ctx,
                                                 const std::vector<em::tensor<float>>& g) {
    auto x = ctx.saved()[0];
    return {3.f * x * x * g[0]};
  }
};
}  // namespace

TEST_CASE("jit: custom ops are recorded by name and resolved at load", "[jit]") {
  auto f = [](const em::tensor<float>& x) { return em::tensor<float>(cube::apply(x) + 1.f); };
  auto traced = em::jit::trace(f, {em::randn<float>({2, 3})});
  std::ostringstream text;
  text << traced.graph();
  CHECK(text.str().find("custom") != std::string::npos);
  CHECK(text.str().find("test_cube") != std::string::npos);
  const auto x = em::randn<float>({4, 3});
  CHECK(max_diff(traced({x}), f(x)) == 0.0);
  const std::string path = temp_path("cube.ember");
  em::jit::save(traced, path);
  CHECK(max_diff(em::jit::load(path)({x}), f(x)) == 0.0);
  std::filesystem::remove(path);
  CHECK_THROWS_WITH(em::jit::run_custom("no_such_op", {}), Catch::Contains("not registered"));
}

TEST_CASE("jit::load: hostile and mismatched files are clear errors", "[jit]") {
  em::manual_seed(6);
  mlp n;
  n.eval();
  auto traced = em::jit::trace(n, {em::randn<float>({2, 64})});
  const std::string path = temp_path("bad.ember");

  // a parameters-only file is not a whole model
  em::save(n.state_dict(), path);
  CHECK_THROWS_WITH(em::jit::load(path), Catch::Contains("not a whole-model file"));

  // a newer format version
  auto sd = traced.state_dict();
  sd.metadata()["format"] = "ember.jit";
  sd.metadata()["version"] = "99";
  sd.metadata()["graph"] = em::jit::to_string(traced.graph());
  em::save(sd, path);
  CHECK_THROWS_WITH(em::jit::load(path), Catch::Contains("version 99"));

  // an unknown op
  sd.metadata()["version"] = "1";
  std::string g = em::jit::to_string(traced.graph());
  const auto at = g.find("linear(");
  REQUIRE(at != std::string::npos);
  sd.metadata()["graph"] = g.substr(0, at) + "frobnicate(" + g.substr(at + 7);
  em::save(sd, path);
  CHECK_THROWS_WITH(em::jit::load(path), Catch::Contains("frobnicate"));

  // a constant missing from the file, or of another shape
  sd.metadata()["graph"] = g;
  auto names = sd.keys();
  em::state_dict partial = sd;
  partial.erase(names.front());
  em::save(partial, path);
  CHECK_THROWS_WITH(em::jit::load(path), Catch::Contains("missing"));
  em::state_dict reshaped = sd;
  reshaped.insert(names.front(), em::zeros<float>({3}));
  em::save(reshaped, path);
  CHECK_THROWS_WITH(em::jit::load(path), Catch::Contains(names.front()));

  // every truncation of a good file is an error, never a crash
  em::jit::save(traced, path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (std::size_t cut = 0; cut < bytes.size(); cut += std::max<std::size_t>(1, bytes.size() / 97)) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(cut));
    CHECK_THROWS_AS(em::jit::load(path), em::error);
  }
  std::filesystem::remove(path);
}

TEST_CASE("jit::trace: traced models run on a device (fused groups, attention, layer norm)", "[jit]") {
  // Note [Fused groups on devices]: on the emulated device (test/support/emulated_device.hpp),
  // whose kernels are the host builds of the CUDA kernels' code
  const ember_test::emulated_device dev_guard;
  const em::device gpu = em::device::cuda(0);
  em::manual_seed(6);
  gates gm;
  auto tg = em::jit::trace(gm, {em::randn<float>({2, 12})});
  std::ostringstream text;
  text << tg.graph();
  CHECK(text.str().find("fused") != std::string::npos);
  const auto x = em::randn<float>({5, 12});
  const em::tensor<float> want = tg({x});
  tg.to(gpu);
  const em::tensor<float> got = tg({x.to(gpu)});
  CHECK(got.device() == gpu);
  CHECK(max_diff(got.to(em::cpu), want) < 1e-5);
  CHECK_THROWS_WITH(tg({x}), Catch::Contains("cuda:0") && Catch::Contains("cpu"));

  encoder e;
  e.eval();
  auto te = em::jit::trace(e, {em::randn<float>({2, 4, 16})});
  const auto xe = em::randn<float>({3, 4, 16});
  const em::tensor<float> we = te({xe});
  te.to(gpu);
  const em::tensor<float> ge = te({xe.to(gpu)});
  CHECK(max_diff(ge.to(em::cpu), we) < 1e-5);
}
