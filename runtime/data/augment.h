// The image path shared by every image dataset: per-sample random crop (zero
// padding) and horizontal flip, conversion to float with per-channel
// normalisation, and a bilinear resize of the whole batch to the model's
// image size.
//
// A sample's crop and flip are drawn from the stream (seed, epoch, index)
// alone, so its view does not depend on which batch it lands in, its place in
// that batch, the number of replicas, or whether the run was resumed.
#pragma once

#include "runtime/core/torch_pch.h"

#include <cstdint>
#include <functional>
#include <vector>

namespace pipet {

struct ImageTransform {
  // Stored image geometry (uint8, CHW).
  int64_t channels = 3;
  int64_t height = 32;
  int64_t width = 32;
  // The model's image size; the batch is resized to output_size^2 when it
  // differs from the stored size.
  int64_t output_size = 32;
  // Random crop + flip; on for the train split only.
  bool augment = false;
  int64_t crop_padding = 0;
  bool hflip = false;
  // Per channel, applied to pixel/255.
  std::vector<double> mean;
  std::vector<double> std;
  // Seeds the augmentation streams.
  uint64_t seed = 0;
};

// Checks the transform's internal consistency (an internal error otherwise:
// user settings are validated where they are read, with the config key).
void check_transform(const ImageTransform& transform);

// Where a sample's crop window sits and whether it is mirrored. The window is
// shifted by (offset_y, offset_x) in [-crop_padding, crop_padding] relative to
// the unpadded image (torchvision's RandomCrop(padding=p) top-left corner i,j
// corresponds to offset i-p, j-p); pixels outside the image read as 0.
struct SampleView {
  int64_t offset_y = 0;
  int64_t offset_x = 0;
  bool flip = false;
  bool operator==(const SampleView& o) const {
    return offset_y == o.offset_y && offset_x == o.offset_x && flip == o.flip;
  }
};

// The view of sample `index` in `epoch`: the identity unless transform.augment.
SampleView draw_view(const ImageTransform& transform, int64_t epoch, int64_t index);

// Writes one stored image (uint8, C*H*W bytes) seen through `view` into `dst`
// (float, C*H*W), normalised: (pixel/255 - mean[c]) / std[c]. Padding pixels
// are 0 before normalisation, as with torchvision's zero padding.
void render_view(const ImageTransform& transform, const uint8_t* src, const SampleView& view,
                 float* dst);

// Bilinear resize (align_corners=false; antialiased when shrinking) of a
// float [B,C,H,W] batch to [B,C,size,size]. Returns the input when it already
// has that size.
torch::Tensor resize_images(const torch::Tensor& images, int64_t size);

// Produces the stored bytes of sample `index`: either a pointer into the
// dataset's own memory, or `scratch` (C*H*W bytes) after filling it.
using PixelSource = std::function<const uint8_t*(int64_t index, uint8_t* scratch)>;

// Assembles the float [B,C,output_size,output_size] pixel batch of `indices`:
// one allocation for the stored-size batch, samples rendered in parallel.
torch::Tensor assemble_images(const ImageTransform& transform,
                              const std::vector<int64_t>& indices, int64_t epoch,
                              const PixelSource& source);

// ---- Crops of decoded images of any size (the image-folder dataset) ----
//
// The ImageNet recipe: training takes a random-resized crop plus a flip,
// evaluation a resize of the shorter side then a centre crop. Both are
// expressed as a box in the source image that is resampled straight to the
// model's size, so no intermediate resized image is ever materialised.

// A region of a source image in pixel units (fractional for evaluation).
struct CropBox {
  double x = 0;
  double y = 0;
  double width = 0;
  double height = 0;
  bool flip = false;  // mirror the output horizontally
  // Bilinear taps that fall outside the box read its edge pixels (crop, then
  // resize: torchvision's RandomResizedCrop) instead of the image's
  // neighbouring pixels (resize, then crop: Resize + CenterCrop).
  bool clamp_to_box = false;
};

// torchvision's RandomResizedCrop(scale=(scale_min, 1), ratio=(3/4, 4/3))
// box for a width x height image (ten attempts, then the centre-crop
// fallback), and RandomHorizontalFlip when `hflip`. Drawn from the stream
// (seed, epoch, index) alone; the flip is the stream's first draw, so it does
// not depend on how many crop attempts were needed.
CropBox draw_resized_crop(uint64_t seed, int64_t epoch, int64_t index, int64_t width,
                          int64_t height, double scale_min, bool hflip);

// Resize(floor(size / crop_fraction)) + CenterCrop(size) (torchvision's
// integer rounding) as the box of the original width x height image it shows.
CropBox center_crop_box(int64_t width, int64_t height, int64_t size, double crop_fraction);

// Samples `box` of a packed uint8 image (height x width x channels) into
// float [channels, out_size, out_size] at `dst`, normalised per channel as
// (value/255 - mean[c]) / std[c]. Bilinear with half-pixel centres, exactly
// torch's interpolate(mode=bilinear, align_corners=false, antialias=false)
// on the box: no antialiasing filter, so shrinking a box by more than 2x
// aliases (the JPEG decoder's DCT scaling does the bulk of large reductions).
void resample_crop(const uint8_t* pixels, int64_t width, int64_t height, int64_t channels,
                   const CropBox& box, int64_t out_size, const std::vector<double>& mean,
                   const std::vector<double>& std, float* dst);

}  // namespace pipet
