//! Thin OS layer: TUN device, UDP batching (recvmmsg/sendmmsg), poll,
//! and address helpers (link and route changes: `crate::netlink`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Wait until `fd` is readable or `timeout_ms` passes. Ok(true) = readable.
pub fn poll_in(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

/// `read(2)`; `Ok(None)` on EAGAIN.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: buf is valid for buf.len() bytes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as usize))
}

/// `write(2)` of one packet.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Set SO_RCVBUF/SO_SNDBUF (best effort, FORCE variants first when root).
pub fn set_bufs(fd: RawFd, bytes: i32) {
    for (opt, force) in [(libc::SO_RCVBUF, libc::SO_RCVBUFFORCE), (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE)] {
        for o in [force, opt] {
            // SAFETY: an int option.
            let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, o, (&bytes as *const i32).cast(), 4) };
            if r == 0 {
                break;
            }
        }
    }
}

pub fn to_sockaddr(a: SocketAddr, v6_socket: bool) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let a = match (a, v6_socket) {
        (SocketAddr::V4(v4), true) => SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0)),
        _ => a,
    };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as _,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            (ss, std::mem::size_of::<libc::sockaddr_in>() as _)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as _,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as _)
        }
    }
}

/// Whether the received source `ss` is `a` (address and port; an
/// IPv4-mapped IPv6 source equals the IPv4 address).
pub fn sockaddr_is(ss: &libc::sockaddr_storage, a: SocketAddr) -> bool {
    from_sockaddr(ss).is_some_and(|s| s.ip() == a.ip() && s.port() == a.port())
}

pub fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: family says sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)), u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: family says sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id)),
            })
        }
        _ => None,
    }
}

/// A batch of receive slots for `recvmmsg`.
pub struct RecvBatch {
    pub bufs: Vec<Vec<u8>>,
    pub lens: Vec<usize>,
    /// Per message: the size of each coalesced datagram when the kernel
    /// handed over a UDP GRO batch (the last may be shorter), else the length.
    pub segs: Vec<usize>,
    pub addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<[u64; 4]>,
}

// SAFETY: the raw pointers inside point into the batch's own heap buffers.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(n: usize, size: usize) -> Self {
        RecvBatch {
            bufs: (0..n).map(|_| vec![0u8; size]).collect(),
            lens: vec![0; n],
            segs: vec![0; n],
            // SAFETY: zeroed sockaddr_storage / iovec / mmsghdr are valid.
            addrs: vec![unsafe { std::mem::zeroed() }; n],
            // SAFETY: a zeroed iovec (null base, length 0) is valid.
            iovs: vec![unsafe { std::mem::zeroed() }; n],
            // SAFETY: a zeroed mmsghdr (null pointers, lengths 0) is valid.
            hdrs: vec![unsafe { std::mem::zeroed() }; n],
            cmsgs: vec![[0; 4]; n],
        }
    }

    /// Non-blocking `recvmmsg`; returns how many datagrams arrived (0 on EAGAIN).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.bufs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: self.bufs[i].len() };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_controllen = std::mem::size_of::<[u64; 4]>() as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: hdrs/iovs/bufs/addrs are valid for n entries.
        let r = unsafe { libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), n as _, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for i in 0..r as usize {
            let truncated = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = if truncated { 0 } else { self.hdrs[i].msg_len as usize };
            self.segs[i] = gro_size(&self.hdrs[i].msg_hdr).filter(|s| *s > 0).unwrap_or(self.lens[i]);
        }
        Ok(r as usize)
    }
}

const UDP_GRO: libc::c_int = 104;

/// Ask the kernel to hand over coalesced datagrams (UDP GRO) with their
/// segment size in a control message. Returns whether it accepted.
pub fn enable_udp_gro(fd: RawFd) -> bool {
    let one: libc::c_int = 1;
    // SAFETY: an int option.
    unsafe { libc::setsockopt(fd, SOL_UDP, UDP_GRO, (&one as *const libc::c_int).cast(), 4) == 0 }
}

