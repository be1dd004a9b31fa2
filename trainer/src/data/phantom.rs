//! Writes a synthetic cohort in the on-disk dataset layout (see [`crate::data`]): PNG clip
//! folders, the frame store, or both.

use std::path::Path;

use anyhow::{ensure, Result};
use pleura::image::{write_png, GreyImage};
use pleura::phantom::{cohort, montage, Clip, Labels};

use crate::data::labels::{self, ClipLabels};
use crate::data::store::StoreWriter;
use crate::progress;
use crate::tasks::TaskSet;

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

/// Class indices of the tasks of `tasks` for phantom labels: the runtime's one mapping of the
/// phantom's labels to task classes ([`pleura::tasks::phantom`]).
pub fn classes_of(labels: &Labels, tasks: &TaskSet) -> Vec<Option<usize>> {
    tasks.classes_of(&pleura::tasks::phantom(labels, tasks))
}

/// How a cohort is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CohortFormat {
    /// PNG clip folders (`out/clips/<clip>/frame_NNNN.png`) only.
    #[default]
    Png,
    /// The frame store (`out/frames/`) only: the cheap form of a large cohort.
    Store,
    /// Both: folders to look at, the store to train from.
    Both,
}

/// Writes `out/clips/<clip>/frame_NNNN.png`, `out/labels.csv` and `out/montage.png` (the first
/// frame of up to 16 clips).
pub fn write_cohort(out: &Path, opts: &PhantomOptions) -> Result<()> {
    write_cohort_as(out, opts, CohortFormat::Png)
}

/// [`write_cohort`] in the given layout. Clips are rendered in parallel (rayon) a block at a
/// time and written in order, so memory holds one block of frames whatever the cohort size.
pub fn write_cohort_as(out: &Path, opts: &PhantomOptions, format: CohortFormat) -> Result<()> {
    use rayon::prelude::*;
    ensure!(
        opts.clips > 0 && opts.frames > 0,
        "--clips and --frames must be positive"
    );
    let tasks = TaskSet::standard();
    let plan = cohort(opts.clips, opts.seed);
    let bar = progress::bar(opts.clips * opts.frames, "phantom", "frames");
    let mut rows = Vec::new();
    let mut firsts = Vec::new();
    let mut store = match format {
        CohortFormat::Png => None,
        CohortFormat::Store | CohortFormat::Both => Some(StoreWriter::create(out)?),
    };
    let pngs = format != CohortFormat::Store;
    for block in plan.chunks(64) {
        let rendered = block
            .par_iter()
            .map(|c| -> Result<(Vec<GreyImage>, Labels)> {
                let mut clip = Clip::new(c.params.clone(), opts.size, opts.size)?;
                let frames = (0..opts.frames).map(|t| clip.frame(t)).collect();
                Ok((frames, clip.labels()))
            })
            .collect::<Result<Vec<_>>>()?;
        for (c, (frames, clip_labels)) in block.iter().zip(rendered) {
            if pngs {
                let dir = out.join("clips").join(&c.clip_id);
                for (t, frame) in frames.iter().enumerate() {
                    write_png(frame, &dir.join(format!("frame_{t:04}.png")))?;
                }
            }
            if let Some(store) = store.as_mut() {
                store.add_clip(&c.clip_id, &frames)?;
            }
            if firsts.len() < 16 {
                firsts.extend(frames.into_iter().next());
            }
            bar.inc(opts.frames as u64);
            rows.push(ClipLabels {
                clip: c.clip_id.clone(),
                patient: c.patient_id.clone(),
                classes: classes_of(&clip_labels, &tasks),
            });
        }
    }
    bar.finish_and_clear();
    if let Some(store) = store {
        store.finish()?;
    }
    labels::write(&out.join("labels.csv"), &tasks, &rows)?;
    write_png(&montage(&firsts, 4)?, &out.join("montage.png"))?;
    let info = serde_json::json!({
        "source": "pleura phantom (synthetic lung ultrasound)",
        "synthetic": true,
        "generator": format!("pleura {}", env!("CARGO_PKG_VERSION")),
        "clips": opts.clips, "frames": opts.frames, "size": opts.size, "seed": opts.seed,
        // Frames are rendered as a 25 fps scan (breathing and sliding per frame).
        "frame_seconds": 0.04,
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
