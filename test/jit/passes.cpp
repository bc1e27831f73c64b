// Tests for include/ember/jit/passes.hpp (each pass on hand-built graphs) and
// include/ember/jit/fused.hpp (run_fused against ember's eager elementwise evaluation).
#include <catch2/catch.hpp>

#include <ember/ember.hpp>
#include <ember/jit/extern.hpp>  // the interpreter is instantiated once: jit/instantiate.cpp
#include <ember/jit/fused.hpp>
#include <ember/jit/passes.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace em = ember;
namespace jit = ember::jit;
namespace F = ember::nn::functional;
using em::op;

namespace {

using ints = std::vector<std::int64_t>;

/// Appends a node; returns its output value id.
int add_node(jit::graph& g, op kind, std::vector<int> inputs, em::dtype t, ints shape,
             jit::attributes attrs = {}) {
  const int out = g.add_value(t, std::move(shape));
  g.nodes.push_back({kind, std::move(inputs), {out}, std::move(attrs), nullptr});
  return out;
}
int add_scalar(jit::graph& g, double v, em::dtype t = em::dtype::f32) {
  return add_node(g, op::scalar, {}, t, {}, {{"value", v}});
}
int add_input(jit::graph& g, em::dtype t, ints shape, std::string name = {}) {
  const int id = g.add_value(t, std::move(shape), std::move(name));
  g.inputs.push_back(id);
  return id;
}

std::vector<op> kinds(const jit::graph& g) {
  std::vector<op> k;
  for (const auto& n : g.nodes) k.push_back(n.kind);
  return k;
}

/// A reference runner for the ops these tests use (eager ember ops; f32/f64/bool).
std::vector<em::any_tensor> ref_run(const jit::node& n, const std::vector<em::any_tensor>& in,
                                    em::dtype out_type) {
  if (n.kind == op::scalar)
    return {em::visit_dtype(out_type, [&](auto e) -> em::any_tensor {
      using T = decltype(e);
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, bool>)
        return em::full<T>({}, em::convert<T>(jit::attr<double>(n, "value")));
      else
        throw std::runtime_error("ref_run: scalar dtype");
    })};
  if (n.kind == op::where) {
    const auto c = in[0].get<bool>();
    if (in[1].dtype() == em::dtype::f64)
      return {em::tensor<double>(em::where(c, in[1].get<double>(), in[2].get<double>()))};
    return {em::tensor<float>(em::where(c, in[1].get<float>(), in[2].get<float>()))};
  }
  if (n.kind == op::cast) {
    return {in[0].visit([&](const auto& a) {
      return em::visit_dtype(out_type, [&](auto e) -> em::any_tensor {
        using U = decltype(e);
        if constexpr (std::is_same_v<U, float> || std::is_same_v<U, double> || std::is_same_v<U, bool>)
          return a.template to<U>();
        else
          throw std::runtime_error("ref_run: cast dtype");
      });
    })};
  }
  if (in[0].dtype() == em::dtype::i64) {  // only add, for the not-fusible test
    return {em::tensor<std::int64_t>(in[0].get<std::int64_t>() + in[1].get<std::int64_t>())};
  }
  return in[0].visit([&](const auto& a) -> std::vector<em::any_tensor> {
    using T = typename std::remove_cvref_t<decltype(a)>::value_type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      auto b = [&] { return in[1].get<T>(); };
      switch (n.kind) {
        case op::add: return {em::tensor<T>(a + b())};
        case op::sub: return {em::tensor<T>(a - b())};
        case op::mul: return {em::tensor<T>(a * b())};
        case op::div: return {em::tensor<T>(a / b())};
        case op::neg: return {em::tensor<T>(-a)};
        case op::exp: return {em::tensor<T>(em::exp(a))};
        case op::tanh: return {em::tensor<T>(em::tanh(a))};
        case op::relu: return {em::tensor<T>(em::relu(a))};
        case op::sigmoid: return {em::tensor<T>(em::sigmoid(a))};
        case op::gelu: return {em::tensor<T>(em::gelu(a))};
        case op::gt: return {em::tensor<bool>(a > b())};
        case op::softmax: return {F::softmax(a, jit::attr<std::int64_t>(n, "dim"))};
        case op::matmul: return {em::matmul(a, b())};
        case op::permute: return {a.permute(em::shape(jit::attr<ints>(n, "dims"))).contiguous()};
        case op::slice:
          return {a.slice(jit::attr<std::int64_t>(n, "dim"), jit::attr<std::int64_t>(n, "start"),
                          jit::attr<std::int64_t>(n, "end"), jit::attr<std::int64_t>(n, "step"))
                      .contiguous()};
        default: break;
      }
    }
    throw std::runtime_error("ref_run: unsupported op " + std::string(em::name(n.kind)));
  });
}

