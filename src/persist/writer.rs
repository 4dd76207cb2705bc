//! The writer thread: the only place persistence touches the disk after
//! start-up, so the router never waits for a write or an fsync.
//!
//! The router puts a whole snapshot in a one-slot mailbox; a newer snapshot
//! replaces one not yet written (it holds everything the older one did).
//! Each is written to `<file>.tmp`, fsynced, renamed over the file, and the
//! directory is fsynced, so after a crash the file is either the previous
//! snapshot or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use log::{debug, error, info};

#[derive(Default)]
struct Mailbox {
    next: Option<Vec<u8>>,
    stop: bool,
}

/// Counters for tests and `$SYS`-style reporting.
#[derive(Debug, Default)]
pub struct Status {
    pub saved: AtomicU64,
    pub failed: AtomicU64,
}

pub struct Writer {
    mailbox: Arc<(Mutex<Mailbox>, Condvar)>,
    status: Arc<Status>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread that writes snapshots to `path`.
    pub fn spawn(path: PathBuf) -> io::Result<Writer> {
        let mailbox: Arc<(Mutex<Mailbox>, Condvar)> = Arc::default();
        let status: Arc<Status> = Arc::default();
        let (m, s) = (mailbox.clone(), status.clone());
        let thread = std::thread::Builder::new()
            .name("persist".into())
            .stack_size(256 * 1024)
            .spawn(move || run(&path, &m, &s))?;
        Ok(Writer {
            mailbox,
            status,
            thread: Some(thread),
        })
    }

    /// Queues a snapshot; returns at once.
    pub fn save(&self, bytes: Vec<u8>) {
        let (m, cv) = &*self.mailbox;
        let mut mb = m.lock().unwrap_or_else(|p| p.into_inner());
        mb.next = Some(bytes);
        cv.notify_one();
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Writes what is queued, then stops the thread and waits for it.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        {
            let (m, cv) = &*self.mailbox;
            let mut mb = m.lock().unwrap_or_else(|p| p.into_inner());
            mb.stop = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(path: &Path, mailbox: &(Mutex<Mailbox>, Condvar), status: &Status) {
    // True from the first failure until a save succeeds: one episode, one
    // error line.
    let mut failing = false;
    loop {
        let bytes = {
            let (m, cv) = mailbox;
            let mut mb = m.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(b) = mb.next.take() {
                    break b;
                }
                if mb.stop {
                    return;
                }
                mb = cv.wait(mb).unwrap_or_else(|p| p.into_inner());
            }
        };
        match write_atomic(path, &bytes) {
            Ok(()) => {
                status.saved.fetch_add(1, Ordering::Relaxed);
                if failing {
                    info!(
                        "Saving to {} works again: the saved state is up to date.",
                        path.display()
                    );
                    failing = false;
                }
                info!(
                    "Saved in-memory database to {} ({} bytes).",
                    path.display(),
                    bytes.len()
                );
            }
            Err(e) => {
                status.failed.fetch_add(1, Ordering::Relaxed);
                if failing {
                    debug!("Saving to {} failed again: {e}.", path.display());
                } else {
                    failing = true;
                    error!(
                        "Error: unable to save the in-memory database to {}: {e}. Until a save \
                         succeeds, retained messages and persistent sessions changed since the \
                         last successful save are not durable and are lost on a restart; the \
                         broker keeps serving. (Further failures are not logged.)",
                        path.display()
                    );
                }
            }
        }
    }
}

/// The temporary file a snapshot is written to before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Creates (or empties) a file only the broker's user may read: messages
/// may be private.
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// temp file, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = create_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // A half-written temp file would only waste space (a full disk).
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("midge-writer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn writes_the_last_snapshot_and_replaces_the_file() {
        let d = temp_dir("ok");
        let path = d.join("midge.db");
        let w = Writer::spawn(path.clone()).expect("spawn");
        w.save(b"first".to_vec());
        w.save(b"second".to_vec());
        let status = w.status.clone();
        w.finish();
        assert_eq!(fs::read(&path).expect("read"), b"second");
        assert!(status.saved.load(Ordering::Relaxed) >= 1);
        assert!(!temp_path(&path).exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failing_save_is_counted_and_the_thread_goes_on() {
        let d = temp_dir("fail");
        // A regular file where the directory should be: ENOTDIR.
        let file = d.join("not-a-dir");
        fs::write(&file, b"").expect("write");
        let w = Writer::spawn(file.join("midge.db")).expect("spawn");
        w.save(b"x".to_vec());
        let status = w.status.clone();
        w.finish();
        assert_eq!(status.failed.load(Ordering::Relaxed), 1);
        assert_eq!(status.saved.load(Ordering::Relaxed), 0);
        let _ = fs::remove_dir_all(&d);
    }
}
