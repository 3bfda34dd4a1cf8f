#!/usr/bin/env bash
# Build the component images with whichever engine works here: docker (with a running daemon),
# else podman, else buildah. Called by `make images`; settings come from the environment:
#
#   VARIANTS   images to build (default: every docker/*/Dockerfile)
#   REGISTRY   image repository prefix (default ghcr.io/inkbooth); tag = VERSION (the package version)
#   BASE       base image (default: the Dockerfiles' python:3.11.11-slim-bookworm); a local image
#              works too, e.g. the stand-in from scripts/standin-base.sh
#   ENGINE     docker | podman | buildah, to skip the detection
#   PIP_HOOK   1 (default): hand this host's pip settings (index, CA bundle, and with podman or
#              buildah the find-links wheels a lock pins) to the build, as secrets and a build
#              volume that no layer keeps; 0: pip's defaults inside the build
#
#   IMAGES_OUT where build logs, results and the pip hook go (default build/images)
#
# Writes <IMAGES_OUT>/<variant>.json (image, id, size, build seconds, engine, base) and the build log
# beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${VERSION:-$(sed -n 's/^__version__ = "\(.*\)"/\1/p' src/inkbooth/__init__.py)}
registry=${REGISTRY:-ghcr.io/inkbooth}
variants=${VARIANTS:-$(ls docker/*/Dockerfile | cut -d/ -f2 | tr '\n' ' ')}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

engine=$(bash scripts/container-engine.sh) || { echo "make images: no container engine" >&2; exit 1; }
echo "make images: $engine, version $version${BASE:+, base $BASE}"

out=${IMAGES_OUT:-build/images}
mkdir -p "$out"
for v in $variants; do
  [ -f "docker/$v/Dockerfile" ] || { echo "make images: no docker/$v/Dockerfile" >&2; exit 1; }
  image="$registry/inkbooth-$v:$version"
  args=(-f "docker/$v/Dockerfile" -t "$image")
  [ -n "${BASE:-}" ] && args+=(--build-arg "BASE=$BASE")
  if [ "${PIP_HOOK:-1}" = 1 ]; then
    hook="$out/pip-hook/$v"
    wheels=""; [ "$engine" != docker ] && wheels="--wheels"
    "$python" scripts/pip-hook.py "$v" "$hook" $wheels >/dev/null
    args+=(--secret "id=pip.conf,src=$hook/pip.conf")
    [ -f "$hook/ca.pem" ] && args+=(--secret "id=pip-ca.pem,src=$hook/ca.pem")
    if [ -d "$hook/wheels" ] && [ -n "$(ls -A "$hook/wheels")" ]; then
      args+=(--volume "$(cd "$hook/wheels" && pwd):/run/pip-wheels:ro")
      # The wheels replace PyTorch's CPU index (ocr-cpu), which such hosts often cannot reach.
      args+=(--build-arg TORCH_INDEX_URL=)
    fi
  fi
  case "$engine" in
    docker) cmd=(docker build "${args[@]}" .) ;;
    podman) cmd=(podman build --layers "${args[@]}" .) ;;
    buildah) cmd=(buildah bud --isolation chroot --layers "${args[@]}" .) ;;
    *) echo "make images: unknown ENGINE $engine" >&2; exit 1 ;;
  esac
  echo "building $image"
  start=$(date +%s)
  if ! "${cmd[@]}" > "$out/$v.log" 2>&1; then
    tail -40 "$out/$v.log" >&2
    echo "make images: $v failed (log: $out/$v.log)" >&2
    exit 1
  fi
  seconds=$(( $(date +%s) - start ))
  case "$engine" in
    docker) id=$(docker image inspect --format '{{.Id}}' "$image"); size=$(docker image inspect --format '{{.Size}}' "$image") ;;
    *) id=$($engine inspect --type image --format '{{.FromImageID}}' "$image")
       size=$($engine images --format '{{.Size}}' --noheading "$image" 2>/dev/null | head -1) ;;
  esac
  printf '{"image": "%s", "id": "%s", "size": "%s", "seconds": %s, "engine": "%s", "base": "%s"}\n' \
    "$image" "$id" "$size" "$seconds" "$engine" "${BASE:-default}" > "$out/$v.json"
  echo "  $image  $size  ${seconds}s"
done
