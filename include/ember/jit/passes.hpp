// Graph optimization passes on jit::graph: dead code and common subexpression elimination,
// constant folding (through a node runner), batch norm folding into conv2d/linear, fusion of
// elementwise groups into op::fused nodes, and optimize(), the pipeline of them all.
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/expr/operators.hpp>
#include <ember/jit/fused.hpp>
#include <ember/jit/graph.hpp>
#include <ember/ops/factory.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace ember::detail {

/// Ids of the nodes producing each value (-1: an input, a constant or unproduced).
inline std::vector<int> jit_producers(const jit::graph& g) {
  std::vector<int> p(g.values.size(), -1);
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    for (int o : g.nodes[i].outputs) p[static_cast<std::size_t>(o)] = static_cast<int>(i);
  return p;
}

/// How many times each value is read (node inputs and graph outputs).
inline std::vector<int> jit_use_counts(const jit::graph& g) {
  std::vector<int> u(g.values.size(), 0);
  for (const jit::node& n : g.nodes)
    for (int in : n.inputs) ++u[static_cast<std::size_t>(in)];
  for (int o : g.outputs) ++u[static_cast<std::size_t>(o)];
  return u;
}

/// A value name not yet used in g: base, or base.1, base.2, ...
inline std::string jit_fresh_name(const jit::graph& g, const std::string& base) {
  auto taken = [&](const std::string& s) {
    return std::any_of(g.values.begin(), g.values.end(), [&](const jit::value& v) { return v.name == s; });
  };
  if (!taken(base)) return base;
  for (int k = 1;; ++k)
    if (!taken(base + "." + std::to_string(k))) return base + "." + std::to_string(k);
}

/// Nodes no pass may merge or evaluate ahead of time: training batch norm (it updates running
/// statistics) and custom ops (opaque).
inline bool jit_pinned(const jit::node& n) {
  if (n.kind == op::custom) return true;
  return n.kind == op::batch_norm && jit::attr_or<std::int64_t>(n, "training", 0) != 0;
}

}  // namespace ember::detail

