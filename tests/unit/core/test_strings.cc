#include "runtime/core/strings.h"

#include <gtest/gtest.h>

namespace pipet {
namespace {

TEST(Strings, EditDistanceCountsInsertionsDeletionsSubstitutions) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("abc", ""), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("lr", "lr"), 0u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("sitting", "kitten"), 3u);
  EXPECT_EQ(edit_distance("train.lrr", "train.lr"), 1u);  // one insertion
  EXPECT_EQ(edit_distance("trian", "train"), 2u);         // transposition = 2 edits
  EXPECT_EQ(edit_distance("flaw", "lawn"), 2u);
  EXPECT_EQ(edit_distance("abc", "xyz"), 3u);
}

TEST(Strings, ClosestMatchWithinThreshold) {
  const std::vector<std::string> keys = {"train.lr", "train.epochs", "train.seed"};
  EXPECT_EQ(closest_match("train.lrr", keys), "train.lr");
  EXPECT_EQ(closest_match("train.epoch", keys), "train.epochs");
  EXPECT_EQ(closest_match("train.sede", keys), "train.seed");
  // Far from everything: no suggestion.
  EXPECT_EQ(closest_match("model.preset", keys), "");
  EXPECT_EQ(closest_match("anything", {}), "");
}

TEST(Strings, ClosestMatchThresholdIsMaxOfTwoAndAThird) {
  // Short words allow 2 edits.
  EXPECT_EQ(closest_match("ab", {"xy"}), "xy");
  EXPECT_EQ(closest_match("ab", {"xyz"}), "");
  // A 12-letter word allows 4 edits, not 5.
  EXPECT_EQ(closest_match("abcdefghijkl", {"abcdefghWXYZ"}), "abcdefghWXYZ");
  EXPECT_EQ(closest_match("abcdefghijkl", {"abcdefgVWXYZ"}), "");
}

TEST(Strings, ClosestMatchPrefersSmallestDistanceThenFirst) {
  EXPECT_EQ(closest_match("sgdd", {"adamw", "sgd"}), "sgd");
  EXPECT_EQ(closest_match("cat", {"bat", "rat"}), "bat");
  EXPECT_EQ(closest_match("cat", {"cats", "bat"}), "cats");
}

TEST(Strings, DidYouMeanFormatsSuggestion) {
  EXPECT_EQ(did_you_mean("adam", {"adamw", "sgd"}), " (did you mean 'adamw'?)");
  EXPECT_EQ(did_you_mean("zzzzzzzzzz", {"adamw", "sgd"}), "");
}

TEST(Strings, TrimRemovesSurroundingWhitespaceOnly) {
  EXPECT_EQ(trim("  a b \t\n"), "a b");
  EXPECT_EQ(trim("abc"), "abc");
  EXPECT_EQ(trim(" \r\n\t\f\v"), "");
  EXPECT_EQ(trim(""), "");
}

TEST(Strings, JoinAndSplit) {
  EXPECT_EQ(join({}, ", "), "");
  EXPECT_EQ(join({"a"}, ", "), "a");
  EXPECT_EQ(join({"a", "b", "c"}, ", "), "a, b, c");
  EXPECT_EQ(split("a,b,c", ','), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(split("a,,b,", ','), (std::vector<std::string>{"a", "", "b", ""}));
  EXPECT_EQ(split("", ','), (std::vector<std::string>{""}));
  EXPECT_EQ(split("abc", ','), (std::vector<std::string>{"abc"}));
  EXPECT_EQ(join(split("x.y.z", '.'), "."), "x.y.z");
}

TEST(Strings, PrefixAndSuffix) {
  EXPECT_TRUE(starts_with("vit-tiny", "vit-"));
  EXPECT_FALSE(starts_with("bert-tiny", "vit-"));
  EXPECT_TRUE(starts_with("abc", ""));
  EXPECT_FALSE(starts_with("ab", "abc"));
  EXPECT_TRUE(ends_with("model.safetensors", ".safetensors"));
  EXPECT_FALSE(ends_with("model.json", ".safetensors"));
  EXPECT_TRUE(ends_with("abc", ""));
  EXPECT_FALSE(ends_with("bc", "abc"));
}

}  // namespace
}  // namespace pipet
