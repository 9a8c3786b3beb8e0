// What the shared multi-rank test main gives the tests.
#pragma once

#include "runtime/comm/mpi_runtime.h"

// The process's MpiRuntime, owned by main (alive for every test).
pipet::MpiRuntime& test_runtime();
