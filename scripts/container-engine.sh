#!/usr/bin/env bash
# Prints the container engine to build with: $ENGINE if set, else docker if its daemon answers,
# else podman, else buildah. Used by `make images` and `make test-images`.
set -euo pipefail
if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"; exit 0; fi
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker
elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then echo podman
elif command -v buildah >/dev/null 2>&1; then echo buildah
else
  echo "no container engine works here (docker with a daemon, podman or buildah)" >&2; exit 1
fi
