#include "runtime/core/config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <set>

#include "runtime/core/errors.h"
#include "tests/support/temp_dir.h"

namespace pipet {
namespace {

using nlohmann::json;
using pipet::testing::TempDir;
using pipet::testing::write_text;

// The message of the `E` that `f` throws; fails the test if it throws nothing.
template <class E = ConfigError, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

void expect_contains(const std::string& message, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts)
    EXPECT_NE(message.find(part), std::string::npos) << "missing '" << part << "' in: " << message;
}

// Loads `text` as a config file; returns the config.
class ConfigFile : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    const std::string path = dir_.file("config.json");
    write_text(path, text);
    return path;
  }
  TrainConfig load(const std::string& text) { return load_config_file(write(text)); }
  std::string load_error(const std::string& text) {
    const std::string path = write(text);
    return error_of([&] { load_config_file(path); });
  }
  std::string path() const { return dir_.file("config.json"); }

 private:
  TempDir dir_;
};

const ConfigSource kSet{"--set"};

TrainConfig with_text(const std::string& key, const std::string& value) {
  TrainConfig config;
  apply_config_text(config, key, value, kSet);
  return config;
}

std::string text_error(const std::string& key, const std::string& value) {
  TrainConfig config;
  return error_of([&] { apply_config_text(config, key, value, kSet); });
}

std::string validate_error(const TrainConfig& config) {
  return error_of([&] { validate_config(config); });
}

// ---------------------------------------------------------------------------
// Files: loading, nesting, dotted keys
// ---------------------------------------------------------------------------

TEST_F(ConfigFile, EmptyObjectGivesDefaults) {
  const TrainConfig config = load("{}");
  EXPECT_EQ(config.model.preset, "vit-tiny");
  EXPECT_FALSE(config.model.hidden_size.has_value());
  EXPECT_EQ(config.train.epochs, 3);
  EXPECT_EQ(config.train.lr, 1e-3);
  EXPECT_EQ(config.train.seed, 42u);
  EXPECT_EQ(config.checkpoint.resume, "auto");
  EXPECT_EQ(config_to_json(config), config_to_json(TrainConfig{}));
}

TEST(ConfigSchema, DefaultsSatisfyTheirOwnSchemaAndValidation) {
  TrainConfig config;
  config.train.lr = 0.5;  // prove the apply actually writes
  apply_config_json(config, config_to_json(TrainConfig{}), ConfigSource{"defaults"});
  EXPECT_EQ(config.train.lr, 1e-3);
  EXPECT_NO_THROW(validate_config(TrainConfig{}));
}

TEST_F(ConfigFile, NestedAndDottedKeysMix) {
  const TrainConfig config = load(R"({
    "train": {"lr": 0.1, "epochs": 5, "optimizer": "sgd"},
    "train.batch_size": 64,
    "model.hidden_size": 96,
    "model": {"num_heads": 4, "hidden_dropout": 0.25},
    "data": {"augment": false, "mean": [0.5, 0.25, 0.125]},
    "runtime.log_level": "debug"
  })");
  EXPECT_EQ(config.train.lr, 0.1);
  EXPECT_EQ(config.train.epochs, 5);
  EXPECT_EQ(config.train.optimizer, "sgd");
  EXPECT_EQ(config.train.batch_size, 64);
  EXPECT_EQ(config.model.hidden_size, std::optional<int64_t>(96));
  EXPECT_EQ(config.model.num_heads, std::optional<int64_t>(4));
  EXPECT_EQ(config.model.hidden_dropout, std::optional<double>(0.25));
  EXPECT_FALSE(config.data.augment);
  EXPECT_EQ(config.data.mean, (std::vector<double>{0.5, 0.25, 0.125}));
  EXPECT_EQ(config.runtime.log_level, "debug");
  // Untouched keys keep their defaults.
  EXPECT_EQ(config.train.weight_decay, 0.01);
  EXPECT_TRUE(config.data.hflip);
}

TEST_F(ConfigFile, CommentsAreAllowed) {
  const TrainConfig config = load("{\n  // a short run\n  \"train\": {\"epochs\": 1} /* one */\n}");
  EXPECT_EQ(config.train.epochs, 1);
}

TEST_F(ConfigFile, SameKeyNestedAndDottedIsAnError) {
  const std::string message = load_error(R"({"train": {"lr": 0.1}, "train.lr": 0.2})");
  expect_contains(message, {path() + ": ", "'train.lr'", "twice"});
}

TEST_F(ConfigFile, SameKeyTwiceInOneObjectIsAnError) {
  const std::string message = load_error(R"({"train": {"lr": 0.1, "epochs": 2, "lr": 0.2}})");
  expect_contains(message, {path() + ": ", "'train.lr'", "twice"});
  // Equal keys in different objects are fine.
  EXPECT_NO_THROW(load(R"({"train": {"batch_size": 8}, "eval": {"batch_size": 4}})"));
}

