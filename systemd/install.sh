#!/usr/bin/env bash
# Install (or uninstall) lungedge as a systemd service. Idempotent: running it again with the
# same source changes nothing, and an existing /etc/lungedge/lungedge.yaml is never overwritten.
#
#   sudo systemd/install.sh                       # install, enable, start
#   sudo systemd/install.sh --runtime tflite      # tflite-runtime (numpy<2) instead of LiteRT
#   sudo systemd/install.sh --uninstall [--purge] # remove (--purge: also config and spool)
#   systemd/install.sh --root /tmp/r --no-start   # into a directory tree (tests, images)
set -euo pipefail
shopt -s nullglob

ROOT=""
PREFIX=/opt/lungedge
RUNTIME=litert
START=1
ACTION=install
PURGE=0
PYTHON=${PYTHON:-python3}
SRC=$(cd "$(dirname "$0")/.." && pwd)

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2%/}; shift 2 ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --runtime) RUNTIME=$2; shift 2 ;;
        --no-start) START=0; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
    esac
done
case "$RUNTIME" in
    litert) EXTRA=litert ;;
    tflite) EXTRA=tflite ;;  # tflite-runtime 2.14 needs numpy<2; the extra pins it
    *) echo "install.sh: --runtime is litert or tflite, not $RUNTIME" >&2; exit 2 ;;
esac
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo), or give --root DIR to install into a directory" >&2
    exit 2
fi

UNIT=$ROOT/etc/systemd/system/lungedge.service
CONF=$ROOT/etc/lungedge/lungedge.yaml
STATE=$ROOT/var/lib/lungedge
DEST=$ROOT$PREFIX
systemd_live() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

if [ "$ACTION" = uninstall ]; then
    if systemd_live; then systemctl disable --now lungedge.service 2>/dev/null || true; fi
    rm -f "$UNIT"
    rm -rf "$DEST"
    if [ "$PURGE" = 1 ]; then rm -rf "$ROOT/etc/lungedge" "$STATE"; fi
    if systemd_live; then systemctl daemon-reload; fi
    echo "lungedge removed$([ "$PURGE" = 1 ] && echo ', with its config and spool' || echo \
        "; config kept in /etc/lungedge and spool in /var/lib/lungedge (--purge removes them)")"
    exit 0
fi

# 1. The system user the service runs as (audio/dialout come from the unit's groups).
if [ -z "$ROOT" ] && ! id lungedge >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/lungedge --shell /usr/sbin/nologin \
        lungedge
fi

# 2. The program, in its own virtual environment; rebuilt only when the source changed.
stamp="$RUNTIME $(cd "$SRC" && cat setup.cfg pyproject.toml $(git ls-files edge firmware_bridge \
    2>/dev/null || find edge firmware_bridge -name '*.py' -o -name '*.json' -o -name '*.yaml' \
    | sort) | sha256sum | cut -c1-16)"
if [ "$(cat "$DEST/.installed" 2>/dev/null)" != "$stamp" ]; then
    echo "installing lungedge ($RUNTIME) into $PREFIX/venv"
    mkdir -p "$DEST"
    [ -x "$DEST/venv/bin/python" ] || "$PYTHON" -m venv "$DEST/venv"
    "$DEST/venv/bin/pip" install -q --upgrade pip
    "$DEST/venv/bin/pip" install -q "$SRC[flac,$EXTRA]"
    echo "$stamp" > "$DEST/.installed"
fi

# 3. Models and docs the service reads.
mkdir -p "$DEST/models"
for model in "$SRC"/models/*/manifest.json; do
    dir=$(dirname "$model")
    name=$(basename "$dir")
    if ! diff -rq "$dir" "$DEST/models/$name" >/dev/null 2>&1; then
        rm -rf "$DEST/models/$name"
        cp -r "$dir" "$DEST/models/$name"
    fi
done
cmp -s "$SRC/README.md" "$DEST/README.md" || cp "$SRC/README.md" "$DEST/README.md"

# 4. The config, only if there is none: a user's config is theirs.
if [ ! -e "$CONF" ]; then
    mkdir -p "$(dirname "$CONF")"
    device=$(hostname 2>/dev/null | tr -c 'A-Za-z0-9_.\n-' '-' || echo lungedge-1)
    sed -e "s|^device_id: .*|device_id: ${device:-lungedge-1}|" \
        -e "s|/opt/lungedge/|$PREFIX/|" "$SRC/edge/lungedge.example.yaml" > "$CONF"
    chmod 0640 "$CONF"
    if [ -z "$ROOT" ]; then chgrp lungedge "$CONF"; fi
    echo "wrote $CONF from the template: set source: and mqtt: for this device"
fi
mkdir -p "$STATE"

# 5. The unit, pointing at this prefix.
mkdir -p "$(dirname "$UNIT")"
unit=$(sed "s|/opt/lungedge/|$PREFIX/|g" "$SRC/systemd/lungedge.service")
if [ "$(cat "$UNIT" 2>/dev/null)" != "$unit" ]; then
    printf '%s\n' "$unit" > "$UNIT"
    chmod 0644 "$UNIT"
fi

if systemd_live; then
    systemctl daemon-reload
    if [ "$START" = 1 ]; then
        "$DEST/venv/bin/lungedge" check-config /etc/lungedge/lungedge.yaml
        systemctl enable --now lungedge.service
    else
        systemctl enable lungedge.service
    fi
fi
echo "lungedge installed in $PREFIX.
  config:  /etc/lungedge/lungedge.yaml   (lungedge check-config /etc/lungedge/lungedge.yaml)
  inputs:  $PREFIX/venv/bin/lungedge devices
  logs:    journalctl -u lungedge -f
  status:  systemctl status lungedge   (reload config: systemctl reload lungedge)"
