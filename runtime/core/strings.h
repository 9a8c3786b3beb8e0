// String helpers shared by config parsing and error messages.
#pragma once

#include <string>
#include <vector>

namespace pipet {

// Levenshtein distance.
size_t edit_distance(const std::string& a, const std::string& b);

// The candidate closest to `word` when it is plausibly a typo of it
// (distance <= max(2, |word| / 3)); empty string when none is.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

// " (did you mean 'x'?)" or "" — appended to "unknown ..." messages.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

std::string trim(const std::string& s);
std::string join(const std::vector<std::string>& parts, const std::string& sep);
std::vector<std::string> split(const std::string& s, char sep);
bool starts_with(const std::string& s, const std::string& prefix);
bool ends_with(const std::string& s, const std::string& suffix);

}  // namespace pipet
