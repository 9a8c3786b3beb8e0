// The `pipetransformer` command line: parses arguments, runs the chosen
// command, and turns every error into a log line, an optional error file and
// a documented exit code. Separate from main() so tests can call it.
#pragma once

namespace pipet {

int run_cli(int argc, char** argv);

}  // namespace pipet
