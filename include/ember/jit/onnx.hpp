// ONNX export of a jit::graph: to_onnx (the serialized ModelProto, opset 17, hand-written
// protobuf) and export_onnx (the same bytes, written atomically to a file). Each IR op maps to
// one or more ONNX nodes; constants become initializers; the symbolic batch becomes dim "N".
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/core/dtype.hpp>
#include <ember/core/error.hpp>
#include <ember/io/atomic_file.hpp>
#include <ember/jit/graph.hpp>
#include <ember/jit/protobuf.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <numbers>
#include <set>
#include <string>
#include <vector>

namespace ember::jit {

/// Options of to_onnx/export_onnx: export_onnx(g, "net.onnx", {.graph_name = "net"}).
struct onnx_options {
  std::int64_t opset = 17;  ///< only 17 is supported
  std::string producer = "ember";
  std::string graph_name = "ember_graph";
};

namespace detail {

/// The integer list attribute `key` (a single integer counts as a list of one).
inline std::vector<std::int64_t> ints_attr(const node& n, const std::string& key,
                                           std::vector<std::int64_t> fallback = {}) {
  auto it = n.attrs.find(key);
  if (it == n.attrs.end()) return fallback;
  if (const auto* i = std::get_if<std::int64_t>(&it->second)) return {*i};
  return attr<std::vector<std::int64_t>>(n, key);
}
/// The real attribute `key` (an integer converts).
inline double real_attr(const node& n, const std::string& key, double fallback) {
  auto it = n.attrs.find(key);
  if (it == n.attrs.end()) return fallback;
  if (const auto* i = std::get_if<std::int64_t>(&it->second)) return static_cast<double>(*i);
  return attr<double>(n, key);
}
/// A 2-D size attribute ([h, w]; one integer means both).
inline std::vector<std::int64_t> pair_attr(const node& n, const std::string& key,
                                           std::int64_t fallback) {
  auto v = ints_attr(n, key, {fallback, fallback});
  if (v.size() == 1) v.push_back(v[0]);
  ember::detail::check(v.size() == 2, errc::value, "export_onnx: ", name(n.kind), " attribute \"",
                       key, "\" has ", v.size(), " entries, expected 2");
  return v;
}

// Note [ONNX naming]: ONNX values keep the names of the IR values (unique in a graph). Values
// the export invents (formula constants, shape inputs, the intermediate results of a multi-node
// lowering) are named "<first output of the IR node>/<op_type>"; the values of an inlined fused
// body are "<first output of the fused node>/<body value name>". Every name is checked against
// all names used so far and gets a "_<k>" suffix on a collision, so none is written twice.

/// The single ONNX op an IR unary op maps to, or nullptr.
constexpr const char* onnx_unary(op o) noexcept {
  // clang-format off
  switch (o) {
    case op::neg: return "Neg";             case op::abs: return "Abs";
    case op::exp: return "Exp";             case op::log: return "Log";
    case op::sqrt: return "Sqrt";           case op::sin: return "Sin";
    case op::cos: return "Cos";             case op::tanh: return "Tanh";
    case op::sigmoid: return "Sigmoid";     case op::relu: return "Relu";
    case op::softplus: return "Softplus";   case op::sign: return "Sign";
    case op::floor: return "Floor";         case op::ceil: return "Ceil";
    case op::round: return "Round";         case op::reciprocal: return "Reciprocal";
    case op::erf: return "Erf";             case op::logical_not: return "Not";
    case op::contiguous: return "Identity";
    case op::detach: return "Identity";
    // clang-format on
    default: return nullptr;
  }
}
/// The single ONNX op an IR binary op maps to, or nullptr (ne is Not(Equal)).
constexpr const char* onnx_binary(op o) noexcept {
  // clang-format off
  switch (o) {
    case op::add: return "Add";             case op::sub: return "Sub";
    case op::mul: return "Mul";             case op::div: return "Div";
    case op::pow: return "Pow";             case op::maximum: return "Max";
    case op::minimum: return "Min";         case op::eq: return "Equal";
    case op::lt: return "Less";             case op::le: return "LessOrEqual";
    case op::gt: return "Greater";          case op::ge: return "GreaterOrEqual";
    case op::logical_and: return "And";     case op::logical_or: return "Or";
    // clang-format on
    default: return nullptr;
  }
}
/// The ONNX reduction of an IR reduction (axes as an attribute in opset 17, but ReduceSum).
constexpr const char* onnx_reduce(op o) noexcept {
  // clang-format off
  switch (o) {
    case op::sum: return "ReduceSum";       case op::mean: return "ReduceMean";
    case op::prod: return "ReduceProd";     case op::amax: return "ReduceMax";
    case op::amin: return "ReduceMin";      case op::logsumexp: return "ReduceLogSumExp";
    case op::norm: return "ReduceL2";
    // clang-format on
    default: return nullptr;
  }
}

/// Builds the ModelProto of one graph (see Note [ONNX naming]). A template only for
/// Note [Deferred instantiation]: use onnx_builder<>.
template <class = void>
class onnx_builder {
 public:
  explicit onnx_builder(const onnx_options& o) : opt_(o) {}

