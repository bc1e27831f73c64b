// Must FAIL to compile (a Meson should_fail test): an elementwise operation on tensor<float>
// and tensor<double> stops at a static_assert whose message says the expression "mixes element
// types" and how to convert one side.
#include <ember/ember.hpp>

int main() {
  auto e = ember::zeros<float>({2}) + ember::zeros<double>({2});
  (void)e;
  return 0;
}
