#!/usr/bin/env bash
# Test data that cannot be generated: a real PDF typeset by someone else (LaTeX), with a text layer.
# It comes from Debian's camlidl-doc package; the package is fetched, not installed.
set -euo pipefail
dest=${1:-.inkbooth/testdata}
pdf="$dest/camlidl-1.04.doc.pdf"
[ -f "$pdf" ] && exit 0
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download camlidl-doc >/dev/null 2>&1); then
  apt-get update -qq >/dev/null 2>&1 || true
  (cd "$tmp" && apt-get download camlidl-doc >/dev/null 2>&1) || {
    echo "fetch-testdata: could not download camlidl-doc with apt-get; the real-PDF test will be skipped" >&2
    exit 0
  }
fi
dpkg-deb -x "$tmp"/camlidl-doc_*.deb "$tmp/x"
cp "$tmp/x/usr/share/doc/camlidl/camlidl-1.04.doc.pdf" "$pdf"
echo "fetch-testdata: $pdf"
