#include "runtime/core/safetensors.h"

#include "runtime/core/errors.h"
#include "runtime/core/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>

// Tensor bytes are stored little-endian and handed out without conversion.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "pipet's safetensors I/O assumes a little-endian host");

namespace pipet {
namespace {

using Json = nlohmann::json;

// The reference implementation's limit; a larger header is corrupt or hostile.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr char kMetadataKey[] = "__metadata__";

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8},  {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},  {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

const DTypeEntry& dtype_entry(DType dtype) {
  for (const auto& entry : kDTypes)
    if (entry.dtype == dtype) return entry;
  throw Error(ExitCode::kInternal,
              "unknown DType value " + std::to_string(static_cast<int>(dtype)));
}

std::string supported_dtype_list() {
  std::string out;
  for (const auto& entry : kDTypes) out += (out.empty() ? "" : ", ") + std::string(entry.name);
  return out;
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::string format_offsets(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

std::string hex_byte(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "0x%02X", b);
  return buf;
}

// A JSON value shortened for an error message.
std::string excerpt(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

// Checks UTF-8 per RFC 3629: no overlong forms, no UTF-16 surrogates, nothing
// beyond U+10FFFF, no truncated sequences. Returns an empty string when
// valid, else what is wrong and at which byte offset.
std::string utf8_problem(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t lead = s[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint8_t second_min = 0x80, second_max = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) second_min = 0xA0;  // below: overlong
      if (lead == 0xED) second_max = 0x9F;  // above: surrogates U+D800..U+DFFF
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) second_min = 0x90;  // below: overlong
      if (lead == 0xF4) second_max = 0x8F;  // above: beyond U+10FFFF
    } else if (lead >= 0x80 && lead <= 0xBF) {
      return "unexpected continuation byte " + hex_byte(lead) + " at byte " + std::to_string(i);
    } else if (lead == 0xC0 || lead == 0xC1) {
      return "overlong encoding (lead byte " + hex_byte(lead) + ") at byte " + std::to_string(i);
    } else {
      return "invalid byte " + hex_byte(lead) + " at byte " + std::to_string(i);
    }
    if (i + length > n)
      return "truncated " + std::to_string(length) + "-byte sequence at byte " + std::to_string(i);
    const uint8_t second = s[i + 1];
    if (second < second_min || second > second_max) {
      std::string why = "invalid continuation byte";
      if (second >= 0x80 && second <= 0xBF) {
        if (lead == 0xED) why = "UTF-16 surrogate";
        else if (lead == 0xF4) why = "code point beyond U+10FFFF";
        else why = "overlong encoding";
      }
      return why + " (" + hex_byte(lead) + " " + hex_byte(second) + ") at byte " +
             std::to_string(i);
    }
    for (size_t k = 2; k < length; ++k) {
      if (s[i + k] < 0x80 || s[i + k] > 0xBF)
        return "invalid continuation byte " + hex_byte(s[i + k]) + " at byte " +
               std::to_string(i + k);
    }
    i += length;
  }
  return {};
}

std::string utf8_problem(const std::string& s) {
  return utf8_problem(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string error_text(int err) { return std::system_category().message(err); }

// Owns a file descriptor.
class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Owns an mmap'ed region.
class MappedRegion {
 public:
  MappedRegion() = default;
  MappedRegion(void* addr, size_t size) : addr_(addr), size_(size) {}
  ~MappedRegion() { reset(); }
  MappedRegion(MappedRegion&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedRegion& operator=(MappedRegion&& other) noexcept {
    if (this != &other) {
      reset();
      addr_ = std::exchange(other.addr_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;

  const uint8_t* bytes() const { return static_cast<const uint8_t*>(addr_); }
  size_t size() const { return size_; }

 private:
  void reset() noexcept {
    if (addr_) ::munmap(addr_, size_);
    addr_ = nullptr;
    size_ = 0;
  }
  void* addr_ = nullptr;
  size_t size_ = 0;
};

// Records duplicate keys, which nlohmann::json would silently collapse.
class DuplicateKeyFinder {
 public:
  bool operator()(int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        scopes_.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!scopes_.empty()) scopes_.pop_back();
        break;
      case Json::parse_event_t::key: {
        if (scopes_.empty() || !parsed.is_string()) break;
        const std::string& key = parsed.get_ref<const std::string&>();
        Scope& scope = scopes_.back();
        if (!scope.keys.insert(key).second && problem_.empty()) {
          problem_ = scopes_.size() == 1
                         ? "duplicate tensor name '" + key + "'"
                         : "duplicate key '" + key + "' inside '" + scopes_.front().last_key + "'";
        }
        scope.last_key = key;
        break;
      }
      default:
        break;
    }
    return true;
  }
  const std::string& problem() const { return problem_; }

 private:
  struct Scope {
    std::unordered_set<std::string> keys;
    std::string last_key;
  };
  std::vector<Scope> scopes_;
  std::string problem_;
};

[[noreturn]] void format_fail(const std::string& path, const std::string& message) {
  throw FormatError(path + ": " + message);
}

[[noreturn]] void tensor_fail(const std::string& path, const std::string& name,
                              const std::string& message) {
  throw FormatError(path + ": tensor '" + name + "': " + message);
}

// Product of the dimensions; false when it does not fit int64 (torch's limit).
bool checked_numel(const std::vector<int64_t>& shape, uint64_t* out) {
  uint64_t numel = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return false;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dim), &numel)) return false;
  }
  if (numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = numel;
  return true;
}

// A non-negative JSON integer (nlohmann stores those as unsigned).
bool as_unsigned(const Json& value, uint64_t* out) {
  if (!value.is_number_unsigned()) return false;
  *out = value.get<uint64_t>();
  return true;
}

TensorInfo parse_tensor_entry(const std::string& path, const std::string& name, const Json& entry,
                              uint64_t data_size) {
  if (!entry.is_object())
    tensor_fail(path, name, "entry must be a JSON object with dtype, shape and data_offsets, got " +
                                excerpt(entry));
  TensorInfo info;
  info.name = name;

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) tensor_fail(path, name, "missing 'dtype'");
  if (!dtype_it->is_string())
    tensor_fail(path, name, "'dtype' must be a string, got " + excerpt(*dtype_it));
  const std::string& dtype_text = dtype_it->get_ref<const std::string&>();
  if (!parse_dtype(dtype_text, &info.dtype))
    tensor_fail(path, name, "unsupported dtype '" + dtype_text + "' (supported: " +
                                supported_dtype_list() + ")");

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) tensor_fail(path, name, "missing 'shape'");
  if (!shape_it->is_array())
    tensor_fail(path, name, "'shape' must be an array of non-negative integers, got " +
                                excerpt(*shape_it));
  for (const Json& dim : *shape_it) {
    uint64_t value = 0;
    if (!as_unsigned(dim, &value) ||
        value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      tensor_fail(path, name, "'shape' must be an array of non-negative integers, got " +
                                  excerpt(*shape_it));
    info.shape.push_back(static_cast<int64_t>(value));
  }
  uint64_t numel = 0;
  uint64_t needed = 0;
  if (!checked_numel(info.shape, &numel) ||
      __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)), &needed))
    tensor_fail(path, name, "shape " + format_shape(info.shape) + " has too many elements");

  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) tensor_fail(path, name, "missing 'data_offsets'");
  const Json& offsets = *offsets_it;
  if (!offsets.is_array() || offsets.size() != 2 || !as_unsigned(offsets[0], &info.begin) ||
      !as_unsigned(offsets[1], &info.end))
    tensor_fail(path, name, "'data_offsets' must be two non-negative integers [begin, end], got " +
                                excerpt(offsets));
  if (info.begin > info.end)
    tensor_fail(path, name, "data_offsets " + format_offsets(info.begin, info.end) +
                                " end before they begin");
  if (info.end > data_size)
    tensor_fail(path, name, "data_offsets " + format_offsets(info.begin, info.end) +
                                " run past the end of the data section (" +
                                std::to_string(data_size) + " bytes)");
  if (info.nbytes() != needed)
    tensor_fail(path, name, "data_offsets " + format_offsets(info.begin, info.end) + " hold " +
                                std::to_string(info.nbytes()) + " bytes but shape " +
                                format_shape(info.shape) + " x " + dtype_name(info.dtype) +
                                " needs " + std::to_string(needed));
  return info;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const Json& value) {
  if (!value.is_object())
    format_fail(path, "'__metadata__' must be an object of string values, got " + excerpt(value));
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string())
      format_fail(path, "'__metadata__' must be an object of string values; key '" + key +
                            "' holds " + excerpt(item));
    metadata.emplace(key, item.get<std::string>());
  }
  return metadata;
}

