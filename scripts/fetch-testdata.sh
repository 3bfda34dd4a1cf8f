#!/usr/bin/env bash
# Test data that cannot be generated: real PDFs typeset by others (LaTeX), with a text layer, and the
# Tesseract OCR engine that bench/pages.py and a test compare the segmenter with.
#
# The PDFs are listed in tests/evalset.tsv (Debian package, path inside it, SHA-256); each package
# is downloaded with apt-get (fetched, not installed), only the listed files are extracted, and the
# .deb is deleted. tesseract-ocr is installed from Debian when it is missing and apt-get can.
#
# Any list of the same form works: the held-out reading set (tests/readset.tsv) and a reader's
# training documents (src/inkbooth/readers/NAME/documents.tsv) are fetched the same way.
#
#   scripts/fetch-testdata.sh [DEST [LIST...]]   (default .inkbooth/testdata, tests/evalset.tsv)
set -euo pipefail
dest=${1:-.inkbooth/testdata}
shift || true
lists=("$@")
[ ${#lists[@]} -gt 0 ] || lists=("$(dirname "$0")/../tests/evalset.tsv")
mkdir -p "$dest"

apt_download() {  # apt_download PACKAGE DIR: the .deb into DIR, refreshing the lists once if needed
  (cd "$2" && apt-get download "$1" >/dev/null 2>&1) && return 0
  apt-get update -qq >/dev/null 2>&1 || true
  (cd "$2" && apt-get download "$1" >/dev/null 2>&1)
}

# Packages still needed: those with a listed file missing from $dest.
declare -A wanted=()
while IFS=$'\t' read -r name package path sha pages quick layouts; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  [ -f "$dest/$(basename "$path")" ] && continue
  # a file listed twice (in two lists) is fetched once
  [[ "${wanted[$package]:-}" == *"$path"$'\t'* ]] || wanted[$package]+="$path"$'\t'"$sha"$'\n'
done < <(cat "${lists[@]}")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for package in "${!wanted[@]}"; do
  if ! apt_download "$package" "$tmp"; then
    echo "fetch-testdata: could not download $package with apt-get; tests on its PDFs will be skipped" >&2
    continue
  fi
  members=()
  while IFS=$'\t' read -r path sha; do [ -n "$path" ] && members+=("./$path"); done <<<"${wanted[$package]}"
  mkdir -p "$tmp/x"
  dpkg-deb --fsys-tarfile "$tmp/${package}"_*.deb | tar -x -C "$tmp/x" "${members[@]}"
  while IFS=$'\t' read -r path sha; do
    [ -n "$path" ] || continue
    got=$(sha256sum "$tmp/x/$path" | cut -d' ' -f1)
    # The ground truth is read from the PDF itself, so another build of it is still a valid test;
    # but the figures in the README were measured on this one.
    [ "$got" = "$sha" ] || echo "fetch-testdata: $path from $package differs from the listed build ($got)" >&2
    cp "$tmp/x/$path" "$dest/$(basename "$path").part"
    mv "$dest/$(basename "$path").part" "$dest/$(basename "$path")"
    echo "fetch-testdata: $dest/$(basename "$path")"
  done <<<"${wanted[$package]}"
  rm -rf "$tmp/x" "$tmp"/*.deb
done

[ -z "${INKBOOTH_NO_TESSERACT:-}" ] || exit 0
# Tesseract and its languages (TESSERACT_LANGS, default eng; bench-reading-cyrillic adds rus).
packages="tesseract-ocr"
for lang in ${TESSERACT_LANGS:-eng}; do
  tesseract --list-langs 2>/dev/null | grep -qx "$lang" || packages="$packages tesseract-ocr-$lang"
done
if [ "$packages" != "tesseract-ocr" ] || ! command -v tesseract >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # shellcheck disable=SC2086  # one word per package
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages \
        >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $packages >/dev/null 2>&1; }; } \
      && echo "fetch-testdata: installed $packages" \
      || echo "fetch-testdata: could not install $packages; the comparison with Tesseract will be skipped" >&2
  else
    echo "fetch-testdata: tesseract or a language of it is missing (apt-get install $packages); the comparison will be skipped" >&2
  fi
fi