namespace ember::jit {

/// Removes the nodes whose outputs do not reach a graph output (every op, custom ones too, is
/// taken to be pure), then the constants nothing reads any more. Graph inputs stay; value
/// entries stay (ids are not renumbered).
///   em::jit::eliminate_dead_code(g);
inline void eliminate_dead_code(graph& g) {
  std::vector<char> live(g.values.size(), 0);
  for (int o : g.outputs) live[static_cast<std::size_t>(o)] = 1;
  std::vector<char> keep(g.nodes.size(), 0);
  for (std::size_t i = g.nodes.size(); i-- > 0;) {
    const node& n = g.nodes[i];
    for (int o : n.outputs) keep[i] = keep[i] || live[static_cast<std::size_t>(o)];
    if (keep[i])
      for (int in : n.inputs) live[static_cast<std::size_t>(in)] = 1;
  }
  std::vector<node> kept;
  kept.reserve(g.nodes.size());
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    if (keep[i]) kept.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(kept);
  for (auto it = g.constants.begin(); it != g.constants.end();)
    it = live[static_cast<std::size_t>(it->first)] ? std::next(it) : g.constants.erase(it);
}

/// Merges nodes that compute the same thing: same op, same inputs (after earlier merges), equal
/// attributes and the same output dtypes and shapes (a cast's target is its output dtype). The
/// later node goes; its outputs' readers (graph outputs too) read the earlier node's. Training
/// batch norm, custom and fused nodes are never merged.
inline void eliminate_common_subexpressions(graph& g) {
  std::vector<int> repl(g.values.size());
  for (std::size_t v = 0; v < repl.size(); ++v) repl[v] = static_cast<int>(v);
  std::map<std::pair<op, std::vector<int>>, std::vector<std::size_t>> seen;  // -> kept nodes
  std::vector<node> kept;
  kept.reserve(g.nodes.size());
  auto same_outputs = [&](const node& a, const node& b) {
    if (a.outputs.size() != b.outputs.size()) return false;
    for (std::size_t k = 0; k < a.outputs.size(); ++k) {
      const value& x = g.at(a.outputs[k]);
      const value& y = g.at(b.outputs[k]);
      if (x.type != y.type || x.shape != y.shape) return false;
    }
    return true;
  };
  for (node& n : g.nodes) {
    for (int& in : n.inputs) in = repl[static_cast<std::size_t>(in)];
    if (ember::detail::jit_pinned(n) || n.kind == op::fused || n.body || n.outputs.empty()) {
      kept.push_back(std::move(n));
      continue;
    }
    auto& candidates = seen[{n.kind, n.inputs}];
    const node* match = nullptr;
    for (std::size_t k : candidates)
      if (kept[k].attrs == n.attrs && same_outputs(kept[k], n)) match = &kept[k];
    if (match) {
      for (std::size_t k = 0; k < n.outputs.size(); ++k)
        repl[static_cast<std::size_t>(n.outputs[k])] = match->outputs[k];
      continue;
    }
    candidates.push_back(kept.size());
    kept.push_back(std::move(n));
  }
  g.nodes = std::move(kept);
  for (int& o : g.outputs) o = repl[static_cast<std::size_t>(o)];
}

/// Evaluates one node on tensors (supplied by the interpreter): its outputs, in order.
using node_runner = std::function<std::vector<any_tensor>(const node&, const std::vector<any_tensor>&)>;

/// Evaluates ahead of time every node whose inputs are all constants (op::scalar results count
/// as constants; scalar nodes themselves stay as they are) with `run`; its outputs become
/// constants named "folded.<n>" and the node goes. Skipped: training batch norm, custom ops,
/// and nodes with an output of more than max_elements elements (or a symbolic extent).
///   em::jit::fold_constants(g, [&](const em::jit::node& n, const auto& in) { return interp(n, in); });
inline void fold_constants(graph& g, const node_runner& run, std::int64_t max_elements = 1 << 20) {
  std::map<int, double> scalars;  // value id -> op::scalar value
  std::vector<node> kept;
  kept.reserve(g.nodes.size());
  int counter = 0;
  auto known = [&](int v) { return g.is_constant(v) || scalars.count(v) != 0; };
  for (node& n : g.nodes) {
    if (n.kind == op::scalar) {
      if (n.inputs.empty() && n.outputs.size() == 1)
        scalars[n.outputs[0]] = ember::detail::jit_scalar_value(n);
      kept.push_back(std::move(n));
      continue;
    }
    bool foldable = !n.inputs.empty() && !n.outputs.empty() && !ember::detail::jit_pinned(n) &&
                    std::all_of(n.inputs.begin(), n.inputs.end(), known);
    for (int o : n.outputs) {
      const value& v = g.at(o);
      std::int64_t count = 1;
      for (std::int64_t e : v.shape) count = e < 0 ? max_elements + 1 : count * e;
      foldable = foldable && count <= max_elements;
    }
    if (!foldable) {
      kept.push_back(std::move(n));
      continue;
    }
    std::vector<any_tensor> args;
    for (int in : n.inputs) {
      if (g.is_constant(in)) {
        args.push_back(g.constants.at(in));
        continue;
      }
      const double s = scalars.at(in);
      args.push_back(visit_dtype(g.at(in).type, [&](auto e) {
        using T = decltype(e);
        tensor<T> t = empty<T>(shape{});
        *t.data() = convert<T>(s);
        return any_tensor(t);
      }));
    }
    std::vector<any_tensor> results = run(n, args);
    ember::detail::check(results.size() == n.outputs.size(), errc::internal, "jit::fold_constants: ",
                         name(n.kind), " has ", n.outputs.size(), " outputs, the runner returned ",
                         results.size());
    for (std::size_t k = 0; k < results.size(); ++k) {
      value& v = g.values[static_cast<std::size_t>(n.outputs[k])];
      const any_tensor& r = results[k];
      ember::detail::check(r.defined() && r.dtype() == v.type &&
                               r.shape() == shape(v.shape),
                           errc::internal, "jit::fold_constants: ", name(n.kind), " output %",
                           v.name, " should be ", v.type, " ", shape(v.shape), ", the runner gave ",
                           r.defined() ? r.dtype() : v.type, " ", r.defined() ? r.shape() : shape{});
      v.name = ember::detail::jit_fresh_name(g, "folded." + std::to_string(counter++));
      g.constants[n.outputs[k]] = r;
    }
  }
  g.nodes = std::move(kept);
}

/// Folds inference batch norm into the conv2d or linear feeding it: when that node's output is
/// read only by the batch norm and every weight, bias and statistic is a constant (one dtype,
/// f32 or f64), the pair becomes one node with W' = W * s (s = gamma / sqrt(var + eps), per
/// output channel: dim 0 of W) and b' = (b - mean) * s + beta, as new constants named
/// "<weight name>.folded" and "<bias name>.folded". linear qualifies when its output is 2-D
/// (the batch norm's channel dim is then linear's feature dim).
template <class = void>
void fold_batch_norm(graph& g) {
  for (std::size_t bi = 0; bi < g.nodes.size(); ++bi) {
    const node& bn = g.nodes[bi];
    if (bn.kind != op::batch_norm || bn.inputs.size() != 5 || bn.outputs.size() != 1 ||
        ember::detail::jit_pinned(bn))
      continue;
    const std::vector<int> producer = ember::detail::jit_producers(g);
    const std::vector<int> uses = ember::detail::jit_use_counts(g);
    const int x = bn.inputs[0];
    const int pi = producer[static_cast<std::size_t>(x)];
    if (pi < 0 || uses[static_cast<std::size_t>(x)] != 1) continue;
    const node& pn = g.nodes[static_cast<std::size_t>(pi)];
    if ((pn.kind != op::conv2d && pn.kind != op::linear) || pn.inputs.size() != 3 ||
        pn.outputs.size() != 1)
      continue;
    const int w = pn.inputs[1], b = pn.inputs[2];
    const int mean = bn.inputs[1], var = bn.inputs[2], gamma = bn.inputs[3], beta = bn.inputs[4];
    bool ok = true;
    for (int c : {w, b, mean, var, gamma, beta}) ok = ok && g.is_constant(c);
    if (!ok) continue;
    const dtype t = g.constants.at(w).dtype();
    if (t != dtype::f32 && t != dtype::f64) continue;
    for (int c : {b, mean, var, gamma, beta}) ok = ok && g.constants.at(c).dtype() == t;
    const any_tensor& wt = g.constants.at(w);
    const std::int64_t channels = wt.dim() >= 1 ? wt.shape()[0] : -1;
    for (int c : {b, mean, var, gamma, beta}) ok = ok && g.constants.at(c).numel() == channels;
    const value& xv = g.at(x);
    ok = ok && xv.shape.size() >= 2 && xv.shape[1] == channels &&
         (pn.kind == op::conv2d ? wt.dim() == 4 : (wt.dim() == 2 && xv.shape.size() == 2));
    if (!ok) continue;
    const double eps = attr_or<double>(bn, "eps", 1e-5);
    // in double, rounded once to the constants' type (f32 weights then differ from the
    // unfolded product by half an ulp, not by a chain of f32 roundings)
    auto fold = [&](auto e) {
      using T = decltype(e);
      auto get = [&](int id) { return g.constants.at(id).to<double>().detach().contiguous().view({channels}); };
      const tensor<double> W = g.constants.at(w).to<double>().detach();
      const tensor<double> s = get(gamma) / ember::sqrt(get(var) + eps);
      shape sshape(static_cast<std::size_t>(W.dim()), 1);
      sshape[0] = channels;
      const tensor<T> w2 = ember::cast<T>(W * s.view(sshape));
      const tensor<T> b2 = ember::cast<T>((get(b) - get(mean)) * s + get(beta));
      return std::pair<any_tensor, any_tensor>(w2, b2.view(g.constants.at(b).shape()));
    };
    const auto [w2, b2] = t == dtype::f64 ? fold(double{}) : fold(float{});
    node merged = pn;
    merged.inputs = {pn.inputs[0], g.add_constant(w2, ember::detail::jit_fresh_name(g, g.at(w).name + ".folded")),
                     g.add_constant(b2, ember::detail::jit_fresh_name(g, g.at(b).name + ".folded"))};
    merged.outputs = {g.nodes[bi].outputs[0]};
    g.nodes[static_cast<std::size_t>(pi)] = std::move(merged);
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(bi));
    --bi;
  }
}

