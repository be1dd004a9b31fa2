//! Renders a contact sheet of the lung ultrasound phantom and writes it as a PNG.
//!
//! ```text
//! cargo run --release --example phantom_montage -- /tmp/phantom.png [size] [clips-per-kind] [frames] [seed]
//! ```
//!
//! Rows: for each label kind (A-lines, B-lines, pleural without effusion, pleural with
//! effusion) `clips-per-kind` clips; columns: `frames` frames 5 apart, so lung sliding,
//! breathing and speckle coherence can be seen along a row. Also prints render times.

use anyhow::Result;
use pleura::image::write_png;
use pleura::phantom::{montage, Clip, ClipParams, Labels};
use std::time::Instant;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("/tmp/phantom_montage.png");
    let arg =
        |k: usize, default: usize| args.get(k).and_then(|s| s.parse().ok()).unwrap_or(default);
    let size = arg(2, 256);
    let per_kind = arg(3, 1);
    let frames = arg(4, 4);
    let seed = arg(5, 1) as u64;
    let mut tiles = Vec::new();
    let (mut setup, mut render, mut n) = (0.0, 0.0, 0usize);
    for (k, labels) in Labels::ALL.iter().enumerate() {
        for c in 0..per_kind {
            let params = ClipParams::sample(*labels, seed * 1000 + (k * per_kind + c) as u64);
            eprintln!(
                "{:12} {:?} depth {:.1} cm, pleura {:.1} cm, {} ribs, {} B-lines",
                labels.name(),
                params.probe,
                params.depth_cm,
                params.pleura_depth_cm,
                params.ribs.len(),
                params.b_lines.len()
            );
            let t0 = Instant::now();
            let mut clip = Clip::new(params, size, size)?;
            setup += t0.elapsed().as_secs_f64();
            for f in 0..frames {
                let t1 = Instant::now();
                let img = clip.frame(f * 5);
                render += t1.elapsed().as_secs_f64();
                n += 1;
                tiles.push(img);
            }
        }
    }
    let sheet = montage(&tiles, frames)?;
    write_png(&sheet, std::path::Path::new(path))?;
    eprintln!(
        "wrote {path} ({}x{}); {size}x{size}: setup {:.1} ms a clip, render {:.2} ms a frame",
        sheet.width,
        sheet.height,
        1e3 * setup / (4 * per_kind) as f64,
        1e3 * render / n as f64
    );
    Ok(())
}
