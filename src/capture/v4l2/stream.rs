//! Memory-mapped V4L2 streaming with our own poll loop.
//!
//! `v4l` 0.14's `MmapStream` re-queues a buffer that is still queued after one poll timeout,
//! and every later call then fails with EINVAL; its `Drop` panics on some errors. This stream
//! does the few ioctls itself (REQBUFS, QUERYBUF + mmap, QBUF, DQBUF, STREAMON/OFF): a poll
//! timeout leaves every buffer where it was, the buffer handed out is re-queued exactly once,
//! and dropping the stream never panics (an unplugged device fails every ioctl with ENODEV).

use std::io;
use std::os::raw::c_void;
use std::sync::Arc;
use std::time::Duration;

use v4l::buffer::Type;
use v4l::device::{Device, Handle};
use v4l::memory::Memory;
use v4l::v4l2;
use v4l::v4l_sys::{v4l2_buffer, v4l2_requestbuffers, V4L2_BUF_FLAG_ERROR};

/// One mapped driver buffer.
struct Mapping {
    ptr: *mut c_void,
    len: usize,
}

/// A capture stream of mmap buffers on an open device.
pub struct MmapStream {
    handle: Arc<Handle>,
    buffers: Vec<Mapping>,
    /// The buffer lent out by the last [`MmapStream::next`], re-queued by the next call.
    held: Option<Held>,
}

/// What DQBUF said about the buffer we hold.
#[derive(Clone, Copy)]
struct Held {
    index: u32,
    bytesused: u32,
    sequence: u32,
    timestamp: Duration,
    corrupt: bool,
}

// The mappings are plain shared memory of this process; the stream may move between threads.
unsafe impl Send for MmapStream {}

/// A buffer dequeued from the driver, valid until the next call of [`MmapStream::next`].
#[derive(Debug)]
pub struct Dequeued<'a> {
    /// The bytes the driver filled (cut to `bytesused`).
    pub data: &'a [u8],
    /// The driver's sequence number (counts every frame, also the ones it dropped).
    pub sequence: u32,
    /// The driver's timestamp (CLOCK_MONOTONIC on every current driver).
    pub timestamp: Duration,
    /// The driver flagged the buffer as corrupt (`V4L2_BUF_FLAG_ERROR`).
    pub corrupt: bool,
}

fn empty_buffer() -> v4l2_buffer {
    v4l2_buffer {
        type_: Type::VideoCapture as u32,
        memory: Memory::Mmap as u32,
        // SAFETY: v4l2_buffer is a plain C struct; all zeroes is its documented initial state.
        ..unsafe { std::mem::zeroed() }
    }
}

