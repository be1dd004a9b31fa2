//! One preprocessing path (issue 16): the same frames, read by the trainer's data path
//! (`prepare`, then `FrameSet::load` and `normalise`) and by the runtime's (its frame sources,
//! then `Preprocessor`), become the same network input, bit for bit. Two sources: a folder of
//! PNG frames and a `pleura record` recording of YUYV capture-card buffers.

use std::path::Path;
use std::time::{Duration, Instant};

use pleura::capture::images::ImageSequence;
use pleura::capture::pixfmt::{PixelFormat, RawLayout, YuvRange};
use pleura::capture::raw::{Converted, RawFrame};
use pleura::capture::recording::{Recorder, Replay, Timing};
use pleura::capture::FrameSource;
use pleura::image::{write_png, GreyImage};
use pleura::pack::InputSpec;
use pleura::phantom::{cohort, Clip};
use pleura::preprocess::{Preprocessor, Rect};
use pleura_trainer::data::frames::FrameSet;
use pleura_trainer::data::ingest::{prepare, Crop, PrepareOptions};
use pleura_trainer::data::split::SplitOptions;
use pleura_trainer::tasks::TaskSet;

/// Source frames: an odd size, with an off-centre crop, as a capture card's screen would be.
const WIDTH: usize = 157;
const HEIGHT: usize = 121;
const FRAMES: usize = 4;
const CROP: Rect = Rect {
    x: 13,
    y: 7,
    width: 131,
    height: 109,
};
/// The network input.
const SIDE: usize = 48;
const MEAN: f32 = 0.21;
const STD: f32 = 0.17;

fn phantom_frames(seed: u64) -> Vec<GreyImage> {
    let plan = cohort(1, seed).remove(0);
    let mut clip = Clip::new(plan.params, WIDTH, HEIGHT).unwrap();
    (0..FRAMES).map(|t| clip.frame(t)).collect()
}

/// YUYV, limited range: what most USB capture cards deliver.
fn yuyv(image: &GreyImage) -> Vec<u8> {
    image
        .pixels
        .chunks(2)
        .flat_map(|pair| {
            let y = |g: u8| (16.0 + f32::from(g) * 219.0 / 255.0).round() as u8;
            let second = pair.get(1).copied().unwrap_or(pair[0]);
            [y(pair[0]), 128, y(second), 128]
        })
        .collect()
}

fn record(dir: &Path, frames: &[GreyImage]) {
    // YUYV needs an even width: the recording drops the last column.
    let width = WIDTH & !1;
    let layout = RawLayout::tight(PixelFormat::Yuyv, width, HEIGHT).unwrap();
    let mut recorder = Recorder::create(dir, "parity test").unwrap();
    for (i, f) in frames.iter().enumerate() {
        let even = GreyImage::from_pixels(
            width,
            HEIGHT,
            f.pixels
                .chunks(WIDTH)
                .flat_map(|row| row[..width].to_vec())
                .collect(),
        )
        .unwrap();
        let data = yuyv(&even);
        recorder
            .write(&RawFrame {
                seq: i as u64,
                lost_before: 0,
                timestamp: Duration::from_millis(40 * i as u64),
                captured_at: Instant::now(),
                layout,
                data: &data,
                corrupt: false,
                range: YuvRange::Limited,
                truth: None,
            })
            .unwrap();
    }
    recorder.finish().unwrap();
}

/// The runtime's input for every frame of `source`.
fn runtime_inputs(mut source: impl FrameSource) -> Vec<f32> {
    let spec = InputSpec {
        mean: MEAN,
        std: STD,
        ..InputSpec::unnormalised(SIDE, SIDE)
    };
    let (w, h) = source.frame_size();
    let mut pre = Preprocessor::new(&spec, w, h, Some(CROP)).unwrap();
    let mut out = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        let mut input = vec![0.0; pre.output_len()];
        pre.run(&frame.image, &mut input).unwrap();
        out.extend(input);
    }
    out
}

/// The trainer's input for every frame of clip `clip` of the prepared dataset `data`.
fn trainer_inputs(data: &Path, clip: &str) -> Vec<f32> {
    let mut frames = FrameSet::load_clips(data, &TaskSet::standard(), [SIDE, SIDE], 1, |c| {
        c.clip == clip
    })
    .unwrap();
    frames.normalise(MEAN, STD).unwrap();
    frames.inputs
}

fn prepare_archive(archive: &Path, out: &Path, max_side: Option<usize>) {
    let labels = archive.join("labels.csv");
    std::fs::write(
        &labels,
        "clip,patient,view\npngs,p1,parenchymal\nrecorded,p2,pleural\nother,p3,pleural\n",
    )
    .unwrap();
    let report = prepare(&PrepareOptions {
        clips: archive.join("clips"),
        labels,
        out: out.to_path_buf(),
        stride: 1,
        max_frames: None,
        crop: Crop::Rect(CROP),
        max_side,
        // Three patients: one per part.
        split: SplitOptions {
            validation: 0.3,
            test: 0.3,
            folds: 3,
            seed: 0,
        },
    })
    .unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
}

#[test]
fn trainer_and_runtime_feed_the_network_the_same_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let clips = tmp.path().join("archive/clips");
    let pngs = clips.join("pngs");
    let frames = phantom_frames(3);
    for (i, f) in frames.iter().enumerate() {
        write_png(f, &pngs.join(format!("frame_{i:04}.png"))).unwrap();
    }
    record(&clips.join("recorded"), &phantom_frames(4));
    let other = clips.join("other");
    for (i, f) in phantom_frames(5).iter().enumerate() {
        write_png(f, &other.join(format!("frame_{i:04}.png"))).unwrap();
    }

    // Exact path: prepare keeps the crop's own resolution.
    let data = tmp.path().join("data");
    prepare_archive(&tmp.path().join("archive"), &data, None);
    let runtime_png = runtime_inputs(ImageSequence::open(&pngs).unwrap());
    let runtime_rec = runtime_inputs(Converted::new(
        Replay::open(&clips.join("recorded"), Timing::Fast).unwrap(),
    ));
    assert_eq!(runtime_png.len(), FRAMES * SIDE * SIDE);
    assert_eq!(runtime_rec.len(), FRAMES * SIDE * SIDE);
    assert_eq!(trainer_inputs(&data, "pngs"), runtime_png, "PNG folder");
    assert_eq!(trainer_inputs(&data, "recorded"), runtime_rec, "recording");

    // With --max-side the frames are resized twice and rounded to 8 bits in between: close to
    // the runtime's input, not equal. The bound measured here is what the docs state.
    let small = tmp.path().join("small");
    prepare_archive(&tmp.path().join("archive"), &small, Some(64));
    let scaled = trainer_inputs(&small, "pngs");
    let worst = scaled
        .iter()
        .zip(&runtime_png)
        .map(|(a, b)| (a - b).abs() * STD)
        .fold(0.0f32, f32::max);
    eprintln!("max difference after --max-side 64: {worst} (pixel scale)");
    assert!(worst > 0.0, "a second resize changes the input");
    assert!(
        worst < 0.15,
        "max difference {worst} in pixel scale (0..1) after a second resize"
    );
}
