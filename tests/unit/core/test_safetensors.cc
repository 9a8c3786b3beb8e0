#include "runtime/core/errors.h"
#include "runtime/core/safetensors.h"
#include "runtime/core/safetensors_torch.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <tuple>
#include <string>
#include <utility>
#include <vector>

namespace pipet {
namespace {

using ::pipet::testing::error_message;
using ::pipet::testing::read_text;
using ::pipet::testing::TempDir;
using ::pipet::testing::write_text;

// --- helpers -------------------------------------------------------------------

std::string le64(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xFF);
  return out;
}

// A file exactly as the format lays it out: length, header bytes, data.
std::string file_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// Writes `bytes` to a file, expects open() to fail with FormatError, and
// checks the message names the file and contains every `details` piece.
void expect_format_error(const std::string& bytes, const std::vector<std::string>& details) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_text(path, bytes);
  const std::string message =
      error_message<FormatError>([&] { SafetensorsFile::open(path); });
  EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << "message does not start with the path: " << message;
  for (const std::string& detail : details)
    EXPECT_NE(message.find(detail), std::string::npos)
        << "missing '" << detail << "' in: " << message;
}

// One valid I8 entry, for building headers with a specific fault elsewhere.
std::string i8_entry(const std::string& name, uint64_t begin, uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"I8\",\"shape\":[" + std::to_string(end - begin) +
         "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

std::vector<std::pair<std::string, torch::Tensor>> reference_tensors() {
  // Must match reference_tensors() in safetensors_reference.py value for value.
  using torch::indexing::Slice;
  return {
      {"f64", torch::arange(6, torch::kFloat64).reshape({2, 3}) * 0.125 - 0.25},
      {"f32", ((torch::arange(6, torch::kFloat32) - 2.5) / 4).reshape({3, 2})},
      {"f16", (torch::arange(8, torch::kFloat32) * 0.5 - 2).to(torch::kFloat16).reshape({2, 2, 2})},
      {"bf16", (torch::arange(4, torch::kFloat32) * 1.5 - 3).to(torch::kBFloat16)},
      {"i64", torch::arange(5, torch::kInt64) * (int64_t{1} << 40) - 3},
      {"i32", torch::arange(6, torch::kInt32).reshape({2, 3}) * 100000 - 250000},
      {"i16", torch::arange(4, torch::kInt16) * 1000 - 1500},
      {"i8", torch::arange(7, torch::kInt8) * 20 - 60},
      {"u8", torch::arange(5, torch::kUInt8) * 50},
      {"bool", torch::arange(5).remainder(2) == 0},
      {"scalar", torch::tensor(3.25f)},
      {"empty", torch::zeros({0, 4}, torch::kFloat32)},
      {"gr\xC3\xB6\xC3\x9F" "e", torch::tensor({7, 8, 9}, torch::kUInt8)},
  };
}

void expect_same_tensor(const torch::Tensor& got, const torch::Tensor& want, const std::string& name) {
  ASSERT_TRUE(got.defined()) << name;
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
  EXPECT_EQ(got.sizes(), want.sizes()) << name;
  EXPECT_TRUE(torch::equal(got, want)) << name << ": got " << got << " want " << want;
}

// --- dtypes --------------------------------------------------------------------

TEST(SafetensorsDType, NamesSizesAndParsing) {
  const std::vector<std::tuple<DType, std::string, size_t>> expected = {
      {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
      {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
      {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1}, {DType::kU8, "U8", 1},
      {DType::kBool, "BOOL", 1}};
  for (const auto& [dtype, name, size] : expected) {
    EXPECT_EQ(dtype_name(dtype), name);
    EXPECT_EQ(dtype_size(dtype), size) << name;
    DType parsed = DType::kBool;
    ASSERT_TRUE(parse_dtype(name, &parsed)) << name;
    EXPECT_EQ(parsed, dtype) << name;
    EXPECT_EQ(dtype_size(dtype), c10::elementSize(to_scalar_type(dtype))) << name;
    EXPECT_EQ(from_scalar_type(to_scalar_type(dtype)), dtype) << name;
  }
  DType untouched = DType::kI16;
  EXPECT_FALSE(parse_dtype("f32", &untouched));
  EXPECT_FALSE(parse_dtype("U16", &untouched));
  EXPECT_FALSE(parse_dtype("", &untouched));
  EXPECT_EQ(untouched, DType::kI16);
}

TEST(SafetensorsDType, UnsupportedTorchTypeIsFormatError) {
  const std::string message =
      error_message<FormatError>([] { from_scalar_type(torch::kComplexFloat); });
  EXPECT_NE(message.find("ComplexFloat"), std::string::npos) << message;
}

TEST(SafetensorsTensorInfo, NumelOfScalarEmptyAndMatrix) {
  TensorInfo info;
  EXPECT_EQ(info.numel(), 1);  // shape [] is a scalar
  info.shape = {3, 0, 5};
  EXPECT_EQ(info.numel(), 0);
  info.shape = {3, 4, 5};
  EXPECT_EQ(info.numel(), 60);
}

// --- raw writer/reader round trips ---------------------------------------------

TEST(SafetensorsRoundTrip, EveryDTypeWithExactBytesAndLayout) {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  const std::vector<DType> dtypes = {DType::kF64, DType::kF32, DType::kF16, DType::kBF16,
                                     DType::kI64, DType::kI32, DType::kI16, DType::kI8,
                                     DType::kU8,  DType::kBool};
  std::vector<std::string> payloads;
  std::vector<TensorBytes> tensors;
  for (size_t i = 0; i < dtypes.size(); ++i) {
    const size_t nbytes = 6 * dtype_size(dtypes[i]);
    std::string bytes(nbytes, '\0');
    for (size_t k = 0; k < nbytes; ++k)
      bytes[k] = static_cast<char>(dtypes[i] == DType::kBool ? (k + i) % 2 : (k * 7 + i * 13) % 256);
    payloads.push_back(bytes);
  }
  for (size_t i = 0; i < dtypes.size(); ++i)
    tensors.push_back({std::string("t_") + dtype_name(dtypes[i]), dtypes[i], {2, 3},
                       payloads[i].data(), payloads[i].size()});
  write_safetensors(path, tensors, {{"format", "pt"}, {"step", "17"}});

  const std::string raw = read_text(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, raw.data(), 8);
  EXPECT_EQ(header_size % 8, 0u) << "header must be padded to a multiple of 8";
  EXPECT_EQ(raw[8], '{');

  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.path(), path);
  ASSERT_EQ(file.tensors().size(), dtypes.size());
  uint64_t expected_begin = 0;
  for (size_t i = 0; i < dtypes.size(); ++i) {
    // tensors() is in data order, which is the order they were given.
    const TensorInfo& info = file.tensors()[i];
    EXPECT_EQ(info.name, tensors[i].name);
    EXPECT_EQ(info.dtype, dtypes[i]);
    EXPECT_EQ(info.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(info.begin, expected_begin);
    EXPECT_EQ(info.nbytes(), payloads[i].size());
    expected_begin = info.end;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(file.data(info)), info.nbytes()),
              payloads[i])
        << info.name;
    EXPECT_EQ(file.find(info.name), &info);
  }
  EXPECT_EQ(raw.size(), 8 + header_size + expected_begin);
  EXPECT_EQ(file.find("absent"), nullptr);
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"step", "17"}}));
  EXPECT_TRUE(file.writable());
}

