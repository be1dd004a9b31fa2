//! The frame store: a dataset's decoded 8-bit frames in a few large shard files with one
//! index, so that training reads any frame with one positioned read instead of holding the
//! dataset in memory or opening one PNG per frame.
//!
//! ```text
//! DIR/frames/index.json          format, version, shards (name, bytes, frames), and per clip:
//!                                id, width, height, frames, shard, byte offset, first frame number
//! DIR/frames/shard-NNNNN.bin     16-byte shard header, then frame records:
//!                                16-byte frame header + width x height grey pixels (u8, row-major)
//! ```
//!
//! A shard header is `PLFSHARD`, the format version and the shard number (u32 little-endian
//! each). A frame header is `PLFR`, the frame's number in the store, its pixel byte count and
//! the CRC-32 of its pixels (u32 little-endian each). A clip's frames are consecutive records of
//! one shard, in time order (the order of the clip's PNG file names); a shard is closed once it
//! passes its target size ([`DEFAULT_SHARD_BYTES`]), so shards are that size up to one clip.
//!
//! The pixels are exactly those of the dataset's `clips/<clip>/*.png` (the stored size, before
//! the network's resize): the trainer applies the runtime's [`pleura::preprocess::Resize`] and
//! [`pleura::preprocess::Normalise`] to them as it does to PNG frames, so both layouts give the
//! same tensors (`trainer/tests/store.rs`). Opening a store checks every shard's length against
//! the index (a truncated shard is named at once); reading a frame checks its header and CRC (a
//! corrupt frame is named with its shard, clip and position). [`StoreWriter`] writes into
//! `DIR/frames.partial/` and swaps it in when done: an interrupted write leaves the previous
//! store, or none.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, ensure, Context, Result};
use pleura::image::{read_png, GreyImage};
use serde::{Deserialize, Serialize};

use crate::data::labels;
use crate::progress;
use crate::tasks::TaskSet;

/// Folder of the store inside a dataset folder.
pub const STORE_DIR: &str = "frames";
/// The index file inside [`STORE_DIR`].
pub const INDEX_FILE: &str = "index.json";
/// Target size of a shard in bytes (a shard holds whole clips, so it may pass this by one clip).
pub const DEFAULT_SHARD_BYTES: u64 = 64 << 20;
/// Bytes before each frame's pixels.
pub const FRAME_HEADER: u64 = 16;
/// Bytes before a shard's first frame.
pub const SHARD_HEADER: u64 = 16;

const FORMAT: &str = "pleura-frames";
const VERSION: u32 = 1;
const SHARD_MAGIC: &[u8; 8] = b"PLFSHARD";
const FRAME_MAGIC: &[u8; 4] = b"PLFR";
/// Shard files kept open at once by a reader.
const OPEN_SHARDS: usize = 64;

/// One shard in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the store folder: `shard-NNNNN.bin`.
    pub file: String,
    /// File length in bytes.
    pub bytes: u64,
    /// Frames in the shard.
    pub frames: u64,
}

/// One clip in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipEntry {
    /// Clip id (as in `labels.csv`).
    pub clip: String,
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// Frames stored, in time order.
    pub frames: usize,
    /// Shard holding all of them.
    pub shard: usize,
    /// Byte offset of the first frame's header in that shard.
    pub offset: u64,
    /// Number of the clip's first frame in the store (frames are numbered from 0 in write order).
    pub first: u64,
}

impl ClipEntry {
    /// Bytes of one frame record (header + pixels).
    pub fn record_bytes(&self) -> u64 {
        FRAME_HEADER + (self.width * self.height) as u64
    }
}

/// `frames/index.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreIndex {
    /// Always `pleura-frames`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Target shard size the store was written with.
    pub shard_bytes: u64,
    /// Frames in the store.
    pub frames: u64,
    /// Shards in number order.
    pub shards: Vec<ShardEntry>,
    /// Clips in write order.
    pub clips: Vec<ClipEntry>,
}

/// `true` when `dataset` holds a frame store (`DIR/frames/index.json`).
pub fn exists(dataset: &Path) -> bool {
    dataset.join(STORE_DIR).join(INDEX_FILE).is_file()
}

fn shard_name(n: usize) -> String {
    format!("shard-{n:05}.bin")
}

