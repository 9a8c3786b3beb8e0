#include "runtime/data/cifar.h"

#include "runtime/core/errors.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

namespace pipet {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- layout ----

std::string CifarLayout::display_name() const {
  return variant == CifarVariant::kCifar10 ? "CIFAR-10" : "CIFAR-100";
}

std::string CifarLayout::subfolder() const {
  return variant == CifarVariant::kCifar10 ? "cifar-10-batches-bin" : "cifar-100-binary";
}

std::vector<std::string> CifarLayout::train_files() const {
  if (variant == CifarVariant::kCifar100) return {"train.bin"};
  return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
          "data_batch_5.bin"};
}

std::vector<std::string> CifarLayout::eval_files() const {
  return {variant == CifarVariant::kCifar10 ? "test_batch.bin" : "test.bin"};
}

int64_t CifarLayout::label_bytes() const { return variant == CifarVariant::kCifar10 ? 1 : 2; }

int64_t CifarLayout::record_bytes() const { return label_bytes() + kCifarPixelBytes; }

int64_t CifarLayout::num_classes() const {
  if (variant == CifarVariant::kCifar10) return 10;
  return fine_labels ? 100 : 20;
}

std::string CifarLayout::class_names_file() const {
  if (variant == CifarVariant::kCifar10) return "batches.meta.txt";
  return fine_labels ? "fine_label_names.txt" : "coarse_label_names.txt";
}

// ------------------------------------------------------------- locating ----

namespace {

std::string join_path(const std::string& folder, const std::string& name) {
  return (fs::path(folder) / name).string();
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

std::vector<std::string> missing_files(const std::string& folder,
                                       const std::vector<std::string>& expected) {
  std::vector<std::string> missing;
  for (const auto& name : expected)
    if (!is_regular_file(join_path(folder, name))) missing.push_back(name);
  return missing;
}

std::string dir_prefix(const std::string& configured_dir) {
  return "data.dir '" + configured_dir + "': ";
}

}  // namespace

std::string locate_cifar_dir(const std::string& dir, const CifarLayout& layout) {
  std::vector<std::string> expected = layout.train_files();
  for (const auto& f : layout.eval_files()) expected.push_back(f);
  if (dir.empty())
    throw ConfigError("data.dir is not set: " + layout.display_name() +
                      " is read from the folder holding " + join_names(expected) +
                      " (the binary version from https://www.cs.toronto.edu/~kriz/cifar.html)");
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw DataError(dir_prefix(dir) + "the directory does not exist");
  if (!is_directory(dir)) throw DataError(dir_prefix(dir) + "not a directory");

  const std::string nested = join_path(dir, layout.subfolder());
  std::string folder = dir;
  std::vector<std::string> missing = missing_files(dir, expected);
  if (missing.size() == expected.size() && is_directory(nested)) {
    folder = nested;
    missing = missing_files(nested, expected);
  }
  if (missing.size() == expected.size())
    throw DataError(dir_prefix(dir) + "no " + layout.display_name() + " files found in " + dir +
                    " or " + nested + "; expected " + join_names(expected));
  if (!missing.empty())
    throw DataError(dir_prefix(dir) + "missing " + layout.display_name() + " files in " +
                    folder + ": " + join_names(missing) + " (expected " +
                    join_names(expected) + ")");
  return folder;
}

// -------------------------------------------------------------- reading ----

CifarSplitData read_cifar_split(const std::string& configured_dir, const std::string& folder,
                                const std::vector<std::string>& files,
                                const CifarLayout& layout) {
  const int64_t record = layout.record_bytes();
  const std::string where = dir_prefix(configured_dir);

  // Sizes first: every file is checked before anything is allocated or read.
  std::vector<int64_t> records_per_file;
  int64_t total = 0;
  for (const auto& name : files) {
    const std::string path = join_path(folder, name);
    std::error_code ec;
    const auto bytes = static_cast<int64_t>(fs::file_size(path, ec));
    if (ec) throw DataError(where + "cannot read the size of " + path + ": " + ec.message());
    if (bytes == 0)
      throw DataError(where + path + " is empty (0 bytes): truncated or not a " +
                      layout.display_name() + " file");
    if (bytes % record != 0)
      throw DataError(where + path + " is " + std::to_string(bytes) +
                      " bytes, not a multiple of the " + std::to_string(record) +
                      "-byte record: truncated or not a " + layout.display_name() + " file");
    records_per_file.push_back(bytes / record);
    total += bytes / record;
  }

  CifarSplitData data;
  data.images = torch::empty({total, kCifarChannels, kCifarImageSize, kCifarImageSize},
                             torch::kUInt8);
  data.labels.resize(static_cast<size_t>(total));
  uint8_t* images = data.images.data_ptr<uint8_t>();
  // Which label byte this dataset uses, and the bound of each label byte.
  const int64_t label_offset =
      layout.variant == CifarVariant::kCifar100 && layout.fine_labels ? 1 : 0;
  const int64_t label_limits[2] = {layout.variant == CifarVariant::kCifar10 ? 10 : 20, 100};
  const char* label_kinds[2] = {layout.variant == CifarVariant::kCifar10 ? "label" : "coarse label",
                                "fine label"};

  constexpr int64_t kChunkRecords = 1024;
  std::vector<char> chunk(static_cast<size_t>(kChunkRecords * record));
  int64_t next = 0;  // the next sample of the split
  for (size_t f = 0; f < files.size(); ++f) {
    const std::string path = join_path(folder, files[f]);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw DataError(where + "cannot open " + path + ": " + std::strerror(errno));
    for (int64_t first = 0; first < records_per_file[f]; first += kChunkRecords) {
      const int64_t count = std::min(kChunkRecords, records_per_file[f] - first);
      in.read(chunk.data(), static_cast<std::streamsize>(count * record));
      if (in.gcount() != count * record)
        throw DataError(where + "read of " + path + " stopped at byte " +
                        std::to_string(first * record + in.gcount()) + " of " +
                        std::to_string(records_per_file[f] * record) +
                        " (was the file changed while reading?)");
      for (int64_t r = 0; r < count; ++r) {
        const auto* rec = reinterpret_cast<const uint8_t*>(chunk.data() + r * record);
        for (int64_t b = 0; b < layout.label_bytes(); ++b) {
          if (rec[b] >= label_limits[b])
            throw DataError(where + "record " + std::to_string(first + r) + " of " + path +
                            " has " + label_kinds[b] + " " + std::to_string(rec[b]) +
                            ", outside 0.." + std::to_string(label_limits[b] - 1) +
                            ": corrupt or not a " + layout.display_name() + " file");
        }
        data.labels[static_cast<size_t>(next)] = rec[label_offset];
        std::memcpy(images + next * kCifarPixelBytes, rec + layout.label_bytes(),
                    kCifarPixelBytes);
        ++next;
      }
    }
  }
  return data;
}

std::vector<std::string> read_cifar_class_names(const std::string& configured_dir,
                                                const std::string& folder,
                                                const CifarLayout& layout) {
  const std::string path = join_path(folder, layout.class_names_file());
  if (!is_regular_file(path)) return {};
  std::ifstream in(path);
  if (!in)
    throw DataError(dir_prefix(configured_dir) + "cannot open " + path + ": " +
                    std::strerror(errno));
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    const auto begin = line.find_first_not_of(" \t\r");
    if (begin == std::string::npos) continue;  // the files end with blank lines
    const auto end = line.find_last_not_of(" \t\r");
    names.push_back(line.substr(begin, end - begin + 1));
  }
  if (static_cast<int64_t>(names.size()) != layout.num_classes())
    throw DataError(dir_prefix(configured_dir) + path + " lists " + std::to_string(names.size()) + " class names, but " +
                    layout.display_name() + " has " + std::to_string(layout.num_classes()) +
                    (layout.variant == CifarVariant::kCifar100
                         ? (layout.fine_labels ? " fine" : " coarse")
                         : "") +
                    " classes");
  return names;
}

