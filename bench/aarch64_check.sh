#!/usr/bin/env bash
# Does the device install and classify on the Pi's architecture? A Debian Bookworm arm64 root
# (debootstrap) run under qemu-user-static: the device's own install path (a venv with
# `pip install .[litert]`, and a second with `.[tflite]`, numpy<2) classifies the shipped
# samples, and the labels must equal tests/golden/sample_cycles.json (made on x86_64).
# Timings under emulation mean nothing; correctness does. Slow (20–40 min), opt-in, not in CI.
#
#     sudo bench/aarch64_check.sh [ROOT_DIR]      # default /var/tmp/lungedge-arm64
#
# Needs root (debootstrap, chroot, binfmt), the Debian packages debootstrap, qemu-user-static
# and binfmt-support (installed if missing), and the package registries (Debian, PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ROOT=${1:-/var/tmp/lungedge-arm64}
SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}

[ "$(id -u)" = 0 ] || { echo "aarch64_check: run as root (debootstrap and chroot need it)" >&2; exit 2; }
for p in debootstrap qemu-user-static binfmt-support; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="${missing:-} $p"
done
if [ -n "${missing:-}" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
# a container may start without binfmt_misc mounted: the kernel then cannot run arm64 binaries
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
    echo "aarch64_check: the kernel has no qemu-aarch64 binfmt handler (update-binfmts failed)" >&2; exit 2; }

if [ ! -x "$ROOT/usr/bin/python3" ]; then
    echo "== debootstrap $SUITE arm64 into $ROOT"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,libsndfile1,ca-certificates \
        "$SUITE" "$ROOT" "$MIRROR"
fi

echo "== the repository, as a user's clone (tracked files only)"
rm -rf "$ROOT/opt/lungedge-src"
mkdir -p "$ROOT/opt/lungedge-src"
git -C "$REPO" ls-files -z | (cd "$REPO" && xargs -0 cp --parents -t "$ROOT/opt/lungedge-src")
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# the host's CAs, for pip behind a TLS-inspecting proxy (the bundle holds the public CAs too)
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT

echo "== inside: uname, venvs, classify"
chroot "$ROOT" /bin/bash -euo pipefail -c '
cd /opt/lungedge-src
echo "machine: $(uname -m), $(python3 --version)"
for runtime in litert tflite; do
    venv=/opt/venv-$runtime
    [ -x $venv/bin/lungedge ] || {
        python3 -m venv $venv
        $venv/bin/pip install -q --upgrade pip
        $venv/bin/pip install -q ".[flac,$runtime]"
    }
    $venv/bin/python bench/golden_labels.py --name "arm64 $runtime"
done
'
echo "== aarch64 check passed"