TEST_F(ConfigFile, UnknownKeySuggestsClosest) {
  EXPECT_EQ(load_error(R"({"train": {"lrr": 0.1}})"),
            path() + ": unknown key 'train.lrr' (did you mean 'train.lr'?)");
  EXPECT_EQ(load_error(R"({"train.lrr": 0.1})"),
            path() + ": unknown key 'train.lrr' (did you mean 'train.lr'?)");
  EXPECT_EQ(load_error(R"({"model": {"hiden_size": 8}})"),
            path() + ": unknown key 'model.hiden_size' (did you mean 'model.hidden_size'?)");
  // Nothing close: no suggestion.
  const std::string message = load_error(R"({"train": {"qqqqqqqqqq": 1}})");
  expect_contains(message, {"unknown key 'train.qqqqqqqqqq'"});
  EXPECT_EQ(message.find("did you mean"), std::string::npos) << message;
}

TEST_F(ConfigFile, UnknownSectionSuggestsClosest) {
  expect_contains(load_error(R"({"trian": {"lr": 0.1}})"),
                  {path() + ": unknown section 'trian' (did you mean 'train'?)"});
  // A bare key without its section points at the full key.
  expect_contains(load_error(R"({"lr": 0.1})"),
                  {"unknown section 'lr' (did you mean 'train.lr'?)"});
  expect_contains(load_error(R"({"batch_size": 8})"),
                  {"unknown section 'batch_size'", "'train.batch_size'", "'eval.batch_size'"});
}

TEST_F(ConfigFile, WrongTypeNamesKeyExpectationAndValue) {
  EXPECT_EQ(load_error(R"({"train": {"epochs": "three"}})"),
            path() + ": key 'train.epochs': expected an integer >= 1, got \"three\" (a string)");
  expect_contains(load_error(R"({"train": {"lr": "fast"}})"),
                  {"key 'train.lr'", "expected a number > 0", "\"fast\" (a string)"});
  expect_contains(load_error(R"({"data": {"dir": 5}})"),
                  {"key 'data.dir'", "expected a string", "got 5 (an integer)"});
  expect_contains(load_error(R"({"model": {"hidden_size": [64]}})"),
                  {"key 'model.hidden_size'", "or null", "[64] (an array)"});
  expect_contains(load_error(R"({"train": {"seed": -1}})"), {"key 'train.seed'", "got -1"});
}

TEST_F(ConfigFile, BooleansMustBeJsonBooleans) {
  expect_contains(load_error(R"({"data": {"augment": "false"}})"),
                  {"key 'data.augment'", "expected a boolean", "\"false\" (a string)"});
  expect_contains(load_error(R"({"data": {"augment": 0}})"),
                  {"key 'data.augment'", "expected a boolean", "got 0"});
  EXPECT_FALSE(load(R"({"data": {"augment": false}})").data.augment);
}

TEST_F(ConfigFile, IntegralFloatsAreIntegersButFractionsAreNot) {
  EXPECT_EQ(load(R"({"train": {"epochs": 3.0}})").train.epochs, 3);
  EXPECT_EQ(load(R"({"train": {"max_steps": 1e3}})").train.max_steps, 1000);
  expect_contains(load_error(R"({"train": {"epochs": 3.5}})"),
                  {"key 'train.epochs'", "expected an integer >= 1", "got 3.5"});
  // An integer is a fine float.
  EXPECT_EQ(load(R"({"train": {"lr": 1}})").train.lr, 1.0);
}

TEST_F(ConfigFile, OutOfRangeNamesKeyValueAndRange) {
  expect_contains(load_error(R"({"train": {"lr": -1}})"),
                  {path(), "key 'train.lr'", "-1", "out of range", "> 0"});
  expect_contains(load_error(R"({"train": {"epochs": 0}})"), {"key 'train.epochs'", "0", ">= 1"});
  expect_contains(load_error(R"({"train": {"momentum": 1.0}})"),
                  {"key 'train.momentum'", "1.0", "in [0, 1)"});
  expect_contains(load_error(R"({"train": {"min_lr_ratio": 1.5}})"),
                  {"key 'train.min_lr_ratio'", "1.5", "in [0, 1]"});
  EXPECT_EQ(load(R"({"train": {"min_lr_ratio": 1.0}})").train.min_lr_ratio, 1.0);  // inclusive
  expect_contains(load_error(R"({"train": {"adam_eps": 0}})"), {"key 'train.adam_eps'", "> 0"});
  expect_contains(load_error(R"({"data": {"num_classes": 1}})"),
                  {"key 'data.num_classes'", ">= 2"});
  expect_contains(load_error(R"({"data": {"seq_len": 1}})"), {"key 'data.seq_len'", ">= 2"});
  expect_contains(load_error(R"({"checkpoint": {"keep": 0}})"), {"key 'checkpoint.keep'", ">= 1"});
  expect_contains(load_error(R"({"model": {"hidden_dropout": 1}})"),
                  {"key 'model.hidden_dropout'", "in [0, 1)"});
  expect_contains(load_error(R"({"runtime": {"threads": -2}})"), {"key 'runtime.threads'", ">= 0"});
  expect_contains(load_error(R"({"train": {"epochs": 9223372036854775808}})"),
                  {"key 'train.epochs'", "9223372036854775808"});
  EXPECT_EQ(load(R"({"data": {"eval_samples": 0}})").data.eval_samples, 0);
}

