#!/usr/bin/env bash
# Run the kit GPU image on this checkout: data/, runs/ and the Keras weights cache ~/.keras are mounted
# read-write; ~/.kaggle, the competition YAMLs (./configs, ~/.config/kit) and any weights= file given as an
# argument read-only (the file at its absolute path, and the argument rewritten to it). Kaggle credentials
# in the environment are passed by name (their values never appear in `ps`).
#   scripts/docker-run.sh IMAGE [kit command | make target | bash] [ARGS...]
#   scripts/docker-run.sh kit-gpu train comp=cifake model=effnetb4
# Environment: DOCKER (the docker command), KIT_DOCKER_GPUS (default "all"; "none" for CPU),
#              KIT_DOCKER_ARGS (extra docker run options, split on spaces).
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: scripts/docker-run.sh IMAGE [COMMAND] [ARGS...]" >&2
  exit 2
fi
image="$1"
shift

docker_cmd="${DOCKER:-docker}"
gpus="${KIT_DOCKER_GPUS:-all}"

# Create the mount points as the current user; docker would create missing ones owned by root.
mkdir -p data runs "${HOME}/.keras"

args=(run --rm --shm-size=2g)
if [[ -t 0 && -t 1 ]]; then
  args+=(-it)
fi
if [[ "${gpus}" != "none" ]]; then
  args+=(--gpus "${gpus}")
fi
args+=(-v "${PWD}/data:/work/data" -v "${PWD}/runs:/work/runs")
args+=(-v "${HOME}/.keras:/home/kit/.keras")
if [[ -d "${HOME}/.kaggle" ]]; then
  args+=(-v "${HOME}/.kaggle:/home/kit/.kaggle:ro")
fi
# The user's competition YAMLs: ./configs shadows the image's copy of the checkout's presets.
if [[ -d configs ]]; then
  args+=(-v "${PWD}/configs:/work/configs:ro")
fi
config_home="${XDG_CONFIG_HOME:-${HOME}/.config}/kit"
if [[ -d "${config_home}" ]]; then
  args+=(-v "${config_home}:/home/kit/.config/kit:ro")
fi

# weights=PATH (or model.weights=PATH): the file is mounted read-only at its absolute path and the argument
# names that path, so a relative one still resolves inside the container (whose working directory is /work).
command_args=()
for arg in "$@"; do
  case "${arg}" in
    weights=* | model.weights=*)
      key="${arg%%=*}"
      value="${arg#*=}"
      if [[ "${value}" != "imagenet" && "${value}" != "none" && -n "${value}" ]]; then
        if [[ ! -e "${value}" ]]; then
          echo "error: ${arg}: no such file here; give the path of a .weights.h5 file on this machine (or weights=none)" >&2
          exit 2
        fi
        value="$(realpath -- "${value}")"
        if [[ "${value}" == *:* ]]; then
          echo "error: ${arg}: docker cannot mount a path with ':' in it; move or link the file to a path without one" >&2
          exit 2
        fi
        args+=(-v "${value}:${value}:ro")
        arg="${key}=${value}"
      fi
      ;;
  esac
  command_args+=("${arg}")
done
for name in KAGGLE_USERNAME KAGGLE_KEY KAGGLE_API_TOKEN; do
  if [[ -n "${!name:-}" ]]; then
    args+=(-e "${name}")  # by name: docker reads the value from this environment
  fi
done
if [[ -n "${KIT_DOCKER_ARGS:-}" ]]; then
  read -r -a extra <<< "${KIT_DOCKER_ARGS}"
  args+=("${extra[@]}")
fi

exec "${docker_cmd}" "${args[@]}" "${image}" "${command_args[@]}"
