#!/usr/bin/env bash
# Make `debian:bookworm-slim` locally with debootstrap, for machines that cannot reach Docker Hub
# but can reach a Debian mirror. On a normal machine `docker pull` gets the official image and
# this script is not needed; it refuses to replace an image that is already there.
#
#   scripts/make-base-image.sh [--tag debian:bookworm-slim] [--mirror http://deb.debian.org/debian]
set -euo pipefail

tag="debian:bookworm-slim"
mirror="http://deb.debian.org/debian"

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --mirror) mirror="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "make-base-image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "make-base-image.sh: $tag already exists; nothing to do"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    echo "make-base-image.sh: debootstrap is not installed (apt-get install -y debootstrap)" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "make-base-image.sh: debootstrap needs root" >&2
    exit 1
fi

rootfs=$(mktemp -d /tmp/bookworm-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "make-base-image.sh: debootstrap bookworm from $mirror (about 30 s)"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    echo "make-base-image.sh: debootstrap failed (full log: $rootfs.log)" >&2
    exit 1
}
rm -f "$rootfs.log"
# Trim what the official slim image also leaves out: apt lists, caches, docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
# The same apt source the official image carries, so `apt-get update` works inside builds.
cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES

tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase bookworm $mirror" \
    - "$tag" >/dev/null
echo "make-base-image.sh: imported $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
