#include "runtime/data/image_folder.h"

#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/data/augment.h"
#include "runtime/data/image_decode.h"
#include "runtime/core/random.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <filesystem>
#include <numeric>
#include <optional>
#include <system_error>

namespace pipet {

namespace fs = std::filesystem;

namespace {

// Bad files named one by one in the log; the rest only counted.
constexpr size_t kBadFilesLogged = 20;

// Key of the hold-out permutation (distinct from every StreamTag).
constexpr uint64_t kSplitStream = 0x686f6c646f7574ULL;  // "holdout"

bool hidden(const std::string& name) { return !name.empty() && name[0] == '.'; }

bool image_extension(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

void note_ignored(ImageFolderIndex& index, const std::string& path) {
  if (index.ignored_files++ == 0) index.example_ignored = path;
}

// The image files under one class folder, sorted by path.
std::vector<std::string> class_files(const fs::path& folder, ImageFolderIndex& index) {
  std::vector<std::string> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(folder, fs::directory_options::follow_directory_symlink, ec);
  if (ec) throw DataError(folder.string() + ": cannot read class folder: " + ec.message());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) throw DataError(folder.string() + ": cannot read class folder: " + ec.message());
    const fs::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    if (hidden(name)) {
      if (entry.is_directory(ec)) it.disable_recursion_pending();
      note_ignored(index, entry.path().string());
      continue;
    }
    if (entry.is_directory(ec)) continue;
    if (entry.is_regular_file(ec) && image_extension(entry.path())) {
      files.push_back(entry.path().string());
    } else {
      note_ignored(index, entry.path().string());
    }
  }
  if (ec) throw DataError(folder.string() + ": cannot read class folder: " + ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

std::string join_path(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

// Keeps the files of `all` whose positions are in `keep` (ascending).
ImageFolderIndex subset(const ImageFolderIndex& all, const std::vector<size_t>& keep) {
  ImageFolderIndex out;
  out.root = all.root;
  out.class_names = all.class_names;
  out.files.reserve(keep.size());
  out.labels.reserve(keep.size());
  for (size_t i : keep) {
    out.files.push_back(all.files[i]);
    out.labels.push_back(all.labels[i]);
  }
  return out;
}

}  // namespace

ImageFolderIndex scan_image_folder(const std::string& root, const std::string& what) {
  ImageFolderIndex index;
  index.root = root;
  std::error_code ec;
  const fs::file_status status = fs::status(root, ec);
  if (ec || !fs::exists(status))
    throw DataError(what + " '" + root + "' does not exist" + (ec ? ": " + ec.message() : ""));
  if (!fs::is_directory(status))
    throw DataError(what + " '" + root + "' is not a directory (expected one sub-folder per class)");
  fs::directory_iterator it(root, ec);
  if (ec) throw DataError(what + " '" + root + "' cannot be read: " + ec.message());
  std::vector<std::string> classes;
  for (const fs::directory_iterator end; it != end; it.increment(ec)) {
    if (ec) throw DataError(what + " '" + root + "' cannot be read: " + ec.message());
    const std::string name = it->path().filename().string();
    if (!hidden(name) && it->is_directory(ec)) {
      classes.push_back(name);
    } else {
      note_ignored(index, it->path().string());
    }
  }
  if (ec) throw DataError(what + " '" + root + "' cannot be read: " + ec.message());
  if (classes.empty())
    throw DataError(what + " '" + root + "' has no class folders: the image-folder layout is one "
                    "sub-folder per class, e.g. " + join_path(root, "<class>/image.jpg"));
  std::sort(classes.begin(), classes.end());
  index.class_names = classes;
  for (size_t label = 0; label < classes.size(); ++label) {
    const fs::path folder = fs::path(root) / classes[label];
    const int64_t ignored_before = index.ignored_files;
    std::vector<std::string> files = class_files(folder, index);
    if (files.empty()) {
      const int64_t ignored = index.ignored_files - ignored_before;
      throw DataError("class folder '" + folder.string() + "' is empty: no .jpg, .jpeg or .png "
                      "files" + (ignored > 0 ? " (" + std::to_string(ignored) + " other files)" : "") +
                      "; remove the folder or add its images");
    }
    for (std::string& file : files) {
      index.files.push_back(std::move(file));
      index.labels.push_back(static_cast<int64_t>(label));
    }
  }
  return index;
}

void match_classes(ImageFolderIndex& eval, const std::vector<std::string>& train_classes) {
  std::vector<int64_t> relabel(eval.class_names.size());
  for (size_t c = 0; c < eval.class_names.size(); ++c) {
    const auto it = std::find(train_classes.begin(), train_classes.end(), eval.class_names[c]);
    if (it == train_classes.end())
      throw DataError("evaluation class folder '" + join_path(eval.root, eval.class_names[c]) +
                      "' has no training counterpart (classes are matched by folder name; the "
                      "training set has " + std::to_string(train_classes.size()) + " classes)");
    relabel[c] = it - train_classes.begin();
  }
  for (int64_t& label : eval.labels) label = relabel[static_cast<size_t>(label)];
  eval.class_names = train_classes;
}

std::pair<ImageFolderIndex, ImageFolderIndex> split_image_folder(const ImageFolderIndex& all,
                                                                 double fraction, uint64_t seed) {
  PIPET_CHECK(fraction > 0 && fraction < 1, "hold-out fraction");
  std::vector<std::vector<size_t>> members(all.class_names.size());
  for (size_t i = 0; i < all.files.size(); ++i)
    members[static_cast<size_t>(all.labels[i])].push_back(i);
  std::vector<size_t> train, eval;
  for (size_t c = 0; c < members.size(); ++c) {
    std::vector<size_t>& m = members[c];
    const size_t n = m.size();
    size_t held = static_cast<size_t>(std::nearbyint(fraction * static_cast<double>(n)));
    held = std::min(held, n > 0 ? n - 1 : 0);
    Rng rng(derive_key(seed, {kSplitStream, static_cast<uint64_t>(c)}));
    for (size_t i = n; i > 1; --i) std::swap(m[i - 1], m[rng.below(i)]);  // Fisher-Yates
    eval.insert(eval.end(), m.begin(), m.begin() + static_cast<std::ptrdiff_t>(held));
    train.insert(train.end(), m.begin() + static_cast<std::ptrdiff_t>(held), m.end());
  }
  if (eval.empty())
    throw ConfigError("data.eval_split=" + std::to_string(fraction) + " holds out no image of '" +
                      all.root + "' (round(fraction x images) is 0 in every class); raise it or "
                      "give an evaluation folder");
  std::sort(train.begin(), train.end());
  std::sort(eval.begin(), eval.end());
  return {subset(all, train), subset(all, eval)};
}

// ---- ImageFolderDataset ------------------------------------------------------

ImageFolderDataset::ImageFolderDataset(std::string split, ImageFolderIndex index,
                                       ImageFolderTransform transform, BadSamplePolicy policy,
                                       std::shared_ptr<DecodePool> pool)
    : split_(std::move(split)),
      index_(std::move(index)),
      transform_(std::move(transform)),
      policy_(policy),
      pool_(std::move(pool)) {
  PIPET_CHECK(pool_ != nullptr, "image-folder dataset without a decode pool");
  PIPET_CHECK(index_.files.size() == index_.labels.size(), "one label per file");
  PIPET_CHECK(transform_.output_size >= 1, "output size");
  PIPET_CHECK(transform_.mean.size() == 3 && transform_.std.size() == 3, "RGB mean/std");
  class_members_.resize(index_.class_names.size());
  position_in_class_.resize(index_.files.size());
  for (size_t i = 0; i < index_.files.size(); ++i) {
    const int64_t label = index_.labels[i];
    PIPET_CHECK(label >= 0 && label < num_classes(), "label in range");
    auto& members = class_members_[static_cast<size_t>(label)];
    position_in_class_[i] = static_cast<int64_t>(members.size());
    members.push_back(static_cast<int64_t>(i));
  }
}

ImageFolderDataset::~ImageFolderDataset() {
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    int64_t total = 0;
    for (const auto& [epoch, count] : skipped_by_epoch_) total += count;
    if (total > 0)
      spdlog::warn("[data] image-folder {}: {} samples replaced in total, {} unreadable files "
                   "(data.on_bad_sample=skip)", split_, total, bad_.size());
  } catch (...) {
    // Logging must not throw out of a destructor.
  }
}

void ImageFolderDataset::check_index(int64_t index) const {
  if (index < 0 || index >= size())
    throw DataError("sample index " + std::to_string(index) + " is outside the " + split_ +
                    " split of image folder '" + index_.root + "' (" + std::to_string(size()) +
                    " samples)");
}

bool ImageFolderDataset::known_bad(int64_t file) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bad_.count(file) > 0;
}

void ImageFolderDataset::remember_bad(int64_t file, const std::string& message) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!bad_.emplace(file, message).second) return;
  if (bad_.size() <= kBadFilesLogged) {
    spdlog::warn("[data] image-folder {}: skipping unreadable image: {}", split_, message);
  } else if (bad_.size() == kBadFilesLogged + 1) {
    spdlog::warn("[data] image-folder {}: more unreadable images; further ones are only counted",
                 split_);
  }
}

