//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The committed default pack.
pub fn default_pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default")
}

/// A copy of the default pack in a fresh temporary folder, to corrupt.
pub fn pack_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let dst = dir.path().join("pack");
    copy_dir(&default_pack(), &dst);
    (dir, dst)
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// Runs the `pleura` binary with `args`.
pub fn pleura(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pleura"))
        .args(args)
        .output()
        .expect("running pleura")
}

/// Standard error of a run as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Edits `manifest.json` of `pack` as JSON.
pub fn edit_manifest(pack: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = pack.join("manifest.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

/// A frame source playing a script: per step a good frame, a frame of the wrong size, a frame
/// the source itself reports bad, or an error that ends the stream.
pub struct ScriptedSource {
    pub steps: Vec<Step>,
    pub next: usize,
}

/// One step of a [`ScriptedSource`].
#[derive(Clone, Copy, Debug)]
pub enum Step {
    Good,
    WrongSize,
    ReportedBad,
    Fail,
}

/// Side of the frames a [`ScriptedSource`] announces.
pub const SCRIPTED_SIDE: usize = 64;

impl pleura::capture::FrameSource for ScriptedSource {
    fn next_frame(&mut self) -> anyhow::Result<Option<pleura::capture::Frame>> {
        let seq = self.next as u64;
        let Some(step) = self.steps.get(self.next).copied() else {
            return Ok(None);
        };
        self.next += 1;
        let side = match step {
            Step::Good => SCRIPTED_SIDE,
            Step::WrongSize => SCRIPTED_SIDE / 2,
            Step::ReportedBad => {
                let reason = "torn buffer".to_string();
                return Err(pleura::capture::BadFrame { seq, reason }.into());
            }
            Step::Fail => anyhow::bail!("device unplugged"),
        };
        let pixels = (0..side * side).map(|i| (i % 251) as u8).collect();
        Ok(Some(pleura::capture::Frame {
            seq,
            captured_at: std::time::Instant::now(),
            capture_time: std::time::Duration::ZERO,
            convert_time: Some(std::time::Duration::from_micros(5)),
            image: pleura::image::GreyImage::from_pixels(side, side, pixels)?,
            truth: None,
            layout: pleura::capture::pixfmt::RawLayout {
                format: pleura::capture::pixfmt::PixelFormat::Grey,
                width: side,
                height: side,
                stride: side,
            },
            timestamp: std::time::Duration::ZERO,
            lost_before: 0,
        }))
    }

    fn frame_size(&self) -> (usize, usize) {
        (SCRIPTED_SIDE, SCRIPTED_SIDE)
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}

/// A writer that sleeps after every line: a deliberately slow consumer of frame records.
pub struct SlowWriter {
    pub text: Vec<u8>,
    pub per_line: std::time::Duration,
}

impl std::io::Write for SlowWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        if buf.contains(&b'\n') {
            std::thread::sleep(self.per_line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON lines of a run's output.
pub fn json_lines(text: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(text)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}
