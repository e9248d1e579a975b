#!/usr/bin/env bash
# scripts/static-check.sh [--root DIR] BINARY [ARGS...]
#
# Checks that BINARY is what we ship FROM scratch (DESIGN.md section 7):
#   a) `file` says "statically linked", not "dynamically linked" and not
#      "static-pie"; the ELF has no PT_INTERP and no PT_DYNAMIC;
#   b) it runs in an empty root: a temp dir holding only /multigres-op (plus
#      the image's one-line /etc/passwd and /etc/group from image/etc/, for
#      the numeric user), chroot'ed into as uid:gid 65532:65532 with an empty
#      environment, with ARGS (default: --version); it must exit 0, and with
#      --version print a line holding a version number (N.N or a git hash);
#      with --root DIR, DIR is that root as given (it must hold
#      /multigres-op; scripts/image.sh assembles it from the Dockerfile) and
#      is left in place;
#   c) prints the size in bytes.
# Needs root for chroot; otherwise tries `unshare -r` (user namespaces).
# Exits non-zero with a message on the first failure.
set -euo pipefail

die() { printf 'static-check: FAIL: %s\n' "$*" >&2; exit 1; }
say() { printf 'static-check: %s\n' "$*"; }

given_root=
if [ "${1:-}" = --root ]; then
  [ $# -ge 2 ] || { echo "usage: $0 [--root DIR] BINARY [ARGS...]" >&2; exit 2; }
  given_root=$2; shift 2
fi
[ $# -ge 1 ] || { echo "usage: $0 [--root DIR] BINARY [ARGS...]   (default ARGS: --version)" >&2; exit 2; }
bin=$1; shift
[ $# -gt 0 ] || set -- --version
[ -f "$bin" ] || die "$bin: no such file"
[ -x "$bin" ] || die "$bin: not executable"

SUDO=()
[ "$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || SUDO=(sudo -n)
need_pkg() {  # need_pkg COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  printf 'static-check: installing %s\n' "$2" >&2
  { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" \
    || { "${SUDO[@]}" apt-get update -q && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -q --no-install-recommends "$2"; }; } >&2 \
    || die "'$1' is missing and apt-get install $2 failed"
}
need_pkg file file
need_pkg readelf binutils

# ---- (a) static, not static-pie --------------------------------------------------
desc=$(file -b "$bin")
say "file: $desc"
case "$desc" in ELF*) ;; *) die "$bin is not an ELF file" ;; esac
case "$desc" in *static-pie*) die "$bin is static-pie; link with -static (not -static-pie) and -no-pie if the compiler defaults to PIE" ;; esac
case "$desc" in *dynamically\ linked*) die "$bin is dynamically linked; link with musl-gcc -static" ;; esac
case "$desc" in *statically\ linked*) ;; *) die "file does not report 'statically linked'" ;; esac
phdrs=$(LC_ALL=C readelf -lW "$bin")
grep -qE '^[[:space:]]+INTERP[[:space:]]' <<<"$phdrs" && die "$bin has a PT_INTERP (program interpreter)"
grep -qE '^[[:space:]]+DYNAMIC[[:space:]]' <<<"$phdrs" && die "$bin has a PT_DYNAMIC segment"
type=$(LC_ALL=C readelf -hW "$bin" | awk -F: '/^ *Type:/ { sub(/^[ \t]+/, "", $2); print $2 }')
case "$type" in EXEC*) ;; *) die "ELF type is '$type', expected EXEC (a non-PIE static executable)" ;; esac

# ---- (b) run in an empty root -------------------------------------------------
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$given_root" ]; then
  root=$(cd "$given_root" && pwd)
  [ -x "$root/multigres-op" ] || die "$root/multigres-op: missing or not executable"
  cmp -s "$bin" "$root/multigres-op" || die "$root/multigres-op differs from $bin"
  say "running in $root as 65532:65532: /multigres-op $*"
else
  root=$(mktemp -d "${TMPDIR:-/tmp}/static-check.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  chmod 755 "$root"
  mkdir -p "$root/etc"
  cp "$bin" "$root/multigres-op"
  chmod 755 "$root/multigres-op"
  # the image's user database (Dockerfile: COPY image/etc/passwd image/etc/group /etc/)
  install -m 644 "$here/image/etc/passwd" "$root/etc/passwd"
  install -m 644 "$here/image/etc/group" "$root/etc/group"
  say "running in an empty root as 65532:65532: /multigres-op $*"
fi

# Absolute paths: env -i below clears PATH.
chroot_cmd=$(command -v chroot || true)
[ -n "$chroot_cmd" ] || die "chroot not found (coreutils)"
if [ "$(id -u)" = 0 ]; then
  run=("$chroot_cmd" --userspec=65532:65532 "$root" /multigres-op "$@")
elif command -v unshare >/dev/null 2>&1 && unshare -r true 2>/dev/null; then
  # Unprivileged: we are "root" in a user namespace mapped to our own uid.
  run=("$(command -v unshare)" -r "$chroot_cmd" "$root" /multigres-op "$@")
else
  die "chroot needs root (or unprivileged user namespaces for unshare -r)"
fi
set +e
errf=$(mktemp "${TMPDIR:-/tmp}/static-check-err.XXXXXX")
out=$(cd / && timeout 20 env -i "${run[@]}" 2>"$errf")
rc=$?
set -e
err=$(cat "$errf" 2>/dev/null || true); rm -f "$errf"
[ -z "$out" ] || printf '  stdout: %s\n' "$out" | sed -n 1,5p
[ -z "$err" ] || printf '  stderr: %s\n' "$err" | sed -n 1,5p
[ "$rc" -ne 124 ] || die "timed out after 20s in the empty root"
[ "$rc" -eq 0 ] || die "exit status $rc in the empty root"
if [ "$*" = --version ]; then
  first=${out%%$'\n'*}
  [ -n "$first" ] || die "--version printed nothing on stdout (expected a version line)"
  grep -qE '[0-9]+\.[0-9]+|[0-9a-f]{7,}' <<<"$first" || die "--version line '$first' has no version number"
fi

# ---- (c) size ------------------------------------------------------------------
size=$(stat -c %s "$bin")
say "size: $size bytes ($(( (size + 1023) / 1024 )) KiB)"
say "OK: $bin is static and runs in an empty root"
