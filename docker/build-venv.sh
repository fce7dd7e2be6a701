#!/bin/sh
# Builds the image's virtual environment: build-venv.sh VENV SOURCE.
#
# A venv, not the system's site-packages: Debian's python3 (a debootstrap base) marks itself externally
# managed and refuses `pip install` there, and the official python image's own packages are better left
# alone too; the same venv path works on both.
#
# Wheels in SOURCE/wheelhouse (the perpwatch wheel and every dependency, built beforehand) are installed
# with no index at all, so a build with no network succeeds; without them the wheels are built here first,
# which needs PyPI.
set -eu
venv=$1
src=$2
python3 -m venv "$venv"
if ! ls "$src"/wheelhouse/perpwatch-*.whl >/dev/null 2>&1; then
    "$venv/bin/pip" wheel --wheel-dir "$src/wheelhouse" "$src"
fi
"$venv/bin/pip" install --no-index --find-links "$src/wheelhouse" perpwatch
"$venv/bin/perpwatch" --help >/dev/null
