// Tests of include/ember/jit/text.hpp: the graph text form (exact expected text), round trips,
// hostile input to parse_graph (malformed, truncated, mutated, deeply nested) and validate.
#include <ember/jit/graph.hpp>
#include <ember/jit/text.hpp>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace em = ember;
namespace jit = ember::jit;
using em::dtype;
using em::op;
using ints = std::vector<std::int64_t>;

namespace {

jit::node nd(op kind, std::vector<int> inputs, std::vector<int> outputs, jit::attributes attrs = {},
             std::shared_ptr<jit::graph> body = nullptr) {
  jit::node n;
  n.kind = kind;
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.attrs = std::move(attrs);
  n.body = std::move(body);
  return n;
}

int add_const(jit::graph& g, dtype t, ints shape, std::string name) {
  const int id = g.add_value(t, std::move(shape), std::move(name));
  g.constants[id] = em::any_tensor{};
  return id;
}

bool same_attr(const jit::attribute& a, const jit::attribute& b) {
  if (a.index() != b.index()) return false;
  if (const double* x = std::get_if<double>(&a)) {
    const double y = std::get<double>(b);
    if (std::isnan(*x)) return std::isnan(y);
    return *x == y && std::signbit(*x) == std::signbit(y);
  }
  return a == b;
}

// Structural equality (ids, names, dtypes, shapes, nodes, attributes, bodies, constants).
void check_same(const jit::graph& a, const jit::graph& b) {
  REQUIRE(a.values.size() == b.values.size());
  for (std::size_t i = 0; i < a.values.size(); ++i) {
    CHECK(a.values[i].name == b.values[i].name);
    CHECK(a.values[i].type == b.values[i].type);
    CHECK(a.values[i].shape == b.values[i].shape);
  }
  CHECK(a.inputs == b.inputs);
  CHECK(a.outputs == b.outputs);
  REQUIRE(a.constants.size() == b.constants.size());
  for (auto i = a.constants.begin(), j = b.constants.begin(); i != a.constants.end(); ++i, ++j) {
    CHECK(i->first == j->first);
    CHECK_FALSE(j->second.defined());
  }
  REQUIRE(a.nodes.size() == b.nodes.size());
  for (std::size_t k = 0; k < a.nodes.size(); ++k) {
    const jit::node& m = a.nodes[k];
    const jit::node& n = b.nodes[k];
    CHECK(m.kind == n.kind);
    CHECK(m.inputs == n.inputs);
    CHECK(m.outputs == n.outputs);
    REQUIRE(m.attrs.size() == n.attrs.size());
    for (auto i = m.attrs.begin(), j = n.attrs.begin(); i != m.attrs.end(); ++i, ++j) {
      CHECK(i->first == j->first);
      CHECK(same_attr(i->second, j->second));
    }
    REQUIRE((m.body == nullptr) == (n.body == nullptr));
    if (m.body) check_same(*m.body, *n.body);
  }
}

// The graph of the spec's example (ids in order of appearance, so a round trip keeps them).
jit::graph small_graph() {
  jit::graph g;
  const int x = g.add_value(dtype::f32, {jit::symbolic, 64}, "input0");
  g.inputs = {x};
  const int w = add_const(g, dtype::f32, {32, 64}, "fc1.weight");
  const int b = add_const(g, dtype::f32, {32}, "fc1.bias");
  const int rm = add_const(g, dtype::f32, {32}, "bn.running_mean");
  const int rv = add_const(g, dtype::f32, {32}, "bn.running_var");
  const int bw = add_const(g, dtype::f32, {32}, "bn.weight");
  const int bb = add_const(g, dtype::f32, {32}, "bn.bias");
  const int h0 = g.add_value(dtype::f32, {jit::symbolic, 32});
  g.nodes.push_back(nd(op::linear, {x, w, b}, {h0}));
  const int h1 = g.add_value(dtype::f32, {jit::symbolic, 32});
  g.nodes.push_back(nd(op::batch_norm, {h0, rm, rv, bw, bb}, {h1}, {{"eps", 1e-5}, {"momentum", 0.1}, {"training", std::int64_t{0}}}));
  auto body = std::make_shared<jit::graph>();
  const int a = body->add_value(dtype::f32, {jit::symbolic, 32}, "a");
  const int c = body->add_value(dtype::f32, {jit::symbolic, 32}, "b");
  body->inputs = {a};
  body->nodes.push_back(nd(op::relu, {a}, {c}));
  body->outputs = {c};
  const int h2 = g.add_value(dtype::f32, {jit::symbolic, 32});
  g.nodes.push_back(nd(op::fused, {h1}, {h2}, {}, body));
  const int y = g.add_value(dtype::f32, {});
  const int idx = g.add_value(dtype::i64, {});
  g.nodes.push_back(
      nd(op::custom, {h2}, {y, idx}, {{"name", std::string("topk")}}));
  g.outputs = {y};
  return g;
}

const char* const small_text =
    "graph(%input0 : f32[N, 64]) {\n"
    "  const %fc1.weight : f32[32, 64]\n"
    "  const %fc1.bias : f32[32]\n"
    "  const %bn.running_mean : f32[32]\n"
    "  const %bn.running_var : f32[32]\n"
    "  const %bn.weight : f32[32]\n"
    "  const %bn.bias : f32[32]\n"
    "  %0 : f32[N, 32] = linear(%input0, %fc1.weight, %fc1.bias)\n"
    "  %1 : f32[N, 32] = batch_norm(%0, %bn.running_mean, %bn.running_var, %bn.weight, %bn.bias) "
    "{eps = 1.0000000000000001e-05, momentum = 0.10000000000000001, training = 0}\n"
    "  %2 : f32[N, 32] = fused(%1) graph(%a : f32[N, 32]) {\n"
    "    %b : f32[N, 32] = relu(%a)\n"
    "    return (%b)\n"
    "  }\n"
    "  %3 : f32[], %4 : i64[] = custom(%2) {name = \"topk\"}\n"
    "  return (%3)\n"
    "}\n";

const std::vector<double>& tricky_doubles() {
  using lim = std::numeric_limits<double>;
  static const std::vector<double> v = {
      1e-5, 0.1, 1.0, -2.5, 0.0, -0.0, 1e300, -1e300, 1e16, 123456789012345678.0, 3.0e-310,
      lim::infinity(), -lim::infinity(), lim::quiet_NaN(), lim::denorm_min(), lim::min(),
      lim::max(), lim::lowest(), lim::epsilon(), 1.0 / 3.0};
  return v;
}

// A graph that uses every corner of the grammar: all dtypes, quoted names, every attribute
// alternative, quoted keys, a zero-output node, a multi-output node, nested fused bodies.
jit::graph rich_graph() {
  jit::graph g;
  const int x = g.add_value(dtype::f32, {jit::symbolic, 3, 8, 8}, "x");
  const int sp = g.add_value(dtype::f64, {0, jit::symbolic}, "weird name");
  const int q = g.add_value(dtype::i32, {std::int64_t{1} << 40}, "a\"b\\c");
  const int ctl = g.add_value(dtype::i64, {}, std::string("tab\tnl\nnul") + '\0' + "\x01" "del\x7f" "cr\r");
  const int utf = g.add_value(dtype::u8, {1}, "caf\xc3\xa9");
  const int bo = g.add_value(dtype::boolean, {2, 2}, "layers.0:mask_1");
  const int bf = g.add_value(dtype::bf16, {1}, "7");
  const int hf = g.add_value(dtype::f16, {1}, "0042");
  const int i8 = g.add_value(dtype::i8, {1}, "%");
  const int i16 = g.add_value(dtype::i16, {1}, "-1");
  g.inputs = {x, sp, q, ctl, utf, bo, bf, hf, i8, i16};
  g.values.push_back({"", dtype::f32, {5}});  // an empty name prints as %""
  const int empty = static_cast<int>(g.values.size()) - 1;
  g.constants[empty] = {};
  const int w = add_const(g, dtype::f32, {8, 3, 3, 3}, "conv.weight");

  jit::attributes all;
  all["i_zero"] = std::int64_t{0};
  all["i_neg"] = std::int64_t{-5};
  all["i_min"] = std::numeric_limits<std::int64_t>::min();
  all["i_max"] = std::numeric_limits<std::int64_t>::max();
  all["l_empty"] = ints{};
  all["l"] = ints{-1, 2, 3, std::numeric_limits<std::int64_t>::min()};
  all["s"] = std::string("quote\" backslash\\ nl\n tab\t ctl\x02 utf\xc3\xa9");
  all["s_empty"] = std::string();
  all["weird key"] = std::string("k");
  all["9lives"] = std::int64_t{9};
  all[""] = std::int64_t{1};
  for (std::size_t i = 0; i < tricky_doubles().size(); ++i) all["d" + std::to_string(i)] = tricky_doubles()[i];
  const int y = g.add_value(dtype::f32, {jit::symbolic, 8, 6, 6});
  g.nodes.push_back(nd(op::custom, {x, w, sp, empty}, {y}, all));
  g.nodes.push_back(nd(op::custom, {y}, {}, {{"name", std::string("sink")}}));

  auto inner = std::make_shared<jit::graph>();
  const int ia = inner->add_value(dtype::f32, {}, "0");  // names are per graph
  const int ib = inner->add_value(dtype::f32, {}, "1");
  inner->inputs = {ia};
  inner->nodes.push_back(nd(op::exp, {ia}, {ib}));
  inner->outputs = {ib};
  auto body = std::make_shared<jit::graph>();
  const int ba = body->add_value(dtype::f32, {jit::symbolic, 8, 6, 6}, "a");
  const int bs = body->add_value(dtype::f32, {}, "s");
  body->inputs = {ba, bs};
  const int bk = add_const(*body, dtype::f32, {}, "k");
  const int bc = body->add_value(dtype::f32, {});
  body->nodes.push_back(nd(op::scalar, {}, {bc}, {{"value", 0.5}}));
  const int bd = body->add_value(dtype::f32, {jit::symbolic, 8, 6, 6});
  body->nodes.push_back(nd(op::mul, {ba, bk}, {bd}));
  const int be = body->add_value(dtype::f32, {});
  body->nodes.push_back(nd(op::fused, {bs}, {be}, {}, inner));
  body->outputs = {bd, be, bc};
  const int s = g.add_value(dtype::f32, {});
  g.nodes.push_back(nd(op::scalar, {}, {s}, {{"value", -0.0}}));
  const int f1 = g.add_value(dtype::f32, {jit::symbolic, 8, 6, 6});
  const int f2 = g.add_value(dtype::f32, {});
  const int f3 = g.add_value(dtype::f32, {}, "named out");
  g.nodes.push_back(nd(op::fused, {y, s}, {f1, f2, f3}, {{"tile", std::int64_t{64}}}, body));
  g.outputs = {f1, f3, x, f1};
  return g;
}

std::string error_of(std::string_view text) {
  try {
    jit::parse_graph(text);
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::value);
    return e.what();
  }
  return "<parsed>";
}

}  // namespace

