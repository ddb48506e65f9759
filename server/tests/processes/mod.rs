//! Running the real `feedloop` binary from the server's integration tests: finding it, fresh
//! databases (SQLite, or PostgreSQL when `FEEDLOOP_TEST_POSTGRES_URL` is set), and `feedloop
//! serve` processes that are killed when dropped.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The `feedloop` binary: `FEEDLOOP_BIN`, else next to this test's profile directory
/// (`<target>/debug/feedloop` for `cargo test`), else `$CARGO_TARGET_DIR/debug` or the
/// workspace's `target/debug`.
pub fn feedloop_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("FEEDLOOP_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FEEDLOOP_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = format!("feedloop{}", std::env::consts::EXE_SUFFIX);
    let mut candidates = Vec::new();
    // <target>/debug/deps/crash-HASH → <target>/debug/feedloop
    if let Ok(test_exe) = std::env::current_exe() {
        if let Some(profile_dir) = test_exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join(&exe));
        }
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    candidates.push(target_dir.join("debug").join(&exe));
    let found = candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the feedloop CLI binary is missing (looked for {}): run `cargo build -p feedloop-cli` \
                 first, or point FEEDLOOP_BIN at it",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    warn_if_stale(&found);
    found
}

/// A binary older than the server's or the CLI's sources tests old code: say so (not an error:
/// the sources may be mid-edit by someone else).
fn warn_if_stale(bin: &Path) {
    fn newest(dir: &Path) -> Option<std::time::SystemTime> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max()
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
    let sources = [root.join("src"), root.join("../cli/src")]
        .iter()
        .filter_map(|d| newest(d))
        .max();
    if let (Some(built), Some(sources)) = (built, sources) {
        if sources > built {
            let _ = writeln!(
                std::io::stderr(),
                "WARNING: {} is older than the server/CLI sources; run `cargo build -p feedloop-cli`",
                bin.display()
            );
        }
    }
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// A fresh database URL (and a folder to delete for SQLite), or None: PostgreSQL not configured.
pub async fn fresh_database(backend: Backend) -> Option<(String, Option<PathBuf>)> {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(unique("feedloop-crash-test"));
            std::fs::create_dir_all(&dir).unwrap();
            Some((format!("sqlite://{}/feedloop.db", dir.display()), Some(dir)))
        }
        Backend::Postgres => {
            let admin_url = std::env::var("FEEDLOOP_TEST_POSTGRES_URL").ok()?;
            let name = unique("feedloop_crash");
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            let (head, query) = match admin_url.split_once('?') {
                Some((h, q)) => (h.to_string(), format!("?{q}")),
                None => (admin_url.clone(), String::new()),
            };
            let base = &head[..head.rfind('/').unwrap()];
            Some((format!("{base}/{name}{query}"), None))
        }
    }
}

pub struct TempDir(pub Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A running `feedloop serve`; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Runs `feedloop serve --addr 127.0.0.1:0 <args>` and waits until it listens.
    pub fn spawn(bin: &Path, args: &[String]) -> Self {
        let mut child = Command::new(bin)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if line.contains("feedloop server listening") {
                    if let Some(addr) = line
                        .split_once("addr=")
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = tx.send(addr);
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "feedloop serve did not start listening ({status:?}); its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Self { child, addr, log }
    }

    pub fn base_url(&self) -> Arc<str> {
        format!("http://{}", self.addr).into()
    }

    /// SIGKILL (on unix, `Child::kill` sends SIGKILL): no graceful shutdown, no drain.
    pub fn kill(mut self) {
        self.child.kill().expect("kill feedloop serve");
        let status = self.child.wait().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "feedloop serve should have died of SIGKILL, got {status:?}; its log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
        }
        #[cfg(not(unix))]
        let _ = status;
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
