#!/usr/bin/env bash
# Entry point of the kit GPU image (docker/Dockerfile.gpu).
#   <image> train model=effnetb4     -> kit train model=effnetb4     (any kit command, or --help)
#   <image> make train MODEL=cnn     -> make train MODEL=cnn
#   <image> bash | python ...        -> that program, as is
set -euo pipefail

# kit's commands (tests/test_docker.py checks that every command of the kit CLI is listed here).
KIT_COMMANDS=" config list data records train tune evaluate predict submit audit runs new-comp demo kernel export lr-find show weights "

# The Kaggle client warns when kaggle.json is readable by others, as it often is after a bind mount.
# Tighten it in place; a read-only mount cannot be changed, so use a private copy instead.
fix_kaggle_json() {
  local dir="${KAGGLE_CONFIG_DIR:-${HOME}/.kaggle}"
  local file="${dir}/kaggle.json"
  [[ -f "${file}" ]] || return 0
  local mode
  mode="$(stat -c '%a' "${file}")"
  [[ "${mode}" == "600" || "${mode}" == "400" ]] && return 0
  if ! chmod 600 "${file}" 2>/dev/null || [[ "$(stat -c '%a' "${file}")" != "600" ]]; then
    local private
    private="$(mktemp -d)"
    install -m 600 "${file}" "${private}/kaggle.json"
    export KAGGLE_CONFIG_DIR="${private}"
  fi
}

fix_kaggle_json

if [[ $# -eq 0 ]]; then
  set -- --help
fi
case "$1" in
  -*) exec kit "$@" ;;  # kit's own options, e.g. --help
  *)
    if [[ "${KIT_COMMANDS}" == *" $1 "* ]]; then
      exec kit "$@"
    fi
    exec "$@"  # make, bash, python, ...
    ;;
esac
