#!/usr/bin/env bash
# Fonts and word lists for synthetic OCR training lines, from Debian packages (fetched, not installed):
#   fonts-dejavu-core   DejaVu Sans / Serif / Sans Mono (Latin, Cyrillic, Greek)
#   fonts-liberation    Liberation Sans / Serif / Mono (metric-compatible with Arial, Times, Courier)
#   fonts-lmodern       Latin Modern Roman / Sans / Mono (Computer Modern, as TeX documents print it)
#   fonts-urw-base35    URW clones of the PostScript base 35: Times, Helvetica, Courier, Palatino,
#                       Century Schoolbook, Bookman
#   fonts-noto-core     Noto Sans / Serif
#   fonts-cmu           Computer Modern Unicode (CM with Cyrillic: XeLaTeX/LuaLaTeX Russian documents)
#   cm-super-minimal    CM-Super Type 1 (CM in T2A, as pdfLaTeX prints Russian documents; Pillow reads .pfb)
#   fonts-paratype      PT Sans / Serif / Mono (ParaType's public Cyrillic and Latin families)
#   wamerican           an English word list
#   hunspell-ru         a Russian word list (hunspell .dic, UTF-8)
# Everything lands in $dest (default .inkbooth/fonts) with SOURCES.txt naming each package version
# and each file's SHA-256, which the readers' manifests record.
set -euo pipefail
dest=${1:-.inkbooth/fonts}
packages=(fonts-dejavu-core fonts-liberation fonts-lmodern fonts-urw-base35 fonts-noto-core fonts-cmu cm-super-minimal
          fonts-paratype wamerican hunspell-ru)
wanted=(
  usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
  usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf
  usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf
  usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf
  usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf
  usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf
  usr/share/texmf/fonts/opentype/public/lm/lmroman10-regular.otf
  usr/share/texmf/fonts/opentype/public/lm/lmroman10-italic.otf
  usr/share/texmf/fonts/opentype/public/lm/lmroman10-bold.otf
  usr/share/texmf/fonts/opentype/public/lm/lmsans10-regular.otf
  usr/share/texmf/fonts/opentype/public/lm/lmmono10-regular.otf
  usr/share/fonts/opentype/urw-base35/NimbusRoman-Regular.otf
  usr/share/fonts/opentype/urw-base35/NimbusRoman-Italic.otf
  usr/share/fonts/opentype/urw-base35/NimbusRoman-Bold.otf
  usr/share/fonts/opentype/urw-base35/NimbusSans-Regular.otf
  usr/share/fonts/opentype/urw-base35/NimbusSans-Bold.otf
  usr/share/fonts/opentype/urw-base35/NimbusMonoPS-Regular.otf
  usr/share/fonts/opentype/urw-base35/P052-Roman.otf
  usr/share/fonts/opentype/urw-base35/P052-Italic.otf
  usr/share/fonts/opentype/urw-base35/C059-Roman.otf
  usr/share/fonts/opentype/urw-base35/URWBookman-Light.otf
  usr/share/fonts/truetype/noto/NotoSans-Regular.ttf
  usr/share/fonts/truetype/noto/NotoSerif-Regular.ttf
  usr/share/fonts/truetype/noto/NotoSerif-Italic.ttf
  usr/share/fonts/truetype/cmu/cmunrm.ttf
  usr/share/fonts/truetype/cmu/cmunti.ttf
  usr/share/fonts/truetype/cmu/cmunbx.ttf
  usr/share/fonts/truetype/cmu/cmuntt.ttf
  usr/share/fonts/truetype/cmu/cmunss.ttf
  usr/share/texmf/fonts/type1/public/cm-super/sfrm1000.pfb
  usr/share/texmf/fonts/type1/public/cm-super/sfti1000.pfb
  usr/share/texmf/fonts/type1/public/cm-super/sfbx1000.pfb
  usr/share/texmf/fonts/type1/public/cm-super/sftt1000.pfb
  usr/share/fonts/truetype/paratype/PTS55F.ttf
  usr/share/fonts/truetype/paratype/PTS75F.ttf
  usr/share/fonts/truetype/paratype/PTF55F.ttf
  usr/share/fonts/truetype/paratype/PTF56F.ttf
  usr/share/fonts/truetype/paratype/PTM55F.ttf
  usr/share/dict/american-english
  usr/share/hunspell/ru_RU.dic
)
if [ -f "$dest/SOURCES.txt" ]; then
  missing=0
  for f in "${wanted[@]}"; do [ -f "$dest/$(basename "$f")" ] || missing=1; done
  [ "$missing" = 0 ] && exit 0
fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
download() { (cd "$tmp" && apt-get download "${packages[@]}" >/dev/null 2>&1); }
if ! download; then
  apt-get update -qq >/dev/null 2>&1 || true
  download || { echo "fetch-fonts: could not download ${packages[*]} with apt-get" >&2; exit 1; }
fi
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
{
  echo "# Fetched by scripts/fetch-fonts.sh from Debian packages"
  for deb in "$tmp"/*.deb; do
    echo "package $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
  done
} > "$tmp/SOURCES.txt"
for f in "${wanted[@]}"; do
  cp "$tmp/x/$f" "$dest/$(basename "$f")"
  echo "file $(basename "$f") $(sha256sum "$dest/$(basename "$f")" | cut -d' ' -f1)" >> "$tmp/SOURCES.txt"
done
mv "$tmp/SOURCES.txt" "$dest/SOURCES.txt"  # last: its presence means the set is complete
echo "fetch-fonts: $dest"