/// Runs a graph: fused nodes with jit::run_fused, the others with ref_run.
std::vector<em::any_tensor> run_graph(const jit::graph& g, const std::vector<em::any_tensor>& inputs) {
  std::map<int, em::any_tensor> env(g.constants.begin(), g.constants.end());
  for (std::size_t k = 0; k < inputs.size(); ++k) env[g.inputs[k]] = inputs[k];
  for (const auto& n : g.nodes) {
    std::vector<em::any_tensor> args, outs;
    for (int in : n.inputs) args.push_back(env.at(in));
    if (n.kind == op::fused)
      jit::run_fused(*n.body, args, outs);
    else
      outs = ref_run(n, args, g.at(n.outputs[0]).type);
    for (std::size_t k = 0; k < n.outputs.size(); ++k) env[n.outputs[k]] = outs[k];
  }
  std::vector<em::any_tensor> r;
  for (int o : g.outputs) r.push_back(env.at(o));
  return r;
}

jit::node_runner hand_runner() {
  return [](const jit::node& n, const std::vector<em::any_tensor>& in) {
    REQUIRE(n.kind != op::scalar);
    return ref_run(n, in, in[0].dtype());
  };
}

/// Distance in units in the last place between two finite or equal values.
template <class T>
std::int64_t ulp_distance(T a, T b) {
  if (a == b || (std::isnan(a) && std::isnan(b))) return 0;
  if (std::isnan(a) || std::isnan(b) || std::isinf(a) || std::isinf(b))
    return std::numeric_limits<std::int64_t>::max();
  using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  I ia, ib;
  std::memcpy(&ia, &a, sizeof(T));
  std::memcpy(&ib, &b, sizeof(T));
  if (ia < 0) ia = std::numeric_limits<I>::min() - ia;
  if (ib < 0) ib = std::numeric_limits<I>::min() - ib;
  const auto d = static_cast<std::int64_t>(ia) - static_cast<std::int64_t>(ib);
  return d < 0 ? -d : d;
}

/// Largest ulp distance between two tensors of the same shape (bool: 0 or 1 per mismatch).
template <class T>
std::int64_t max_ulp(const em::any_tensor& got, const em::tensor<T>& want) {
  REQUIRE(got.dtype() == em::dtype_of<T>);
  REQUIRE(got.shape() == want.shape());
  const em::tensor<T> a = got.get<T>().contiguous();
  const em::tensor<T> b = want.contiguous();
  std::int64_t worst = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    if constexpr (std::is_same_v<T, bool>)
      worst = std::max<std::int64_t>(worst, a.data()[i] != b.data()[i]);
    else
      worst = std::max(worst, ulp_distance(a.data()[i], b.data()[i]));
  }
  return worst;
}

}  // namespace

// ---- dead code elimination ----------------------------------------------------------------

TEST_CASE("eliminate_dead_code removes exactly the dead nodes and constants", "[jit][passes]") {
  jit::graph g;
  const auto f32 = em::dtype::f32;
  const int x = add_input(g, f32, {jit::symbolic, 4}, "x");
  const int unused_in = add_input(g, f32, {4}, "unused_in");
  const int c1 = g.add_constant(em::ones<float>({4}), "c1");
  const int c2 = g.add_constant(em::ones<float>({4}), "c2");  // read by nothing
  const int c3 = g.add_constant(em::ones<float>({4}), "c3");  // read only by dead nodes
  const int c4 = g.add_constant(em::ones<float>({4}), "c4");  // a graph output itself
  const int a = add_node(g, op::add, {x, c1}, f32, {jit::symbolic, 4});
  const int d = add_node(g, op::mul, {x, c3}, f32, {jit::symbolic, 4});
  add_node(g, op::exp, {d}, f32, {jit::symbolic, 4});
  add_node(g, op::custom, {a}, f32, {jit::symbolic, 4}, {{"name", std::string("my_op")}});
  const int r = add_node(g, op::relu, {a}, f32, {jit::symbolic, 4});
  g.outputs = {r, c4};
  (void)c2;

  jit::eliminate_dead_code(g);
  CHECK(kinds(g) == std::vector<op>{op::add, op::relu});
  CHECK(g.constants.size() == 2);
  CHECK(g.is_constant(c1));
  CHECK(g.is_constant(c4));
  CHECK_FALSE(g.is_constant(c3));
  CHECK(g.inputs == std::vector<int>{x, unused_in});  // inputs are the signature: they stay
  CHECK(g.outputs == std::vector<int>{r, c4});
}

// ---- common subexpression elimination -------------------------------------------------------

