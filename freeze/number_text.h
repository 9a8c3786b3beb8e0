// How freeze/'s error messages print a number: the shortest ostream form
// ("0.5", "nan", "1e-09"), so a message shows the value as it was given.
#pragma once

#include <sstream>
#include <string>

namespace pipet::freeze_detail {

inline std::string number(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

}  // namespace pipet::freeze_detail
