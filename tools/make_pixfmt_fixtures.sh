#!/usr/bin/env bash
# Regenerates the golden fixtures of tests/pixfmt.rs in tests/data/pixfmt/.
#
# Needs ffmpeg and python3 (standard library only). Run from anywhere:
#   tools/make_pixfmt_fixtures.sh
#
# 1. python3 writes source.ppm: a 75x48 (odd width) ultrasound-like frame — a sector of
#    speckle with a bright pleural line, A-lines, a B-line — plus a small colour-Doppler patch,
#    so that the RGB/BGR luma weights are exercised too. Deterministic (fixed seed).
# 2. ffmpeg turns it into one raw frame per capture format (<name>.raw) and one MJPEG frame.
# 3. ffmpeg converts each of those raw frames (not the source) to `gray`: <name>.gray is the
#    expected output of pleura's converter for <name>.raw.
#
# ffmpeg's convention (checked with ffmpeg 5.1): swscale treats `gray` as FULL range and the
# planar/packed YUV formats (yuyv422, uyvy422, nv12, yuv420p) as LIMITED (tv) range, so a plain
# `-pix_fmt gray` conversion already expands Y 16..235 to 0..255 — the same as pleura's
# YuvRange::Limited. The explicit `scale=in_range=tv:out_range=pc` below only states it.
# RGB/BGR -> gray is BT.601 luma at full range. The MJPEG frame is yuvj422p (JPEG, full range):
# its gray is the decoded Y plane as is.
#
# The MJPEG frame is encoded with `-huffman default` (the standard tables of ISO/IEC 10918-1
# Annex K.3; ffmpeg's default is per-frame optimal tables), so that mjpeg_nodht.jpg — the same
# file with its DHT segments removed, as many USB cameras send it — decodes to the same pixels
# once the standard tables are put back.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/tests/data/pixfmt"
mkdir -p "$out"
cd "$out"

W=75
H=48
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }

python3 - "$W" "$H" <<'EOF'
import math, random, sys
w, h = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(20240607)
px = bytearray()
cx = (w - 1) / 2
for y in range(h):
    for x in range(w):
        # sector: apex above the top centre, +-35 degrees
        dx, dy = x - cx, y + 6.0
        r = math.hypot(dx, dy)
        ang = math.degrees(math.atan2(dx, dy))
        inside = abs(ang) < 35 and r < h + 4
        g = 0.0
        if inside:
            atten = math.exp(-y / 60.0)
            g = rng.gauss(70, 35) * atten                       # speckle
            if abs(r - 18) < 1.2: g += 170                     # pleural line
            for k in (30, 42):                                 # A-lines (reverberations)
                if abs(r - k) < 0.9: g += 90 * atten
            if abs(dx - 9) < 1.3 and r > 18: g += 120 * atten   # B-line
        g = max(0, min(255, int(round(g))))
        r_, g_, b_ = g, g, g
        # colour-Doppler patch: red towards, blue away
        if 44 <= x < 56 and 24 <= y < 34:
            if x < 50:
                r_, g_, b_ = min(255, 160 + g // 2), 40 + g // 8, 30
            else:
                r_, g_, b_ = 20, 60 + g // 6, min(255, 150 + g // 2)
        # saturated corners: pure black/white/green/blue survive every conversion
        if y == 0 and x < 4:
            r_, g_, b_ = [(255, 255, 255), (0, 255, 0), (0, 0, 255), (255, 0, 0)][x]
        px += bytes((r_, g_, b_))
with open("source.ppm", "wb") as f:
    f.write(b"P6\n%d %d\n255\n" % (w, h))
    f.write(px)
EOF

raw() { # name ffmpeg-pix-fmt
    ff -i source.ppm -vf "scale=out_range=tv,format=$2" -f rawvideo "$1.raw"
    ff -f rawvideo -pix_fmt "$2" -s "${W}x${H}" -i "$1.raw" \
        -vf "scale=in_range=tv:out_range=pc,format=gray" -f rawvideo "$1.gray"
}
raw yuyv yuyv422
raw uyvy uyvy422
raw nv12 nv12
raw i420 yuv420p
# grey/rgb/bgr are full range: no range change.
for pair in grey:gray rgb24:rgb24 bgr24:bgr24; do
    name="${pair%%:*}" fmt="${pair##*:}"
    ff -i source.ppm -vf "format=$fmt" -f rawvideo "$name.raw"
    ff -f rawvideo -pix_fmt "$fmt" -s "${W}x${H}" -i "$name.raw" -vf format=gray -f rawvideo "$name.gray"
done

# One MJPEG frame, 4:2:2 like USB cameras, standard Huffman tables.
ff -i source.ppm -vf format=yuvj422p -c:v mjpeg -huffman default -q:v 4 -f mjpeg mjpeg.jpg
ff -i mjpeg.jpg -vf format=gray -f rawvideo mjpeg.gray

# The same frame without its DHT segments (markers before SOS only).
python3 - <<'EOF'
data = open("mjpeg.jpg", "rb").read()
assert data[:2] == b"\xff\xd8"
out, pos, removed = bytearray(data[:2]), 2, 0
while True:
    assert data[pos] == 0xFF
    marker = data[pos + 1]
    if marker == 0xDA:
        out += data[pos:]
        break
    length = int.from_bytes(data[pos + 2:pos + 4], "big")
    seg = data[pos:pos + 2 + length]
    if marker == 0xC4:
        removed += 1
    else:
        out += seg
    pos += 2 + length
assert removed > 0, "no DHT segment found"
open("mjpeg_nodht.jpg", "wb").write(out)
EOF

ls -l "$out"
du -cb "$out"/* | tail -1
