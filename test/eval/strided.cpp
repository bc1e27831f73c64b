// Tests of include/ember/eval/strided.hpp: coalescing and strided element traversal.
#include <ember/eval/strided.hpp>

#include <catch2/catch.hpp>
#include <cstdint>
#include <numeric>
#include <vector>

namespace em = ember;

TEST_CASE("coalescing merges contiguous dims and drops size-1 dims", "[strided]") {
  const em::shape sizes{2, 3, 4};
  const em::shape dense{12, 4, 1};
  auto p = em::detail::coalesce<1>(sizes, {&dense});
  CHECK(p.sizes == em::shape{24});
  CHECK(p.strides[0] == em::shape{1});
  const em::shape transposed{1, 2, 6};  // a permuted layout: nothing merges
  auto q = em::detail::coalesce<2>(sizes, {&dense, &transposed});
  CHECK(q.sizes == em::shape{2, 3, 4});
  const em::shape with_one{1, 5, 1};
  const em::shape st1{5, 1, 1};
  auto r = em::detail::coalesce<1>(with_one, {&st1});
  CHECK(r.sizes == em::shape{5});
  auto s = em::detail::coalesce<1>(em::shape{}, {&st1});
  CHECK(s.sizes == em::shape{1});
}

TEST_CASE("for_each_element visits every element with per-operand strides", "[strided]") {
  // out[i][j] = in[j][i] for a 3x4 output reading a 4x3 input transposed
  std::vector<int> in(12), out(12, -1);
  std::iota(in.begin(), in.end(), 0);
  const em::shape sizes{3, 4};
  const em::shape out_st{4, 1}, in_st{1, 3};
  em::detail::for_each_element(sizes, {&out_st, &in_st}, [](int& o, const int& i) { o = i; },
                               out.data(), in.data());
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) CHECK(out[i * 4 + j] == in[j * 3 + i]);
}

TEST_CASE("broadcast (stride 0) and empty shapes", "[strided]") {
  std::vector<int> out(6, 0);
  int row[3] = {1, 2, 3};
  const em::shape sizes{2, 3}, out_st{3, 1}, row_st{0, 1};
  em::detail::for_each_element(sizes, {&out_st, &row_st}, [](int& o, const int& r) { o += r; },
                               out.data(), row);
  CHECK(out == std::vector<int>{1, 2, 3, 1, 2, 3});
  int calls = 0;
  const em::shape empty{2, 0, 3}, est{0, 3, 1};
  em::detail::for_each_element(empty, {&est}, [&](int&) { ++calls; }, out.data());
  CHECK(calls == 0);
  // rank 3 with a non-mergeable middle dim: odometer across two outer dims
  std::vector<int> big(2 * 3 * 4);
  std::iota(big.begin(), big.end(), 0);
  std::vector<int> seen;
  const em::shape s3{2, 3, 2}, st3{12, 4, 2};  // every other element of the last dim
  em::detail::for_each_element(s3, {&st3}, [&](int& v) { seen.push_back(v); }, big.data());
  CHECK(seen == std::vector<int>{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22});
}
