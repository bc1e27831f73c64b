// ember::error, the single exception type, its categories (errc) and the throw helpers.
// Messages read "[ember.<category>] <op>: <what>, naming shapes/dtypes/devices".
#pragma once

#include <ember/core/config.hpp>

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace ember {

/// Error categories; the category name appears in every message as "[ember.<name>]".
enum class errc {
  shape,            ///< incompatible or invalid shapes
  dtype,            ///< unsupported or mismatched element types
  device,           ///< wrong or unavailable device, devices mixed in one op
  index,            ///< an index or dimension out of range
  value,            ///< an invalid argument value (negative size, step <= 0, ...)
  io,               ///< file reading/writing, corrupt or truncated files
  autograd,         ///< misuse of the autograd tape
  not_implemented,  ///< a valid request ember does not support (yet)
  memory,           ///< allocation failure
  internal,         ///< a broken invariant inside ember (a bug: please report it)
};

/// The category's name as it appears in messages ("shape", "dtype", ...).
constexpr std::string_view to_string(errc c) noexcept {
  switch (c) {
    case errc::shape: return "shape";
    case errc::dtype: return "dtype";
    case errc::device: return "device";
    case errc::index: return "index";
    case errc::value: return "value";
    case errc::io: return "io";
    case errc::autograd: return "autograd";
    case errc::not_implemented: return "not_implemented";
    case errc::memory: return "memory";
    case errc::internal: return "internal";
  }
  return "unknown";
}

/// The one exception type ember throws.
///   try { em::zeros<float>({2}).view({3}); }
///   catch (const em::error& e) { e.category() == em::errc::shape; }
class error : public std::runtime_error {
 public:
  error(errc category, const std::string& message)
      : std::runtime_error("[ember." + std::string(to_string(category)) + "] " + message),
        category_(category) {}
  errc category() const noexcept { return category_; }

 private:
  errc category_;
};

/// Called instead of throwing when exceptions are disabled (-fno-exceptions). It must not
/// return; if it does, ember aborts. The default prints the message to stderr and aborts.
using error_handler = void (*)(const error&);

namespace detail {
inline error_handler& error_handler_slot() noexcept {
  static error_handler h = nullptr;
  return h;
}
}  // namespace detail

/// Installs the handler used when exceptions are disabled; returns the previous one.
inline error_handler set_error_handler(error_handler h) noexcept {
  return std::exchange(detail::error_handler_slot(), h);
}

namespace detail {

[[noreturn]] inline void raise(errc category, const std::string& message) {
#if EMBER_EXCEPTIONS
  throw error(category, message);
#else
  error e(category, message);
  if (auto h = error_handler_slot()) h(e);
  std::fputs(e.what(), stderr);
  std::fputc('\n', stderr);
  std::abort();
#endif
}

/// Builds the message from any streamable parts: fail(errc::shape, "view: ", s, " vs ", t).
template <class... Parts>
[[noreturn]] void fail(errc category, const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  raise(category, os.str());
}

/// check(cond, category, parts...): fail with the message when cond is false. The parts are
/// only formatted on failure.
template <class... Parts>
EMBER_ALWAYS_INLINE void check(bool cond, errc category, const Parts&... parts) {
  if (EMBER_UNLIKELY(!cond)) fail(category, parts...);
}

}  // namespace detail
}  // namespace ember
