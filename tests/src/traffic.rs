//! Real traffic through a tunnel: ping (iputils) and a checksummed TCP transfer.

use crate::err;
use crate::netns::Netns;
use crate::util::Result;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Outcome of a ping run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub sent: u32,
    pub received: u32,
}

impl PingStats {
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received)
    }
}

/// Parse iputils' `N packets transmitted, M received` line.
pub fn parse_ping(out: &str) -> Option<PingStats> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut it = line.split(',');
    let sent = it.next()?.split_whitespace().next()?.parse().ok()?;
    let received = it.next()?.split_whitespace().next()?.parse().ok()?;
    Some(PingStats { sent, received })
}

/// `ping -c count -i interval -W 1 -I src dst` inside `ns`.
pub fn ping(ns: &Netns, src: &str, dst: &str, count: u32, interval: f64) -> Result<PingStats> {
    let c = count.to_string();
    let i = format!("{interval}");
    let o = ns.output("ping", &["-n", "-q", "-c", &c, "-i", &i, "-W", "1", "-I", src, dst])?;
    let text = String::from_utf8_lossy(&o.stdout);
    parse_ping(&text).ok_or_else(|| err!("ping {src} -> {dst}: no statistics: {text} {}", String::from_utf8_lossy(&o.stderr)))
}

/// Ping until one reply arrives (e.g. right after an SA comes up), at most `tries`.
pub fn ping_until_ok(ns: &Netns, src: &str, dst: &str, tries: u32) -> Result<()> {
    for _ in 0..tries {
        if ping(ns, src, dst, 1, 0.2)?.received == 1 {
            return Ok(());
        }
    }
    Err(err!("no ping reply {src} -> {dst} after {tries} tries"))
}

/// A ping running in the background (e.g. across a rekey); [`BgPing::finish`]
/// sends SIGINT and returns the statistics.
pub struct BgPing {
    child: Option<Child>,
}

impl BgPing {
    /// `ping -i interval -I src dst` with no count, until [`BgPing::finish`].
    pub fn start(ns: &Netns, src: &str, dst: &str, interval: f64) -> Result<BgPing> {
        Self::spawn(ns, src, dst, interval, None)
    }

    /// `ping -c count -i interval -I src dst`; collect with [`BgPing::wait`].
    pub fn start_count(ns: &Netns, src: &str, dst: &str, interval: f64, count: u32) -> Result<BgPing> {
        Self::spawn(ns, src, dst, interval, Some(count))
    }

    fn spawn(ns: &Netns, src: &str, dst: &str, interval: f64, count: Option<u32>) -> Result<BgPing> {
        let mut args: Vec<String> =
            ["-n", "-q", "-i", &format!("{interval}"), "-W", "1", "-I", src].iter().map(|s| s.to_string()).collect();
        if let Some(c) = count {
            args.push("-c".into());
            args.push(c.to_string());
        }
        args.push(dst.into());
        let child = ns
            .command("ping")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err!("spawn ping: {e}"))?;
        Ok(BgPing { child: Some(child) })
    }

    /// Stop (SIGINT, so ping prints statistics) and parse. Waits `settle` before
    /// stopping so replies in flight are counted.
    pub fn finish(mut self, settle: Duration) -> Result<PingStats> {
        std::thread::sleep(settle);
        let child = self.child.take().ok_or_else(|| err!("ping already finished"))?;
        // SAFETY: kill(2) on our unreaped child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let o = child.wait_with_output().map_err(|e| err!("wait ping: {e}"))?;
        let text = String::from_utf8_lossy(&o.stdout);
        let mut st = parse_ping(&text).ok_or_else(|| err!("background ping: no statistics: {text}"))?;
        // ping exits on SIGINT without waiting for the reply to its last request,
        // so exactly one unanswered request is an artifact of stopping, not a
        // loss. Where every packet must count, use `start_count` + `wait`.
        if st.sent == st.received + 1 {
            st.sent -= 1;
        }
        Ok(st)
    }

    /// True while the ping is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().map(|c| matches!(c.try_wait(), Ok(None))).unwrap_or(false)
    }

    /// Wait for a counted ping to finish and parse its statistics.
    pub fn wait(mut self) -> Result<PingStats> {
        let child = self.child.take().ok_or_else(|| err!("ping already finished"))?;
        let o = child.wait_with_output().map_err(|e| err!("wait ping: {e}"))?;
        let text = String::from_utf8_lossy(&o.stdout);
        parse_ping(&text).ok_or_else(|| err!("background ping: no statistics: {text}"))
    }
}

impl Drop for BgPing {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Result of one TCP transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub bytes: u64,
    pub sent_sha256: [u8; 32],
    pub recv_sha256: [u8; 32],
    pub millis: u128,
}