fn shard_header(n: usize) -> [u8; SHARD_HEADER as usize] {
    let mut h = [0u8; SHARD_HEADER as usize];
    h[..8].copy_from_slice(SHARD_MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(n as u32).to_le_bytes());
    h
}

fn frame_header(number: u64, pixels: &[u8]) -> [u8; FRAME_HEADER as usize] {
    let mut h = [0u8; FRAME_HEADER as usize];
    h[..4].copy_from_slice(FRAME_MAGIC);
    h[4..8].copy_from_slice(&(number as u32).to_le_bytes());
    h[8..12].copy_from_slice(&(pixels.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&crc32fast::hash(pixels).to_le_bytes());
    h
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// What a [`StoreWriter`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSummary {
    /// The store folder.
    pub dir: PathBuf,
    /// Clips written.
    pub clips: usize,
    /// Frames written.
    pub frames: u64,
    /// Shard files written.
    pub shards: usize,
    /// Bytes of all shards.
    pub bytes: u64,
}

/// The shard being written.
struct OpenShard {
    writer: BufWriter<File>,
    path: PathBuf,
    bytes: u64,
    frames: u64,
}

/// Writes a store clip by clip, frame by frame: memory holds one frame at a time.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use pleura::image::GreyImage;
/// use pleura_trainer::data::store::StoreWriter;
/// let mut w = StoreWriter::create(std::path::Path::new("data/mine"))?;
/// w.begin_clip("clip-1", 64, 48)?;
/// w.push_frame(&GreyImage::new(64, 48))?;
/// w.end_clip()?;
/// w.finish()?; // data/mine/frames/{index.json, shard-00000.bin}
/// # Ok(()) }
/// ```
pub struct StoreWriter {
    dataset: PathBuf,
    partial: PathBuf,
    shard_bytes: u64,
    shards: Vec<ShardEntry>,
    clips: Vec<ClipEntry>,
    names: HashSet<String>,
    open: Option<OpenShard>,
    clip: Option<ClipEntry>,
    frames: u64,
}

impl StoreWriter {
    /// Starts a store for the dataset folder `dataset` (created if missing), with shards of
    /// [`DEFAULT_SHARD_BYTES`]. Nothing replaces an existing store before [`StoreWriter::finish`].
    pub fn create(dataset: &Path) -> Result<Self> {
        Self::with_shard_bytes(dataset, DEFAULT_SHARD_BYTES)
    }

    /// [`StoreWriter::create`] with another target shard size (at least 1 byte).
    pub fn with_shard_bytes(dataset: &Path, shard_bytes: u64) -> Result<Self> {
        ensure!(shard_bytes > 0, "the shard size must be positive");
        let partial = dataset.join(format!("{STORE_DIR}.partial"));
        if partial.exists() {
            fs::remove_dir_all(&partial)
                .with_context(|| format!("removing {}", partial.display()))?;
        }
        fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
        Ok(Self {
            dataset: dataset.to_path_buf(),
            partial,
            shard_bytes,
            shards: Vec::new(),
            clips: Vec::new(),
            names: HashSet::new(),
            open: None,
            clip: None,
            frames: 0,
        })
    }

    /// Starts clip `clip` of `width x height` frames; it goes into the current shard unless
    /// that has reached its target size.
    pub fn begin_clip(&mut self, clip: &str, width: usize, height: usize) -> Result<()> {
        ensure!(
            self.clip.is_none(),
            "frame store: clip `{clip}` begun before the previous one ended"
        );
        ensure!(
            width > 0 && height > 0 && (width * height) <= u32::MAX as usize,
            "frame store: clip `{clip}` has frames of {width}x{height} pixels"
        );
        ensure!(
            self.names.insert(clip.to_string()),
            "frame store: clip `{clip}` written twice"
        );
        if self
            .open
            .as_ref()
            .is_some_and(|s| s.bytes >= self.shard_bytes)
        {
            self.close_shard()?;
        }
        if self.open.is_none() {
            let n = self.shards.len();
            let path = self.partial.join(shard_name(n));
            let file =
                File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            writer
                .write_all(&shard_header(n))
                .with_context(|| format!("writing {}", path.display()))?;
            self.open = Some(OpenShard {
                writer,
                path,
                bytes: SHARD_HEADER,
                frames: 0,
            });
        }
        let open = self.open.as_ref().expect("a shard is open");
        self.clip = Some(ClipEntry {
            clip: clip.to_string(),
            width,
            height,
            frames: 0,
            shard: self.shards.len(),
            offset: open.bytes,
            first: self.frames,
        });
        Ok(())
    }

    /// Appends the next frame of the current clip; it must have the clip's size.
    pub fn push_frame(&mut self, frame: &GreyImage) -> Result<()> {
        let (Some(clip), Some(open)) = (self.clip.as_mut(), self.open.as_mut()) else {
            bail!("frame store: a frame pushed outside a clip");
        };
        ensure!(
            (frame.width, frame.height) == (clip.width, clip.height)
                && frame.pixels.len() == clip.width * clip.height,
            "frame store: frame {} of clip `{}` is {}x{}, the clip's frames are {}x{}",
            clip.frames,
            clip.clip,
            frame.width,
            frame.height,
            clip.width,
            clip.height
        );
        ensure!(
            self.frames < u64::from(u32::MAX),
            "frame store: more than {} frames",
            u32::MAX
        );
        open.writer
            .write_all(&frame_header(self.frames, &frame.pixels))
            .and_then(|()| open.writer.write_all(&frame.pixels))
            .with_context(|| format!("writing {}", open.path.display()))?;
        open.bytes += FRAME_HEADER + frame.pixels.len() as u64;
        open.frames += 1;
        clip.frames += 1;
        self.frames += 1;
        Ok(())
    }

    /// Ends the current clip (it must hold a frame).
    pub fn end_clip(&mut self) -> Result<()> {
        let Some(clip) = self.clip.take() else {
            bail!("frame store: end of a clip that was not begun");
        };
        ensure!(
            clip.frames > 0,
            "frame store: clip `{}` has no frame",
            clip.clip
        );
        self.clips.push(clip);
        Ok(())
    }

    /// Writes clip `clip` whole.
    pub fn add_clip(&mut self, clip: &str, frames: &[GreyImage]) -> Result<()> {
        let first = frames
            .first()
            .with_context(|| format!("frame store: clip `{clip}` has no frame"))?;
        self.begin_clip(clip, first.width, first.height)?;
        for f in frames {
            self.push_frame(f)?;
        }
        self.end_clip()
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(open) = self.open.take() {
            let file = open
                .writer
                .into_inner()
                .map_err(|e| anyhow::anyhow!("{}", e.error()))
                .with_context(|| format!("writing {}", open.path.display()))?;
            file.sync_all()
                .with_context(|| format!("writing {}", open.path.display()))?;
            self.shards.push(ShardEntry {
                file: shard_name(self.shards.len()),
                bytes: open.bytes,
                frames: open.frames,
            });
        }
        Ok(())
    }

    /// Closes the last shard, writes the index and puts the store in place of any earlier one
    /// (`DIR/frames`).
    pub fn finish(mut self) -> Result<StoreSummary> {
        ensure!(
            self.clip.is_none(),
            "frame store: finished inside clip `{}`",
            self.clip.as_ref().map_or("", |c| c.clip.as_str())
        );
        ensure!(!self.clips.is_empty(), "frame store: no clip written");
        self.close_shard()?;
        let index = StoreIndex {
            format: FORMAT.into(),
            version: VERSION,
            shard_bytes: self.shard_bytes,
            frames: self.frames,
            shards: self.shards.clone(),
            clips: std::mem::take(&mut self.clips),
        };
        pleura::fsutil::write_atomic(
            &self.partial.join(INDEX_FILE),
            serde_json::to_string(&index)?.as_bytes(),
        )?;
        let dir = self.dataset.join(STORE_DIR);
        let old = self.dataset.join(format!("{STORE_DIR}.old"));
        if old.exists() {
            fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        if dir.exists() {
            fs::rename(&dir, &old)
                .with_context(|| format!("moving {} to {}", dir.display(), old.display()))?;
        }
        fs::rename(&self.partial, &dir)
            .with_context(|| format!("moving {} to {}", self.partial.display(), dir.display()))?;
        if old.exists() {
            fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        Ok(StoreSummary {
            dir,
            clips: index.clips.len(),
            frames: index.frames,
            shards: index.shards.len(),
            bytes: index.shards.iter().map(|s| s.bytes).sum(),
        })
    }
}

/// A few open shard files, the most recently used last.
#[derive(Default)]
struct OpenFiles {
    files: Vec<(usize, Arc<File>)>,
}

/// A store opened for reading: the index in memory, shards opened on demand. Reads are
/// positioned (`pread`), so one `FrameStore` serves any number of threads.
pub struct FrameStore {
    dir: PathBuf,
    index: StoreIndex,
    by_name: HashMap<String, usize>,
    open: Mutex<OpenFiles>,
}

impl std::fmt::Debug for FrameStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameStore")
            .field("dir", &self.dir)
            .field("clips", &self.index.clips.len())
            .field("frames", &self.index.frames)
            .finish()
    }
}

impl FrameStore {
    /// Opens `dataset/frames`: reads and checks the index, and checks that every shard file
    /// has the length the index gives (a truncated or overwritten shard is an error here).
    pub fn open(dataset: &Path) -> Result<Self> {
        let dir = dataset.join(STORE_DIR);
        let path = dir.join(INDEX_FILE);
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let index: StoreIndex = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a frame-store index", path.display()))?;
        ensure!(
            index.format == FORMAT && index.version == VERSION,
            "{}: format `{}` version {}, expected `{FORMAT}` version {VERSION}",
            path.display(),
            index.format,
            index.version
        );
        for (n, shard) in index.shards.iter().enumerate() {
            ensure!(
                shard.file == shard_name(n),
                "{}: shard {n} is named `{}`, expected `{}`",
                path.display(),
                shard.file,
                shard_name(n)
            );
            let file = dir.join(&shard.file);
            let len = fs::metadata(&file)
                .with_context(|| format!("{}: shard missing", file.display()))?
                .len();
            ensure!(
                len == shard.bytes,
                "{}: {len} bytes where {} says {} ({}): rewrite the store \
                 (`pleura-train convert` or `prepare`)",
                file.display(),
                path.display(),
                shard.bytes,
                if len < shard.bytes {
                    "truncated"
                } else {
                    "longer"
                }
            );
        }
        let mut by_name = HashMap::with_capacity(index.clips.len());
        let mut expected_first = 0u64;
        for (c, clip) in index.clips.iter().enumerate() {
            let shard = index.shards.get(clip.shard);
            let end = clip.offset + clip.frames as u64 * clip.record_bytes();
            ensure!(
                clip.frames > 0
                    && clip.width > 0
                    && clip.height > 0
                    && clip.first == expected_first
                    && clip.offset >= SHARD_HEADER
                    && shard.is_some_and(|s| end <= s.bytes),
                "{}: entry of clip `{}` does not fit the shards",
                path.display(),
                clip.clip
            );
            expected_first += clip.frames as u64;
            ensure!(
                by_name.insert(clip.clip.clone(), c).is_none(),
                "{}: clip `{}` listed twice",
                path.display(),
                clip.clip
            );
        }
        ensure!(
            expected_first == index.frames,
            "{}: the clips hold {expected_first} frames, the index says {}",
            path.display(),
            index.frames
        );
        Ok(Self {
            dir,
            index,
            by_name,
            open: Mutex::new(OpenFiles::default()),
        })
    }

    /// The store folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index.
    pub fn index(&self) -> &StoreIndex {
        &self.index
    }

    /// The clips, in write order.
    pub fn clips(&self) -> &[ClipEntry] {
        &self.index.clips
    }

    /// The position of clip `clip` in [`FrameStore::clips`].
    pub fn clip_number(&self, clip: &str) -> Option<usize> {
        self.by_name.get(clip).copied()
    }

    fn shard_file(&self, shard: usize) -> Result<Arc<File>> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| anyhow::anyhow!("frame store: a reader thread panicked"))?;
        if let Some(k) = open.files.iter().position(|(n, _)| *n == shard) {
            let entry = open.files.remove(k);
            let file = entry.1.clone();
            open.files.push(entry);
            return Ok(file);
        }
        let path = self.dir.join(&self.index.shards[shard].file);
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut header = [0u8; SHARD_HEADER as usize];
        file.read_exact(&mut header)
            .with_context(|| format!("{}: reading the shard header", path.display()))?;
        ensure!(
            header == shard_header(shard),
            "{}: not shard {shard} of a version-{VERSION} frame store (bad header)",
            path.display()
        );
        let file = Arc::new(file);
        if open.files.len() >= OPEN_SHARDS {
            open.files.remove(0);
        }
        open.files.push((shard, file.clone()));
        Ok(file)
    }

    /// Reads frame `k` (0-based, in time order) of clip number `clip` into `image`, whose
    /// pixel buffer is reused. Errors name the shard file, the clip and the frame.
    pub fn read_frame(&self, clip: usize, k: usize, image: &mut GreyImage) -> Result<()> {
        let entry = self.index.clips.get(clip).with_context(|| {
            format!("frame store {}: no clip number {clip}", self.dir.display())
        })?;
        ensure!(
            k < entry.frames,
            "frame store {}: clip `{}` has {} frames, frame {k} asked",
            self.dir.display(),
            entry.clip,
            entry.frames
        );
        let offset = entry.offset + k as u64 * entry.record_bytes();
        let number = entry.first + k as u64;
        let len = entry.width * entry.height;
        let shard = &self.index.shards[entry.shard];
        let at = || {
            format!(
                "{}: frame {k} of clip `{}` (frame {number} of the store, byte {offset})",
                self.dir.join(&shard.file).display(),
                entry.clip
            )
        };
        let file = self.shard_file(entry.shard)?;
        let mut header = [0u8; FRAME_HEADER as usize];
        file.read_exact_at(&mut header, offset)
            .with_context(|| format!("{}: reading the frame header", at()))?;
        image.width = entry.width;
        image.height = entry.height;
        image.pixels.resize(len, 0);
        file.read_exact_at(&mut image.pixels, offset + FRAME_HEADER)
            .with_context(|| format!("{}: reading the pixels", at()))?;
        ensure!(
            &header[..4] == FRAME_MAGIC
                && u64::from(le_u32(&header[4..8])) == number
                && le_u32(&header[8..12]) as usize == len,
            "{}: bad frame header (the shard is corrupt or does not match {})",
            at(),
            INDEX_FILE
        );
        ensure!(
            crc32fast::hash(&image.pixels) == le_u32(&header[12..16]),
            "{}: the pixels do not match their checksum (corrupt shard)",
            at()
        );
        Ok(())
    }

    /// Reads every frame once and checks it; returns the number of frames.
    pub fn verify(&self) -> Result<u64> {
        let mut image = GreyImage::new(1, 1);
        for (c, clip) in self.index.clips.iter().enumerate() {
            for k in 0..clip.frames {
                self.read_frame(c, k, &mut image)?;
            }
        }
        Ok(self.index.frames)
    }
}

