// Golden forward values from PyTorch 1.13 (test/data/oracle/ops, copied from the shared oracle):
// every case of the elementwise, reduction, softmax and view families ember implements, rebuilt
// from the case metadata (`op`, `args`), evaluated in float64 (ops/) and float32 (ops/f32/).
// Gradients are checked elsewhere. Set EMBER_TEST_VERBOSE=1 to print the worst error per family.
// The same cases run on a device: on the emulated device here (test/support/emulated_device.hpp),
// and on the GPU in cuda_tests, which builds this file with EMBER_ORACLE_CUDA.
#include "support/emulated_device.hpp"
#include "support/safetensors.hpp"

#ifndef EMBER_TEST_DATA
#error "define EMBER_TEST_DATA as the absolute path of test/data (the Meson build does)"
#endif

#include <ember/ember.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace em = ember;
namespace et = ember_test;
using et::json::value;

namespace {

/// The device the cases run on (inputs are moved there, outputs back).
em::device oracle_device = em::cpu;

const std::vector<std::string> elementwise_families = {
    "add", "sub",  "mul",  "div",     "neg",  "exp",     "log",     "sqrt",  "tanh", "sigmoid",
    "relu", "gelu", "silu", "abs",    "pow",  "maximum", "minimum", "where", "clamp"};
const std::vector<std::string> reduction_families = {"sum",     "mean",        "max",      "var",
                                                     "softmax", "log_softmax", "logsumexp"};
const std::vector<std::string> view_families = {"transpose", "reshape", "permute", "slice"};

template <class T>
std::string oracle_file(const std::string& family) {
  return et::test_data(std::string("oracle/ops/") + (std::is_same_v<T, float> ? "f32/" : "") +
                       family + ".safetensors");
}

/// Suggested tolerance of the oracle: |got - want| <= tol * (1 + |want|).
template <class T>
constexpr double oracle_tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;

/// Row-major copy of any tensor's values (through its strides, not through ember's evaluator).
template <class T>
std::vector<T> values_of(const em::tensor<T>& t) {
  std::vector<T> out;
  out.reserve(static_cast<std::size_t>(t.numel()));
  if (t.numel() == 0) return out;
  const auto& s = t.shape();
  std::vector<std::int64_t> idx(s.size(), 0);
  for (std::int64_t n = 0; n < t.numel(); ++n) {
    std::int64_t off = 0;
    for (std::size_t d = 0; d < s.size(); ++d) off += idx[d] * t.strides()[d];
    out.push_back(t.data()[off]);
    for (std::size_t d = s.size(); d-- > 0;) {
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/// Compares float outputs elementwise; returns the worst |got - want| / (1 + |want|).
template <class T>
double compare_float(const em::tensor<T>& got, const em::tensor<T>& want) {
  REQUIRE(got.shape() == want.shape());
  CHECK(got.device() == oracle_device);
  const auto g = values_of(got.to(em::cpu)), w = values_of(want);
  double worst = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double gi = g[i], wi = w[i];
    if (std::isnan(wi)) {
      CHECK(std::isnan(gi));
      continue;
    }
    if (std::isinf(wi)) {
      CHECK(gi == wi);
      continue;
    }
    const double err = std::abs(gi - wi) / (1 + std::abs(wi));
    worst = std::max(worst, std::isnan(err) ? std::numeric_limits<double>::infinity() : err);
    if (!(err <= oracle_tol<T>)) {
      INFO("element " << i << ": got " << gi << ", want " << wi);
      CHECK(err <= oracle_tol<T>);
    }
  }
  return worst;
}

void compare_int(const em::tensor<std::int64_t>& got, const em::tensor<std::int64_t>& want) {
  REQUIRE(got.shape() == want.shape());
  CHECK(got.device() == oracle_device);
  CHECK(values_of(got.to(em::cpu)) == values_of(want));
}

/// What one case produced: the main output and, for max along a dim, the indices.
template <class T>
struct outputs {
  em::tensor<T> out;
  std::optional<em::tensor<std::int64_t>> out1;
  std::string skipped;  // non-empty: ember cannot run this case yet (names what is missing)
};

bool keepdim_of(const value& args) {
  const value* k = args.find("keepdim");
  return k && !k->is_null() && k->as_bool();
}

/// Calls f(x) for dim null, f(x, dim, keepdim) for an int, f(x, shape, keepdim) for a list.
template <class T, class F>
em::tensor<T> by_dim(const em::tensor<T>& x, const value& args, F f) {
  const value& d = args.at("dim");
  if (d.is_null()) return f(x);
  if (d.is_array()) return f(x, em::shape(d.as_int_list()), keepdim_of(args));
  return f(x, d.as_int(), keepdim_of(args));
}

/// Rebuilds case `p` (e.g. "case3") of family `op` with ember.
template <class T>
outputs<T> run_case(const std::string& op, const value& meta, const et::st_file& f,
                    const std::string& p) {
  outputs<T> r;
  const value& args = meta.at("args");
  auto in = [&](int j) { return f.get<T>(p + ".in" + std::to_string(j)).to(oracle_device); };
  const em::tensor<T> x = in(0 + (op == "where" ? 1 : 0));
  // elementwise, binary (tensor or python-scalar second operand)
  if (op == "add" || op == "sub" || op == "mul" || op == "div") {
    if (const value* other = args.find("other")) {
      const T s = static_cast<T>(other->as_double());
      r.out = op == "add" ? em::tensor<T>(em::add(x, s)) : op == "sub" ? em::tensor<T>(em::sub(x, s))
            : op == "mul" ? em::tensor<T>(em::mul(x, s)) : em::tensor<T>(em::div(x, s));
    } else {
      const em::tensor<T> y = in(1);
      r.out = op == "add" ? em::tensor<T>(x + y) : op == "sub" ? em::tensor<T>(x - y)
            : op == "mul" ? em::tensor<T>(x * y) : em::tensor<T>(x / y);
    }
    return r;
  }
  if (op == "maximum") { r.out = em::maximum(x, in(1)); return r; }
  if (op == "minimum") { r.out = em::minimum(x, in(1)); return r; }
  if (op == "pow") { r.out = em::pow(x, static_cast<T>(args.at("exponent").as_double())); return r; }
  if (op == "where") {
    r.out = em::where(f.get<bool>(p + ".in0").to(oracle_device), x, in(2));
    return r;
  }
  if (op == "clamp") {
    constexpr T inf = std::numeric_limits<T>::infinity();
    const value &lo = args.at("min"), &hi = args.at("max");
    r.out = em::clamp(x, lo.is_null() ? -inf : static_cast<T>(lo.as_double()),
                      hi.is_null() ? inf : static_cast<T>(hi.as_double()));
    return r;
  }
  if (op == "gelu") {
    const value* a = args.find("approximate");
    const std::string mode = a ? a->as_string() : "none";
    if (mode == "tanh") r.out = em::gelu_tanh(x);
    else if (mode == "none") r.out = em::gelu(x);
    else r.skipped = "gelu(approximate='" + mode + "')";
    return r;
  }
  auto unary = [&](auto fn) {
    r.out = fn(x);
    return r;
  };
  if (op == "neg") return unary([](const auto& t) { return em::neg(t); });
  if (op == "exp") return unary([](const auto& t) { return em::exp(t); });
  if (op == "log") return unary([](const auto& t) { return em::log(t); });
  if (op == "sqrt") return unary([](const auto& t) { return em::sqrt(t); });
  if (op == "tanh") return unary([](const auto& t) { return em::tanh(t); });
  if (op == "sigmoid") return unary([](const auto& t) { return em::sigmoid(t); });
  if (op == "relu") return unary([](const auto& t) { return em::relu(t); });
  if (op == "silu") return unary([](const auto& t) { return em::silu(t); });
  if (op == "abs") return unary([](const auto& t) { return em::abs(t); });
  // reductions
  if (op == "sum") {
    r.out = by_dim(x, args, [](const auto&... a) { return em::sum(a...); });
    return r;
  }
  if (op == "mean") {
    r.out = by_dim(x, args, [](const auto&... a) { return em::mean(a...); });
    return r;
  }
  if (op == "max") {  // torch.max(x) -> amax; torch.max(x, dim) -> (amax, argmax)
    r.out = by_dim(x, args, [](const auto&... a) { return em::amax(a...); });
    if (!args.at("dim").is_null()) r.out1 = em::argmax(x, args.at("dim").as_int(), keepdim_of(args));
    return r;
  }
  if (op == "var") {
    const bool unbiased = args.at("unbiased").as_bool();
    r.out = by_dim(x, args, [unbiased](const auto& t, const auto&... a) {
      if constexpr (sizeof...(a) == 0) return em::var(t, unbiased);
      else return [&](const auto& dim, bool keep) { return em::var(t, dim, unbiased, keep); }(a...);
    });
    return r;
  }
  if (op == "softmax") { r.out = em::softmax(x, args.at("dim").as_int()); return r; }
  if (op == "log_softmax") { r.out = em::log_softmax(x, args.at("dim").as_int()); return r; }
  if (op == "logsumexp") {
    r.out = em::logsumexp(x, args.at("dim").as_int(), keepdim_of(args));
    return r;
  }
  // views (materialized with contiguous() where torch's expression does)
  if (op == "transpose") {
    const auto d = args.at("dims").as_int_list();
    r.out = x.transpose(d.at(0), d.at(1)).contiguous();
    return r;
  }
  if (op == "permute") { r.out = x.permute(em::shape(args.at("dims").as_int_list())); return r; }
  if (op == "reshape") {
    const value* pre = args.find("pre");
    if (pre && pre->as_string() != "transpose(0,1)") { r.skipped = "reshape pre-op " + pre->as_string(); return r; }
    r.out = (pre ? x.transpose(0, 1) : x).reshape(em::shape(args.at("shape").as_int_list()));
    return r;
  }
  if (op == "slice") {  // per dim: an int (select) or [start, stop, step] with nulls
    em::tensor<T> v = x;
    std::int64_t d = 0;
    for (const value& ix : args.at("index").arr) {
      if (ix.is_number()) {
        v = v.select(d, ix.as_int());
        continue;
      }
      const value &b = ix.arr.at(0), &e = ix.arr.at(1), &st = ix.arr.at(2);
      v = v.slice(d, b.is_null() ? 0 : b.as_int(),
                  e.is_null() ? std::numeric_limits<std::int64_t>::max() : e.as_int(),
                  st.is_null() ? 1 : st.as_int());
      ++d;
    }
    r.out = v;
    return r;
  }
  r.skipped = op;
  return r;
}

/// Runs every case of one family file; returns the worst float error.
template <class T>
double run_family(const std::string& family) {
  const et::st_file f = et::read_safetensors(oracle_file<T>(family));
  CHECK(f.meta("family") == family);
  CHECK(f.meta("dtype") == (std::is_same_v<T, double> ? "F64" : "F32"));
  const int cases = std::stoi(f.meta("num_cases"));
  REQUIRE(cases > 0);
  double worst = 0;
  for (int i = 0; i < cases; ++i) {
    const std::string p = "case" + std::to_string(i);
    const value meta = et::json::parse(f.meta(p));
    INFO(family << " " << p << ": " << meta.at("expr").as_string());
    const outputs<T> r = run_case<T>(meta.at("op").as_string(), meta, f, p);
    if (!r.skipped.empty()) {
      WARN("oracle " << family << " " << p << " skipped: ember has no " << r.skipped << " yet");
      continue;
    }
    for (const value& o : meta.at("outputs").arr) {
      const std::string name = o.at("name").as_string();
      INFO("output " << name);
      if (name == "out") {
        worst = std::max(worst, compare_float(r.out, f.get<T>(p + ".out")));
      } else if (name == "out1") {
        REQUIRE(r.out1.has_value());
        compare_int(*r.out1, f.get<std::int64_t>(p + ".out1"));
      } else {
        FAIL("unexpected output " << name);
      }
    }
  }
  if (std::getenv("EMBER_TEST_VERBOSE"))
    std::printf("oracle %-12s %s  %d cases  worst |got-want|/(1+|want|) = %.3g\n", family.c_str(),
                std::is_same_v<T, double> ? "f64" : "f32", cases, worst);
  return worst;
}

}  // namespace

#if defined(EMBER_ORACLE_CUDA)

// cuda_tests: every case on the GPU (skipped with a message when there is none)
TEMPLATE_TEST_CASE("oracle forward on cuda: every family matches PyTorch", "[oracle][cuda]", double,
                   float) {
  if (!em::cuda::is_available()) {
    WARN("no CUDA device: the oracle cases on cuda are skipped");
    return;
  }
  oracle_device = em::device::cuda(0);
  for (const auto* families : {&elementwise_families, &reduction_families, &view_families})
    for (const auto& family : *families) run_family<TestType>(family);
  oracle_device = em::cpu;
}

#else

TEMPLATE_TEST_CASE("oracle forward on the emulated device: every family matches PyTorch",
                   "[oracle][dispatch]", double, float) {
  const ember_test::emulated_device dev_guard;
  oracle_device = em::device::cuda(0);
  for (const auto* families : {&elementwise_families, &reduction_families, &view_families})
    for (const auto& family : *families) run_family<TestType>(family);
  oracle_device = em::cpu;
}

TEST_CASE("test safetensors reader: golden format file", "[oracle][safetensors]") {
  const et::st_file f = et::read_safetensors(et::test_data("oracle/format/all_dtypes.safetensors"));
  CHECK(f.meta("purpose") == "reader conformance");
  CHECK(f.meta("k") == "v");
  CHECK(f.tensors.size() == 10);
  const auto f64 = values_of(f.get<double>("f64"));
  CHECK(f64 == std::vector<double>{1.5, -2.0, 1e-300, std::numeric_limits<double>::infinity()});
  const auto i64 = f.get<std::int64_t>("i64");
  CHECK(values_of(i64) == std::vector<std::int64_t>{-4611686018427387904LL, -1, 0, 4611686018427387904LL});
  CHECK(f.get<std::int64_t>("scalar_i64").dim() == 0);
  CHECK(f.get<std::int64_t>("scalar_i64").item() == 42);
  CHECK(f.get<float>("empty_f32").shape() == em::shape{0, 4});
  CHECK(values_of(f.get<float>("f32")) == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(f.get<float>("f32").shape() == em::shape{2, 3});
  CHECK(values_of(f.get<std::int32_t>("i32")) == std::vector<std::int32_t>{-7, 8});
  CHECK(f.get<float>("scalar_f32").item() == 3.5f);
  CHECK(f.at("f16").dtype == "F16");
  CHECK(f.at("f16").bytes.size() == 4);
  CHECK(values_of(f.get<bool>("bool")) == std::vector<bool>{true, false, true});
  CHECK(values_of(f.get<std::uint8_t>("u8")) == std::vector<std::uint8_t>{0, 1, 254, 255});
  CHECK_THROWS(f.get<double>("f32"));  // dtype mismatch
  CHECK_THROWS(f.at("missing"));
}

TEST_CASE("test safetensors reader: rejects malformed files", "[oracle][safetensors]") {
  auto file = [](std::string header, std::vector<unsigned char> data) {
    while ((header.size() + 8) % 8) header += ' ';
    std::vector<unsigned char> b(8);
    for (int k = 0; k < 8; ++k) b[static_cast<std::size_t>(k)] = static_cast<unsigned char>(header.size() >> (8 * k));
    b.insert(b.end(), header.begin(), header.end());
    b.insert(b.end(), data.begin(), data.end());
    return b;
  };
  const std::vector<unsigned char> eight(8, 0);
  const auto good = file(R"({"__metadata__":{"a":"x\"y\u00e9"},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight);
  const et::st_file ok = et::parse_safetensors(good, "good");
  CHECK(ok.meta("a") == "x\"y\xc3\xa9");
  CHECK(ok.at("t").shape == std::vector<std::int64_t>{2});
  auto bad = [&](std::string header, std::vector<unsigned char> data) {
    CHECK_THROWS(et::parse_safetensors(file(std::move(header), std::move(data)), "bad"));
  };
  bad(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight);   // size vs shape
  bad(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight);  // past the end
  bad(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight);   // trailing bytes
  bad(R"({"t":{"dtype":"X9","shape":[2],"data_offsets":[0,8]}})", eight);    // unknown dtype
  bad(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight);
  bad(R"({"t":{"dtype":"BOOL","shape":[8],"data_offsets":[0,8]}})", std::vector<unsigned char>(8, 2));
  bad(R"({"__metadata__":{"a":1}})", {});
  bad(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", eight);    // unterminated JSON
  CHECK_THROWS(et::parse_safetensors({1, 2, 3}, "short"));
  auto huge = good;
  huge[0] = 0xff;
  huge[1] = 0xff;  // header length beyond the file
  CHECK_THROWS(et::parse_safetensors(huge, "huge"));
}

TEMPLATE_TEST_CASE("oracle forward: elementwise families match PyTorch", "[oracle]", double, float) {
  for (const auto& family : elementwise_families) run_family<TestType>(family);
}

TEMPLATE_TEST_CASE("oracle forward: reductions and softmax match PyTorch", "[oracle]", double, float) {
  for (const auto& family : reduction_families) run_family<TestType>(family);
}

TEMPLATE_TEST_CASE("oracle forward: views match PyTorch", "[oracle]", double, float) {
  for (const auto& family : view_families) run_family<TestType>(family);
}

#endif  // EMBER_ORACLE_CUDA
