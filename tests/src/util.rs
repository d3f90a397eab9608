//! Errors, root check, unique names and per-test scratch directories.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A test-bed failure: what was attempted and what went wrong (command output,
/// log tail, ...). Tests usually `unwrap()`/`expect()` it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(format!("io: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Build an [`Error`] from format arguments.
#[macro_export]
macro_rules! err {
    ($($t:tt)*) => { $crate::util::Error(format!($($t)*)) };
}

/// True when running as root. Otherwise prints the standard skip line for `test`
/// and returns false: the caller returns early (the test passes as skipped).
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        true
    } else {
        println!("skipped: {test} needs root (creates network namespaces)");
        false
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `w<tag><pid % 100000><n>`, at most 15
/// characters (usable as an interface name). `tag` is cut to 3 characters.
pub fn unique_name(tag: &str) -> String {
    let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(3).collect();
    let pid = std::process::id() % 100_000;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 100_000;
    let mut s = format!("w{tag}{pid}x{n}");
    s.truncate(15);
    s
}

/// A scratch directory under `$TMPDIR/wisp-testbed/`, removed on drop unless the
/// thread is panicking (then kept and its path printed, for post-mortem) or
/// `WISP_TEST_KEEP=1` is set.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> Result<TestDir> {
        let base = std::env::temp_dir().join("wisp-testbed");
        let path = base.join(format!("{tag}-{}", unique_name("d")));
        std::fs::create_dir_all(&path)?;
        Ok(TestDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let keep = std::env::var("WISP_TEST_KEEP").map(|v| v == "1").unwrap_or(false);
        if std::thread::panicking() || keep {
            eprintln!("testbed: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Poll `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The last `n` lines of a text file (empty when unreadable), for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_interfaces_and_differ() {
        let a = unique_name("matrix");
        let b = unique_name("matrix");
        assert!(a.len() <= 15, "{a}");
        assert!(a.starts_with("wmat"), "{a}");
        assert_ne!(a, b);
    }
}
