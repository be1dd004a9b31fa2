//! Clips stored as a folder of still images (PNG or JPEG), one file per frame, in name order.

use std::path::Path;

use anyhow::{ensure, Result};
use pleura::image::{frame_files, read_image, GreyImage};

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
