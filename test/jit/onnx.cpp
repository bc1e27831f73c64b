// Tests of include/ember/jit/onnx.hpp (and the protobuf reader/writer of jit/protobuf.hpp):
// hand-built graphs are exported, parsed back and checked for structure; when the Python onnx
// package is present the models pass onnx.checker (full_check), and when onnxruntime is present
// they run there with a batch size other than 1 and match ember's eager ops.
#include <ember/ember.hpp>
#include <ember/jit/extern.hpp>  // the interpreter is instantiated once: jit/instantiate.cpp
#include <ember/io/npy.hpp>
#include <ember/jit/onnx.hpp>
#include <ember/jit/protobuf.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

namespace em = ember;
namespace F = ember::nn::functional;
namespace jit = ember::jit;
using jit::detail::pb_message;

namespace {

// ---- building graphs by hand -----------------------------------------------------------------

struct builder {
  jit::graph g;
  int input(const std::string& name, std::vector<std::int64_t> shape,
            em::dtype t = em::dtype::f32) {
    const int id = g.add_value(t, std::move(shape), name);
    g.inputs.push_back(id);
    return id;
  }
  int constant(const std::string& name, const em::any_tensor& t) { return g.add_constant(t, name); }
  std::vector<int> node_n(em::op k, std::vector<int> in,
                          std::vector<std::vector<std::int64_t>> shapes, jit::attributes a = {},
                          em::dtype t = em::dtype::f32) {
    jit::node n;
    n.kind = k;
    n.inputs = std::move(in);
    n.attrs = std::move(a);
    for (auto& s : shapes) n.outputs.push_back(g.add_value(t, std::move(s)));
    g.nodes.push_back(n);
    return n.outputs;
  }
  int node(em::op k, std::vector<int> in, std::vector<std::int64_t> shape, jit::attributes a = {},
           em::dtype t = em::dtype::f32) {
    return node_n(k, std::move(in), {std::move(shape)}, std::move(a), t)[0];
  }
  int scalar(double v, em::dtype t = em::dtype::f32) {
    return node(em::op::scalar, {}, {}, {{"value", v}}, t);
  }
};

using ints = std::vector<std::int64_t>;
constexpr std::int64_t N = jit::symbolic;

// ---- reading the model back ------------------------------------------------------------------

struct parsed {
  std::string bytes;  // the views below point into it
  pb_message model, graph;
  explicit parsed(std::string b) : bytes(std::move(b)) {
    model = pb_message(bytes);
    graph = pb_message(model.get_bytes(7));
  }
  std::vector<std::string> op_types() const {
    std::vector<std::string> out;
    for (const auto& n : graph.messages(1)) out.emplace_back(n.get_bytes(4));
    return out;
  }
  std::size_t count(const std::string& op_type) const {
    std::size_t k = 0;
    for (const auto& t : op_types()) k += t == op_type;
    return k;
  }
  /// (dim_value or -1 for a dim_param, dim_param) of a graph input (11) or output (12).
  std::vector<std::pair<std::int64_t, std::string>> dims(std::uint32_t field, std::size_t i) const {
    const pb_message info(graph.messages(field).at(i));
    const pb_message tensor_type(pb_message(info.get_bytes(2)).get_bytes(1));
    std::vector<std::pair<std::int64_t, std::string>> out;
    for (const auto& d : pb_message(tensor_type.get_bytes(2)).messages(1))
      out.emplace_back(d.has(1) ? d.get_int(1) : -1, std::string(d.get_bytes(2)));
    return out;
  }
  std::int64_t elem_type(std::uint32_t field, std::size_t i) const {
    const pb_message info(graph.messages(field).at(i));
    return pb_message(pb_message(info.get_bytes(2)).get_bytes(1)).get_int(1);
  }
  std::string value_name(std::uint32_t field, std::size_t i) const {
    return std::string(pb_message(graph.messages(field).at(i)).get_bytes(1));
  }
};

// ---- Python: onnx.checker and onnxruntime ----------------------------------------------------

std::string python() {
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}
bool python_has(const std::string& modules) {
  const std::string cmd = python() + " -c \"import " + modules + "\" > /dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}
bool have_onnx() {
  static const bool ok = python_has("onnx");
  return ok;
}
bool have_ort() {
  static const bool ok = python_has("onnxruntime, numpy");
  return ok;
}

/// A fresh temporary folder, removed with its files at the end of the scope.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("ember_onnx_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

/// onnx.checker.check_model(full_check=True) on the exported file; false when onnx is absent.
bool onnx_check(const jit::graph& g) {
  if (!have_onnx()) return false;
  temp_dir dir;
  const std::string file = dir / "model.onnx";
  jit::export_onnx(g, file);
  const std::string cmd = python() +
                          " -c \"import onnx,sys; m=onnx.load(sys.argv[1]); "
                          "onnx.checker.check_model(m, full_check=True)\" " +
                          file;
  CHECK(std::system(cmd.c_str()) == 0);
  return true;
}

constexpr const char* ort_script = R"(import sys
import numpy as np
import onnxruntime as ort
model, out = sys.argv[1], sys.argv[2]
names, files = sys.argv[3::2], sys.argv[4::2]
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
res = s.run(None, {n: np.load(f) for n, f in zip(names, files)})
for i, r in enumerate(res):
    np.save(out + str(i) + ".npy", np.asarray(r))
)";

/// Runs the exported model in onnxruntime on the feeds; every output, read back from .npy.
std::vector<em::any_tensor> run_ort(
    const jit::graph& g, const std::vector<std::pair<std::string, em::any_tensor>>& feeds) {
  temp_dir dir;
  const std::string model = dir / "model.onnx", script = dir / "run.py";
  jit::export_onnx(g, model);
  std::ofstream(script) << ort_script;
  std::string cmd = python() + " " + script + " " + model + " " + (dir / "out");
  for (std::size_t i = 0; i < feeds.size(); ++i) {
    const std::string f = dir / ("in" + std::to_string(i) + ".npy");
    em::io::save_npy(feeds[i].second, f);
    cmd += " " + feeds[i].first + " " + f;
  }
  const int rc = std::system(cmd.c_str());
  REQUIRE(rc == 0);
  std::vector<em::any_tensor> out;
  for (std::size_t i = 0; i < g.outputs.size(); ++i)
    out.push_back(em::io::load_npy(dir / ("out" + std::to_string(i) + ".npy")));
  return out;
}

/// max |a - b| / (1 + |b|) after a shape check (NaN counts as a mismatch).
double max_diff(const em::any_tensor& a, const em::any_tensor& b) {
  INFO("onnxruntime shape " << a.shape() << ", ember shape " << b.shape());
  REQUIRE(a.shape() == b.shape());
  const auto x = a.to<double>().contiguous(), y = b.to<double>().contiguous();
  double m = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double u = x.data()[i], v = y.data()[i];
    const double d = std::isnan(u) || std::isnan(v) ? (std::isnan(u) && std::isnan(v) ? 0 : 1e9)
                                                    : std::abs(u - v) / (1 + std::abs(v));
    m = std::max(m, d);
  }
  return m;
}

