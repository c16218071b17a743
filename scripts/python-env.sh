#!/usr/bin/env bash
# Usage: scripts/python-env.sh [DIR]
#
# Creates (or brings up to date) a Python venv with the pinned tools of
# scripts/python-requirements.txt and prints its python's path. DIR defaults to
# $CARGO_TARGET_DIR/py (target/py): outside the sources, reused across runs. Tests that
# need the tools call this themselves; it is idempotent and serialized by a lock file, so
# parallel test binaries install once. Needs python3 with venv (Debian: python3-venv).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-${CARGO_TARGET_DIR:-$here/../target}/py}
req=$here/python-requirements.txt
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [[ ! -x $dir/bin/python ]]; then
  python3 -m venv "$dir" >&2
fi
# Reinstall only when the pinned list changed since the last install.
if ! cmp -s "$req" "$dir/installed-requirements.txt"; then
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$dir/installed-requirements.txt"
fi
echo "$dir/bin/python"
