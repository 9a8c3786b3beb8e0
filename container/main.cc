// `pipet-sagemaker`, installed as `train` in the image (SageMaker runs
// `docker run IMAGE train`). Everything lives in run_launcher.
#include "container/launcher.h"

int main(int argc, char** argv) { return pipet::sagemaker::run_launcher(argc, argv); }
