//! The per-request debug capture ([`CaptureHandle`]) that the
//! [`DebugCaptureLayer`](crate::layers::DebugCaptureLayer) opens and the layers below write
//! into (the translation, the account pool): the files, their bounds, the masking of
//! secrets and the rotation of old folders.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

/// Orders capture folders written in the same millisecond.
static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bound on each captured file.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// `DEBUG_MODE`: which requests leave a capture folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DebugMode {
    /// None (the default): the layer adds one branch to a request, nothing else.
    #[default]
    Off,
    /// Only the requests that failed (an error status, or a stream that failed after its 200).
    Errors,
    /// Every request.
    All,
}

impl std::str::FromStr for DebugMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "" | "false" | "0" | "none" => Ok(DebugMode::Off),
            "errors" | "error" => Ok(DebugMode::Errors),
            "all" | "true" | "1" => Ok(DebugMode::All),
            other => Err(format!(
                "DEBUG_MODE must be off, errors or all, not {other:?}"
            )),
        }
    }
}

/// Where and what the debug capture writes.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// `DEBUG_MODE`.
    pub mode: DebugMode,
    /// `DEBUG_DIR`: the folder the capture folders go into.
    pub dir: PathBuf,
    /// Folders kept (oldest deleted first).
    pub keep: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: DebugMode::Off,
            dir: PathBuf::from("debug_logs"),
            keep: 50,
        }
    }
}

#[derive(Debug, Default)]
struct Buf {
    data: BytesMut,
    truncated: bool,
}

impl Buf {
    fn push(&mut self, b: &[u8]) {
        if self.truncated {
            return;
        }
        let room = MAX_FILE_BYTES.saturating_sub(self.data.len());
        if b.len() > room {
            self.data.extend_from_slice(&b[..room]);
            self.truncated = true;
        } else {
            self.data.extend_from_slice(b);
        }
    }

    fn finish(&self) -> Vec<u8> {
        let mut v = self.data.to_vec();
        if self.truncated {
            v.extend_from_slice(b"\n[capture truncated at the per-file limit]\n");
        }
        v
    }
}

#[derive(Debug, Default)]
struct Data {
    request_id: String,
    request_body: Bytes,
    kiro_body: Option<Bytes>,
    raw: Buf,
    modified: Buf,
    logs: Buf,
    error: Option<(u16, String)>,
    written: bool,
}

/// Per-request capture, found in the request extensions by the layers below.
#[derive(Clone, Debug)]
pub struct CaptureHandle {
    data: Arc<Mutex<Data>>,
    cfg: Arc<CaptureConfig>,
}

