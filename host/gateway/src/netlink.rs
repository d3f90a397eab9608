//! Link, address and route changes for the dataplane's TUN device over
//! rtnetlink, instead of running `ip` (the daemon never runs a program).
//!
//! Raw `NETLINK_ROUTE` messages (five kinds, synchronous request + ACK) keep
//! this small and free of an async runtime; the rtnetlink crates are async.
//!
//! One thread per dataplane ("wisp-netlink") owns the socket and does every
//! request. The socket is opened in the namespace the dataplane starts in, so
//! callers may sit in any namespace. The thread is also the only one that keeps
//! a capability after a privilege drop (see [`crate::privdrop`]): it sets
//! `PR_SET_KEEPCAPS` when it starts, and [`restrict_all`] narrows it to
//! `CAP_NET_ADMIN` once the process has changed user; every other thread then
//! holds no capability at all.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;
use std::time::Duration;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const IFLA_MTU: u16 = 4;
const IFLA_GSO_MAX_SEGS: u16 = 40;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNICAST: u8 = 1;

/// One request to the netlink thread.
enum Op {
    Msg {
        what: String,
        ty: u16,
        flags: u16,
        body: Vec<u8>,
        attrs: Vec<(u16, Vec<u8>)>,
    },
    /// After the process changed user: keep only `CAP_NET_ADMIN`.
    Restrict,
}

struct Job {
    op: Op,
    reply: Sender<io::Result<()>>,
}

/// Every netlink thread (by id), for [`restrict_all`].
static THREADS: Mutex<Vec<(u64, Sender<Job>)>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Handle to the netlink thread of one TUN device.
pub struct Netlink {
    id: u64,
    tx: Sender<Job>,
    ifindex: u32,
    ifname: String,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// `nlmsghdr` + fixed body + attributes, each padded to 4 bytes.
fn encode(ty: u16, flags: u16, seq: u32, body: &[u8], attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(4) * 4, 0);
    let mut m = vec![0u8; 16];
    m.extend_from_slice(body);
    pad(&mut m);
    for (t, data) in attrs {
        m.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(data);
        pad(&mut m);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

/// The kernel's answer to request `seq`: `Ok` for an ACK, the errno otherwise.
fn parse_ack(buf: &[u8], seq: u32) -> Option<io::Result<()>> {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().ok()?);
        let s = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().ok()?);
        if len < 16 || off + len > buf.len() {
            return Some(Err(io::Error::other("malformed netlink answer")));
        }
        if ty == NLMSG_ERROR && s == seq && len >= 20 {
            let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().ok()?);
            return Some(if err == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-err)) });
        }
        off += len.div_ceil(4) * 4;
    }
    None
}

struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = cvt(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) })?;
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_nl is valid (pid 0: the kernel assigns one).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid sockaddr_nl of the given size.
        cvt(unsafe {
            libc::bind(fd.as_raw_fd(), &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_nl>() as u32)
        })?;
        let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
        // SAFETY: valid timeval.
        cvt(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        })?;
        Ok(Socket { fd, seq: 0 })
    }

    fn request(&mut self, ty: u16, flags: u16, body: &[u8], attrs: &[(u16, Vec<u8>)]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let m = encode(ty, flags, self.seq, body, attrs);
        // SAFETY: zeroed sockaddr_nl = the kernel (pid 0).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: m and to are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                m.as_ptr() as *const libc::c_void,
                m.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 16384];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if let Some(r) = parse_ack(&buf[..n as usize], self.seq) {
                return r;
            }
        }
    }
}

/// Make `CAP_NET_ADMIN` effective again if it is still permitted; true if it now is.
fn raise_net_admin() -> bool {
    use caps::{CapSet, Capability};
    caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_ADMIN).unwrap_or(false)
        && caps::raise(None, CapSet::Effective, Capability::CAP_NET_ADMIN).is_ok()
}

