#include "benchmarks/op_profiler.h"

#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/logging.h"
#include "runtime/core/torch_compat.h"
#include "runtime/core/torch_pch.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <nlohmann/json.hpp>

#include <set>

namespace pipet::bench {
namespace {

namespace kineto_api = torch::autograd::profiler;
namespace profiler_impl = torch::profiler::impl;

// libkineto::ActivityType values (the same in the Kineto of 1.13 and 2.x):
// host ops and annotated ranges, and the device-side copy of an annotated
// range, whose span covers kernels that are counted on their own already.
constexpr uint8_t kActivityCpuOp = 0;
constexpr uint8_t kActivityUserAnnotation = 1;
constexpr uint8_t kActivityGpuUserAnnotation = 2;

profiler_impl::ProfilerConfig kineto_config() {
  return profiler_impl::ProfilerConfig(profiler_impl::ProfilerState::KINETO);
}

std::set<profiler_impl::ActivityType> activities(bool with_cuda) {
  std::set<profiler_impl::ActivityType> set = {profiler_impl::ActivityType::CPU};
  if (with_cuda) set.insert(profiler_impl::ActivityType::CUDA);
  return set;
}

// Start and duration in microseconds: LibTorch 2.4 switched KinetoEvent from
// microsecond to nanosecond accessors (pytorch#123650).
double start_us(const kineto_api::KinetoEvent& e) {
#if PIPET_TORCH_AT_LEAST(2, 4)
  return static_cast<double>(e.startNs()) / 1000.0;
#else
  return static_cast<double>(e.startUs());
#endif
}

double duration_us(const kineto_api::KinetoEvent& e) {
#if PIPET_TORCH_AT_LEAST(2, 4)
  return static_cast<double>(e.durationNs()) / 1000.0;
#else
  return static_cast<double>(e.durationUs());
#endif
}

// False for events that are no work of their own (device-side annotations).
bool convert(const kineto_api::KinetoEvent& e, ProfiledEvent& out) {
  const uint8_t activity = e.activityType();
  const bool on_device = e.deviceType() != c10::DeviceType::CPU;
  if (on_device && activity == kActivityGpuUserAnnotation) return false;
  out.name = e.name();
  if (on_device) {
    out.kind = EventKind::kDevice;
  } else if (activity == kActivityCpuOp || activity == kActivityUserAnnotation) {
    out.kind = EventKind::kHostOp;
  } else {
    out.kind = EventKind::kHostOther;
  }
  out.thread = e.startThreadId();
  out.start_us = start_us(e);
  out.duration_us = duration_us(e);
  out.correlation_id = e.correlationId();
  out.linked_correlation_id = e.linkedCorrelationId();
  out.is_async = !on_device && (e.isAsync() || e.startThreadId() != e.endThreadId());
  return true;
}

}  // namespace

OpProfiler::OpProfiler(bool with_cuda) {
  // Checked first: preparing a second trace would cancel the running one.
  if (kineto_api::profilerEnabled()) {
    throw Error(ExitCode::kInternal,
                "could not start LibTorch's profiler: a profiler is already recording on this "
                "thread");
  }
  try {
    kineto_api::prepareProfiler(kineto_config(), activities(with_cuda));
    kineto_api::enableProfiler(kineto_config(), activities(with_cuda));
  } catch (const c10::Error& e) {
    throw Error(ExitCode::kInternal,
                std::string("could not start LibTorch's profiler: ") + e.what_without_backtrace());
  }
  recording_ = true;
}

OpProfiler::~OpProfiler() {
  if (!recording_) return;
  try {
    kineto_api::disableProfiler();
  } catch (...) {
    // Destructors never throw; the profiler state ends with the thread anyway.
  }
}

std::vector<ProfiledEvent> OpProfiler::finish(const std::string& trace_path) {
  PIPET_CHECK(recording_, "OpProfiler::finish called twice");
  recording_ = false;
  std::unique_ptr<kineto_api::ProfilerResult> result;
  try {
    result = kineto_api::disableProfiler();
  } catch (const c10::Error& e) {
    throw Error(ExitCode::kInternal,
                std::string("could not stop LibTorch's profiler: ") + e.what_without_backtrace());
  }
  std::vector<ProfiledEvent> events;
  events.reserve(result->events().size());
  for (const auto& e : result->events()) {
    ProfiledEvent event;
    if (convert(e, event)) events.push_back(std::move(event));
  }
  if (!trace_path.empty()) {
    try {
      result->save(trace_path);
    } catch (const c10::Error& e) {
      // Debian's 1.13: "Saving a trace requires ... Kineto support".
      spdlog::info("[bench] LibTorch wrote no trace ({}); writing one from the {} events",
                   e.what_without_backtrace(), events.size());
      write_file_atomic(trace_path, chrome_trace_json(events).dump() + "\n");
    }
  }
  return events;
}

}  // namespace pipet::bench
