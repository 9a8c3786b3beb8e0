// bench_image_decode: decoded and augmented images per second from
// ImageNet-sized JPEGs, through the image-folder dataset exactly as training
// reads it (file read, JPEG decode at the chosen DCT scale, crop, bilinear
// resample, normalisation into the batch tensor).
//
// The benchmark writes --images JPEGs of --width x --height (default 500x375,
// ImageNet's most common size) at --quality with natural-image statistics
// (fractal value noise: equal energy per octave, smooth regions and fine
// texture, about 100 KB each at quality 90 like ImageNet's average file),
// spread over four class folders of a scratch image folder. One timed
// iteration = every image once, in batches of --batch, for the train
// transform (random-resized crop + flip, a new epoch each iteration) and the
// eval transform (resize to size/0.875, centre crop).
//
// images/s = images / median iteration seconds; per core = images/s / threads;
// per cpu-s = images decoded in all warm-up and timed passes / the process's
// CPU seconds (user + system, all threads) over them: the per-core cost that
// other processes on a shared machine cannot inflate.
// Correctness runs alongside: every batch must have the right shape and
// finite values, and the eval view of the first image must match
// torchvision's antialiased Resize + CenterCrop of its full-size decode
// (mean |difference| of the normalised values <= 0.1, about 6 grey levels;
// a misplaced crop is off by several times that), else the check is FAILED
// (exit 20). --min-per-core turns a floor on the per-core figure of every
// row into exit 23.
#include "benchmarks/harness.h"
#include "runtime/core/allocator.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/data/augment.h"
#include "runtime/data/image_decode.h"
#include "runtime/data/image_folder.h"
#include "runtime/core/random.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

