// Test helpers for ember::error: the category a call throws (a test failure when it throws
// nothing) and the message.
#pragma once

#include <ember/core/error.hpp>

#include <catch2/catch.hpp>

#include <string>

namespace ember_test {

/// The category of the ember::error f() throws; FAILs the test when it throws none.
template <class F>
ember::errc error_of(F&& f) {
  try {
    f();
  } catch (const ember::error& e) {
    return e.category();
  }
  FAIL("no ember::error thrown");
  return ember::errc::internal;
}

/// The message of the ember::error f() throws, or "" when it throws none.
template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const ember::error& e) {
    return e.what();
  }
  return "";
}

}  // namespace ember_test