TEST_F(ConfigFile, EnumsListTheirChoicesAndSuggest) {
  const std::string message = load_error(R"({"train": {"optimizer": "adam"}})");
  expect_contains(message, {"key 'train.optimizer'", "one of \"adamw\", \"sgd\"", "\"adam\"",
                            "(did you mean 'adamw'?)"});
  expect_contains(load_error(R"({"model": {"preset": "vit-base"}})"),
                  {"key 'model.preset'", "\"vit-b16\"", "\"bert-large\""});
  expect_contains(load_error(R"({"runtime": {"log_level": "verbose"}})"),
                  {"key 'runtime.log_level'"});
  expect_contains(load_error(R"({"autopipe": {"frozen_balance": "time"}})"),
                  {"key 'autopipe.frozen_balance'", "one of \"auto\", \"lambda\", \"forward\"", "\"time\""});
  EXPECT_EQ(load(R"({"autopipe": {"frozen_balance": "forward"}})").autopipe.frozen_balance, "forward");
  EXPECT_EQ(load(R"({"runtime": {"log_level": ""}})").runtime.log_level, "");
  EXPECT_EQ(load(R"({"data": {"cifar100_labels": "coarse"}})").data.cifar100_labels, "coarse");
}

TEST_F(ConfigFile, RequiredStringsRejectEmpty) {
  expect_contains(load_error(R"({"checkpoint": {"resume": ""}})"),
                  {"key 'checkpoint.resume'", "non-empty"});
  expect_contains(load_error(R"({"output": {"dir": ""}})"), {"key 'output.dir'", "non-empty"});
  EXPECT_EQ(load(R"({"checkpoint": {"resume": "/ckpt/step-10"}})").checkpoint.resume,
            "/ckpt/step-10");
}

TEST_F(ConfigFile, NullUnsetsOptionals) {
  TrainConfig config;
  config.model.hidden_size = 128;
  config.model.layer_norm_eps = 1e-6;
  apply_config_json(config,
                    json::parse(R"({"model": {"hidden_size": null, "layer_norm_eps": null}})"),
                    ConfigSource{"x"});
  EXPECT_FALSE(config.model.hidden_size.has_value());
  EXPECT_FALSE(config.model.layer_norm_eps.has_value());
  // null is not a value for a plain key.
  expect_contains(load_error(R"({"train": {"lr": null}})"), {"key 'train.lr'", "got null"});
}

TEST_F(ConfigFile, ListsCheckEveryElement) {
  expect_contains(load_error(R"({"data": {"mean": [0.5, "x", 0.5]}})"),
                  {"key 'data.mean[1]'", "expected a number", "\"x\" (a string)"});
  expect_contains(load_error(R"({"data": {"std": [0.5, 0]}})"),
                  {"key 'data.std[1]'", "out of range", "> 0"});
  expect_contains(load_error(R"({"data": {"mean": 0.5}})"),
                  {"key 'data.mean'", "a list of numbers", "0.5 (a number)"});
  EXPECT_TRUE(load(R"({"data": {"mean": []}})").data.mean.empty());
}

TEST_F(ConfigFile, TopLevelAndSectionsMustBeObjects) {
  expect_contains(load_error("[1, 2]"), {path(), "top level", "(an array)"});
  expect_contains(load_error(R"({"train": 3})"),
                  {path(), "section 'train'", "JSON object", "3 (an integer)"});
}

TEST_F(ConfigFile, SyntaxErrorsGiveLineAndColumn) {
  // "tru" spans columns 11-13 of line 3; the lexer fails on the space after it.
  std::string message = load_error("{\n  \"train\": {\n    \"lr\": tru \n  }\n}");
  EXPECT_EQ(message.rfind(path() + ":3:14: invalid JSON: ", 0), 0u) << message;
  expect_contains(message, {"invalid literal"});

  message = load_error("{\"train\": {\"lr\": 0.1,}}");
  EXPECT_EQ(message.rfind(path() + ":1:22: invalid JSON: ", 0), 0u) << message;

  message = load_error("");
  EXPECT_EQ(message.rfind(path() + ":1:1: invalid JSON: ", 0), 0u) << message;
  expect_contains(message, {"unexpected end of input"});

  message = load_error("{\"train\": {}}\n\n  x");
  EXPECT_EQ(message.rfind(path() + ":3:3: invalid JSON: ", 0), 0u) << message;
}

