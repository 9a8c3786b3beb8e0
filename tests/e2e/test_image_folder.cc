// End to end: `pipetransformer train` on a generated ImageNet-layout folder
// of small JPEGs and PNGs, and the bad inputs: corrupt and truncated images
// (fail names the file, skip reports the count and finishes), an empty
// class folder, a folder without classes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "runtime/data/image_decode.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace pipet {
namespace {

namespace fs = std::filesystem;
using testing::ProcessResult;
using testing::TempDir;

ProcessResult cli(std::vector<std::string> args) {
  args.insert(args.begin(), PIPET_CLI_PATH);
  testing::ProcessOptions options;
  options.extra_env.push_back("OMP_NUM_THREADS=1");
  return testing::run_process(args, options);
}

std::string all_output(const ProcessResult& r) { return r.out + r.err; }

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// A class-coloured image with some texture, w x h.
std::vector<uint8_t> class_image(int label, int w, int h, int variant) {
  static const uint8_t colours[3][3] = {{200, 40, 40}, {40, 200, 40}, {40, 40, 200}};
  std::vector<uint8_t> rgb;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        rgb.push_back(static_cast<uint8_t>(colours[label][c] / 2 + ((x * 7 + y * 13 + variant * 29 + c * 5) % 64)));
  return rgb;
}

// data/{train,val}/{zebra,ant,Moth}/: 6 train images per class (4 JPEG,
// 2 PNG, various sizes), 2 val images per class, and a stray text file.
std::string make_image_folder(const TempDir& dir) {
  const std::string root = dir.file("data");
  const char* classes[3] = {"zebra", "ant", "Moth"};
  for (int label = 0; label < 3; ++label) {
    for (int i = 0; i < 8; ++i) {
      const int w = 40 + 4 * i, h = 36 + 3 * (i % 3);
      const std::vector<uint8_t> rgb = class_image(label, w, h, i);
      const bool png = i % 4 == 3;
      const std::string split = i < 6 ? "train" : "val";
      const std::string path = root + "/" + split + "/" + classes[label] + "/img" + std::to_string(i) +
                               (png ? ".png" : ".JPG");
      write_bytes(path, png ? encode_png(rgb.data(), w, h)
                            : encode_jpeg(rgb.data(), w, h, JpegPixels::kRgb, 90));
    }
  }
  write_bytes(root + "/train/ant/LICENSE.txt", {'x'});
  return root;
}

std::vector<std::string> train_args(const TempDir& dir, const std::string& data_dir,
                                    std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"train",
                                   "--set", "model.preset=vit-tiny",
                                   "--set", "data.dataset=image-folder",
                                   "--set", "data.dir=" + data_dir,
                                   "--set", "data.decode_threads=2",
                                   "--set", "train.batch_size=6",
                                   "--set", "train.epochs=1",
                                   "--set", "train.log_every_steps=1",
                                   "--set", "runtime.threads=1",
                                   "--output", dir.file("out")};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST(ImageFolderE2e, TrainsAndExportsTheFolderNamesAsLabels) {
  TempDir dir;
  const std::string data = make_image_folder(dir);
  ProcessResult r = cli(train_args(dir, data));
  ASSERT_EQ(r.exit_code, 0) << all_output(r);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(event=train; epoch=0; step=\d+; train_loss=)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(eval_accuracy=[0-9.]+;.*eval_samples=6;)"))) << r.out;
  EXPECT_NE(r.err.find("image-folder: 18 train images in 3 classes"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("6 eval images from '" + data + "/val'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ignored 1 entries"), std::string::npos) << r.err;
  const auto config = nlohmann::json::parse(testing::read_text(dir.file("out/config.json")));
  // Byte-wise sorted folder names: upper case first.
  EXPECT_EQ(config["id2label"], (nlohmann::json{{"0", "Moth"}, {"1", "ant"}, {"2", "zebra"}})) << config.dump();
  EXPECT_EQ(config["image_size"], 32);

  // The shipped ImageNet recipe validates, and runs on this folder once the
  // model and batch are shrunk to fit a test.
  const std::string example = std::string(PIPET_SOURCE_DIR) + "/examples/vit-b16-imagenet-folder.json";
  ProcessResult valid = cli({"config", "--validate", example});
  EXPECT_EQ(valid.exit_code, 0) << all_output(valid);
  TempDir run;
  ProcessResult recipe = cli({"train", "--config", example, "--set", "data.dir=" + data,
                              "--set", "model.preset=vit-tiny", "--set", "train.batch_size=9",
                              "--set", "train.epochs=1", "--set", "runtime.threads=1",
                              "--set", "checkpoint.dir=" + run.file("ckpt"), "--output", run.file("out")});
  EXPECT_EQ(recipe.exit_code, 0) << all_output(recipe);
}

TEST(ImageFolderE2e, CorruptAndTruncatedImagesFailOrAreSkipped) {
  TempDir dir;
  const std::string data = make_image_folder(dir);
  // A JPEG header followed by garbage, in place of a training image.
  const std::string corrupt = data + "/train/ant/img1.JPG";
  std::vector<uint8_t> garbage = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0};
  garbage.resize(400, 0x5A);
  write_bytes(corrupt, garbage);

  ProcessResult fail = cli(train_args(dir, data));
  EXPECT_EQ(fail.exit_code, 3) << all_output(fail);
  EXPECT_NE(fail.err.find(corrupt), std::string::npos) << fail.err;
  EXPECT_NE(fail.err.find("corrupt JPEG"), std::string::npos) << fail.err;

  ProcessResult skip = cli(train_args(dir, data, {"--set", "data.on_bad_sample=skip"}));
  ASSERT_EQ(skip.exit_code, 0) << all_output(skip);
  EXPECT_NE(skip.err.find("skipping unreadable image: " + corrupt), std::string::npos) << skip.err;
  EXPECT_TRUE(std::regex_search(skip.err, std::regex(R"(image-folder train: 1 samples replaced in total, 1 unreadable files)")))
      << skip.err;
  EXPECT_NE(skip.out.find("eval_accuracy="), std::string::npos) << skip.out;

  // A PNG cut short, in the evaluation set.
  const std::string truncated = data + "/val/zebra/img7.png";
  const std::string png = testing::read_text(truncated);
  testing::write_text(truncated, png.substr(0, png.size() / 2));
  write_bytes(corrupt, encode_jpeg(class_image(1, 40, 40, 1).data(), 40, 40, JpegPixels::kRgb, 90));
  ProcessResult cut = cli(train_args(dir, data));
  EXPECT_EQ(cut.exit_code, 3) << all_output(cut);
  EXPECT_NE(cut.err.find(truncated + ": corrupt or truncated PNG"), std::string::npos) << cut.err;
}

TEST(ImageFolderE2e, EmptyClassFolderAndMissingClassesNameThePath) {
  TempDir dir;
  const std::string data = make_image_folder(dir);
  fs::create_directories(data + "/train/empty_class");
  ProcessResult empty = cli(train_args(dir, data));
  EXPECT_EQ(empty.exit_code, 3) << all_output(empty);
  EXPECT_NE(empty.err.find("class folder '" + data + "/train/empty_class' is empty"), std::string::npos)
      << empty.err;

  const std::string flat = dir.file("flat");
  write_bytes(flat + "/a.jpg", encode_jpeg(class_image(0, 16, 16, 0).data(), 16, 16, JpegPixels::kRgb, 90));
  ProcessResult none = cli(train_args(dir, "", {"--set", "data.train_path=" + flat}));
  EXPECT_EQ(none.exit_code, 3) << all_output(none);
  EXPECT_NE(none.err.find("data.train_path '" + flat + "' has no class folders"), std::string::npos)
      << none.err;

  ProcessResult missing = cli(train_args(dir, dir.file("nowhere")));
  EXPECT_EQ(missing.exit_code, 3) << all_output(missing);
  EXPECT_NE(missing.err.find("data.dir '" + dir.file("nowhere") + "' has no train/ folder"),
            std::string::npos) << missing.err;
}

}  // namespace
}  // namespace pipet
