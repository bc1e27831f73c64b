// Tests of include/ember/core/small_vector.hpp: inline storage up to N, spill to the heap.
#include <ember/core/small_vector.hpp>

#include <catch2/catch.hpp>
#include <cstdint>
#include <utility>

using sv = ember::detail::small_vector<std::int64_t, 4>;

TEST_CASE("small_vector stays inline up to N elements", "[small_vector]") {
  sv v{1, 2, 3, 4};
  CHECK(v.is_inline());
  CHECK(v.size() == 4);
  v.push_back(5);
  CHECK_FALSE(v.is_inline());
  CHECK(v == sv{1, 2, 3, 4, 5});
  CHECK(v.back() == 5);
  v.pop_back();
  CHECK(v == sv{1, 2, 3, 4});
}

TEST_CASE("small_vector copy, move, insert, erase, resize", "[small_vector]") {
  sv a{1, 2, 3, 4, 5, 6};  // heap
  sv b = a;
  CHECK(b == a);
  b[0] = 9;
  CHECK(a[0] == 1);
  sv c = std::move(b);
  CHECK(c[0] == 9);
  CHECK(b.empty());
  sv small{7, 8};
  sv d = std::move(small);  // inline move
  CHECK(d == sv{7, 8});
  d.insert(d.begin() + 1, 5);
  CHECK(d == sv{7, 5, 8});
  d.insert(d.end(), 9);
  CHECK(d == sv{7, 5, 8, 9});
  d.erase(d.begin());
  CHECK(d == sv{5, 8, 9});
  d.resize(6, 1);
  CHECK(d == sv{5, 8, 9, 1, 1, 1});
  d.resize(2);
  CHECK(d == sv{5, 8});
  a = d;
  CHECK(a == sv{5, 8});
  a = sv{1, 2, 3, 4, 5, 6, 7};
  CHECK(a.size() == 7);
  sv e(3, 2);
  CHECK(e == sv{2, 2, 2});
  a = a;  // self-assignment keeps the contents
  CHECK(a.size() == 7);
}