TEST(ConfigLoad, ExampleConfigsLoadAndValidate) {
  for (const char* name :
       {"vit-tiny-synthetic.json", "bert-tiny-synthetic.json", "cifar100-vit-b16.json"}) {
    const std::string path = std::string(PIPET_SOURCE_DIR) + "/examples/" + name;
    const TrainConfig config = load_config_file(path);
    EXPECT_NO_THROW(validate_config(config)) << path;
    EXPECT_NE(config_to_json(config), config_to_json(TrainConfig{})) << path;
  }
  const TrainConfig bert =
      load_config_file(std::string(PIPET_SOURCE_DIR) + "/examples/bert-tiny-synthetic.json");
  EXPECT_EQ(bert.model.preset, "bert-tiny");
  EXPECT_EQ(bert.train.warmup_ratio, 0.06);
}

TEST(ConfigLoad, MissingFileIsAnIoErrorNamingThePath) {
  TempDir dir;
  const std::string missing = dir.file("nope.json");
  const std::string message = error_of<IoError>([&] { load_config_file(missing); });
  expect_contains(message, {missing});
}

TEST(ConfigApply, FailedApplyLeavesConfigUntouched) {
  TrainConfig config;
  const std::string message = error_of([&] {
    apply_config_json(config,
                      json::parse(R"({"eval": {"every_steps": 5}, "train": {"epochs": 0}})"),
                      ConfigSource{"job.json"});
  });
  expect_contains(message, {"job.json: key 'train.epochs'"});
  EXPECT_EQ(config.eval.every_steps, 0);
}

TEST(ConfigApply, LargeSeedsSurviveExactly) {
  TrainConfig config;
  apply_config_json(config, json::parse(R"({"train": {"seed": 18446744073709551615}})"),
                    ConfigSource{"x"});
  EXPECT_EQ(config.train.seed, UINT64_MAX);
  apply_config_json(config, json::parse(R"({"train.seed": 9007199254740993})"), ConfigSource{"x"});
  EXPECT_EQ(config.train.seed, 9007199254740993ull);  // 2^53 + 1: not a double
}

// ---------------------------------------------------------------------------
// Text values (--set and SageMaker hyperparameters)
// ---------------------------------------------------------------------------

TEST(ConfigText, BooleansAcceptOnlyTheDocumentedSpellings) {
  for (const char* yes : {"true", "True", "TRUE", "1", " true "}) {
    TrainConfig config;
    config.data.augment = false;
    apply_config_text(config, "data.augment", yes, kSet);
    EXPECT_TRUE(config.data.augment) << yes;
  }
  for (const char* no : {"false", "False", "FALSE", "0", "\"False\""}) {
    TrainConfig config;
    ASSERT_TRUE(config.data.augment);
    apply_config_text(config, "data.augment", no, kSet);
    EXPECT_FALSE(config.data.augment) << no;
  }
  for (const char* bad : {"yes", "no", "", "2", "tRUE", "false!"}) {
    const std::string message = text_error("data.augment", bad);
    expect_contains(message, {"--set: key 'data.augment'", "expected a boolean"});
    expect_contains(message, {"got \"" + std::string(bad) + "\""});
  }
}

TEST(ConfigText, IntegersAreParsedStrictly) {
  EXPECT_EQ(with_text("train.epochs", "5").train.epochs, 5);
  EXPECT_EQ(with_text("train.epochs", "+7").train.epochs, 7);
  EXPECT_EQ(with_text("train.epochs", " 9 ").train.epochs, 9);
  EXPECT_EQ(with_text("train.epochs", "4.0").train.epochs, 4);
  EXPECT_EQ(with_text("train.max_steps", "1e3").train.max_steps, 1000);
  EXPECT_EQ(with_text("train.epochs", "\"6\"").train.epochs, 6);  // JSON-encoded by SageMaker
  for (const char* bad : {"12abc", "5.5", "", "0x10", "five", "1 2", "--1"}) {
    const std::string message = text_error("train.epochs", bad);
    expect_contains(message, {"--set: key 'train.epochs'", "expected an integer >= 1",
                              "got \"" + std::string(bad) + "\""});
  }
  expect_contains(text_error("train.epochs", "0"),
                  {"--set: key 'train.epochs'", "value 0", ">= 1"});
}

TEST(ConfigText, FloatsAreParsedStrictly) {
  EXPECT_EQ(with_text("train.lr", "1e-3").train.lr, 1e-3);
  EXPECT_EQ(with_text("train.lr", "0.1").train.lr, 0.1);
  EXPECT_EQ(with_text("train.lr", ".5").train.lr, 0.5);
  EXPECT_EQ(with_text("train.lr", "2").train.lr, 2.0);
  EXPECT_EQ(with_text("train.lr", "3.0E-4").train.lr, 3e-4);
  for (const char* bad : {"12abc", "inf", "nan", "1e999", "0x1p3", "1e", "", "0.1.2"}) {
    expect_contains(text_error("train.lr", bad), {"--set: key 'train.lr'", "expected a number > 0",
                                                  "got \"" + std::string(bad) + "\""});
  }
  expect_contains(text_error("train.lr", "-0.5"),
                  {"key 'train.lr'", "value -0.5", "out of range", "> 0"});
}