void ImageFolderDataset::render_file(int64_t file, int64_t view, int64_t epoch, float* dst) const {
  // Per-thread buffers: a decode thread reuses its allocations batch after batch.
  thread_local std::vector<uint8_t> bytes;
  thread_local RgbImage image;
  const std::string& path = index_.files[static_cast<size_t>(file)];
  const ImageFolderTransform& t = transform_;
  read_file_bytes(path, bytes);
  const ImageInfo info = read_image_info(bytes.data(), bytes.size(), path);
  CropBox box = t.random_crop
                    ? draw_resized_crop(t.seed, epoch, view, info.width, info.height,
                                        t.crop_scale_min, t.hflip)
                    : center_crop_box(info.width, info.height, t.output_size, t.crop_fraction);
  // The decoded box must still have output_size pixels along both sides.
  const double size = static_cast<double>(t.output_size);
  const double min_scale = std::max(size / box.width, size / box.height);
  decode_image(bytes.data(), bytes.size(), path, min_scale, image);
  if (image.width != info.width || image.height != info.height) {
    const double sx = static_cast<double>(image.width) / info.width;
    const double sy = static_cast<double>(image.height) / info.height;
    box.x *= sx;
    box.width *= sx;
    box.y *= sy;
    box.height *= sy;
  }
  resample_crop(image.pixels.data(), image.width, image.height, 3, box, t.output_size, t.mean,
                t.std, dst);
}

