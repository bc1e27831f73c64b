// Tests of include/ember/core/shape.hpp: numel, printing, wrap_dim, broadcasting rules.
#include <ember/core/shape.hpp>

#include <catch2/catch.hpp>
#include <sstream>

namespace em = ember;
using Catch::Matchers::Contains;

TEST_CASE("shape basics: rank, numel, equality, printing", "[shape]") {
  em::shape s{2, 3, 4};
  CHECK(s.rank() == 3);
  CHECK(s.numel() == 24);
  CHECK(em::shape{}.numel() == 1);
  CHECK(em::shape{0, 5}.numel() == 0);
  CHECK(s == em::shape{2, 3, 4});
  CHECK_FALSE(s == em::shape{2, 3});
  std::ostringstream os;
  os << s << em::shape{} << em::shape{7};
  CHECK(os.str() == "(2,3,4)()(7)");
  CHECK(em::shape(std::vector<std::int64_t>{5, 6}) == em::shape{5, 6});
  CHECK(s.to_vector() == std::vector<std::int64_t>{2, 3, 4});
}

TEST_CASE("wrap_dim wraps negative dims and rejects out-of-range ones", "[shape]") {
  CHECK(em::wrap_dim(-1, 3) == 2);
  CHECK(em::wrap_dim(-3, 3) == 0);
  CHECK(em::wrap_dim(2, 3) == 2);
  CHECK(em::wrap_dim(0, 0) == 0);  // a 0-d tensor accepts 0 and -1 (PyTorch)
  CHECK(em::wrap_dim(-1, 0) == 0);
  try {
    em::wrap_dim(3, 3, "sum");
    FAIL("no error");
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::index);
    CHECK_THAT(e.what(), Contains("[ember.index] sum: dimension 3 is out of range") &&
                             Contains("-3..2"));
  }
  CHECK_THROWS_AS(em::wrap_dim(-4, 3), em::error);
}

TEST_CASE("contiguous strides are row-major", "[shape]") {
  CHECK(em::contiguous_strides({2, 3, 4}) == em::shape{12, 4, 1});
  CHECK(em::contiguous_strides({5}) == em::shape{1});
  CHECK(em::contiguous_strides({}) == em::shape{});
  CHECK(em::contiguous_strides({2, 0, 3}) == em::shape{3, 3, 1});
}

TEST_CASE("broadcast_shapes follows NumPy/PyTorch rules", "[shape][broadcast]") {
  CHECK(em::broadcast_shapes({3, 4}, {3, 4}) == em::shape{3, 4});
  CHECK(em::broadcast_shapes({2, 3, 4}, {4}) == em::shape{2, 3, 4});
  CHECK(em::broadcast_shapes({4, 1}, {1, 5}) == em::shape{4, 5});
  CHECK(em::broadcast_shapes({2, 1, 4}, {3, 1}) == em::shape{2, 3, 4});
  CHECK(em::broadcast_shapes({}, {2, 3}) == em::shape{2, 3});
  CHECK(em::broadcast_shapes({3, 4}, {}) == em::shape{3, 4});
  CHECK(em::broadcast_shapes({0, 1}, {1, 5}) == em::shape{0, 5});  // 0 with 1 broadcasts to 0
  CHECK(em::broadcast_shapes({1}, {0}) == em::shape{0});
  try {
    em::broadcast_shapes({2, 3}, {4, 3}, "add");
    FAIL("no error");
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::shape);
    CHECK_THAT(e.what(), Contains("[ember.shape] add: shapes (2,3) and (4,3) cannot be broadcast"));
  }
  CHECK_THROWS_AS(em::broadcast_shapes({3}, {4}), em::error);
  CHECK_THROWS_AS(em::broadcast_shapes({0}, {2}), em::error);
}

TEST_CASE("broadcastable_to and check_shape", "[shape]") {
  CHECK(em::broadcastable_to({3}, {2, 3}));
  CHECK(em::broadcastable_to({1, 3}, {2, 3}));
  CHECK(em::broadcastable_to({}, {2, 3}));
  CHECK_FALSE(em::broadcastable_to({2, 3}, {3}));
  CHECK_FALSE(em::broadcastable_to({2}, {2, 3}));
  CHECK_NOTHROW(em::check_shape({2, 0, 3}, "zeros"));
  CHECK_THROWS_WITH(em::check_shape({2, -1}, "zeros"), Contains("negative extent in shape (2,-1)"));
  CHECK_THROWS_WITH(em::check_shape({1 << 30, 1 << 30, 1 << 30}, "zeros"),
                    Contains("too many elements"));
  // a zero extent does not hide an overflow of the others (their strides would overflow)
  CHECK_THROWS_WITH(em::check_shape({0, 1995400741459, 1459, 65, 877}, "zeros"),
                    Contains("too many elements"));
}
