#!/usr/bin/env bash
# Create a TPU VM, or a queued resource (--queued), for datarater.
#
#   tpu/create.sh --name dr-v5e --zone us-west4-a --project my-proj --accelerator v5e-32 --queued --spot
#   tpu/create.sh --name dr-v6e --zone us-east5-b --accelerator v6e-8 --reserved
#   tpu/create.sh ... --dry-run          # print the gcloud command only
#
# Flags: --name, --zone, --project (default: gcloud's configured project), --accelerator
# (v5e-N chips, v5p-N TensorCores, v6e-N chips), --queued (queued resource: waits for capacity;
# needed for most slices), --spot | --reserved (default: on-demand), --version (TPU VM software,
# default per family), --wait (queued: block until ACTIVE), --dry-run.
set -euo pipefail
source "$(dirname "$0")/common.sh"

CAPACITY=""
VERSION=""
WAIT=0
parse_common "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while [[ $# -gt 0 ]]; do
  case $1 in
    --spot) CAPACITY=spot; shift ;;
    --reserved) CAPACITY=reserved; shift ;;
    --version) VERSION=${2:?--version needs a value}; shift 2 ;;
    --version=*) VERSION=${1#*=}; shift ;;
    --wait) WAIT=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
done
require_target
[[ -n $ACCELERATOR ]] || die "--accelerator is required, e.g. --accelerator v5e-32"
TYPE=$(accelerator_type "$ACCELERATOR")
VERSION=${VERSION:-$(runtime_version "$TYPE")}
location_flags
CAP=()
if [[ -n $CAPACITY ]]; then CAP=("--$CAPACITY"); fi

if [[ $QUEUED == 1 ]]; then
  gc compute tpus queued-resources create "$NAME" --node-id="$NAME" "${LOCATION[@]}" \
    --accelerator-type="$TYPE" --runtime-version="$VERSION" ${CAP[@]+"${CAP[@]}"}
  if [[ $WAIT == 1 ]]; then
    state_cmd=(compute tpus queued-resources describe "$NAME" "${LOCATION[@]}" --format='value(state.state)')
    if [[ $DRY_RUN == 1 ]]; then gc "${state_cmd[@]}"; exit 0; fi
    while true; do
      state=$(gc "${state_cmd[@]}")
      echo "queued resource $NAME: $state" >&2
      case $state in
        ACTIVE) break ;;
        FAILED|SUSPENDED) die "queued resource $NAME is $state" ;;
      esac
      sleep 60
    done
  fi
else
  gc compute tpus tpu-vm create "$NAME" "${LOCATION[@]}" \
    --accelerator-type="$TYPE" --version="$VERSION" ${CAP[@]+"${CAP[@]}"}
fi