// -------------------------------------------------------------- dataset ----

CifarDataset::CifarDataset(const CifarLayout& layout, std::string split, CifarSplitData data,
                           std::vector<std::string> class_names, ImageTransform transform)
    : ImageDataset(layout.variant == CifarVariant::kCifar10 ? "cifar10" : "cifar100",
                   std::move(split), std::move(transform)),
      layout_(layout),
      images_(std::move(data.images)),
      labels_(std::move(data.labels)),
      class_names_(std::move(class_names)) {
  const ImageTransform& t = this->transform();
  PIPET_CHECK(t.channels == kCifarChannels && t.height == kCifarImageSize &&
                  t.width == kCifarImageSize,
              "CIFAR images are stored as 3x32x32");
  PIPET_CHECK(images_.size(0) == static_cast<int64_t>(labels_.size()), "one label per image");
}

const uint8_t* CifarDataset::pixels(int64_t index, uint8_t* /*scratch*/) const {
  return images_.data_ptr<uint8_t>() + index * kCifarPixelBytes;
}

DatasetSplits load_cifar(const std::string& configured_dir, const CifarLayout& layout,
                         const ImageTransform& train_transform,
                         const ImageTransform& eval_transform) {
  const std::string folder = locate_cifar_dir(configured_dir, layout);
  std::vector<std::string> names = read_cifar_class_names(configured_dir, folder, layout);
  CifarSplitData train = read_cifar_split(configured_dir, folder, layout.train_files(), layout);
  CifarSplitData eval = read_cifar_split(configured_dir, folder, layout.eval_files(), layout);
  spdlog::info("[data] {} from {}: {} train, {} eval samples, {} classes{}",
               layout.display_name(), folder, train.labels.size(), eval.labels.size(),
               layout.num_classes(), names.empty() ? " (no class names file)" : "");
  DatasetSplits splits;
  splits.train = std::make_shared<CifarDataset>(layout, "train", std::move(train), names,
                                                train_transform);
  splits.eval = std::make_shared<CifarDataset>(layout, "eval", std::move(eval),
                                               std::move(names), eval_transform);
  return splits;
}

}  // namespace pipet
