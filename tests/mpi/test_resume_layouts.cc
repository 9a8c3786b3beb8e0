// A run's state belongs to no layout (np 4): ViT and BERT with dropout on,
// stopped on 2x2, resume on 2 ranks as 1x2 and 2x1 and on one process and
// end with the uninterrupted run's weights; so does a run stopped after a
// freeze transition with AutoCache on. Broken steps (a part missing or
// truncated, a manifest naming a part that is not there) are skipped for
// the previous complete one; none left is an IoError naming the file; a
// checkpoint of another architecture names the first tensor that differs;
// version 1 manifests (no tensor names) still load; export assembles the
// model from every part.
#include "tests/mpi/engine_test_support.h"

#include "runtime/comm/communicator.h"
#include "runtime/core/config.h"
#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/engine/export.h"
#include "runtime/engine/trainer.h"
#include "runtime/model/model.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pipet {
namespace {

namespace fs = std::filesystem;
using pipet::testing::SharedDir;
using pipet::testing::tiny_run;
using pipet::testing::world;

// Every weight of the model after `config`'s run on `group` (rank 0 of the
// group gathers; empty elsewhere), and the run's first step.
struct Finished {
  std::map<std::string, torch::Tensor> weights;
  int64_t resumed_step = 0;
  int64_t frozen_prefix = 0;
};

Finished run_on(Communicator& group, const TrainConfig& config) {
  Trainer trainer(config, &group);
  Finished out;
  out.resumed_step = trainer.state().step;
  trainer.run();
  out.frozen_prefix = trainer.state().frozen_prefix;
  if (group.rank() == 0)
    for (const auto& [name, tensor] : trainer.model().hf_parameters()) out.weights[name] = tensor.detach().clone();
  return out;
}

// ||a - b|| / ||b|| over the whole model.
double model_difference(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  std::vector<torch::Tensor> mine, theirs;
  for (const auto& [name, tensor] : b) {
    mine.push_back(a.at(name).reshape({-1}));
    theirs.push_back(tensor.reshape({-1}));
  }
  const torch::Tensor x = torch::cat(mine), y = torch::cat(theirs);
  return ((x - y).norm() / y.norm()).item<double>();
}

// Rank 0 copies `from` to `to` between barriers.
void copy_tree(const std::string& from, const std::string& to) {
  world().barrier();
  if (world().rank() == 0) fs::copy(from, to, fs::copy_options::recursive);
  world().barrier();
}

TrainConfig bert_tiny_run(const std::string& out, int64_t stages) {
  TrainConfig c = tiny_run(out, stages, 2, "1f1b");
  c.model.preset = "bert-tiny";
  c.model.vocab_size = 512;
  c.data.dataset = "synthetic-text";
  c.data.seq_len = 16;
  return c;
}

struct Resumed {
  std::string name;
  int ranks;
  int64_t stages;
};

// `base` (a 4-rank run) uninterrupted, and stopped after `stop` steps and
// resumed on each of `layouts` from a copy of its checkpoints.
void expect_every_layout_resumes(const std::string& dir, const TrainConfig& base, int64_t stop,
                                 const std::vector<Resumed>& layouts, int64_t frozen_at_stop) {
  const Finished straight = run_on(world(), base);
  TrainConfig stopped = base;
  stopped.output.dir = dir + "/stopped";
  stopped.checkpoint.dir = dir + "/checkpoints";
  stopped.checkpoint.every_steps = stop;
  stopped.checkpoint.every_epochs = 0;
  {
    Trainer first(stopped, &world());
    EXPECT_TRUE(first.run(RunLimits{stop}).interrupted);
    EXPECT_EQ(first.state().frozen_prefix, frozen_at_stop);
  }
  for (const Resumed& layout : layouts) {
    TrainConfig resumed = stopped;
    resumed.output.dir = dir + "/" + layout.name;
    resumed.checkpoint.dir = dir + "/checkpoints-" + layout.name;
    resumed.parallel.pipeline_stages = layout.stages;
    copy_tree(stopped.checkpoint.dir, resumed.checkpoint.dir);
    std::unique_ptr<Communicator> group =
        world().subgroup(world().rank() < layout.ranks ? 0 : -1, world().rank(), layout.name);
    Finished finished;
    if (group) finished = run_on(*group, resumed);
    world().barrier();
    if (world().rank() != 0) continue;
    EXPECT_EQ(finished.resumed_step, stop) << layout.name << ": did not resume";
    EXPECT_EQ(finished.frozen_prefix, straight.frozen_prefix) << layout.name;
    ASSERT_EQ(finished.weights.size(), straight.weights.size()) << layout.name;
    EXPECT_LE(model_difference(finished.weights, straight.weights), 1e-5)
        << layout.name << " ended with other weights than the uninterrupted 4-rank run";
  }
}

const std::vector<Resumed> kOtherLayouts = {{"1x2", 2, 1}, {"2x1", 2, 2}, {"1x1", 1, 1}};

TEST(ResumeAnyLayout, VitWithDropoutStoppedOn2x2EndsAsUninterruptedOnEveryLayout) {
  ASSERT_EQ(world().size(), 4) << "run this binary with mpirun -np 4";
  SharedDir dir;
  TrainConfig base = tiny_run(dir.path() + "/straight", 2, 2, "1f1b");
  base.train.max_steps = 6;
  ASSERT_GT(base.model.hidden_dropout, 0.0);
  ASSERT_GT(base.model.attention_dropout, 0.0);
  expect_every_layout_resumes(dir.path(), base, 3, kOtherLayouts, 0);
}

TEST(ResumeAnyLayout, BertWithDropoutStoppedOn2x2EndsAsUninterruptedOnEveryLayout) {
  SharedDir dir;
  TrainConfig base = bert_tiny_run(dir.path() + "/straight", 2);
  base.train.max_steps = 6;
  expect_every_layout_resumes(dir.path(), base, 3, kOtherLayouts, 0);
}

// Block 0 freezes at step 2 (4x1 compresses); stopped at step 3 with
// AutoCache serving the frozen prefix, resumed with an empty cache on 2
// ranks (K0 2, re-planned for the frozen block) and on one.
TEST(ResumeAnyLayout, AfterAFreezeTransitionWithAutoCacheEveryLayoutEndsAsUninterrupted) {
  SharedDir dir;
  TrainConfig base = tiny_run(dir.path() + "/straight", 4, 2, "1f1b");
  base.train.max_steps = 6;
  base.freeze.policy = "manual";
  base.freeze.manual = {1};
  base.freeze.every_steps = 2;
  base.autocache.mode = "on";
  expect_every_layout_resumes(dir.path(), base, 3, {{"frozen-1x2", 2, 2}, {"frozen-1x1", 1, 1}}, 1);
}

// The other way: one process stops, four ranks (2x2) resume its flat
// checkpoint.dir/step-N and end with the uninterrupted single process's weights.
TEST(ResumeAnyLayout, ASingleProcessCheckpointResumesOnFourRanks) {
  SharedDir dir;
  TrainConfig base = tiny_run(dir.path() + "/solo-straight", 1, 2, "1f1b");
  base.train.max_steps = 6;
  std::unique_ptr<Communicator> solo = world().subgroup(world().rank() == 0 ? 0 : -1, 0, "solo");
  Finished straight;
  TrainConfig stopped = base;
  stopped.output.dir = dir.path() + "/solo-stopped";
  stopped.checkpoint.dir = dir.path() + "/solo-checkpoints";
  stopped.checkpoint.every_steps = 3;
  stopped.checkpoint.every_epochs = 0;
  if (solo) {
    straight = run_on(*solo, base);
    Trainer first(stopped, solo.get());
    EXPECT_TRUE(first.run(RunLimits{3}).interrupted);
  }
  world().barrier();
  TrainConfig resumed = stopped;
  resumed.output.dir = dir.path() + "/solo-resumed";
  resumed.parallel.pipeline_stages = 2;
  const Finished finished = run_on(world(), resumed);
  if (world().rank() == 0) {
    EXPECT_EQ(finished.resumed_step, 3);
    EXPECT_LE(model_difference(finished.weights, straight.weights), 1e-5)
        << "2x2 resumed from one process's step 3 ended with other weights";
  }
}

// Checkpoints at steps 2 and 4 of a 2x2 run, for the broken-step cases.
std::string two_checkpoints(const std::string& dir) {
  TrainConfig c = tiny_run(dir + "/run", 2, 2, "1f1b");
  c.train.max_steps = 4;
  c.checkpoint.dir = dir + "/checkpoints";
  c.checkpoint.every_steps = 2;
  c.checkpoint.every_epochs = 0;
  Trainer trainer(c, &world());
  trainer.run();
  return c.checkpoint.dir;
}

// The step a `ranks`-rank job with K0 `stages` resumes from `checkpoints`
// (all ranks agree; -1 on ranks outside the job).
int64_t resumed_step(const std::string& checkpoints, const std::string& out, int ranks, int64_t stages) {
  TrainConfig c = tiny_run(out, stages, 2, "1f1b");
  c.train.max_steps = 6;
  c.checkpoint.dir = checkpoints;
  std::unique_ptr<Communicator> group = world().subgroup(world().rank() < ranks ? 0 : -1, world().rank(), "resume");
  int64_t step = -1;
  if (group) {
    Trainer trainer(c, group.get());
    step = trainer.state().step;
  }
  world().barrier();
  return step;
}

TEST(ResumeAnyLayout, ABrokenStepIsSkippedForThePreviousCompleteOne) {
  SharedDir dir;
  const std::string saved = two_checkpoints(dir.path());
  const std::string step4 = "step-0000000004";
  struct Case {
    std::string name;
    std::function<void(const std::string&)> damage;
  };
  const std::vector<Case> cases = {
      {"part-missing", [&](const std::string& d) { fs::remove_all(d + "/rank-00003/" + step4); }},
      {"part-truncated",
       [&](const std::string& d) { fs::resize_file(d + "/rank-00001/" + step4 + "/model.safetensors", 100); }},
      {"manifest-names-a-missing-part",
       [&](const std::string& d) {
         const std::string manifest = d + "/manifest-" + step4 + ".json";
         nlohmann::json j = nlohmann::json::parse(read_file(manifest));
         j["parts"][2] = "rank-00002/step-0000000099";
         write_file_atomic(manifest, j.dump());
       }},
  };
  for (const Case& c : cases) {
    const std::string copy = dir.path() + "/" + c.name;
    copy_tree(saved, copy);
    if (world().rank() == 0) c.damage(copy);
    world().barrier();
    // Another layout reads every part; the saving layout its own.
    const int64_t on_two = resumed_step(copy, dir.path() + "/" + c.name + "-2", 2, 1);
    if (world().rank() == 0) {
      EXPECT_EQ(on_two, 2) << c.name << " on 2 ranks";
    }
    const int64_t on_four = resumed_step(copy, dir.path() + "/" + c.name + "-4", 4, 2);
    if (world().rank() == 0) {
      EXPECT_EQ(on_four, 2) << c.name << " on the saving layout";
    }
  }
  // Nothing complete left: an IoError naming the file, on every rank.
  const std::string none = dir.path() + "/none";
  copy_tree(saved, none);
  if (world().rank() == 0) {
    fs::remove_all(none + "/rank-00003/" + step4);
    fs::resize_file(none + "/rank-00000/step-0000000002/optimizer.safetensors", 50);
  }
  world().barrier();
  std::unique_ptr<Communicator> pair = world().subgroup(world().rank() < 2 ? 0 : -1, world().rank(), "none");
  if (pair) {
    TrainConfig c = tiny_run(dir.path() + "/none-run", 1, 2, "1f1b");
    c.checkpoint.dir = none;
    try {
      Trainer trainer(c, pair.get());
      ADD_FAILURE() << "resuming from no complete step did not fail";
    } catch (const IoError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("none of the 2 checkpoints"), std::string::npos) << message;
      EXPECT_NE(message.find("step-0000000002/optimizer.safetensors"), std::string::npos) << message;
    }
  }
  world().barrier();
}

