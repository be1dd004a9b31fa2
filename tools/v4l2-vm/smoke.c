/* V4L2 smoke test for the vivid driver, run inside the pleura v4l2 VM (tools/v4l2-vm/run.sh).
 *
 *   smoke [/dev/videoN]
 *
 * QUERYCAP, ENUM_FMT (fourccs), every control (QUERY_EXT_CTRL with NEXT_CTRL|NEXT_COMPOUND:
 * id, name, type, range, flags, menu items), S_FMT YUYV 640x480, mmap streaming of 10 frames
 * with poll(), then vivid's error injection: "Percentage of Dropped Buffers" = 50 (sequence
 * gaps), "Inject V4L2_BUF_FLAG_ERROR" (a buffer flagged ERROR), and the "Disconnect" button
 * (what poll/DQBUF/QBUF/STREAMOFF report afterwards).
 *
 * Build: gcc -static -O2 -Wall -o smoke smoke.c. Exits 0 when every step behaved as expected;
 * the last line is "SMOKE OK" or "SMOKE FAIL: <reason>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define NBUF 4

static int fd = -1;
static struct {
    void *start;
    size_t len;
} bufs[NBUF];
static unsigned nbufs;

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("SMOKE FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    exit(1);
}

static int xioctl(unsigned long req, void *arg) {
    int r;
    do r = ioctl(fd, req, arg);
    while (r < 0 && errno == EINTR);
    return r;
}

static const char *fourcc(uint32_t f, char out[16]) {
    snprintf(out, 16, "%c%c%c%c%s", f & 0xff, (f >> 8) & 0xff, (f >> 16) & 0xff,
             (f >> 24) & 0x7f, (f & (1u << 31)) ? "-BE" : "");
    return out;
}

static const char *type_name(uint32_t t) {
    switch (t) {
    case V4L2_CTRL_TYPE_INTEGER: return "int";
    case V4L2_CTRL_TYPE_BOOLEAN: return "bool";
    case V4L2_CTRL_TYPE_MENU: return "menu";
    case V4L2_CTRL_TYPE_BUTTON: return "button";
    case V4L2_CTRL_TYPE_INTEGER64: return "int64";
    case V4L2_CTRL_TYPE_CTRL_CLASS: return "class";
    case V4L2_CTRL_TYPE_STRING: return "string";
    case V4L2_CTRL_TYPE_BITMASK: return "bitmask";
    case V4L2_CTRL_TYPE_INTEGER_MENU: return "intmenu";
    case V4L2_CTRL_TYPE_U8: return "u8";
    case V4L2_CTRL_TYPE_U16: return "u16";
    case V4L2_CTRL_TYPE_U32: return "u32";
    case V4L2_CTRL_TYPE_AREA: return "area";
    default: return "compound";
    }
}

static void flag_names(uint32_t f, char *out, size_t n) {
    static const struct { uint32_t bit; const char *name; } tab[] = {
        {V4L2_CTRL_FLAG_DISABLED, "disabled"},   {V4L2_CTRL_FLAG_GRABBED, "grabbed"},
        {V4L2_CTRL_FLAG_READ_ONLY, "read-only"}, {V4L2_CTRL_FLAG_UPDATE, "update"},
        {V4L2_CTRL_FLAG_INACTIVE, "inactive"},   {V4L2_CTRL_FLAG_SLIDER, "slider"},
        {V4L2_CTRL_FLAG_WRITE_ONLY, "write-only"}, {V4L2_CTRL_FLAG_VOLATILE, "volatile"},
        {V4L2_CTRL_FLAG_HAS_PAYLOAD, "payload"}, {V4L2_CTRL_FLAG_EXECUTE_ON_WRITE, "exec-on-write"},
        {V4L2_CTRL_FLAG_MODIFY_LAYOUT, "modify-layout"},
    };
    out[0] = 0;
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (f & tab[i].bit) {
            if (out[0]) strncat(out, ",", n - strlen(out) - 1);
            strncat(out, tab[i].name, n - strlen(out) - 1);
        }
}

/* Enumerate every control; return the id of the one named `want1`/`want2`/`want3` in ids[]. */
static void list_controls(const char *const names[], uint32_t ids[], int nnames) {
    struct v4l2_query_ext_ctrl q;
    int count = 0;
    printf("== controls (id name type min max step default flags)\n");
    memset(&q, 0, sizeof q);
    q.id = V4L2_CTRL_FLAG_NEXT_CTRL | V4L2_CTRL_FLAG_NEXT_COMPOUND;
    while (xioctl(VIDIOC_QUERY_EXT_CTRL, &q) == 0) {
        char flags[160];
        flag_names(q.flags, flags, sizeof flags);
        if (q.type == V4L2_CTRL_TYPE_CTRL_CLASS)
            printf("ctrl 0x%08x \"%s\" class\n", q.id, q.name);
        else
            printf("ctrl 0x%08x \"%s\" %s min=%lld max=%lld step=%llu default=%lld%s%s\n", q.id,
                   q.name, type_name(q.type), (long long)q.minimum, (long long)q.maximum,
                   (unsigned long long)q.step, (long long)q.default_value, flags[0] ? " flags=" : "",
                   flags);
        if (q.type == V4L2_CTRL_TYPE_MENU || q.type == V4L2_CTRL_TYPE_INTEGER_MENU) {
            for (long long i = q.minimum; i <= q.maximum; i++) {
                struct v4l2_querymenu m = {.id = q.id, .index = (uint32_t)i};
                if (xioctl(VIDIOC_QUERYMENU, &m) < 0) continue; /* skipped entries */
                if (q.type == V4L2_CTRL_TYPE_MENU)
                    printf("    menu %lld: %s\n", i, m.name);
                else
                    printf("    menu %lld: %lld\n", i, (long long)m.value);
            }
        }
        for (int i = 0; i < nnames; i++)
            if (strcmp((const char *)q.name, names[i]) == 0) ids[i] = q.id;
        count++;
        q.id |= V4L2_CTRL_FLAG_NEXT_CTRL | V4L2_CTRL_FLAG_NEXT_COMPOUND;
    }
    printf("== %d controls (enumeration ended with errno %d %s)\n", count, errno, strerror(errno));
}

