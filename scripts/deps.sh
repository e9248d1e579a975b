#!/usr/bin/env bash
# scripts/deps.sh [glibc|musl|all] -- build multigres-op's third-party
# libraries from Debian's source packages into a cache outside the repo.
#
#   prefix = ${MGOP_CACHE:-$HOME/.cache/multigres-op}/deps/
#            <toolchain>-mbedtls-3.6.6_yaml-0.2.5-<hash>/{include,lib}
#
#   toolchain glibc = gcc (tests, sanitizers), musl = musl-gcc (the shipped
#   static binary). <hash> covers this script, scripts/mbedtls_config.h and
#   the compiler, so editing the config rebuilds.
#
# The prefix path is the LAST line of stdout (for "all": one line per
# toolchain, glibc first, musl last); everything else goes to stderr:
#   DEPS := $(shell scripts/deps.sh glibc | tail -1)
#   include $(DEPS)/flags.mk      # DEPS_CFLAGS, DEPS_LIBS, ...
#
# What it does, once per cache key (later runs only hash two files):
#   - apt-get installs what it needs if missing (build-essential, musl-tools,
#     dpkg-dev, libjsmn-dev); root or sudo is needed only for that;
#   - downloads the source packages mbedtls 3.6.6-0.1~deb13u1 (trixie, the
#     3.6 LTS) and libyaml 0.2.5-1 (bookworm)
#     with `apt-get source --download-only`, using a temporary deb-src list
#     and a private apt state dir under the cache (the system's
#     /etc/apt and /var/lib/apt/lists are not touched), mirroring the Debian
#     mirror the machine already uses; the source files are cached, so later
#     builds need no network;
#   - builds static libmbedcrypto.a, libmbedx509.a, libmbedtls.a with
#     scripts/mbedtls_config.h and libyaml.a, with
#     -O2 -fPIC -ffunction-sections -fdata-sections (so --gc-sections strips);
#   - copies /usr/include/jsmn.h (Debian libjsmn-dev 1.1.0) into the prefix,
#     so the musl build never needs -I/usr/include (glibc headers);
#   - writes $PREFIX/VERSIONS and $PREFIX/flags.mk, checks the result
#     (required symbols, no glibc-only symbols in the musl libs, a smoke
#     link), and publishes the prefix atomically.
#
# Environment: MGOP_CACHE (cache root), MGOP_DEBIAN_MIRROR (override the
# mirror, e.g. a snapshot.debian.org URL), MGOP_DEBIAN_SUITE (libyaml's,
# default bookworm), MGOP_DEBIAN_MBEDTLS_SUITE (default trixie),
# MGOP_DEPS_REBUILD=1 (ignore a finished prefix and rebuild it).
set -Eeuo pipefail
# Unexpected failures: say where (expected ones go through die with a message).
# die exits 3, which a subshell passes up; that was already reported.
trap 'rc=$?; [ "$rc" = 3 ] || printf "deps.sh: error: status %s at line %s: %.160s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2' ERR

# ---- pinned versions ---------------------------------------------------------
MBEDTLS_VERSION=3.6.6
MBEDTLS_DEBVER=3.6.6-0.1~deb13u1
YAML_VERSION=0.2.5
YAML_DEBVER=0.2.5-1
JSMN_VERSION=1.1.0
# sha256 of the pinned .dsc files as published in trixie (mbedtls) and
# bookworm (libyaml). apt checks downloads against the signed Sources index;
# this re-checks the cache.
MBEDTLS_DSC_SHA256=eb9ed1adbbddcb0d00276fac6fcee0056c64ce01481c2522a16dca75792eb5eb
YAML_DSC_SHA256=1edbf86e5cd76937ff62892ba6c2537456d645d834d4cd4a82430b8be7051bf4

