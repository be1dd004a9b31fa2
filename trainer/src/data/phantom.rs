//! Writes a synthetic cohort in the on-disk dataset layout (see [`crate::data`]).

use std::path::Path;

use anyhow::{ensure, Result};
use pleura::image::write_png;
use pleura::phantom::{cohort, montage, Clip, Labels, View};

use crate::data::labels::{self, ClipLabels};
use crate::progress;
use crate::tasks::STANDARD;

/// File in a dataset folder describing where the data came from.
pub const DATASET_INFO: &str = "dataset.json";

/// What to generate.
#[derive(Clone, Debug)]
pub struct PhantomOptions {
    /// Number of clips.
    pub clips: usize,
    /// Frames per clip.
    pub frames: usize,
    /// Frame width and height in pixels.
    pub size: usize,
    /// Seed of the cohort (same seed, same pixels).
    pub seed: u64,
}

/// Class indices of the standard tasks for phantom labels.
pub fn classes_of(labels: &Labels) -> Vec<Option<usize>> {
    vec![
        Some(usize::from(labels.view == View::Pleural)),
        labels.b_lines.map(usize::from),
        labels.effusion.map(usize::from),
    ]
}

/// Writes `out/clips/<clip>/frame_NNNN.png`, `out/labels.csv` and `out/montage.png` (the first
/// frame of up to 16 clips).
pub fn write_cohort(out: &Path, opts: &PhantomOptions) -> Result<()> {
    ensure!(
        opts.clips > 0 && opts.frames > 0,
        "--clips and --frames must be positive"
    );
    let plan = cohort(opts.clips, opts.seed);
    let bar = progress::bar(opts.clips * opts.frames, "phantom", "frames");
    let mut rows = Vec::new();
    let mut firsts = Vec::new();
    for c in plan {
        let mut clip = Clip::new(c.params, opts.size, opts.size)?;
        let dir = out.join("clips").join(&c.clip_id);
        for t in 0..opts.frames {
            let frame = clip.frame(t);
            write_png(&frame, &dir.join(format!("frame_{t:04}.png")))?;
            if t == 0 && firsts.len() < 16 {
                firsts.push(frame);
            }
            bar.inc(1);
        }
        rows.push(ClipLabels {
            clip: c.clip_id,
            patient: c.patient_id,
            classes: classes_of(&clip.labels()),
        });
    }
    bar.finish_and_clear();
    labels::write(&out.join("labels.csv"), &STANDARD, &rows)?;
    write_png(&montage(&firsts, 4)?, &out.join("montage.png"))?;
    let info = serde_json::json!({
        "source": "pleura phantom (synthetic lung ultrasound)",
        "synthetic": true,
        "generator": format!("pleura {}", env!("CARGO_PKG_VERSION")),
        "clips": opts.clips, "frames": opts.frames, "size": opts.size, "seed": opts.seed,
    });
    pleura::fsutil::write_atomic(
        &out.join(DATASET_INFO),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    log::info!(
        "wrote {} clips x {} frames to {}",
        opts.clips,
        opts.frames,
        out.display()
    );
    Ok(())
}
