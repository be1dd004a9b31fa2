//! `tools/doctor.sh` (what `make setup` and `make doctor` run) finds prerequisites the way the
//! build does. Issue 14: a fresh machine ships LLVM's `libclang-cpp.so.14`, which is not the
//! libclang that bindgen loads; set-up took it for libclang, skipped `libclang-dev`, and the
//! build of the V4L2 bindings failed.

use std::path::Path;
use std::process::Command;

/// Runs the doctor against the fake root `root` and returns its report.
fn doctor(root: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/doctor.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--root")
        .arg(root)
        .env_remove("LIBCLANG_PATH")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("PLEURA_FONT")
        .output()
        .expect("running tools/doctor.sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` line in\n{report}"))
}

/// 64-bit ELF magic and class, all clang-sys reads of a candidate file.
const ELF64: &[u8] = b"\x7fELF\x02\x01\x01\0";

#[test]
fn issue_14_libclang_cpp_alone_is_missing_libclang() {
    let root = tempfile::tempdir().unwrap();
    let llvm = root.path().join("usr/lib/llvm-14/lib");
    std::fs::create_dir_all(&llvm).unwrap();
    std::fs::write(llvm.join("libclang-cpp.so.14"), ELF64).unwrap();
    let multiarch = root.path().join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&multiarch).unwrap();
    std::os::unix::fs::symlink(
        "../llvm-14/lib/libclang-cpp.so.14",
        multiarch.join("libclang-cpp.so.14"),
    )
    .unwrap();

    let report = doctor(root.path());
    let libclang = line(&report, "libclang");
    assert!(libclang.starts_with("missing"), "{report}");
    assert!(libclang.contains("apt-get install") && libclang.contains("libclang-dev"));
    for name in ["ffmpeg", "font", "rust"] {
        assert!(line(&report, name).starts_with("missing"), "{report}");
    }

    // What libclang-dev brings (libclang.so.1 in LLVM's folder) is found, and named.
    std::fs::write(llvm.join("libclang.so.1"), ELF64).unwrap();
    let report = doctor(root.path());
    let libclang = line(&report, "libclang");
    assert!(libclang.starts_with("found"), "{report}");
    assert!(
        libclang.ends_with("usr/lib/llvm-14/lib/libclang.so.1"),
        "{report}"
    );
}

#[test]
fn a_32_bit_or_non_elf_libclang_is_not_taken() {
    let root = tempfile::tempdir().unwrap();
    let lib = root.path().join("usr/lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("libclang.so"), b"\x7fELF\x01\x01\x01\0").unwrap();
    std::fs::write(lib.join("libclang-14.so"), b"not a library").unwrap();
    assert!(line(&doctor(root.path()), "libclang").starts_with("missing"));
}

#[test]
fn tools_and_font_under_the_root_are_found() {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["ffmpeg", "ffprobe"] {
        let path = bin.join(tool);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let fonts = root.path().join("usr/share/fonts/truetype/dejavu");
    std::fs::create_dir_all(&fonts).unwrap();
    std::fs::write(fonts.join("DejaVuSans.ttf"), b"").unwrap();
    let report = doctor(root.path());
    assert!(line(&report, "ffmpeg").starts_with("found"), "{report}");
    assert!(line(&report, "font").starts_with("found"), "{report}");
}
