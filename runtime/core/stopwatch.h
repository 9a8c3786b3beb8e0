// Wall-clock seconds on the steady clock, for the engine's timings and logs.
#pragma once

#include <chrono>

namespace pipet {

using SteadyClock = std::chrono::steady_clock;

inline double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

}  // namespace pipet