TEST_CASE("the text form of a small graph is exactly the spec's", "[jit][text]") {
  const jit::graph g = small_graph();
  CHECK(jit::to_string(g) == small_text);
  std::ostringstream os;
  os << std::hex << std::showpos << g;  // the caller's stream flags do not leak into the text
  CHECK(os.str() == small_text);
  const jit::graph p = jit::parse_graph(small_text);
  check_same(g, p);
  CHECK(jit::to_string(p) == small_text);
  CHECK(p.next_number() == 5);
  CHECK_NOTHROW(jit::validate(g));
  CHECK_NOTHROW(jit::validate(p));
}

TEST_CASE("a graph using every corner of the grammar round-trips", "[jit][text]") {
  const jit::graph g = rich_graph();
  const std::string text = jit::to_string(g);
  INFO(text);
  CHECK(text.find("%\"weird name\" : f64[0, N]") != std::string::npos);
  CHECK(text.find("%\"a\\\"b\\\\c\" : i32[1099511627776]") != std::string::npos);
  CHECK(text.find("%\"tab\\tnl\\nnul\\x00\\x01del\\x7fcr\\r\" : i64[]") != std::string::npos);
  CHECK(text.find("%layers.0:mask_1 : bool[2, 2]") != std::string::npos);
  CHECK(text.find("%\"%\" : i8[1], %\"-1\" : i16[1]") != std::string::npos);
  CHECK(text.find("const %\"\" : f32[5]") != std::string::npos);
  CHECK(text.find("\"\" = 1, \"9lives\" = 9, ") != std::string::npos);
  CHECK(text.find("i_max = 9223372036854775807, i_min = -9223372036854775808, i_neg = -5, i_zero = 0, ") !=
        std::string::npos);
  CHECK(text.find("l = [-1, 2, 3, -9223372036854775808], l_empty = [], ") != std::string::npos);
  CHECK(text.find("d13 = nan, d14 = 4.9406564584124654e-324, ") != std::string::npos);
  CHECK(text.find("s = \"quote\\\" backslash\\\\ nl\\n tab\\t ctl\\x02 utf\xc3\xa9\"") != std::string::npos);
  CHECK(text.find("\"weird key\" = \"k\"") != std::string::npos);
  CHECK(text.find("  custom(%0) {name = \"sink\"}\n") != std::string::npos);
  CHECK(text.find("%1 : f32[] = scalar() {value = -0.0}") != std::string::npos);
  CHECK(text.find("      %1 : f32[] = exp(%0)\n      return (%1)\n    }\n") != std::string::npos);
  CHECK(text.find("return (%2, %\"named out\", %x, %2)\n}\n") != std::string::npos);
  const jit::graph p = jit::parse_graph(text);
  check_same(g, p);
  CHECK(jit::to_string(p) == text);
  CHECK(p.next_number() == 43);  // "0042" counts as 42; "-1" is not a number
  CHECK(p.nodes[3].body->next_number() == 3);
  CHECK(p.nodes[3].body->nodes[2].body->next_number() == 2);
}

