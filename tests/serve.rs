//! The live view of `pleura run --serve` (cargo feature `serve`), driven over real HTTP: a run
//! on the phantom serves `/status.json`, `/metrics`, `/healthz`, `/` and `/stream.mjpg`, and a
//! viewer that never reads does not slow inference.
#![cfg(feature = "serve")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

fn pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default")
}

/// A `pleura run --serve 127.0.0.1:0` in the background, with the address it listens on.
struct Served {
    child: Child,
    addr: String,
    /// Lines of its standard error after the address line, as they come.
    stderr: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pleura"))
            .arg("run")
            .arg("--pack")
            .arg(pack())
            .args([
                "--source",
                "phantom:1",
                "--serve",
                "127.0.0.1:0",
                "--output",
            ])
            .arg(dir.path().join("run.jsonl"))
            .arg("--summary")
            .arg(dir.path().join("summary.json"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (addr, stderr) = address(child.stderr.take().unwrap());
        Served {
            child,
            addr,
            stderr,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn get_text(&self, path: &str) -> String {
        ureq::get(&self.url(path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.get_text("/status.json")).unwrap()
    }

    /// Waits for the run to end; its exit status must be success. Returns its stderr lines.
    fn wait(&mut self) -> Vec<String> {
        let status = self.child.wait().unwrap();
        let lines: Vec<String> = self.stderr.iter().collect();
        assert!(status.success(), "pleura run failed: {}", lines.join("\n"));
        lines
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Reads standard error up to the line that names the address; the rest goes to a channel.
fn address(stderr: ChildStderr) -> (String, mpsc::Receiver<String>) {
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("pleura ended before serving: {}", seen.join("\n")))
            .unwrap();
        if let Some(rest) = line.strip_prefix("live view: http://") {
            break rest.split('/').next().unwrap().to_string();
        }
        seen.push(line);
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (addr, rx)
}

/// Polls `/status.json` until `done` holds for it (at most 60 s).
fn status_until(served: &Served, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let status = served.status();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < until, "status never got there: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first `n` JPEG parts of `/stream.mjpg`, each decoded: `(width, height)`.
fn stream_frames(served: &Served, n: usize) -> Vec<(usize, usize)> {
    let mut response = ureq::get(&served.url("/stream.mjpg")).call().unwrap();
    let kind = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("multipart/x-mixed-replace"), "{kind}");
    let mut body = BufReader::new(response.body_mut().as_reader());
    let mut frames = Vec::new();
    while frames.len() < n {
        // Part headers up to the empty line, then Content-Length bytes of JPEG.
        let mut length = None;
        loop {
            let mut line = String::new();
            assert!(body.read_line(&mut line).unwrap() > 0, "stream ended");
            let line = line.trim_end();
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = Some(v.parse::<usize>().unwrap());
            }
            if line.is_empty() && length.is_some() {
                break;
            }
        }
        let mut jpeg = vec![0u8; length.unwrap()];
        body.read_exact(&mut jpeg).unwrap();
        let mut decoder = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(&jpeg));
        decoder.decode().expect("a JPEG part that decodes");
        let (w, h) = decoder.dimensions().unwrap();
        frames.push((w, h));
    }
    frames
}

#[test]
fn a_served_run_reports_what_it_writes() {
    let frames = 150;
    let served = Served::start(&[
        "--fps",
        "50",
        "--frames",
        &frames.to_string(),
        "--linger",
        "60",
        "--clip-seconds",
        "2",
    ]);

    // While frames flow: the page, health, the stream and metrics.
    let page = served.get_text("/");
    assert!(
        page.contains("<html") && page.contains("stream.mjpg"),
        "{page}"
    );
    let live = status_until(&served, |s| s["state"] == "live");
    let health = ureq::get(&served.url("/healthz")).call().unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(live["pack"]["name"], "default");
    for (w, h) in stream_frames(&served, 2) {
        assert!(w >= 256 && h >= 256, "{w}x{h}");
    }
    let metrics = served.get_text("/metrics");
    for name in [
        "# TYPE pleura_frames_total counter",
        "# TYPE pleura_dropped_frames_total counter",
        "# TYPE pleura_stage_latency_seconds histogram",
        "pleura_stream_frames_encoded_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }

    // After the run (it lingers): the status holds the last frame's decisions, which must be
    // those of the last JSON record.
    let end = status_until(&served, |s| s["state"] == "ended");
    let health = ureq::get(&served.url("/healthz")).call();
    assert!(
        matches!(health, Err(ureq::Error::StatusCode(503))),
        "/healthz after the run: {health:?}"
    );
    let text = std::fs::read_to_string(served.dir.path().join("run.jsonl")).unwrap();
    let last: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .rfind(|r| r.get("seq").is_some())
        .unwrap();
    assert_eq!(end["frame"]["seq"], last["seq"]);
    assert!(end["clips_total"].as_u64().unwrap() >= 2, "{end}");
    for task in end["tasks"].as_array().unwrap() {
        let name = task["name"].as_str().unwrap();
        let record = &last["tasks"][name];
        if record.is_null() {
            assert_eq!(task["state"], "skipped", "{name}: {task}");
        } else {
            assert_eq!(task["decision"], record["decision"], "{name}");
            let (a, b) = (task["p"].as_f64().unwrap(), record["p"].as_f64().unwrap());
            assert!((a - b).abs() < 1e-5, "{name}: p {a} vs {b}");
        }
    }
    // Stop lingering: the test has what it needs.
    drop(served);
}

#[test]
fn a_stalled_viewer_does_not_slow_inference() {
    let frames = 200;
    // Large frames, so that the JPEGs soon fill the socket buffers of the viewer that never reads.
    let mut served = Served::start(&[
        "--fps",
        "50",
        "--frames",
        &frames.to_string(),
        "--phantom-size",
        "960",
    ]);
    // A viewer that asks for the stream and never reads a byte of it.
    let mut stalled = TcpStream::connect(&served.addr).unwrap();
    write!(
        stalled,
        "GET /stream.mjpg HTTP/1.1\r\nHost: {}\r\n\r\n",
        served.addr
    )
    .unwrap();
    let lines = served.wait();
    let summary = std::fs::read_to_string(served.dir.path().join("summary.json")).unwrap();
    let summary: Value = serde_json::from_str(&summary).unwrap();
    // Paced at 50 fps, every frame was inferred and none dropped: the stalled socket held up
    // nothing but its own thread.
    assert_eq!(summary["frames"], frames, "{summary}");
    assert_eq!(summary["dropped"], 0, "{summary}");
    let counters = lines
        .iter()
        .find(|l| l.starts_with("live view: ") && l.contains("frames encoded"))
        .unwrap_or_else(|| panic!("no stream counters in:\n{}", lines.join("\n")));
    // "E frames encoded, S sent, K skipped by viewers, R viewers refused": frames are encoded
    // only for a viewer waiting for one, so at most one is encoded and not sent (the one its
    // blocked write holds); the rest are skipped for it.
    eprintln!("{counters}");
    let numbers: Vec<u64> = counters
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [encoded, sent, skipped, _refused] = numbers[..] else {
        panic!("{counters}")
    };
    assert!(encoded <= sent + 1, "{counters}");
    assert!(skipped > 0, "{counters}");
    drop(stalled);
}