fn mask_secrets(text: &str) -> String {
    // mask `Bearer <x>` and JSON members named like tokens or keys
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("Bearer ") {
        out.push_str(&rest[..i + 7]);
        let after = &rest[i + 7..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        out.push_str("***");
        rest = &after[end..];
    }
    out.push_str(rest);
    for key in [
        "accessToken",
        "refreshToken",
        "clientSecret",
        "access_token",
        "refresh_token",
        "client_secret",
        "api_key",
        "apiKey",
    ] {
        let pat = format!("\"{key}\":\"");
        let mut from = 0;
        while let Some(pos) = out[from..].find(&pat) {
            let start = from + pos + pat.len();
            let Some(len) = out[start..].find('"') else {
                break;
            };
            out.replace_range(start..start + len, "***");
            from = start + 3;
        }
    }
    out
}

impl CaptureHandle {
    /// A capture for one request: its id (for the folder name) and body as the client sent it.
    pub fn new(request_id: String, request_body: Bytes, cfg: Arc<CaptureConfig>) -> Self {
        CaptureHandle {
            data: Arc::new(Mutex::new(Data {
                request_id,
                request_body,
                ..Default::default()
            })),
            cfg,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        crate::lock(&self.data)
    }

    /// The request body as sent to Kiro (`kiro_request_body.json`; the last one set wins).
    pub fn set_kiro_body(&self, body: &Bytes) {
        self.lock().kiro_body = Some(body.clone());
    }

    /// One upstream event (or failure), as a JSON line.
    pub fn upstream_line(&self, line: &str) {
        let mut d = self.lock();
        d.raw.push(line.as_bytes());
        d.raw.push(b"\n");
    }

    /// Bytes sent to the client.
    pub fn client_bytes(&self, b: &[u8]) {
        self.lock().modified.push(b);
    }

    /// A note for `app_logs.txt`.
    pub fn log(&self, line: &str) {
        let mut d = self.lock();
        let now = time::OffsetDateTime::now_utc();
        // RFC 3339 to the millisecond, as the log's own timestamps
        let now = now
            .replace_nanosecond(u32::from(now.millisecond()) * 1_000_000)
            .unwrap_or(now);
        let stamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        d.logs.push(format!("{stamp} {line}\n").as_bytes());
    }

    /// Mark the request failed (status, message).
    pub fn fail(&self, status: u16, message: &str) {
        let mut d = self.lock();
        if d.error.is_none() {
            d.error = Some((status, message.to_owned()));
        }
    }

    /// Write the folder now if the mode asks for it (once).
    pub fn finalize(&self) {
        let (dir, files) = {
            let mut d = self.lock();
            if d.written {
                return;
            }
            let wanted = match self.cfg.mode {
                DebugMode::Off => false,
                DebugMode::Errors => d.error.is_some(),
                DebugMode::All => true,
            };
            if !wanted {
                return;
            }
            d.written = true;
            let stamp = time::OffsetDateTime::now_utc();
            // time, then a sequence number (requests finishing in the same millisecond still
            // sort in order), then the request id
            let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!(
                "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}_{seq:06}_{}",
                stamp.year(),
                u8::from(stamp.month()),
                stamp.day(),
                stamp.hour(),
                stamp.minute(),
                stamp.second(),
                stamp.millisecond(),
                d.request_id
            );
            let pretty = |b: &Bytes| -> Vec<u8> {
                let text = match serde_json::from_slice::<serde_json::Value>(b) {
                    Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                    Err(_) => String::from_utf8_lossy(b).into_owned(),
                };
                mask_secrets(&text).into_bytes()
            };
            let mut files: Vec<(&'static str, Vec<u8>)> = vec![
                ("request_body.json", pretty(&d.request_body)),
                ("response_stream_raw.txt", d.raw.finish()),
                (
                    "response_stream_modified.txt",
                    mask_secrets(&String::from_utf8_lossy(&d.modified.finish())).into_bytes(),
                ),
                (
                    "app_logs.txt",
                    mask_secrets(&String::from_utf8_lossy(&d.logs.finish())).into_bytes(),
                ),
            ];
            if let Some(k) = &d.kiro_body {
                // byte for byte what went upstream (to replay a refused request exactly); only
                // a secret, should one be in it, is masked
                files.push((
                    "kiro_request_body.json",
                    mask_secrets(&String::from_utf8_lossy(k)).into_bytes(),
                ));
            }
            if let Some((status, msg)) = &d.error {
                let info =
                    serde_json::json!({"status_code": status, "error_message": mask_secrets(msg)});
                files.push((
                    "error_info.json",
                    serde_json::to_vec_pretty(&info).unwrap_or_default(),
                ));
            }
            (self.cfg.dir.join(name), files)
        };
        let root = self.cfg.dir.clone();
        let keep = self.cfg.keep;
        // A short, bounded write off the async threads; detached on purpose (nothing waits
        // for debug files, and a failure is only logged).
        tokio::task::spawn_blocking(move || {
            if let Err(e) = write_folder(&dir, &files).and_then(|()| rotate(&root, keep)) {
                tracing::warn!(error = %e, dir = %dir.display(), "could not write debug capture");
            }
        });
    }
}

/// Write the files into a hidden folder, then rename it into place: a reader never sees a
/// half-written capture.
fn write_folder(dir: &std::path::Path, files: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    let parent = dir.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.partial"));
    std::fs::create_dir_all(&tmp)?;
    for (file, data) in files {
        std::fs::write(tmp.join(file), data)?;
    }
    std::fs::rename(&tmp, dir)
}

/// Delete the oldest capture folders past `keep`. Only folders this layer wrote are counted or
/// deleted: a name of the capture shape (see [`is_capture_folder_name`]) holding a
/// `request_body.json`. Anything else a user keeps in `DEBUG_DIR` is left alone.
fn rotate(root: &std::path::Path, keep: usize) -> std::io::Result<()> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| is_capture_folder_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.join("request_body.json").is_file())
        .collect();
    dirs.sort();
    let excess = dirs.len().saturating_sub(keep.max(1));
    for d in dirs.into_iter().take(excess) {
        // another request's rotation may have removed it first
        match std::fs::remove_dir_all(d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `name` has the shape of a folder `CaptureHandle::finalize` names:
/// `YYYYMMDDTHHMMSS.mmm_<sequence>_<request id>`.
fn is_capture_folder_name(name: &str) -> bool {
    let b = name.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let stamp = digits(0..8)
        && b.get(8) == Some(&b'T')
        && digits(9..15)
        && b.get(15) == Some(&b'.')
        && digits(16..19)
        && b.get(19) == Some(&b'_');
    if !stamp {
        return false;
    }
    let Some((seq, id)) = name[20..].split_once('_') else {
        return false;
    };
    seq.len() >= 6 && seq.bytes().all(|c| c.is_ascii_digit()) && !id.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_tokens_and_keys() {
        let t = mask_secrets(
            r#"Authorization: Bearer abc.def {"accessToken":"xyz","other":"ok","refresh_token":"r"}"#,
        );
        assert_eq!(
            t,
            r#"Authorization: Bearer *** {"accessToken":"***","other":"ok","refresh_token":"***"}"#
        );
    }

    #[test]
    fn rotation_deletes_only_its_own_folders() {
        let root = tempfile::tempdir().unwrap();
        let ours = |n: u32| format!("20261204T1530{n:02}.000_{n:06}_req-{n}");
        for n in 0..4 {
            let d = root.path().join(ours(n));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("request_body.json"), "{}").unwrap();
        }
        // a user's folders and files, one of them named like a capture but not one
        std::fs::create_dir(root.path().join("0-important")).unwrap();
        std::fs::write(root.path().join("0-important/notes.txt"), "keep me").unwrap();
        std::fs::create_dir(root.path().join("20200101T000000.000_000001_not-ours")).unwrap();
        std::fs::write(root.path().join("README.txt"), "mine").unwrap();

        rotate(root.path(), 2).unwrap();

        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "0-important".to_owned(),
                "20200101T000000.000_000001_not-ours".to_owned(),
                ours(2),
                ours(3),
                "README.txt".to_owned(),
            ]
        );
        assert!(root.path().join("0-important/notes.txt").is_file());
    }

    #[test]
    fn capture_folder_names_are_recognised() {
        assert!(is_capture_folder_name("20261204T153000.123_000042_abc-def"));
        assert!(is_capture_folder_name("20261204T153000.123_1000000_x"));
        for n in [
            "0-important",
            "20261204T153000.123_000042_",
            "20261204T153000.123_42_abc",
            "20261204T153000_000042_abc",
            ".20261204T153000.123_000042_abc.partial",
            "2026120XT153000.123_000042_abc",
        ] {
            assert!(!is_capture_folder_name(n), "{n}");
        }
    }

    #[test]
    fn debug_mode_parses() {
        assert_eq!("ERRORS".parse::<DebugMode>().unwrap(), DebugMode::Errors);
        assert!("verbose".parse::<DebugMode>().is_err());
    }
}
