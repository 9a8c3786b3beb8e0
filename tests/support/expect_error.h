// Runs `fn`, expects it to throw E, and returns the message (recording a test
// failure if it threw something else or nothing).
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <string>

namespace pipet::testing {

template <typename E, typename Fn>
std::string error_message(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw the wrong class: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

}  // namespace pipet::testing
