#!/usr/bin/env bash
# A stand-in for the images' base (python:3.11.11-slim-bookworm) on machines that cannot pull it:
# Debian bookworm (debootstrap, minbase) with Debian's python3.11 and its venv module, `python`
# and `python3` on /usr/local/bin as in the official image, imported into buildah's local storage.
#
#   sudo scripts/standin-base.sh [IMAGE]          # default IMAGE: localhost/inkbooth-base:bookworm-py3.11
#   make images BASE=localhost/inkbooth-base:bookworm-py3.11
#
# Needs root, debootstrap and buildah (apt-get install debootstrap buildah). DEBIAN_MIRROR picks
# the mirror (default: the one apt uses here, else deb.debian.org).
set -euo pipefail

image=${1:-localhost/inkbooth-base:bookworm-py3.11}
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}
for tool in debootstrap buildah; do
  command -v "$tool" >/dev/null || { echo "standin-base: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "standin-base: debootstrap needs root" >&2; exit 1; }

root=$(mktemp -d /var/tmp/inkbooth-standin.XXXXXX)
container=""
cleanup() {
  [ -n "$container" ] && buildah rm "$container" >/dev/null 2>&1 || true
  rm -rf "$root" "$root.log"
}
trap cleanup EXIT

echo "standin-base: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,python3-pip-whl,python3-setuptools-whl,ca-certificates bookworm "$root" "$mirror" > "$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
# What a slim image leaves out: package lists, caches, docs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/var/log/*.log
"$root/usr/bin/python3.11" -c "import venv, ensurepip, ssl" 2>/dev/null || chroot "$root" python3.11 -c "import venv, ensurepip, ssl"

container=$(buildah from scratch)
mnt=$(buildah mount "$container")
cp -a "$root/." "$mnt/"
buildah umount "$container" >/dev/null
buildah config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --cmd python3 --label org.opencontainers.image.description="inkbooth stand-in for python:3.11-slim-bookworm" \
  "$container"
buildah commit --rm "$container" "$image" >/dev/null
container=""
echo "standin-base: $image ($(buildah inspect --format '{{.FromImageID}}' "$image" 2>/dev/null | cut -c1-12 || true))"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image"