TEST_CASE("reals print round-trippably and never as integers", "[jit][text]") {
  using jit::detail::format_real;
  CHECK(format_real(1e-5) == "1.0000000000000001e-05");
  CHECK(format_real(0.1) == "0.10000000000000001");
  CHECK(format_real(1.0) == "1.0");
  CHECK(format_real(-0.0) == "-0.0");
  CHECK(format_real(1e16) == "10000000000000000.0");
  CHECK(format_real(1e300) == "1.0000000000000001e+300");
  CHECK(format_real(std::numeric_limits<double>::infinity()) == "inf");
  CHECK(format_real(-std::numeric_limits<double>::infinity()) == "-inf");
  CHECK(format_real(std::numeric_limits<double>::quiet_NaN()) == "nan");
  CHECK(format_real(-std::numeric_limits<double>::quiet_NaN()) == "nan");
  for (double d : tricky_doubles()) {
    jit::graph g;
    const int v = g.add_value(dtype::f32, {});
    g.nodes.push_back(nd(op::scalar, {}, {v}, {{"value", d}, {"n", std::int64_t{1}}}));
    g.outputs = {v};
    const jit::graph p = jit::parse_graph(jit::to_string(g));
    INFO(jit::to_string(g));
    const double r = std::get<double>(p.nodes[0].attrs.at("value"));
    if (std::isnan(d)) CHECK(std::isnan(r));
    else CHECK(std::memcmp(&d, &r, sizeof d) == 0);
    CHECK(std::holds_alternative<std::int64_t>(p.nodes[0].attrs.at("n")));
  }
  // integer-valued reals and integers stay distinct alternatives
  const jit::graph p = jit::parse_graph(
      "graph() { %0 : f32[] = scalar() {a = 2, b = 2.0, c = 2e0, d = -3, e = [-3], f = \"2\"} return (%0) }");
  const auto& a = p.nodes[0].attrs;
  CHECK(a.at("a").index() == 0);
  CHECK(a.at("b").index() == 1);
  CHECK(a.at("c").index() == 1);
  CHECK(std::get<std::int64_t>(a.at("d")) == -3);
  CHECK(std::get<ints>(a.at("e")) == ints{-3});
  CHECK(std::get<std::string>(a.at("f")) == "2");
}

