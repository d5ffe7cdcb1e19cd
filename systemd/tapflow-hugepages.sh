#!/bin/sh
# Makes sure enough hugepages are reserved and hugetlbfs is mounted before tapflow starts
# (run by tapflow.service as ExecStartPre=+, i.e. as root outside the service sandbox).
#
# It only ever raises the reservation, never lowers or clears it, so it cannot take pages
# from another DPDK process or from a tapflow restarting after a crash.
#
# TAPFLOW_HUGEPAGES_MB: memory to reserve, MB of the default hugepage size (default 2048,
# matching [dpdk] memory_mb = 1024 with room for DPDK's own tables). 0 skips everything,
# for configurations with [dpdk] hugepages = false. Set it with a drop-in:
#     systemctl edit tapflow    ->    [Service]
#                                     Environment=TAPFLOW_HUGEPAGES_MB=4096
# TAPFLOW_HUGEPAGES_DIR: the hugetlbfs mount point DPDK uses (default /dev/hugepages).
# TAPFLOW_MEMINFO, TAPFLOW_HUGEPAGES_SYSFS, TAPFLOW_MOUNTS: where the kernel's files are
# (tests point them at fakes).
set -eu

want_mb="${TAPFLOW_HUGEPAGES_MB:-2048}"
mount_point="${TAPFLOW_HUGEPAGES_DIR:-/dev/hugepages}"
meminfo="${TAPFLOW_MEMINFO:-/proc/meminfo}"
sysfs="${TAPFLOW_HUGEPAGES_SYSFS:-/sys/kernel/mm/hugepages}"
mounts="${TAPFLOW_MOUNTS:-/proc/mounts}"

case "$want_mb" in
    ''|*[!0-9]*) echo "tapflow-hugepages: TAPFLOW_HUGEPAGES_MB=$want_mb is not a number of MB" >&2; exit 1 ;;
esac
if [ "$want_mb" -eq 0 ]; then
    exit 0
fi

page_kb=$(awk '/^Hugepagesize:/ { print $2 }' "$meminfo")
if [ -z "$page_kb" ]; then
    echo "tapflow-hugepages: this kernel has no hugepage support (no Hugepagesize in /proc/meminfo)" >&2
    exit 1
fi
nr_file="$sysfs/hugepages-${page_kb}kB/nr_hugepages"
want_pages=$(( (want_mb * 1024 + page_kb - 1) / page_kb ))
have_pages=$(cat "$nr_file")

if [ "$have_pages" -lt "$want_pages" ]; then
    echo "$want_pages" > "$nr_file"
    have_pages=$(cat "$nr_file")
    if [ "$have_pages" -lt "$want_pages" ]; then
        # The kernel reserves what it can find contiguous; memory is too fragmented or short.
        echo "tapflow-hugepages: wanted $want_pages pages of ${page_kb} kB, the kernel reserved $have_pages;" \
             "reserve them at boot (kernel command line hugepages=$want_pages) or lower TAPFLOW_HUGEPAGES_MB" >&2
        exit 1
    fi
    echo "tapflow-hugepages: reserved $have_pages pages of ${page_kb} kB"
fi

if ! awk -v dir="$mount_point" '$2 == dir && $3 == "hugetlbfs" { found = 1 } END { exit !found }' "$mounts"; then
    mkdir -p "$mount_point"
    mount -t hugetlbfs -o "pagesize=${page_kb}K" nodev "$mount_point"
    echo "tapflow-hugepages: mounted hugetlbfs on $mount_point"
fi