TEST(ResumeAnyLayout, AnotherArchitectureNamesTheFirstTensorThatDiffers) {
  SharedDir dir;
  const std::string saved = two_checkpoints(dir.path());
  std::unique_ptr<Communicator> pair = world().subgroup(world().rank() < 2 ? 0 : -1, world().rank(), "arch");
  if (pair) {
    TrainConfig c = tiny_run(dir.path() + "/arch", 1, 2, "1f1b");
    c.model.num_layers = 3;
    c.checkpoint.dir = saved;
    try {
      Trainer trainer(c, pair.get());
      ADD_FAILURE() << "a 3-block model resumed a 2-block checkpoint";
    } catch (const ModelError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("tensor 'vit.encoder.layer.2."), std::string::npos) << message;
      EXPECT_NE(message.find("is not in the checkpoint"), std::string::npos) << message;
    }
  }
  world().barrier();
}

TEST(ResumeAnyLayout, AVersionOneManifestStillLoadsOnAnyLayout) {
  SharedDir dir;
  const std::string saved = two_checkpoints(dir.path());
  if (world().rank() == 0) {
    for (const char* step : {"step-0000000002", "step-0000000004"}) {
      const std::string manifest = saved + "/manifest-" + std::string(step) + ".json";
      const nlohmann::json v2 = nlohmann::json::parse(read_file(manifest));
      const nlohmann::json v1 = {{"step", v2.at("step")},
                                 {"world_size", v2.at("world_size")},
                                 {"pipeline_stages", v2.at("pipeline_stages")},
                                 {"replicas", v2.at("replicas")},
                                 {"micro_batches", v2.at("micro_batches")}};
      write_file_atomic(manifest, v1.dump());
    }
  }
  world().barrier();
  const std::string same = dir.path() + "/same";
  copy_tree(saved, same);
  const int64_t on_four = resumed_step(same, dir.path() + "/v1-4", 4, 2);
  if (world().rank() == 0) {
    EXPECT_EQ(on_four, 4);
  }
  const int64_t on_one = resumed_step(saved, dir.path() + "/v1-1", 1, 1);
  if (world().rank() == 0) {
    EXPECT_EQ(on_one, 4);
  }
}

// `pipetransformer export` from a 4-rank checkpoint: the whole model from
// its parts, named by the checkpoint.dir or by any one part.
TEST(ResumeAnyLayout, ExportAssemblesTheModelFromEveryPart) {
  SharedDir dir;
  const std::string saved = two_checkpoints(dir.path());
  const std::map<std::string, torch::Tensor> parts = pipet::testing::checkpoint_tensors(saved, 4, "model.safetensors");
  if (world().rank() == 0) {
    for (const std::string& source : {saved, saved + "/rank-00002/step-0000000004"}) {
      const std::string out = dir.path() + "/exported-" + std::to_string(source.size());
      export_checkpoint(source, out);
      const std::map<std::string, torch::Tensor> exported = load_safetensors(out + "/model.safetensors");
      ASSERT_EQ(exported.size(), parts.size()) << source;
      for (const auto& [name, tensor] : parts) EXPECT_TRUE(torch::equal(exported.at(name), tensor)) << name;
    }
  }
  world().barrier();
}

}  // namespace
}  // namespace pipet