TEST_CASE("every op name parses back to its op", "[jit][text]") {
  jit::graph g;
  for (op o : em::all_ops) {
    const int v = g.add_value(dtype::f32, {1});
    g.nodes.push_back(nd(o, {}, {v}));
  }
  const jit::graph p = jit::parse_graph(jit::to_string(g));
  REQUIRE(p.nodes.size() == std::size(em::all_ops));
  for (std::size_t i = 0; i < p.nodes.size(); ++i) CHECK(p.nodes[i].kind == em::all_ops[i]);
}

TEST_CASE("parse_graph accepts any whitespace between tokens and sets next_number", "[jit][text]") {
  const jit::graph p = jit::parse_graph(
      "\n\t graph(%x :f32[ N ,2 ],%7 : i64[-1])\r\n{const %c : f32[]\n%12 : f32[N, 2]=add(%x,%c){alpha=1}"
      "%y : f32[N, 2] = relu ( %12 ) return(%y,%7)}\n\n");
  CHECK(p.values.size() == 5);
  CHECK(p.values[1].shape == ints{jit::symbolic});
  CHECK(p.constants.count(2) == 1);
  CHECK(p.next_number() == 13);
  jit::graph q = p;
  CHECK(q.values[q.add_value(dtype::f32, {})].name == "13");
  CHECK(jit::to_string(p) ==
        "graph(%x : f32[N, 2], %7 : i64[N]) {\n"
        "  const %c : f32[]\n"
        "  %12 : f32[N, 2] = add(%x, %c) {alpha = 1}\n"
        "  %y : f32[N, 2] = relu(%12)\n"
        "  return (%y, %7)\n"
        "}\n");
  CHECK(jit::parse_graph("graph() { return () }").next_number() == 0);
}