/// Keep only `CAP_NET_ADMIN` in this thread (after the user change, which
/// kept the permitted set thanks to `PR_SET_KEEPCAPS` but emptied the effective one).
fn restrict_self() -> io::Result<()> {
    use caps::{CapSet, Capability};
    let e = |e: caps::errors::CapsError| io::Error::other(e.to_string());
    let keep: caps::CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    // Raise what we still hold to trim the bounding set (needs CAP_SETPCAP).
    let permitted = caps::read(None, CapSet::Permitted).map_err(e)?;
    caps::set(None, CapSet::Effective, &permitted).map_err(e)?;
    for c in caps::all() {
        if !keep.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, c).map_err(e)?;
        }
    }
    caps::clear(None, CapSet::Inheritable).map_err(e)?;
    caps::set(None, CapSet::Effective, &keep).map_err(e)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(e)?;
    // SAFETY: prctl with integer arguments.
    cvt(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) })?;
    Ok(())
}

impl Netlink {
    /// Open the netlink socket (in the calling thread's network namespace)
    /// for the device `ifname` and start its thread.
    pub fn start(ifname: &str) -> io::Result<Netlink> {
        let cname = std::ffi::CString::new(ifname).map_err(|_| io::Error::other("interface name with NUL"))?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}")));
        }
        let mut sock = Socket::open()?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("wisp-netlink".into()).spawn(move || {
            // Keep the permitted capabilities across a later change of user
            // (only this thread's: every other thread loses them all).
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
                tracing::warn!("PR_SET_KEEPCAPS: {}", io::Error::last_os_error());
            }
            while let Ok(job) = rx.recv() {
                let r = match job.op {
                    Op::Msg { what, ty, flags, body, attrs } => {
                        let mut r = sock.request(ty, flags, &body, &attrs);
                        if r.as_ref().is_err_and(|e| e.raw_os_error() == Some(libc::EPERM)) && raise_net_admin() {
                            // Caught between the change of user (effective set
                            // emptied) and `restrict_all`: raise it and retry.
                            r = sock.request(ty, flags, &body, &attrs);
                        }
                        r.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
                    }
                    Op::Restrict => restrict_self(),
                };
                let _ = job.reply.send(r);
            }
        })?;
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        THREADS.lock().unwrap_or_else(|p| p.into_inner()).push((id, tx.clone()));
        Ok(Netlink { id, tx, ifindex, ifname: ifname.to_string() })
    }

    fn call(tx: &Sender<Job>, op: Op) -> io::Result<()> {
        let (reply, rx) = mpsc::channel();
        tx.send(Job { op, reply }).map_err(|_| io::Error::other("netlink thread gone"))?;
        rx.recv_timeout(Duration::from_secs(10)).map_err(|_| io::Error::other("netlink thread did not answer"))?
    }

    fn msg(&self, what: String, ty: u16, flags: u16, body: Vec<u8>, attrs: Vec<(u16, Vec<u8>)>) -> io::Result<()> {
        Self::call(&self.tx, Op::Msg { what, ty, flags, body, attrs })
    }

    fn ifinfo(&self, up: bool) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[4..8].copy_from_slice(&(self.ifindex as i32).to_ne_bytes());
        if up {
            b[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
            b[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        }
        b
    }

    /// `ip link set dev IF mtu MTU up`.
    pub fn link_up(&self, mtu: u16) -> io::Result<()> {
        let attrs = vec![(IFLA_MTU, u32::from(mtu).to_ne_bytes().to_vec())];
        self.msg(format!("link set {} mtu {mtu} up", self.ifname), RTM_NEWLINK, 0, self.ifinfo(true), attrs)
    }

    /// `ip link set dev IF gso_max_segs N`.
    pub fn set_gso_max_segs(&self, segs: u32) -> io::Result<()> {
        let attrs = vec![(IFLA_GSO_MAX_SEGS, segs.to_ne_bytes().to_vec())];
        self.msg(format!("link set {} gso_max_segs {segs}", self.ifname), RTM_NEWLINK, 0, self.ifinfo(false), attrs)
    }

    /// `ip addr add A/LEN dev IF`.
    pub fn add_addr(&self, a: IpAddr, len: u8) -> io::Result<()> {
        let mut b = vec![family(a), len, 0, 0];
        b.extend_from_slice(&self.ifindex.to_ne_bytes());
        let attrs = vec![(IFA_LOCAL, octets(a)), (IFA_ADDRESS, octets(a))];
        self.msg(format!("addr add {a}/{len} dev {}", self.ifname), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, b, attrs)
    }

    /// `ip addr del A/LEN dev IF`.
    pub fn del_addr(&self, a: IpAddr, len: u8) -> io::Result<()> {
        let mut b = vec![family(a), len, 0, 0];
        b.extend_from_slice(&self.ifindex.to_ne_bytes());
        let attrs = vec![(IFA_LOCAL, octets(a)), (IFA_ADDRESS, octets(a))];
        self.msg(format!("addr del {a}/{len} dev {}", self.ifname), RTM_DELADDR, 0, b, attrs)
    }

    fn rtmsg(net: IpAddr, len: u8, protocol: u8, scope: u8, ty: u8) -> Vec<u8> {
        let mut b = vec![family(net), len, 0, 0, RT_TABLE_MAIN, protocol, scope, ty];
        b.extend_from_slice(&0u32.to_ne_bytes());
        b
    }

    /// `ip route replace NET/LEN dev IF`.
    pub fn replace_route(&self, net: IpAddr, len: u8) -> io::Result<()> {
        let attrs = vec![(RTA_DST, octets(net)), (RTA_OIF, self.ifindex.to_ne_bytes().to_vec())];
        let body = Self::rtmsg(net, len, RTPROT_BOOT, RT_SCOPE_LINK, RTN_UNICAST);
        self.msg(format!("route replace {net}/{len} dev {}", self.ifname), RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, attrs)
    }

    /// `ip route del NET/LEN dev IF`.
    pub fn del_route(&self, net: IpAddr, len: u8) -> io::Result<()> {
        let attrs = vec![(RTA_DST, octets(net)), (RTA_OIF, self.ifindex.to_ne_bytes().to_vec())];
        let body = Self::rtmsg(net, len, 0, RT_SCOPE_NOWHERE, 0);
        self.msg(format!("route del {net}/{len} dev {}", self.ifname), RTM_DELROUTE, 0, body, attrs)
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        // The thread ends when its last sender goes: drop ours from the registry.
        THREADS.lock().unwrap_or_else(|p| p.into_inner()).retain(|(id, _)| *id != self.id);
    }
}

