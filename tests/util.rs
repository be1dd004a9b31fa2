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
