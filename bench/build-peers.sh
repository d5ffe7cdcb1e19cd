#!/usr/bin/env bash
# Usage: bench/build-peers.sh PREFIX LIBFIXBUF_SRC YAF_SRC IPFIXPROBE_SRC TELEMETRY_SRC
#
# Builds the peers that Debian does not package, for bench/compare-peers.sh: YAF 2.x (on
# libfixbuf 2.x) and ipfixprobe 5.x (pcap input; it pulls CESNET's telemetry library with
# CMake's FetchContent, pointed here at TELEMETRY_SRC so the build needs no network).
# Every argument is a source tree the caller unpacked OUTSIDE this repository (the peers
# are never vendored); the programs land in PREFIX/bin, PREFIX/sbin and
# PREFIX/ipfixprobe/bin. Build dependencies, from Debian 12:
#
#   apt-get install build-essential pkg-config autoconf automake libtool cmake xsltproc \
#       libglib2.0-dev libpcap-dev liblz4-dev libunwind-dev libssl-dev libfuse3-dev
#
# Sources used for BENCHMARKS.md: libfixbuf 2.5.4 and YAF 2.16.4 (github.com/yaf-project,
# imports of CERT NetSA's release tarballs), ipfixprobe v5.7.0 (github.com/CESNET/ipfixprobe)
# and telemetry v1.3.1 (github.com/CESNET/telemetry, the tag ipfixprobe 5.7.0 asks for).
set -euo pipefail

[ $# -eq 5 ] || {
    sed -n '2,16p' "$0" >&2
    exit 2
}
prefix=$(mkdir -p "$1" && cd "$1" && pwd)
fixbuf_src=$(cd "$2" && pwd)
yaf_src=$(cd "$3" && pwd)
ipfixprobe_src=$(cd "$4" && pwd)
telemetry_src=$(cd "$5" && pwd)
jobs=${JOBS:-$(nproc)}

# Release builds, as a user installing them would get.
export CFLAGS="-O2" CXXFLAGS="-O2"
# In a git checkout (github.com/yaf-project) every file has the checkout's time, so make
# would rerun the autotools on files they generated; the generated files shipped in the
# tree are the release's own, so those steps are switched off. (YAF regenerates its
# information-model headers from XML: that needs xsltproc.)
autotools_off=(ACLOCAL=true AUTOMAKE=true AUTOCONF=true AUTOHEADER=true)

echo "build-peers: libfixbuf" >&2
(cd "$fixbuf_src" && ./configure --prefix="$prefix" >/dev/null &&
    make -j"$jobs" "${autotools_off[@]}" >/dev/null && make install "${autotools_off[@]}" >/dev/null)

echo "build-peers: yaf" >&2
(cd "$yaf_src" && PKG_CONFIG_PATH="$prefix/lib/pkgconfig" ./configure --prefix="$prefix" \
    >/dev/null && make -j"$jobs" "${autotools_off[@]}" >/dev/null &&
    make install "${autotools_off[@]}" >/dev/null)

echo "build-peers: ipfixprobe" >&2
build=$ipfixprobe_src/build
mkdir -p "$build"
(cd "$build" && cmake .. -DCMAKE_BUILD_TYPE=Release -DENABLE_INPUT_PCAP=ON \
    -DENABLE_RPMBUILD=OFF -DCMAKE_INSTALL_PREFIX="$prefix/ipfixprobe" \
    -DFETCHCONTENT_SOURCE_DIR_TELEMETRY="$telemetry_src" -DFETCHCONTENT_FULLY_DISCONNECTED=ON \
    >/dev/null && make -j"$jobs" "${autotools_off[@]}" >/dev/null &&
    make install "${autotools_off[@]}" >/dev/null)

echo "build-peers: done:" >&2
ls "$prefix"/bin/yaf "$prefix"/ipfixprobe/bin/ipfixprobe >&2
