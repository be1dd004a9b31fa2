#!/usr/bin/env bash
# Boot Debian's kernel under QEMU with the vivid virtual V4L2 driver loaded, run a script from a
# payload folder inside the guest, and exit with that script's status.
#
#   tools/v4l2-vm/run.sh --payload DIR --script FILE [--timeout SECONDS] [--mem MiB]
#                        [--vivid-args "n_devs=1 node_types=0x1 ..."] [--smp N]
#                        [--accel tcg|kvm] [--append "KERNEL ARGS"] [--cache DIR]
#
# DIR's contents appear in the guest under /pleura/ (statically linked binaries: the guest has
# only busybox). FILE is a path relative to DIR, or a host file which is copied to
# /pleura/<basename>. The guest runs `sh /pleura/<script>` with cwd /pleura and HOME=/tmp.
#
# Exit status: the guest script's status (from the `PLEURA-VM-EXIT <status>` marker line);
# 124 on timeout (QEMU killed); 2 on usage errors; 1 when the guest ended without the marker.
# The console is streamed to stdout and saved to <cache>/last.log.
set -euo pipefail
shopt -s extglob

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

payload="" script="" timeout=600 mem=1024 smp=1 accel=${V4L2_VM_ACCEL:-tcg}
vivid_args="n_devs=1 node_types=0x1" append="" cache=$repo/target/v4l2-vm

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}
die() { printf 'v4l2-vm: error: %s\n' "$*" >&2; exit 2; }
optarg() { [ $# -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case $1 in
        --payload) optarg "$@"; payload=$2; shift 2 ;;
        --script) optarg "$@"; script=$2; shift 2 ;;
        --timeout) optarg "$@"; timeout=$2; shift 2 ;;
        --mem) optarg "$@"; mem=$2; shift 2 ;;
        --smp) optarg "$@"; smp=$2; shift 2 ;;
        --accel) optarg "$@"; accel=$2; shift 2 ;;
        --vivid-args) optarg "$@"; vivid_args=$2; shift 2 ;;
        --append) optarg "$@"; append=$2; shift 2 ;;
        --cache) optarg "$@"; cache=$2; shift 2 ;;
        -h | --help) usage ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
if [ -z "$payload" ] || [ -z "$script" ]; then usage; fi
[ -d "$payload" ] || die "--payload $payload is not a directory"
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer (seconds)"
[[ $mem =~ ^[0-9]+$ ]] || die "--mem must be an integer (MiB)"
[[ $smp =~ ^[0-9]+$ ]] || die "--smp must be an integer"
case $accel in tcg | kvm) ;; *) die "--accel must be tcg or kvm" ;; esac