static int set_ctrl(uint32_t id, int32_t value) {
    struct v4l2_control c = {.id = id, .value = value};
    return xioctl(VIDIOC_S_CTRL, &c);
}

/* Wait for and dequeue one buffer; returns 0, or -errno (poll/DQBUF failure), or -ETIME. */
static int dq(struct v4l2_buffer *b, int timeout_ms, short *revents) {
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLPRI};
    int r = poll(&p, 1, timeout_ms);
    if (revents) *revents = p.revents;
    if (r < 0) return -errno;
    if (r == 0) return -ETIME;
    memset(b, 0, sizeof *b);
    b->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    b->memory = V4L2_MEMORY_MMAP;
    if (xioctl(VIDIOC_DQBUF, b) < 0) return -errno;
    return 0;
}

static int qbuf(unsigned index) {
    struct v4l2_buffer b = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP,
                            .index = index};
    return xioctl(VIDIOC_QBUF, &b);
}

static double ts_ms(const struct v4l2_buffer *b) {
    return b->timestamp.tv_sec * 1e3 + b->timestamp.tv_usec / 1e3;
}

/* Stream n frames, printing them; returns how many sequence numbers were skipped. */
static unsigned stream(const char *label, int n, unsigned *error_flagged) {
    int last = -1;
    unsigned gaps = 0;
    double last_ts = 0;
    for (int i = 0; i < n; i++) {
        struct v4l2_buffer b;
        int r = dq(&b, 5000, NULL);
        if (r < 0) fail("%s frame %d: %s", label, i, strerror(-r));
        unsigned skipped = last >= 0 ? b.sequence - (unsigned)last - 1 : 0;
        gaps += skipped;
        printf("%s frame %2d: index=%u sequence=%u bytesused=%u flags=0x%05x%s dt=%.1fms%s\n",
               label, i, b.index, b.sequence, b.bytesused, b.flags,
               (b.flags & V4L2_BUF_FLAG_ERROR) ? " (ERROR)" : "",
               last_ts > 0 ? ts_ms(&b) - last_ts : 0.0, skipped ? " <- gap" : "");
        if (skipped) printf("    gap: %u sequence number(s) dropped\n", skipped);
        if ((b.flags & V4L2_BUF_FLAG_ERROR) && error_flagged) (*error_flagged)++;
        last = (int)b.sequence;
        last_ts = ts_ms(&b);
        if (qbuf(b.index) < 0) fail("%s QBUF: %s", label, strerror(errno));
    }
    return gaps;
}