TEST(SafetensorsRoundTrip, ScalarZeroSizeAndEmptyFile) {
  TempDir dir;
  const float scalar = -1.5f;
  std::vector<TensorBytes> tensors = {
      {"empty_before", DType::kF32, {0, 4}, nullptr, 0},
      {"scalar", DType::kF32, {}, &scalar, sizeof(scalar)},
      {"empty_after", DType::kI64, {3, 0}, nullptr, 0},
  };
  write_safetensors(dir.file("a.safetensors"), tensors);
  const SafetensorsFile file = SafetensorsFile::open(dir.file("a.safetensors"));
  ASSERT_EQ(file.tensors().size(), 3u);
  const TensorInfo* s = file.find("scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->numel(), 1);
  float back = 0;
  std::memcpy(&back, file.data(*s), sizeof(back));
  EXPECT_EQ(back, scalar);
  EXPECT_EQ(file.find("empty_before")->shape, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(file.find("empty_after")->numel(), 0);
  EXPECT_TRUE(file.metadata().empty());

  write_safetensors(dir.file("none.safetensors"), {});
  const SafetensorsFile none = SafetensorsFile::open(dir.file("none.safetensors"));
  EXPECT_TRUE(none.tensors().empty());
}

TEST(SafetensorsRoundTrip, MovedFileKeepsDataValid) {
  TempDir dir;
  const int32_t values[3] = {1, -2, 3};
  write_safetensors(dir.file("m.safetensors"), {{"v", DType::kI32, {3}, values, sizeof(values)}});
  SafetensorsFile first = SafetensorsFile::open(dir.file("m.safetensors"));
  SafetensorsFile second = std::move(first);
  const TensorInfo* info = second.find("v");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(std::memcmp(second.data(*info), values, sizeof(values)), 0);
}

TEST(SafetensorsRoundTrip, NonAsciiNamesAndMetadata) {
  TempDir dir;
  const uint8_t byte = 42;
  const std::string name = "\xE6\x97\xA5\xE6\x9C\xAC.\xF0\x9F\x98\x80";  // "日本.😀"
  write_safetensors(dir.file("u.safetensors"), {{name, DType::kU8, {1}, &byte, 1}},
                    {{"caf\xC3\xA9", "na\xC3\xAFve"}});
  const SafetensorsFile file = SafetensorsFile::open(dir.file("u.safetensors"));
  ASSERT_NE(file.find(name), nullptr);
  EXPECT_EQ(*file.data(*file.find(name)), 42);
  EXPECT_EQ(file.metadata().at("caf\xC3\xA9"), "na\xC3\xAFve");
}

TEST(SafetensorsReader, AcceptsZeroSizeTensorBetweenOthers) {
  TempDir dir;
  const std::string header = "{" + i8_entry("a", 0, 4) +
                             ",\"z\":{\"dtype\":\"F32\",\"shape\":[0,9],\"data_offsets\":[4,4]}," +
                             i8_entry("b", 4, 8) + "}";
  write_text(dir.file("z.safetensors"), file_bytes(header, "abcdefgh"));
  const SafetensorsFile file = SafetensorsFile::open(dir.file("z.safetensors"));
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.tensors()[0].name, "a");
  EXPECT_EQ(file.tensors()[1].name, "z");
  EXPECT_EQ(file.tensors()[2].name, "b");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file.data(*file.find("b"))), 4), "efgh");
}