// ---- the models ------------------------------------------------------------------------------

struct mlp {
  em::tensor<float> w1 = em::randn<float>({8, 4}), b1 = em::randn<float>({8}),
                    w2 = em::randn<float>({3, 8}), b2 = em::randn<float>({3});
  builder b;
  mlp() {
    const int x = b.input("x", {N, 4});
    const int h = b.node(em::op::linear,
                         {x, b.constant("fc1.weight", w1), b.constant("fc1.bias", b1)}, {N, 8});
    const int r = b.node(em::op::relu, {h}, {N, 8});
    const int y = b.node(em::op::linear,
                         {r, b.constant("fc2.weight", w2), b.constant("fc2.bias", b2)}, {N, 3});
    b.g.values[static_cast<std::size_t>(y)].name = "y";
    b.g.outputs = {y};
  }
  em::tensor<float> eager(const em::tensor<float>& x) const {
    return F::linear(em::tensor<float>(em::relu(F::linear(x, w1, b1))), w2, b2);
  }
};

struct cnn {
  em::tensor<float> cw = em::randn<float>({4, 1, 3, 3}), cb = em::randn<float>({4}),
                    mean = em::randn<float>({4}), var = em::rand<float>({4}) + 0.5f,
                    gamma = em::randn<float>({4}), beta = em::randn<float>({4}),
                    lw = em::randn<float>({5, 36}), lb = em::randn<float>({5});
  builder b;
  cnn() {
    const int x = b.input("image", {N, 1, 6, 6});
    const int c =
        b.node(em::op::conv2d, {x, b.constant("conv.weight", cw), b.constant("conv.bias", cb)},
               {N, 4, 6, 6},
               {{"stride", ints{1, 1}},
                {"padding", ints{1, 1}},
                {"dilation", ints{1, 1}},
                {"groups", std::int64_t{1}}});
    const int bn =
        b.node(em::op::batch_norm,
               {c, b.constant("bn.running_mean", mean), b.constant("bn.running_var", var),
                b.constant("bn.weight", gamma), b.constant("bn.bias", beta)},
               {N, 4, 6, 6}, {{"eps", 1e-5}, {"momentum", 0.1}, {"training", std::int64_t{0}}});
    const int r = b.node(em::op::relu, {bn}, {N, 4, 6, 6});
    const int p = b.node(em::op::max_pool2d, {r}, {N, 4, 3, 3},
                         {{"kernel", ints{2, 2}},
                          {"stride", ints{2, 2}},
                          {"padding", ints{0, 0}},
                          {"dilation", ints{1, 1}},
                          {"ceil_mode", std::int64_t{0}}});
    const int f = b.node(em::op::reshape, {p}, {N, 36}, {{"shape", ints{0, -1}}});
    const int y =
        b.node(em::op::linear, {f, b.constant("fc.weight", lw), b.constant("fc.bias", lb)}, {N, 5});
    b.g.outputs = {y};
  }
  em::tensor<float> eager(const em::tensor<float>& x) const {
    const em::tensor<float> c = F::conv2d(x, cw, {.bias = cb, .stride = 1, .padding = 1});
    const em::tensor<float> bn =
        F::batch_norm(c, mean, var, {.weight = gamma, .bias = beta, .training = false});
    const em::tensor<float> r = em::relu(bn);
    const em::tensor<float> p = F::max_pool2d(r, {.kernel = 2, .stride = 2});
    return F::linear(p.reshape({x.size(0), 36}), lw, lb);
  }
};

}  // namespace

