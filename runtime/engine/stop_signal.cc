#include "runtime/engine/stop_signal.h"

#include <signal.h>

#include <atomic>

namespace pipet {
namespace {
std::atomic<int> g_stop_count{0};
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  if (g_stop_count.fetch_add(1) >= 1) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  g_stop_signal.store(sig);
}
}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

bool stop_requested() { return g_stop_count.load() > 0; }
int stop_signal() { return g_stop_signal.load(); }
void request_stop() { g_stop_count.fetch_add(1); }
void clear_stop_request() {
  g_stop_count.store(0);
  g_stop_signal.store(0);
}

}  // namespace pipet