impl Transfer {
    pub fn intact(&self) -> bool {
        self.sent_sha256 == self.recv_sha256
    }
    pub fn mbit_per_s(&self) -> f64 {
        (self.bytes as f64 * 8.0) / (self.millis.max(1) as f64 * 1000.0)
    }
}

/// Deterministic pseudo-random filler (xorshift), so both ends differ per run
/// only by `seed`.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Send `bytes` over TCP from `client_ns` (bound to `client_src`) to a listener
/// in `server_ns` on `server_addr:port`; both ends hash what they saw.
pub fn tcp_transfer(
    server_ns: &Netns,
    server_addr: IpAddr,
    port: u16,
    client_ns: &Netns,
    client_src: IpAddr,
    bytes: u64,
    timeout: Duration,
) -> Result<Transfer> {
    let listener = server_ns.run(move || bind_listener(SocketAddr::new(server_addr, port), timeout))??;
    let server = std::thread::spawn(move || -> Result<(u64, [u8; 32])> {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + timeout;
        let (mut s, _) = loop {
            match listener.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(err!("tcp server: no connection within {timeout:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(timeout))?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let r = s.read(&mut buf).map_err(|e| err!("tcp server read after {n} bytes: {e}"))?;
            if r == 0 {
                break;
            }
            h.update(&buf[..r]);
            n += r as u64;
        }
        Ok((n, h.finalize().into()))
    });
    let start = Instant::now();
    let client = client_ns.run(move || -> Result<[u8; 32]> {
        let sock = socket2_connect(client_src, SocketAddr::new(server_addr, port), timeout)?;
        let mut s = sock;
        s.set_write_timeout(Some(timeout))?;
        let mut h = Sha256::new();
        let mut st = 0x9e37_79b9_7f4a_7c15u64 ^ bytes;
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n], &mut st);
            s.write_all(&buf[..n]).map_err(|e| err!("tcp client write ({left} left): {e}"))?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(h.finalize().into())
    })??;
    let (n, recv) = server.join().map_err(|_| err!("tcp server thread panicked"))??;
    Ok(Transfer { bytes: n, sent_sha256: client, recv_sha256: recv, millis: start.elapsed().as_millis() })
}

/// Bind a TCP listener, retrying while the port is still held: a transfer run
/// right after another on the same port can find the last connection's
/// accepted socket still closing (LAST_ACK through a tunnel that is rekeying),
/// which makes bind(2) answer EADDRINUSE for a moment.
fn bind_listener(at: SocketAddr, timeout: Duration) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + timeout.min(Duration::from_secs(10));
    loop {
        match TcpListener::bind(at) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// Connect from a specific source address (bind before connect) using std only:
/// bind a listener-less socket via libc.
fn socket2_connect(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let domain = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the fd is owned by the TcpStream below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: fd is a fresh socket we own.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (sa, len) = sockaddr(SocketAddr::new(src, 0));
    // SAFETY: sa is a valid sockaddr of length len.
    if unsafe { libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(err!("bind {src}: {}", std::io::Error::last_os_error()));
    }
    let (da, dlen) = sockaddr(dst);
    let deadline = Instant::now() + timeout;
    // Blocking connect; retry while the tunnel comes up (SYN lost -> kernel retries).
    loop {
        // SAFETY: da is a valid sockaddr of length dlen.
        let rc = unsafe { libc::connect(fd, &da as *const _ as *const libc::sockaddr, dlen) };
        if rc == 0 {
            return Ok(stream);
        }
        let e = std::io::Error::last_os_error();
        if Instant::now() > deadline {
            return Err(err!("connect {src} -> {dst}: {e}"));
        }
        if e.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(err!("connect {src} -> {dst}: {e}"));
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            (ss, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_summary() {
        let s = "--- 10.2.0.1 ping statistics ---\n3 packets transmitted, 2 received, 33% packet loss, time 407ms\n";
        assert_eq!(parse_ping(s), Some(PingStats { sent: 3, received: 2 }));
        assert_eq!(parse_ping(s).unwrap().lost(), 1);
        let e = "5 packets transmitted, 0 received, +5 errors, 100% packet loss";
        assert_eq!(parse_ping(e), Some(PingStats { sent: 5, received: 0 }));
        assert_eq!(parse_ping("garbage"), None);
    }

    #[test]
    fn filler_is_deterministic() {
        let (mut a, mut b) = ([0u8; 37], [0u8; 37]);
        let (mut s1, mut s2) = (7u64, 7u64);
        fill(&mut a, &mut s1);
        fill(&mut b, &mut s2);
        assert_eq!(a, b);
        assert_ne!(a, [0u8; 37]);
    }
}
