#!/bin/sh
# Guest side of `make test-v4l2`: runs inside the QEMU VM (busybox sh) in /pleura, with vivid
# loaded as /dev/video0. Any failing step fails the target.
set -eu
export PLEURA_V4L2_DEVICE=/dev/video0 RUST_BACKTRACE=1

step() { echo; echo "== $*"; }

step "pleura devices"
./pleura devices /dev/video0 | head -n 12

step "capture tests (tests/v4l2_vivid.rs)"
./v4l2_vivid --ignored --test-threads=1

step "pleura run on the vivid stream (board.toml: YUYV 640x480 at 25 fps)"
./pleura run --config board.toml --frames 40 --output /tmp/run.jsonl --summary /tmp/summary.json
grep -q '"frames": 40' /tmp/summary.json
test "$(wc -l < /tmp/run.jsonl)" -eq 40
grep -q '"end": "frame_limit"' /tmp/summary.json

step "pleura calibrate"
./pleura calibrate --config board.toml --frames 10 | tee /tmp/crop.txt
grep -q '^\[crop\]' /tmp/crop.txt

step "pleura record, then replay twice: identical outputs"
./pleura record --config board.toml --frames 20 --out /tmp/rec
./pleura run --pack pack --source replay:/tmp/rec --output /tmp/r1.jsonl
./pleura run --pack pack --source replay:/tmp/rec --output /tmp/r2.jsonl
# Whole records without their timing fields (keys are sorted; latency_ms holds no object):
# decisions, probabilities, smoothing, truth, and the plan in the first record.
untimed() { sed 's/"done_ms":[^,]*,//; s/"latency_ms":{[^}]*},//; s/"t_ms":[^,]*,//' "$1"; }
test "$(wc -l < /tmp/r1.jsonl)" -eq 20
untimed /tmp/r1.jsonl > /tmp/t1
untimed /tmp/r2.jsonl > /tmp/t2
grep -q '"tasks":{' /tmp/t1
head -n 1 /tmp/t1 | grep -q '"plan":{'
cmp /tmp/t1 /tmp/t2
echo "replayed 20 frames twice: identical records (timing fields aside)"

step "an unplugged card is an error naming it"
if ./pleura run --pack pack --source v4l2:/dev/video7 --frames 1 2>/tmp/err.txt; then
    echo "expected a failure"; exit 1
fi
grep -q '/dev/video7' /tmp/err.txt
cat /tmp/err.txt

echo
echo "all V4L2 tests passed"