TEST(ConfigText, StringsAndEnums) {
  EXPECT_EQ(with_text("data.dir", "/data/cifar").data.dir, "/data/cifar");
  EXPECT_EQ(with_text("data.dir", "\"/data/with space\"").data.dir, "/data/with space");
  EXPECT_EQ(with_text("data.dir", "\"esc\\\"aped\"").data.dir, "esc\"aped");
  EXPECT_EQ(with_text("data.dir", "").data.dir, "");
  EXPECT_EQ(with_text("data.dir", "\"").data.dir, "\"");  // a lone quote is just a character
  EXPECT_EQ(with_text("train.optimizer", "\"sgd\"").train.optimizer, "sgd");
  EXPECT_EQ(with_text("runtime.log_level", "").runtime.log_level, "");
  expect_contains(text_error("train.optimizer", "adam"),
                  {"--set: key 'train.optimizer'", "\"adam\"", "did you mean 'adamw'"});
  expect_contains(text_error("data.dir", "\"a\"b\""),
                  {"--set: key 'data.dir'", "invalid JSON-encoded string"});
  expect_contains(text_error("data.dir", std::string("bad\xff")), {"key 'data.dir'", "UTF-8"});
}

TEST(ConfigText, OptionalsAcceptNullWords) {
  for (const char* unset : {"null", "none", "None", "NULL", ""}) {
    TrainConfig config;
    config.model.hidden_size = 64;
    config.model.hidden_dropout = 0.1;
    apply_config_text(config, "model.hidden_size", unset, kSet);
    apply_config_text(config, "model.hidden_dropout", unset, kSet);
    EXPECT_FALSE(config.model.hidden_size.has_value()) << unset;
    EXPECT_FALSE(config.model.hidden_dropout.has_value()) << unset;
  }
  EXPECT_EQ(with_text("model.hidden_size", "128").model.hidden_size, std::optional<int64_t>(128));
  EXPECT_EQ(with_text("model.layer_norm_eps", "1e-12").model.layer_norm_eps,
            std::optional<double>(1e-12));
  expect_contains(text_error("model.hidden_size", "big"),
                  {"key 'model.hidden_size'", "or null", "\"big\""});
  expect_contains(text_error("model.hidden_size", "0"),
                  {"key 'model.hidden_size'", "out of range", ">= 1"});
}

TEST(ConfigText, ListsAreCommaSeparatedOrJson) {
  const std::vector<double> expected{0.5, 0.25, 0.125};
  EXPECT_EQ(with_text("data.mean", "0.5,0.25,0.125").data.mean, expected);
  EXPECT_EQ(with_text("data.mean", " 0.5 , 0.25, 0.125 ").data.mean, expected);
  EXPECT_EQ(with_text("data.mean", "[0.5, 0.25, 0.125]").data.mean, expected);
  EXPECT_EQ(with_text("data.mean", "\"[0.5, 0.25, 0.125]\"").data.mean, expected);
  EXPECT_EQ(with_text("data.mean", "1").data.mean, std::vector<double>{1.0});
  TrainConfig config;
  config.data.mean = expected;
  apply_config_text(config, "data.mean", "", kSet);
  EXPECT_TRUE(config.data.mean.empty());
  EXPECT_TRUE(with_text("data.mean", "[]").data.mean.empty());
  expect_contains(text_error("data.mean", "0.5,x,0.5"), {"--set: key 'data.mean[1]'", "\"x\""});
  expect_contains(text_error("data.mean", "0.5,,0.5"), {"key 'data.mean[1]'"});
  expect_contains(text_error("data.mean", "[0.5, 0.5"), {"key 'data.mean'", "invalid JSON list"});
  expect_contains(text_error("data.std", "0.5,0"), {"key 'data.std[1]'", "out of range", "> 0"});
}

TEST(ConfigText, SeedsUseTheFullUnsignedRange) {
  EXPECT_EQ(with_text("train.seed", "18446744073709551615").train.seed, UINT64_MAX);
  EXPECT_EQ(with_text("train.seed", "9007199254740993").train.seed, 9007199254740993ull);
  EXPECT_EQ(with_text("train.seed", "0").train.seed, 0u);
  for (const char* bad : {"-1", "18446744073709551616", "1.5", "seed"})
    expect_contains(text_error("train.seed", bad), {"--set: key 'train.seed'", bad});
}

TEST(ConfigText, UnknownKeySuggests) {
  EXPECT_EQ(text_error("train.lrr", "0.1"),
            "--set: unknown key 'train.lrr' (did you mean 'train.lr'?)");
  EXPECT_EQ(error_of([] {
              TrainConfig c;
              apply_config_text(c, "trian.epochs", "2", ConfigSource{"hyperparameters.json"});
            }),
            "hyperparameters.json: unknown key 'trian.epochs' (did you mean 'train.epochs'?)");
}

