#!/usr/bin/env bash
# The SageMaker image end to end (container/README.md, "Container test"): the
# CPU image (make image-cpu) run as SageMaker runs it, `IMAGE train`, with
# /opt/ml trees in temporary directories and no network but loopback.
#   (a) one host, SDK-style hyperparameters: exit 0, model and metrics
#   (b) `stop -t 60` mid-run: SIGTERM reaches PID 1, a checkpoint, exit 143;
#       a new container on the same checkpoints resumes and finishes
#   (c) two hosts (two containers sharing one network namespace, algo-1 and
#       algo-2 on 127.0.0.2 and 127.0.0.3, each with its own sshd): the
#       leader's mpirun across both trains to the end; the worker exits with
#       the job's code
#   (d) a worker that never starts: the leader fails within its timeout and
#       the failure file names algo-2
#   (e) a bad hyperparameter: the failure file, exit 2, nothing else written
# One verdict line per case; exits 1 when any case fails. Logs of every case
# stay in output/container-test/. Usage: scripts/container_test.sh [CASE...]
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/container_engine.sh
source scripts/container_engine.sh

image=${PIPET_IMAGE:-localhost/pipetransformer:cpu}
logs=output/container-test
work=$(mktemp -d /tmp/pipet-container-test.XXXXXX)
label="pipet-container-test=$$"
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(a b c d e)
failed=0
mkdir -p "$logs"

# Two passes: podman keeps a container whose network namespace another one
# joined until that one is gone.
cleanup() {
  local id pass
  for pass in 1 2; do
    for id in $("${engine[@]}" ps -aq --filter "label=$label"); do "${engine[@]}" rm -f "$id" > /dev/null 2>&1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT

if ! "${engine[@]}" image inspect "$image" > /dev/null 2>&1; then
  echo "container_test: no image $image; build it with make image-cpu" >&2
  exit 2
fi

# A tiny real job: vit-tiny with 2 blocks on synthetic data, 4 steps per
# epoch, every value a string as the SageMaker SDK writes them.
hyperparameters() {  # EPOCHS CHECKPOINT_EVERY_STEPS [EXTRA_JSON_MEMBERS]
  cat <<JSON
{"model.preset": "\"vit-tiny\"", "model.num_layers": "2", "data.train_samples": "64",
 "data.eval_samples": "16", "data.augment": "True", "train.batch_size": "16", "train.epochs": "$1",
 "train.log_every_steps": "1", "runtime.threads": "1", "checkpoint.every_steps": "$2",
 "sagemaker_program": "\"train\"", "sagemaker_region": "\"us-west-2\""${3:+, $3}}
JSON
}

tree() {  # DIR CURRENT_HOST HOSTS_JSON HYPERPARAMETERS
  mkdir -p "$1/input/config" "$1/input/data" "$1/model" "$1/output" "$1/checkpoints"
  printf '%s\n' "$4" > "$1/input/config/hyperparameters.json"
  cat > "$1/input/config/resourceconfig.json" <<JSON
{"current_host": "$2", "hosts": $3, "current_instance_type": "ml.m5.xlarge",
 "current_group_name": "homogeneousCluster", "network_interface_name": "lo",
 "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.xlarge", "hosts": $3}]}
JSON
  echo '{}' > "$1/input/config/inputdataconfig.json"
}

# Container names carry this run's pid, so leftovers of another run never clash.
name() { echo "pipet-test-$$-$1"; }

start() {  # NAME TREE [RUN ARGUMENTS...]: a detached `IMAGE train`
  local tree_dir=$2 container
  container=$(name "$1")
  shift 2
  "${engine[@]}" run -d --name "$container" --label "$label" -v "$tree_dir:/opt/ml" "$@" "$image" train > /dev/null
}

# Waits up to SECONDS for the container to exit; prints its exit code.
wait_exit() {  # NAME SECONDS
  local code
  code=$(timeout "$2" "${engine[@]}" wait "$(name "$1")" 2> /dev/null) || code=timeout
  echo "${code:-timeout}"
}

# Saves the container's output (stdout and stderr) and prints the file's name;
# checks read the file (grep -q on a pipe would cut `logs` short).
keep_logs() {  # NAME CASE
  "${engine[@]}" logs "$(name "$1")" > "$logs/$2-$1.log" 2>&1
  echo "$logs/$2-$1.log"
}

