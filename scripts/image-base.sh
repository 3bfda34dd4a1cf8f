#!/usr/bin/env bash
# Prints the base image `make test-images` builds on: $BASE if set; else the Dockerfiles' default
# (python:3.11.11-slim-bookworm) when the engine has it or can pull it; else the local stand-in
# (scripts/standin-base.sh, built here if it is missing), for machines that cannot pull.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BASE:-}" ]; then echo "$BASE"; exit 0; fi
engine=$(bash scripts/container-engine.sh)
default=$(sed -n 's/^ARG BASE=//p' docker/ocr-cpu/Dockerfile)
standin=localhost/inkbooth-base:bookworm-py3.11
has() {
  if [ "$engine" = buildah ]; then buildah inspect --type image "$1" >/dev/null 2>&1
  else $engine image inspect "$1" >/dev/null 2>&1; fi
}
if has "$default" || timeout 120 $engine pull -q "$default" >/dev/null 2>&1; then
  echo "$default"
  exit 0
fi
if ! has "$standin"; then
  echo "image-base: cannot pull $default; building the stand-in $standin" >&2
  bash scripts/standin-base.sh "$standin" >&2
fi
echo "$standin"
