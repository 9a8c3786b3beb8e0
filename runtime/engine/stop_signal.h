// SIGTERM/SIGINT handling: the first signal asks the trainer to finish the
// current step, checkpoint and exit; a second one restores the default action
// and re-raises, so an impatient Ctrl-C still ends the process.
#pragma once

namespace pipet {

void install_stop_signal_handlers();
bool stop_requested();
// The signal that asked for the stop (0 when asked by request_stop).
int stop_signal();
// Asks for a stop as a signal would (tests, the container adapter).
void request_stop();
void clear_stop_request();

}  // namespace pipet