TEST(ConfigAssignment, SplitsAtTheFirstEquals) {
  TrainConfig config;
  apply_config_assignment(config, "train.lr=0.5", kSet);
  apply_config_assignment(config, "data.dir=/a=b", kSet);
  apply_config_assignment(config, "output.metrics_file=m.jsonl", kSet);
  EXPECT_EQ(config.train.lr, 0.5);
  EXPECT_EQ(config.data.dir, "/a=b");
  EXPECT_EQ(config.output.metrics_file, "m.jsonl");
  expect_contains(error_of([&] { apply_config_assignment(config, "train.lr", kSet); }),
                  {"--set", "key=value", "'train.lr'"});
  expect_contains(error_of([&] { apply_config_assignment(config, "=3", kSet); }),
                  {"--set", "'=3'"});
  expect_contains(error_of([&] { apply_config_assignment(config, "train.epochs=x", kSet); }),
                  {"--set: key 'train.epochs'", "\"x\""});
}

// ---------------------------------------------------------------------------
// Cross-key validation
// ---------------------------------------------------------------------------

TEST(ConfigValidate, RechecksEveryKeyOfConfigsBuiltInCode) {
  TrainConfig config;
  config.train.lr = -1;
  EXPECT_EQ(validate_error(config),
            "configuration: key 'train.lr': value -1.0 is out of range; expected a number > 0");
  config = TrainConfig{};
  config.model.preset = "gpt-2";
  expect_contains(validate_error(config), {"key 'model.preset'", "\"gpt-2\""});
}

// The freeze rule's evidence and probe keys: out of range, or a probe
// without a rule to check, is named.
TEST(ConfigValidate, FreezeEvidenceAndProbeKeysAreChecked) {
  expect_contains(text_error("freeze.tolerance", "1"), {"freeze.tolerance"});
  expect_contains(text_error("freeze.tolerance", "0"), {"freeze.tolerance"});
  expect_contains(text_error("freeze.patience", "0"), {"freeze.patience"});
  expect_contains(text_error("freeze.probe_samples", "-1"), {"freeze.probe_samples"});
  expect_contains(text_error("freeze.probe_tolerance", "1.5"), {"freeze.probe_tolerance"});
  expect_contains(text_error("freeze.cooldown", "-2"), {"freeze.cooldown"});
  expect_contains(text_error("freeze.policy", "greedy"), {"freeze.policy", "paper", "adaptive"});
  TrainConfig config;
  config.freeze.probe_samples = 256;
  expect_contains(validate_error(config), {"freeze.probe_samples", "freeze.policy is 'none'"});
  config.freeze.policy = "adaptive";
  EXPECT_NO_THROW(validate_config(config));
}

TEST(ConfigValidate, FileDatasetsNeedADirectory) {
  TrainConfig config;
  config.data.dataset = "cifar10";
  expect_contains(validate_error(config), {"data.dataset", "'cifar10'", "data.dir"});
  config.data.dataset = "cifar100";
  expect_contains(validate_error(config), {"'cifar100'", "data.dir"});
  config.data.dir = "/data/cifar-100";
  EXPECT_NO_THROW(validate_config(config));
}

TEST(ConfigValidate, MeanAndStdHaveTheSameLength) {
  TrainConfig config;
  config.data.mean = {0.5, 0.5, 0.5};
  config.data.std = {0.25, 0.25};
  expect_contains(validate_error(config), {"data.mean", "3", "data.std", "2"});
  config.data.std = {0.25, 0.25, 0.25};
  EXPECT_NO_THROW(validate_config(config));
  config.model.num_channels = 1;
  expect_contains(validate_error(config), {"data.mean", "model.num_channels", "1"});
}

TEST(ConfigValidate, WarmupStepsAndRatioAreExclusive) {
  TrainConfig config;
  config.train.warmup_steps = 100;
  config.train.warmup_ratio = 0.1;
  expect_contains(validate_error(config), {"train.warmup_steps", "train.warmup_ratio"});
  config.train.warmup_ratio = 0;
  EXPECT_NO_THROW(validate_config(config));
  config.train.max_steps = 50;
  expect_contains(validate_error(config), {"train.warmup_steps", "train.max_steps"});
}

TEST(ConfigValidate, EarlyStoppingNeedsEvaluations) {
  TrainConfig config;
  config.eval.early_stop_patience = 3;
  config.eval.every_epochs = 0;
  config.eval.every_steps = 0;
  expect_contains(validate_error(config),
                  {"eval.early_stop_patience", "eval.every_steps", "eval.every_epochs"});
  config.eval.every_steps = 100;
  EXPECT_NO_THROW(validate_config(config));
}

TEST(ConfigValidate, CheckpointSettingsWithoutDirectoryAreAllowed) {
  TrainConfig config;
  config.checkpoint.every_steps = 10;
  config.checkpoint.every_epochs = 1;
  EXPECT_NO_THROW(validate_config(config));
  config.checkpoint.resume = "/runs/a/checkpoint-100";
  EXPECT_NO_THROW(validate_config(config));
}