/// The PNG frames of a clip folder, in name order (the order `FrameSet` reads them).
pub fn png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing clip folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    Ok(files)
}

/// Writes the store of a dataset folder from its PNG clip folders (`DIR/clips/<clip>/*.png`,
/// every clip of `DIR/labels.csv`), replacing any earlier store: how an existing dataset is
/// made streamable (`pleura-train convert`). The PNG folders are left as they are.
pub fn convert(dataset: &Path) -> Result<StoreSummary> {
    let rows = labels::read(&dataset.join("labels.csv"), &TaskSet::standard())?;
    ensure!(
        !rows.is_empty(),
        "{}: no clip listed",
        dataset.join("labels.csv").display()
    );
    let mut lists = BTreeMap::new();
    let mut total = 0;
    for row in &rows {
        let folder = dataset.join("clips").join(&row.clip);
        let files = png_files(&folder)?;
        ensure!(
            !files.is_empty(),
            "clip folder {} holds no PNG frame",
            folder.display()
        );
        total += files.len();
        lists.insert(row.clip.clone(), files);
    }
    let bar = progress::bar(total, "convert", "frames");
    let mut writer = StoreWriter::create(dataset)?;
    for row in &rows {
        let files = &lists[&row.clip];
        let mut started = false;
        for file in files {
            let image = read_png(file)?;
            if !started {
                writer.begin_clip(&row.clip, image.width, image.height)?;
                started = true;
            }
            writer
                .push_frame(&image)
                .with_context(|| format!("storing {}", file.display()))?;
            bar.inc(1);
        }
        writer.end_clip()?;
    }
    bar.finish_and_clear();
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, seed: u8) -> GreyImage {
        let pixels = (0..w * h)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        GreyImage::from_pixels(w, h, pixels).unwrap()
    }

    fn write(dir: &Path, shard_bytes: u64) -> Vec<(String, Vec<GreyImage>)> {
        let clips: Vec<(String, Vec<GreyImage>)> = (0..5)
            .map(|c| {
                let (w, h) = (8 + c, 5 + 2 * c);
                (
                    format!("c{c}"),
                    (0..3 + c)
                        .map(|t| frame(w, h, (10 * c + t) as u8))
                        .collect(),
                )
            })
            .collect();
        let mut w = StoreWriter::with_shard_bytes(dir, shard_bytes).unwrap();
        for (id, frames) in &clips {
            w.add_clip(id, frames).unwrap();
        }
        let s = w.finish().unwrap();
        assert_eq!(s.clips, 5);
        assert_eq!(s.frames, (3..8).sum::<u64>());
        clips
    }

    #[test]
    fn frames_read_back_exactly_from_whole_clips_per_shard() {
        let tmp = tempfile::tempdir().unwrap();
        let clips = write(tmp.path(), 200);
        let store = FrameStore::open(tmp.path()).unwrap();
        assert!(exists(tmp.path()));
        assert!(store.index().shards.len() > 1, "{:?}", store.index().shards);
        let mut image = GreyImage::new(1, 1);
        for (id, frames) in &clips {
            let c = store.clip_number(id).unwrap();
            for (k, f) in frames.iter().enumerate() {
                store.read_frame(c, k, &mut image).unwrap();
                assert_eq!(&image, f);
            }
        }
        assert_eq!(store.verify().unwrap(), 25);
        assert!(!tmp.path().join("frames.partial").exists());
        // Rewriting replaces the store.
        write(tmp.path(), DEFAULT_SHARD_BYTES);
        assert_eq!(
            FrameStore::open(tmp.path()).unwrap().index().shards.len(),
            1
        );
    }

    #[test]
    fn truncated_and_corrupt_shards_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), 200);
        let shard = tmp.path().join("frames").join("shard-00001.bin");
        let bytes = fs::read(&shard).unwrap();

        // One flipped pixel bit: the frame's checksum fails, naming shard, clip and frame.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        fs::write(&shard, &bad).unwrap();
        let store = FrameStore::open(tmp.path()).unwrap();
        let clip = &store.clips()[store.clips().iter().rposition(|c| c.shard == 1).unwrap()];
        let (c, k) = (store.clip_number(&clip.clip).unwrap(), clip.frames - 1);
        let err = format!(
            "{:#}",
            store
                .read_frame(c, k, &mut GreyImage::new(1, 1))
                .unwrap_err()
        );
        assert!(
            err.contains("shard-00001.bin")
                && err.contains(&format!("clip `{}`", clip.clip))
                && err.contains("checksum"),
            "{err}"
        );
        assert!(store.verify().is_err());

        // A truncated shard is refused when the store opens.
        fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
        let err = format!("{:#}", FrameStore::open(tmp.path()).unwrap_err());
        assert!(
            err.contains("shard-00001.bin") && err.contains("truncated"),
            "{err}"
        );

        // A damaged index is named too.
        fs::write(&shard, &bytes).unwrap();
        fs::write(tmp.path().join("frames/index.json"), b"{\"format\": 1").unwrap();
        let err = format!("{:#}", FrameStore::open(tmp.path()).unwrap_err());
        assert!(err.contains("index.json"), "{err}");
    }

    #[test]
    fn writer_refuses_bad_input_without_panicking() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = StoreWriter::create(tmp.path()).unwrap();
        assert!(w.push_frame(&frame(2, 2, 0)).is_err());
        w.begin_clip("a", 2, 2).unwrap();
        assert!(w.push_frame(&frame(3, 2, 0)).is_err());
        assert!(w.end_clip().is_err(), "a clip without frames");
        w.add_clip("b", &[frame(2, 2, 1)]).unwrap();
        assert!(w.add_clip("b", &[frame(2, 2, 1)]).is_err(), "duplicate id");
        assert!(w.add_clip("c", &[]).is_err());
    }
}