TEST_CASE("malformed text is an ember::error naming line and column", "[jit][text]") {
  struct bad_case {
    const char* text;
    const char* says;
  };
  const bad_case cases[] = {
      {"", "line 1, column 1: expected 'graph'"},
      {"graph", "expected '('"},
      {"graph(", "expected a value"},
      {"grph() { return () }", "expected 'graph'"},
      {"graph() {\n}", "line 2, column 1: expected a node, 'const' or 'return' (missing 'return')"},
      {"graph() {\n  const %c : f32[]\n", "line 3, column 1: expected a node"},
      {"graph() { return () } extra", "expected the end of the text"},
      {"graph() { return () } }", "expected the end of the text"},
      {"graph(%x : f33[2]) { return (%x) }", "unknown dtype \"f33\""},
      {"graph(%x : [2]) { return (%x) }", "expected a dtype"},
      {"graph(%x : f32[-2]) { return (%x) }", "extent -2 out of range"},
      {"graph(%x : f32[1099511627777]) { return (%x) }", "out of range"},
      {"graph(%x : f32[99999999999999999999]) { return (%x) }", "integer out of range"},
      {"graph(%x : f32[M]) { return (%x) }", "expected an extent"},
      {"graph(%x : f32[2.5]) { return (%x) }", "expected ',' or ']'"},
      {"graph(%x : f32[2) { return (%x) }", "expected ',' or ']'"},
      {"graph(%x : f32[2]) {\n  %y : f32[2] = frobnicate(%x)\n  return (%y)\n}",
       "line 2, column 17: unknown op \"frobnicate\""},
      {"graph(%x : f32[2]) { %y : f32[2] = (%x) return (%y) }", "expected an op name"},
      {"graph(%x : f32[2]) { %y : f32[2] = relu(%z) return (%y) }", "use of undefined value %\"z\""},
      {"graph(%x : f32[2]) { %y : f32[2] = relu(%y) return (%y) }", "undefined value %\"y\""},
      {"graph(%x : f32[2]) { return (%q) }", "undefined value"},
      {"graph(%x : f32[2], %x : f32[2]) { return (%x) }", "value %\"x\" defined twice"},
      {"graph(%x : f32[2]) { const %x : f32[] return (%x) }", "defined twice"},
      {"graph(%x : f32[2]) { %x : f32[2] = relu(%x) return (%x) }", "defined twice"},
      {"graph(%x : f32[2]) { %y : f32[], %y : f32[] = custom(%x) return (%y) }", "defined twice"},
      {"graph(%x : f32[2]) { %y : f32[2] relu(%x) return (%y) }", "expected ',' or '='"},
      {"graph(%x f32[2]) { return (%x) }", "expected ':'"},
      {"graph(%x : f32[2]) { %y : f32[2] = relu(%x return (%y) }", "expected ',' or ')'"},
      {"graph(%x : f32[2]) { %y : f32[2] = relu(%x) {a = 1, a = 2} return (%y) }",
       "duplicate attribute \"a\""},
      {"graph() { %y : f32[] = scalar() {a = 1.2.3} return (%y) }", "bad real number \"1.2.3\""},
      {"graph() { %y : f32[] = scalar() {a = 1e999} return (%y) }", "real number out of range"},
      {"graph() { %y : f32[] = scalar() {a = --1} return (%y) }", "bad integer"},
      {"graph() { %y : f32[] = scalar() {a = 99999999999999999999} return (%y) }", "integer out of range"},
      {"graph() { %y : f32[] = scalar() {a = [1, 2.5]} return (%y) }", "expected ',' or ']'"},
      {"graph() { %y : f32[] = scalar() {a = [1, ]} return (%y) }", "expected an integer"},
      {"graph() { %y : f32[] = scalar() {a = -nan} return (%y) }", "expected an attribute value"},
      {"graph() { %y : f32[] = scalar() {a = infinity} return (%y) }", "expected an attribute value"},
      {"graph() { %y : f32[] = scalar() {a = } return (%y) }", "expected an attribute value"},
      {"graph() { %y : f32[] = scalar() {a = 0x10} return (%y) }", "expected ',' or '}'"},
      {"graph() { %y : f32[] = scalar() {a = 1e} return (%y) }", "bad real number"},
      {"graph() { %y : f32[] = scalar() {= 1} return (%y) }", "expected an attribute name"},
      {"graph() { %y : f32[] = scalar() {1a = 1} return (%y) }", "expected an attribute name"},
      {"graph() { %y : f32[] = scalar() {a 1} return (%y) }", "expected '='"},
      {"graph() { %y : f32[] = scalar() {a = \"abc} return (%y) }", "unterminated string"},
      {"graph() { %y : f32[] = scalar() {a = \"\\q\"} return (%y) }", "unknown escape \"\\\\q\""},
      {"graph() { %y : f32[] = scalar() {a = \"\\x4g\"} return (%y) }", "two hex digits"},
      {"graph() { %y : f32[] = scalar() {a = \"\\x-1\"} return (%y) }", "two hex digits"},
      {"graph() { %y : f32[] = scalar() {a = \"\\x4\"} return (%y) }", "two hex digits"},
      {"graph() { %y : f32[] = scalar() {a = \"a\nb\"} return (%y) }", "control character"},
      {"graph() { %y : f32[] = scalar() {a = \"\\", "unterminated string"},
      {"graph(% : f32[]) { return () }", "expected a value name after '%'"},
      {"graph(%\"x : f32[]) { return () }", "unterminated string"},
      {"graph(x : f32[]) { return () }", "expected a value ('%name')"},
      {"graph() { return }", "expected '(' after 'return'"},
      {"graph() { return (", "expected a value"},
      {"graph() { return () ", "expected '}'"},
      {"graph(%x : f32[2]) { %y : f32[2] = fused(%x) graph(%a : f32[2]) { return (%x) } return (%y) }",
       "undefined value %\"x\""},  // a body sees only its own values
      {"graph(%x : f32[2]) { %y : f32[2] = fused(%x) graph(%a : f32[2]) { return (%a) return (%y) }",
       "expected '}'"},
      {"graph(%x : f32[2]) { %y : f32[2] = fused(%x) graph { return (%a) } return (%y) }",
       "expected '(' after 'graph'"},
      {"graph() {\n  %y : f32[] = relu\x01()\n  return (%y)\n}", "line 2, column 20: expected '('"},
  };
  for (const bad_case& c : cases) {
    INFO(c.text);
    CHECK_THROWS_AS(jit::parse_graph(c.text), em::error);
    const std::string msg = error_of(c.text);
    CHECK(msg.find("[ember.value] jit::parse_graph: line ") == 0);
    CHECK(msg.find(c.says) != std::string::npos);
    if (msg.find(c.says) == std::string::npos) WARN(msg);
  }
  const std::string with_nul("graph() {\0 return () }", 22);
  CHECK_THROWS_AS(jit::parse_graph(with_nul), em::error);
  CHECK(error_of(with_nul).find("line 1, column 10") != std::string::npos);
  // a long unknown op name is cut in the message
  const std::string long_name = "graph() { " + std::string(10000, 'z') + "() return () }";
  CHECK(error_of(long_name).size() < 200);
}