/// Groups elementwise nodes into op::fused nodes (run by jit::run_fused). Note [Fusion]: nodes
/// are visited in topological order; a fusible node (Note [Fusible]) joins the group of one of
/// its producers when its output shape equals the group's (symbolic extents compare equal to
/// themselves) and no path from the group reaches it through a node outside the group (which
/// would make the group depend on itself); else it starts a group. The groups of its other
/// producers of that shape then merge into its group under the same condition (siblings such
/// as tanh(y) and relu(y) feeding one node end up together). Groups of two or more nodes
/// become one fused node: its inputs are the group's outside values (first use order), its
/// outputs every group value read outside it (by another node or as a graph output), and its
/// body holds the group's nodes, with copies of the op::scalar nodes they read. The nodes are
/// then put back in a topological order (stable: the original order where possible). Scalar
/// nodes that nothing reads any more are removed.
inline void fuse_elementwise(graph& g) {
  const std::size_t nn = g.nodes.size();
  const std::vector<int> producer = ember::detail::jit_producers(g);
  auto scalar_source = [&](int v) {
    const int p = producer[static_cast<std::size_t>(v)];
    return p >= 0 && g.nodes[static_cast<std::size_t>(p)].kind == op::scalar &&
           fusible(g.nodes[static_cast<std::size_t>(p)], g);
  };
  std::vector<int> group(nn, -1);
  std::vector<std::vector<std::size_t>> members;
  std::vector<std::vector<std::int64_t>> gshape;
  std::vector<std::set<int>> up(nn);  // groups each node depends on (itself included)
  // Groups A and B may merge when no node outside both reads from either and feeds either:
  // such a node would sit on a path from the merged group back into it.
  auto mergeable = [&](int A, int B) {
    for (int G : {A, B})
      for (std::size_t m : members[static_cast<std::size_t>(G)])
        for (int in : g.nodes[m].inputs) {
          const int p = producer[static_cast<std::size_t>(in)];
          if (p < 0) continue;
          const int pg = group[static_cast<std::size_t>(p)];
          if (pg == A || pg == B) continue;
          const auto& u = up[static_cast<std::size_t>(p)];
          if (u.count(A) || u.count(B)) return false;
        }
    return true;
  };
  for (std::size_t i = 0; i < nn; ++i) {
    const node& n = g.nodes[i];
    std::set<int> ups;
    for (int in : n.inputs) {
      const int p = producer[static_cast<std::size_t>(in)];
      if (p >= 0) ups.insert(up[static_cast<std::size_t>(p)].begin(), up[static_cast<std::size_t>(p)].end());
    }
    if (is_elementwise(n.kind) && fusible(n, g)) {
      const std::vector<std::int64_t>& s = g.at(n.outputs[0]).shape;
      int chosen = -1;
      for (int in : n.inputs) {
        const int p = producer[static_cast<std::size_t>(in)];
        const int G = p >= 0 ? group[static_cast<std::size_t>(p)] : -1;
        if (G < 0 || gshape[static_cast<std::size_t>(G)] != s) continue;
        bool acyclic = true;
        for (int in2 : n.inputs) {
          const int p2 = producer[static_cast<std::size_t>(in2)];
          if (p2 >= 0 && group[static_cast<std::size_t>(p2)] != G &&
              up[static_cast<std::size_t>(p2)].count(G))
            acyclic = false;
        }
        if (acyclic) {
          chosen = G;
          break;
        }
      }
      if (chosen < 0) {
        chosen = static_cast<int>(members.size());
        members.emplace_back();
        gshape.push_back(s);
      }
      group[i] = chosen;
      members[static_cast<std::size_t>(chosen)].push_back(i);
      ups.insert(chosen);
      up[i] = std::move(ups);
      // merge the groups of other producers of the same shape (siblings), when acyclic
      for (int in : n.inputs) {
        const int p = producer[static_cast<std::size_t>(in)];
        const int G2 = p >= 0 ? group[static_cast<std::size_t>(p)] : -1;
        if (G2 < 0 || G2 == chosen || gshape[static_cast<std::size_t>(G2)] != s) continue;
        if (!mergeable(chosen, G2)) continue;
        auto& into = members[static_cast<std::size_t>(chosen)];
        for (std::size_t m : members[static_cast<std::size_t>(G2)]) group[m] = chosen;
        into.insert(into.end(), members[static_cast<std::size_t>(G2)].begin(),
                    members[static_cast<std::size_t>(G2)].end());
        std::sort(into.begin(), into.end());
        members[static_cast<std::size_t>(G2)].clear();
        for (std::size_t k = 0; k <= i; ++k)
          if (up[k].erase(G2)) up[k].insert(chosen);
      }
      continue;
    }
    up[i] = std::move(ups);
  }

  // items of the new graph: kept nodes, and fused groups (by the index of their first node)
  std::vector<char> used_outside(g.values.size(), 0);
  for (int o : g.outputs) used_outside[static_cast<std::size_t>(o)] = 1;
  for (std::size_t i = 0; i < nn; ++i)
    for (int in : g.nodes[i].inputs) {
      const int p = producer[static_cast<std::size_t>(in)];
      if (p < 0 || group[i] < 0 || group[static_cast<std::size_t>(p)] != group[i])
        used_outside[static_cast<std::size_t>(in)] = 1;
    }
  std::vector<node> items;
  std::vector<std::size_t> key;  // original index of the item (its first node)
  for (std::size_t i = 0; i < nn; ++i) {
    const int G = group[i];
    if (G >= 0 && members[static_cast<std::size_t>(G)].size() >= 2) {
      if (members[static_cast<std::size_t>(G)].front() != i) continue;
      auto body = std::make_shared<graph>();
      node fused;
      fused.kind = op::fused;
      std::map<int, int> inner;  // outer value id -> body value id
      auto copy_value = [&](int v) {
        const value& ov = g.at(v);
        return body->add_value(ov.type, ov.shape, ov.name);
      };
      for (std::size_t m : members[static_cast<std::size_t>(G)]) {
        const node& n = g.nodes[m];
        node bn;
        bn.kind = n.kind;
        bn.attrs = n.attrs;
        for (int in : n.inputs) {
          if (!inner.count(in)) {
            const int id = copy_value(in);
            if (scalar_source(in)) {
              node sn = g.nodes[static_cast<std::size_t>(producer[static_cast<std::size_t>(in)])];
              sn.outputs = {id};
              body->nodes.push_back(std::move(sn));
            } else {
              body->inputs.push_back(id);
              fused.inputs.push_back(in);
            }
            inner[in] = id;
          }
          bn.inputs.push_back(inner[in]);
        }
        for (int o : n.outputs) bn.outputs.push_back(inner[o] = copy_value(o));
        body->nodes.push_back(std::move(bn));
      }
      for (std::size_t m : members[static_cast<std::size_t>(G)])
        for (int o : g.nodes[m].outputs)
          if (used_outside[static_cast<std::size_t>(o)]) {
            body->outputs.push_back(inner[o]);
            fused.outputs.push_back(o);
          }
      fused.body = std::move(body);
      items.push_back(std::move(fused));
    } else {
      items.push_back(g.nodes[i]);
    }
    key.push_back(i);
  }

  // drop scalar nodes read only by fused bodies, then a stable topological sort (Kahn)
  std::vector<int> reads(g.values.size(), 0), reads_before(g.values.size(), 0);
  for (const node& it : items)
    for (int in : it.inputs) ++reads[static_cast<std::size_t>(in)];
  for (const node& n : g.nodes)
    for (int in : n.inputs) ++reads_before[static_cast<std::size_t>(in)];
  std::vector<char> alive(items.size(), 1);
  for (std::size_t k = 0; k < items.size(); ++k)
    for (int o : items[k].outputs)  // a scalar only the fused bodies read now (copied there)
      if (items[k].kind == op::scalar && reads[static_cast<std::size_t>(o)] == 0 &&
          reads_before[static_cast<std::size_t>(o)] > 0 &&
          std::find(g.outputs.begin(), g.outputs.end(), o) == g.outputs.end())
        alive[k] = 0;
  std::vector<int> item_producer(g.values.size(), -1);
  for (std::size_t k = 0; k < items.size(); ++k)
    for (int o : items[k].outputs) item_producer[static_cast<std::size_t>(o)] = static_cast<int>(k);
  std::vector<int> pending(items.size(), 0);
  std::vector<std::vector<std::size_t>> next(items.size());
  for (std::size_t k = 0; k < items.size(); ++k) {
    if (!alive[k]) continue;
    std::set<int> deps;
    for (int in : items[k].inputs) {
      const int p = item_producer[static_cast<std::size_t>(in)];
      if (p >= 0 && p != static_cast<int>(k)) deps.insert(p);
    }
    pending[k] = static_cast<int>(deps.size());
    for (int p : deps) next[static_cast<std::size_t>(p)].push_back(k);
  }
  std::priority_queue<std::pair<std::size_t, std::size_t>, std::vector<std::pair<std::size_t, std::size_t>>,
                      std::greater<>> ready;
  for (std::size_t k = 0; k < items.size(); ++k)
    if (alive[k] && pending[k] == 0) ready.push({key[k], k});
  std::vector<node> ordered;
  ordered.reserve(items.size());
  while (!ready.empty()) {
    const std::size_t k = ready.top().second;
    ready.pop();
    for (std::size_t s : next[k])
      if (--pending[s] == 0) ready.push({key[s], s});
    ordered.push_back(std::move(items[k]));
  }
  const auto expected = static_cast<std::size_t>(std::count(alive.begin(), alive.end(), 1));
  ember::detail::check(ordered.size() == expected, errc::internal,
                       "jit::fuse_elementwise: the fused graph has a cycle");
  g.nodes = std::move(ordered);
}

/// The optimization pipeline: fold_batch_norm, fold_constants, CSE, dead code elimination,
/// fuse_elementwise, dead code elimination.
///   em::jit::optimize(g, runner);
template <class = void>
void optimize(graph& g, const node_runner& run) {
  fold_batch_norm(g);
  fold_constants(g, run);
  eliminate_common_subexpressions(g);
  eliminate_dead_code(g);
  fuse_elementwise(g);
  eliminate_dead_code(g);
}

}  // namespace ember::jit
