#!/bin/sh
# Installs the Debian cross toolchain of the edge targets (profiles in targets/*.env):
#   rustc-web + cargo-web       Rust 1.96 at /usr/bin/rustc and /usr/bin/cargo (rustup untouched)
#   libstd-rust-web-dev:ARCH    the target's std, after `dpkg --add-architecture ARCH`
#   gcc-*/libc6-dev-*-cross/linux-libc-dev-*-cross
#                               linker, libc, linux headers (bindgen of v4l2-sys-mit reads them)
#   qemu-user-static            runs the ARM binaries here (make cross-check-*)
#   libclang-dev                bindgen
# Usage: tools/cross/setup.sh [aarch64|armv7|all]   (default: all). apt needs root: as another
# user it checks and prints the commands to run.
#
# Fallback for a target's std: when apt cannot offer libstd-rust-web-dev:ARCH at exactly the
# installed rustc-web version (seen here: a stale bookworm-security armhf index on the mirror, so
# only bookworm's 1.85 was offered), the .deb of that version is fetched from the same Debian pool
# directory as rustc-web's own .deb, checked (package, architecture, version) and unpacked into a
# private sysroot, target/cross-sysroot/usr, which tools/cross/env.sh then passes to rustc
# (--sysroot, target crates only). The foreign architecture is removed again if nothing of it got
# installed, so that `apt-get update` keeps working for everyone else.
set -eu
cd "$(dirname "$0")/../.."

case "${1:-all}" in
    aarch64|aarch64-unknown-linux-gnu) targets="aarch64-unknown-linux-gnu" ;;
    armv7|armv7-unknown-linux-gnueabihf) targets="armv7-unknown-linux-gnueabihf" ;;
    all) targets="aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf" ;;
    *) echo "usage: $0 [aarch64|armv7|all]" >&2; exit 2 ;;
esac

installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
is_root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# 1. Host packages: the Rust toolchain, qemu, libclang, and each target's GNU cross C toolchain
#    (Debian's *-cross packages are host-architecture packages: no foreign architecture needed).
pkgs="rustc-web cargo-web qemu-user-static libclang-dev python3"
for t in $targets; do
    . "./targets/$t.env"
    pkgs="$pkgs $APT_PACKAGES"
done
missing=""
for p in $pkgs; do installed "$p" || missing="$missing $p"; done
if [ -n "$missing" ]; then
    if ! is_root; then
        echo "error: missing packages:$missing" >&2
        echo "as root: apt-get update && apt-get install -y --no-install-recommends$missing" >&2
        exit 1
    fi
    apt-get update -qq || echo "warning: apt-get update reported errors (see above); going on" >&2
    apt_install $missing
fi
rust_version=$(dpkg-query -W -f='${Version}' rustc-web)

# 2. Each target's std, at exactly rustc-web's version.
for t in $targets; do
    . "./targets/$t.env"
    std_pkg="libstd-rust-web-dev:$DEB_ARCH"
    private="target/cross-sysroot/usr/lib/rustlib/$TRIPLE/lib"
    if installed "$std_pkg" && [ "$(dpkg-query -W -f='${Version}' "$std_pkg")" = "$rust_version" ]; then
        echo "$TRIPLE: std from $std_pkg $rust_version"
        continue
    fi
    if [ -f "$private/.version" ] && [ "$(cat "$private/.version")" = "$rust_version" ]; then
        echo "$TRIPLE: std from the private sysroot target/cross-sysroot ($rust_version)"
        continue
    fi
    if ! is_root; then
        echo "error: $TRIPLE: no std. As root: dpkg --add-architecture $DEB_ARCH &&" \
            "apt-get update && apt-get install -y $std_pkg=$rust_version" >&2
        exit 1
    fi
    added=""
    if ! dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH"; then
        dpkg --add-architecture "$DEB_ARCH"
        added=yes
    fi
    apt-get update -qq || echo "warning: apt-get update reported errors (see above)" >&2
    candidate=$(apt-cache policy "$std_pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [ "$candidate" = "$rust_version" ]; then
        apt_install "$std_pkg=$rust_version"
        echo "$TRIPLE: std from $std_pkg $rust_version"
        continue
    fi
    echo "warning: apt offers $std_pkg '${candidate:-none}', rustc-web is $rust_version:" \
        "falling back to the pool .deb and a private sysroot" >&2
    if [ -n "$added" ] && [ -z "$(dpkg-query -W -f='${Package}:${Architecture}\n' 2>/dev/null | grep ":$DEB_ARCH\$")" ]; then
        dpkg --remove-architecture "$DEB_ARCH"
        apt-get update -qq || true
    fi
    # rustc-web's own .deb URL names the pool directory of the source package rustc-web.
    uri=$(apt-get download --print-uris "rustc-web=$rust_version" | head -n 1 | cut -d"'" -f2)
    version_in_name=$(echo "$rust_version" | sed 's/^[0-9]*://')
    url="${uri%/*}/libstd-rust-web-dev_${version_in_name}_${DEB_ARCH}.deb"
    mkdir -p target/cross-sysroot/debs
    deb="target/cross-sysroot/debs/${url##*/}"
    if [ ! -f "$deb" ]; then
        curl -fsS -o "$deb.part" "$url"
        mv "$deb.part" "$deb"
    fi
    got="$(dpkg-deb -f "$deb" Package Architecture Version | tr '\n' ' ')"
    [ "$got" = "Package: libstd-rust-web-dev Architecture: $DEB_ARCH Version: $rust_version " ] || {
        echo "error: $deb is '$got'" >&2; rm -f "$deb"; exit 1; }
    rm -rf "target/cross-sysroot/unpack" && dpkg-deb -x "$deb" target/cross-sysroot/unpack
    rm -rf "$private" && mkdir -p "${private%/*}"
    mv "target/cross-sysroot/unpack/usr/lib/rustlib/$TRIPLE/lib" "$private"
    rm -rf target/cross-sysroot/unpack
    echo "$rust_version" > "$private/.version"
    echo "$TRIPLE: std $rust_version unpacked from $url (sha256 $(sha256sum "$deb" | cut -c1-16)...)" \
        "into target/cross-sysroot"
done
echo "cross toolchain: $(/usr/bin/rustc --version); $(/usr/bin/cargo --version); $(qemu-aarch64-static --version | head -n 1)"