// --- writer errors -------------------------------------------------------------

TEST(SafetensorsWriter, DuplicateNameIsFormatErrorAndWritesNothing) {
  TempDir dir;
  const std::string path = dir.file("dup.safetensors");
  const int8_t bytes[2] = {1, 2};
  const std::string message = error_message<FormatError>([&] {
    write_safetensors(path, {{"w", DType::kI8, {2}, bytes, 2}, {"w", DType::kI8, {2}, bytes, 2}});
  });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("duplicate tensor name 'w'"), std::string::npos) << message;
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(SafetensorsWriter, ByteCountMismatchNamesTensorAndNumbers) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const std::vector<char> bytes(100);
  const std::string message = error_message<FormatError>([&] {
    write_safetensors(path, {{"vit.embeddings.cls_token", DType::kF32, {1, 1, 64}, bytes.data(), 100}});
  });
  EXPECT_NE(message.find(path + ": tensor 'vit.embeddings.cls_token': 100 bytes given but shape "
                                "[1, 1, 64] x F32 needs 256"),
            std::string::npos)
      << message;
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(SafetensorsWriter, RejectsNegativeShapeReservedNameAndBadUtf8) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  const int8_t b = 0;
  std::string message = error_message<FormatError>(
      [&] { write_safetensors(path, {{"neg", DType::kI8, {-1}, &b, 1}}); });
  EXPECT_NE(message.find("tensor 'neg': shape [-1] has a negative dimension"), std::string::npos)
      << message;
  message = error_message<FormatError>(
      [&] { write_safetensors(path, {{"__metadata__", DType::kI8, {1}, &b, 1}}); });
  EXPECT_NE(message.find("reserved"), std::string::npos) << message;
  message = error_message<FormatError>(
      [&] { write_safetensors(path, {{"bad\xFF", DType::kI8, {1}, &b, 1}}); });
  EXPECT_NE(message.find("not valid UTF-8"), std::string::npos) << message;
  message = error_message<FormatError>(
      [&] { write_safetensors(path, {}, {{"key", "\xC0\xAF"}}); });
  EXPECT_NE(message.find("metadata 'key'"), std::string::npos) << message;
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(SafetensorsWriter, UnwritableDestinationIsIoError) {
  TempDir dir;
  write_text(dir.file("plain"), "x");
  const std::string path = dir.file("plain") + "/m.safetensors";
  const std::string message =
      error_message<IoError>([&] { write_safetensors(path, {}); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
}

// --- reader errors: file framing ------------------------------------------------

TEST(SafetensorsReader, MissingFileIsIoErrorNotFormatError) {
  TempDir dir;
  const std::string path = dir.file("absent.safetensors");
  try {
    SafetensorsFile::open(path);
    FAIL() << "opened a missing file";
  } catch (const FormatError& e) {
    FAIL() << "FormatError for a missing file: " << e.what();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(SafetensorsReader, DirectoryIsIoError) {
  TempDir dir;
  const std::string message = error_message<IoError>([&] { SafetensorsFile::open(dir.path()); });
  EXPECT_NE(message.find("not a regular file"), std::string::npos) << message;
}

TEST(SafetensorsReader, ShorterThanLengthPrefix) {
  expect_format_error("", {"file is 0 bytes", "8-byte header length"});
  expect_format_error(std::string("\x02\0\0\0\0", 5), {"file is 5 bytes"});
}

TEST(SafetensorsReader, HeaderLengthBeyondFile) {
  expect_format_error(le64(100) + "{}", {"header length 100 runs past the end of the file (10 bytes)"});
  expect_format_error(le64(~uint64_t{0}) + "{}", {"header length 18446744073709551615 runs past"});
}

TEST(SafetensorsReader, HeaderLengthOverLimit) {
  TempDir dir;
  const std::string path = dir.file("huge.safetensors");
  write_text(path, le64(100'000'001));
  // Sparse: the file is long enough for the length, without using the disk.
  ASSERT_EQ(::truncate(path.c_str(), 8 + 100'000'001 + 8), 0);
  const std::string message = error_message<FormatError>([&] { SafetensorsFile::open(path); });
  EXPECT_NE(message.find(path + ": header length 100000001 exceeds the limit of 100000000 bytes"),
            std::string::npos)
      << message;
}

// --- reader errors: UTF-8 -------------------------------------------------------

TEST(SafetensorsReader, InvalidUtf8InHeader) {
  // Each bad sequence sits inside a JSON string, where only the UTF-8 check sees it.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xC0\xAF", "overlong encoding (lead byte 0xC0) at byte 2"},
      {"\xE0\x80\xAF", "overlong encoding (0xE0 0x80) at byte 2"},
      {"\xF0\x80\x80\xAF", "overlong encoding (0xF0 0x80) at byte 2"},
      {"\xED\xA0\x80", "UTF-16 surrogate (0xED 0xA0) at byte 2"},
      {"\xF4\x90\x80\x80", "code point beyond U+10FFFF (0xF4 0x90) at byte 2"},
      {"\x80", "unexpected continuation byte 0x80 at byte 2"},
      {"\xFF", "invalid byte 0xFF at byte 2"},
      {"\xE2\x82(", "invalid continuation byte 0x28 at byte 4"},
  };
  for (const auto& [bad, detail] : cases) {
    SCOPED_TRACE(detail);
    expect_format_error(file_bytes("{\"" + bad + "\":{}}", ""), {"header is not valid UTF-8: " + detail});
  }
  // A multi-byte sequence cut off by the end of the header.
  expect_format_error(file_bytes("{}  \xE2\x82", ""), {"truncated 3-byte sequence at byte 4"});
  expect_format_error(file_bytes("{}\xF0\x9F\x98", ""), {"truncated 4-byte sequence at byte 2"});
}

// --- reader errors: JSON structure -----------------------------------------------

TEST(SafetensorsReader, InvalidJsonQuotesParserMessage) {
  expect_format_error(file_bytes("{\"a\": ", ""), {"header is not valid JSON", "parse error"});
  expect_format_error(file_bytes("", ""), {"header is not valid JSON"});
  expect_format_error(file_bytes("{} trailing", ""), {"header is not valid JSON"});
}

TEST(SafetensorsReader, HeaderNotAnObject) {
  expect_format_error(file_bytes("[1, 2]", ""), {"header must be a JSON object, got array"});
  expect_format_error(file_bytes("42      ", ""), {"header must be a JSON object, got number"});
}

TEST(SafetensorsReader, EntryNotAnObject) {
  expect_format_error(file_bytes("{\"w\": [1, 2]}", ""),
                      {"tensor 'w': entry must be a JSON object", "[1,2]"});
}

TEST(SafetensorsReader, MissingOrBadDType) {
  expect_format_error(file_bytes("{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", "x"),
                      {"tensor 'w': missing 'dtype'"});
  expect_format_error(file_bytes("{\"w\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[0,2]}}", "xy"),
                      {"tensor 'w': unsupported dtype 'U16'", "F64, F32, F16, BF16"});
  expect_format_error(file_bytes("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", "wxyz"),
                      {"tensor 'w': 'dtype' must be a string, got 4"});
}

TEST(SafetensorsReader, BadShape) {
  const auto with_shape = [](const std::string& shape) {
    return file_bytes("{\"w\":{\"dtype\":\"I8\",\"shape\":" + shape + ",\"data_offsets\":[0,2]}}", "ab");
  };
  expect_format_error(with_shape("2"), {"tensor 'w': 'shape' must be an array of non-negative integers, got 2"});
  expect_format_error(with_shape("[-2]"), {"tensor 'w': 'shape' must be an array", "[-2]"});
  expect_format_error(with_shape("[2.0]"), {"tensor 'w': 'shape' must be an array", "[2.0]"});
  expect_format_error(with_shape("[\"2\"]"), {"tensor 'w': 'shape' must be an array"});
  expect_format_error(with_shape("[1e30]"), {"tensor 'w': 'shape' must be an array"});
  expect_format_error(file_bytes("{\"w\":{\"dtype\":\"I8\",\"data_offsets\":[0,2]}}", "ab"),
                      {"tensor 'w': missing 'shape'"});
}

TEST(SafetensorsReader, ElementCountOverflow) {
  expect_format_error(
      file_bytes("{\"w\":{\"dtype\":\"I8\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,2]}}", "ab"),
      {"tensor 'w': shape [4294967296, 4294967296, 2] has too many elements"});
  // Fits int64 as a count, but not once multiplied by 8 bytes per element.
  expect_format_error(
      file_bytes("{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,2]}}", "ab"),
      {"tensor 'w': shape [4611686018427387904] has too many elements"});
}

TEST(SafetensorsReader, BadDataOffsets) {
  const auto with_offsets = [](const std::string& offsets) {
    return file_bytes("{\"w\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":" + offsets + "}}", "ab");
  };
  const std::string two = "'data_offsets' must be two non-negative integers [begin, end], got ";
  expect_format_error(with_offsets("\"0,2\""), {"tensor 'w': " + two + "\"0,2\""});
  expect_format_error(with_offsets("[0]"), {"tensor 'w': " + two + "[0]"});
  expect_format_error(with_offsets("[0,1,2]"), {"tensor 'w': " + two + "[0,1,2]"});
  expect_format_error(with_offsets("[-1,1]"), {"tensor 'w': " + two + "[-1,1]"});
  expect_format_error(with_offsets("[0,2.0]"), {"tensor 'w': " + two + "[0,2.0]"});
  expect_format_error(with_offsets("[2,0]"), {"tensor 'w': data_offsets [2, 0] end before they begin"});
  expect_format_error(file_bytes("{\"w\":{\"dtype\":\"I8\",\"shape\":[2]}}", "ab"),
                      {"tensor 'w': missing 'data_offsets'"});
}

TEST(SafetensorsReader, OffsetsPastDataSection) {
  expect_format_error(
      file_bytes("{\"w\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[2,6]}}", "abcd"),
      {"tensor 'w': data_offsets [2, 6] run past the end of the data section (4 bytes)"});
}

TEST(SafetensorsReader, ByteCountNotMatchingShape) {
  expect_format_error(
      file_bytes("{\"vit.embeddings.cls_token\":{\"dtype\":\"F32\",\"shape\":[1,1,64],"
                 "\"data_offsets\":[0,100]}}",
                 std::string(100, '\0')),
      {"tensor 'vit.embeddings.cls_token': data_offsets [0, 100] hold 100 bytes but shape "
       "[1, 1, 64] x F32 needs 256"});
}

TEST(SafetensorsReader, OverlappingTensors) {
  expect_format_error(file_bytes("{" + i8_entry("a", 0, 8) + "," + i8_entry("b", 4, 12) + "}",
                                 std::string(12, 'x')),
                      {"tensor 'b': data_offsets [4, 12] overlap tensor 'a' at [0, 8]"});
  // Two tensors on the very same bytes.
  expect_format_error(file_bytes("{" + i8_entry("a", 0, 4) + "," + i8_entry("b", 0, 4) + "}",
                                 std::string(4, 'x')),
                      {"tensor 'b': data_offsets [0, 4] overlap tensor 'a'"});
  // An empty tensor placed inside another one.
  expect_format_error(
      file_bytes("{" + i8_entry("a", 0, 8) +
                     ",\"z\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                 std::string(8, 'x')),
      {"tensor 'z': data_offsets [4, 4] overlap tensor 'a'"});
}

TEST(SafetensorsReader, HolesAndUncoveredData) {
  expect_format_error(file_bytes("{" + i8_entry("a", 0, 4) + "," + i8_entry("b", 8, 12) + "}",
                                 std::string(12, 'x')),
                      {"bytes [4, 8) of the data section belong to no tensor (a hole before tensor 'b')"});
  expect_format_error(file_bytes("{" + i8_entry("b", 2, 4) + "}", std::string(4, 'x')),
                      {"bytes [0, 2)", "before tensor 'b'"});
  expect_format_error(file_bytes("{" + i8_entry("a", 0, 4) + "}", std::string(8, 'x')),
                      {"the data section is 8 bytes but the tensors cover only the first 4"});
  expect_format_error(file_bytes("{}", "trailing"),
                      {"the data section is 8 bytes but the tensors cover only the first 0"});
}

TEST(SafetensorsReader, BadMetadata) {
  expect_format_error(file_bytes("{\"__metadata__\":[\"a\"]}", ""),
                      {"'__metadata__' must be an object of string values, got [\"a\"]"});
  expect_format_error(file_bytes("{\"__metadata__\":{\"epoch\":3}}", ""),
                      {"'__metadata__' must be an object of string values; key 'epoch' holds 3"});
  expect_format_error(file_bytes("{\"__metadata__\":{\"x\":null}}", ""), {"key 'x' holds null"});
}

TEST(SafetensorsReader, DuplicateNames) {
  expect_format_error(file_bytes("{" + i8_entry("a", 0, 2) + "," + i8_entry("a", 2, 4) + "}",
                                 std::string(4, 'x')),
                      {"header has a duplicate tensor name 'a'"});
  expect_format_error(
      file_bytes("{\"w\":{\"dtype\":\"I8\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,2]}}", "ab"),
      {"header has a duplicate key 'dtype' inside 'w'"});
}

TEST(SafetensorsReader, BoolBytesMustBeZeroOrOne) {
  expect_format_error(
      file_bytes("{\"mask\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                 std::string("\x01\x00\x02\x01", 4)),
      {"tensor 'mask': BOOL element 2 holds byte 0x02; only 0 and 1 are valid"});
}

// --- robustness ---------------------------------------------------------------

// Every truncation and thousands of random byte corruptions of a valid file
// must end in success or a FormatError/IoError: never a crash, a hang or
// another exception. Successful opens are read end to end.
TEST(SafetensorsRobustness, TruncatedAndCorruptedFilesNeverCrash) {
  TempDir dir;
  const std::string valid_path = dir.file("valid.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"w", torch::arange(12, torch::kFloat32).reshape({3, 4})},
      {"b", torch::arange(3, torch::kFloat16)},
      {"mask", torch::tensor({true, false, true})},
      {"ids", torch::arange(5, torch::kInt64)},
      {"s", torch::tensor(int8_t{-7})}};
  save_safetensors(valid_path, tensors, {{"k", "v"}});
  const std::string valid = read_text(valid_path);
  const std::string path = dir.file("mutant.safetensors");
  // A fresh inode each time: rewriting a truncated file on ext4 forces a
  // flush to disk (auto_da_alloc), which would make this loop slow.
  const auto put = [&](const std::string& bytes) {
    std::filesystem::remove(path);
    write_text(path, bytes);
  };

  // Exact coverage means every proper prefix is invalid.
  for (size_t size = 0; size < valid.size(); ++size) {
    put(valid.substr(0, size));
    EXPECT_THROW(SafetensorsFile::open(path), FormatError) << "prefix of " << size << " bytes";
  }

  std::mt19937 rng(20240607);
  int opened = 0;
  int rejected = 0;
  for (int iteration = 0; iteration < 3000; ++iteration) {
    std::string mutant = valid;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      // Most flips land in the length prefix and header, where parsing happens.
      const size_t limit = (rng() % 4 == 0) ? mutant.size() : std::min<size_t>(mutant.size(), 200);
      mutant[rng() % limit] = static_cast<char>(rng() % 256);
    }
    if (rng() % 8 == 0) mutant.resize(rng() % mutant.size());
    put(mutant);
    try {
      std::map<std::string, torch::Tensor> loaded = load_safetensors(path);
      double checksum = 0;
      for (auto& [name, tensor] : loaded) checksum += tensor.to(torch::kFloat64).sum().item<double>();
      (void)checksum;
      ++opened;
    } catch (const IoError&) {  // FormatError included
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iteration << ": unexpected exception: " << e.what();
    }
  }
  // Flips in the data section leave valid files; most header flips do not.
  EXPECT_GT(opened, 0);
  EXPECT_GT(rejected, 0);
}

// --- torch layer ----------------------------------------------------------------

TEST(SafetensorsTorch, RoundTripEveryDTypeScalarAndEmpty) {
  TempDir dir;
  const auto tensors = reference_tensors();
  save_safetensors(dir.file("t.safetensors"), tensors, {{"format", "pt"}});
  const auto loaded = load_safetensors(dir.file("t.safetensors"));
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, want] : tensors) {
    ASSERT_EQ(loaded.count(name), 1u) << name;
    expect_same_tensor(loaded.at(name), want, name);
    EXPECT_EQ(loaded.at(name).device(), torch::Device(torch::kCPU)) << name;
  }
  EXPECT_EQ(loaded.at("scalar").dim(), 0);
  EXPECT_EQ(loaded.at("empty").sizes(), (std::vector<int64_t>{0, 4}));
}

TEST(SafetensorsTorch, SavesNonContiguousGradAndSparseTensors) {
  TempDir dir;
  const torch::Tensor base = torch::arange(12, torch::kFloat32).reshape({3, 4});
  const torch::Tensor transposed = base.t();             // non-contiguous
  const torch::Tensor strided = base.index({torch::indexing::Slice(), torch::indexing::Slice(0, 4, 2)});
  const torch::Tensor expanded = torch::tensor({1, 2}, torch::kInt32).expand({3, 2});  // stride 0
  const torch::Tensor param = torch::ones({2, 2}, torch::requires_grad());
  const torch::Tensor sparse = torch::eye(3, torch::kFloat64).to_sparse();
  save_safetensors(dir.file("v.safetensors"), {{"transposed", transposed},
                                               {"strided", strided},
                                               {"expanded", expanded},
                                               {"param", param},
                                               {"sparse", sparse}});
  const auto loaded = load_safetensors(dir.file("v.safetensors"));
  expect_same_tensor(loaded.at("transposed"), transposed.contiguous(), "transposed");
  expect_same_tensor(loaded.at("strided"), strided.contiguous(), "strided");
  expect_same_tensor(loaded.at("expanded"), expanded.contiguous(), "expanded");
  expect_same_tensor(loaded.at("param"), param.detach(), "param");
  EXPECT_FALSE(loaded.at("param").requires_grad());
  expect_same_tensor(loaded.at("sparse"), torch::eye(3, torch::kFloat64), "sparse");
}

TEST(SafetensorsTorch, AlignedTensorsShareTheMappingZeroCopy) {
  TempDir dir;
  const std::string path = dir.file("z.safetensors");
  const torch::Tensor a = torch::arange(16, torch::kFloat32);
  const torch::Tensor b = torch::arange(8, torch::kFloat64);
  save_safetensors(path, {{"a", a}, {"b", b}});
  const auto loaded = load_safetensors(path);
  // Views into one mapping sit exactly where the file puts them: b follows a.
  const auto* pa = static_cast<const char*>(loaded.at("a").data_ptr());
  const auto* pb = static_cast<const char*>(loaded.at("b").data_ptr());
  EXPECT_EQ(pb - pa, 16 * 4);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(pb) % 8, 0u);

  // The tensors own the mapping: they outlive the file on disk.
  std::filesystem::remove(path);
  torch::Tensor survivor = loaded.at("b");
  expect_same_tensor(survivor, b, "b");
}

