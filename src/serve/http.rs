//! The HTTP side: `tiny_http` parses requests on its own threads; this thread routes them.
//! Every answer but the stream is small and immediate; each stream viewer gets a thread.

use std::io::Cursor;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::state::{metrics_text, status_json, Health, Shared};
use super::stream;

/// The page, one file: no build step, no external asset.
const PAGE: &str = include_str!("page.html");
/// How often the request loop looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(200);

/// Answers requests until shutdown.
pub(crate) fn serve(server: tiny_http::Server, shared: Arc<Shared>) {
    while !shared.closing() {
        match server.recv_timeout(POLL) {
            Ok(Some(request)) => route(request, &shared),
            Ok(None) => {}
            Err(err) => {
                log::warn!("live view: {err}; the server stops");
                return;
            }
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(h) => h,
        Err(()) => unreachable!("static header {name}: {value} is valid"),
    }
}

fn reply(request: Request, status: u16, content_type: &str, body: String) {
    let response = Response::new(
        StatusCode(status),
        vec![
            header("Content-Type", content_type),
            header("Cache-Control", "no-store"),
        ],
        Cursor::new(body.into_bytes()),
        None,
        None,
    );
    if let Err(err) = request.respond(response) {
        log::debug!("live view: answering a request: {err}");
    }
}

fn route(request: Request, shared: &Arc<Shared>) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    match (method, path.as_str()) {
        (Method::Get | Method::Head, "/") => {
            reply(request, 200, "text/html; charset=utf-8", PAGE.to_string())
        }
        (Method::Get, "/stream.mjpg") => match stream::join(shared) {
            Some(id) => {
                let shared = Arc::clone(shared);
                let spawned = std::thread::Builder::new()
                    .name(format!("pleura-viewer-{id}"))
                    .spawn(move || stream::serve_viewer(shared, id, request.into_writer()));
                if let Err(err) = spawned {
                    log::warn!("live view: starting a viewer thread: {err}");
                }
            }
            None => reply(
                request,
                503,
                TEXT,
                format!("too many viewers (at most {})\n", shared.config.max_viewers),
            ),
        },
        (Method::Get, "/status.json") => {
            let body = status_json(shared).to_string();
            reply(request, 200, JSON, body)
        }
        (Method::Get, "/metrics") => reply(
            request,
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(shared),
        ),
        (Method::Get | Method::Head, "/healthz") => {
            let stall = Duration::from_secs_f64(shared.config.stall_seconds);
            let health = Health::of(&shared.status(), Instant::now(), shared.started, stall);
            let status = if health.is_live() { 200 } else { 503 };
            reply(
                request,
                status,
                TEXT,
                format!("{}: {}\n", health.word(), health.message()),
            )
        }
        (Method::Post, "/clip") => {
            let marks = shared.marks.fetch_add(1, Ordering::Relaxed) + 1;
            let clip = shared.status().clip.map(|c| c.index);
            let body = serde_json::json!({"marked": true, "marks": marks, "ending_clip": clip});
            reply(request, 202, JSON, body.to_string())
        }
        (_, "/" | "/stream.mjpg" | "/status.json" | "/metrics" | "/healthz" | "/clip") => {
            reply(request, 405, TEXT, "method not allowed\n".into())
        }
        _ => reply(
            request,
            404,
            TEXT,
            "not found: try / /stream.mjpg /status.json /metrics /healthz\n".into(),
        ),
    }
}
