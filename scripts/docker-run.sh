#!/usr/bin/env bash
# Run the kit GPU image on this checkout: data/ and runs/ are mounted read-write, ~/.kaggle read-only,
# and Kaggle credentials in the environment are passed by name (their values never appear in `ps`).
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
mkdir -p data runs

args=(run --rm --shm-size=2g)
if [[ -t 0 && -t 1 ]]; then
  args+=(-it)
fi
if [[ "${gpus}" != "none" ]]; then
  args+=(--gpus "${gpus}")
fi
args+=(-v "${PWD}/data:/work/data" -v "${PWD}/runs:/work/runs")
if [[ -d "${HOME}/.kaggle" ]]; then
  args+=(-v "${HOME}/.kaggle:/home/kit/.kaggle:ro")
fi
for name in KAGGLE_USERNAME KAGGLE_KEY KAGGLE_API_TOKEN; do
  if [[ -n "${!name:-}" ]]; then
    args+=(-e "${name}")  # by name: docker reads the value from this environment
  fi
done
if [[ -n "${KIT_DOCKER_ARGS:-}" ]]; then
  read -r -a extra <<< "${KIT_DOCKER_ARGS}"
  args+=("${extra[@]}")
fi

exec "${docker_cmd}" "${args[@]}" "${image}" "$@"
