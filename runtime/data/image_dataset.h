// Base of the image datasets: a subclass provides the stored uint8 pixels and
// the label of a sample; batch assembly (augmentation, resize, normalisation)
// is shared.
#pragma once

#include "runtime/data/augment.h"
#include "runtime/data/dataset.h"

#include <string>

namespace pipet {

class ImageDataset : public Dataset {
 public:
  // `split` ("train", "eval") only appears in messages.
  ImageDataset(std::string name, std::string split, ImageTransform transform);

  std::string name() const override { return name_; }
  Modality modality() const override { return Modality::kImage; }
  Batch get_batch(const std::vector<int64_t>& indices, int64_t epoch) const override;

  const std::string& split() const { return split_; }
  const ImageTransform& transform() const { return transform_; }

  // The stored image of sample `index` as uint8 [C,H,W], before any transform.
  torch::Tensor raw_image(int64_t index) const;

 protected:
  // The C*H*W stored bytes of `index` (already range-checked): a pointer into
  // the dataset's memory, or `scratch` filled with them.
  virtual const uint8_t* pixels(int64_t index, uint8_t* scratch) const = 0;

  // Throws DataError when an index is outside [0, size()).
  void check_index(int64_t index) const;

 private:
  std::string name_;
  std::string split_;
  ImageTransform transform_;
};

}  // namespace pipet
