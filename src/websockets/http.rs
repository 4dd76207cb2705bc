//! `http_dir`: static files for plain GET requests on a WebSockets
//! listener, as Mosquitto serves them, never from outside the folder.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::handshake::{Refusal, Status};

/// A file found for a request: open, with its length and Content-Type.
#[derive(Debug)]
pub struct Found {
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
    pub content_type: &'static str,
}

/// Finds the file a request target names inside `dir`. Refuses `..`
/// segments (encoded or not) and any path that leaves `dir` once symbolic
/// links are resolved; a folder gives its `index.html`.
pub fn resolve(dir: &Path, target: &str) -> Result<Found, Refusal> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)
        .ok_or_else(|| Refusal::new(Status::BadRequest, "malformed %-escape in the path"))?;
    let forbidden = || Refusal::new(Status::Forbidden, format!("path {target} leaves http_dir"));
    let not_found = || Refusal::new(Status::NotFound, format!("no file for {target}"));
    let mut rel = PathBuf::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(forbidden()),
            s if s.contains('\0') => {
                return Err(Refusal::new(Status::BadRequest, "NUL in the path"));
            }
            s => rel.push(s),
        }
    }
    let root = dir.canonicalize().map_err(|_| not_found())?;
    let mut full = root.join(&rel).canonicalize().map_err(|_| not_found())?;
    if !full.starts_with(&root) {
        return Err(forbidden());
    }
    if full.is_dir() {
        full = full
            .join("index.html")
            .canonicalize()
            .map_err(|_| not_found())?;
        if !full.starts_with(&root) {
            return Err(forbidden());
        }
    }
    let file = File::open(&full).map_err(|_| not_found())?;
    let meta = file.metadata().map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(not_found());
    }
    Ok(Found {
        content_type: content_type(&full),
        len: meta.len(),
        file,
        path: full,
    })
}

/// Decodes `%XX` escapes; None when one is malformed or the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The Content-Type of a file, by its extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// The head of a 200 answer for `found`.
pub fn ok_head(found: &Found) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        found.content_type, found.len
    )
}