TEST_CASE("fused bodies nest at most 16 deep; deeper text is an error, not a stack overflow",
          "[jit][text]") {
  auto nested = [](int levels) {
    std::string s = "graph(%x : f32[]) {\n";
    for (int i = 0; i < levels; ++i) s += "%y : f32[] = fused(%x) graph(%x : f32[]) {\n";
    s += "return (%x)\n}\n";
    for (int i = 0; i < levels; ++i) s += "return (%y)\n}\n";
    return s;
  };
  const jit::graph ok = jit::parse_graph(nested(16));
  CHECK(jit::parse_graph(jit::to_string(ok)).nodes.size() == 1);
  const std::string too_deep = error_of(nested(17));
  CHECK(too_deep.find("nested deeper than 16 levels") != std::string::npos);
  CHECK(too_deep.find("line 18,") != std::string::npos);
  CHECK_THROWS_AS(jit::parse_graph(nested(100000)), em::error);
}

TEST_CASE("every prefix of a valid text throws or parses; mutations never crash", "[jit][text]") {
  const std::string text = jit::to_string(rich_graph());
  std::size_t parsed = 0;
  for (std::size_t n = 0; n <= text.size(); ++n) {
    try {
      jit::parse_graph(std::string_view(text).substr(0, n));
      ++parsed;
    } catch (const em::error& e) {
      CHECK(std::string(e.what()).find("jit::parse_graph: line ") != std::string::npos);
    }
  }
  CHECK(parsed == 2);  // the whole text, and the text without its final newline

  // Random edits: whatever parses must print to a text that parses to the same text, and
  // validate either accepts it or throws ember::error.
  const std::string small = small_text;
  const char alphabet[] = "%(){}[],:=\"\\-.eN0129 \n\tgraphreturnconstrelufused\x01\xff";
  std::uint64_t state = 0x9e3779b97f4a7c15ull;
  auto rnd = [&](std::uint64_t n) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return static_cast<std::size_t>(state % n);
  };
  std::size_t ok = 0, failed = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    std::string s = trial % 2 ? text : small;
    for (int k = 0, edits = 1 + static_cast<int>(rnd(3)); k < edits; ++k) {
      const std::size_t at = rnd(s.size() + 1);
      const char c = alphabet[rnd(sizeof alphabet - 1)];
      switch (rnd(3)) {
        case 0: if (at < s.size()) s[at] = c; break;
        case 1: s.insert(at, 1, c); break;
        default: if (at < s.size()) s.erase(at, 1 + rnd(8)); break;
      }
    }
    try {
      const jit::graph g = jit::parse_graph(s);
      const std::string t = jit::to_string(g);
      CHECK(jit::to_string(jit::parse_graph(t)) == t);
      try {
        jit::validate(g);
      } catch (const em::error& e) {
        CHECK(std::string(e.what()).find("jit::validate: ") != std::string::npos);
      }
      ++ok;
    } catch (const em::error& e) {
      CHECK(std::string(e.what()).find("jit::parse_graph: line ") != std::string::npos);
      ++failed;
    }
  }
  CHECK(ok > 0);
  CHECK(failed > 0);
}