# Waits up to SECONDS for a train event at step >= STEP in the container's stdout.
wait_for_step() {  # NAME STEP SECONDS
  local deadline=$((SECONDS + $3)) step
  while [ $SECONDS -lt $deadline ]; do
    step=$("${engine[@]}" logs "$(name "$1")" 2> /dev/null | sed -n 's/^event=train; .*step=\([0-9]*\);.*/\1/p' | tail -1)
    [ -n "$step" ] && [ "$step" -ge "$2" ] && return 0
    sleep 1
  done
  return 1
}

verdict() {  # CASE TITLE STARTED PROBLEM
  local seconds=$((SECONDS - $3))
  if [ -z "$4" ]; then
    printf 'container-test: (%s) %-46s PASS  %3d s\n' "$1" "$2" "$seconds"
  else
    printf 'container-test: (%s) %-46s FAIL  %3d s: %s (logs: %s/%s-*.log)\n' "$1" "$2" "$seconds" "$4" "$logs" "$1"
    failed=1
  fi
}

case_a() {
  local t=$work/a started=$SECONDS problem="" code log
  tree "$t" algo-1 '["algo-1"]' "$(hyperparameters 2 4 '"processes_per_host": "2", "parallel.pipeline_stages": "2"')"
  start single "$t" --network none
  code=$(wait_exit single 300)
  log=$(keep_logs single a)
  if [ "$code" != 0 ]; then problem="exit code $code, expected 0"
  elif [ ! -s "$t/model/model.safetensors" ] || [ ! -s "$t/model/config.json" ]; then problem="no model.safetensors/config.json in /opt/ml/model"
  elif ! grep -q '"event":"train"' "$t/output/data/metrics.jsonl" 2> /dev/null; then problem="no train events in /opt/ml/output/data/metrics.jsonl"
  elif [ -e "$t/output/failure" ]; then problem="a failure file after success: $(head -c 200 "$t/output/failure")"
  elif ! grep -q '^event=train; epoch=1; step=8;' "$log"; then problem="no metric line for step 8 in the output"
  fi
  verdict a "one host, 2 ranks, SDK-style hyperparameters" "$started" "$problem"
}

case_b() {
  local t=$work/b t2=$work/b-restart started=$SECONDS problem="" code hp log
  hp=$(hyperparameters 100 20)
  tree "$t" algo-1 '["algo-1"]' "$hp"
  start stopped "$t" --network none
  if ! wait_for_step stopped 30 180; then
    problem="no training step 30 within 180 s"
  else
    timeout 90 "${engine[@]}" stop -t 60 "$(name stopped)" > /dev/null 2>&1
    code=$("${engine[@]}" inspect -f '{{.State.ExitCode}}' "$(name stopped)" 2> /dev/null)
    log=$(keep_logs stopped b)
    if [ "$code" != 143 ]; then problem="stopped container exited $code, expected 143"
    elif ! grep -q 'SIGTERM received' "$log"; then problem="SIGTERM did not reach the launcher (PID 1)"
    elif ! grep -q 'stopped by signal 15 at step [0-9]*; checkpoint /opt/ml/checkpoints/step-' "$log"; then
      problem="no checkpoint written on SIGTERM"
    fi
  fi
  if [ -z "$problem" ]; then
    # A spot restart: a new container and /opt/ml, the checkpoints restored.
    tree "$t2" algo-1 '["algo-1"]' "$hp"
    rm -rf "$t2/checkpoints" && mv "$t/checkpoints" "$t2/checkpoints"
    start restarted "$t2" --network none
    code=$(wait_exit restarted 300)
    log=$(keep_logs restarted b)
    if [ "$code" != 0 ]; then problem="restarted container exited $code, expected 0"
    elif ! grep -q 'resumed step [0-9]* saved on .* from /opt/ml/checkpoints' "$log"; then problem="the restart did not resume from the checkpoint"
    elif ! grep -q '"steps":400' "$t2/model/summary.json" 2> /dev/null && ! grep -q '"steps": 400' "$t2/model/summary.json" 2> /dev/null; then problem="the restart did not finish all 400 steps"
    fi
  fi
  verdict b "stop -t 60 mid-run: 143, checkpoint, resume" "$started" "$problem"
}

# Two hosts in one network namespace: each container binds its own sshd to
# its own loopback address; /etc/hosts maps the SageMaker host names.
two_host_files() {  # DIR
  printf '127.0.0.1 localhost\n127.0.0.2 algo-1\n127.0.0.3 algo-2\n' > "$1/hosts"
  printf 'ListenAddress 127.0.0.2\n' > "$1/sshd-algo-1.conf"
  printf 'ListenAddress 127.0.0.3\n' > "$1/sshd-algo-2.conf"
}