  std::string model(const graph& g) {
    ember::detail::check(opt_.opset == 17, errc::not_implemented, "export_onnx: opset ", opt_.opset,
                         " is not supported (ember exports opset 17)");
    for (const auto& v : g.values) used_.insert(v.name);
    scope top{g, {}, {}};
    for (std::size_t i = 0; i < g.values.size(); ++i)
      top.names.push_back(g.values[i].name.empty() ? fresh("v" + std::to_string(i))
                                                   : g.values[i].name);
    for (const auto& [id, t] : g.constants) add_initializer(top[id], t);
    pb_writer ins, outs;
    for (int id : g.inputs)
      ins.message(11, onnx_value_info(top[id], g.at(id).type, g.at(id).shape));
    for (const auto& n : g.nodes) emit(top, n);
    std::set<int> seen;
    std::set<std::string> read;  // every name a node or the graph output reads
    for (int id : g.outputs) {
      std::string nm = top[id];
      // An output that is also an input, a constant or an earlier output gets its own copy.
      if (g.is_constant(id) || std::count(g.inputs.begin(), g.inputs.end(), id) != 0 ||
          !seen.insert(id).second)
        nm = add("Identity", {nm}, fresh(nm + "/out")).y();
      outs.message(12, onnx_value_info(nm, g.at(id).type, g.at(id).shape));
      read.insert(nm);
    }
    // Constants folded into attributes (LeakyRelu's alpha, ...) may be left unread: drop them.
    for (const auto& n : nodes_) read.insert(n.in.begin(), n.in.end());
    // GraphProto: node 1, name 2, initializer 5, input 11, output 12.
    pb_writer gw;
    std::size_t k = 0;
    for (const auto& n : nodes_) {
      if (n.op_type == "Constant" && read.count(n.y()) == 0) continue;
      pb_writer nw;  // NodeProto: input 1, output 2, name 3, op_type 4, attribute 5
      for (const auto& s : n.in) nw.string(1, s);
      for (const auto& s : n.out) nw.string(2, s);
      nw.string(3, n.op_type + "_" + std::to_string(k++));
      nw.string(4, n.op_type);
      nw.append(n.attrs);
      gw.message(1, nw);
    }
    gw.string(2, opt_.graph_name);
    gw.append(inits_);
    gw.append(ins);
    gw.append(outs);
    // ModelProto: ir_version 1, producer_name 2, graph 7, opset_import 8 {domain 1, version 2}.
    pb_writer opset;
    opset.string(1, "");
    opset.varint(2, opt_.opset);
    pb_writer m;
    m.varint(1, 8);
    m.string(2, opt_.producer);
    m.message(7, gw);
    m.message(8, opset);
    return std::move(m).str();
  }

 private:
  struct scope {
    const graph& g;
    std::vector<std::string> names;  // the ONNX name of each value id
    std::map<int, double> scalars;   // the values written by scalar nodes
    const std::string& operator[](int id) const {
      ember::detail::check(id >= 0 && static_cast<std::size_t>(id) < names.size(), errc::value,
                           "export_onnx: value id ", id, " out of range (", names.size(),
                           " values)");
      return names[static_cast<std::size_t>(id)];
    }
  };