TEST(SafetensorsTorch, WritingALoadedTensorNeverTouchesTheFile) {
  TempDir dir;
  const std::string path = dir.file("cow.safetensors");
  save_safetensors(path, {{"w", torch::ones({4, 4})}});
  const std::string before = read_text(path);
  {
    auto loaded = load_safetensors(path);
    loaded.at("w").mul_(3).add_(1);
    expect_same_tensor(loaded.at("w"), torch::full({4, 4}, 4.0f), "w");
  }
  EXPECT_EQ(read_text(path), before);
  expect_same_tensor(load_safetensors(path).at("w"), torch::ones({4, 4}), "w reloaded");
}

TEST(SafetensorsTorch, MisalignedTensorsAreCopiedWithCorrectValues) {
  TempDir dir;
  const std::string path = dir.file("odd.safetensors");
  // An I8 tensor of 3 bytes pushes the following F32 and I64 tensors off alignment.
  const std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"head", torch::tensor({1, 2, 3}, torch::kInt8)},
      {"f", torch::tensor({1.5f, -2.25f, 1e-3f})},
      {"l", torch::tensor({int64_t{1} << 50, int64_t{-5}})}};
  save_safetensors(path, tensors);
  const auto loaded = load_safetensors(path);
  for (const auto& [name, want] : tensors) expect_same_tensor(loaded.at(name), want, name);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(loaded.at("f").data_ptr()) % 4, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(loaded.at("l").data_ptr()) % 8, 0u);
}