# Keep stdout for the prefix path(s) only.
exec 3>&1 1>&2

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/deps.sh
CONFIG_H=$HERE/mbedtls_config.h
CACHE=${MGOP_CACHE:-${HOME:?HOME or MGOP_CACHE must be set}/.cache/multigres-op}
DEPS_DIR=$CACHE/deps
SRC_DIR=$DEPS_DIR/src

log() { printf 'deps.sh: %s\n' "$*" >&2; }
die() { printf 'deps.sh: error: %s\n' "$*" >&2; exit 3; }
usage() { printf 'usage: %s [glibc|musl|all]   (default: glibc)\n' "$0" >&2; }

case "${1:-glibc}" in
  glibc) TOOLCHAINS=(glibc) ;;
  musl) TOOLCHAINS=(musl) ;;
  all) TOOLCHAINS=(glibc musl) ;;
  -h|--help) usage; exit 0 ;;
  *) usage; exit 2 ;;
esac
[ $# -le 1 ] || { usage; exit 2; }
[ -f "$CONFIG_H" ] || die "missing $CONFIG_H"
case "$CACHE" in *[[:space:]]*) die "cache path '$CACHE' contains whitespace; make cannot use it (set MGOP_CACHE)";; esac

JOBS=$(nproc 2>/dev/null || echo 2)

# ---- packages ------------------------------------------------------------------
SUDO=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi
fi

APT_UPDATED=
apt_install() {  # apt_install PKG...
  log "installing Debian packages: $*"
  local cmd=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive
             apt-get install -y -q --no-install-recommends "$@")
  "${cmd[@]}" >&2 && return 0
  [ -z "$APT_UPDATED" ] || die "apt-get install $* failed"
  log "apt-get install failed; running apt-get update and retrying"
  "${SUDO[@]}" apt-get update -q >&2 || die "apt-get update failed (need root or passwordless sudo)"
  APT_UPDATED=1
  "${cmd[@]}" >&2 || die "apt-get install $* failed"
}

# ensure_tools TOOLCHAIN [build]: the compiler always; the rest only to build.
ensure_tools() {
  local tc=$1 build=${2:-} need=()
  command -v gcc >/dev/null 2>&1 || need+=(build-essential)
  if [ "$tc" = musl ]; then command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools); fi
  if [ -n "$build" ]; then
    { command -v make && command -v ar && command -v nm; } >/dev/null 2>&1 || need+=(build-essential)
    command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
    [ -f /usr/include/jsmn.h ] || need+=(libjsmn-dev)
    command -v flock >/dev/null 2>&1 || need+=(util-linux)
  fi
  [ ${#need[@]} -eq 0 ] || apt_install $(printf '%s\n' "${need[@]}" | sort -u)
}

cc_for() { case $1 in glibc) echo gcc ;; musl) echo musl-gcc ;; esac; }

# ---- cache key -----------------------------------------------------------------
prefix_for() {  # prefix_for TOOLCHAIN
  local tc=$1 cc hash
  cc=$(cc_for "$tc")
  hash=$( { cat "$SELF" "$CONFIG_H"; printf '%s\n' "$tc" "$cc" \
              "$("$cc" -dumpfullversion)" "$("$cc" -dumpmachine)"; } \
          | sha256sum | cut -c1-12 )
  echo "$DEPS_DIR/$tc-mbedtls-${MBEDTLS_VERSION}_yaml-${YAML_VERSION}-$hash"
}

