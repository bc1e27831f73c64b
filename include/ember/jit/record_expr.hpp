// Records a materialized elementwise expression into a trace: one graph node per expression
// node (leaves are the tensors' values, scalars are op::scalar nodes).
#pragma once

#include <ember/expr/binary.hpp>
#include <ember/expr/cast.hpp>
#include <ember/expr/leaf.hpp>
#include <ember/expr/ternary.hpp>
#include <ember/expr/unary.hpp>
#include <ember/jit/record.hpp>

namespace ember::jit::detail {

template <class T>
int emit_expr(recorder& r, const expr::leaf<T>& e) {
  return r.value_of(e.t.impl_ptr());
}
template <class T>
int emit_expr(recorder& r, const expr::scalar<T>& e) {
  return r.emit(op::scalar, {}, {{"value", static_cast<double>(e.value)}}, {{dtype_of<T>, shape{}}});
}
template <class F, class A>
int emit_expr(recorder& r, const expr::unary<F, A>& e) {
  const int a = emit_expr(r, e.a);
  return r.emit(F::id, {a}, {}, {{dtype_of<typename expr::unary<F, A>::value_type>, e.shape()}});
}
template <class F, class A, class B>
int emit_expr(recorder& r, const expr::binary<F, A, B>& e) {
  const int a = emit_expr(r, e.a);
  const int b = emit_expr(r, e.b);
  return r.emit(F::id, {a, b}, {},
                {{dtype_of<typename expr::binary<F, A, B>::value_type>, e.shape()}});
}
template <class F, class A, class B, class C>
int emit_expr(recorder& r, const expr::ternary<F, A, B, C>& e) {
  const int a = emit_expr(r, e.a);
  const int b = emit_expr(r, e.b);
  const int c = emit_expr(r, e.c);
  return r.emit(F::id, {a, b, c}, {},
                {{dtype_of<typename expr::ternary<F, A, B, C>::value_type>, e.shape()}});
}
template <class U, class A>
int emit_expr(recorder& r, const expr::cast<U, A>& e) {
  const int a = emit_expr(r, e.a);
  return r.emit(op::cast, {a}, {}, {{dtype_of<U>, e.shape()}});
}

/// Records `out = e` (a fresh tensor holding the expression's value).
template <class E, class Out>
void record_expression(const op_scope& s, const E& e, const Out& out) {
  const int id = emit_expr(s.get(), e);
  s.get().bind(out.impl_ptr(), id);
}

}  // namespace ember::jit::detail
