// Tests of include/ember/io/print.hpp: PyTorch's layout and number formats (expected strings
// are PyTorch 1.13's repr, with ember's ", shape=..., dtype=..." suffix).
#include <ember/io/print.hpp>
#include <ember/ops/factory.hpp>

#include <catch2/catch.hpp>
#include <limits>
#include <sstream>
#include <string>

namespace em = ember;

template <class T>
static std::string str(const em::tensor<T>& t) {
  std::ostringstream os;
  os << t;
  return os.str();
}

TEST_CASE("fixed-point floats align on the widest value", "[print]") {
  auto t = em::from_vector<float>({1.5f, -2.25f, 3.0f, 4.0f}, {2, 2});
  CHECK(str(t) ==
        "tensor([[ 1.5000, -2.2500],\n"
        "        [ 3.0000,  4.0000]], shape=(2,2), dtype=f32)");
}

TEST_CASE("integer-valued floats print as '3.'", "[print]") {
  CHECK(str(em::from_vector<float>({1, 2, 10})) == "tensor([ 1.,  2., 10.], shape=(3), dtype=f32)");
  CHECK(str(em::from_vector<float>({-1, 2})) == "tensor([-1.,  2.], shape=(2), dtype=f32)");
  CHECK(str(em::zeros<double>({2})) == "tensor([0., 0.], shape=(2), dtype=f64)");
}

TEST_CASE("scientific notation for wide ranges and tiny values", "[print]") {
  CHECK(str(em::from_vector<float>({1e-5f, 1.0f})) ==
        "tensor([1.0000e-05, 1.0000e+00], shape=(2), dtype=f32)");
  CHECK(str(em::from_vector<double>({1.0, 2000.0, 0.5})) ==
        "tensor([1.0000e+00, 2.0000e+03, 5.0000e-01], shape=(3), dtype=f64)");
}

TEST_CASE("non-finite values", "[print]") {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(str(em::from_vector<float>({1.5f, nan, -inf})) ==
        "tensor([1.5000,    nan,   -inf], shape=(3), dtype=f32)");
}

TEST_CASE("integers, bools, 0-d and empty tensors", "[print]") {
  CHECK(str(em::arange<std::int64_t>(0, 5)) == "tensor([0, 1, 2, 3, 4], shape=(5), dtype=i64)");
  CHECK(str(em::from_vector<std::int64_t>({-12, 5})) == "tensor([-12,   5], shape=(2), dtype=i64)");
  CHECK(str(em::from_vector<bool>({true, false})) ==
        "tensor([ True, False], shape=(2), dtype=bool)");
  CHECK(str(em::full<float>({}, 3.5f)) == "tensor(3.5000, shape=(), dtype=f32)");
  CHECK(str(em::zeros<float>({0, 3})) == "tensor([], shape=(0,3), dtype=f32)");
  CHECK(str(em::tensor<float>()) == "tensor(undefined)");
  CHECK(str(em::from_vector<std::int64_t>({std::int64_t{1} << 60})) ==
        "tensor([1152921504606846976], shape=(1), dtype=i64)");  // exact, not via double
}

TEST_CASE("rank 3 separates blocks with a blank line", "[print]") {
  CHECK(str(em::zeros<float>({2, 2, 2})) ==
        "tensor([[[0., 0.],\n"
        "         [0., 0.]],\n"
        "\n"
        "        [[0., 0.],\n"
        "         [0., 0.]]], shape=(2,2,2), dtype=f32)");
}

TEST_CASE("long rows wrap at 80 columns", "[print]") {
  CHECK(str(em::arange<float>(0, 30)) ==
        "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,\n"
        "        14., 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27.,\n"
        "        28., 29.], shape=(30), dtype=f32)");
}

TEST_CASE("more than 1000 elements are summarized with 3 edge items", "[print]") {
  CHECK(str(em::arange<std::int64_t>(0, 2000)) ==
        "tensor([   0,    1,    2,  ..., 1997, 1998, 1999], shape=(2000), dtype=i64)");
  auto m = em::arange<std::int64_t>(0, 1600).view({40, 40});
  CHECK(str(m) ==
        "tensor([[   0,    1,    2,  ...,   37,   38,   39],\n"
        "        [  40,   41,   42,  ...,   77,   78,   79],\n"
        "        [  80,   81,   82,  ...,  117,  118,  119],\n"
        "        ...,\n"
        "        [1480, 1481, 1482,  ..., 1517, 1518, 1519],\n"
        "        [1520, 1521, 1522,  ..., 1557, 1558, 1559],\n"
        "        [1560, 1561, 1562,  ..., 1597, 1598, 1599]], shape=(40,40), dtype=i64)");
}

TEST_CASE("non-contiguous views print their logical order; half prints via float", "[print]") {
  auto m = em::arange<std::int64_t>(0, 6).view({2, 3}).t();
  CHECK(str(m) ==
        "tensor([[0, 3],\n"
        "        [1, 4],\n"
        "        [2, 5]], shape=(3,2), dtype=i64)");
  CHECK(str(em::full<em::half>({2}, 0.5f)) == "tensor([0.5000, 0.5000], shape=(2), dtype=f16)");
}
