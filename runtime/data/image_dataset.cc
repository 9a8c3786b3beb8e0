#include "runtime/data/image_dataset.h"

#include "runtime/core/errors.h"

#include <cstring>
#include <utility>

namespace pipet {

ImageDataset::ImageDataset(std::string name, std::string split, ImageTransform transform)
    : name_(std::move(name)), split_(std::move(split)), transform_(std::move(transform)) {
  check_transform(transform_);
}

void ImageDataset::check_index(int64_t index) const {
  if (index < 0 || index >= size())
    throw DataError("sample index " + std::to_string(index) + " is outside the " + split_ +
                    " split of dataset '" + name_ + "' (" + std::to_string(size()) +
                    " samples)");
}

Batch ImageDataset::get_batch(const std::vector<int64_t>& indices, int64_t epoch) const {
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
  batch.pixel_values = assemble_images(
      transform_, indices, epoch,
      [this](int64_t index, uint8_t* scratch) { return pixels(index, scratch); });
  return batch;
}

torch::Tensor ImageDataset::raw_image(int64_t index) const {
  check_index(index);
  const ImageTransform& t = transform_;
  torch::Tensor image = torch::empty({t.channels, t.height, t.width}, torch::kUInt8);
  uint8_t* dst = image.data_ptr<uint8_t>();
  const uint8_t* src = pixels(index, dst);
  if (src != dst) std::memcpy(dst, src, static_cast<size_t>(image.numel()));
  return image;
}

}  // namespace pipet
