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

/// Extensions of still-image frame files (image sequences, image-folder clips).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The PNG and JPEG files of `dir`, in name order.
pub fn frame_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    use anyhow::Context;
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads a PNG or JPEG file as 8-bit grey (colour through luma).
pub fn read_image(path: &std::path::Path) -> Result<GreyImage> {
    use anyhow::Context;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "png" {
        return read_png(path);
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::Luma);
    let mut decoder =
        zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(&bytes), options);
    let pixels = decoder
        .decode()
        .map_err(|e| anyhow::anyhow!("{}: corrupt or truncated JPEG: {e:?}", path.display()))?;
    let (w, h) = decoder
        .dimensions()
        .with_context(|| format!("{}: JPEG without dimensions", path.display()))?;
    GreyImage::from_pixels(w, h, pixels).with_context(|| format!("{}", path.display()))
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