TEST_CASE("eliminate_common_subexpressions merges duplicates only", "[jit][passes]") {
  jit::graph g;
  const auto f32 = em::dtype::f32;
  const int x = add_input(g, f32, {2, 6}, "x");
  const int y = add_input(g, f32, {2, 6}, "y");
  const int a1 = add_node(g, op::add, {x, y}, f32, {2, 6});
  const int a2 = add_node(g, op::add, {x, y}, f32, {2, 6});
  const int a3 = add_node(g, op::add, {y, x}, f32, {2, 6});  // operand order differs: kept
  const int e1 = add_node(g, op::exp, {a1}, f32, {2, 6});
  const int e2 = add_node(g, op::exp, {a2}, f32, {2, 6});  // same after a2 -> a1
  const jit::attributes s1{{"dim", std::int64_t{1}}, {"start", std::int64_t{0}},
                           {"end", std::int64_t{4}}, {"step", std::int64_t{1}}};
  jit::attributes s2 = s1;
  s2["step"] = std::int64_t{2};
  const int sl1 = add_node(g, op::slice, {x}, f32, {2, 4}, s1);
  const int sl2 = add_node(g, op::slice, {x}, f32, {2, 2}, s2);  // different attrs: kept
  const int sl3 = add_node(g, op::slice, {x}, f32, {2, 4}, s1);
  const int c32 = add_node(g, op::cast, {x}, f32, {2, 6});
  const int c64 = add_node(g, op::cast, {x}, em::dtype::f64, {2, 6});  // other target dtype
  const jit::attributes bn{{"eps", 1e-5}, {"momentum", 0.1}, {"training", std::int64_t{1}}};
  const int m = g.add_constant(em::zeros<float>({2}), "m");
  const int v = g.add_constant(em::ones<float>({2}), "v");
  const int b1 = add_node(g, op::batch_norm, {x, m, v, v, m}, f32, {2, 6}, bn);
  const int b2 = add_node(g, op::batch_norm, {x, m, v, v, m}, f32, {2, 6}, bn);
  const jit::attributes cu{{"name", std::string("op")}};
  const int u1 = add_node(g, op::custom, {x}, f32, {2, 6}, cu);
  const int u2 = add_node(g, op::custom, {x}, f32, {2, 6}, cu);
  const int s1v = add_scalar(g, 2.0), s2v = add_scalar(g, 2.0), s3v = add_scalar(g, 3.0);
  const int ms1 = add_node(g, op::mul, {e1, s1v}, f32, {2, 6});
  const int ms2 = add_node(g, op::mul, {e2, s2v}, f32, {2, 6});
  const int ms3 = add_node(g, op::mul, {e2, s3v}, f32, {2, 6});
  g.outputs = {a1, a2, a3, e1, e2, sl1, sl2, sl3, c32, c64, b1, b2, u1, u2, ms1, ms2, ms3};
  const std::size_t before = g.nodes.size();

  jit::eliminate_common_subexpressions(g);
  // gone: a2, e2, sl3, the second scalar 2.0 and ms2
  CHECK(g.nodes.size() == before - 5);
  CHECK(g.outputs == std::vector<int>{a1, a1, a3, e1, e1, sl1, sl2, sl1, c32, c64, b1, b2, u1, u2,
                                      ms1, ms1, ms3});
  for (const auto& n : g.nodes)
    if (n.outputs[0] == ms3) CHECK(n.inputs == std::vector<int>{e1, s3v});
}

// ---- constant folding -------------------------------------------------------------------------

TEST_CASE("fold_constants evaluates constant subgraphs with the runner", "[jit][passes]") {
  jit::graph g;
  const auto f32 = em::dtype::f32;
  const auto A = em::tensor<float>(em::arange<float>(0, 6)).view({2, 3});
  const auto B = em::full<float>({2, 3}, 10.f);
  const int x = add_input(g, f32, {3, 2}, "x");
  const int ca = g.add_constant(A, "A");
  const int cb = g.add_constant(B, "B");
  const int s = add_node(g, op::add, {ca, cb}, f32, {2, 3});
  const int p = add_node(g, op::permute, {s}, f32, {3, 2}, {{"dims", ints{1, 0}}});
  const int two = add_scalar(g, 2.0);
  const int m = add_node(g, op::mul, {p, two}, f32, {3, 2});  // constant * scalar: folded
  const int y = add_node(g, op::mul, {x, m}, f32, {3, 2});    // reads the input: stays
  const int xs = add_node(g, op::mul, {x, two}, f32, {3, 2});  // scalar and input: stays
  const jit::attributes sl{{"dim", std::int64_t{0}}, {"start", std::int64_t{1}},
                           {"end", std::int64_t{3}}, {"step", std::int64_t{1}}};
  const int big = add_node(g, op::slice, {m}, f32, {2, 2}, sl);  // 4 elements > max_elements 3
  const int cu = add_node(g, op::custom, {ca}, f32, {2, 3}, {{"name", std::string("c")}});
  g.outputs = {y, xs, big, cu};

  int calls = 0;
  auto runner = [&](const jit::node& n, const std::vector<em::any_tensor>& in) {
    ++calls;
    return hand_runner()(n, in);
  };
  jit::fold_constants(g, runner, 3);
  // add, permute (6 elements) exceed 3 too: nothing folds with max_elements 3
  CHECK(calls == 0);
  CHECK(g.nodes.size() == 8);

  jit::fold_constants(g, runner);
  CHECK(calls == 4);  // add, permute, mul, slice
  CHECK(kinds(g) == std::vector<op>{op::scalar, op::mul, op::mul, op::custom});
  REQUIRE(g.is_constant(m));
  REQUIRE(g.is_constant(big));
  CHECK(g.at(m).name.rfind("folded.", 0) == 0);
  const auto mt = g.constants.at(m).get<float>();
  CHECK(mt.shape() == em::shape{3, 2});
  // m = (A + B)^T * 2: m[i][j] = 2 * (A[j][i] + 10)
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j) CHECK(mt.data()[i * 2 + j] == 2.f * (float(j * 3 + i) + 10.f));
  const auto bt = g.constants.at(big).get<float>().contiguous();
  CHECK(bt.data()[0] == mt.data()[2]);
  CHECK(g.nodes[1].inputs == std::vector<int>{x, m});

  jit::eliminate_dead_code(g);
  CHECK(g.constants.size() == 3);  // A (custom reads it), m, big
}