// ---- protobuf --------------------------------------------------------------------------------

TEST_CASE("protobuf writer and reader round-trip every wire type", "[jit][onnx]") {
  jit::detail::pb_writer inner;
  inner.string(2, "N");
  jit::detail::pb_writer w;
  w.varint(1, 300);
  w.varint(2, -2);
  w.message(3, inner);
  w.float32(4, 1.5f);
  w.fixed64(5, 0x0102030405060708ull);
  const ints packed{1, 127, 128, -1, std::numeric_limits<std::int64_t>::max()};
  w.packed_varints(6, packed);
  w.varint(6, 9);  // an unpacked element of the same repeated field
  const std::string bytes = w.str();
  CHECK(bytes.substr(0, 3) == std::string("\x08\xac\x02", 3));  // field 1 varint 300
  const pb_message m(bytes);
  CHECK(m.get_int(1) == 300);
  CHECK(m.get_int(2) == -2);
  CHECK(pb_message(m.get_bytes(3)).get_bytes(2) == "N");
  CHECK(m.get(4).as_float() == 1.5f);
  CHECK(m.get(5).scalar == 0x0102030405060708ull);
  ints expect = packed;
  expect.push_back(9);
  CHECK(m.ints(6) == expect);
  CHECK_THROWS_AS(pb_message(bytes.substr(0, bytes.size() - 1)), em::error);
}

// ---- structure -------------------------------------------------------------------------------

TEST_CASE("onnx: an MLP with a symbolic batch", "[jit][onnx]") {
  em::manual_seed(1);
  const mlp net;
  const parsed p(jit::to_onnx(net.b.g, {.producer = "ember-test"}));
  CHECK(p.model.get_int(1) == 8);  // ir_version
  CHECK(p.model.get_bytes(2) == "ember-test");
  const auto opsets = p.model.messages(8);
  REQUIRE(opsets.size() == 1);
  CHECK(opsets[0].get_bytes(1).empty());
  CHECK(opsets[0].get_int(2) == 17);
  CHECK(p.graph.get_bytes(2) == "ember_graph");
  CHECK(p.op_types() == std::vector<std::string>{"Gemm", "Relu", "Gemm"});
  const auto gemm = p.graph.messages(1)[0];
  CHECK(gemm.strings(1) == std::vector<std::string>{"x", "fc1.weight", "fc1.bias"});
  bool trans_b = false;
  for (const auto& a : gemm.messages(5))
    trans_b |= a.get_bytes(1) == "transB" && a.get_int(3) == 1 && a.get_int(20) == 2;
  CHECK(trans_b);
  const auto inits = p.graph.messages(5);
  REQUIRE(inits.size() == 4);
  std::map<std::string, std::pair<ints, std::size_t>> by_name;
  for (const auto& t : inits) {
    CHECK(t.get_int(2) == 1);  // FLOAT
    by_name[std::string(t.get_bytes(8))] = {t.ints(1), t.get_bytes(9).size()};
  }
  CHECK(by_name["fc1.weight"] == std::pair<ints, std::size_t>{{8, 4}, 8 * 4 * 4});
  CHECK(by_name["fc1.bias"] == std::pair<ints, std::size_t>{{8}, 8 * 4});
  CHECK(by_name["fc2.weight"] == std::pair<ints, std::size_t>{{3, 8}, 3 * 8 * 4});
  CHECK(by_name["fc2.bias"] == std::pair<ints, std::size_t>{{3}, 3 * 4});
  // raw_data is the tensor's bytes, little-endian
  for (const auto& t : inits)
    if (t.get_bytes(8) == "fc1.bias") {
      float first;
      std::memcpy(&first, t.get_bytes(9).data(), 4);
      CHECK(first == net.b1.at({0}));
    }
  REQUIRE(p.graph.messages(11).size() == 1);
  CHECK(p.value_name(11, 0) == "x");
  CHECK(p.elem_type(11, 0) == 1);
  CHECK(p.dims(11, 0) == std::vector<std::pair<std::int64_t, std::string>>{{-1, "N"}, {4, ""}});
  CHECK(p.value_name(12, 0) == "y");
  CHECK(p.dims(12, 0) == std::vector<std::pair<std::int64_t, std::string>>{{-1, "N"}, {3, ""}});

  if (!onnx_check(net.b.g)) WARN("python3 onnx not importable: onnx.checker validation skipped");
}

