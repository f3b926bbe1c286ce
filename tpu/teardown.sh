#!/usr/bin/env bash
# Delete the TPU VM, or the queued resource (--queued) and its VM. Run directories on GCS stay.
#
#   tpu/teardown.sh --name dr-v5e --zone us-west4-a --project my-proj --queued
#   tpu/teardown.sh ... --dry-run
set -euo pipefail
source "$(dirname "$0")/common.sh"

parse_common "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
case ${1:-} in
  -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
  "") ;;
  *) die "unknown argument '$1'" ;;
esac
require_target
location_flags
if [[ $QUEUED == 1 ]]; then
  # --force deletes the node it holds too
  gc compute tpus queued-resources delete "$NAME" "${LOCATION[@]}" --force --quiet
else
  gc compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" --quiet
fi