bool ImageFolderDataset::render(int64_t index, int64_t epoch, float* dst) const {
  if (!known_bad(index)) {
    try {
      render_file(index, index, epoch, dst);
      return false;
    } catch (const DataError& e) {
      if (policy_ == BadSamplePolicy::kFail)
        throw DataError(std::string(e.what()) + " (image-folder " + split_ + " sample " +
                        std::to_string(index) + "; data.on_bad_sample=skip replaces unreadable "
                        "images instead of failing)");
      remember_bad(index, e.what());
    }
  }
  // The next readable image of the same class, in file order, wrapping around.
  const int64_t label = index_.labels[static_cast<size_t>(index)];
  const std::vector<int64_t>& members = class_members_[static_cast<size_t>(label)];
  const auto n = static_cast<int64_t>(members.size());
  const int64_t start = position_in_class_[static_cast<size_t>(index)];
  for (int64_t step = 1; step < n; ++step) {
    const int64_t candidate = members[static_cast<size_t>((start + step) % n)];
    if (known_bad(candidate)) continue;
    try {
      render_file(candidate, index, epoch, dst);
      return true;
    } catch (const DataError& e) {
      remember_bad(candidate, e.what());
    }
  }
  throw DataError("every image of class '" + index_.class_names[static_cast<size_t>(label)] +
                  "' in '" + index_.root + "' is unreadable (" + std::to_string(n) +
                  " files), so sample " + std::to_string(index) + " (" +
                  index_.files[static_cast<size_t>(index)] + ") has no replacement");
}