// Tensors sorted by offset must tile the data section exactly: each begins
// where the previous ended and the last ends at the end of the section.
void check_coverage(const std::string& path, const std::vector<TensorInfo>& sorted,
                    uint64_t data_size) {
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& info : sorted) {
    if (info.begin < covered)
      tensor_fail(path, info.name, "data_offsets " + format_offsets(info.begin, info.end) +
                                       " overlap tensor '" + previous->name + "' at " +
                                       format_offsets(previous->begin, previous->end));
    if (info.begin > covered)
      format_fail(path, "bytes [" + std::to_string(covered) + ", " + std::to_string(info.begin) +
                            ") of the data section belong to no tensor (a hole before tensor '" +
                            info.name + "')");
    covered = info.end;
    previous = &info;
  }
  if (covered != data_size)
    format_fail(path, "the data section is " + std::to_string(data_size) +
                          " bytes but the tensors cover only the first " + std::to_string(covered));
}

// torch::Tensor of kBool must hold 0 or 1 in every byte; anything else is
// undefined behaviour in every consumer, so it is a format error here.
void check_bool_bytes(const std::string& path, const TensorInfo& info, const uint8_t* bytes) {
  for (uint64_t i = 0; i < info.nbytes(); ++i) {
    if (bytes[i] > 1)
      tensor_fail(path, info.name, "BOOL element " + std::to_string(i) + " holds byte " +
                                       hex_byte(bytes[i]) + "; only 0 and 1 are valid");
  }
}

}  // namespace