  std::string fresh(const std::string& base) {
    if (used_.insert(base).second) return base;
    for (;;) {
      std::string c = base + "_" + std::to_string(counter_++);
      if (used_.insert(c).second) return c;
    }
  }
  onnx_node& add(std::string_view type, std::vector<std::string> in, std::string out = {}) {
    if (out.empty()) out = fresh(base_ + "/" + std::string(type));
    nodes_.push_back({std::string(type), std::move(in), {std::move(out)}, {}});
    return nodes_.back();
  }
  std::string add1(std::string_view type, std::vector<std::string> in, std::string out = {}) {
    return add(type, std::move(in), std::move(out)).y();
  }
  void add_initializer(const std::string& nm, const any_tensor& t) {
    inits_.message(5, onnx_tensor(nm, t));
  }
  /// A 0-d Constant node of dtype t.
  std::string konst(double v, dtype t) {
    return add("Constant", {}, fresh(base_ + "/const")).t("value", onnx_values("", t, {}, {v})).y();
  }
  /// An int64 initializer (1-d, or 0-d when scalar).
  std::string ints(const std::vector<std::int64_t>& v, const char* what, bool scalar = false) {
    const std::string nm = fresh(base_ + "/" + what);
    inits_.message(5, onnx_ints(nm, v, scalar));
    return nm;
  }
  /// Value id as an ONNX name of dtype t (a Cast node when its dtype differs).
  std::string as(const scope& s, int id, dtype t) {
    if (s.g.at(id).type == t) return s[id];
    return add("Cast", {s[id]}).i("to", onnx_elem_type(t)).y();
  }
  /// The number a 0-d value holds when it is known at export time (scalar node or constant).
  static bool known_scalar(const scope& s, int id, double& out) {
    if (auto it = s.scalars.find(id); it != s.scalars.end()) return out = it->second, true;
    if (s.g.is_constant(id) && s.g.constants.at(id).numel() == 1) {
      out = s.g.constants.at(id).template to<double>().cpu().contiguous().data()[0];
      return true;
    }
    return false;
  }
  static std::int64_t norm_dim(std::int64_t d, std::size_t rank) {
    return d < 0 ? d + static_cast<std::int64_t>(rank) : d;
  }