impl MmapStream {
    /// Requests `count` buffers, maps them, queues them and starts streaming.
    pub fn start(device: &Device, count: u32) -> io::Result<MmapStream> {
        let handle = device.handle();
        let mut request = v4l2_requestbuffers {
            count,
            type_: Type::VideoCapture as u32,
            memory: Memory::Mmap as u32,
            // SAFETY: as above.
            ..unsafe { std::mem::zeroed() }
        };
        // SAFETY: the argument is the struct this ioctl takes, alive for the call.
        unsafe { ioctl(&handle, v4l2::vidioc::VIDIOC_REQBUFS, &mut request)? };
        if request.count == 0 {
            return Err(io::Error::other("the driver granted no capture buffers"));
        }
        let mut stream = MmapStream {
            handle,
            buffers: Vec::with_capacity(request.count as usize),
            held: None,
        };
        for index in 0..request.count {
            let mut buf = empty_buffer();
            buf.index = index;
            // SAFETY: as above.
            unsafe { ioctl(&stream.handle, v4l2::vidioc::VIDIOC_QUERYBUF, &mut buf)? };
            let len = buf.length as usize;
            // SAFETY: maps the driver buffer the kernel just described; unmapped in Drop.
            let ptr = unsafe {
                v4l2::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    stream.handle.fd(),
                    buf.m.offset as libc::off_t,
                )?
            };
            stream.buffers.push(Mapping { ptr, len });
        }
        for index in 0..request.count {
            stream.queue(index)?;
        }
        let mut kind = Type::VideoCapture as u32;
        // SAFETY: as above.
        unsafe { ioctl(&stream.handle, v4l2::vidioc::VIDIOC_STREAMON, &mut kind)? };
        Ok(stream)
    }

    /// Number of driver buffers in rotation.
    pub fn buffer_count(&self) -> usize {
        self.buffers.len()
    }

    fn queue(&self, index: u32) -> io::Result<()> {
        let mut buf = empty_buffer();
        buf.index = index;
        // SAFETY: as above.
        unsafe { ioctl(&self.handle, v4l2::vidioc::VIDIOC_QBUF, &mut buf) }
    }

    /// Waits at most `timeout` for the next filled buffer; `true` when one was dequeued (read
    /// it with [`MmapStream::current`]). The buffer held from the previous call goes back to
    /// the driver first.
    pub fn next(&mut self, timeout: Duration) -> io::Result<bool> {
        if let Some(held) = self.held.take() {
            self.queue(held.index)?;
        }
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // POLLERR / POLLHUP also wake the poll: the DQBUF below then reports the error.
        if self.handle.poll(libc::POLLIN, millis)? == 0 {
            return Ok(false);
        }
        let mut buf = empty_buffer();
        // SAFETY: as above.
        match unsafe { ioctl(&self.handle, v4l2::vidioc::VIDIOC_DQBUF, &mut buf) } {
            Ok(()) => {}
            // The device is opened non-blocking: a wake-up without a buffer is no frame yet.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
        if buf.index as usize >= self.buffers.len() {
            return Err(io::Error::other(format!(
                "the driver returned buffer {} of {}",
                buf.index,
                self.buffers.len()
            )));
        }
        self.held = Some(Held {
            index: buf.index,
            bytesused: buf.bytesused,
            sequence: buf.sequence,
            timestamp: Duration::from_secs(buf.timestamp.tv_sec.max(0) as u64)
                + Duration::from_micros(buf.timestamp.tv_usec.max(0) as u64),
            corrupt: buf.flags & V4L2_BUF_FLAG_ERROR != 0,
        });
        Ok(true)
    }

    /// The buffer dequeued by the last successful [`MmapStream::next`].
    pub fn current(&self) -> Option<Dequeued<'_>> {
        let held = self.held?;
        let mapping = &self.buffers[held.index as usize];
        let used = (held.bytesused as usize).min(mapping.len);
        // SAFETY: the mapping is `len` bytes long and stays mapped while `self` is borrowed; the
        // driver does not write a dequeued buffer until we queue it again.
        let data = unsafe { std::slice::from_raw_parts(mapping.ptr as *const u8, used) };
        Some(Dequeued {
            data,
            sequence: held.sequence,
            timestamp: held.timestamp,
            corrupt: held.corrupt,
        })
    }
}

impl Drop for MmapStream {
    fn drop(&mut self) {
        // Errors are expected here (ENODEV after an unplug) and there is nothing left to do
        // about them: stop, unmap and free what can be.
        let mut kind = Type::VideoCapture as u32;
        // SAFETY: as above.
        let _ = unsafe { ioctl(&self.handle, v4l2::vidioc::VIDIOC_STREAMOFF, &mut kind) };
        for mapping in self.buffers.drain(..) {
            // SAFETY: each mapping was returned by mmap with this length and is unmapped once.
            let _ = unsafe { v4l2::munmap(mapping.ptr, mapping.len) };
        }
        let mut request = v4l2_requestbuffers {
            count: 0,
            type_: Type::VideoCapture as u32,
            memory: Memory::Mmap as u32,
            // SAFETY: as above.
            ..unsafe { std::mem::zeroed() }
        };
        // SAFETY: as above.
        let _ = unsafe { ioctl(&self.handle, v4l2::vidioc::VIDIOC_REQBUFS, &mut request) };
    }
}

/// `ioctl` on the device with a typed argument; EINTR is retried.
///
/// # Safety
/// `T` must be the argument type of `request`.
unsafe fn ioctl<T>(
    handle: &Handle,
    request: v4l2::vidioc::_IOC_TYPE,
    arg: &mut T,
) -> io::Result<()> {
    loop {
        match v4l2::ioctl(handle.fd(), request, arg as *mut T as *mut c_void) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