TEST(ConfigValidate, PresetFamilyMustMatchDatasetModality) {
  TrainConfig config;
  config.model.preset = "bert-base";
  expect_contains(validate_error(config),
                  {"model.preset", "'bert-base'", "data.dataset", "'synthetic-image'"});
  config.data.dataset = "synthetic-text";
  EXPECT_NO_THROW(validate_config(config));
  config.model.preset = "vit-b16";
  expect_contains(validate_error(config),
                  {"model.preset", "'vit-b16'", "data.dataset", "'synthetic-text'"});
}

TEST(ConfigValidate, ArchitectureOverridesMustFitTheFamily) {
  TrainConfig bert;
  bert.model.preset = "bert-base";
  bert.data.dataset = "synthetic-text";
  bert.model.image_size = 32;
  expect_contains(validate_error(bert), {"model.image_size", "'bert-base'"});
  bert.model.image_size.reset();
  bert.model.num_channels = 1;
  expect_contains(validate_error(bert), {"model.num_channels"});
  bert.model.num_channels.reset();
  bert.model.vocab_size = 1000;
  EXPECT_NO_THROW(validate_config(bert));

  TrainConfig vit;
  vit.model.vocab_size = 1000;
  expect_contains(validate_error(vit), {"model.vocab_size", "'vit-tiny'"});
  vit.model.vocab_size.reset();
  vit.model.max_position_embeddings = 128;
  expect_contains(validate_error(vit), {"model.max_position_embeddings"});
}

TEST(ConfigValidate, ShapeConsistency) {
  TrainConfig config;
  config.model.hidden_size = 100;
  config.model.num_heads = 3;
  expect_contains(validate_error(config), {"model.hidden_size", "100", "model.num_heads", "3"});
  config.model.num_heads = 4;
  config.model.image_size = 32;
  config.model.patch_size = 5;
  expect_contains(validate_error(config), {"model.image_size", "model.patch_size", "5"});
  config.model.patch_size = 4;
  EXPECT_NO_THROW(validate_config(config));

  TrainConfig text;
  text.model.preset = "bert-tiny";
  text.data.dataset = "synthetic-text";
  text.model.max_position_embeddings = 32;
  text.data.seq_len = 64;
  expect_contains(validate_error(text),
                  {"data.seq_len", "64", "model.max_position_embeddings", "32"});
}

TEST(ConfigValidate, HeadMustHoldEveryClass) {
  TrainConfig config;
  config.model.num_labels = 5;  // synthetic default: 10 classes
  expect_contains(validate_error(config), {"model.num_labels", "5", "10"});
  config.data.dataset = "cifar100";
  config.data.dir = "/d";
  config.data.cifar100_labels = "coarse";
  config.model.num_labels = 20;
  EXPECT_NO_THROW(validate_config(config));
  config.data.cifar100_labels = "fine";
  expect_contains(validate_error(config), {"model.num_labels", "100"});
}

TEST(ConfigValidate, NesterovNeedsMomentum) {
  TrainConfig config;
  config.train.optimizer = "sgd";
  config.train.nesterov = true;
  config.train.momentum = 0;
  expect_contains(validate_error(config), {"train.nesterov", "train.momentum"});
}

// ---------------------------------------------------------------------------
// JSON export and round trips
// ---------------------------------------------------------------------------

TrainConfig unusual_config() {
  TrainConfig c;
  c.model.preset = "vit-small";
  c.model.hidden_size = 192;
  c.model.layer_norm_eps = 1e-12;
  c.model.hidden_dropout = 0.1 + 0.2;  // 0.30000000000000004
  c.model.num_labels = 100;
  c.data.dataset = "cifar100";
  c.data.dir = "/data/ü nicode";
  c.data.mean = {0.4914, 0.4822, 0.4465};
  c.data.std = {0.247, 0.2435, 0.2616};
  c.data.augment = false;
  c.train.lr = 1e-3;
  c.train.weight_decay = 1.0 / 3.0;
  c.train.adam_eps = 5e-324;               // smallest subnormal
  c.train.seed = 18446744073709551557ull;  // above 2^53 and 2^63
  c.train.optimizer = "sgd";
  c.train.schedule = "linear";
  c.eval.early_stop_metric = "eval_loss";
  c.checkpoint.resume = "never";
  c.runtime.log_level = "warn";
  c.runtime.threads = 3;
  return c;
}

TEST(ConfigJson, ExportIsNestedWithEveryKey) {
  const json exported = config_to_json(TrainConfig{});
  size_t count = 0;
  for (const std::string& key : config_keys()) {
    const size_t dot = key.find('.');
    const std::string section = key.substr(0, dot), member = key.substr(dot + 1);
    ASSERT_TRUE(exported.contains(section)) << section;
    EXPECT_TRUE(exported[section].contains(member)) << key;
    ++count;
  }
  size_t exported_count = 0;
  for (const auto& [section, members] : exported.items()) exported_count += members.size();
  EXPECT_EQ(exported_count, count);
  EXPECT_TRUE(exported["model"]["hidden_size"].is_null());
  EXPECT_EQ(exported["train"]["lr"], 1e-3);
  EXPECT_EQ(exported["train"]["optimizer"], "adamw");
  EXPECT_EQ(exported["train"]["seed"].get<uint64_t>(), 42u);
  EXPECT_EQ(exported["data"]["mean"], json::array());
}

