//! INFORMATIONAL requests from the peer: DELETE, liveness, error notifies.

use std::time::Duration;

use crate::codec::{self, ExchangeType, NotifyType, Payload, ProtocolId};
use crate::event::*;

use super::sa::*;
use super::*;

impl Engine {
    pub(super) fn responder_informational(&mut self, now: Duration, mut sa: IkeSa, h: &codec::Header, payloads: Vec<Payload>) {
        let mut delete_ike = false;
        let mut auth_failed = false;
        let mut ours = Vec::new();
        for p in &payloads {
            match p {
                Payload::Delete(d) if d.protocol == ProtocolId::IKE => delete_ike = true,
                Payload::Delete(d) if d.protocol == ProtocolId::ESP || d.protocol == ProtocolId::AH => {
                    for spi in &d.spis {
                        let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else { continue };
                        let spi_out = u32::from_be_bytes(b);
                        if let Some(i) = sa.child_by_out(spi_out) {
                            let c = sa.children.remove(i);
                            ours.push(c.spi_in.to_be_bytes().to_vec());
                            let reason = if c.state == ChildState::Rekeyed { DownReason::Rekeyed } else { DownReason::RemoteDelete };
                            self.child_gone(&sa, c, reason);
                            // Our own DELETE for it (if outstanding) will find nothing.
                        }
                    }
                }
                Payload::Notify(n) if n.notify_type.is_error() => {
                    let (ex, reason) = if n.notify_type == NotifyType::AUTHENTICATION_FAILED {
                        auth_failed = true;
                        (Exchange::IkeAuth, FailureReason::PeerRejectedOurAuth)
                    } else {
                        (Exchange::Informational, FailureReason::PeerReported { notify: n.notify_type.0 })
                    };
                    let remote = sa.remote;
                    self.failure(Some(&sa), remote, None, Side::Remote, ex, reason, Some(n.notify_type));
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        if !ours.is_empty() {
            out.push(Payload::Delete(codec::DeletePayload { protocol: ProtocolId::ESP, spi_size: 4, spis: ours }));
        }
        self.send_response(&mut sa, ExchangeType::INFORMATIONAL, h.message_id, out);
        if delete_ike {
            let reason = if auth_failed {
                DownReason::Failed(FailureReason::PeerRejectedOurAuth)
            } else if sa.state == IkeState::Rekeyed {
                DownReason::Rekeyed
            } else {
                DownReason::RemoteDelete
            };
            self.linger(now, sa, reason);
            return;
        }
        self.kick(now, &mut sa);
        self.put(sa);
    }
}
