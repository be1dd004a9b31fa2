//! 8-bit greyscale images: what every frame becomes before preprocessing.

use anyhow::{ensure, Result};

/// A row-major 8-bit greyscale image, `pixels.len() == width * height`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreyImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major pixels, 0 = black, 255 = white.
    pub pixels: Vec<u8>,
}

impl GreyImage {
    /// A black image of the given size.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![0; width * height],
        }
    }

    /// Wraps row-major pixels, checking that their count matches the size.
    pub fn from_pixels(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self> {
        ensure!(
            pixels.len() == width * height,
            "image of {width}x{height} needs {} pixels, got {}",
            width * height,
            pixels.len()
        );
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// The pixel at column `x`, row `y`.
    #[inline]
    pub fn get(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }
}

/// Reads a PNG file as 8-bit grey. Grey, grey+alpha, RGB and RGBA images of 8 or 16 bits are
/// accepted; colour is converted with ITU-R BT.601 luma weights.
pub fn read_png(path: &std::path::Path) -> Result<GreyImage> {
    use anyhow::Context;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{}: not a PNG image", path.display()))?;
    let size = reader
        .output_buffer_size()
        .with_context(|| format!("{}: image too large", path.display()))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("{}: corrupt or truncated PNG data", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|px| match channels {
            1 | 2 => px[0],
            _ => {
                ((299 * px[0] as u32 + 587 * px[1] as u32 + 114 * px[2] as u32 + 500) / 1000) as u8
            }
        })
        .collect();
    GreyImage::from_pixels(w, h, pixels).with_context(|| format!("{}", path.display()))
}

/// Writes `image` as an 8-bit grey PNG (atomically).
pub fn write_png(image: &GreyImage, path: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width as u32, image.height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&image.pixels)?;
    }
    crate::fsutil::write_atomic(path, &bytes)
        .with_context(|| format!("writing PNG {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let img = GreyImage::from_pixels(5, 3, (0..15).map(|v| v * 17).collect()).unwrap();
        write_png(&img, &path).unwrap();
        assert_eq!(read_png(&path).unwrap(), img);
    }

    #[test]
    fn truncated_png_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        let img = GreyImage::from_pixels(64, 64, vec![9; 4096]).unwrap();
        write_png(&img, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = format!("{:#}", read_png(&path).unwrap_err());
        assert!(err.contains("t.png"), "{err}");
    }

    #[test]
    fn wrong_pixel_count_is_an_error() {
        assert!(GreyImage::from_pixels(4, 4, vec![0; 15]).is_err());
    }
}