TEST_CASE("onnx: a conv/batch_norm/pool CNN", "[jit][onnx]") {
  em::manual_seed(2);
  const cnn net;
  const parsed p(jit::to_onnx(net.b.g));
  CHECK(p.op_types() == std::vector<std::string>{"Conv", "BatchNormalization", "Relu", "MaxPool",
                                                 "Reshape", "Gemm"});
  const auto bn = p.graph.messages(1)[1];  // X, scale, B, mean, var
  CHECK(bn.strings(1) ==
        std::vector<std::string>{"0", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"});
  for (const auto& a : p.graph.messages(1)[0].messages(5))
    if (a.get_bytes(1) == "pads") CHECK(a.ints(8) == ints{1, 1, 1, 1});
  // the reshape target is an int64 initializer [0, -1]
  bool shape_init = false;
  for (const auto& t : p.graph.messages(5))
    if (t.get_int(2) == 7) {
      const auto raw = t.get_bytes(9);
      REQUIRE(raw.size() == 16);
      std::int64_t v[2];
      std::memcpy(v, raw.data(), 16);
      shape_init = v[0] == 0 && v[1] == -1 && t.ints(1) == ints{2};
    }
  CHECK(shape_init);
  CHECK(p.dims(11, 0)[0].second == "N");
  if (!onnx_check(net.b.g)) WARN("python3 onnx not importable: onnx.checker validation skipped");
}

namespace {
/// x [N, 4] -> fused{ t = x * k; v = tanh(t) * 0.5 + x } -> (gelu(v), t); k a body constant.
struct fused_model {
  em::tensor<float> k = em::randn<float>({4});
  builder b;
  fused_model() {
    const int x = b.input("x", {N, 4});
    auto body = std::make_shared<jit::graph>();
    builder bb;
    const int bx = bb.input("x", {N, 4});
    const int bk = bb.constant("k", k);
    const int t = bb.node(em::op::mul, {bx, bk}, {N, 4});
    const int u = bb.node(em::op::tanh, {t}, {N, 4});
    const int h = bb.scalar(0.5);
    const int w = bb.node(em::op::mul, {u, h}, {N, 4});
    const int v = bb.node(em::op::add, {w, bx}, {N, 4});
    bb.g.outputs = {v, t};
    // the body's input is the fused node's input: body inputs are not separate graph inputs
    *body = bb.g;
    jit::node f;
    f.kind = em::op::fused;
    f.inputs = {x};
    f.outputs = {b.g.add_value(em::dtype::f32, {N, 4}, "fused_v"),
                 b.g.add_value(em::dtype::f32, {N, 4}, "fused_t")};
    f.body = body;
    b.g.nodes.push_back(f);
    const int z = b.node(em::op::gelu, {f.outputs[0]}, {N, 4});
    b.g.outputs = {z, f.outputs[1]};
  }
};
}  // namespace

TEST_CASE("onnx: a fused node is inlined with renamed values", "[jit][onnx]") {
  em::manual_seed(3);
  const fused_model m;
  const parsed p(jit::to_onnx(m.b.g));
  CHECK(p.count("Mul") >= 2);
  CHECK(p.count("Tanh") == 1);
  CHECK(p.count("Erf") == 1);
  // the body's constant became an initializer under a prefixed name; body outputs kept the
  // fused node's output names
  const auto inits = p.graph.messages(5);
  REQUIRE(inits.size() == 1);
  CHECK(inits[0].get_bytes(8) == "fused_v/k");
  std::set<std::string> outputs;
  for (const auto& n : p.graph.messages(1))
    for (const auto& o : n.strings(2)) CHECK(outputs.insert(o).second);  // SSA: written once
  CHECK(outputs.count("fused_v") == 1);
  CHECK(outputs.count("fused_t") == 1);
  CHECK(p.value_name(12, 1) == "fused_t");
  if (!onnx_check(m.b.g)) WARN("python3 onnx not importable: onnx.checker validation skipped");
}

namespace {
/// x [N, 5, 8] -> layer_norm -> linear (3-d: MatMul) -> q; softmax(q qᵀ) a; and causal sdpa.
struct attention_model {
  em::tensor<float> lw = em::randn<float>({8}), lb = em::randn<float>({8}),
                    wq = em::randn<float>({8, 8}), bq = em::randn<float>({8});
  builder b;
  attention_model() {
    const int x = b.input("x", {N, 5, 8});
    const int a =
        b.node(em::op::layer_norm, {x, b.constant("ln.weight", lw), b.constant("ln.bias", lb)},
               {N, 5, 8}, {{"normalized_shape", ints{8}}, {"eps", 1e-5}});
    const int q = b.node(em::op::linear, {a, b.constant("q.weight", wq), b.constant("q.bias", bq)},
                         {N, 5, 8});
    const int kt = b.node(em::op::permute, {q}, {N, 8, 5}, {{"dims", ints{0, 2, 1}}});
    const int s = b.node(em::op::matmul, {q, kt}, {N, 5, 5});
    const int pr = b.node(em::op::softmax, {s}, {N, 5, 5}, {{"dim", std::int64_t{-1}}});
    const int o = b.node(em::op::matmul, {pr, a}, {N, 5, 8});
    const int c = b.node(em::op::scaled_dot_product_attention, {q, a, a}, {N, 5, 8},
                         {{"is_causal", std::int64_t{1}}});
    b.g.outputs = {o, c};
  }
  std::pair<em::tensor<float>, em::tensor<float>> eager(const em::tensor<float>& x) const {
    const em::tensor<float> a =
        F::layer_norm(x, {.normalized_shape = {8}, .weight = lw, .bias = lb});
    const em::tensor<float> q = F::linear(a, wq, bq);
    const em::tensor<float> pr = F::softmax(em::matmul(q, q.permute({0, 2, 1})), -1);
    return {em::matmul(pr, a), F::scaled_dot_product_attention(q, a, a, {.is_causal = true})};
  }
};
}  // namespace

TEST_CASE("onnx: layer_norm, 3-d linear, permute, softmax, causal attention", "[jit][onnx]") {
  em::manual_seed(4);
  const attention_model m;
  const parsed p(jit::to_onnx(m.b.g));
  const auto ops = p.op_types();
  CHECK(ops[0] == "LayerNormalization");
  CHECK(p.count("Gemm") == 0);  // 3-d x: MatMul with the transposed weight
  CHECK(p.count("Transpose") == 3);
  CHECK(p.count("Softmax") == 2);
  CHECK(p.count("Where") == 1);
  if (!onnx_check(m.b.g)) WARN("python3 onnx not importable: onnx.checker validation skipped");
}

// ---- errors ----------------------------------------------------------------------------------

TEST_CASE("onnx: unexportable graphs are ember errors naming the problem", "[jit][onnx]") {
  SECTION("custom op") {
    builder b;
    const int x = b.input("x", {2});
    b.g.outputs = {b.node(em::op::custom, {x}, {2}, {{"name", std::string("cube")}})};
    CHECK_THROWS_WITH(jit::to_onnx(b.g),
                      Catch::Contains("custom op cube cannot be exported to ONNX"));
  }
  SECTION("batch_norm in training mode") {
    builder b;
    const int x = b.input("x", {N, 2});
    const int c = b.constant("c", em::ones<float>({2}));
    b.g.outputs = {b.node(em::op::batch_norm, {x, c, c, c, c}, {N, 2},
                          {{"eps", 1e-5}, {"momentum", 0.1}, {"training", std::int64_t{1}}})};
    CHECK_THROWS_WITH(jit::to_onnx(b.g), Catch::Contains("export the model in eval mode"));
  }
  SECTION("opset other than 17") {
    em::manual_seed(5);
    const mlp net;
    try {
      jit::to_onnx(net.b.g, {.opset = 13});
      FAIL("no error");
    } catch (const em::error& e) {
      CHECK(e.category() == em::errc::not_implemented);
      CHECK_THAT(e.what(), Catch::Contains("opset 13"));
    }
  }
  SECTION("an op without a mapping") {
    builder b;
    const int x = b.input("x", {2});
    b.g.outputs = {b.node(em::op::leaf, {x}, {2})};
    CHECK_THROWS_WITH(jit::to_onnx(b.g), Catch::Contains("leaf"));
  }
  SECTION("adaptive pooling that does not divide") {
    builder b;
    const int x = b.input("x", {N, 1, 5, 5});
    b.g.outputs = {
        b.node(em::op::adaptive_avg_pool2d, {x}, {N, 1, 2, 2}, {{"output_size", ints{2, 2}}})};
    CHECK_THROWS_AS(jit::to_onnx(b.g), em::error);
  }
  SECTION("a failed export keeps the previous file") {
    temp_dir dir;
    const std::string f = dir / "m.onnx";
    std::ofstream(f) << "old";
    builder b;
    const int x = b.input("x", {2});
    b.g.outputs = {b.node(em::op::custom, {x}, {2}, {{"name", std::string("cube")}})};
    CHECK_THROWS_AS(jit::export_onnx(b.g, f), em::error);
    std::ifstream in(f);
    std::string s;
    in >> s;
    CHECK(s == "old");
  }
}

// ---- onnxruntime: numbers --------------------------------------------------------------------

TEST_CASE("onnxruntime runs the exported models like ember (batch 5)", "[jit][onnx][onnxruntime]") {
  if (!have_ort()) {
    WARN("python3 onnxruntime/numpy not importable: onnxruntime comparison skipped");
    return;
  }
  em::manual_seed(6);
  SECTION("mlp") {
    const mlp net;
    const auto x = em::randn<float>({5, 4});
    const auto out = run_ort(net.b.g, {{"x", x}});
    CHECK(max_diff(out[0], net.eager(x)) < 1e-5);
  }
  SECTION("cnn") {
    const cnn net;
    const auto x = em::randn<float>({5, 1, 6, 6});
    const auto out = run_ort(net.b.g, {{"image", x}});
    CHECK(max_diff(out[0], net.eager(x)) < 1e-5);
  }
  SECTION("fused") {
    const fused_model m;
    const auto x = em::randn<float>({5, 4});
    const auto out = run_ort(m.b.g, {{"x", x}});
    const em::tensor<float> t = x * m.k;
    const em::tensor<float> v = em::tanh(t) * 0.5f + x;
    const em::tensor<float> z = em::gelu(v);
    CHECK(max_diff(out[0], z) < 1e-5);
    CHECK(max_diff(out[1], t) < 1e-5);
  }
  SECTION("attention") {
    const attention_model m;
    const auto x = em::randn<float>({5, 5, 8});
    const auto out = run_ort(m.b.g, {{"x", x}});
    const auto [o, c] = m.eager(x);
    CHECK(max_diff(out[0], o) < 1e-5);
    CHECK(max_diff(out[1], c) < 1e-5);
  }
}

TEST_CASE("onnxruntime agrees with ember op by op", "[jit][onnx][onnxruntime]") {
  em::manual_seed(7);
  const std::int64_t B = 4;
  builder b;
  const int x = b.input("x", {N, 6});
  const int pos = b.input("p", {N, 6});
  const int img = b.input("img", {N, 2, 8, 8});
  const int idx = b.input("idx", {N, 3}, em::dtype::i64);
  const int alpha = b.input("alpha", {});
  const em::tensor<float> xv = em::randn<float>({B, 6}) * 2.f;
  const auto pv = em::tensor<float>(em::rand<float>({B, 6}) + 0.5f);
  const auto iv = em::randn<float>({B, 2, 8, 8});
  const auto idv = em::randint<std::int64_t>(0, 10, {B, 3});
  const auto av = em::full<float>({}, 0.7f);
  const auto wm = em::randn<float>({6, 3}), table = em::randn<float>({10, 4}),
             gw = em::randn<float>({6}), gb = em::randn<float>({6}),
             cw = em::randn<float>({4, 1, 3, 3}), cb = em::randn<float>({4});
  std::vector<std::pair<std::string, em::any_tensor>> expect;
  auto out = [&](const std::string& what, int id, em::any_tensor e) {
    b.g.values[static_cast<std::size_t>(id)].name = what;
    b.g.outputs.push_back(id);
    expect.emplace_back(what, e);
  };
  const ints s{N, 6};
  using em::op;
  auto un = [&](op k, int in) { return b.node(k, {in}, s); };
  out("neg", un(op::neg, x), em::tensor<float>(-xv));
  out("abs", un(op::abs, x), em::tensor<float>(em::abs(xv)));
  out("exp", un(op::exp, x), em::tensor<float>(em::exp(xv)));
  out("expm1", un(op::expm1, x), em::tensor<float>(em::expm1(xv)));
  out("sin", un(op::sin, x), em::tensor<float>(em::sin(xv)));
  out("cos", un(op::cos, x), em::tensor<float>(em::cos(xv)));
  out("tanh", un(op::tanh, x), em::tensor<float>(em::tanh(xv)));
  out("sigmoid", un(op::sigmoid, x), em::tensor<float>(em::sigmoid(xv)));
  out("gelu", un(op::gelu, x), em::tensor<float>(em::gelu(xv)));
  out("gelu_tanh", un(op::gelu_tanh, x), em::tensor<float>(em::gelu_tanh(xv)));
  out("silu", un(op::silu, x), em::tensor<float>(em::silu(xv)));
  out("softplus", un(op::softplus, x), em::tensor<float>(em::softplus(xv)));
  out("sign", un(op::sign, x), em::tensor<float>(em::sign(xv)));
  out("floor", un(op::floor, x), em::tensor<float>(em::floor(xv)));
  out("ceil", un(op::ceil, x), em::tensor<float>(em::ceil(xv)));
  out("round", un(op::round, x), em::tensor<float>(em::round(xv)));
  out("erf", un(op::erf, x), em::tensor<float>(em::erf(xv)));
  out("square", un(op::square, x), em::tensor<float>(em::square(xv)));
  out("log", un(op::log, pos), em::tensor<float>(em::log(pv)));
  out("log1p", un(op::log1p, pos), em::tensor<float>(em::log1p(pv)));
  out("log2", un(op::log2, pos), em::tensor<float>(em::log2(pv)));
  out("sqrt", un(op::sqrt, pos), em::tensor<float>(em::sqrt(pv)));
  out("rsqrt", un(op::rsqrt, pos), em::tensor<float>(em::rsqrt(pv)));
  out("reciprocal", un(op::reciprocal, pos), em::tensor<float>(em::reciprocal(pv)));
  auto bin = [&](op k, int l, int r, em::dtype t = em::dtype::f32) {
    return b.node(k, {l, r}, s, {}, t);
  };
  out("add", bin(op::add, x, pos), em::tensor<float>(xv + pv));
  out("sub", bin(op::sub, x, pos), em::tensor<float>(xv - pv));
  out("mul", bin(op::mul, x, pos), em::tensor<float>(xv * pv));
  out("div", bin(op::div, x, pos), em::tensor<float>(xv / pv));
  out("pow", bin(op::pow, pos, x), em::tensor<float>(em::pow(pv, xv)));
  out("maximum", bin(op::maximum, x, pos), em::tensor<float>(em::maximum(xv, pv)));
  out("minimum", bin(op::minimum, x, pos), em::tensor<float>(em::minimum(xv, pv)));
  const auto bl = em::dtype::boolean;
  const int gt = bin(op::gt, x, pos, bl), lt = bin(op::lt, x, pos, bl);
  out("gt", gt, em::tensor<bool>(xv > pv));
  out("lt", lt, em::tensor<bool>(xv < pv));
  out("ge", bin(op::ge, x, pos, bl), em::tensor<bool>(xv >= pv));
  out("le", bin(op::le, x, pos, bl), em::tensor<bool>(xv <= pv));
  out("eq", bin(op::eq, x, x, bl), em::tensor<bool>(xv == xv));
  out("ne", bin(op::ne, x, pos, bl), em::tensor<bool>(xv != pv));
  const em::tensor<bool> gtv = xv > pv, ltv = xv<pv, posv = xv> 0.f;
  const int posx = b.node(op::gt, {x, b.scalar(0)}, s, {}, bl);
  auto both = [&](const em::tensor<bool>& l, const em::tensor<bool>& r, bool any) {
    auto o = em::zeros<bool>({B, 6});
    for (std::int64_t i = 0; i < o.numel(); ++i)
      o.data()[i] = any ? (l.data()[i] || r.data()[i]) : (l.data()[i] && r.data()[i]);
    return o;
  };
  out("not", b.node(op::logical_not, {gt}, s, {}, bl), em::tensor<bool>(em::logical_not(gtv)));
  out("and", bin(op::logical_and, gt, posx, bl), both(gtv, posv, false));
  out("or", bin(op::logical_or, lt, posx, bl), both(ltv, posv, true));
  out("where", b.node(op::where, {gt, x, pos}, s), em::tensor<float>(em::where(gtv, xv, pv)));
  out("clamp", b.node(op::clamp, {x, b.scalar(-0.5), b.scalar(0.5)}, s),
      em::tensor<float>(em::clamp(xv, -0.5f, 0.5f)));
  out("leaky_relu", b.node(op::leaky_relu, {x, b.scalar(0.1)}, s),
      em::tensor<float>(em::leaky_relu(xv, 0.1f)));
  out("elu", b.node(op::elu, {x, alpha}, s), em::tensor<float>(em::elu(xv, 0.7f)));
  out("cast", b.node(op::cast, {x}, s, {}, em::dtype::f64), em::tensor<double>(xv.to<double>()));
  auto red = [&](op k, jit::attributes a, ints shape, em::dtype t = em::dtype::f32) {
    return b.node(k, {x}, std::move(shape), std::move(a), t);
  };
  const jit::attribute no = std::int64_t{0}, yes = std::int64_t{1};
  out("sum", red(op::sum, {{"dims", ints{1}}, {"keepdim", no}}, {N}), em::sum(xv, 1));
  out("mean", red(op::mean, {{"dims", ints{1}}, {"keepdim", yes}}, {N, 1}),
      em::mean(xv, {1}, true));
  out("prod", red(op::prod, {{"dims", ints{-1}}, {"keepdim", no}}, {N}), em::prod(xv, 1));
  out("amax", red(op::amax, {{"dims", ints{1}}, {"keepdim", no}}, {N}), em::amax(xv, 1));
  out("amin", red(op::amin, {{"dims", ints{}}, {"keepdim", no}}, {}), em::amin(xv));
  out("logsumexp", red(op::logsumexp, {{"dims", ints{1}}, {"keepdim", no}}, {N}),
      em::logsumexp(xv, 1));
  out("norm", red(op::norm, {{"dims", ints{1}}, {"keepdim", no}}, {N}), em::norm(xv, 1));
  out("var", red(op::var, {{"dims", ints{1}}, {"keepdim", no}, {"correction", yes}}, {N}),
      em::var(xv, {1}));
  out("var0", red(op::var, {{"dims", ints{0}}, {"keepdim", yes}, {"correction", no}}, {1, 6}),
      em::var(xv, {0}, false, true));
  out("std_all", red(op::std, {{"dims", ints{}}, {"keepdim", no}, {"correction", yes}}, {}),
      em::std(xv));
  out("argmax", red(op::argmax, {{"dim", std::int64_t{1}}, {"keepdim", no}}, {N}, em::dtype::i64),
      em::argmax(xv, 1));
  out("argmax_all", red(op::argmax, {{"keepdim", no}}, {}, em::dtype::i64), em::argmax(xv));
  out("softmax", red(op::softmax, {{"dim", std::int64_t{1}}}, s), F::softmax(xv, 1));
  out("log_softmax", red(op::log_softmax, {{"dim", std::int64_t{-1}}}, s), F::log_softmax(xv, -1));
  const int r3 = b.node(op::reshape, {x}, {N, 2, 3}, {{"shape", ints{0, 2, 3}}});
  out("permute", b.node(op::permute, {r3}, {N, 3, 2}, {{"dims", ints{0, 2, 1}}}),
      xv.reshape({B, 2, 3}).permute({0, 2, 1}).contiguous());
  const int r1 = b.node(op::reshape, {x}, {N, 1, 6}, {{"shape", ints{0, 1, 6}}});
  out("expand", b.node(op::expand, {r1}, {N, 3, 6}, {{"shape", ints{-1, 3, 6}}}),
      xv.reshape({B, 1, 6}).expand({B, 3, 6}).contiguous());
  out("slice",
      b.node(op::slice, {x}, {N, 3},
             {{"dim", yes},
              {"start", yes},
              {"end", std::numeric_limits<std::int64_t>::max()},
              {"step", std::int64_t{2}}}),
      xv.slice(1, 1, 6, 2).contiguous());
  out("select", b.node(op::select, {x}, {N}, {{"dim", yes}, {"index", std::int64_t{2}}}),
      xv.select(1, 2).contiguous());
  out("cat", b.node(op::cat, {x, pos}, {N, 12}, {{"dim", yes}}),
      em::cat(std::vector<em::tensor<float>>{xv, pv}, 1));
  out("stack", b.node(op::stack, {x, pos}, {N, 6, 2}, {{"dim", std::int64_t{-1}}}),
      em::stack(std::vector<em::tensor<float>>{xv, pv}, -1));
  out("contiguous", un(op::contiguous, x), xv);
  out("matmul", b.node(op::matmul, {x, b.constant("wm", wm)}, {N, 3}), em::matmul(xv, wm));
  out("group_norm",
      b.node(op::group_norm, {x, b.constant("gw", gw), b.constant("gb", gb)}, s,
             {{"groups", std::int64_t{3}}, {"eps", 1e-5}}),
      F::group_norm(xv, 3, {.weight = gw, .bias = gb}));
  out("embedding",
      b.node(op::embedding, {idx, b.constant("table", table)}, {N, 3, 4},
             {{"padding_idx", std::int64_t{-1}}}),
      F::embedding(idv, table));
  out("avg_pool",
      b.node(op::avg_pool2d, {img}, {N, 2, 4, 4},
             {{"kernel", ints{3, 3}},
              {"stride", ints{2, 2}},
              {"padding", ints{1, 1}},
              {"ceil_mode", no},
              {"count_include_pad", no}}),
      F::avg_pool2d(iv, {.kernel = 3, .stride = 2, .padding = 1, .count_include_pad = false}));
  out("adaptive2",
      b.node(op::adaptive_avg_pool2d, {img}, {N, 2, 2, 2}, {{"output_size", ints{2, 2}}}),
      F::adaptive_avg_pool2d(iv, {.output_size = 2}));
  out("adaptive1",
      b.node(op::adaptive_avg_pool2d, {img}, {N, 2, 1, 1}, {{"output_size", ints{1, 1}}}),
      F::adaptive_avg_pool2d(iv, {.output_size = 1}));
  out("conv_groups",
      b.node(op::conv2d, {img, b.constant("cw", cw), b.constant("cb", cb)}, {N, 4, 4, 4},
             {{"stride", ints{1, 1}},
              {"padding", ints{0, 0}},
              {"dilation", ints{2, 2}},
              {"groups", std::int64_t{2}}}),
      F::conv2d(iv, cw, {.bias = cb, .stride = 1, .padding = 0, .dilation = 2, .groups = 2}));
  out("max_pool",
      b.node(op::max_pool2d, {img}, {N, 2, 5, 5},
             {{"kernel", ints{3, 3}},
              {"stride", ints{2, 2}},
              {"padding", ints{1, 1}},
              {"dilation", ints{1, 1}},
              {"ceil_mode", yes}}),
      F::max_pool2d(iv, {.kernel = 3, .stride = 2, .padding = 1, .ceil_mode = true}));

  if (!onnx_check(b.g)) WARN("python3 onnx not importable: onnx.checker validation skipped");
  if (!have_ort()) {
    WARN("python3 onnxruntime/numpy not importable: onnxruntime comparison skipped");
    return;
  }
  const std::vector<std::pair<std::string, em::any_tensor>> feeds{
      {"x", xv}, {"p", pv}, {"img", iv}, {"idx", idv}, {"alpha", av}};
  const auto res = run_ort(b.g, feeds);
  REQUIRE(res.size() == expect.size());
  for (std::size_t i = 0; i < res.size(); ++i) {
    INFO("output " << expect[i].first);
    CHECK(res[i].dtype() == expect[i].second.dtype());
    CHECK(max_diff(res[i], expect[i].second) < 1e-5);
  }
}

// ---- traced nn models ------------------------------------------------------------------------

namespace {

struct traced_cnn : em::nn::module<traced_cnn> {
  BOOST_HANA_DEFINE_STRUCT(traced_cnn, (em::nn::conv2d, conv), (em::nn::batch_norm2d, bn),
                           (em::nn::linear, fc));
  traced_cnn() : conv({.in = 1, .out = 4, .kernel = 3, .padding = 1}), bn(4), fc(4 * 3 * 3, 10) {}
  em::tensor<float> forward(const em::tensor<float>& x) {
    const em::tensor<float> h = F::max_pool2d(em::relu(bn(conv(x))), {.kernel = 2});
    return F::log_softmax(fc(h.flatten(1)), -1);
  }
};

struct traced_encoder : em::nn::module<traced_encoder> {
  BOOST_HANA_DEFINE_STRUCT(traced_encoder, (em::nn::transformer_encoder_layer, layer), (em::nn::linear, head));
  traced_encoder() : layer({.d_model = 8, .nhead = 2, .dim_feedforward = 16, .batch_first = true}), head(8, 3) {}
  em::tensor<float> forward(const em::tensor<float>& x) { return head(em::mean(layer(x), 1)); }
};

}  // namespace

TEST_CASE("onnx: traced models (CNN with batch norm, transformer encoder) run in onnxruntime as in ember",
          "[jit][onnx][onnxruntime]") {
  em::manual_seed(11);
  traced_cnn c;
  c.train();
  for (int i = 0; i < 3; ++i) (void)c(em::randn<float>({8, 1, 6, 6}));
  c.eval();
  auto tc = jit::trace(c, {em::randn<float>({1, 1, 6, 6})});
  traced_encoder e;
  e.eval();
  auto te = jit::trace(e, {em::randn<float>({2, 4, 8})});
  // the symbolic batch is an ONNX dim_param
  const std::string bytes = jit::to_onnx(tc.graph());
  CHECK(bytes.find("ember") != std::string::npos);
  if (!have_onnx()) {
    WARN("python3 onnx not importable: onnx.checker skipped");
  } else {
    onnx_check(tc.graph());
    onnx_check(te.graph());
  }
  if (!have_ort()) {
    WARN("python3 onnxruntime/numpy not importable: onnxruntime comparison skipped");
    return;
  }
  const auto x = em::randn<float>({5, 1, 6, 6});
  CHECK(max_diff(run_ort(tc.graph(), {{"input0", x}})[0], c(x)) < 1e-5);
  const auto s = em::randn<float>({5, 4, 8});
  CHECK(max_diff(run_ort(te.graph(), {{"input0", s}})[0], e(s)) < 1e-5);
}