// --- dtypes ------------------------------------------------------------------

const char* dtype_name(DType dtype) { return dtype_entry(dtype).name; }

size_t dtype_size(DType dtype) { return dtype_entry(dtype).size; }

bool parse_dtype(const std::string& name, DType* out) {
  for (const auto& entry : kDTypes) {
    if (name == entry.name) {
      *out = entry.dtype;
      return true;
    }
  }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return n;
}

// --- reader ------------------------------------------------------------------

struct SafetensorsFile::Impl {
  std::string path;
  MappedRegion mapping;
  bool writable = true;
  const uint8_t* data_section = nullptr;
  std::vector<TensorInfo> tensors;
  std::unordered_map<std::string, size_t> index;
  std::map<std::string, std::string> metadata;
};

SafetensorsFile::SafetensorsFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;

  // O_NONBLOCK keeps open() from hanging on a FIFO; it is a no-op for files.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0)
    throw IoError("cannot open safetensors file '" + path + "': " + error_text(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw IoError("cannot stat safetensors file '" + path + "': " + error_text(errno));
  if (!S_ISREG(st.st_mode))
    throw IoError("safetensors file '" + path + "' is not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8)
    format_fail(path, "file is " + std::to_string(file_size) +
                          " bytes, too short for the 8-byte header length");

  // MAP_PRIVATE + PROT_WRITE: tensors may view the bytes mutably; writes are
  // copy-on-write and never reach the file.
  void* addr = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0);
  if (addr == MAP_FAILED && errno == ENOMEM) {
    // Strict overcommit accounts private writable mappings; read-only is not.
    impl->writable = false;
    addr = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  }
  if (addr == MAP_FAILED)
    throw IoError("cannot map safetensors file '" + path + "': " + error_text(errno));
  impl->mapping = MappedRegion(addr, file_size);
  const uint8_t* bytes = impl->mapping.bytes();

  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > file_size - 8)
    format_fail(path, "header length " + std::to_string(header_size) +
                          " runs past the end of the file (" + std::to_string(file_size) +
                          " bytes)");
  if (header_size > kMaxHeaderBytes)
    format_fail(path, "header length " + std::to_string(header_size) + " exceeds the limit of " +
                          std::to_string(kMaxHeaderBytes) + " bytes");
  const uint8_t* header = bytes + 8;
  const std::string utf8 = utf8_problem(header, header_size);
  if (!utf8.empty()) format_fail(path, "header is not valid UTF-8: " + utf8);

  DuplicateKeyFinder duplicates;
  Json root;
  try {
    const char* text = reinterpret_cast<const char*>(header);
    root = Json::parse(text, text + header_size, std::ref(duplicates));
  } catch (const Json::exception& e) {
    format_fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicates.problem().empty()) format_fail(path, "header has a " + duplicates.problem());
  if (!root.is_object())
    format_fail(path, "header must be a JSON object, got " + std::string(root.type_name()));

  const uint64_t data_size = file_size - 8 - header_size;
  impl->data_section = header + header_size;
  for (const auto& [name, entry] : root.items()) {
    if (name == kMetadataKey) {
      impl->metadata = parse_metadata(path, entry);
      continue;
    }
    impl->tensors.push_back(parse_tensor_entry(path, name, entry, data_size));
  }
  std::sort(impl->tensors.begin(), impl->tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              if (a.begin != b.begin) return a.begin < b.begin;
              if (a.end != b.end) return a.end < b.end;
              return a.name < b.name;
            });
  check_coverage(path, impl->tensors, data_size);
  for (size_t i = 0; i < impl->tensors.size(); ++i) {
    const TensorInfo& info = impl->tensors[i];
    if (info.dtype == DType::kBool) check_bool_bytes(path, info, impl->data_section + info.begin);
    impl->index.emplace(info.name, i);
  }
  return SafetensorsFile(std::move(impl));
}