TEST_CASE("fold_constants leaves training batch norm alone", "[jit][passes]") {
  jit::graph g;
  const auto f32 = em::dtype::f32;
  const int c = g.add_constant(em::ones<float>({2, 3}), "c");
  const int m = g.add_constant(em::zeros<float>({3}), "m");
  const int b = add_node(g, op::batch_norm, {c, m, m, m, m}, f32, {2, 3},
                         {{"eps", 1e-5}, {"momentum", 0.1}, {"training", std::int64_t{1}}});
  g.outputs = {b};
  jit::fold_constants(g, [](const jit::node&, const std::vector<em::any_tensor>&) -> std::vector<em::any_tensor> {
    FAIL("the runner must not be called");
    return {};
  });
  CHECK(g.nodes.size() == 1);
}

// ---- batch norm folding -----------------------------------------------------------------------

template <class T>
void check_bn_fold(bool linear, double tol) {
  const auto t = em::dtype_of<T>;
  const std::int64_t C = 4;
  em::manual_seed(7);
  const auto x = em::randn<T>(linear ? em::shape{5, 3} : em::shape{2, 3, 6, 5});
  const auto W = em::randn<T>(linear ? em::shape{C, 3} : em::shape{C, 3, 3, 3});
  const auto b = em::randn<T>({C});
  const auto mean = em::randn<T>({C});
  const auto var = em::tensor<T>(em::rand<T>({C}) + T(0.5));
  const auto gamma = em::randn<T>({C});
  const auto beta = em::randn<T>({C});
  const double eps = 1e-3;

  jit::graph g;
  const int xi = add_input(g, t, linear ? ints{jit::symbolic, 3} : ints{jit::symbolic, 3, 6, 5}, "x");
  const int wi = g.add_constant(W, "conv.weight"), bi = g.add_constant(b, "conv.bias");
  const int mi = g.add_constant(mean, "bn.running_mean"), vi = g.add_constant(var, "bn.running_var");
  const int gi = g.add_constant(gamma, "bn.weight"), be = g.add_constant(beta, "bn.bias");
  const ints yshape = linear ? ints{jit::symbolic, C} : ints{jit::symbolic, C, 4, 3};
  jit::attributes conv_attrs;
  if (!linear)
    conv_attrs = {{"stride", ints{1, 1}}, {"padding", ints{0, 0}}, {"dilation", ints{1, 1}},
                  {"groups", std::int64_t{1}}};
  const int y = add_node(g, linear ? op::linear : op::conv2d, {xi, wi, bi}, t, yshape, conv_attrs);
  const int z = add_node(g, op::batch_norm, {y, mi, vi, gi, be}, t, yshape,
                         {{"eps", eps}, {"momentum", 0.1}, {"training", std::int64_t{0}}});
  const int r = add_node(g, op::relu, {z}, t, yshape);
  g.outputs = {r};

  jit::fold_batch_norm(g);
  REQUIRE(kinds(g) == std::vector<op>{linear ? op::linear : op::conv2d, op::relu});
  const auto& n = g.nodes[0];
  CHECK(n.outputs[0] == z);
  CHECK(n.attrs == conv_attrs);
  CHECK(g.at(n.inputs[1]).name == "conv.weight.folded");
  CHECK(g.at(n.inputs[2]).name == "conv.bias.folded");
  const auto W2 = g.constants.at(n.inputs[1]).get<T>();
  const auto b2 = g.constants.at(n.inputs[2]).get<T>();
  CHECK(W2.shape() == W.shape());
  CHECK(b2.shape() == b.shape());

  const em::tensor<T> want = F::batch_norm(linear ? F::linear(x, W, b) : F::conv2d(x, W, {.bias = b}),
                                           mean, var,
                                           {.weight = gamma, .bias = beta, .training = false, .eps = eps});
  const em::tensor<T> got = linear ? F::linear(x, W2, b2) : F::conv2d(x, W2, {.bias = b2});
  REQUIRE(got.shape() == want.shape());
  const em::tensor<T> diff = em::abs(got - want);
  CHECK(static_cast<double>(em::amax(diff).item()) < tol);

  jit::eliminate_dead_code(g);
  CHECK(g.constants.size() == 2);  // only the folded weight and bias remain
}