  void emit(scope& s, const node& n) {
    const graph& g = s.g;
    const std::string_view opn = name(n.kind);
    ember::detail::check(!n.outputs.empty(), errc::value, "export_onnx: ", opn,
                         " node has no outputs");
    base_ = s[n.outputs[0]];
    auto need = [&](std::size_t k) {
      ember::detail::check(n.inputs.size() >= k, errc::value, "export_onnx: ", opn, " node has ",
                           n.inputs.size(), " inputs, expected ", k);
    };
    auto x = [&](std::size_t k) -> const std::string& {
      need(k + 1);
      return s[n.inputs[k]];
    };
    auto vin = [&](std::size_t k) -> const value& {
      need(k + 1);
      return g.at(n.inputs[k]);
    };
    const std::string y = s[n.outputs[0]];
    const value& out = g.at(n.outputs[0]);
    const auto i64 = [&](const char* key, std::int64_t fallback) {
      return attr_or<std::int64_t>(n, key, fallback);
    };
    auto static_dim = [&](const value& v, std::int64_t d, const char* why) {
      const std::int64_t e = v.shape.at(static_cast<std::size_t>(norm_dim(d, v.shape.size())));
      ember::detail::check(e >= 0, errc::not_implemented, "export_onnx: ", opn, ": ", why,
                           " needs a static extent, but dim ", d, " of %", v.name,
                           " is the symbolic batch");
      return e;
    };

    if (const char* t = onnx_unary(n.kind)) {
      add(t, {as(s, n.inputs.at(0), out.type)}, y);
      return;
    }
    if (const char* t = onnx_binary(n.kind)) {
      need(2);
      const bool cmp =
          out.type == dtype::boolean && n.kind != op::logical_and && n.kind != op::logical_or;
      const dtype common = cmp ? vin(0).type : out.type;  // comparisons compare in a's dtype
      add(t, {as(s, n.inputs[0], common), as(s, n.inputs[1], common)}, y);
      return;
    }
    if (const char* t = onnx_reduce(n.kind)) {
      const std::size_t r = vin(0).shape.size();
      std::vector<std::int64_t> axes;
      for (auto d : ints_attr(n, "dims")) axes.push_back(norm_dim(d, r));
      const std::string in = as(s, n.inputs[0], out.type);
      if (n.kind == op::sum) {  // opset 13+: axes is an input
        std::vector<std::string> ins{in};
        if (!axes.empty()) ins.push_back(ints(axes, "axes"));
        add(t, ins, y).i("keepdims", i64("keepdim", 0));
      } else {
        auto& nd = add(t, {in}, y).i("keepdims", i64("keepdim", 0));
        if (!axes.empty()) nd.ints("axes", axes);
      }
      return;
    }
    switch (n.kind) {
      case op::expm1: add("Sub", {add1("Exp", {x(0)}), konst(1, out.type)}, y); return;
      case op::log1p: add("Log", {add1("Add", {x(0), konst(1, out.type)})}, y); return;
      case op::log2:
        add("Div", {add1("Log", {x(0)}), konst(std::numbers::ln2, out.type)}, y);
        return;
      case op::rsqrt: add("Reciprocal", {add1("Sqrt", {x(0)})}, y); return;
      case op::square: add("Mul", {x(0), x(0)}, y); return;
      case op::silu: add("Mul", {x(0), add1("Sigmoid", {x(0)})}, y); return;
      case op::gelu: {  // x/2 (1 + erf(x/sqrt 2))
        const auto e = add1("Erf", {add1("Div", {x(0), konst(std::numbers::sqrt2, out.type)})});
        add("Mul",
            {add1("Mul", {x(0), konst(0.5, out.type)}), add1("Add", {e, konst(1, out.type)})}, y);
        return;
      }
      case op::gelu_tanh: {  // x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        const auto x3 = add1("Mul", {x(0), add1("Mul", {x(0), x(0)})});
        const auto inner = add1("Add", {x(0), add1("Mul", {x3, konst(0.044715, out.type)})});
        const auto th =
            add1("Tanh", {add1("Mul", {inner, konst(std::sqrt(2 / std::numbers::pi), out.type)})});
        add("Mul",
            {add1("Mul", {x(0), konst(0.5, out.type)}), add1("Add", {th, konst(1, out.type)})}, y);
        return;
      }
      case op::ne:
        add("Not", {add1("Equal", {x(0), as(s, n.inputs.at(1), vin(0).type)})}, y);
        return;
      case op::scalar: {
        const double v = real_attr(n, "value", 0.0);
        s.scalars[n.outputs[0]] = v;
        add("Constant", {}, y).t("value", onnx_values("", out.type, {}, {v}));
        return;
      }
      case op::where:
        add("Where",
            {as(s, n.inputs.at(0), dtype::boolean), as(s, n.inputs.at(1), out.type),
             as(s, n.inputs.at(2), out.type)},
            y);
        return;
      case op::clamp: {
        const std::string lo = as(s, n.inputs.at(1), out.type),
                          hi = as(s, n.inputs.at(2), out.type);
        if (vin(1).shape.empty() && vin(2).shape.empty())
          add("Clip", {x(0), lo, hi}, y);
        else
          add("Min", {add1("Max", {x(0), lo}), hi}, y);  // tensor bounds broadcast
        return;
      }
      case op::leaky_relu:
      case op::elu: {
        const bool leaky = n.kind == op::leaky_relu;
        double a = 0;
        if (known_scalar(s, n.inputs.at(1), a)) {
          add(leaky ? "LeakyRelu" : "Elu", {x(0)}, y).f("alpha", a);
          return;
        }
        const std::string alpha = as(s, n.inputs[1], out.type);
        const std::string neg =
            leaky ? add1("Mul", {x(0), alpha})
                  : add1("Mul", {alpha, add1("Sub", {add1("Exp", {x(0)}), konst(1, out.type)})});
        add("Where", {add1("Greater", {x(0), konst(0, out.type)}), x(0), neg}, y);
        return;
      }
      case op::cast: add("Cast", {x(0)}, y).i("to", onnx_elem_type(out.type)); return;
      case op::var:
      case op::std: {
        const std::size_t r = vin(0).shape.size();
        std::vector<std::int64_t> axes;
        for (auto d : ints_attr(n, "dims")) axes.push_back(norm_dim(d, r));
        if (axes.empty())
          for (std::size_t d = 0; d < r; ++d) axes.push_back(static_cast<std::int64_t>(d));
        const auto c = static_cast<double>(i64("correction", 1));
        const std::string in = as(s, n.inputs[0], out.type);
        const auto mean = add("ReduceMean", {in}).ints("axes", axes).i("keepdims", 1).y();
        const auto dev = add1("Sub", {in, mean});
        std::string v = add("ReduceMean", {add1("Mul", {dev, dev})})
                            .ints("axes", axes)
                            .i("keepdims", i64("keepdim", 0))
                            .y();
        if (c != 0) {
          bool fixed = true;
          double cnt = 1;
          for (auto a : axes) {
            const std::int64_t e = vin(0).shape[static_cast<std::size_t>(a)];
            fixed = fixed && e >= 0;
            cnt *= static_cast<double>(e);
          }
          std::string factor;
          if (fixed) {
            factor = konst(cnt - c > 0 ? cnt / (cnt - c) : std::numeric_limits<double>::quiet_NaN(),
                           out.type);
          } else {  // n = prod(shape[axes]) at run time
            const auto ext =
                add("Gather", {add1("Shape", {in}), ints(axes, "axes")}).i("axis", 0).y();
            const auto num = add("Cast", {add("ReduceProd", {ext}).i("keepdims", 0).y()})
                                 .i("to", onnx_elem_type(out.type))
                                 .y();
            factor = add1("Div", {num, add1("Sub", {num, konst(c, out.type)})});
          }
          v = add1("Mul", {v, factor}, n.kind == op::var ? y : std::string{});
        }
        if (n.kind == op::std)
          add("Sqrt", {v}, y);
        else if (c == 0)
          add("Identity", {v}, y);
        return;
      }
      case op::argmax:
      case op::argmin: {
        const char* t = n.kind == op::argmax ? "ArgMax" : "ArgMin";
        const std::int64_t keep = i64("keepdim", 0);
        if (n.attrs.count("dim") != 0) {
          add(t, {x(0)}, y).i("axis", i64("dim", 0)).i("keepdims", keep);
        } else if (out.shape.empty()) {  // over all elements: flatten first
          add(t, {add1("Reshape", {x(0), ints({-1}, "shape")})}, y).i("axis", 0).i("keepdims", 0);
        } else {
          const auto a = add(t, {add1("Reshape", {x(0), ints({-1}, "shape")})})
                             .i("axis", 0)
                             .i("keepdims", 0)
                             .y();
          add("Reshape", {a, ints(out.shape, "shape")}, y);
        }
        return;
      }
      case op::softmax:
      case op::log_softmax:
        add(n.kind == op::softmax ? "Softmax" : "LogSoftmax", {x(0)}, y).i("axis", i64("dim", -1));
        return;
      case op::matmul: add("MatMul", {x(0), x(1)}, y); return;
      case op::linear: {
        std::vector<std::string> ins{x(0), x(1)};
        if (n.inputs.size() > 2) ins.push_back(x(2));
        if (vin(0).shape.size() == 2) {
          add("Gemm", ins, y).i("transB", 1);
        } else {
          const auto wt = add("Transpose", {x(1)}).ints("perm", {1, 0}).y();
          if (ins.size() == 2)
            add("MatMul", {x(0), wt}, y);
          else
            add("Add", {add1("MatMul", {x(0), wt}), x(2)}, y);
        }
        return;
      }
      case op::conv2d: {
        const auto pad = pair_attr(n, "padding", 0);
        std::vector<std::string> ins{x(0), x(1)};
        if (n.inputs.size() > 2) ins.push_back(x(2));
        auto& c = add("Conv", ins, y)
                      .ints("strides", pair_attr(n, "stride", 1))
                      .ints("pads", {pad[0], pad[1], pad[0], pad[1]})
                      .ints("dilations", pair_attr(n, "dilation", 1))
                      .i("group", i64("groups", 1));
        const auto& ws = vin(1).shape;
        if (ws.size() == 4 && ws[2] >= 0 && ws[3] >= 0) c.ints("kernel_shape", {ws[2], ws[3]});
        return;
      }
      case op::batch_norm: {
        ember::detail::check(
            i64("training", 0) == 0, errc::not_implemented,
            "export_onnx: batch_norm in training mode (%", y,
            "): export the model in eval mode (model.eval()) so it uses the running statistics");
        need(5);  // ember: x, mean, var, weight, bias; ONNX: X, scale, B, mean, var
        add("BatchNormalization", {x(0), x(3), x(4), x(1), x(2)}, y)
            .f("epsilon", real_attr(n, "eps", 1e-5))
            .f("momentum", 1 - real_attr(n, "momentum", 0.1));
        return;
      }
      case op::layer_norm: {
        const auto ns = ints_attr(n, "normalized_shape");
        std::vector<std::string> ins{x(0)};
        for (std::size_t k = 1; k < n.inputs.size() && k < 3; ++k) ins.push_back(x(k));
        ember::detail::check(
            ins.size() >= 2, errc::not_implemented,
            "export_onnx: layer_norm without a weight input (the tracer materializes it)");
        add("LayerNormalization", ins, y)
            .i("axis", -static_cast<std::int64_t>(ns.size()))
            .f("epsilon", real_attr(n, "eps", 1e-5));
        return;
      }
      case op::group_norm: {  // opset 17 has no GroupNormalization: (N, G, -1) statistics
        need(3);
        const std::size_t r = vin(0).shape.size();
        const std::int64_t groups = i64("groups", 1);
        const auto xr = add1("Reshape", {x(0), ints({0, groups, -1}, "shape")});
        const auto mean = add("ReduceMean", {xr}).ints("axes", {2}).i("keepdims", 1).y();
        const auto dev = add1("Sub", {xr, mean});
        const auto var =
            add("ReduceMean", {add1("Mul", {dev, dev})}).ints("axes", {2}).i("keepdims", 1).y();
        const auto sd =
            add1("Sqrt", {add1("Add", {var, konst(real_attr(n, "eps", 1e-5), out.type)})});
        const auto back = add1("Reshape", {add1("Div", {dev, sd}), add1("Shape", {x(0)})});
        std::vector<std::int64_t> cshape{-1};
        cshape.resize(r > 2 ? r - 1 : 1, 1);
        const auto w = add1("Reshape", {x(1), ints(cshape, "shape")});
        const auto b = add1("Reshape", {x(2), ints(cshape, "shape")});
        add("Add", {add1("Mul", {back, w}), b}, y);
        return;
      }
      case op::max_pool2d:
      case op::avg_pool2d: {
        const auto k = pair_attr(n, "kernel", 1), pad = pair_attr(n, "padding", 0);
        auto st = pair_attr(n, "stride", 0);
        for (int d = 0; d < 2; ++d)
          if (st[static_cast<std::size_t>(d)] == 0)
            st[static_cast<std::size_t>(d)] = k[static_cast<std::size_t>(d)];
        auto& p = add(n.kind == op::max_pool2d ? "MaxPool" : "AveragePool", {x(0)}, y)
                      .ints("kernel_shape", k)
                      .ints("strides", st)
                      .ints("pads", {pad[0], pad[1], pad[0], pad[1]})
                      .i("ceil_mode", i64("ceil_mode", 0));
        if (n.kind == op::max_pool2d)
          p.ints("dilations", pair_attr(n, "dilation", 1));
        else
          p.i("count_include_pad", i64("count_include_pad", 1));
        return;
      }
      case op::adaptive_avg_pool2d: {
        const auto os = pair_attr(n, "output_size", 1);
        const std::size_t r = vin(0).shape.size();
        if (os[0] == 1 && os[1] == 1) {
          if (r == 4)
            add("GlobalAveragePool", {x(0)}, y);
          else
            add("ReduceMean", {x(0)}, y).ints("axes", {-2, -1}).i("keepdims", 1);
          return;
        }
        const std::int64_t h = static_dim(vin(0), -2, "adaptive_avg_pool2d"),
                           w = static_dim(vin(0), -1, "adaptive_avg_pool2d");
        ember::detail::check(r == 4 && os[0] > 0 && os[1] > 0 && h % os[0] == 0 && w % os[1] == 0,
                             errc::not_implemented, "export_onnx: adaptive_avg_pool2d to (", os[0],
                             ", ", os[1], ") of a (", h, ", ", w, ") input in ", r,
                             " dims: only 4-d inputs whose size divides evenly can be exported");
        add("AveragePool", {x(0)}, y)
            .ints("kernel_shape", {h / os[0], w / os[1]})
            .ints("strides", {h / os[0], w / os[1]});
        return;
      }
      case op::reshape:
        add("Reshape", {x(0), ints(ints_attr(n, "shape"), "shape")}, y).i("allowzero", 0);
        return;
      case op::permute: {
        std::vector<std::int64_t> perm;
        for (auto d : ints_attr(n, "dims")) perm.push_back(norm_dim(d, vin(0).shape.size()));
        add("Transpose", {x(0)}, y).ints("perm", perm);
        return;
      }
      case op::expand: {
        auto shp = ints_attr(n, "shape");
        for (auto& e : shp) e = e == -1 ? 1 : e;  // ONNX Expand: 1 keeps the extent by broadcasting
        add("Expand", {x(0), ints(shp, "shape")}, y);
        return;
      }
      case op::slice: {
        const std::int64_t d = i64("dim", 0);
        add("Slice",
            {x(0), ints({i64("start", 0)}, "starts"),
             ints({i64("end", std::numeric_limits<std::int64_t>::max())}, "ends"),
             ints({d}, "axes"), ints({i64("step", 1)}, "steps")},
            y);
        return;
      }
      case op::select:
        add("Gather", {x(0), ints({i64("index", 0)}, "index", true)}, y).i("axis", i64("dim", 0));
        return;
      case op::cat:
      case op::stack: {
        need(1);
        std::int64_t d = i64("dim", 0);
        std::vector<std::string> ins;
        if (n.kind == op::stack) d = norm_dim(d, vin(0).shape.size() + 1);
        const std::string axes = n.kind == op::stack ? ints({d}, "axes") : std::string{};
        for (std::size_t k = 0; k < n.inputs.size(); ++k)
          ins.push_back(n.kind == op::stack ? add1("Unsqueeze", {x(k), axes}) : x(k));
        add("Concat", ins, y).i("axis", d);
        return;
      }
      case op::embedding: add("Gather", {x(1), x(0)}, y).i("axis", 0); return;
      case op::scaled_dot_product_attention: {
        need(3);
        const value& q = vin(0);
        const std::size_t rk = vin(1).shape.size();
        ember::detail::check(
            q.shape.size() >= 2 && rk >= 2, errc::shape,
            "export_onnx: scaled_dot_product_attention needs q and k of at least 2 dims");
        std::vector<std::int64_t> perm;
        for (std::size_t d = 0; d < rk; ++d) perm.push_back(static_cast<std::int64_t>(d));
        std::swap(perm[rk - 1], perm[rk - 2]);
        const double scale =
            real_attr(n, "scale",
                      1.0 / std::sqrt(static_cast<double>(static_dim(q, -1, "the default scale"))));
        const auto kt = add("Transpose", {x(1)}).ints("perm", perm).y();
        std::string sc = add1("Mul", {add1("MatMul", {x(0), kt}), konst(scale, q.type)});
        if (i64("is_causal", 0) != 0) {
          const std::int64_t l = static_dim(q, -2, "is_causal"),
                             sl = static_dim(vin(1), -2, "is_causal");
          std::vector<double> tril(static_cast<std::size_t>(l * sl));
          for (std::int64_t i = 0; i < l; ++i)
            for (std::int64_t j = 0; j <= i && j < sl; ++j)
              tril[static_cast<std::size_t>(i * sl + j)] = 1;
          const std::string m = fresh(base_ + "/causal_mask");
          inits_.message(5, onnx_values(m, dtype::boolean, {l, sl}, tril));
          sc = add1("Where", {m, sc, konst(-std::numeric_limits<double>::infinity(), q.type)});
        }
        if (n.inputs.size() > 3) {
          if (vin(3).type == dtype::boolean)
            sc = add1("Where", {x(3), sc, konst(-std::numeric_limits<double>::infinity(), q.type)});
          else
            sc = add1("Add", {sc, as(s, n.inputs[3], q.type)});
        }
        add("MatMul", {add("Softmax", {sc}).i("axis", -1).y(), x(2)}, y);
        return;
      }
      case op::fused: emit_fused(s, n); return;
      case op::custom:
        ember::detail::fail(errc::not_implemented, "export_onnx: custom op ",
                            attr_or<std::string>(n, "name", "<unnamed>"),
                            " cannot be exported to ONNX");
      default:
        ember::detail::fail(errc::not_implemented, "export_onnx: op ", opn, " (%", y,
                            ") has no ONNX mapping");
    }
  }