namespace {

// A valid graph touching the attribute rules: conv2d, softmax, reshape, sdpa with a mask, cat.
jit::graph conv_graph() {
  jit::graph g;
  const int x = g.add_value(dtype::f32, {jit::symbolic, 3, 8, 8}, "x");
  g.inputs = {x};
  const int w = add_const(g, dtype::f32, {4, 3, 3, 3}, "w");
  const int b = add_const(g, dtype::f32, {4}, "b");
  const int c = g.add_value(dtype::f32, {jit::symbolic, 4, 6, 6});
  g.nodes.push_back(nd(op::conv2d, {x, w, b}, {c}, {{"stride", ints{1, 1}}, {"padding", ints{0, 0}},
                               {"dilation", ints{1, 1}}, {"groups", std::int64_t{1}}}));
  const int r = g.add_value(dtype::f32, {jit::symbolic, 144});
  g.nodes.push_back(nd(op::reshape, {c}, {r}, {{"shape", ints{-1, 144}}}));
  const int s = g.add_value(dtype::f32, {jit::symbolic, 144});
  g.nodes.push_back(nd(op::softmax, {r}, {s}, {{"dim", std::int64_t{1}}}));
  const int q = g.add_value(dtype::f32, {jit::symbolic, 1, 144});
  g.nodes.push_back(nd(op::reshape, {s}, {q}, {{"shape", ints{0, 1, 144}}}));
  const int mask = add_const(g, dtype::boolean, {1, 1}, "mask");
  const int a = g.add_value(dtype::f32, {jit::symbolic, 1, 144});
  g.nodes.push_back(nd(op::scaled_dot_product_attention, {q, q, q, mask}, {a}, {{"is_causal", std::int64_t{0}}, {"scale", 0.125}}));
  const int k = g.add_value(dtype::f32, {jit::symbolic, 2, 144});
  g.nodes.push_back(nd(op::cat, {a, q}, {k}, {{"dim", std::int64_t{1}}}));
  g.outputs = {k, s};
  return g;
}

std::string validate_error(const jit::graph& g) {
  try {
    jit::validate(g);
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::value);
    return e.what();
  }
  return "<valid>";
}

}  // namespace

TEST_CASE("validate accepts well-formed graphs", "[jit][validate]") {
  CHECK_NOTHROW(jit::validate(small_graph()));
  CHECK_NOTHROW(jit::validate(conv_graph()));
  CHECK_NOTHROW(jit::validate(jit::parse_graph(jit::to_string(conv_graph()))));
  CHECK_NOTHROW(jit::validate(jit::graph{}));
  jit::graph g = conv_graph();
  g.nodes[4].attrs.erase("scale");  // optional
  g.nodes[4].inputs.pop_back();     // the mask is optional
  g.nodes[2].attrs["extra"] = std::string("ignored");
  CHECK_NOTHROW(jit::validate(g));
}

TEST_CASE("validate rejects each kind of breakage", "[jit][validate]") {
  struct breakage {
    const char* what;
    void (*edit)(jit::graph&);
    const char* says;
  };
  const breakage cases[] = {
      {"input id out of range", [](jit::graph& g) { g.nodes[1].inputs[0] = 99; },
       "node 1 (reshape): input id 99 out of range"},
      {"negative id", [](jit::graph& g) { g.nodes[0].inputs[2] = -1; }, "node 0 (conv2d): input id -1"},
      {"graph input out of range", [](jit::graph& g) { g.inputs.push_back(1000); }, "graph input: value id 1000"},
      {"graph output out of range", [](jit::graph& g) { g.outputs.push_back(-3); }, "graph output: value id -3"},
      {"constant out of range", [](jit::graph& g) { g.constants[77] = {}; }, "constant: value id 77"},
      {"node output out of range", [](jit::graph& g) { g.nodes[2].outputs[0] = 50; }, "node 2 (softmax): output: value id 50"},
      {"use before definition", [](jit::graph& g) { std::swap(g.nodes[1], g.nodes[2]); },
       "node 1 (softmax): input %1 is used before it is defined"},
      {"defined twice", [](jit::graph& g) { g.nodes[1].outputs[0] = g.nodes[0].outputs[0]; },
       "node 1 (reshape): output: value %0 defined twice"},
      {"input also a constant", [](jit::graph& g) { g.constants[g.inputs[0]] = {}; }, "constant: value %x defined twice"},
      {"never defined", [](jit::graph& g) { g.add_value(dtype::f32, {}); }, "value %6 is never defined"},
      {"output never defined", [](jit::graph& g) { g.outputs.push_back(g.add_value(dtype::f32, {})); },
       "graph output %6 is never defined"},
      {"duplicate name", [](jit::graph& g) { g.values[1].name = "x"; }, "two values are named %x"},
      {"invalid dtype", [](jit::graph& g) { g.values[0].type = static_cast<dtype>(200); }, "value %x has an invalid dtype"},
      {"bad extent", [](jit::graph& g) { g.values[0].shape[1] = -7; }, "value %x has extent -7"},
      {"too few inputs", [](jit::graph& g) { g.nodes[0].inputs.pop_back(); }, "node 0 (conv2d): 2 inputs, expected 3"},
      {"sdpa with 5 inputs", [](jit::graph& g) { g.nodes[4].inputs.push_back(g.inputs[0]); },
       "node 4 (scaled_dot_product_attention): 5 inputs, expected 3 to 4"},
      {"cat with no inputs", [](jit::graph& g) { g.nodes[5].inputs.clear(); }, "node 5 (cat): 0 inputs, expected 1 or more"},
      {"two outputs", [](jit::graph& g) { g.nodes[2].outputs.push_back(g.add_value(dtype::f32, {})); },
       "node 2 (softmax): 2 outputs, expected 1"},
      {"missing attribute", [](jit::graph& g) { g.nodes[2].attrs.clear(); }, "node 2 (softmax): missing attribute \"dim\" (an int)"},
      {"wrong alternative", [](jit::graph& g) { g.nodes[2].attrs["dim"] = 1.0; }, "attribute \"dim\" must be an int"},
      {"wrong list size", [](jit::graph& g) { g.nodes[0].attrs["stride"] = ints{1, 1, 1}; },
       "node 0 (conv2d): attribute \"stride\" must be an int list of length 2"},
      {"groups as list", [](jit::graph& g) { g.nodes[0].attrs["groups"] = ints{1}; }, "\"groups\" must be an int"},
      {"reshape shape as int", [](jit::graph& g) { g.nodes[1].attrs["shape"] = std::int64_t{3}; },
       "node 1 (reshape): attribute \"shape\" must be an int list"},
      {"optional attribute of the wrong type", [](jit::graph& g) { g.nodes[4].attrs["scale"] = std::int64_t{1}; },
       "\"scale\" must be a double"},
      {"custom without name", [](jit::graph& g) { g.nodes[2].kind = op::custom; }, "node 2 (custom): missing attribute \"name\""},
      {"custom name not a string", [](jit::graph& g) { g.nodes[2].kind = op::custom; g.nodes[2].attrs["name"] = std::int64_t{0}; },
       "\"name\" must be a string"},
      {"leaf node", [](jit::graph& g) { g.nodes[2].kind = op::leaf; }, "node 2 (leaf): not an op a graph may contain"},
      {"unknown op value", [](jit::graph& g) { g.nodes[2].kind = static_cast<op>(999); }, "node 2 (unknown)"},
      {"body on a non-fused node", [](jit::graph& g) { g.nodes[2].body = std::make_shared<jit::graph>(); },
       "node 2 (softmax): only fused nodes have a body"},
  };
  for (const breakage& c : cases) {
    INFO(c.what);
    jit::graph g = conv_graph();
    c.edit(g);
    CHECK_THROWS_AS(jit::validate(g), em::error);
    const std::string msg = validate_error(g);
    CHECK(msg.find("[ember.value] jit::validate: ") == 0);
    CHECK(msg.find(c.says) != std::string::npos);
    if (msg.find(c.says) == std::string::npos) WARN(msg);
  }
}

