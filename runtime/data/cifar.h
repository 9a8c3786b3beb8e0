// CIFAR-10 and CIFAR-100 from the "binary version" downloads
// (https://www.cs.toronto.edu/~kriz/cifar.html).
//
// CIFAR-10: data_batch_1.bin .. data_batch_5.bin (train) and test_batch.bin
// (eval); each record is 1 label byte + 3072 pixel bytes (1024 red, 1024
// green, 1024 blue, rows top to bottom: CHW). Class names: batches.meta.txt.
// CIFAR-100: train.bin / test.bin; each record is a coarse label byte, a fine
// label byte, then 3072 pixel bytes. Class names: fine_label_names.txt /
// coarse_label_names.txt.
//
// data.dir may be the folder holding the .bin files or its parent holding the
// standard sub-folder (cifar-10-batches-bin / cifar-100-binary). The files are
// read whole into memory (at most ~180 MB for CIFAR-100).
#pragma once

#include "runtime/data/image_dataset.h"

#include <cstdint>
#include <string>
#include <vector>

namespace pipet {

enum class CifarVariant { kCifar10, kCifar100 };

struct CifarLayout {
  CifarVariant variant = CifarVariant::kCifar10;
  bool fine_labels = true;  // CIFAR-100: fine (100 classes) or coarse (20)

  std::string display_name() const;             // "CIFAR-10"
  std::string subfolder() const;                // "cifar-10-batches-bin"
  std::vector<std::string> train_files() const;
  std::vector<std::string> eval_files() const;
  int64_t label_bytes() const;                  // 1 or 2
  int64_t record_bytes() const;                 // 3073 or 3074
  int64_t num_classes() const;                  // 10, 100 or 20
  std::string class_names_file() const;         // "batches.meta.txt", ...
};

constexpr int64_t kCifarImageSize = 32;
constexpr int64_t kCifarChannels = 3;
constexpr int64_t kCifarPixelBytes = kCifarChannels * kCifarImageSize * kCifarImageSize;

// The folder that holds the files: `dir` itself, or its standard sub-folder.
// Throws ConfigError when `dir` is empty, DataError when it does not exist or
// when any train or eval file is missing (all missing files are listed).
std::string locate_cifar_dir(const std::string& dir, const CifarLayout& layout);

struct CifarSplitData {
  torch::Tensor images;          // uint8 [N,3,32,32]
  std::vector<uint8_t> labels;   // N labels of the selected kind
};

// Reads the records of `files` (names inside `folder`) in order. Errors
// (DataError) name data.dir (`configured_dir`) and the file: a file that is
// empty or not a whole number of records, a label out of range (with the
// record index), a read failure.
CifarSplitData read_cifar_split(const std::string& configured_dir, const std::string& folder,
                                const std::vector<std::string>& files,
                                const CifarLayout& layout);

// Class names from the layout's names file in `folder`; empty when the file
// is absent. DataError when it does not list exactly num_classes names.
std::vector<std::string> read_cifar_class_names(const std::string& configured_dir,
                                                const std::string& folder,
                                                const CifarLayout& layout);

class CifarDataset final : public ImageDataset {
 public:
  // `transform` must describe 3 x 32 x 32 stored images.
  CifarDataset(const CifarLayout& layout, std::string split, CifarSplitData data,
               std::vector<std::string> class_names, ImageTransform transform);

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  int64_t num_classes() const override { return layout_.num_classes(); }
  std::vector<std::string> class_names() const override { return class_names_; }
  int64_t label(int64_t index) const override { return labels_[static_cast<size_t>(index)]; }

 protected:
  const uint8_t* pixels(int64_t index, uint8_t* scratch) const override;

 private:
  CifarLayout layout_;
  torch::Tensor images_;
  std::vector<uint8_t> labels_;
  std::vector<std::string> class_names_;
};

// Reads both splits. `configured_dir` is data.dir.
DatasetSplits load_cifar(const std::string& configured_dir, const CifarLayout& layout,
                         const ImageTransform& train_transform,
                         const ImageTransform& eval_transform);

}  // namespace pipet
