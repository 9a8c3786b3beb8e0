// The `pipetransformer` executable; everything lives in run_cli.
#include "runtime/app/cli.h"
#include "runtime/core/threads.h"

int main(int argc, char** argv) {
  // Before anything else: may re-execute this program (see threads.h).
  pipet::prefer_passive_openmp_wait(argv);
  return pipet::run_cli(argc, argv);
}