# Where the script lives inside the guest.
script_host="" script_guest=""
if [ -f "$payload/$script" ]; then
    script_guest=${script#./}
elif [ -f "$script" ]; then
    script_host=$script
    script_guest=$(basename "$script")
    if [ -e "$payload/$script_guest" ] && ! cmp -s "$script" "$payload/$script_guest"; then
        die "payload already has a different $script_guest"
    fi
else
    die "--script $script: no such file (neither in $payload nor on the host)"
fi

for tool in qemu-system-x86_64:qemu-system-x86 cpio:cpio gzip:gzip; do
    command -v "${tool%%:*}" >/dev/null 2>&1 ||
        die "'${tool%%:*}' not found: install ${tool#*:} (or run: make -f mk/v4l2.mk v4l2-vm-deps)"
done
busybox=${V4L2_VM_BUSYBOX:-}
if [ -z "$busybox" ]; then
    for b in /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
        [ -n "$b" ] && [ -x "$b" ] && { busybox=$b; break; }
    done
fi
[ -n "$busybox" ] || die "busybox not found: install busybox-static"
if LC_ALL=C ldd "$busybox" 2>&1 | grep -q '=>'; then
    die "$busybox is dynamically linked: install busybox-static (or set V4L2_VM_BUSYBOX)"
fi

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
kdir=$("$here/fetch-kernel.sh" "$cache" | tail -n 1)
if [ ! -f "$kdir/vmlinuz" ] || [ ! -f "$kdir/modules.load" ]; then
    die "fetch-kernel.sh gave no usable kernel ($kdir)"
fi
# The uncompressed ELF vmlinux (PVH boot) skips ~4 s of in-guest xz decompression under TCG.
kernel=$kdir/vmlinuz
if [ -f "$kdir/vmlinux" ] && [ -z "${V4L2_VM_BZIMAGE:-}" ]; then kernel=$kdir/vmlinux; fi

t_start=$EPOCHREALTIME
work=$(mktemp -d "$cache/run.XXXXXX")
qpid=""
# shellcheck disable=SC2317 # invoked by trap
cleanup() {
    if [ -n "$qpid" ]; then kill "$qpid" 2>/dev/null || true; fi
    if [ -n "${V4L2_VM_KEEP:-}" ]; then echo "v4l2-vm: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- initramfs -------------------------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,etc,lib/modules,pleura}
cp "$busybox" "$root/bin/busybox"
"$busybox" --list-full | while IFS= read -r applet; do
    [ "$applet" = bin/busybox ] || [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
cp "$kdir"/modules/*.ko "$kdir/modules.load" "$root/lib/modules/"
cp -a "$payload/." "$root/pleura/"
[ -z "$script_host" ] || cp "$script_host" "$root/pleura/$script_guest"

squote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
{
    printf 'VIVID_ARGS=%s\n' "$(squote "$vivid_args")"
    printf 'SCRIPT=%s\n' "$(squote "$script_guest")"
} >"$root/etc/pleura-vm.conf"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# PID 1 of the pleura v4l2 VM (generated by tools/v4l2-vm/run.sh).
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
. /etc/pleura-vm.conf
echo
echo "pleura-vm: init at $(cut -d' ' -f1 /proc/uptime)s"
while read -r mod; do
    args=""
    [ "$mod" = vivid.ko ] && args=$VIVID_ARGS
    # shellcheck disable=SC2086 # args are word-split on purpose
    insmod "/lib/modules/$mod" $args || echo "pleura-vm: insmod $mod $args failed"
done </lib/modules/modules.load
i=0
while [ ! -e /dev/video0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -e /dev/video0 ] || echo "pleura-vm: warning: /dev/video0 did not appear within 10 s"
echo "pleura-vm: kernel $(uname -r)"
for n in /sys/class/video4linux/*/name; do
    [ -e "$n" ] && echo "pleura-vm: $(basename "$(dirname "$n")"): $(cat "$n")"
done
echo "pleura-vm: running /pleura/$SCRIPT at $(cut -d' ' -f1 /proc/uptime)s"
cd /pleura && HOME=/tmp sh "/pleura/$SCRIPT"
status=$?
cd /
echo "PLEURA-VM-EXIT $status"
sleep 0.2 # let the UART drain
poweroff -f
EOF
chmod 755 "$root/init"

initrd=$work/initramfs.cpio.gz
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet | gzip -1) >"$initrd"

# --- boot ------------------------------------------------------------------------------------
cpu=max
[ "$accel" = kvm ] && cpu=host
cmdline="console=ttyS0 quiet panic=-1 mitigations=off $append"
qemu=(qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -m "$mem" -smp "$smp" -nographic -no-reboot
    -net none -kernel "$kernel" -initrd "$initrd" -append "$cmdline")
logf=$cache/last.log
: >"$logf"
fifo=$work/console
mkfifo "$fifo"
t_qemu=$EPOCHREALTIME
"${qemu[@]}" </dev/null >"$fifo" 2>&1 &
qpid=$!

elapsed() { # seconds since $1, one decimal
    local a=${1/./} b=${EPOCHREALTIME/./}
    local d=$(((b - a) / 100000))
    printf '%d.%d' $((d / 10)) $((d % 10))
}
status="" t_script="" timed_out="" buf="" chunk=""
handle() {
    local line=${1//$'\r'/}
    line=${line//$'\e'[\[]*([0-9;?])[a-zA-Z]/} # drop SeaBIOS's terminal escapes
    line=${line//$'\e'[c78=>]/}
    printf '%s\n' "$line"
    printf '%s\n' "$line" >>"$logf"
    case $line in
        "pleura-vm: running "*) t_script=$(elapsed "$t_qemu") ;;
        *PLEURA-VM-EXIT\ *) status=${line##*PLEURA-VM-EXIT } ;;
    esac
}
deadline=$((${t_qemu%.*} + timeout))
while :; do
    if IFS= read -r -t 1 chunk; then
        handle "$buf$chunk"
        buf=""
    else
        rc=$?
        if [ "$rc" -le 128 ]; then # EOF: QEMU is gone
            [ -z "$buf$chunk" ] || handle "$buf$chunk"
            buf=""
            break
        fi
        buf+=$chunk # read timed out: keep the partial line
    fi
    if [ "${EPOCHREALTIME%.*}" -ge "$deadline" ]; then
        timed_out=1
        kill "$qpid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$qpid" 2>/dev/null || true
        break
    fi
done <"$fifo"
qrc=0
wait "$qpid" || qrc=$?
qpid=""

summary="v4l2-vm: qemu ($accel, smp $smp) ran $(elapsed "$t_qemu") s"
[ -z "$t_script" ] || summary+=", boot to script start ${t_script} s"
summary+=", total incl. initramfs $(elapsed "$t_start") s; log: $logf"
if [ -n "$timed_out" ]; then
    [ -z "$buf" ] || handle "$buf"
    echo "v4l2-vm: timeout after $timeout s: QEMU killed; log: $logf" | tee -a "$logf" >&2
    exit 124
fi
echo "$summary" | tee -a "$logf" >&2
if [[ ! $status =~ ^[0-9]+$ ]]; then
    echo "v4l2-vm: error: the guest ended (qemu status $qrc) without a PLEURA-VM-EXIT marker; see $logf" >&2
    exit 1
fi
exit "$status"
