// safetensors (https://huggingface.co/docs/safetensors) reader and writer,
// written to the format: 8-byte little-endian header length N, N bytes of
// UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
// {str: str}}, then the data section. The reader memory-maps the file and
// validates everything before handing out a byte: header length beyond the
// file, invalid UTF-8 or JSON, unknown dtype, offsets out of range, overlapping
// or leaving holes, byte count not matching shape x dtype. Each is a
// FormatError naming the file and the tensor. No torch in this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pipet {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

const char* dtype_name(DType dtype);       // "F32", ...
size_t dtype_size(DType dtype);            // bytes per element
// Parses a safetensors dtype name; returns false when unknown.
bool parse_dtype(const std::string& name, DType* out);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

// A validated, memory-mapped safetensors file. Movable, not copyable.
class SafetensorsFile {
 public:
  // Throws IoError (cannot open/map) or FormatError (bad contents).
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const;
  // In data-offset order.
  const std::vector<TensorInfo>& tensors() const;
  const TensorInfo* find(const std::string& name) const;  // nullptr if absent
  // Pointer to the tensor's bytes inside the mapping (valid while this lives).
  const uint8_t* data(const TensorInfo& info) const;
  const std::map<std::string, std::string>& metadata() const;
  // True when the mapping is private copy-on-write and writable, so the bytes
  // may back mutable tensors (writes never reach the file). False only when
  // the kernel refused a writable mapping (strict overcommit) and a read-only
  // one was used instead.
  bool writable() const;

 private:
  struct Impl;
  explicit SafetensorsFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One tensor to write: little-endian bytes of a contiguous tensor.
struct TensorBytes {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes a safetensors file atomically (temp + rename). Header padded with
// spaces to a multiple of 8 bytes so tensor data is aligned. Throws
// IoError/FormatError (duplicate names, byte count not matching shape).
void write_safetensors(const std::string& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace pipet
