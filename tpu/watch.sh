#!/usr/bin/env bash
# Keep a run going through preemptions: poll the TPU's state; when it is preempted, suspended
# or gone, delete it, create it again, set it up and relaunch the same command. The run resumes
# from the last checkpoint in its run directory. Stops when the run directory holds
# summary.json (the run finished), or after --max-restarts recoveries.
#
#   tpu/watch.sh --name dr-v5e --zone us-west4-a --project my-proj --accelerator v5e-32 --queued --spot \
#     --run-dir gs://my-bucket/runs/rater-c4 -- meta-train +experiment=meta_rater_50m corpus=tfds ...
#   tpu/watch.sh ... --dry-run     # print one poll and the recovery commands, run nothing
#
# Flags: as launch.sh, plus --interval SECONDS (default 300) and --max-restarts N (default 20).
# Run it where it survives your logout (tmux, or a small always-on VM).
set -euo pipefail
source "$(dirname "$0")/common.sh"

RUN_DIR=""
INTERVAL=300
MAX_RESTARTS=20
PASS=()
parse_common "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while [[ $# -gt 0 ]]; do
  case $1 in
    --run-dir) RUN_DIR=${2:?--run-dir needs a value}; shift 2 ;;
    --run-dir=*) RUN_DIR=${1#*=}; shift ;;
    --interval) INTERVAL=${2:?--interval needs seconds}; shift 2 ;;
    --max-restarts) MAX_RESTARTS=${2:?--max-restarts needs a number}; shift 2 ;;
    --spot|--reserved) PASS+=("$1"); shift ;;
    --repo|--ref|--bucket|--version) PASS+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (the datarater command goes after --)" ;;
  esac
done
COMMAND=("$@")
require_target
[[ -n $ACCELERATOR ]] || die "--accelerator is required (to recreate the slice), e.g. --accelerator v5e-32"
[[ -n $RUN_DIR ]] || die "--run-dir is required"
[[ ${#COMMAND[@]} -gt 0 ]] || die "give the datarater command after --"
location_flags
HERE=$(dirname "$0")
COMMON=(--name "$NAME" --zone "$ZONE" --accelerator "$ACCELERATOR" --run-dir "$RUN_DIR")
if [[ -n $PROJECT ]]; then COMMON+=(--project "$PROJECT"); fi
if [[ $QUEUED == 1 ]]; then COMMON+=(--queued); fi
if [[ $DRY_RUN == 1 ]]; then COMMON+=(--dry-run); fi
TEARDOWN=(--name "$NAME" --zone "$ZONE")
if [[ -n $PROJECT ]]; then TEARDOWN+=(--project "$PROJECT"); fi
if [[ $QUEUED == 1 ]]; then TEARDOWN+=(--queued); fi
if [[ $DRY_RUN == 1 ]]; then TEARDOWN+=(--dry-run); fi

if [[ $QUEUED == 1 ]]; then
  STATE=(compute tpus queued-resources describe "$NAME" "${LOCATION[@]}" --format='value(state.state)')
else
  STATE=(compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" --format='value(state)')
fi
LOG_NAME=$(echo "$NAME" | tr -c 'A-Za-z0-9_.\n-' '_')
RUNNING=(compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=0
         --command="kill -0 \$(cat $REMOTE_DIR/logs/$LOG_NAME.pid 2>/dev/null) 2>/dev/null && echo running || echo stopped")

finished() {
  if [[ $RUN_DIR == gs://* ]]; then
    gc storage ls "${RUN_DIR%/}/summary.json" >/dev/null 2>&1
  else
    gc compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=0 --command="test -f $(quote "${RUN_DIR%/}/summary.json")" >/dev/null 2>&1
  fi
}

recover() {
  "$HERE/teardown.sh" "${TEARDOWN[@]}" || true
  "$HERE/launch.sh" "${COMMON[@]}" --create ${PASS[@]+"${PASS[@]}"} -- "${COMMAND[@]}"
}

if [[ $DRY_RUN == 1 ]]; then
  echo "# poll every ${INTERVAL}s: finished? state? job alive on worker 0?"
  if [[ $RUN_DIR == gs://* ]]; then gc storage ls "${RUN_DIR%/}/summary.json"; fi
  gc "${STATE[@]}"
  gc "${RUNNING[@]}"
  echo "# when preempted, suspended, failed or gone: delete, create, set up, relaunch (resumes)"
  recover
  exit 0
fi

restarts=0
while true; do
  if finished; then echo "$(date -u +%FT%TZ) run finished: ${RUN_DIR%/}/summary.json" >&2; exit 0; fi
  state=$(gc "${STATE[@]}" 2>/dev/null || echo GONE)
  state=${state:-GONE}
  echo "$(date -u +%FT%TZ) $NAME: $state" >&2
  case $state in
    ACTIVE|READY)
      alive=$(gc "${RUNNING[@]}" 2>/dev/null || echo unknown)
      if [[ $alive == *stopped* ]]; then
        if finished; then continue; fi
        [[ $restarts -lt $MAX_RESTARTS ]] || die "the run stopped $restarts times; see its log (launch.sh --follow)"
        restarts=$((restarts + 1))
        echo "job not running: relaunching ($restarts/$MAX_RESTARTS)" >&2
        "$HERE/launch.sh" "${COMMON[@]}" -- "${COMMAND[@]}"
      fi ;;
    PREEMPTED|TERMINATED|SUSPENDED|SUSPENDING|FAILED|GONE)
      [[ $restarts -lt $MAX_RESTARTS ]] || die "$NAME was lost $restarts times; giving up"
      restarts=$((restarts + 1))
      echo "$NAME is $state: recreating ($restarts/$MAX_RESTARTS)" >&2
      recover ;;
    *) ;;  # WAITING_FOR_RESOURCES, PROVISIONING, CREATING, ...: wait
  esac
  sleep "$INTERVAL"
done