/// The `UDP_GRO` segment size in a received message's control data.
fn gro_size(h: &libc::msghdr) -> Option<usize> {
    if h.msg_controllen == 0 || h.msg_control.is_null() {
        return None;
    }
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsgs; CMSG_* walk only within them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// A batch of datagrams to send with `sendmmsg`. Runs of equal-size
/// datagrams to the same destination go out as one UDP GSO message
/// (`UDP_SEGMENT`), so the kernel walks the UDP/IP stack once per run.
pub struct SendBatch {
    pub bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Datagram count of each message in `hdrs`.
    segs: Vec<usize>,
    cmsgs: Vec<[u64; 4]>,
    pub count: usize,
    /// UDP GSO in use (switched off for good after a failure).
    pub gso: bool,
}

// SAFETY: as RecvBatch.
unsafe impl Send for SendBatch {}

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// Kernel limit on segments per GSO send.
const GSO_MAX_SEGS: usize = 64;

fn same_addr(a: &(libc::sockaddr_storage, libc::socklen_t), b: &(libc::sockaddr_storage, libc::socklen_t)) -> bool {
    if a.1 != b.1 {
        return false;
    }
    let n = a.1 as usize;
    // SAFETY: both are sockaddr_storage, at least n bytes.
    let (x, y) = unsafe {
        (
            std::slice::from_raw_parts((&a.0 as *const libc::sockaddr_storage).cast::<u8>(), n),
            std::slice::from_raw_parts((&b.0 as *const libc::sockaddr_storage).cast::<u8>(), n),
        )
    };
    x == y
}

impl SendBatch {
    pub fn new(n: usize, size: usize) -> Self {
        SendBatch {
            bufs: (0..n).map(|_| vec![0u8; size]).collect(),
            lens: vec![0; n],
            // SAFETY: a zeroed sockaddr_storage is valid.
            addrs: vec![(unsafe { std::mem::zeroed() }, 0); n],
            // SAFETY: a zeroed iovec (null base, length 0) is valid.
            iovs: vec![unsafe { std::mem::zeroed() }; n],
            // SAFETY: a zeroed mmsghdr (null pointers, lengths 0) is valid.
            hdrs: vec![unsafe { std::mem::zeroed() }; n],
            segs: vec![0; n],
            cmsgs: vec![[0; 4]; n],
            count: 0,
            gso: true,
        }
    }
    /// Slots not yet committed.
    pub fn free(&self) -> usize {
        self.bufs.len() - self.count
    }
    /// Commit the next slot with `len` bytes to `to`.
    pub fn push(&mut self, len: usize, to: (libc::sockaddr_storage, libc::socklen_t)) {
        self.lens[self.count] = len;
        self.addrs[self.count] = to;
        self.count += 1;
    }
    /// Send everything queued. On EAGAIN waits briefly, then drops the
    /// rest (like a full queue would). Returns (sent, dropped) datagrams.
    pub fn flush(&mut self, fd: RawFd) -> (usize, usize) {
        let n = self.count;
        for i in 0..n {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: self.lens[i] };
        }
        // Build messages: GSO runs or single datagrams.
        let mut m = 0;
        let mut i = 0;
        while i < n {
            let mut j = i + 1;
            if self.gso {
                let seg = self.lens[i];
                let mut total = seg;
                while j < n
                    && j - i < GSO_MAX_SEGS
                    && self.lens[j] <= seg
                    && total + self.lens[j] <= 65000
                    && same_addr(&self.addrs[i], &self.addrs[j])
                {
                    total += self.lens[j];
                    j += 1;
                    if self.lens[j - 1] < seg {
                        break; // a shorter datagram ends a run
                    }
                }
            }
            let h = &mut self.hdrs[m].msg_hdr;
            h.msg_name = (&mut self.addrs[i].0 as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = self.addrs[i].1;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = j - i;
            h.msg_flags = 0;
            if j - i > 1 {
                let c = &mut self.cmsgs[m];
                *c = [0; 4];
                // SAFETY: c is 32 bytes, 8-aligned: room for CMSG_SPACE(2).
                unsafe {
                    let cm = c.as_mut_ptr().cast::<libc::cmsghdr>();
                    (*cm).cmsg_level = SOL_UDP;
                    (*cm).cmsg_type = UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), self.lens[i] as u16);
                    h.msg_control = cm.cast();
                    h.msg_controllen = libc::CMSG_SPACE(2) as _;
                }
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            self.segs[m] = j - i;
            m += 1;
            i = j;
        }
        let mut off = 0;
        let mut sent = 0;
        let mut retries = 0;
        while off < m {
            // SAFETY: messages off..m are initialised above and point into
            // this batch's buffers.
            let r = unsafe { libc::sendmmsg(fd, self.hdrs[off..].as_mut_ptr(), (m - off) as _, 0) };
            if r > 0 {
                sent += self.segs[off..off + r as usize].iter().sum::<usize>();
                off += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if retries < 64 => {
                    retries += 1;
                    let _ = poll_out(fd, 10);
                }
                _ => {
                    // A GSO message the kernel/device refuses: stop using
                    // GSO (this run is lost; TCP retransmits).
                    if self.segs[off] > 1 {
                        self.gso = false;
                    }
                    off += 1;
                }
            }
        }
        self.count = 0;
        (sent, n - sent)
    }
}

fn poll_out(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    Ok(r > 0)
}

pub fn cidr_string(a: IpAddr, len: u8) -> String {
    format!("{a}/{len}")
}