namespace pipet::bench {
namespace {

constexpr int kExitCheckFailed = 20;
constexpr int kExitBelowFloor = 23;
constexpr int kClasses = 4;

struct ImageDecodeOptions {
  HarnessOptions harness;
  int images = 256;
  int width = 500;
  int height = 375;
  int quality = 90;
  int64_t size = 224;
  int64_t batch = 32;
  std::vector<int> threads;  // empty = {1, all}
  std::vector<std::string> transforms = {"train", "eval"};
  double crop_scale_min = 0.08;
  double min_per_core = 0.0;
  uint64_t seed = 42;
  std::string work_dir;
  std::string log_level = "warn";
};

void validate(ImageDecodeOptions& o) {
  validate_harness_options(o.harness);
  if (o.images < 1) throw ConfigError("--images must be >= 1, got " + std::to_string(o.images));
  if (o.width < 8 || o.height < 8)
    throw ConfigError("--width and --height must be >= 8 pixels");
  if (o.quality < 1 || o.quality > 100)
    throw ConfigError("--quality must be in [1, 100], got " + std::to_string(o.quality));
  if (o.size < 1) throw ConfigError("--size must be >= 1, got " + std::to_string(o.size));
  if (o.batch < 1) throw ConfigError("--batch must be >= 1, got " + std::to_string(o.batch));
  if (!(o.crop_scale_min > 0 && o.crop_scale_min <= 1))
    throw ConfigError("--crop-scale-min must be in (0, 1]");
  if (!(o.min_per_core >= 0)) throw ConfigError("--min-per-core must be >= 0 (0 = off)");
  const int all = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (o.threads.empty()) o.threads = all > 1 ? std::vector<int>{1, all} : std::vector<int>{1};
  for (int& t : o.threads) {
    if (t < 0) throw ConfigError("--threads: counts must be >= 0 (0 = all), got " + std::to_string(t));
    if (t == 0) t = all;
  }
  for (const std::string& t : o.transforms)
    if (t != "train" && t != "eval")
      throw ConfigError("--transforms: 'train' or 'eval', got '" + t + "'");
}

// Fractal value noise, RGB8: octaves of smoothly interpolated random
// lattices from 128 px cells down to 1 px, equal amplitude each.
std::vector<uint8_t> natural_image(int width, int height, uint64_t key) {
  Rng rng(key);
  std::vector<float> sum(static_cast<size_t>(width) * height * 3, 0.0f);
  int octaves = 0;
  for (int cell = 128; cell >= 1; cell /= 2, ++octaves) {
    const int gw = width / cell + 2;
    const int gh = height / cell + 2;
    std::vector<float> lattice(static_cast<size_t>(gw) * gh * 3);
    for (float& v : lattice) v = rng.uniform_float() * 2 - 1;
    for (int y = 0; y < height; ++y) {
      const float fy = static_cast<float>(y) / cell;
      const int y0 = static_cast<int>(fy);
      float ty = fy - y0;
      ty = ty * ty * (3 - 2 * ty);
      for (int x = 0; x < width; ++x) {
        const float fx = static_cast<float>(x) / cell;
        const int x0 = static_cast<int>(fx);
        float tx = fx - x0;
        tx = tx * tx * (3 - 2 * tx);
        for (int c = 0; c < 3; ++c) {
          auto at = [&](int yy, int xx) { return lattice[static_cast<size_t>((yy * gw + xx) * 3 + c)]; };
          const float top = at(y0, x0) + tx * (at(y0, x0 + 1) - at(y0, x0));
          const float bottom = at(y0 + 1, x0) + tx * (at(y0 + 1, x0 + 1) - at(y0 + 1, x0));
          sum[static_cast<size_t>((y * width + x) * 3 + c)] += top + ty * (bottom - top);
        }
      }
    }
  }
  std::vector<uint8_t> out(sum.size());
  for (size_t i = 0; i < sum.size(); ++i)
    out[i] = static_cast<uint8_t>(std::clamp(128.0f + 200.0f * sum[i] / octaves, 0.0f, 255.0f));
  return out;
}

// Writes the image folder; returns the mean file size in bytes.
double write_images(const ImageDecodeOptions& o, const std::string& root) {
  double bytes = 0;
  for (int i = 0; i < o.images; ++i) {
    const std::vector<uint8_t> rgb =
        natural_image(o.width, o.height, derive_key(o.seed, {static_cast<uint64_t>(i)}));
    const std::vector<uint8_t> jpeg = encode_jpeg(rgb.data(), o.width, o.height, JpegPixels::kRgb, o.quality);
    const std::filesystem::path dir = std::filesystem::path(root) / ("class" + std::to_string(i % kClasses));
    std::filesystem::create_directories(dir);
    char name[32];
    std::snprintf(name, sizeof(name), "%06d.jpg", i);
    std::ofstream out(dir / name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(jpeg.data()), static_cast<std::streamsize>(jpeg.size()));
    if (!out) throw IoError("cannot write " + (dir / name).string());
    bytes += static_cast<double>(jpeg.size());
  }
  return bytes / o.images;
}

double seconds(const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; }

struct Row {
  std::string transform;
  int threads = 1;
  TimingStats stats;
  double images_per_second = 0;
  double per_core = 0;
  double per_cpu_second = 0;  // images per second of CPU time used (all threads)
  std::string check = "ok";
  std::string check_detail;
};

// Eval view of image 0 vs torchvision's Resize(antialias=True) + CenterCrop
// of its full-size decode: mean |difference| of the normalised values.
double eval_reference_difference(const ImageFolderDataset& data, const torch::Tensor& view) {
  std::vector<uint8_t> bytes;
  const std::string& path = data.index().files[0];
  read_file_bytes(path, bytes);
  RgbImage full;
  decode_image(bytes.data(), bytes.size(), path, 1.0, full);
  const ImageFolderTransform& t = data.transform();
  const int64_t size = t.output_size;
  const auto resize = static_cast<int64_t>(std::floor(static_cast<double>(size) / t.crop_fraction + 1e-9));
  int64_t rw = resize, rh = resize;
  if (full.width < full.height) rh = resize * full.height / full.width;
  if (full.height < full.width) rw = resize * full.width / full.height;
  namespace F = torch::nn::functional;
  const torch::Tensor image = torch::from_blob(full.pixels.data(), {full.height, full.width, 3}, torch::kUInt8)
                                  .permute({2, 0, 1})
                                  .unsqueeze(0)
                                  .to(torch::kFloat32);
  const torch::Tensor resized = F::interpolate(
      image, F::InterpolateFuncOptions().size(std::vector<int64_t>{rh, rw}).mode(torch::kBilinear)
                 .align_corners(false).antialias(true));
  const auto top = static_cast<int64_t>(std::nearbyint((rh - size) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint((rw - size) / 2.0));
  using torch::indexing::Slice;
  torch::Tensor expected = resized.index({0, Slice(), Slice(top, top + size), Slice(left, left + size)});
  const torch::Tensor mean = torch::tensor(t.mean, torch::kFloat64).to(torch::kFloat32).view({3, 1, 1});
  const torch::Tensor std = torch::tensor(t.std, torch::kFloat64).to(torch::kFloat32).view({3, 1, 1});
  expected = (expected / 255 - mean) / std;
  return (expected - view).abs().mean().item<double>();
}

Row measure(const ImageDecodeOptions& o, const ImageFolderIndex& index, const std::string& transform,
            int threads) {
  ImageFolderTransform t;
  t.output_size = o.size;
  t.random_crop = transform == "train";
  t.hflip = t.random_crop;
  t.crop_scale_min = o.crop_scale_min;
  t.seed = o.seed;
  ImageFolderDataset data(transform, index, t, BadSamplePolicy::kFail,
                          std::make_shared<DecodePool>(threads));
  Row row;
  row.transform = transform;
  row.threads = threads;
  int64_t epoch = 0;
  // One pass over every image; the correctness check runs on an untimed
  // pass of its own so the timed passes measure loading only.
  auto pass = [&](bool check) {
    for (int64_t begin = 0; begin < data.size(); begin += o.batch) {
      std::vector<int64_t> indices;
      for (int64_t i = begin; i < std::min(begin + o.batch, data.size()); ++i) indices.push_back(i);
      const Batch batch = data.get_batch(indices, epoch);
      if (!check) continue;
      if (batch.pixel_values.sizes() !=
              torch::IntArrayRef({static_cast<int64_t>(indices.size()), 3, o.size, o.size}) ||
          !torch::isfinite(batch.pixel_values).all().item<bool>()) {
        row.check = "FAILED";
        row.check_detail = "batch at " + std::to_string(begin) + " has the wrong shape or non-finite values";
      }
      if (begin == 0 && transform == "eval") {
        const double diff = eval_reference_difference(data, batch.pixel_values[0]);
        if (!(diff <= 0.1)) {
          row.check = "FAILED";
          row.check_detail = "eval view of image 0 differs from torchvision's Resize + CenterCrop by " +
                             format_fixed(diff, 4) + " on average";
        }
      }
    }
    ++epoch;
  };
  pass(/*check=*/true);
  struct rusage before {};
  getrusage(RUSAGE_SELF, &before);
  row.stats = time_iterations(o.harness.warmup, o.harness.iterations, [&] { pass(false); });
  struct rusage after {};
  getrusage(RUSAGE_SELF, &after);
  const double cpu_seconds = seconds(after.ru_utime) + seconds(after.ru_stime) -
                             seconds(before.ru_utime) - seconds(before.ru_stime);
  const double images = static_cast<double>(data.size()) * (o.harness.warmup + o.harness.iterations);
  row.images_per_second = static_cast<double>(data.size()) / (row.stats.median_ms / 1000.0);
  row.per_core = row.images_per_second / threads;
  row.per_cpu_second = cpu_seconds > 0 ? images / cpu_seconds : 0.0;
  return row;
}

int run(ImageDecodeOptions& o) {
  validate(o);
  init_logging(0, o.log_level);
  std::optional<ScratchDir> scratch;
  std::string work_dir = o.work_dir;
  if (work_dir.empty()) {
    scratch.emplace("pipet-bench-image-decode");
    work_dir = scratch->path();
  } else {
    ensure_writable_directory(work_dir, "--work-dir");
  }
  const std::string root = work_dir + "/train";
  const double t0 = now_ms();
  const double mean_bytes = write_images(o, root);
  const double generate_s = (now_ms() - t0) / 1000.0;
  const ImageFolderIndex index = scan_image_folder(root, "--work-dir/train");

  const nlohmann::json environment = environment_json();
  std::cout << "bench_image_decode: " << o.images << " JPEGs " << o.width << "x" << o.height
            << " quality " << o.quality << " (mean " << format_fixed(mean_bytes / 1024.0, 1)
            << " KiB, generated in " << format_fixed(generate_s, 1) << " s) -> " << o.size << " px, batch "
            << o.batch << "\n"
            << environment_line(environment) << "\n"
            << "warmup " << o.harness.warmup << ", iterations " << o.harness.iterations
            << " (one iteration = every image once)\n";
  const double load = environment.value("load_average_1min", -1.0);
  const int cores = environment.value("cores", 0);
  if (cores > 0 && load > 0.75 * cores)
    std::cout << "warning: load average " << format_fixed(load, 2) << " on " << cores
              << " cores: other processes compete for the CPU, so timings are unreliable\n";

  std::vector<Row> rows;
  for (const std::string& transform : o.transforms)
    for (int threads : o.threads) rows.push_back(measure(o, index, transform, threads));

  ResultTable table({"transform", "threads", "images/s", "per core", "per cpu-s", "ms/iter",
                      "min-max", "check"});
  for (const Row& r : rows)
    table.add_row({r.transform, std::to_string(r.threads), format_fixed(r.images_per_second, 1),
                   format_fixed(r.per_core, 1), format_fixed(r.per_cpu_second, 1),
                   format_fixed(r.stats.median_ms, 1),
                   format_fixed(r.stats.min_ms, 1) + "-" + format_fixed(r.stats.max_ms, 1), r.check});
  std::cout << "\n";
  table.print(std::cout);

  int code = 0;
  for (const Row& r : rows) {
    if (r.check != "ok") {
      std::cout << "check FAILED (" << r.transform << ", " << r.threads << " threads): " << r.check_detail << "\n";
      code = kExitCheckFailed;
    }
  }
  if (code == 0 && o.min_per_core > 0) {
    for (const Row& r : rows) {
      if (r.per_core < o.min_per_core) {
        std::cout << "below --min-per-core " << format_fixed(o.min_per_core, 1) << ": " << r.transform
                  << " at " << r.threads << " threads gives " << format_fixed(r.per_core, 1)
                  << " images/s per core\n";
        code = kExitBelowFloor;
      }
    }
  }

  if (!o.harness.json_path.empty()) {
    nlohmann::json document;
    document["benchmark"] = "image_decode";
    document["environment"] = environment;
    document["options"] = {{"images", o.images},   {"width", o.width},   {"height", o.height},
                           {"quality", o.quality}, {"size", o.size},     {"batch", o.batch},
                           {"crop_scale_min", o.crop_scale_min},      {"seed", o.seed},
                           {"warmup", o.harness.warmup}, {"iterations", o.harness.iterations},
                           {"mean_jpeg_bytes", mean_bytes}};
    nlohmann::json results = nlohmann::json::array();
    for (const Row& r : rows)
      results.push_back({{"transform", r.transform},
                         {"threads", r.threads},
                         {"images_per_second", r.images_per_second},
                         {"images_per_second_per_core", r.per_core},
                         {"images_per_cpu_second", r.per_cpu_second},
                         {"iteration_ms", r.stats.to_json()},
                         {"check", r.check}});
    document["results"] = std::move(results);
    write_json_results(o.harness.json_path, document);
  }
  return code;
}

}  // namespace
}  // namespace pipet::bench

int main(int argc, char** argv) {
  pipet::bench::ImageDecodeOptions options;
  // Before any tensor exists, as pipetransformer does: batch tensors are
  // large enough that glibc would otherwise mmap and fault them in anew.
  pipet::configure_allocator();
  CLI::App app{"Decoded and augmented images per second from ImageNet-sized JPEGs "
               "(see benchmarks/README.md)",
               "bench_image_decode"};
  pipet::bench::add_harness_flags(app, options.harness);
  app.add_option("--images", options.images, "JPEGs generated and read per iteration")
      ->capture_default_str();
  app.add_option("--width", options.width, "Generated image width")->capture_default_str();
  app.add_option("--height", options.height, "Generated image height")->capture_default_str();
  app.add_option("--quality", options.quality, "JPEG quality of the generated images")
      ->capture_default_str();
  app.add_option("--size", options.size, "Output image size (the model's image_size)")
      ->capture_default_str();
  app.add_option("--batch", options.batch, "Images per get_batch call")->capture_default_str();
  app.add_option("--threads", options.threads,
                 "Decode thread counts, comma-separated, one row each; 0 = all hardware threads "
                 "(default: 1 and all)")
      ->delimiter(',');
  app.add_option("--transforms", options.transforms, "train and/or eval, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--crop-scale-min", options.crop_scale_min,
                 "Train transform: smallest random-resized-crop area fraction")
      ->capture_default_str();
  app.add_option("--min-per-core", options.min_per_core,
                 "Exit 23 when any row's images/s per core is below this; 0 = off")
      ->capture_default_str();
  app.add_option("--seed", options.seed, "Seed of the generated images and the crops")
      ->capture_default_str();
  app.add_option("--work-dir", options.work_dir,
                 "Write the images here (default: a temp dir, removed)");
  app.add_option("--log-level", options.log_level, "debug | info | warn | error")
      ->capture_default_str();
  return pipet::bench::run_benchmark(app, argc, argv, [&] { return pipet::bench::run(options); });
}
