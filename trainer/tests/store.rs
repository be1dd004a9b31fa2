//! The frame store (`trainer/src/data/store.rs`) and the PNG clip folders of one dataset give
//! the trainer identical tensors, and a store can be rebuilt from the folders.

use pleura_trainer::data::frames::FrameSet;
use pleura_trainer::data::phantom::{write_cohort_as, CohortFormat, PhantomOptions};
use pleura_trainer::data::store;
use pleura_trainer::tasks::TaskSet;

fn assert_same(a: &FrameSet, b: &FrameSet) {
    assert_eq!(a.dims, b.dims);
    assert_eq!(a.frame_clip, b.frame_clip);
    assert_eq!(a.position, b.position);
    assert_eq!(a.inputs.len(), b.inputs.len());
    // Bit for bit: the same pixels through the same Resize.
    assert!(a
        .inputs
        .iter()
        .zip(&b.inputs)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn store_and_png_folders_give_identical_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = PhantomOptions {
        clips: 6,
        frames: 5,
        size: 72,
        seed: 3,
    };
    write_cohort_as(dir, &opts, CohortFormat::Both).unwrap();
    assert!(store::exists(dir));
    let tasks = TaskSet::standard();
    for stride in [1, 2] {
        let from_store = FrameSet::load(dir, &tasks, [48, 48], stride).unwrap();
        let from_png = FrameSet::load_png_clips(dir, &tasks, [48, 48], stride, |_| true).unwrap();
        assert_eq!(from_store.frame_clip.len(), 6 * 5usize.div_ceil(stride));
        assert_same(&from_store, &from_png);
    }

    // Rebuilt from the folders, the store reads back the same frames.
    std::fs::remove_dir_all(dir.join("frames")).unwrap();
    assert!(!store::exists(dir));
    store::convert(dir).unwrap();
    let rebuilt = FrameSet::load(dir, &tasks, [48, 48], 1).unwrap();
    let from_png = FrameSet::load_png_clips(dir, &tasks, [48, 48], 1, |_| true).unwrap();
    assert_same(&rebuilt, &from_png);
}
