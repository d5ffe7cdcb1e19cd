#!/usr/bin/env bash
# Installs what tapflow needs to build, test and run its demo on Debian 12 / Ubuntu,
# skipping whatever is already present. Safe to run again.
set -euo pipefail

packages=(
    libdpdk-dev dpdk            # the data plane (DPDK 22.11 on Debian 12)
    libclang-dev clang pkg-config  # bindgen generates dpdk-sys at build time
    nfdump                      # nfcapd: the reference collector for the demo and tests
    tshark                      # independent dissector of every exported datagram
    tcpreplay iproute2          # live-tap emulation in a network namespace
    ethtool python3             # the KPI test's user-space path relay (offloads off)
    softflowd pmacct            # peers for the benchmark comparison
    systemd                     # systemd-analyze verifies the unit
    groff-base                  # renders the man pages in the tests
    libfixbuf-tools fastnetmon python3-venv  # interoperability matrix (tests/interop.rs)
    dnsmasq-base bind9-dnsutils # a real resolver and dig for the DNS analyzer's test
)

missing=()
for p in "${packages[@]}"; do
    [[ $p == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "setup: run as root or install sudo" >&2; exit 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The PyPI `netflow` collector for tests/interop.rs, in a virtual environment of its own.
netflow_venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/netflow-venv"
if ! "$netflow_venv/bin/python" -c 'import netflow' 2>/dev/null; then
    echo "setup: installing the netflow collector (PyPI) into $netflow_venv" >&2
    python3 -m venv "$netflow_venv"
    "$netflow_venv/bin/pip" install -q netflow==0.12.2
fi

if ! command -v cargo >/dev/null; then
    for dir in "$HOME/.cargo/bin" /root/.cargo/bin; do
        [[ -x $dir/cargo ]] && export PATH="$dir:$PATH" && break
    done
fi
if ! command -v cargo >/dev/null; then
    echo "setup: no Rust toolchain found. Install one with rustup (https://rustup.rs), Rust 1.88 or newer, then run this again." >&2
    exit 1
fi
