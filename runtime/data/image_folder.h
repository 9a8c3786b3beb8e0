// The image-folder dataset (data.dataset = "image-folder"): ImageNet's
// on-disk layout, one sub-folder per class holding JPEG/PNG files.
//
//   data.dir/train/<class>/<any/sub/path>/<image>.{jpg,jpeg,png}
//   data.dir/val/<class>/...          (or data.dir/validation/<class>/...)
//
// data.train_path / data.eval_path name the class-folder roots directly.
// Class index = position of the folder name in byte-wise sorted order (what
// torchvision's ImageFolder does); the evaluation folder's classes are
// matched to the training classes by name. Extensions are matched without
// case; other files, and entries whose name starts with '.', are ignored and
// counted. Within a class, files are ordered by path.
//
// Without an evaluation folder, data.eval_split holds out a stratified
// fraction: round(fraction * n) images of every class of n images (at most
// n - 1), chosen by a permutation seeded by (train.seed, class index), so the
// split is the same on every rank and every run.
//
// Transforms (ImageNet recipe): training takes torchvision's
// RandomResizedCrop(image_size, scale=(data.crop_scale_min, 1), ratio=(3/4,
// 4/3)) and a horizontal flip (data.hflip), seeded by (seed, epoch, index);
// evaluation (and training with data.augment=false) resizes the shorter side
// to floor(image_size / 0.875) and takes the centre image_size crop. Both are
// one bilinear resample of a box of the decoded image (augment.h), decoded at
// the smallest JPEG DCT scale that still covers that box at the output size.
// Normalisation uses ImageNet's mean/std unless data.mean/data.std are set.
//
// Unreadable samples (data.on_bad_sample): "fail" raises DataError naming
// the file; "skip" replaces the sample by the next readable image of the same
// class (in file order, wrapping around), keeping the batch shape, the label
// and the sample's augmentation stream, so runs stay deterministic. Each bad
// file is decoded only once (then remembered) and logged as a warning;
// replacement counts per epoch are logged when the next epoch's first batch
// is requested and in total when the dataset is destroyed, and can be read
// with skipped_samples() / skipped_in_epoch().
#pragma once

#include "runtime/data/dataset.h"
#include "runtime/data/loader.h"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace pipet {

// The files of one class-folder root.
struct ImageFolderIndex {
  std::string root;
  std::vector<std::string> class_names;  // sorted; label = position
  std::vector<std::string> files;        // full paths, grouped by class
  std::vector<int64_t> labels;           // one per file
  int64_t ignored_files = 0;             // other extensions, hidden entries
  std::string example_ignored;           // one of them, for the log
};

// Scans `root`. `what` says where the path came from in errors
// ("data.train_path", "data.dir/train"). Throws DataError when the folder is
// missing or unreadable, has no class folders, or has an empty class folder
// (named).
ImageFolderIndex scan_image_folder(const std::string& root, const std::string& what);

// Relabels an evaluation folder by the training classes' names. Throws
// DataError naming a class folder the training set does not have.
void match_classes(ImageFolderIndex& eval, const std::vector<std::string>& train_classes);

// The stratified seeded hold-out described above: {train, eval}. Throws
// ConfigError when `fraction` holds out no image at all.
std::pair<ImageFolderIndex, ImageFolderIndex> split_image_folder(const ImageFolderIndex& all,
                                                                 double fraction, uint64_t seed);

struct ImageFolderTransform {
  int64_t output_size = 224;
  bool random_crop = false;     // RandomResizedCrop (train) or resize + centre crop
  double crop_scale_min = 0.08;
  bool hflip = false;           // only with random_crop
  double crop_fraction = 0.875; // centre crop / resized shorter side
  std::vector<double> mean = {0.485, 0.456, 0.406};
  std::vector<double> std = {0.229, 0.224, 0.225};
  uint64_t seed = 0;
};

enum class BadSamplePolicy { kFail, kSkip };

class ImageFolderDataset final : public Dataset {
 public:
  // `split` ("train", "eval") appears in messages. `pool` decodes a batch's
  // samples in parallel; it may be shared with other datasets.
  ImageFolderDataset(std::string split, ImageFolderIndex index, ImageFolderTransform transform,
                     BadSamplePolicy policy, std::shared_ptr<DecodePool> pool);
  ~ImageFolderDataset() override;  // logs the skip total; never throws

  std::string name() const override { return "image-folder"; }
  Modality modality() const override { return Modality::kImage; }
  int64_t size() const override { return static_cast<int64_t>(index_.files.size()); }
  int64_t num_classes() const override { return static_cast<int64_t>(index_.class_names.size()); }
  std::vector<std::string> class_names() const override { return index_.class_names; }
  int64_t label(int64_t index) const override { return index_.labels[static_cast<size_t>(index)]; }
  // pixel_values float [B, 3, S, S] with S = transform.output_size.
  Batch get_batch(const std::vector<int64_t>& indices, int64_t epoch) const override;

  const std::string& split() const { return split_; }
  const ImageFolderIndex& index() const { return index_; }
  const ImageFolderTransform& transform() const { return transform_; }

  // Samples replaced because their file could not be decoded (skip policy):
  // in total, and in one epoch.
  int64_t skipped_samples() const;
  int64_t skipped_in_epoch(int64_t epoch) const;
  // The files found unreadable so far, sorted.
  std::vector<std::string> bad_files() const;

 private:
  void check_index(int64_t index) const;
  // Writes sample `index` (or its replacement) into dst [3,S,S]; returns
  // whether it was replaced.
  bool render(int64_t index, int64_t epoch, float* dst) const;
  // Decodes file `file` and writes it through the view of sample `view`.
  void render_file(int64_t file, int64_t view, int64_t epoch, float* dst) const;
  bool known_bad(int64_t file) const;
  void remember_bad(int64_t file, const std::string& message) const;
  void note_epoch(int64_t epoch, int64_t skipped) const;

  std::string split_;
  ImageFolderIndex index_;
  ImageFolderTransform transform_;
  BadSamplePolicy policy_;
  std::shared_ptr<DecodePool> pool_;
  std::vector<std::vector<int64_t>> class_members_;  // file indices per class
  std::vector<int64_t> position_in_class_;           // per file

  mutable std::mutex mutex_;  // guards the bookkeeping below
  mutable std::unordered_map<int64_t, std::string> bad_;  // file -> decoder message
  mutable std::map<int64_t, int64_t> skipped_by_epoch_;
  mutable int64_t latest_epoch_ = -1;
};

// Builds the configured train and eval datasets (see the layout above).
// ConfigError for bad settings (named key), DataError for the data.
DatasetSplits load_image_folder(const DataConfig& config, const DataShape& shape, uint64_t seed);

}  // namespace pipet
