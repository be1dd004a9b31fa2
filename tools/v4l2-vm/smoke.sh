#!/bin/sh
# Guest side of `make vm-smoke` (runs inside the VM as `sh /pleura/smoke.sh`, busybox sh).
set -e
echo "== /dev/video*"
ls -l /dev/video*
echo "== /sys/class/video4linux/video0/name: $(cat /sys/class/video4linux/video0/name)"
status=0
./smoke /dev/video0 || status=$?
echo "== kernel messages from vivid"
dmesg | grep -i vivid || true
exit "$status"
