// Whole-model files: jit::save writes a graph_module's graph (text form, versioned) and its
// constants into one safetensors file; jit::load reads it back as a runnable graph_module in a
// program that does not contain the model's classes.
#pragma once

#include <ember/core/error.hpp>
#include <ember/io/safetensors.hpp>
#include <ember/jit/graph.hpp>
#include <ember/jit/module.hpp>
#include <ember/jit/text.hpp>

#include <memory>
#include <string>

namespace ember::jit {

/// The whole-model format's version; a file with a newer version is refused.
inline constexpr int format_version = 1;

/// Writes m's graph and constants to `path` (atomically: a crash never leaves half a file).
///   em::jit::save(traced, "net.ember");
template <int = 0>  // Note [Deferred instantiation]
void save(const graph_module& m, const std::string& path) {
  state_dict sd = m.state_dict();
  sd.metadata()["format"] = "ember.jit";
  sd.metadata()["version"] = std::to_string(format_version);
  sd.metadata()["graph"] = to_string(m.graph());
  io::save_safetensors(sd, path);
}

/// A graph_module from the tensors and metadata of a whole-model file (`path` names it in
/// errors). The file is untrusted: the graph is parsed and validated,
/// each constant must be present with the declared dtype and shape, and unknown ops, newer
/// format versions and custom ops not registered in this program are ember::errors.
inline graph_module load_state_dict(const state_dict& sd, const std::string& path) {
  const auto& md = sd.metadata();
  auto meta = [&](const char* key) -> const std::string& {
    auto it = md.find(key);
    detail::check(it != md.end(), errc::io, "jit::load: ", path, " is not a whole-model file "
                  "(no \"", key, "\" in its metadata; a parameters-only file loads with em::load)");
    return it->second;
  };
  detail::check(meta("format") == "ember.jit", errc::io, "jit::load: ", path,
                " has format \"", meta("format"), "\", expected \"ember.jit\"");
  const std::string& ver = meta("version");
  int v = 0;
  bool digits = !ver.empty() && ver.size() < 9;
  for (char c : ver) digits = digits && c >= '0' && c <= '9';
  detail::check(digits, errc::io, "jit::load: ", path, ": bad format version \"", ver, "\"");
  v = std::stoi(ver);
  detail::check(v >= 1 && v <= format_version, errc::io, "jit::load: ", path, " has format version ",
                v, "; this ember reads versions 1 to ", format_version, " (update ember)");
  auto g = std::make_shared<graph>(parse_graph(meta("graph")));
  for (auto& [id, t] : g->constants) {
    const value& val = g->at(id);
    const any_tensor* p = sd.find(val.name);
    detail::check(p != nullptr, errc::io, "jit::load: ", path, ": constant %", val.name,
                  " of the graph is missing from the file");
    bool same = p->dtype() == val.type && p->dim() == static_cast<std::int64_t>(val.shape.size());
    for (std::size_t d = 0; same && d < val.shape.size(); ++d) same = p->shape()[d] == val.shape[d];
    detail::check(same, errc::io, "jit::load: ", path, ": constant %", val.name, " is ", p->dtype(),
                  " of shape ", p->shape(), " in the file, but the graph declares ",
                  to_string(val.type), " with ", val.shape.size(), " dims");
    t = *p;
  }
  validate(*g);
  for (const node& n : g->nodes)
    if (n.kind == op::custom) {
      const auto& name = attr<std::string>(n, "name");
      detail::check(has_op(name), errc::value, "jit::load: ", path, " uses the custom op \"", name,
                    "\", which is not registered in this program (em::jit::register_function<F, "
                    "em::tensor<T>...>() before jit::load)");
    }
  return graph_module(std::move(g));
}

/// Reads a file written by jit::save (see load_state_dict: the file is treated as hostile).
///   auto m = em::jit::load("net.ember");  em::tensor<float> y = m({x});
inline graph_module load(const std::string& path) {
  return load_state_dict(io::load_safetensors(path), path);
}

}  // namespace ember::jit
