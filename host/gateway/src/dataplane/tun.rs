//! The TUN device behind the data path, in three flavours:
//!
//! * [`TunKind::Offload`] (default): `tun-rs` with `IFF_VNET_HDR` and
//!   `TUNSETOFFLOAD` (TSO4/6, checksum, USO where the kernel has it). The
//!   kernel hands over TCP/UDP super-packets of up to 64 KB; `tun-rs`
//!   splits them into MTU-sized segments with correct checksums. On the
//!   way back, decrypted TCP segments of one flow are coalesced (GRO) into
//!   one write with a `virtio_net_hdr`.
//! * [`TunKind::Plain`]: `tun-rs` without offload, one packet per syscall.
//! * [`TunKind::TokioTun`]: the device created by `tokio-tun` (the product
//!   card's crate), one packet per syscall: `tokio-tun` cannot set
//!   `IFF_VNET_HDR`, so this is the no-offload baseline that
//!   `scripts/bench-tunnel.sh` measures next to the other two. The packet
//!   loops use its raw fd with the same `poll`/`read`/`write` as the other
//!   kinds, so the comparison isolates the device, not the async runtime.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tun_rs::{GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use super::sys;

/// Which TUN implementation carries inner packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunKind {
    /// `tun-rs` with TSO/GRO offload (falls back to plain when the kernel refuses).
    #[default]
    Offload,
    /// `tun-rs`, one packet per read/write.
    Plain,
    /// `tokio-tun`, one packet per read/write (benchmark baseline).
    TokioTun,
}

impl std::str::FromStr for TunKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "offload" => Ok(TunKind::Offload),
            "plain" => Ok(TunKind::Plain),
            "tokio-tun" => Ok(TunKind::TokioTun),
            o => Err(format!("TUN kind {o:?}: expected offload, plain or tokio-tun")),
        }
    }
}

/// Headroom the offload path needs in front of every packet written.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// Largest read from an offload TUN: header plus a 64 KB super-packet.
pub const SCRATCH: usize = VIRTIO_NET_HDR_LEN + 65535;
/// Most segments one super-packet may split into (`gso_max_segs` is set to this).
pub const MAX_SEGS: usize = 64;

enum Dev {
    Rs(SyncDevice),
    Tokio {
        // Owns the device (the loops use its raw fd).
        _tun: tokio_tun::Tun,
        // Owns the reactor the device was registered with.
        _rt: tokio::runtime::Runtime,
    },
}

/// An open TUN device.
pub struct Tun {
    dev: Dev,
    fd: RawFd,
    name: String,
    offload: bool,
    kind: TunKind,
}

impl Tun {
    /// Create the device `name` (`%d` picks a number) in the current
    /// network namespace, non-blocking.
    pub fn open(name: &str, kind: TunKind) -> io::Result<Tun> {
        if name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "TUN name longer than 15 bytes"));
        }
        match kind {
            TunKind::Offload | TunKind::Plain => {
                let dev = tun_rs::DeviceBuilder::new().name(name).offload(kind == TunKind::Offload).enable(false).build_sync()?;
                dev.set_nonblocking(true)?;
                let offload = dev.tcp_gso();
                let name = dev.name()?;
                let fd = dev.as_raw_fd();
                Ok(Tun { dev: Dev::Rs(dev), fd, name, offload, kind })
            }
            TunKind::TokioTun => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
                let tun = {
                    let _g = rt.enter();
                    tokio_tun::Tun::builder()
                        .name(name)
                        .build()
                        .map_err(|e| io::Error::other(format!("tokio-tun: {e}")))?
                        .pop()
                        .ok_or_else(|| io::Error::other("tokio-tun returned no queue"))?
                };
                let fd = tun.as_raw_fd();
                let name = tun.name().to_string();
                Ok(Tun { dev: Dev::Tokio { _tun: tun, _rt: rt }, fd, name, offload: false, kind })
            }
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// TSO/GRO offload is active.
    pub fn offload(&self) -> bool {
        self.offload
    }
    pub fn kind(&self) -> TunKind {
        self.kind
    }

    /// Read one packet from the device. With offload a super-packet is
    /// split into segments: segment `i` lands at `bufs[i][offset..][..sizes[i]]`.
    /// Returns the number of segments, `Ok(0)` when nothing is waiting.
    /// `scratch` must hold [`SCRATCH`] bytes; `bufs` and `sizes` have the same length.
    pub fn recv(&self, scratch: &mut [u8], bufs: &mut [Vec<u8>], sizes: &mut [usize], offset: usize) -> io::Result<usize> {
        let r = match &self.dev {
            Dev::Rs(d) => d.recv_multiple(scratch, bufs, sizes, offset),
            Dev::Tokio { .. } => match sys::read(self.fd, &mut bufs[0][offset..])? {
                Some(n) => {
                    sizes[0] = n;
                    return Ok(1);
                }
                None => return Ok(0),
            },
        };
        match r {
            Ok(n) => Ok(n),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Write the packets `bufs[i][offset..]` (each buffer exactly as long
    /// as its packet; `offset >= HEADROOM`). With offload, TCP segments of
    /// one flow are coalesced first, so fewer writes than packets happen.
    /// Returns the number of writes that failed.
    pub fn send(&self, gro: &mut GROTable, bufs: &mut [Vec<u8>], offset: usize) -> usize {
        match &self.dev {
            Dev::Rs(d) => match d.send_multiple(gro, bufs, offset) {
                Ok(_) => 0,
                Err(_) => 1,
            },
            Dev::Tokio { .. } => bufs.iter().filter(|b| sys::write(self.fd, &b[offset..]).is_err()).count(),
        }
    }
}