TEST_CASE("fold_batch_norm folds inference batch norm into conv2d and linear", "[jit][passes]") {
  SECTION("conv2d f32") { check_bn_fold<float>(false, 1e-5); }
  SECTION("conv2d f64") { check_bn_fold<double>(false, 1e-12); }
  SECTION("linear f32") { check_bn_fold<float>(true, 1e-5); }
  SECTION("linear f64") { check_bn_fold<double>(true, 1e-12); }
}

TEST_CASE("fold_batch_norm leaves shared, training or non-constant cases", "[jit][passes]") {
  const auto f32 = em::dtype::f32;
  auto build = [&](bool shared, std::int64_t training, bool const_stats) {
    jit::graph g;
    const int x = add_input(g, f32, {2, 3}, "x");
    const int w = g.add_constant(em::ones<float>({4, 3}), "w"), b = g.add_constant(em::ones<float>({4}), "b");
    const int m = const_stats ? g.add_constant(em::zeros<float>({4}), "m") : add_input(g, f32, {4}, "m");
    const int v = g.add_constant(em::ones<float>({4}), "v");
    const int y = add_node(g, op::linear, {x, w, b}, f32, {2, 4});
    const int z = add_node(g, op::batch_norm, {y, m, v, v, m}, f32, {2, 4},
                           {{"eps", 1e-5}, {"momentum", 0.1}, {"training", training}});
    g.outputs = {z};
    if (shared) g.outputs.push_back(y);
    jit::fold_batch_norm(g);
    return g.nodes.size();
  };
  CHECK(build(false, 0, true) == 1);
  CHECK(build(true, 0, true) == 2);
  CHECK(build(false, 1, true) == 2);
  CHECK(build(false, 0, false) == 2);
}

// ---- fusion ----------------------------------------------------------------------------------

TEST_CASE("fuse_elementwise groups elementwise chains with their scalars", "[jit][passes]") {
  jit::graph g;
  const auto f32 = em::dtype::f32;
  const ints S{jit::symbolic, 8};
  const int x = add_input(g, f32, S, "x");
  const int w = add_input(g, f32, {8, 8}, "w");
  const int b = g.add_constant(em::randn<float>({8}), "b");
  const int half = add_scalar(g, 0.5);
  const int a = add_node(g, op::add, {x, b}, f32, S);
  const int e = add_node(g, op::exp, {a}, f32, S);
  const int m = add_node(g, op::mul, {e, half}, f32, S);
  const int mm = add_node(g, op::matmul, {m, w}, f32, S);  // boundary
  const int t = add_node(g, op::tanh, {mm}, f32, S);
  const int n = add_node(g, op::neg, {t}, f32, S);
  const int r = add_node(g, op::relu, {mm}, f32, S);  // a sibling: merged into t's group by o
  const int o = add_node(g, op::sub, {n, r}, f32, S);
  g.outputs = {o, e};  // e is read outside: a second output of the first group
  const jit::graph original = g;

  jit::fuse_elementwise(g);
  REQUIRE(kinds(g) == std::vector<op>{op::fused, op::matmul, op::fused});
  const auto& g1 = g.nodes[0];
  CHECK(g1.inputs == std::vector<int>{x, b});
  CHECK(g1.outputs == std::vector<int>{e, m});
  CHECK(kinds(*g1.body) == std::vector<op>{op::add, op::exp, op::scalar, op::mul});
  CHECK(g1.body->inputs.size() == 2);
  CHECK(g1.body->outputs.size() == 2);
  const auto& g2 = g.nodes[2];
  CHECK(g2.inputs == std::vector<int>{mm});
  CHECK(g2.outputs == std::vector<int>{o});
  CHECK(kinds(*g2.body) == std::vector<op>{op::tanh, op::neg, op::relu, op::sub});

  const auto xv = em::randn<float>({5, 8}), wv = em::randn<float>({8, 8});
  const auto want = run_graph(original, {xv, wv});
  const auto got = run_graph(g, {xv, wv});
  CHECK(max_ulp(got[0], want[0].get<float>()) == 0);
  CHECK(max_ulp(got[1], want[1].get<float>()) == 0);
}