TEST(ConfigJson, RoundTripReproducesTheConfigExactly) {
  const TrainConfig original = unusual_config();
  const json exported = config_to_json(original);

  TrainConfig restored;
  apply_config_json(restored, exported, ConfigSource{"round trip"});
  EXPECT_EQ(config_to_json(restored), exported);
  EXPECT_EQ(restored.train.seed, 18446744073709551557ull);
  EXPECT_EQ(restored.train.lr, 1e-3);
  EXPECT_EQ(restored.train.weight_decay, 1.0 / 3.0);
  EXPECT_EQ(restored.train.adam_eps, 5e-324);
  EXPECT_EQ(restored.model.hidden_dropout, std::optional<double>(0.1 + 0.2));
  EXPECT_EQ(restored.model.hidden_size, std::optional<int64_t>(192));
  EXPECT_FALSE(restored.model.num_layers.has_value());
  EXPECT_EQ(restored.data.std, original.data.std);
  EXPECT_EQ(restored.data.dir, original.data.dir);
  EXPECT_FALSE(restored.data.augment);
}

TEST_F(ConfigFile, RoundTripThroughAFile) {
  const TrainConfig original = unusual_config();
  const TrainConfig restored = load(config_to_json(original).dump(2));
  EXPECT_EQ(config_to_json(restored), config_to_json(original));
  EXPECT_EQ(restored.train.seed, original.train.seed);
  EXPECT_EQ(restored.train.weight_decay, original.train.weight_decay);
  EXPECT_EQ(restored.model.layer_norm_eps, original.model.layer_norm_eps);
}

TEST(ConfigJson, RoundTripThroughText) {
  // Every key exported, then re-applied as --set text (what the container does).
  const TrainConfig original = unusual_config();
  const json exported = config_to_json(original);
  TrainConfig restored;
  for (const auto& [section, members] : exported.items()) {
    for (const auto& [member, value] : members.items()) {
      const std::string text = value.is_string() ? value.get<std::string>() : value.dump();
      apply_config_text(restored, section + "." + member, text, kSet);
    }
  }
  EXPECT_EQ(config_to_json(restored), exported);
}

// ---------------------------------------------------------------------------
// Reference documentation
// ---------------------------------------------------------------------------

TEST(ConfigDescribe, KeysAreDottedAndUnique) {
  const std::vector<std::string> keys = config_keys();
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());
  EXPECT_EQ(keys.front(), "model.preset");
  for (const std::string& key : keys) EXPECT_NE(key.find('.'), std::string::npos) << key;
  EXPECT_NE(std::find(keys.begin(), keys.end(), "train.lr"), keys.end());
  EXPECT_NE(std::find(keys.begin(), keys.end(), "runtime.log_level"), keys.end());
}

TEST(ConfigDescribe, MarkdownHasOneTablePerSectionWithEveryKey) {
  const std::string doc = describe_config("markdown");
  for (const std::string& key : config_keys()) expect_contains(doc, {"| `" + key + "` |"});
  for (const char* section : {"model", "data", "train", "eval", "checkpoint", "output", "runtime"})
    expect_contains(doc, {"## " + std::string(section) + "\n"});
  expect_contains(
      doc,
      {"| key | type | default | allowed values / range | description |",
       "| `train.lr` | float | `0.001` | > 0 |", "| `train.epochs` | int | `3` | >= 1 |",
       "| `train.optimizer` | enum | `\"adamw\"` | \"adamw\", \"sgd\" |",
       "| `model.hidden_size` | int or null | `null` | >= 1, or null |",
       "| `train.momentum` | float | `0.9` | in [0, 1) |", "| `train.seed` | uint64 | `42` |"});
}

TEST(ConfigDescribe, TextIsAlignedAndHasEveryKey) {
  const std::string doc = describe_config("text");
  for (const std::string& key : config_keys()) expect_contains(doc, {"\n" + key + " "});
  expect_contains(doc, {"[train]\n", "KEY"});
  // Columns line up: the type column starts at the same offset on every row.
  std::set<size_t> type_columns;
  size_t start = 0;
  while (start < doc.size()) {
    const size_t end = doc.find('\n', start);
    const std::string line = doc.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line[0] == '[') continue;
    type_columns.insert(line.find_first_not_of(' ', line.find(' ')));
  }
  EXPECT_EQ(type_columns.size(), 1u);
}

TEST(ConfigDescribe, UnknownFormatIsAConfigError) {
  expect_contains(error_of([] { describe_config("mardown"); }),
                  {"'mardown'", "did you mean 'markdown'"});
}

}  // namespace
}  // namespace pipet