const std::string& SafetensorsFile::path() const { return impl_->path; }

const std::vector<TensorInfo>& SafetensorsFile::tensors() const { return impl_->tensors; }

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = impl_->index.find(name);
  return it == impl_->index.end() ? nullptr : &impl_->tensors[it->second];
}

const uint8_t* SafetensorsFile::data(const TensorInfo& info) const {
  const TensorInfo* own = find(info.name);
  PIPET_CHECK(own && own->begin == info.begin && own->end == info.end,
              "tensor '" + info.name + "' does not belong to '" + impl_->path + "'");
  return impl_->data_section + own->begin;
}

const std::map<std::string, std::string>& SafetensorsFile::metadata() const {
  return impl_->metadata;
}

bool SafetensorsFile::writable() const { return impl_->writable; }

// --- writer ------------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Key order in the header carries no meaning (offsets do); a sorted map
  // keeps building it O(n log n) for models with many tensors.
  Json header = Json::object();
  if (!metadata.empty()) {
    Json& meta = header[kMetadataKey] = Json::object();
    for (const auto& [key, value] : metadata) {
      std::string problem = utf8_problem(key);
      if (!problem.empty()) format_fail(path, "metadata key is not valid UTF-8: " + problem);
      problem = utf8_problem(value);
      if (!problem.empty())
        format_fail(path, "metadata '" + key + "': value is not valid UTF-8: " + problem);
      meta[key] = value;
    }
  }

  std::unordered_set<std::string> names;
  uint64_t offset = 0;
  for (const TensorBytes& tensor : tensors) {
    const std::string& name = tensor.name;
    const std::string problem = utf8_problem(name);
    if (!problem.empty()) format_fail(path, "a tensor name is not valid UTF-8: " + problem);
    if (name == kMetadataKey)
      tensor_fail(path, name, "the name is reserved for the metadata block");
    if (!names.insert(name).second) format_fail(path, "duplicate tensor name '" + name + "'");
    uint64_t numel = 0;
    uint64_t needed = 0;
    for (int64_t dim : tensor.shape)
      if (dim < 0) tensor_fail(path, name, "shape " + format_shape(tensor.shape) + " has a negative dimension");
    if (!checked_numel(tensor.shape, &numel) ||
        __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(tensor.dtype)), &needed))
      tensor_fail(path, name, "shape " + format_shape(tensor.shape) + " has too many elements");
    if (tensor.nbytes != needed)
      tensor_fail(path, name, std::to_string(tensor.nbytes) + " bytes given but shape " +
                                  format_shape(tensor.shape) + " x " + dtype_name(tensor.dtype) +
                                  " needs " + std::to_string(needed));
    PIPET_CHECK(tensor.data != nullptr || tensor.nbytes == 0,
                "tensor '" + name + "' has " + std::to_string(tensor.nbytes) + " bytes at nullptr");
    header[name] = {{"dtype", dtype_name(tensor.dtype)},
                    {"shape", tensor.shape},
                    {"data_offsets", {offset, offset + needed}}};
    offset += needed;
  }

  std::string header_text = header.dump();
  // Spaces up to a multiple of 8 so the data section starts 8-byte aligned
  // (tensors inside it are aligned when the caller orders them suitably).
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  if (header_text.size() > kMaxHeaderBytes)
    format_fail(path, "header would be " + std::to_string(header_text.size()) +
                          " bytes, over the limit of " + std::to_string(kMaxHeaderBytes));

  uint8_t length[8];
  uint64_t n = header_text.size();
  for (uint8_t& b : length) {
    b = static_cast<uint8_t>(n & 0xFF);
    n >>= 8;
  }
  // Streamed straight from the callers' buffers: no second copy of the data.
  AtomicFileWriter writer(path);
  writer.write(length, sizeof(length));
  writer.write(header_text);
  for (const TensorBytes& tensor : tensors) writer.write(tensor.data, tensor.nbytes);
  writer.commit();
}

}  // namespace pipet
