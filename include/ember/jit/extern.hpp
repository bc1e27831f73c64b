// Compiling the graph interpreter once per program instead of once per translation unit.
//
// Note [Interpreter instantiation]: the interpreter is templates (`template <class = void>`) so
// that a program that never runs a graph does not compile it. A translation unit that does run
// one (jit::trace, graph_module::run, jit::load + call, optimize_graph) instantiates all of it:
// every op for every graph dtype, with its autograd, and every fused kernel: 191 s of CPU at
// -O0 with GCC 12 (measured on test/jit/instantiate.cpp, docs/jit.md). A program with several such
// translation units includes this header in each of them (after <ember/ember.hpp>), which turns
// those instantiations into explicit instantiation declarations ("extern template"), and
// writes EMBER_JIT_INSTANTIATE_INTERPRETER() at namespace scope in exactly one of them:
//   // every .cpp:             #include <ember/ember.hpp>
//   //                         #include <ember/jit/extern.hpp>
//   // one .cpp, in addition:  EMBER_JIT_INSTANTIATE_INTERPRETER()
// Without the definition the program fails to link (undefined ember::jit::run_graph<void> ...).
#pragma once

#include <ember/any_tensor.hpp>
#include <ember/jit/fused.hpp>
#include <ember/jit/graph.hpp>
#include <ember/jit/interpreter.hpp>
#include <ember/jit/module.hpp>
#include <ember/jit/passes.hpp>

#include <vector>

/// The interpreter's entry points, each preceded by `kw` ("extern" declares, empty defines).
#define EMBER_JIT_INTERPRETER_INSTANTIATIONS(kw)                                                   \
  kw template std::vector<::ember::any_tensor> ember::jit::run_graph<void>(                       \
      const ::ember::jit::graph&, const std::vector<::ember::any_tensor>&);                        \
  kw template std::vector<::ember::any_tensor> ember::jit::run_node<void>(                        \
      const ::ember::jit::graph&, const ::ember::jit::node&,                                      \
      const std::vector<::ember::any_tensor>&);                                                   \
  kw template ::ember::any_tensor ember::jit::detail::run_single<void>(                           \
      const ::ember::jit::graph&, const ::ember::jit::node&,                                      \
      const ::ember::jit::detail::node_args&);                                                    \
  kw template void ember::jit::run_fused<void>(const ::ember::jit::graph&,                        \
                                               const std::vector<::ember::any_tensor>&,           \
                                               std::vector<::ember::any_tensor>&);                \
  kw template ::ember::detail::fused_kernel ember::detail::fused_select_kernel<void>(             \
      const ::ember::jit::node&, const ::ember::jit::graph&);                                     \
  kw template void ember::jit::fold_batch_norm<void>(::ember::jit::graph&);                       \
  kw template void ember::jit::optimize<void>(::ember::jit::graph&,                               \
                                              const ::ember::jit::node_runner&);                  \
  kw template void ember::jit::optimize_graph<void>(::ember::jit::graph&);                        \
  kw template bool ember::jit::detail::close<void>(const ::ember::any_tensor&,                    \
                                                   const ::ember::any_tensor&, double);

/// The one definition of the interpreter's instantiations (one translation unit per program).
#define EMBER_JIT_INSTANTIATE_INTERPRETER() EMBER_JIT_INTERPRETER_INSTANTIATIONS()

EMBER_JIT_INTERPRETER_INSTANTIATIONS(extern)