  /// Inlines a fused node's body: body inputs are the node's inputs, body outputs its outputs.
  void emit_fused(const scope& s, const node& n) {
    ember::detail::check(n.body != nullptr, errc::value, "export_onnx: fused node (%",
                         s[n.outputs[0]], ") has no body");
    const graph& b = *n.body;
    ember::detail::check(b.inputs.size() == n.inputs.size() && b.outputs.size() == n.outputs.size(),
                         errc::value, "export_onnx: fused node (%", s[n.outputs[0]], ") has ",
                         n.inputs.size(), " inputs and ", n.outputs.size(), " outputs, its body ",
                         b.inputs.size(), " and ", b.outputs.size());
    const std::string prefix = s[n.outputs[0]] + "/";
    scope inner{b, std::vector<std::string>(b.values.size()), {}};
    std::vector<bool> named(b.values.size(), false);
    for (std::size_t i = 0; i < b.inputs.size(); ++i) {
      inner.names.at(static_cast<std::size_t>(b.inputs[i])) = s[n.inputs[i]];
      named[static_cast<std::size_t>(b.inputs[i])] = true;
    }
    std::vector<std::pair<int, std::string>> copies;  // body value -> outer output (Identity)
    for (std::size_t j = 0; j < b.outputs.size(); ++j) {
      const auto id = static_cast<std::size_t>(b.outputs[j]);
      ember::detail::check(id < b.values.size(), errc::value,
                           "export_onnx: fused body output id out of range");
      if (!named[id] && !b.is_constant(b.outputs[j])) {
        inner.names[id] = s[n.outputs[j]];
        named[id] = true;
      } else {
        copies.emplace_back(b.outputs[j], s[n.outputs[j]]);
      }
    }
    for (std::size_t id = 0; id < b.values.size(); ++id)
      if (!named[id]) inner.names[id] = fresh(prefix + b.values[id].name);
    for (const auto& [id, t] : b.constants) add_initializer(inner[id], t);
    for (const auto& bn : b.nodes) emit(inner, bn);
    for (const auto& [id, outer] : copies) add("Identity", {inner[id]}, outer);
  }

  const onnx_options& opt_;
  std::set<std::string> used_;
  std::deque<onnx_node> nodes_;
  pb_writer inits_;  // repeated TensorProto (field 5 of GraphProto)
  std::string base_;
  std::int64_t counter_ = 0;
};

}  // namespace detail

/// The serialized ONNX ModelProto (ir_version 8, opset 17) of g:
///   std::string bytes = em::jit::to_onnx(g);
/// Errors (ember::error): an op without an ONNX mapping (custom ops, batch_norm in training
/// mode, ...) naming it; an opset other than 17.
template <int = 0>  // Note [Deferred instantiation]
std::string to_onnx(const graph& g, const onnx_options& o = {}) {
  return detail::onnx_builder<>(o).model(g);
}

/// Writes to_onnx(g, o) to path atomically (the previous file survives a failed export):
///   em::jit::export_onnx(g, "net.onnx");
template <int = 0>  // Note [Deferred instantiation]
void export_onnx(const graph& g, const std::string& path, const onnx_options& o = {}) {
  const std::string bytes = to_onnx(g, o);
  io::atomic_write(path, [&](io::file_writer& w) { w.write(bytes); });
}

}  // namespace ember::jit