/// After the process changed user: every netlink thread keeps `CAP_NET_ADMIN`
/// and nothing else (the other threads already hold nothing).
pub fn restrict_all() -> io::Result<usize> {
    let threads: Vec<Sender<Job>> = THREADS.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, t)| t.clone()).collect();
    for tx in &threads {
        Netlink::call(tx, Op::Restrict)?;
    }
    Ok(threads.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_message_layout() {
        let b = Netlink::rtmsg("10.98.2.0".parse().unwrap(), 24, RTPROT_BOOT, RT_SCOPE_LINK, RTN_UNICAST);
        let m = encode(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            7,
            &b,
            &[(RTA_DST, vec![10, 98, 2, 0]), (RTA_OIF, 5u32.to_ne_bytes().to_vec())],
        );
        assert_eq!(m.len(), 16 + 12 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize, m.len());
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWROUTE);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 0x505);
        assert_eq!(&m[16..24], &[2, 24, 0, 0, 254, 3, 253, 1]);
        assert_eq!(&m[28..36], &[8, 0, 1, 0, 10, 98, 2, 0]);
        // An ACK and an error for our sequence number.
        let mut ack = encode(NLMSG_ERROR, 0, 7, &0i32.to_ne_bytes(), &[]);
        ack[8..12].copy_from_slice(&7u32.to_ne_bytes());
        assert!(parse_ack(&ack, 7).unwrap().is_ok());
        assert!(parse_ack(&ack, 8).is_none());
        let nack = encode(NLMSG_ERROR, 0, 7, &(-libc::EEXIST).to_ne_bytes(), &[]);
        assert_eq!(parse_ack(&nack, 7).unwrap().unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert!(parse_ack(&[1, 2, 3], 7).is_none());
    }
}