void ImageFolderDataset::note_epoch(int64_t epoch, int64_t skipped) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (epoch != latest_epoch_) {
    if (latest_epoch_ >= 0) {
      const auto it = skipped_by_epoch_.find(latest_epoch_);
      if (it != skipped_by_epoch_.end() && it->second > 0)
        spdlog::warn("[data] image-folder {}: epoch {}: {} samples replaced by another image of "
                     "their class ({} unreadable files so far, data.on_bad_sample=skip)",
                     split_, latest_epoch_, it->second, bad_.size());
    }
    latest_epoch_ = epoch;
  }
  if (skipped > 0) skipped_by_epoch_[epoch] += skipped;
}

Batch ImageFolderDataset::get_batch(const std::vector<int64_t>& indices, int64_t epoch) const {
  const auto batch_size = static_cast<int64_t>(indices.size());
  Batch batch;
  batch.labels = torch::empty({batch_size}, torch::kInt64);
  batch.sample_ids = torch::empty({batch_size}, torch::kInt64);
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  int64_t* ids = batch.sample_ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < batch_size; ++i) {
    const int64_t index = indices[static_cast<size_t>(i)];
    check_index(index);
    labels[i] = label(index);
    ids[i] = index;
  }
  const int64_t s = transform_.output_size;
  batch.pixel_values = torch::empty({batch_size, 3, s, s}, torch::kFloat32);
  float* pixels = batch.pixel_values.data_ptr<float>();
  std::atomic<int64_t> replaced{0};
  pool_->run(batch_size, [&](int64_t i) {
    if (render(indices[static_cast<size_t>(i)], epoch, pixels + i * 3 * s * s)) ++replaced;
  });
  note_epoch(epoch, replaced.load());
  return batch;
}

int64_t ImageFolderDataset::skipped_samples() const {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t total = 0;
  for (const auto& [epoch, count] : skipped_by_epoch_) total += count;
  return total;
}

int64_t ImageFolderDataset::skipped_in_epoch(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = skipped_by_epoch_.find(epoch);
  return it == skipped_by_epoch_.end() ? 0 : it->second;
}

std::vector<std::string> ImageFolderDataset::bad_files() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> files;
  for (const auto& [file, message] : bad_) files.push_back(index_.files[static_cast<size_t>(file)]);
  std::sort(files.begin(), files.end());
  return files;
}

// ---- Factory -----------------------------------------------------------------

namespace {

std::vector<double> rgb_values(const char* key, const std::vector<double>& configured,
                               const std::vector<double>& fallback) {
  if (configured.empty()) return fallback;
  if (configured.size() != 3)
    throw ConfigError(std::string(key) + " has " + std::to_string(configured.size()) +
                      " values but image-folder images are RGB: give 3");
  return configured;
}

void log_ignored(const ImageFolderIndex& index) {
  if (index.ignored_files > 0)
    spdlog::info("[data] image-folder: ignored {} entries of '{}' that are not .jpg/.jpeg/.png "
                 "images in a class folder (e.g. '{}')",
                 index.ignored_files, index.root, index.example_ignored);
}

}  // namespace

