#!/usr/bin/env bash
# Builds the Debian package: the release binary, its man pages and shell completions
# (written by the binary itself, so they always match its command line), then cargo deb.
#   scripts/package.sh            # target/debian/tapflow_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --locked --release
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets"
target/release/tapflow manpage --dir "$assets"
target/release/tapflow completions bash >"$assets/tapflow.bash"
target/release/tapflow completions zsh >"$assets/_tapflow"
target/release/tapflow completions fish >"$assets/tapflow.fish"

if ! command -v cargo-deb >/dev/null; then
    echo "package: installing cargo-deb" >&2
    cargo install --locked cargo-deb
fi
cargo deb --no-build -p tapflow
