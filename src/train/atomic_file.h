// Writing files so that a crash leaves the old file or the new one, never a torn one.
#pragma once
#include <cstddef>
#include <string>

namespace gannf {
// Writes to a temporary file beside `path`, fsyncs it, renames it over `path`
// and fsyncs the directory. Throws std::runtime_error naming the path.
void write_file_atomic(const std::string& path, const void* data, size_t n);
void write_file_atomic(const std::string& path, const std::string& text);
// fsync of a directory (after renames inside it).
void fsync_dir(const std::string& dir);
}  // namespace gannf
