//! Contact sheets: many frames tiled into one image for looking at them.

use crate::image::GreyImage;
use anyhow::{ensure, Result};

/// Width of the black gutter between tiles, pixels.
pub const GUTTER: usize = 2;

/// Tiles images (all the same size) into a grid `cols` wide with a 2-pixel black gutter
/// (between tiles only). The last row may be incomplete (black).
pub fn montage(images: &[GreyImage], cols: usize) -> Result<GreyImage> {
    ensure!(!images.is_empty(), "montage of no images");
    ensure!(cols > 0, "montage needs at least one column");
    let (w, h) = (images[0].width, images[0].height);
    ensure!(
        images.iter().all(|im| im.width == w && im.height == h),
        "montage images differ in size"
    );
    let cols = cols.min(images.len());
    let rows = images.len().div_ceil(cols);
    let (mw, mh) = (
        cols * w + (cols - 1) * GUTTER,
        rows * h + (rows - 1) * GUTTER,
    );
    let mut out = GreyImage::new(mw, mh);
    for (n, im) in images.iter().enumerate() {
        let (x0, y0) = ((n % cols) * (w + GUTTER), (n / cols) * (h + GUTTER));
        for y in 0..h {
            let dst = (y0 + y) * mw + x0;
            out.pixels[dst..dst + w].copy_from_slice(&im.pixels[y * w..(y + 1) * w]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn montage_sizes_and_placement() {
        let tiles: Vec<GreyImage> = (0..5)
            .map(|k| GreyImage::from_pixels(3, 2, vec![10 + k as u8; 6]).unwrap())
            .collect();
        let m = montage(&tiles, 2).unwrap();
        assert_eq!((m.width, m.height), (2 * 3 + 2, 3 * 2 + 2 * 2));
        assert_eq!(m.get(0, 0), 10);
        assert_eq!(m.get(3, 0), 0, "gutter");
        assert_eq!(m.get(5, 0), 11);
        assert_eq!(m.get(0, 4), 12);
        assert_eq!(m.get(7, 9), 0, "missing sixth tile is black");
        let one = montage(&tiles[..1], 4).unwrap();
        assert_eq!((one.width, one.height), (3, 2));
        assert!(montage(&[], 2).is_err());
        assert!(montage(&tiles, 0).is_err());
        let odd = vec![tiles[0].clone(), GreyImage::new(4, 2)];
        assert!(montage(&odd, 2).is_err());
    }
}