TEST_CASE("validate checks fused bodies", "[jit][validate]") {
  struct breakage {
    const char* what;
    void (*edit)(jit::node&);
    const char* says;
  };
  const breakage cases[] = {
      {"no body", [](jit::node& n) { n.body = nullptr; }, "node 2 (fused): no body"},
      {"input count", [](jit::node& n) { n.body->inputs.pop_back(); },
       "node 2 (fused): the body has 0 inputs and 1 outputs, the node 1 and 1"},
      {"output count", [](jit::node& n) { n.body->outputs.push_back(0); }, "the body has 1 inputs and 2 outputs"},
      {"no outputs", [](jit::node& n) { n.outputs.clear(); n.body->outputs.clear(); },
       "node 2 (fused): 0 outputs, expected 1 or more"},
      {"non-elementwise body", [](jit::node& n) { n.body->nodes[0].kind = op::softmax; },
       "node 2 (fused): body node 0 (softmax) is not elementwise"},
      {"nested fused", [](jit::node& n) { n.body->nodes[0].kind = op::fused; }, "body node 0 (fused) is not elementwise"},
      {"broken body", [](jit::node& n) { n.body->nodes[0].inputs = {5}; },
       "jit::validate: node 2 (fused) body: node 0 (relu): input id 5 out of range"},
      {"body arity", [](jit::node& n) { n.body->nodes[0].inputs.push_back(0); },
       "node 2 (fused) body: node 0 (relu): 2 inputs, expected 1"},
  };
  for (const breakage& c : cases) {
    INFO(c.what);
    jit::graph g = small_graph();
    g.nodes[2].body = std::make_shared<jit::graph>(*g.nodes[2].body);  // not shared with others
    c.edit(g.nodes[2]);
    const std::string msg = validate_error(g);
    CHECK(msg.find("[ember.value] jit::validate: ") == 0);
    CHECK(msg.find(c.says) != std::string::npos);
    if (msg.find(c.says) == std::string::npos) WARN(msg);
  }
  // a body may hold scalar nodes and several outputs
  jit::graph g = small_graph();
  auto& body = *g.nodes[2].body;
  const int s = body.add_value(dtype::f32, {});
  body.nodes.push_back(nd(op::scalar, {}, {s}, {{"value", 2.0}}));
  body.outputs.push_back(s);
  g.nodes[2].outputs.push_back(g.add_value(dtype::f32, {}));
  CHECK_NOTHROW(jit::validate(g));
  body.nodes.back().attrs.clear();
  CHECK(validate_error(g).find("node 2 (fused) body: node 1 (scalar): missing attribute \"value\" (a double)") !=
        std::string::npos);
}