TEST_CASE("fuse_elementwise respects shapes, boundaries and dtypes", "[jit][passes]") {
  const auto f32 = em::dtype::f32;
  SECTION("no fusion across a shape change; single ops stay") {
    jit::graph g;
    const int z = add_input(g, f32, {5}, "z");
    const int w = add_input(g, f32, {4, 5}, "w");
    const int u = add_node(g, op::neg, {z}, f32, {5});
    const int v = add_node(g, op::add, {u, w}, f32, {4, 5});
    g.outputs = {v};
    jit::fuse_elementwise(g);
    CHECK(kinds(g) == std::vector<op>{op::neg, op::add});
  }
  SECTION("broadcasting inside a group of one output shape") {
    jit::graph g;
    const int p = add_input(g, f32, {4, 1}, "p");
    const int q = add_input(g, f32, {1, 5}, "q");
    const int c = add_node(g, op::add, {p, q}, f32, {4, 5});
    const int d = add_node(g, op::exp, {c}, f32, {4, 5});
    const int e = add_node(g, op::exp, {p}, f32, {4, 1});  // another shape: not with c
    g.outputs = {d, e};
    jit::fuse_elementwise(g);
    CHECK(kinds(g) == std::vector<op>{op::fused, op::exp});
  }
  SECTION("no group that would depend on itself through an outside node") {
    jit::graph g;
    const int x = add_input(g, f32, {3, 4}, "x");
    const int a = add_node(g, op::exp, {x}, f32, {3, 4});
    const int t = add_node(g, op::tanh, {a}, f32, {3, 4});
    const int s = add_node(g, op::softmax, {t}, f32, {3, 4}, {{"dim", std::int64_t{1}}});
    const int c = add_node(g, op::add, {t, s}, f32, {3, 4});
    const int d = add_node(g, op::mul, {c, a}, f32, {3, 4});
    g.outputs = {d};
    const jit::graph original = g;
    jit::fuse_elementwise(g);
    REQUIRE(kinds(g) == std::vector<op>{op::fused, op::softmax, op::fused});
    CHECK(kinds(*g.nodes[0].body) == std::vector<op>{op::exp, op::tanh});
    CHECK(kinds(*g.nodes[2].body) == std::vector<op>{op::add, op::mul});
    CHECK(g.nodes[0].outputs == std::vector<int>{a, t});
    const auto xv = em::randn<float>({3, 4});
    CHECK(max_ulp(run_graph(g, {xv})[0], run_graph(original, {xv})[0].get<float>()) == 0);
  }
  SECTION("integer ops are not fused") {
    jit::graph g;
    const auto i64 = em::dtype::i64;
    const int x = add_input(g, i64, {3}, "x");
    const int a = add_node(g, op::add, {x, x}, i64, {3});
    const int b = add_node(g, op::add, {a, x}, i64, {3});
    g.outputs = {b};
    jit::fuse_elementwise(g);
    CHECK(kinds(g) == std::vector<op>{op::add, op::add});
  }
  SECTION("comparisons, where and casts fuse; bool values cross the group boundary") {
    jit::graph g;
    const auto f64 = em::dtype::f64, bl = em::dtype::boolean;
    const int x = add_input(g, f32, {jit::symbolic, 6}, "x");
    const int zero = add_scalar(g, 0.0);
    const int k = add_scalar(g, 0.1);
    const int mask = add_node(g, op::gt, {x, zero}, bl, {jit::symbolic, 6});
    const int neg = add_node(g, op::mul, {x, k}, f32, {jit::symbolic, 6});
    const int w = add_node(g, op::where, {mask, x, neg}, f32, {jit::symbolic, 6});
    const int c = add_node(g, op::cast, {w}, f64, {jit::symbolic, 6});
    g.outputs = {c, mask, zero};  // a scalar that is also a graph output stays
    const jit::graph original = g;
    jit::fuse_elementwise(g);
    REQUIRE(kinds(g) == std::vector<op>{op::scalar, op::fused});
    CHECK(g.nodes[1].outputs == std::vector<int>{mask, c});
    CHECK(g.nodes[1].inputs == std::vector<int>{x});
    const auto xv = em::randn<float>({7, 6});
    const auto want = run_graph(original, {xv});
    const auto got = run_graph(g, {xv});
    CHECK(max_ulp(got[0], want[0].get<double>()) == 0);
    CHECK(max_ulp(got[1], want[1].get<bool>()) == 0);
  }
}

TEST_CASE("optimize runs the whole pipeline", "[jit][passes]") {
  jit::graph g;
  const auto f32 = em::dtype::f32;
  const ints S{jit::symbolic, 3};
  const int x = add_input(g, f32, S, "x");
  const int c = g.add_constant(em::ones<float>({3}), "c");
  const int two = add_scalar(g, 2.0);
  const int c2 = add_node(g, op::mul, {c, two}, f32, {3});  // folded
  const int a1 = add_node(g, op::add, {x, c2}, f32, S);
  const int a2 = add_node(g, op::add, {x, c2}, f32, S);  // CSE
  const int e = add_node(g, op::exp, {a1}, f32, S);
  const int f = add_node(g, op::mul, {e, a2}, f32, S);
  add_node(g, op::tanh, {x}, f32, S);  // dead
  g.outputs = {f};
  const jit::graph original = g;
  jit::optimize(g, hand_runner());
  REQUIRE(kinds(g) == std::vector<op>{op::fused});
  CHECK(kinds(*g.nodes[0].body) == std::vector<op>{op::add, op::exp, op::mul});
  CHECK(g.constants.size() == 1);
  const auto xv = em::randn<float>({4, 3});
  CHECK(max_ulp(run_graph(g, {xv})[0], run_graph(original, {xv})[0].get<float>()) == 0);
}

// ---- run_fused --------------------------------------------------------------------------------

namespace {

/// A body: f(inputs) built by `make` on a graph whose inputs have the given dtypes/shapes.
template <class Make>
jit::graph make_body(std::vector<std::pair<em::dtype, ints>> ins, Make make) {
  jit::graph g;
  std::vector<int> ids;
  for (auto& [t, s] : ins) ids.push_back(add_input(g, t, s));
  g.outputs = make(g, ids);
  return g;
}

}  // namespace

