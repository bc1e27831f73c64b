// The closed op enum: the vocabulary shared by expression functors, the graph IR, the CUDA
// program interpreter and ONNX export. APPEND-ONLY: the numeric values are stored in files.
#pragma once

#include <cstdint>
#include <string_view>

namespace ember {

enum class op : std::uint16_t {
  // leaves
  leaf = 0,
  scalar = 1,
  // unary elementwise
  neg = 2, abs = 3, exp = 4, expm1 = 5, log = 6, log1p = 7, log2 = 8, sqrt = 9, rsqrt = 10,
  square = 11, sin = 12, cos = 13, tanh = 14, sigmoid = 15, relu = 16, gelu = 17, gelu_tanh = 18,
  silu = 19, softplus = 20, sign = 21, floor = 22, ceil = 23, round = 24, reciprocal = 25,
  erf = 26, logical_not = 27,
  // binary elementwise
  add = 40, sub = 41, mul = 42, div = 43, pow = 44, maximum = 45, minimum = 46,
  eq = 47, ne = 48, lt = 49, le = 50, gt = 51, ge = 52, logical_and = 53, logical_or = 54,
  // parameterized / ternary elementwise
  where = 60, clamp = 61, leaky_relu = 62, elu = 63, cast = 64,
  // reductions
  sum = 80, mean = 81, prod = 82, amax = 83, amin = 84, argmax = 85, argmin = 86, var = 87,
  std = 88, norm = 89, logsumexp = 90,
  // non-elementwise ops follow from 100 (kernels, nn), appended by their issues
  softmax = 100, log_softmax = 101,
};

/// The op's name as it appears in graphs and messages.
constexpr std::string_view name(op o) noexcept {
  switch (o) {
    case op::leaf: return "leaf";
    case op::scalar: return "scalar";
    case op::neg: return "neg";
    case op::abs: return "abs";
    case op::exp: return "exp";
    case op::expm1: return "expm1";
    case op::log: return "log";
    case op::log1p: return "log1p";
    case op::log2: return "log2";
    case op::sqrt: return "sqrt";
    case op::rsqrt: return "rsqrt";
    case op::square: return "square";
    case op::sin: return "sin";
    case op::cos: return "cos";
    case op::tanh: return "tanh";
    case op::sigmoid: return "sigmoid";
    case op::relu: return "relu";
    case op::gelu: return "gelu";
    case op::gelu_tanh: return "gelu_tanh";
    case op::silu: return "silu";
    case op::softplus: return "softplus";
    case op::sign: return "sign";
    case op::floor: return "floor";
    case op::ceil: return "ceil";
    case op::round: return "round";
    case op::reciprocal: return "reciprocal";
    case op::erf: return "erf";
    case op::logical_not: return "logical_not";
    case op::add: return "add";
    case op::sub: return "sub";
    case op::mul: return "mul";
    case op::div: return "div";
    case op::pow: return "pow";
    case op::maximum: return "maximum";
    case op::minimum: return "minimum";
    case op::eq: return "eq";
    case op::ne: return "ne";
    case op::lt: return "lt";
    case op::le: return "le";
    case op::gt: return "gt";
    case op::ge: return "ge";
    case op::logical_and: return "logical_and";
    case op::logical_or: return "logical_or";
    case op::where: return "where";
    case op::clamp: return "clamp";
    case op::leaky_relu: return "leaky_relu";
    case op::elu: return "elu";
    case op::cast: return "cast";
    case op::sum: return "sum";
    case op::mean: return "mean";
    case op::prod: return "prod";
    case op::amax: return "amax";
    case op::amin: return "amin";
    case op::argmax: return "argmax";
    case op::argmin: return "argmin";
    case op::var: return "var";
    case op::std: return "std";
    case op::norm: return "norm";
    case op::logsumexp: return "logsumexp";
    case op::softmax: return "softmax";
    case op::log_softmax: return "log_softmax";
  }
  return "unknown";
}

}  // namespace ember