TEST(SafetensorsTorch, SaveErrorsNameTheTensor) {
  TempDir dir;
  const std::string path = dir.file("e.safetensors");
  std::string message = error_message<FormatError>(
      [&] { save_safetensors(path, {{"ok", torch::ones({2})}, {"z", torch::ones({2}, torch::kComplexFloat)}}); });
  EXPECT_NE(message.find(path + ": tensor 'z': safetensors cannot hold tensors of type ComplexFloat"),
            std::string::npos)
      << message;
  message = error_message<FormatError>([&] { save_safetensors(path, {{"u", torch::Tensor()}}); });
  EXPECT_NE(message.find("tensor 'u' is undefined"), std::string::npos) << message;
  message = error_message<FormatError>(
      [&] { save_safetensors(path, {{"d", torch::ones({1})}, {"d", torch::zeros({1})}}); });
  EXPECT_NE(message.find("duplicate tensor name 'd'"), std::string::npos) << message;
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(SafetensorsTorch, LoadErrorsAreTheReadersErrors) {
  TempDir dir;
  const std::string path = dir.file("broken.safetensors");
  write_text(path, file_bytes("{" + i8_entry("a", 0, 4) + "}", "abc"));
  const std::string message = error_message<FormatError>([&] { load_safetensors(path); });
  EXPECT_NE(message.find(path + ": tensor 'a': data_offsets [0, 4] run past"), std::string::npos)
      << message;
}

// --- cross-check with an independent implementation ------------------------------

std::string run_command(const std::string& command, int* status) {
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) {
    *status = -1;
    return "popen failed";
  }
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  *status = ::pclose(pipe);
  return output;
}

