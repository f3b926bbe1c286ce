# Shared by the tpu/ scripts (sourced, not run): flags, accelerator names, and `gc`, which
# prints every gcloud command and runs it unless --dry-run (then gcloud need not be installed).
# shellcheck shell=bash

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
ACCELERATOR=""        # v5e-32 | v5p-64 | v6e-16 | ... (or a raw type such as v5litepod-32)
QUEUED=0              # a queued resource (recommended for slices and spot capacity) instead of a plain TPU VM
DRY_RUN=0
ARGS=()               # what the common parser did not take

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

# Shell-quotes one word so that a printed command can be pasted back into a shell.
quote() {
  local s=$1
  if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

quote_all() {
  local out="" w
  for w in "$@"; do out+="$(quote "$w") "; done
  printf '%s' "${out% }"
}

# --dry-run: prints "gcloud ..." (quoted, ready to paste) on stdout. Otherwise prints "+ gcloud ..."
# on stderr and runs it.
gc() {
  if [[ $DRY_RUN == 1 ]]; then echo "$(quote_all gcloud "$@")"; return 0; fi
  echo "+ $(quote_all gcloud "$@")" >&2
  command -v gcloud >/dev/null || die "gcloud is not installed (https://cloud.google.com/sdk/docs/install); --dry-run prints the commands"
  gcloud "$@"
}

# Parses the flags every script takes; the rest is left in ARGS.
parse_common() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      --name) NAME=${2:?--name needs a value}; shift 2 ;;
      --name=*) NAME=${1#*=}; shift ;;
      --zone) ZONE=${2:?--zone needs a value}; shift 2 ;;
      --zone=*) ZONE=${1#*=}; shift ;;
      --project) PROJECT=${2:?--project needs a value}; shift 2 ;;
      --project=*) PROJECT=${1#*=}; shift ;;
      --accelerator) ACCELERATOR=${2:?--accelerator needs a value}; shift 2 ;;
      --accelerator=*) ACCELERATOR=${1#*=}; shift ;;
      --queued) QUEUED=1; shift ;;
      --dry-run) DRY_RUN=1; shift ;;
      --) ARGS+=("$@"); break ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
}

require_target() {
  [[ -n $NAME ]] || die "--name is required (or set TPU_NAME)"
  [[ -n $ZONE ]] || die "--zone is required (or set TPU_ZONE), e.g. --zone us-west4-a for v5e"
}

# --zone=... [--project=...]
location_flags() {
  LOCATION=("--zone=$ZONE")
  if [[ -n $PROJECT ]]; then LOCATION+=("--project=$PROJECT"); fi
}

# v5e-32 -> v5litepod-32; v5p-N and v6e-N keep their names; raw gcloud types pass through.
accelerator_type() {
  local a=$1
  case $a in
    v5e-[0-9]*) echo "v5litepod-${a#v5e-}" ;;
    v5litepod-[0-9]*|v5p-[0-9]*|v6e-[0-9]*|v4-[0-9]*) echo "$a" ;;
    *) die "unknown accelerator '$a': use v5e-N (chips), v5p-N (TensorCores), v6e-N (chips) or v4-N" ;;
  esac
}

# The TPU VM software version for an accelerator family.
runtime_version() {
  case $1 in
    v5litepod-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    v4-*) echo "tpu-ubuntu2204-base" ;;
  esac
}

# The gs:// bucket and the path inside it, and where setup.sh mounts the bucket on every worker.
MOUNT_ROOT=/mnt/gcs
gcs_bucket() { local u=${1#gs://}; echo "${u%%/*}"; }
gcs_path() { local u=${1#gs://}; [[ $u == */* ]] && echo "${u#*/}" || echo ""; }
# gs://bucket/runs/x -> /mnt/gcs/bucket/runs/x (a shared path: the same on every worker); others unchanged.
local_path() {
  if [[ $1 == gs://* ]]; then
    local p; p=$(gcs_path "$1")
    echo "$MOUNT_ROOT/$(gcs_bucket "$1")${p:+/$p}"
  else
    echo "$1"
  fi
}

REMOTE_DIR='~/datarater'   # the checkout on every worker (expanded by the worker's shell)