DatasetSplits load_image_folder(const DataConfig& config, const DataShape& shape, uint64_t seed) {
  if (shape.image_size < 1)
    throw ConfigError("data.dataset 'image-folder' is an image dataset, but the model takes no "
                      "images: pick a ViT model.preset");
  if (shape.num_channels != 3)
    throw ConfigError("data.dataset 'image-folder' decodes RGB images, but model.num_channels is " +
                      std::to_string(shape.num_channels));
  if (!(config.crop_scale_min > 0 && config.crop_scale_min <= 1))
    throw ConfigError("data.crop_scale_min must be in (0, 1], got " +
                      std::to_string(config.crop_scale_min));

  ImageFolderTransform eval_t;
  eval_t.output_size = shape.image_size;
  eval_t.mean = rgb_values("data.mean", config.mean, eval_t.mean);
  eval_t.std = rgb_values("data.std", config.std, eval_t.std);
  for (size_t c = 0; c < 3; ++c)
    if (!(eval_t.std[c] > 0))
      throw ConfigError("data.std[" + std::to_string(c) + "] must be > 0");
  eval_t.seed = seed;
  ImageFolderTransform train_t = eval_t;
  train_t.random_crop = config.augment;
  train_t.crop_scale_min = config.crop_scale_min;
  train_t.hflip = config.augment && config.hflip;

  // Training root.
  std::string train_root = config.train_path;
  std::string train_what = "data.train_path";
  if (train_root.empty()) {
    if (config.dir.empty())
      throw ConfigError("data.dataset 'image-folder' needs data.dir (holding train/ and val/) or "
                        "data.train_path");
    train_root = join_path(config.dir, "train");
    train_what = "data.dir/train";
    if (!is_directory(train_root))
      throw DataError("data.dir '" + config.dir + "' has no train/ folder (the image-folder "
                      "layout is data.dir/train/<class>/<image> and data.dir/val/<class>/<image>); "
                      "set data.train_path to the class-folder root instead");
  }
  // Evaluation root: explicit, standard, or a held-out split.
  std::string eval_root = config.eval_path;
  std::string eval_what = "data.eval_path";
  if (eval_root.empty() && config.eval_split <= 0 && !config.dir.empty()) {
    for (const char* name : {"val", "validation"}) {
      if (is_directory(join_path(config.dir, name))) {
        eval_root = join_path(config.dir, name);
        eval_what = std::string("data.dir/") + name;
        break;
      }
    }
  }

  ImageFolderIndex train = scan_image_folder(train_root, train_what);
  log_ignored(train);
  std::optional<ImageFolderIndex> eval;
  std::string eval_source;
  if (config.eval_split > 0) {
    auto parts = split_image_folder(train, config.eval_split, seed);
    train = std::move(parts.first);
    eval = std::move(parts.second);
    eval_source = "held out of '" + train_root + "' (data.eval_split=" +
                  std::to_string(config.eval_split) + ", stratified, seed " +
                  std::to_string(seed) + ")";
  } else if (!eval_root.empty()) {
    eval = scan_image_folder(eval_root, eval_what);
    log_ignored(*eval);
    match_classes(*eval, train.class_names);
    eval_source = "from '" + eval_root + "'";
  }

  const BadSamplePolicy policy =
      config.on_bad_sample == "skip" ? BadSamplePolicy::kSkip : BadSamplePolicy::kFail;
  if (config.on_bad_sample != "skip" && config.on_bad_sample != "fail")
    throw ConfigError("data.on_bad_sample must be 'fail' or 'skip', got '" +
                      config.on_bad_sample + "'");
  auto pool = std::make_shared<DecodePool>(resolve_decode_threads(config.decode_threads));

  DatasetSplits splits;
  const auto classes = static_cast<int64_t>(train.class_names.size());
  const auto train_images = static_cast<int64_t>(train.files.size());
  splits.train = std::make_shared<ImageFolderDataset>("train", std::move(train), train_t, policy, pool);
  if (eval)
    splits.eval = std::make_shared<ImageFolderDataset>("eval", std::move(*eval), eval_t, policy, pool);
  spdlog::info("[data] image-folder: {} train images in {} classes from '{}'; {} eval images {}; "
               "{} px, {} decode threads, on_bad_sample={}",
               train_images, classes, train_root, splits.eval ? splits.eval->size() : 0,
               splits.eval ? eval_source : "(no evaluation set)", shape.image_size, pool->size(),
               config.on_bad_sample);
  return splits;
}

}  // namespace pipet