TEMPLATE_TEST_CASE("run_fused matches eager elementwise evaluation", "[jit][fused]", float, double) {
  using T = TestType;
  const auto t = em::dtype_of<T>;
  const ints S{jit::symbolic};
  for (std::int64_t n : {1, 7, 2047, 2049, 100003}) {
    CAPTURE(n);
    const auto x = em::randn<T>({n});
    const auto y = em::randn<T>({n});

    // unary chain: sigmoid(exp(-x)) * tanh(x)
    auto body = make_body({{t, S}}, [&](jit::graph& g, std::vector<int> in) {
      const int a = add_node(g, op::neg, {in[0]}, t, S);
      const int b = add_node(g, op::exp, {a}, t, S);
      const int c = add_node(g, op::sigmoid, {b}, t, S);
      const int d = add_node(g, op::tanh, {in[0]}, t, S);
      return std::vector<int>{add_node(g, op::mul, {c, d}, t, S)};
    });
    std::vector<em::any_tensor> out;
    jit::run_fused(body, {x}, out);
    REQUIRE(out.size() == 1);
    CHECK(max_ulp(out[0], em::tensor<T>(em::sigmoid(em::exp(-x)) * em::tanh(x))) == 0);

    // gelu / tanh / sigmoid / scalars, two inputs, two outputs (one intermediate)
    body = make_body({{t, S}, {t, S}}, [&](jit::graph& g, std::vector<int> in) {
      const int k = add_scalar(g, 0.75, t);
      const int a = add_node(g, op::gelu, {in[0]}, t, S);
      const int b = add_node(g, op::mul, {a, k}, t, S);
      const int c = add_node(g, op::tanh, {in[1]}, t, S);
      const int d = add_node(g, op::add, {b, c}, t, S);
      const int e = add_node(g, op::sigmoid, {d}, t, S);
      return std::vector<int>{e, b};
    });
    jit::run_fused(body, {x, y}, out);
    REQUIRE(out.size() == 2);
    const em::tensor<T> b_want = em::gelu(x) * T(0.75);
    CHECK(max_ulp(out[1], b_want) == 0);
    CHECK(max_ulp(out[0], em::tensor<T>(em::sigmoid(b_want + em::tanh(y)))) == 0);

    // where + comparison, a bool output, a cast round trip and logical ops
    body = make_body({{t, S}, {t, S}}, [&](jit::graph& g, std::vector<int> in) {
      const auto bl = em::dtype::boolean;
      const int zero = add_scalar(g, 0.0, t);
      const int m = add_node(g, op::gt, {in[0], zero}, bl, S);
      const int m2 = add_node(g, op::lt, {in[1], zero}, bl, S);
      const int both = add_node(g, op::logical_and, {m, m2}, bl, S);
      const int nb = add_node(g, op::logical_not, {both}, bl, S);
      const int sl = add_node(g, op::mul, {in[0], in[1]}, t, S);
      const int w = add_node(g, op::where, {nb, in[0], sl}, t, S);
      const auto other = t == em::dtype::f32 ? em::dtype::f64 : em::dtype::f32;
      const int c1 = add_node(g, op::cast, {w}, other, S);
      const int c2 = add_node(g, op::cast, {c1}, t, S);
      const int mf = add_node(g, op::cast, {m}, t, S);
      return std::vector<int>{add_node(g, op::add, {c2, mf}, t, S), both};
    });
    jit::run_fused(body, {x, y}, out);
    const em::tensor<bool> both = (x > T(0)) && (y < T(0));
    const em::tensor<bool> nb = !both;
    const em::tensor<T> w = em::where(nb, x, em::tensor<T>(x * y));
    const em::tensor<T> mf = em::tensor<bool>(x > T(0)).template to<T>();
    CHECK(max_ulp(out[0], em::tensor<T>(w.template to<std::conditional_t<std::is_same_v<T, float>, double, float>>()
                                            .template to<T>() + mf)) == 0);
    CHECK(max_ulp(out[1], both) == 0);
  }
}

