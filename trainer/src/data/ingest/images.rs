//! Clips stored as a folder of still images (PNG or JPEG), one file per frame, in name order.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use pleura::image::{read_png, GreyImage};
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Extensions of frame files in an image folder.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The frame files of `dir`, in name order.
pub fn frame_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads a PNG or JPEG file as 8-bit grey (colour through luma).
pub fn read_image(path: &Path) -> Result<GreyImage> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "png" {
        return read_png(path);
    }
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut decoder = JpegDecoder::new_with_options(std::io::Cursor::new(&bytes), options);
    let pixels = decoder
        .decode()
        .map_err(|e| anyhow::anyhow!("{}: corrupt or truncated JPEG: {e:?}", path.display()))?;
    let (w, h) = decoder
        .dimensions()
        .with_context(|| format!("{}: JPEG without dimensions", path.display()))?;
    GreyImage::from_pixels(w, h, pixels).with_context(|| format!("{}", path.display()))
}

/// Every `stride`-th image of the folder `dir` (at most `max_frames`); all must share one size.
pub fn read_frames(dir: &Path, stride: usize, max_frames: Option<usize>) -> Result<Vec<GreyImage>> {
    ensure!(stride > 0, "frame stride must be positive");
    let files = frame_files(dir)?;
    ensure!(
        !files.is_empty(),
        "{}: no PNG or JPEG frames in the folder",
        dir.display()
    );
    let mut frames: Vec<GreyImage> = Vec::new();
    for file in files
        .iter()
        .step_by(stride)
        .take(max_frames.unwrap_or(usize::MAX))
    {
        let image = read_image(file)?;
        if let Some(first) = frames.first() {
            ensure!(
                (image.width, image.height) == (first.width, first.height),
                "{}: {}x{} differs from the clip's first frame ({}x{})",
                file.display(),
                image.width,
                image.height,
                first.width,
                first.height
            );
        }
        frames.push(image);
    }
    Ok(frames)
}
