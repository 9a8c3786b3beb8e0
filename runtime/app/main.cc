// The `pipetransformer` executable; everything lives in run_cli.
#include "runtime/app/cli.h"

int main(int argc, char** argv) { return pipet::run_cli(argc, argv); }
