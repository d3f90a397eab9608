//! A child process that is stopped when dropped.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Owns a spawned process: on drop sends SIGTERM, waits up to 3 s, then SIGKILL.
pub struct Proc {
    child: Option<Child>,
    what: String,
}

impl Proc {
    pub fn new(child: Child, what: impl Into<String>) -> Proc {
        Proc { child: Some(child), what: what.into() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// `Some(status)` if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on the pid of a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// SIGKILL and reap (a crash, as far as the peer can tell).
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status if it
    /// exited by itself within `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Send SIGHUP/SIGUSR1 etc. without waiting.
    pub fn send_signal(&self, sig: i32) {
        self.signal(sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}
