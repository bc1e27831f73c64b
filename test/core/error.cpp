// Tests of include/ember/core/error.hpp: categories, message prefix, formatting helpers.
#include <ember/core/error.hpp>
#include <ember/core/shape.hpp>

#include <catch2/catch.hpp>
#include <string>

namespace em = ember;

TEST_CASE("ember::error carries a category and a prefixed message", "[error]") {
  const em::error e(em::errc::shape, "matmul: cannot multiply (2,3) by (4,5)");
  CHECK(e.category() == em::errc::shape);
  CHECK(std::string(e.what()) == "[ember.shape] matmul: cannot multiply (2,3) by (4,5)");
  const std::runtime_error& base = e;  // catchable as a standard exception
  CHECK(std::string(base.what()).rfind("[ember.shape]", 0) == 0);
  CHECK(em::to_string(em::errc::not_implemented) == "not_implemented");
  CHECK(em::to_string(em::errc::autograd) == "autograd");
}

TEST_CASE("detail::fail formats any streamable parts; check only fails when false", "[error]") {
  try {
    em::detail::fail(em::errc::value, "op: got ", 3, " and shape ", em::shape{2, 3});
    FAIL("no error");
  } catch (const em::error& e) {
    CHECK(e.category() == em::errc::value);
    CHECK(std::string(e.what()) == "[ember.value] op: got 3 and shape (2,3)");
  }
  CHECK_NOTHROW(em::detail::check(true, em::errc::index, "never"));
  CHECK_THROWS_WITH(em::detail::check(false, em::errc::index, "x ", 1),
                    "[ember.index] x 1");
}

TEST_CASE("the error handler can be installed (used with -fno-exceptions)", "[error]") {
  auto prev = em::set_error_handler(+[](const em::error&) {});
  CHECK(prev == nullptr);
  auto mine = em::set_error_handler(prev);
  CHECK(mine != nullptr);
}
