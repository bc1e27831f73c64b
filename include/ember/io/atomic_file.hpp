// atomic_write: writes a file so that a failed or interrupted save never destroys the previous
// version (temporary file in the same folder, flush, fsync, rename over the target).
#pragma once

#include <ember/core/error.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <unistd.h>

namespace ember::io {

/// Streams bytes into the temporary file of an atomic_write; every write is checked.
class file_writer {
 public:
  file_writer(std::FILE* f, std::string path) : f_(f), path_(std::move(path)) {}
  void write(const void* data, std::size_t n) {
    if (n == 0) return;
    ember::detail::check(std::fwrite(data, 1, n, f_) == n, errc::io, "save: writing ", n,
                  " bytes to '", path_, "' failed: ", std::strerror(errno));
    written_ += n;
  }
  void write(std::string_view s) { write(s.data(), s.size()); }
  std::size_t written() const noexcept { return written_; }

 private:
  std::FILE* f_;
  std::string path_;
  std::size_t written_ = 0;
};

/// Calls `fill(writer)` to produce the file's bytes into `path + ".tmp-XXXX"`, then flushes,
/// fsyncs and renames it over `path`. When `fill` throws or any write fails, the temporary
/// file is removed, `path` keeps its previous content, and an ember::error (io) is thrown.
///   em::io::atomic_write("w.bin", [&](em::io::file_writer& w) { w.write(buf, n); });
inline void atomic_write(const std::string& path, const std::function<void(file_writer&)>& fill) {
  ember::detail::check(!path.empty(), errc::io, "save: empty file path");
  std::random_device rd;
  const std::string tmp = path + ".tmp-" + std::to_string(rd()) + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wbx");
  ember::detail::check(f != nullptr, errc::io, "save: cannot create '", tmp, "' (for '", path,
                "'): ", std::strerror(errno));
  auto fail = [&](const std::string& why) {
    std::fclose(f);
    std::remove(tmp.c_str());
    ember::detail::raise(errc::io, "save: '" + path + "' not written (previous file kept): " + why);
  };
  try {
    file_writer w(f, tmp);
    fill(w);
  } catch (const error& e) {
    fail(e.what());
  } catch (const std::exception& e) {
    fail(e.what());
  }
  if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0) fail(std::strerror(errno));
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    ember::detail::raise(errc::io, "save: closing '" + tmp + "' failed: " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    ember::detail::raise(errc::io, "save: cannot rename '" + tmp + "' to '" + path + "': " + why);
  }
}

}  // namespace ember::io