TEST(SafetensorsCrossCheck, IndependentPythonImplementationAgrees) {
  const std::string python = "/usr/bin/python3";
  if (::access(python.c_str(), X_OK) != 0) GTEST_SKIP() << python << " is not available";
  TempDir dir;
  const std::string ours = dir.file("ours.safetensors");
  const std::string theirs = dir.file("theirs.safetensors");
  const auto tensors = reference_tensors();
  save_safetensors(ours, tensors, {{"format", "pt"}, {"origin", "pipet"}});

  const std::string script = std::string(PIPET_SOURCE_DIR) + "/tests/unit/core/safetensors_reference.py";
  int status = 0;
  const std::string output =
      run_command(python + " '" + script + "' '" + ours + "' '" + theirs + "' 2>&1", &status);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << output;
  ASSERT_EQ(WEXITSTATUS(status), 0) << "the reference reader disagrees with our file:\n" << output;

  const SafetensorsFile file = SafetensorsFile::open(theirs);
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{
                                 {"writer", "python reference"},
                                 {"note", "gr\xC3\xB6\xC3\x9F" "e \xE2\x9C\x93"}}));
  const auto loaded = load_safetensors(theirs);
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, want] : tensors) {
    ASSERT_EQ(loaded.count(name), 1u) << name;
    expect_same_tensor(loaded.at(name), want, name);
  }
}

}  // namespace
}  // namespace pipet
