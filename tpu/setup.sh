#!/usr/bin/env bash
# Install datarater on every worker of a TPU VM / slice: copy this checkout (or clone --repo),
# create a virtual environment with jax[tpu], and mount GCS buckets (--bucket, via gcsfuse) at
# /mnt/gcs/BUCKET so run directories and TFDS data are shared paths on all workers.
#
#   tpu/setup.sh --name dr-v5e --zone us-west4-a --project my-proj --bucket my-bucket
#   tpu/setup.sh ... --repo https://github.com/ORG/datarater.git --ref main
#   tpu/setup.sh ... --dry-run
set -euo pipefail
source "$(dirname "$0")/common.sh"

REPO=""
REF=""
BUCKETS=()
parse_common "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while [[ $# -gt 0 ]]; do
  case $1 in
    --repo) REPO=${2:?--repo needs a URL}; shift 2 ;;
    --repo=*) REPO=${1#*=}; shift ;;
    --ref) REF=${2:?--ref needs a branch, tag or commit}; shift 2 ;;
    --ref=*) REF=${1#*=}; shift ;;
    --bucket) BUCKETS+=("$(gcs_bucket "${2:?--bucket needs a name}")"); shift 2 ;;
    --bucket=*) BUCKETS+=("$(gcs_bucket "${1#*=}")"); shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
done
require_target
location_flags
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# 1. The code on every worker.
if [[ -n $REPO ]]; then
  fetch="rm -rf $REMOTE_DIR && git clone --quiet $(quote "$REPO") $REMOTE_DIR"
  if [[ -n $REF ]]; then fetch+=" && git -C $REMOTE_DIR checkout --quiet $(quote "$REF")"; fi
else
  TARBALL=${TMPDIR:-/tmp}/datarater-src.tar.gz
  if [[ $DRY_RUN == 1 ]]; then
    echo "$(quote_all tar -czf "$TARBALL" -C "$ROOT" --exclude=.venv --exclude=runs --exclude=.git --exclude='*.egg-info' .)"
  else
    tar -czf "$TARBALL" -C "$ROOT" --exclude=.venv --exclude=runs --exclude=.git --exclude='*.egg-info' .
  fi
  gc compute tpus tpu-vm scp "$TARBALL" "$NAME:datarater-src.tar.gz" "${LOCATION[@]}" --worker=all
  fetch="rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf datarater-src.tar.gz -C $REMOTE_DIR"
fi

# 2. A virtual environment with the project and JAX for TPU (libtpu comes from PyPI).
install="cd $REMOTE_DIR && python3 -m venv .venv && .venv/bin/pip install --quiet --upgrade pip"
install+=" && .venv/bin/pip install --quiet -e . 'jax[tpu]>=0.10.2,<0.11'"
install+=" && .venv/bin/python -c 'import jax; print(jax.local_device_count(), jax.local_devices()[0].device_kind)'"

# 3. Buckets as shared paths (gcsfuse is preinstalled on TPU VM images; installed if missing).
mounts=""
for b in ${BUCKETS[@]+"${BUCKETS[@]}"}; do
  m="$MOUNT_ROOT/$b"
  mounts+=" && (command -v gcsfuse >/dev/null || (sudo apt-get -qq update && sudo apt-get -qq install -y gcsfuse))"
  mounts+=" && sudo mkdir -p $m && sudo chown \$(id -u):\$(id -g) $m"
  mounts+=" && (mountpoint -q $m || gcsfuse --implicit-dirs $b $m)"
done

gc compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=all \
  --command="set -e; $fetch && $install$mounts"
