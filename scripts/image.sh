#!/usr/bin/env bash
# scripts/image.sh IMAGE - `make image`: the FROM scratch image of Dockerfile.
# scripts/image.sh --assemble DIR - only write the image's files into DIR
#                   (empty or new); tests/integration/t_incluster.sh runs the
#                   operator from such a root.
#
# With a working Docker engine (`docker info` succeeds): docker build -t IMAGE,
# then runs `IMAGE --version` and prints the binary's and the image's sizes.
#
# Without one: checks the same property without an engine. The files the
# Dockerfile COPYs (and nothing else) are assembled into build/image-root,
# and the binary runs there in a chroot as the Dockerfile's USER with its
# ENTRYPOINT and --version (scripts/static-check.sh --root). Prints the
# binary's size, the root directory's size and the size of the root as an
# uncompressed tar (what one image layer would hold).
#
# Only the Dockerfile instructions we use are understood (FROM scratch, COPY
# SRC... DST, USER N:N, ENTRYPOINT [...]); anything else is an error, so the
# fallback cannot silently drift from the Dockerfile.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/build/static/multigres-op
say() { printf 'image: %s\n' "$*"; }
die() { printf 'image: FAIL: %s\n' "$*" >&2; exit 1; }

# assemble ROOT: the files of the Dockerfile's COPY lines, nothing else; checks
# FROM scratch, USER 65532:65532 and ENTRYPOINT ["/multigres-op"].
assemble() {
  local root=$1 line json dst src target user= saw_from=0
  local -a w entry=()
  mkdir -p "$root"
  chmod 755 "$root"
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    read -r -a w <<<"$line" || true
    [ ${#w[@]} -gt 0 ] || continue
    case ${w[0]^^} in
      FROM) [ "${w[1]:-}" = scratch ] || die "Dockerfile: FROM ${w[1]:-?}: the fallback only knows FROM scratch"; saw_from=1 ;;
      COPY)
        [ ${#w[@]} -ge 3 ] || die "Dockerfile: COPY needs SRC... DST"
        dst=${w[-1]}
        for src in "${w[@]:1:${#w[@]}-2}"; do
          case $src in --*) die "Dockerfile: COPY $src: options are not understood by the fallback" ;; esac
          [ -f "$here/$src" ] || die "Dockerfile: COPY $src: no such file"
          case $dst in */) target=$root$dst$(basename "$src") ;; *) target=$root$dst ;; esac
          mkdir -p "$(dirname "$target")"
          cp "$here/$src" "$target"
          # docker keeps the source's mode; root owns the files
          chmod "$(stat -c %a "$here/$src")" "$target"
        done ;;
      USER) user=${w[1]:-} ;;
      ENTRYPOINT)
        json=${line#*ENTRYPOINT}
        mapfile -t entry < <(python3 -c 'import json,sys; [print(a) for a in json.loads(sys.argv[1])]' "$json") ||
          die "Dockerfile: ENTRYPOINT must be a JSON array" ;;
      *) die "Dockerfile: ${w[0]}: not understood by the fallback" ;;
    esac
  done <"$here/Dockerfile"
  [ "$saw_from" = 1 ] || die "Dockerfile has no FROM scratch"
  [ "$user" = 65532:65532 ] || die "Dockerfile USER is '$user', expected 65532:65532"
  [ "${entry[*]:-}" = /multigres-op ] || die "Dockerfile ENTRYPOINT is '${entry[*]:-}', expected [\"/multigres-op\"]"
}

[ -x "$bin" ] || die "$bin missing: run make static"
if [ "${1:-}" = --assemble ]; then
  [ -n "${2:-}" ] || die "usage: scripts/image.sh --assemble DIR"
  assemble "$2"
  exit 0
fi
image=${1:?usage: scripts/image.sh IMAGE | --assemble DIR}
cd "$here"
bsize=$(stat -c %s "$bin")

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  say "docker engine found: docker build -t $image ."
  docker build -t "$image" .
  out=$(docker run --rm "$image" --version) || die "docker run $image --version failed"
  say "$image --version: $out"
  [ "$(docker image inspect -f '{{.Config.User}}' "$image")" = 65532:65532 ] || die "image user is not 65532:65532"
  isize=$(docker image inspect -f '{{.Size}}' "$image")
  say "binary: $bsize bytes ($(( (bsize + 1023) / 1024 )) KiB)"
  say "image $image: $isize bytes ($(( (isize + 1023) / 1024 )) KiB)"
  exit 0
fi

say "no working Docker engine (docker info failed); checking the image's files in a chroot instead"
root=build/image-root
rm -rf "$root"
mkdir -p "$root"
chmod 755 "$root"
assemble "$here/$root"
say "image files:"
(cd "$root" && find . -type f -printf '  /%P %s bytes, mode %m\n' | sort)
scripts/static-check.sh --root "$root" "$bin" --version
dsize=$(find "$root" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
tsize=$(tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . | wc -c)
say "binary: $bsize bytes ($(( (bsize + 1023) / 1024 )) KiB)"
say "image root $root: $dsize bytes in files ($(( (dsize + 1023) / 1024 )) KiB); as a tar layer $tsize bytes ($(( (tsize + 1023) / 1024 )) KiB)"
say "OK: $image would hold only these files and its entrypoint runs as 65532:65532 (checked without a Docker engine)"