int main(int argc, char **argv) {
    const char *dev = argc > 1 ? argv[1] : "/dev/video0";
    char cc[16];
    setvbuf(stdout, NULL, _IOLBF, 0);

    fd = open(dev, O_RDWR | O_NONBLOCK);
    if (fd < 0) fail("open %s: %s", dev, strerror(errno));

    struct v4l2_capability cap;
    memset(&cap, 0, sizeof cap);
    if (xioctl(VIDIOC_QUERYCAP, &cap) < 0) fail("QUERYCAP: %s", strerror(errno));
    printf("== querycap: driver=%s card=%s bus=%s version=%u.%u.%u caps=0x%08x device_caps=0x%08x\n",
           cap.driver, cap.card, cap.bus_info, (cap.version >> 16) & 0xff, (cap.version >> 8) & 0xff,
           cap.version & 0xff, cap.capabilities, cap.device_caps);
    if (!(cap.device_caps & V4L2_CAP_VIDEO_CAPTURE)) fail("not a single-planar capture device");
    if (!(cap.device_caps & V4L2_CAP_STREAMING)) fail("no streaming I/O");

    struct v4l2_input in = {.index = 0};
    int cur = -1;
    xioctl(VIDIOC_G_INPUT, &cur);
    printf("== inputs (current %d)\n", cur);
    for (in.index = 0; xioctl(VIDIOC_ENUMINPUT, &in) == 0; in.index++)
        printf("input %u: \"%s\" type=%u\n", in.index, in.name, in.type);

    printf("== formats (VIDEO_CAPTURE)\n");
    int nfmt = 0;
    for (struct v4l2_fmtdesc f = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
         xioctl(VIDIOC_ENUM_FMT, &f) == 0; f.index++, nfmt++)
        printf("fmt %2u: %-8s \"%s\"%s\n", f.index, fourcc(f.pixelformat, cc), f.description,
               (f.flags & V4L2_FMT_FLAG_COMPRESSED) ? " (compressed)" : "");
    printf("== %d formats\n", nfmt);
    for (struct v4l2_frmsizeenum s = {.pixel_format = V4L2_PIX_FMT_YUYV};
         xioctl(VIDIOC_ENUM_FRAMESIZES, &s) == 0; s.index++) {
        if (s.type != V4L2_FRMSIZE_TYPE_DISCRETE) {
            printf("YUYV sizes: stepwise %ux%u..%ux%u\n", s.stepwise.min_width,
                   s.stepwise.min_height, s.stepwise.max_width, s.stepwise.max_height);
            break;
        }
        printf("YUYV size %ux%u:", s.discrete.width, s.discrete.height);
        for (struct v4l2_frmivalenum iv = {.pixel_format = V4L2_PIX_FMT_YUYV,
                                           .width = s.discrete.width, .height = s.discrete.height};
             xioctl(VIDIOC_ENUM_FRAMEINTERVALS, &iv) == 0 && iv.type == V4L2_FRMIVAL_TYPE_DISCRETE;
             iv.index++)
            printf(" %u/%u", iv.discrete.numerator, iv.discrete.denominator);
        printf(" s\n");
    }

    static const char *const names[] = {"Percentage of Dropped Buffers", "Disconnect",
                                        "Inject V4L2_BUF_FLAG_ERROR"};
    uint32_t ids[3] = {0, 0, 0};
    list_controls(names, ids, 3);
    for (int i = 0; i < 3; i++) printf("found \"%s\" = 0x%08x\n", names[i], ids[i]);
    if (!ids[0] || !ids[1]) fail("vivid error-injection controls missing (no_error_inj=1?)");

    struct v4l2_format fmt = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
    fmt.fmt.pix.width = 640;
    fmt.fmt.pix.height = 480;
    fmt.fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
    fmt.fmt.pix.field = V4L2_FIELD_NONE;
    if (xioctl(VIDIOC_S_FMT, &fmt) < 0) fail("S_FMT: %s", strerror(errno));
    printf("== S_FMT -> %ux%u %s field=%u bytesperline=%u sizeimage=%u colorspace=%u\n",
           fmt.fmt.pix.width, fmt.fmt.pix.height, fourcc(fmt.fmt.pix.pixelformat, cc),
           fmt.fmt.pix.field, fmt.fmt.pix.bytesperline, fmt.fmt.pix.sizeimage,
           fmt.fmt.pix.colorspace);
    if (fmt.fmt.pix.pixelformat != V4L2_PIX_FMT_YUYV || fmt.fmt.pix.width != 640 ||
        fmt.fmt.pix.height != 480)
        fail("S_FMT did not give YUYV 640x480");
    /* vivid's webcam input defaults to 1/5 s at 640x480; ask for its fastest, 1/25 s. */
    struct v4l2_streamparm parm = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE};
    if (xioctl(VIDIOC_G_PARM, &parm) == 0)
        printf("== default frame interval %u/%u s\n", parm.parm.capture.timeperframe.numerator,
               parm.parm.capture.timeperframe.denominator);
    parm.parm.capture.timeperframe.numerator = 1;
    parm.parm.capture.timeperframe.denominator = 25;
    if (xioctl(VIDIOC_S_PARM, &parm) == 0)
        printf("== S_PARM -> frame interval %u/%u s\n", parm.parm.capture.timeperframe.numerator,
               parm.parm.capture.timeperframe.denominator);
    else
        printf("== S_PARM failed: %s\n", strerror(errno));

    struct v4l2_requestbuffers req = {.count = NBUF, .type = V4L2_BUF_TYPE_VIDEO_CAPTURE,
                                      .memory = V4L2_MEMORY_MMAP};
    if (xioctl(VIDIOC_REQBUFS, &req) < 0) fail("REQBUFS: %s", strerror(errno));
    nbufs = req.count < NBUF ? req.count : NBUF;
    for (unsigned i = 0; i < nbufs; i++) {
        struct v4l2_buffer b = {.type = V4L2_BUF_TYPE_VIDEO_CAPTURE, .memory = V4L2_MEMORY_MMAP,
                                .index = i};
        if (xioctl(VIDIOC_QUERYBUF, &b) < 0) fail("QUERYBUF: %s", strerror(errno));
        bufs[i].len = b.length;
        bufs[i].start = mmap(NULL, b.length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, b.m.offset);
        if (bufs[i].start == MAP_FAILED) fail("mmap: %s", strerror(errno));
        if (qbuf(i) < 0) fail("QBUF: %s", strerror(errno));
    }
    printf("== %u mmap buffers of %zu bytes\n", nbufs, bufs[0].len);
    enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    if (xioctl(VIDIOC_STREAMON, &type) < 0) fail("STREAMON: %s", strerror(errno));

    unsigned gaps = stream("normal", 10, NULL);
    printf("== normal: %u sequence gap(s)\n", gaps);

    if (set_ctrl(ids[0], 50) < 0) fail("S_CTRL dropped=50: %s", strerror(errno));
    struct v4l2_control g = {.id = ids[0]};
    xioctl(VIDIOC_G_CTRL, &g);
    printf("== \"%s\" (0x%08x) = %d\n", names[0], ids[0], g.value);
    gaps = stream("drop50", 20, NULL);
    printf("== drop50: %u sequence number(s) dropped over 20 frames\n", gaps);
    if (gaps == 0) fail("no sequence gaps with 50%% dropped buffers");
    set_ctrl(ids[0], 0);

    if (ids[2]) {
        unsigned flagged = 0;
        if (set_ctrl(ids[2], 1) < 0) fail("S_CTRL inject buf error: %s", strerror(errno));
        printf("== pressed \"%s\" (0x%08x)\n", names[2], ids[2]);
        stream("bferr", 4, &flagged);
        printf("== %u buffer(s) flagged V4L2_BUF_FLAG_ERROR\n", flagged);
        if (!flagged) fail("no buffer with V4L2_BUF_FLAG_ERROR after pressing the button");
    }

    if (set_ctrl(ids[1], 1) < 0) fail("S_CTRL disconnect: %s", strerror(errno));
    printf("== pressed \"%s\" (0x%08x)\n", names[1], ids[1]);
    int disconnected = 0;
    for (int i = 0; i < 8; i++) {
        struct v4l2_buffer b;
        short rev = 0;
        int r = dq(&b, 2000, &rev);
        if (r == 0) {
            printf("after disconnect %d: dequeued sequence=%u flags=0x%05x (still queued buffer)\n",
                   i, b.sequence, b.flags);
            continue;
        }
        printf("after disconnect %d: poll revents=0x%x%s%s%s%s, %s -> errno %d %s\n", i, rev,
               (rev & POLLERR) ? " POLLERR" : "", (rev & POLLHUP) ? " POLLHUP" : "",
               (rev & POLLPRI) ? " POLLPRI" : "", (rev & POLLIN) ? " POLLIN" : "", r == -ETIME ? "poll timeout" : "DQBUF", -r,
               strerror(-r));
        disconnected = 1;
        break;
    }
    int r = qbuf(0);
    printf("after disconnect: QBUF -> %d errno %d %s\n", r, r < 0 ? errno : 0,
           r < 0 ? strerror(errno) : "ok");
    r = xioctl(VIDIOC_QUERYCAP, &cap);
    printf("after disconnect: QUERYCAP -> %d errno %d %s\n", r, r < 0 ? errno : 0,
           r < 0 ? strerror(errno) : "ok");
    r = xioctl(VIDIOC_STREAMOFF, &type);
    printf("after disconnect: STREAMOFF -> %d errno %d %s\n", r, r < 0 ? errno : 0,
           r < 0 ? strerror(errno) : "ok");
    for (unsigned i = 0; i < nbufs; i++) munmap(bufs[i].start, bufs[i].len);
    r = close(fd);
    printf("after disconnect: close -> %d\n", r);
    int fd2 = open(dev, O_RDWR);
    printf("after disconnect: reopen %s -> %s\n", dev, fd2 < 0 ? strerror(errno) : "ok");
    if (fd2 >= 0) close(fd2);
    if (!disconnected) fail("DQBUF kept succeeding after Disconnect");
    printf("SMOKE OK\n");
    return 0;
}
