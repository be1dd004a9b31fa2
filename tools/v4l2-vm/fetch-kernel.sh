#!/usr/bin/env bash
# Fetch Debian bookworm's amd64 kernel (no root-needed installation) and extract what a QEMU
# guest needs to load the vivid virtual V4L2 driver: vmlinuz, vivid.ko and every module it
# depends on (resolved recursively with `modinfo -F depends`), plus an ordered load list.
#
#   tools/v4l2-vm/fetch-kernel.sh [CACHE_DIR]      (default CACHE_DIR: <repo>/target/v4l2-vm)
#
# Prints the kernel directory on stdout (last line); progress goes to stderr. The result is
# cached under CACHE_DIR/kernels/<kernel-release>_<package-version>/ and reused when present.
#
# Environment:
#   V4L2_VM_KERNEL_PKG  pin the package (e.g. linux-image-6.1.0-56-amd64) instead of resolving
#                       linux-image-amd64's dependency with apt-cache
#   V4L2_VM_MODULES     top-level modules to extract (default: vivid); their deps are added
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:-$repo/target/v4l2-vm}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
kernels=$cache/kernels
mkdir -p "$kernels"
read -r -a want_modules <<<"${V4L2_VM_MODULES:-vivid}"
key="v3 modules=${want_modules[*]}" # cache entry format + content

log() { printf 'fetch-kernel: %s\n' "$*" >&2; }
die() { printf 'fetch-kernel: error: %s\n' "$*" >&2; exit 1; }

# Newest complete cache entry (fallback when apt cannot tell us the current version).
newest_cached() {
    find "$kernels" -mindepth 2 -maxdepth 2 -name ready -printf '%h\n' | sort -V | tail -n 1
}

# apt-cache, retried: it fails transiently while another process runs `apt-get update`.
apt_cache() {
    local i
    for i in 1 2 3; do
        if apt-cache "$@" 2>/dev/null; then return 0; fi
        [ "$i" = 3 ] || sleep 2
    done
    return 1
}

need_tool() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install $2 (apt-get install -y $2, or: make -f mk/v4l2.mk v4l2-vm-deps)"
}

# 0. Fast path: apt-cache takes a few seconds, so a resolution younger than a day is reused
#    (V4L2_VM_REFRESH=1 forces a fresh look-up).
resolved=$cache/resolved
if [ -z "${V4L2_VM_REFRESH:-}" ] && [ -z "${V4L2_VM_KERNEL_PKG:-}" ] &&
    [ -n "$(find "$resolved" -mmin -1440 2>/dev/null)" ]; then
    dir=$(cat "$resolved")
    if [ -f "$dir/ready" ] && [ "$(cat "$dir/ready")" = "$key" ]; then
        log "cached: $dir (resolved < 1 day ago; V4L2_VM_REFRESH=1 re-checks apt)"
        printf '%s\n' "$dir"
        exit 0
    fi
fi

