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
  erf = 26, logical_not = 27, gelu_tanh_grad = 28,
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
  // graph-level ops (jit): recorded by the tracer, run by the interpreter, exported to ONNX
  matmul = 102, linear = 103, conv2d = 104, batch_norm = 105, layer_norm = 106, group_norm = 107,
  max_pool2d = 108, avg_pool2d = 109, adaptive_avg_pool2d = 110, reshape = 111, permute = 112,
  expand = 113, slice = 114, select = 115, cat = 116, embedding = 117,
  scaled_dot_product_attention = 118, fused = 119, custom = 120, contiguous = 121, stack = 122,
  detach = 123,
  // device kernels (dispatch/registry.hpp)
  dropout = 124,
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
    case op::gelu_tanh_grad: return "gelu_tanh_grad";
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
    case op::matmul: return "matmul";
    case op::linear: return "linear";
    case op::conv2d: return "conv2d";
    case op::batch_norm: return "batch_norm";
    case op::layer_norm: return "layer_norm";
    case op::group_norm: return "group_norm";
    case op::max_pool2d: return "max_pool2d";
    case op::avg_pool2d: return "avg_pool2d";
    case op::adaptive_avg_pool2d: return "adaptive_avg_pool2d";
    case op::reshape: return "reshape";
    case op::permute: return "permute";
    case op::expand: return "expand";
    case op::slice: return "slice";
    case op::select: return "select";
    case op::cat: return "cat";
    case op::embedding: return "embedding";
    case op::scaled_dot_product_attention: return "scaled_dot_product_attention";
    case op::fused: return "fused";
    case op::custom: return "custom";
    case op::contiguous: return "contiguous";
    case op::stack: return "stack";
    case op::detach: return "detach";
    case op::dropout: return "dropout";
  }
  return "unknown";
}

/// Every op value, in enum order (for lookups by name: the graph parser, loaders).
inline constexpr op all_ops[] = {
    op::leaf, op::scalar, op::neg, op::abs, op::exp, op::expm1, op::log, op::log1p, op::log2,
    op::sqrt, op::rsqrt, op::square, op::sin, op::cos, op::tanh, op::sigmoid, op::relu, op::gelu,
    op::gelu_tanh, op::silu, op::softplus, op::sign, op::floor, op::ceil, op::round,
    op::reciprocal, op::erf, op::logical_not, op::gelu_tanh_grad, op::add, op::sub, op::mul, op::div, op::pow,
    op::maximum, op::minimum, op::eq, op::ne, op::lt, op::le, op::gt, op::ge, op::logical_and,
    op::logical_or, op::where, op::clamp, op::leaky_relu, op::elu, op::cast, op::sum, op::mean,
    op::prod, op::amax, op::amin, op::argmax, op::argmin, op::var, op::std, op::norm,
    op::logsumexp, op::softmax, op::log_softmax, op::matmul, op::linear, op::conv2d, op::batch_norm, op::layer_norm, op::group_norm, op::max_pool2d, op::avg_pool2d, op::adaptive_avg_pool2d, op::reshape, op::permute, op::expand, op::slice, op::select, op::cat, op::embedding, op::scaled_dot_product_attention, op::fused, op::custom, op::contiguous, op::stack,
    op::detach, op::dropout,
};

/// True for the elementwise ops (unary, binary, ternary, parameterized, cast; not leaves).
constexpr bool is_elementwise(op o) noexcept {
  const auto v = static_cast<std::uint16_t>(o);
  return v >= 2 && v <= 64;
}

}  // namespace ember
