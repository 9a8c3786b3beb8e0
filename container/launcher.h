// The `pipet-sagemaker` program (installed as `train` in the image):
//   train (or no argument)   the container's job: read /opt/ml, validate,
//                            lead (mpirun) or work (wait for the leader)
//   rank                     per-rank wrapper run by mpirun: starts the
//                            runtime with this rank's error file and turns
//                            mpirun's forwarded SIGUSR1 into the SIGTERM the
//                            runtime checkpoints on
//   probe                    run by the leader on each worker (ssh): prints
//                            ready / starting / failed <reason>
//   notify-done <code>       run by the leader on each worker: the job ended
//                            with <code>; prints this host's first rank error
#pragma once

namespace pipet::sagemaker {

int run_launcher(int argc, char** argv);

}  // namespace pipet::sagemaker