# ---- sources -------------------------------------------------------------------
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# find_dsc SRCPKG DEBVER UPSTREAM: the cached .dsc to use (pinned one first).
find_dsc() {
  local pkg=$1 debver=$2 up=$3 f
  if [ -f "$SRC_DIR/${pkg}_${debver}.dsc" ]; then echo "$SRC_DIR/${pkg}_${debver}.dsc"; return; fi
  f=$(ls "$SRC_DIR/${pkg}_${up}"-*.dsc 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$f" ] && echo "$f"
}

# dsc_complete DSC: every file the .dsc lists is in the cache.
dsc_complete() {
  local f
  for f in $(awk '/^Files:/{x=1;next} /^[^ ]/{x=0} x{print $3}' "$1"); do
    [ -s "$SRC_DIR/$f" ] || return 1
  done
}

check_dsc() {  # check_dsc DSC PINNED_NAME PINNED_SHA256
  if [ "$(basename "$1")" = "$2" ]; then
    [ "$(sha256_of "$1")" = "$3" ] || die "$1: sha256 mismatch (corrupt or tampered cache? delete $SRC_DIR)"
  else
    log "warning: pinned $2 unavailable; using $(basename "$1") (checked by apt only)"
  fi
  dsc_complete "$1" || die "$1: files listed in it are missing from $SRC_DIR"
}

# detect_mirror: the Debian archive the machine already uses (deb822 or
# one-line sources alike, via apt's own view), else deb.debian.org.
detect_mirror() {
  if [ -n "${MGOP_DEBIAN_MIRROR:-}" ]; then echo "$MGOP_DEBIAN_MIRROR"; return; fi
  local m
  m=$(apt-get indextargets --format '$(REPO_URI) $(ORIGIN) $(LABEL)' 'Created-By: Packages' 2>/dev/null \
      | awk '$2 == "Debian" && $3 == "Debian" { print $1; exit }' || true)
  echo "${m:-http://deb.debian.org/debian/}"
}

APT_TMP=
cleanup_apt() { [ -z "$APT_TMP" ] || rm -rf "$APT_TMP"; APT_TMP=; }

fetch_sources() {
  local have_m have_y
  have_m=$(find_dsc mbedtls "$MBEDTLS_DEBVER" "$MBEDTLS_VERSION" || true)
  have_y=$(find_dsc libyaml "$YAML_DEBVER" "$YAML_VERSION" || true)
  if [ -n "$have_m" ] && [ -n "$have_y" ] && dsc_complete "$have_m" && dsc_complete "$have_y"; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; cannot download source packages"
  local mirror suite msuite keyring opt
  mirror=$(detect_mirror)
  suite=${MGOP_DEBIAN_SUITE:-bookworm}
  msuite=${MGOP_DEBIAN_MBEDTLS_SUITE:-trixie}
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$keyring" ] || apt_install debian-archive-keyring
  log "downloading source packages from $mirror $suite $msuite (temporary deb-src list)"
  mkdir -p "$SRC_DIR"
  APT_TMP=$(mktemp -d "$DEPS_DIR/.apt.XXXXXX")
  mkdir -p "$APT_TMP/lists/partial" "$APT_TMP/cache/archives/partial" "$APT_TMP/dl"
  # Both suites: an exact version pin picks the suite that has it.
  printf 'deb-src [signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$suite" "$keyring" "$mirror" "$msuite" \
    | sort -u > "$APT_TMP/sources.list"
  # The machine's apt settings (proxies etc.) apply, but its update hooks
  # (docker-clean, appstream, packagekit) are about the system lists, not
  # ours: use a copy of apt.conf.d with them cleared. APT_CONFIG is read
  # before the parts directory, so it can redirect it.
  mkdir -p "$APT_TMP/apt.conf.d"
  cp /etc/apt/apt.conf.d/* "$APT_TMP/apt.conf.d/" 2>/dev/null || true
  printf '#clear APT::Update::Post-Invoke;\n#clear APT::Update::Post-Invoke-Success;\n' \
    > "$APT_TMP/apt.conf.d/zzzz-mgop-no-hooks"
  printf 'Dir::Etc::parts "%s";\n' "$APT_TMP/apt.conf.d" > "$APT_TMP/apt.conf"
  local apt=(env "APT_CONFIG=$APT_TMP/apt.conf" apt-get -q
    -o "Dir::Etc::sourcelist=$APT_TMP/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$APT_TMP/lists" -o "Dir::Cache=$APT_TMP/cache"
    -o APT::Get::List-Cleanup=0 -o Acquire::GzipIndexes=true)
  # apt's _apt sandbox user cannot write into a private (0700) home.
  [ "$(id -u)" != 0 ] || apt+=(-o APT::Sandbox::User=root)
  "${apt[@]}" update >&2 || die "apt-get update of the temporary deb-src list failed ($mirror $suite $msuite)"
  local spec
  for spec in "mbedtls $MBEDTLS_DEBVER $MBEDTLS_VERSION" "libyaml $YAML_DEBVER $YAML_VERSION"; do
    set -- $spec
    if ! (cd "$APT_TMP/dl" && "${apt[@]}" source --download-only "$1=$2" >&2); then
      log "warning: $1=$2 not available from $mirror $suite $msuite; trying the current version"
      (cd "$APT_TMP/dl" && "${apt[@]}" source --download-only "$1" >&2) || die "apt-get source $1 failed"
      ls "$APT_TMP/dl/${1}_${3}"-*.dsc >/dev/null 2>&1 \
        || die "$mirror $suite $msuite no longer has $1 $3 (got: $(cd "$APT_TMP/dl" && ls ${1}_*.dsc)); update the pins in scripts/deps.sh"
    fi
  done
  # Only complete downloads reach the cache.
  mv -f "$APT_TMP/dl/"* "$SRC_DIR/"
  cleanup_apt
}

# ---- build ---------------------------------------------------------------------
REQUIRED_SYMBOLS="mbedtls_platform_set_calloc_free mbedtls_ssl_config_defaults mbedtls_ssl_setup
 mbedtls_ssl_handshake mbedtls_ssl_set_hostname mbedtls_ssl_get_peer_cert
 mbedtls_ssl_tls13_handshake_client_step mbedtls_ssl_tls13_handshake_server_step psa_crypto_init
 mbedtls_ctr_drbg_seed mbedtls_entropy_func mbedtls_x509_crt_parse mbedtls_x509_crt_verify
 mbedtls_x509write_crt_pem mbedtls_x509write_crt_set_serial_raw
 mbedtls_x509write_crt_set_subject_alternative_name mbedtls_x509write_crt_set_ext_key_usage
 mbedtls_pk_parse_key mbedtls_pk_write_key_pem
 mbedtls_ecp_gen_key mbedtls_ecdsa_write_signature mbedtls_rsa_pkcs1_sign mbedtls_asn1_write_len
 mbedtls_base64_encode mbedtls_strerror mbedtls_gcm_crypt_and_tag mbedtls_sha512 mbedtls_sha1
 yaml_parser_initialize yaml_parser_parse yaml_emitter_initialize yaml_get_version_string"

BUILD_TMP=
cleanup_build() { [ -z "$BUILD_TMP" ] || rm -rf "$BUILD_TMP"; BUILD_TMP=; }
trap 'cleanup_apt; cleanup_build' EXIT

build_prefix() {  # build_prefix TOOLCHAIN PREFIX
  local tc=$1 prefix=$2 cc t0 w
  cc=$(cc_for "$tc")
  t0=$(date +%s)
  local dsc_m dsc_y
  dsc_m=$(find_dsc mbedtls "$MBEDTLS_DEBVER" "$MBEDTLS_VERSION") || die "mbedtls source missing"
  dsc_y=$(find_dsc libyaml "$YAML_DEBVER" "$YAML_VERSION") || die "libyaml source missing"
  check_dsc "$dsc_m" "mbedtls_${MBEDTLS_DEBVER}.dsc" "$MBEDTLS_DSC_SHA256"
  check_dsc "$dsc_y" "libyaml_${YAML_DEBVER}.dsc" "$YAML_DSC_SHA256"

  BUILD_TMP=$(mktemp -d "$DEPS_DIR/.build-$tc.XXXXXX")
  w=$BUILD_TMP
  log "building $tc libraries in $w"
  # dpkg-source checks the tarballs against the .dsc and applies Debian's
  # patches (neither package has any for these versions). Its "cannot verify
  # signature" warning is expected: apt verified the .dsc on download.
  dpkg-source -x "$dsc_m" "$w/mbedtls" >&2
  dpkg-source -x "$dsc_y" "$w/yaml" >&2

  local base=(-O2 -fPIC -ffunction-sections -fdata-sections)
  # The glibc prefix serves tests and sanitizers: keep debug info (it does
  # not reach a stripped binary). musl: never any glibc fortify wrappers.
  if [ "$tc" = glibc ]; then base+=(-g); else base+=(-U_FORTIFY_SOURCE); fi

  # -- mbedTLS
  (
    cd "$w/mbedtls"
    # Local patch: use the getrandom() syscall on any Linux libc, not only
    # glibc. Otherwise the musl build reads /dev/urandom, which a FROM
    # scratch image (or an empty chroot) does not have.
    local guard='#if ((defined(__linux__) \&\& defined(__GLIBC__)) || defined(__midipix__))'
    grep -q '^#if ((defined(__linux__) && defined(__GLIBC__)) || defined(__midipix__))$' library/entropy_poll.c \
      || die "entropy_poll.c: getrandom guard not found; revisit the local patch"
    sed -i "s/^${guard}\$/#if (defined(__linux__) || defined(__midipix__)) \/* multigres-op: any libc *\//" library/entropy_poll.c
    grep -q 'multigres-op: any libc' library/entropy_poll.c || die "entropy_poll.c patch failed"

    cp "$CONFIG_H" include/mbedtls/mgop_config.h
    printf '%s\n' \
      '/* multigres-op: mbedTLS was built with mbedtls/mgop_config.h (a copy of' \
      ' * scripts/mbedtls_config.h). This stub makes a translation unit that' \
      ' * forgets -DMBEDTLS_CONFIG_FILE see the same configuration anyway. */' \
      '#include "mgop_config.h"' > include/mbedtls/mbedtls_config.h
    # Make passes CFLAGS through /bin/sh, hence the escaped quotes. Unset the
    # caller's MAKEFLAGS (when run from $(shell) in a Makefile).
    env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
      make -C library -j"$JOBS" CC="$cc" AR=ar \
        CFLAGS="${base[*]} -DMBEDTLS_CONFIG_FILE=\\\"mbedtls/mgop_config.h\\\"" \
        libmbedcrypto.a libmbedx509.a libmbedtls.a >&2 \
      || die "mbedTLS build failed (compiler errors above; check_config.h #errors mean scripts/mbedtls_config.h lacks a prerequisite)"
  )

  # -- libyaml: compile src/*.c directly (no autotools/bootstrap needed)
  (
    cd "$w/yaml"
    mkdir -p obj
    local yflags=("${base[@]}" -Iinclude -Isrc -DYAML_DECLARE_STATIC
      -DYAML_VERSION_MAJOR="${YAML_VERSION%%.*}"
      -DYAML_VERSION_MINOR="$(echo "$YAML_VERSION" | cut -d. -f2)"
      -DYAML_VERSION_PATCH="${YAML_VERSION##*.}"
      "-DYAML_VERSION_STRING=\"$YAML_VERSION\"")
    local f pids=() p
    for f in src/*.c; do
      "$cc" "${yflags[@]}" -c "$f" -o "obj/$(basename "${f%.c}").o" & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || die "libyaml compile failed (errors above)"; done
    ar rcs libyaml.a obj/*.o
  )

  # -- install into a staging prefix
  local st=$w/prefix
  mkdir -p "$st/include/mbedtls" "$st/include/psa" "$st/lib"
  cp "$w"/mbedtls/include/mbedtls/*.h "$st/include/mbedtls/"
  cp "$w"/mbedtls/include/psa/*.h "$st/include/psa/"   # ssl.h and pk.h include psa/crypto.h
  cp "$w"/mbedtls/library/libmbedcrypto.a "$w"/mbedtls/library/libmbedx509.a \
     "$w"/mbedtls/library/libmbedtls.a "$w"/yaml/libyaml.a "$st/lib/"
  cp "$w/yaml/include/yaml.h" "$st/include/"
  cp /usr/include/jsmn.h "$st/include/"
  local jsmn_deb
  jsmn_deb=$(dpkg-query -W -f='${Version}' libjsmn-dev 2>/dev/null || echo unknown)
  case "$jsmn_deb" in "$JSMN_VERSION"-*) ;; *) log "warning: libjsmn-dev is $jsmn_deb, expected $JSMN_VERSION-*";; esac
  grep -q 'JSMN_STRING = 3' "$st/include/jsmn.h" \
    || log "warning: jsmn.h token types are not Debian's enum values (JSMN_STRING = 3); check callers"

  local libs="$prefix/lib/libmbedtls.a $prefix/lib/libmbedx509.a $prefix/lib/libmbedcrypto.a $prefix/lib/libyaml.a"
  local cflags="-isystem $prefix/include -DMBEDTLS_CONFIG_FILE='\"mbedtls/mgop_config.h\"'"
  cat > "$st/flags.mk" <<EOF
# Generated by scripts/deps.sh; do not edit. Toolchain: $tc ($cc).
#   DEPS := \$(shell scripts/deps.sh $tc | tail -1)
#   include \$(DEPS)/flags.mk
# -isystem: our -Wall -Wextra -Werror does not apply to third-party headers,
# and the prefix is searched before /usr/include (which may hold Debian's
# libmbedtls-dev headers with a different config).
# Link order: tls, x509, crypto, yaml. Add -Wl,--gc-sections to drop unused code.
DEPS_TOOLCHAIN := $tc
DEPS_CC := $cc
DEPS_PREFIX := $prefix
DEPS_CFLAGS := $cflags
DEPS_LIBS := $libs
# Toolchain-qualified copies, for a Makefile that includes both prefixes.
DEPS_${tc}_CC := $cc
DEPS_${tc}_PREFIX := $prefix
DEPS_${tc}_CFLAGS := $cflags
DEPS_${tc}_LIBS := $libs
EOF

  cat > "$st/VERSIONS" <<EOF
toolchain=$tc
cc=$cc $("$cc" -dumpfullversion) $("$cc" -dumpmachine)$( [ "$tc" != musl ] || echo " musl-dev $(dpkg-query -W -f='${Version}' musl-dev 2>/dev/null || echo '?')")
mbedtls=$MBEDTLS_VERSION debian-source=$(basename "$dsc_m" .dsc) dsc-sha256=$(sha256_of "$dsc_m")
mbedtls-config=scripts/mbedtls_config.h sha256=$(sha256_of "$CONFIG_H") (installed as include/mbedtls/mgop_config.h)
mbedtls-local-patch=library/entropy_poll.c: getrandom() on any Linux libc (was glibc only)
libyaml=$YAML_VERSION debian-source=$(basename "$dsc_y" .dsc) dsc-sha256=$(sha256_of "$dsc_y")
jsmn=$JSMN_VERSION debian-binary=libjsmn-dev_$jsmn_deb header-sha256=$(sha256_of /usr/include/jsmn.h) (token types are enum values 1..4, not bit flags)
cflags=${base[*]}
deps.sh-sha256=$(sha256_of "$SELF")
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

  verify_prefix "$tc" "$cc" "$st" "$prefix"

  : > "$st/.complete"
  rm -rf "$prefix"
  mv "$st" "$prefix"
  cleanup_build
  log "built $tc prefix in $(( $(date +%s) - t0 ))s: $prefix"
}

verify_prefix() {  # verify_prefix TOOLCHAIN CC STAGE FINAL_PREFIX
  local tc=$1 cc=$2 st=$3 final=$4 s defined missing=() bad
  defined=$(nm -g --defined-only "$st"/lib/*.a 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u)
  for s in $REQUIRED_SYMBOLS; do
    grep -qx "$s" <<<"$defined" || missing+=("$s")
  done
  [ ${#missing[@]} -eq 0 ] || die "$tc libraries lack required symbols (check scripts/mbedtls_config.h): ${missing[*]}"
  if [ "$tc" = musl ]; then
    bad=$(nm -u "$st"/lib/*.a 2>/dev/null | awk '{ print $NF }' \
          | grep -E '^(__[a-z0-9_]+_chk|__isoc99_|__isoc23_|__libc_|__explicit_bzero_chk)' | sort -u || true)
    [ -z "$bad" ] || die "musl libraries reference glibc-only symbols: $(echo $bad)"
  fi
  # Smoke link with the installed headers only (staging path stands in for
  # the final one), and run it.
  local d=$BUILD_TMP/smoke
  mkdir -p "$d"
  cat > "$d/smoke.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/platform.h>
#include <yaml.h>
#include <jsmn.h>
#if !defined(MBEDTLS_PLATFORM_MEMORY) || !defined(MBEDTLS_THREADING_C) || !defined(MBEDTLS_THREADING_PTHREAD)
#error "not multigres-op's mbedTLS configuration"
#endif
static void *smoke_calloc(size_t n, size_t size) { return calloc(n, size); }
int main(void) {
    mbedtls_ssl_config conf; yaml_parser_t p; jsmn_parser j;
    mbedtls_platform_set_calloc_free(smoke_calloc, free);
    mbedtls_ssl_config_init(&conf);
    if (mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT) != 0) return 1;
    if (!yaml_parser_initialize(&p)) return 1;
    yaml_parser_delete(&p);
    jsmn_init(&j);
    mbedtls_ssl_config_free(&conf);
    printf("smoke mbedtls %s yaml %s\n", MBEDTLS_VERSION_STRING, yaml_get_version_string());
    return 0;
}
EOF
  local static=() out
  [ "$tc" != musl ] || static=(-static)
  "$cc" "${static[@]}" -O2 -Wall -Wextra -Werror -isystem "$st/include" \
      '-DMBEDTLS_CONFIG_FILE="mbedtls/mgop_config.h"' -Wl,--gc-sections \
      -o "$d/smoke" "$d/smoke.c" \
      "$st/lib/libmbedtls.a" "$st/lib/libmbedx509.a" "$st/lib/libmbedcrypto.a" "$st/lib/libyaml.a" -pthread >&2 \
    || die "$tc smoke link failed"
  out=$("$d/smoke") || die "$tc smoke binary failed"
  [ "$out" = "smoke mbedtls $MBEDTLS_VERSION yaml $YAML_VERSION" ] || die "$tc smoke binary printed '$out'"
  : "$final"
}

# ---- main ----------------------------------------------------------------------
for tc in "${TOOLCHAINS[@]}"; do
  ensure_tools "$tc"
  prefix=$(prefix_for "$tc")
  if [ -f "$prefix/.complete" ] && [ -z "${MGOP_DEPS_REBUILD:-}" ]; then
    printf '%s\n' "$prefix" >&3
    continue
  fi
  ensure_tools "$tc" build
  mkdir -p "$DEPS_DIR"
  exec 9>"$DEPS_DIR/.lock"
  flock 9 || die "cannot lock $DEPS_DIR/.lock"
  # Another run may have finished it while we waited for the lock.
  if [ ! -f "$prefix/.complete" ] || [ -n "${MGOP_DEPS_REBUILD:-}" ]; then
    fetch_sources
    build_prefix "$tc" "$prefix"
  fi
  exec 9>&-
  printf '%s\n' "$prefix" >&3
done
