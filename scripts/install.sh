#!/usr/bin/env bash
# Install the `baton` binary on the PATH.
#
# usage: scripts/install.sh
#   Builds the release binary of this checkout (`cargo build --release --locked`: the
#   build scripts/cluster.sh and `cargo test --release` use too, so RocksDB compiles once)
#   and copies it to $BATON_INSTALL_DIR, default ~/.cargo/bin (where rustup put `cargo`,
#   hence on the PATH of anyone who built Baton). The copy replaces an older `baton`
#   atomically, also while one runs. `cargo install --path . --locked` does the same job.
#
# Environment: BATON_INSTALL_DIR, BATON_BIN (install this prebuilt binary instead of
# building), CARGO_TARGET_DIR (cargo's default), CARGO_HOME (~/.cargo).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/nodes.sh
source scripts/lib/nodes.sh

DEST=${BATON_INSTALL_DIR:-${CARGO_HOME:-$HOME/.cargo}/bin}
BIN=$(baton_release_bin)
if [[ -z "${BATON_BIN:-}" ]]; then echo "building $BIN ..."; fi
baton_build

mkdir -p "$DEST"
tmp=$(mktemp "$DEST/.baton.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cp "$BIN" "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" "$DEST/baton"
echo "installed $DEST/baton ($(du -m "$DEST/baton" | cut -f1) MB, $("$DEST/baton" --version))"

found=$(command -v baton || true)
if [[ "$found" != "$DEST/baton" ]]; then
  if [[ -z "$found" ]]; then
    echo "note: $DEST is not on your PATH; add it, e.g. export PATH=\"$DEST:\$PATH\"" >&2
  else
    echo "note: \`baton\` on your PATH is $found, not $DEST/baton; put $DEST first" >&2
  fi
fi
