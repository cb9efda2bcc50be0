#!/usr/bin/env bash
# Fetches oneDNN 3.2 (Intel's own build, GNU OpenMP, from PyPI: onednn-cpu-gomp and its headers,
# onednn-devel-cpu-gomp, version 2023.2.0) and unpacks it into DIR/include and DIR/lib, where
# build.rs looks first (default DIR: target/onednn). Optional: without it the build uses the
# system's oneDNN (Debian 12: libdnnl-dev 2.6, ~25 % slower per convolution here) or none.
#   scripts/fetch-onednn.sh [DIR]
# Why PyPI: Debian 12 ships oneDNN 2.6 only, and PyTorch's own 3.x is linked into libtorch
# without its API. The newer PyPI build (onednn 2026.x, 3.13) needs Intel's SYCL and TBB
# runtimes; 2023.2.0 is the newest that needs nothing beyond libgomp.
# Idempotent: wheels are kept in SPECTRAL_PACKAGE_CACHE (default target/package-cache) and
# checked by sha256; a mismatch is an error. After the first fetch into a checkout that was
# already built, `touch build.rs` (or `cargo clean -p spectral-transfer`) picks it up.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-target/onednn}"
CACHE="${SPECTRAL_PACKAGE_CACHE:-$PWD/target/package-cache}"
mkdir -p "$CACHE" "$DIR"
py="${PYTHON:-python3}"

# name==version  filename  sha256
WHEELS="
onednn-cpu-gomp==2023.2.0 onednn_cpu_gomp-2023.2.0-py2.py3-none-manylinux1_x86_64.whl 2f22a54d6a890ed14bfa185d42a4be65d8b5b1df85dc1f0f3a9abe31620416fb
onednn-devel-cpu-gomp==2023.2.0 onednn_devel_cpu_gomp-2023.2.0-py2.py3-none-manylinux1_x86_64.whl 9763c69e8c907e119056bd52ad918ca84ac9ba939d130a99dfa95ccca3e5e284
"
if [ "$(uname -m)" != x86_64 ] || [ "$(uname -s)" != Linux ]; then
  echo "fetch-onednn: the PyPI build is for Linux x86_64 only; skipped" >&2
  exit 0
fi
echo "$WHEELS" | while read -r spec file sha; do
  [ -n "$spec" ] || continue
  if ! { [ -f "$CACHE/$file" ] && [ "$(sha256sum "$CACHE/$file" | cut -d' ' -f1)" = "$sha" ]; }; then
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
      --python-version 3.11 --implementation py --dest "$CACHE" "$spec"
  fi
  got="$(sha256sum "$CACHE/$file" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    echo "ERROR: sha256 mismatch for $CACHE/$file: expected $sha, got $got" >&2
    exit 1
  fi
done
# unpack the wheels' data/include and data/lib (a wheel is a zip; no unzip needed)
# shellcheck disable=SC2046 # the wheels' file names, one word each
"$py" - "$CACHE" "$DIR" $(echo "$WHEELS" | awk 'NF { print $2 }') <<'PY'
import os, sys, zipfile
cache, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
tmp = out + ".partial"
for name in names:
    with zipfile.ZipFile(os.path.join(cache, name)) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            # <pkg>.data/data/{include,lib}/...
            if len(parts) > 3 and parts[1] == "data" and parts[2] in ("include", "lib") and not info.is_dir():
                dest = os.path.join(tmp, *parts[2:])
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as dst:
                    dst.write(src.read())
# the wheel stores libdnnl.so, .so.3 and .so.3.2 as three copies; keep one file and two links
lib = os.path.join(tmp, "lib")
for alias in ("libdnnl.so", "libdnnl.so.3"):
    p = os.path.join(lib, alias)
    if os.path.exists(p):
        os.remove(p)
    os.symlink("libdnnl.so.3.2", p)
import shutil
for sub in ("include", "lib"):
    final = os.path.join(out, sub)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(os.path.join(tmp, sub), final)
os.rmdir(tmp)
PY
echo "oneDNN 3.2 in $DIR ($(ls "$DIR"/lib))"