host_args() {  # DIR HOST
  echo "--hostname $2 -v $1/hosts:/etc/hosts:ro -v $1/sshd-$2.conf:/etc/ssh/sshd_config.d/pipet-listen.conf:ro"
}

case_c() {
  local t=$work/c started=$SECONDS problem="" leader_code worker_code hp log
  mkdir -p "$t"
  two_host_files "$t"
  hp=$(hyperparameters 2 4)
  tree "$t/algo-1" algo-1 '["algo-1", "algo-2"]' "$hp"
  tree "$t/algo-2" algo-2 '["algo-1", "algo-2"]' "$hp"
  # shellcheck disable=SC2046
  start leader "$t/algo-1" --network none $(host_args "$t" algo-1) -e PIPET_SAGEMAKER_WORKER_TIMEOUT=120
  # shellcheck disable=SC2046
  start worker "$t/algo-2" --network "container:$(name leader)" $(host_args "$t" algo-2) -e PIPET_SAGEMAKER_LEADER_TIMEOUT=120
  leader_code=$(wait_exit leader 300)
  worker_code=$(wait_exit worker 60)
  log=$(keep_logs leader c)
  keep_logs worker c > /dev/null
  if [ "$leader_code" != 0 ]; then problem="leader exited $leader_code, expected 0"
  elif [ "$worker_code" != 0 ]; then problem="worker exited $worker_code, expected the job's 0"
  elif ! grep -q -- '--host algo-1:1,algo-2:1 -np 2' "$log"; then problem="the leader's mpirun did not span both hosts"
  elif ! compgen -G "$t/algo-2/checkpoints/rank-00001/step-*" > /dev/null; then problem="rank 1 did not run on algo-2 (no checkpoint part in its /opt/ml)"
  elif [ ! -s "$t/algo-1/model/model.safetensors" ]; then problem="no model on the leader"
  elif [ -e "$t/algo-2/model/model.safetensors" ]; then problem="the worker exported a model too"
  fi
  verdict c "two hosts, sshd each, mpirun across both" "$started" "$problem"
}

case_d() {
  local t=$work/d started=$SECONDS problem="" code first
  mkdir -p "$t"
  two_host_files "$t"
  tree "$t/algo-1" algo-1 '["algo-1", "algo-2"]' "$(hyperparameters 1 4)"
  # shellcheck disable=SC2046
  start lonely "$t/algo-1" --network none $(host_args "$t" algo-1) \
    -e PIPET_SAGEMAKER_WORKER_TIMEOUT=15 -e PIPET_SAGEMAKER_PROBE_TIMEOUT=5
  code=$(wait_exit lonely 90)
  keep_logs lonely d > /dev/null
  first=$(head -c 1024 "$t/algo-1/output/failure" 2> /dev/null)
  if [ "$code" != 10 ]; then problem="leader exited $code, expected 10"
  elif [ $((SECONDS - started)) -gt 60 ]; then problem="the leader took $((SECONDS - started)) s for a 15 s timeout"
  elif [[ "$first" != *"algo-2"* ]]; then problem="the failure file does not name algo-2: ${first:0:200}"
  elif [ -e "$t/algo-1/model/model.safetensors" ]; then problem="a model without a job"
  fi
  verdict d "a worker that never starts: leader fails in time" "$started" "$problem"
}

case_e() {
  local t=$work/e started=$SECONDS problem="" code written
  tree "$t" algo-1 '["algo-1"]' "$(hyperparameters three 4)"
  start rejected "$t" --network none
  code=$(wait_exit rejected 60)
  keep_logs rejected e > /dev/null
  written=$(cd "$t" && find model output checkpoints -mindepth 1 ! -path output/failure | head -5)
  if [ "$code" != 2 ]; then problem="exit code $code, expected 2"
  elif ! grep -q 'train.epochs' "$t/output/failure" 2> /dev/null; then problem="the failure file does not name train.epochs"
  elif [ -n "$written" ]; then problem="wrote more than the failure file: $(echo "$written" | tr '\n' ' ')"
  fi
  verdict e "a bad hyperparameter: exit 2, failure file only" "$started" "$problem"
}

for c in "${cases[@]}"; do
  case "$c" in
    a | b | c | d | e) "case_$c" ;;
    *) echo "container_test: unknown case '$c' (a b c d e)" >&2; exit 2 ;;
  esac
done
exit $failed