# 1. Which package? linux-image-amd64 -> linux-image-6.1.0-NN-amd64.
pkg=${V4L2_VM_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
    if command -v apt-cache >/dev/null 2>&1; then
        pkg=$({ apt_cache depends linux-image-amd64 || true; } |
            sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1 || true)
    fi
    if [ -z "$pkg" ]; then
        cached=$(newest_cached)
        if [ -n "$cached" ]; then
            log "apt-cache cannot resolve linux-image-amd64; reusing cached $(basename "$cached")"
            printf '%s\n' "$cached"
            exit 0
        fi
        die "cannot resolve linux-image-amd64 with apt-cache. This needs a Debian/Ubuntu host with apt and the Debian bookworm 'main' (and bookworm-security) sources configured (run 'apt-get update'), or set V4L2_VM_KERNEL_PKG=linux-image-6.1.0-NN-amd64"
    fi
fi
pkgver=$({ apt_cache policy "$pkg" || true; } | sed -n 's/^ *Candidate: //p' | head -n 1)
if [ -z "$pkgver" ] || [ "$pkgver" = "(none)" ]; then
    cached=$(find "$kernels" -mindepth 1 -maxdepth 1 -name "${pkg#linux-image-}_*" -printf '%p\n' | sort -V | tail -n 1)
    if [ -n "$cached" ] && [ -f "$cached/ready" ]; then
        log "no apt candidate for $pkg; reusing cached $(basename "$cached")"
        printf '%s\n' "$cached"
        exit 0
    fi
    die "apt knows no candidate for $pkg (run 'apt-get update' with Debian bookworm sources)"
fi
kver=${pkg#linux-image-}
dir=$kernels/${kver}_$pkgver
if [ -f "$dir/ready" ] && [ "$(cat "$dir/ready")" = "$key" ]; then
    log "cached: $dir"
    [ -n "${V4L2_VM_KERNEL_PKG:-}" ] || printf '%s\n' "$dir" >"$resolved"
    printf '%s\n' "$dir"
    exit 0
fi

# 2. Download and unpack (dpkg-deb -x: no installation, no root).
need_tool apt-get apt
need_tool dpkg-deb dpkg
need_tool modinfo kmod
work=$(mktemp -d "$cache/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "downloading $pkg ($pkgver)"
download() { (cd "$work" && apt-get download -q "$pkg=$pkgver" >&2 2>"$work/apt.err"); }
if ! download; then
    cat "$work/apt.err" >&2 || true
    if [ "$(id -u)" = 0 ]; then
        log "download failed; running apt-get update and retrying"
        apt-get update -qq >&2
        download || { cat "$work/apt.err" >&2; die "apt-get download $pkg=$pkgver failed"; }
    else
        die "apt-get download $pkg=$pkgver failed (stale package lists? run 'apt-get update' as root)"
    fi
fi
deb=$(find "$work" -maxdepth 1 -name '*.deb' | head -n 1)
[ -n "$deb" ] || die "apt-get download produced no .deb"
log "extracting $(basename "$deb")"
dpkg-deb -x "$deb" "$work/root"
moddir=$work/root/lib/modules/$kver
[ -d "$moddir" ] || die "package has no lib/modules/$kver"
vmlinuz=$work/root/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "package has no boot/vmlinuz-$kver"

# 3. Resolve dependencies: module name (with _ and - equivalent) -> file.
declare -A path_of=() builtin=() state=()
while IFS= read -r f; do
    b=$(basename "$f")
    b=${b%%.ko*}
    path_of[${b//-/_}]=$f
done < <(find "$moddir" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
if [ -f "$moddir/modules.builtin" ]; then
    while IFS= read -r f; do
        b=$(basename "$f")
        builtin[${b%%.ko*}]=1
        builtin[$(tr - _ <<<"${b%%.ko*}")]=1
    done <"$moddir/modules.builtin"
fi

order=()
visit() { # depth-first, post-order: dependencies before dependants
    local name=${1//-/_} f deps d
    [ -n "$name" ] || return 0
    case ${state[$name]:-} in
        done) return 0 ;;
        active) die "dependency cycle at $name" ;;
    esac
    if [ -z "${path_of[$name]:-}" ]; then
        [ -n "${builtin[$name]:-}" ] && { state[$name]="done"; return 0; }
        die "module $name not found in $pkg"
    fi
    state[$name]=active
    f=${path_of[$name]}
    deps=$(modinfo -F depends "$f")
    # softdeps ("pre: a b post: c"): load the pre ones first as well
    deps="$deps,$(modinfo -F softdep "$f" | sed -n 's/.*pre: *\([^:]*\)\( post:.*\)\{0,1\}$/\1/p' | tr ' ' ',')"
    IFS=, read -r -a dl <<<"$deps"
    for d in "${dl[@]}"; do
        [ -n "$d" ] && visit "$d"
    done
    state[$name]="done"
    order+=("$name")
}
for m in "${want_modules[@]}"; do visit "$m"; done

# 4. Install into the cache: decompressed .ko files + load list.
stage=$work/out
mkdir -p "$stage/modules"
cp "$vmlinuz" "$stage/vmlinuz"
cp "$work/root/boot/config-$kver" "$stage/config" 2>/dev/null || true
# An uncompressed ELF vmlinux boots through QEMU's PVH entry (CONFIG_PVH=y), skipping the
# bzImage's self-decompression, which takes ~4 s under TCG. Find the payload like the kernel's
# scripts/extract-vmlinux does.
extract_vmlinux() {
    local magic cmd off
    for pair in $'\xfd7zXZ:xz -dc' $'\x28\xb5\x2f\xfd:zstd -qdc' $'\x1f\x8b\x08:gzip -dc'; do
        magic=${pair%%:*} cmd=${pair#*:}
        command -v "${cmd%% *}" >/dev/null 2>&1 || continue
        for off in $(LC_ALL=C grep -abo "$magic" "$vmlinuz" | cut -d: -f1 | head -n 5); do
            # shellcheck disable=SC2086 # $cmd is a command and its flags
            tail -c +$((off + 1)) "$vmlinuz" | $cmd >"$stage/vmlinux" 2>/dev/null || true
            if [ "$(head -c 4 "$stage/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then
                return 0
            fi
        done
    done
    rm -f "$stage/vmlinux"
    return 1
}
extract_vmlinux || log "warning: could not extract an ELF vmlinux; run.sh will boot the slower bzImage"
: >"$stage/modules.load"
for name in "${order[@]}"; do
    f=${path_of[$name]}
    base=$(basename "$f")
    out=$stage/modules/${base%%.ko*}.ko
    case $f in
        *.ko.xz) xz -dc "$f" >"$out" ;;
        *.ko.zst) zstd -qdc "$f" >"$out" ;;
        *.ko.gz) gzip -dc "$f" >"$out" ;;
        *) cp "$f" "$out" ;;
    esac
    printf '%s\n' "${base%%.ko*}.ko" >>"$stage/modules.load"
done
printf '%s\n' "$kver" >"$stage/kernel.release"
printf '%s %s\n' "$pkg" "$pkgver" >"$stage/package"
printf '%s\n' "$key" >"$stage/ready"
rm -rf "$dir"
mv "$stage" "$dir"
[ -n "${V4L2_VM_KERNEL_PKG:-}" ] || printf '%s\n' "$dir" >"$resolved"
log "kernel $kver ($pkgver): $(wc -l <"$dir/modules.load") modules: $(tr '\n' ' ' <"$dir/modules.load")"
printf '%s\n' "$dir"