TEMPLATE_TEST_CASE("run_fused broadcasts, gathers strided inputs and splats 0-d ones", "[jit][fused]",
                   float, double) {
  using T = TestType;
  const auto t = em::dtype_of<T>;
  for (ints shp : {ints{2, 3, 5, 7}, ints{4, 16, 33, 33}, ints{1, 1, 1, 1}}) {
    const std::int64_t C = shp[1];
    const ints S{jit::symbolic, C, jit::symbolic, jit::symbolic};
    const auto x = em::randn<T>(em::shape(shp));
    const auto bias = em::randn<T>({C, 1, 1});
    const auto scale = em::full<T>({}, T(1.5));
    // x is read transposed (not contiguous): the gather path
    const auto xt = em::randn<T>({shp[0], shp[1], shp[3], shp[2]}).transpose(2, 3);
    auto body = make_body({{t, S}, {t, {C, 1, 1}}, {t, {}}, {t, S}}, [&](jit::graph& g, std::vector<int> in) {
      const int a = add_node(g, op::add, {in[0], in[1]}, t, S);
      const int b = add_node(g, op::mul, {a, in[2]}, t, S);
      const int c = add_node(g, op::sub, {b, in[3]}, t, S);
      const int one = add_scalar(g, 1.0, t);
      return std::vector<int>{add_node(g, op::maximum, {c, one}, t, S), a};
    });
    std::vector<em::any_tensor> out;
    jit::run_fused(body, {x, bias, scale, xt}, out);
    REQUIRE(out[0].shape() == em::shape(shp));
    CHECK(max_ulp(out[0], em::tensor<T>(em::maximum((x + bias) * scale - xt, T(1)))) == 0);
    CHECK(max_ulp(out[1], em::tensor<T>(x + bias)) == 0);
  }
  SECTION("inputs that broadcast against each other, and a sliced input") {
    const auto p = em::randn<T>({300, 1});
    const auto q = em::randn<T>({1, 70});
    const auto r = em::randn<T>({300, 140}).slice(1, 0, 140, 2);
    auto body = make_body({{t, {300, 1}}, {t, {1, 70}}, {t, {300, 70}}}, [&](jit::graph& g, std::vector<int> in) {
      const int a = add_node(g, op::mul, {in[0], in[1]}, t, {300, 70});
      return std::vector<int>{add_node(g, op::add, {a, in[2]}, t, {300, 70})};
    });
    std::vector<em::any_tensor> out;
    jit::run_fused(body, {p, q, r}, out);
    CHECK(max_ulp(out[0], em::tensor<T>(p * q + r)) == 0);
  }
  SECTION("empty outputs") {
    auto body = make_body({{t, {0, 3}}}, [&](jit::graph& g, std::vector<int> in) {
      const int a = add_node(g, op::exp, {in[0]}, t, {0, 3});
      return std::vector<int>{add_node(g, op::neg, {a}, t, {0, 3})};
    });
    std::vector<em::any_tensor> out;
    jit::run_fused(body, {em::empty<T>({0, 3})}, out);
    CHECK(out[0].shape() == em::shape{0, 3});
  }
}

TEST_CASE("run_fused rejects what it cannot run", "[jit][fused]") {
  using Catch::Matchers::Contains;
  const ints S{4};
  auto body = make_body({{em::dtype::i64, S}}, [&](jit::graph& g, std::vector<int> in) {
    return std::vector<int>{add_node(g, op::add, {in[0], in[0]}, em::dtype::i64, S)};
  });
  std::vector<em::any_tensor> out;
  try {
    jit::run_fused(body, {em::zeros<std::int64_t>({4})}, out);
    FAIL("expected an error");
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::not_implemented);
    CHECK_THAT(std::string(e.what()), Contains("add") && Contains("i64"));
  }
  auto fbody = make_body({{em::dtype::f32, S}}, [&](jit::graph& g, std::vector<int> in) {
    return std::vector<int>{add_node(g, op::exp, {in[0]}, em::dtype::f32, S)};
  });
  CHECK_THROWS_AS(jit::run_fused(fbody, {em::zeros<double>({4})}, out), em::error);  // dtype
  CHECK_THROWS_AS(jit::run_fused(fbody, {}, out), em::error);                        // count
  CHECK_THROWS_AS(jit::run_fused(fbody, {em::zeros<float>({5})}, out), em::error);   // shape
}

TEST_CASE("fusible agrees with run_fused's type rules", "[jit][fused]") {
  jit::graph g;
  const auto f32 = em::dtype::f32, f64 = em::dtype::f64, bl = em::dtype::boolean;
  const int a = add_input(g, f32, {2}), b = add_input(g, f64, {2}), c = add_input(g, bl, {2});
  auto n = [&](op k, std::vector<int> in, em::dtype t) {
    add_node(g, k, std::move(in), t, {2});
    return g.nodes.back();
  };
  CHECK(jit::fusible(n(op::add, {a, a}, f32), g));
  CHECK_FALSE(jit::fusible(n(op::add, {a, b}, f32), g));  // mixed float types
  CHECK(jit::fusible(n(op::lt, {b, b}, bl), g));
  CHECK_FALSE(jit::fusible(n(op::lt, {b, b}, f64), g));  // comparisons give bool
  CHECK(jit::fusible(n(op::where, {c, a, a}, f32), g));
  CHECK_FALSE(jit::fusible(n(op::where, {a, a, a}, f32), g));
  CHECK(jit::fusible(n(op::cast, {c}, f64), g));
  CHECK_FALSE(jit::fusible(n(op::cast, {a}, em::dtype::i32), g));
  CHECK(jit::fusible(n(op::logical_or, {a, c}, bl), g));
  CHECK_FALSE(jit::fusible(n(op::exp, {c}, bl), g));
  CHECK_FALSE(jit::fusible(n(op::softmax, {a}, f32), g));
}
