#!/usr/bin/env bash
# Launch the same `datarater` command on every worker of a TPU slice (one process per host,
# DATARATER_DISTRIBUTED=1: JAX's multi-controller runtime connects them). The run directory must
# be shared by all workers: give it as gs://BUCKET/path (setup.sh --bucket mounts it at
# /mnt/gcs/BUCKET) or as a path on a shared file system. Starting again resumes from the run
# directory's last checkpoint.
#
#   tpu/launch.sh --name dr-v5e --zone us-west4-a --project my-proj --accelerator v5e-32 \
#     --run-dir gs://my-bucket/runs/rater-c4 -- meta-train +experiment=meta_rater_50m corpus=tfds ...
#   tpu/launch.sh ... --create --queued --spot   # create the slice and set it up first
#   tpu/launch.sh ... --follow                   # stream worker 0's log instead of detaching
#   tpu/launch.sh ... --wait                     # run in the foreground: return when the run ends
#   tpu/launch.sh ... --stop                     # stop the run started by a previous launch
#   tpu/launch.sh ... --dry-run                  # print the gcloud commands only
#
# --accelerator (v5e-N, v5p-N, v6e-N) checks that the slice has that type before launching.
set -euo pipefail
source "$(dirname "$0")/common.sh"

RUN_DIR=""
CREATE=0
FOLLOW=0
WAIT=0
STOP=0
PASS=()      # flags for create.sh/setup.sh
parse_common "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while [[ $# -gt 0 ]]; do
  case $1 in
    --run-dir) RUN_DIR=${2:?--run-dir needs a value}; shift 2 ;;
    --run-dir=*) RUN_DIR=${1#*=}; shift ;;
    --create) CREATE=1; shift ;;
    --spot|--reserved) PASS+=("$1"); shift ;;
    --repo|--ref|--bucket|--version) PASS+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --follow) FOLLOW=1; shift ;;
    --wait) WAIT=1; shift ;;
    --stop) STOP=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (the datarater command goes after --)" ;;
  esac
done
COMMAND=("$@")
require_target
location_flags
COMMON=(--name "$NAME" --zone "$ZONE")
if [[ -n $PROJECT ]]; then COMMON+=(--project "$PROJECT"); fi
if [[ $QUEUED == 1 ]]; then COMMON+=(--queued); fi
if [[ $DRY_RUN == 1 ]]; then COMMON+=(--dry-run); fi
HERE=$(dirname "$0")
LOG_NAME=$(echo "$NAME" | tr -c 'A-Za-z0-9_.\n-' '_')
PIDFILE="$REMOTE_DIR/logs/$LOG_NAME.pid"
LOG="$REMOTE_DIR/logs/$LOG_NAME.log"

if [[ $STOP == 1 ]]; then
  gc compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=all \
    --command="if [ -f $PIDFILE ]; then kill \$(cat $PIDFILE) 2>/dev/null || true; rm -f $PIDFILE; fi"
  exit 0
fi
[[ ${#COMMAND[@]} -gt 0 ]] || die "give the datarater command after --, e.g. -- train-lm +experiment=chinchilla_1b ..."
[[ -n $RUN_DIR ]] || die "--run-dir is required: gs://BUCKET/path or a shared path (every worker writes there)"
[[ ${COMMAND[0]} != datarater ]] || COMMAND=("${COMMAND[@]:1}")
for a in "${COMMAND[@]}"; do
  [[ $a != run_dir=* ]] || die "give the run directory with --run-dir, not run_dir=: it must be shared by all workers"
done

if [[ $CREATE == 1 ]]; then
  [[ -n $ACCELERATOR ]] || die "--create needs --accelerator, e.g. --accelerator v5e-32"
  CAP=(); for p in ${PASS[@]+"${PASS[@]}"}; do case $p in --spot|--reserved) CAP+=("$p") ;; esac; done
  "$HERE/create.sh" "${COMMON[@]}" --accelerator "$ACCELERATOR" --wait ${CAP[@]+"${CAP[@]}"}
  SETUP=(); i=0
  while [[ $i -lt ${#PASS[@]} ]]; do
    case ${PASS[$i]} in
      --repo|--ref|--bucket) SETUP+=("${PASS[$i]}" "${PASS[$((i + 1))]}"); i=$((i + 2)) ;;
      --version) i=$((i + 2)) ;;
      *) i=$((i + 1)) ;;
    esac
  done
  if [[ $RUN_DIR == gs://* ]]; then SETUP+=(--bucket "$(gcs_bucket "$RUN_DIR")"); fi
  "$HERE/setup.sh" "${COMMON[@]}" ${SETUP[@]+"${SETUP[@]}"}
fi

if [[ -n $ACCELERATOR ]]; then
  # the slice's own VM (a queued resource names it --node-id=NAME)
  want=$(accelerator_type "$ACCELERATOR")
  describe=(compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" --format='value(acceleratorType)')
  if [[ $DRY_RUN == 1 ]]; then
    gc "${describe[@]}"
  else
    have=$(gc "${describe[@]}")
    [[ ${have##*/} == "$want" ]] || die "TPU $NAME is '${have##*/}', not $want (--accelerator $ACCELERATOR)"
  fi
fi

SHARED=$(local_path "$RUN_DIR")
RUN=".venv/bin/datarater $(quote_all "${COMMAND[@]}") $(quote "run_dir=$SHARED")"
if [[ $WAIT == 1 ]]; then
  # Foreground on every worker: the ssh returns when the run ends (with its exit status).
  JOB="cd $REMOTE_DIR && mkdir -p logs && set -o pipefail && DATARATER_DISTRIBUTED=1 $RUN 2>&1 < /dev/null | tee $LOG"
  gc compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=all --command="$JOB"
  exit 0
fi
JOB="cd $REMOTE_DIR && mkdir -p logs && DATARATER_DISTRIBUTED=1 nohup $RUN > $LOG 2>&1 < /dev/null & echo \$! > $PIDFILE"
gc compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=all --command="$JOB"
if [[ $FOLLOW == 1 ]]; then
  gc compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=0 --command="tail -n +1 -F $LOG"
elif [[ $DRY_RUN == 0 ]]; then
  echo "launched on every worker of $NAME; worker 0's log: tpu/launch.sh ... --follow, or" >&2
  echo "  $(quote_all gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=0 --command="tail -F $LOG")" >&2
fi
