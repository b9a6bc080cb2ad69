//! One TURN client (one 5-tuple): our layer around a `turn-server-proto`
//! [`TurnServer`] that serves this client alone.
//!
//! The protocol state machine (allocations, permissions, channels, nonces,
//! MESSAGE-INTEGRITY, lifetimes) is the crate's. This layer adds what the
//! crate leaves to its user, checking each request before the crate sees it:
//!
//! - REST credentials: the username's expiry is checked on every request,
//!   and the password is derived from the secret and given to the crate with
//!   `add_user` only once MESSAGE-INTEGRITY has verified under it, so only
//!   credentials that were really minted ever become state;
//! - the peer filter (403 on CreatePermission / ChannelBind);
//! - allocation quotas (486 per label, 508 in total) and UDP-only relays
//!   (442 for RFC 6062 TCP allocations, which WebRTC does not use);
//! - the relay socket itself (port range, advertised address), bandwidth
//!   buckets and metrics on the data path.
//!
//! Responses of our own are signed with the same key and carry the nonce the
//! crate last handed this client. Everything here is synchronous: the drivers
//! (`udp.rs`, `tcp.rs`) own the sockets' receive side and the timers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use turn_server_proto::api::{
    DelayedMessageOrChannelSend, SocketAllocateError, Transmit, TurnServerApi, TurnServerPollRet,
};
use turn_server_proto::server::TurnServer;
use turn_server_proto::types::message::ALLOCATE;
use turn_server_proto::types::prelude::DelayedTransmitBuild;
use turn_server_proto::types::stun::attribute::{Nonce, XorMappedAddress};
use turn_server_proto::types::stun::message::{
    Message, MessageClass, MessageHeader, MessageIntegrityCredentials, MessageWriteVec, BINDING,
};
use turn_server_proto::types::stun::prelude::{MessageWrite, MessageWriteExt};
use turn_server_proto::types::{AddressFamily, TransportType};

use super::metrics::{Direction, Refusal, Transport};
use super::quota::{Grant, QuotaRefusal};
use super::{Context, Instant};

mod check;

/// Where the bytes for a TURN client go: the listening UDP socket, or the
/// client's TCP/TLS stream.
pub(crate) trait ClientSink {
    /// Sends `bytes` to the client. `relayed` data (not a response) may be
    /// dropped when the way is full; returns whether it went.
    fn send(&mut self, bytes: &[u8], relayed: bool) -> bool;
}

/// The credential a client proved.
struct User {
    name: String,
    label: Arc<str>,
    expires_at: u64,
    key: MessageIntegrityCredentials,
}

/// A granted allocation: its relay socket and share of the quotas.
struct Allocation {
    socket: Arc<UdpSocket>,
    /// The relayed transport address the client and its peers know.
    addr: SocketAddr,
    grant: Grant,
    ctx: Arc<Context>,
    transport: Transport,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.ctx.filter.live_ports().remove(self.addr.port());
        self.ctx.metrics.allocation_closed(self.transport);
    }
}

/// One TURN client and its (at most one) allocation.
pub(crate) struct Client {
    ctx: Arc<Context>,
    inner: TurnServer,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    user: Option<User>,
    nonce: Option<String>,
    allocation: Option<Allocation>,
    new_relay: Option<Arc<UdpSocket>>,
    done: CancellationToken,
    created: Instant,
    wake: Instant,
    scratch: Vec<u8>,
}

impl Client {
    /// A client at `remote` that reached the relay on `local`.
    pub fn new(
        ctx: Arc<Context>,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Self {
        let ttype = match transport {
            Transport::Udp => TransportType::Udp,
            Transport::Tcp | Transport::Tls => TransportType::Tcp,
        };
        let inner = TurnServer::new(ttype, local, ctx.realm.clone());
        Client {
            done: ctx.shutdown.child_token(),
            ctx,
            inner,
            transport,
            local,
            remote,
            user: None,
            nonce: None,
            allocation: None,
            new_relay: None,
            created: now,
            wake: now + super::HANDSHAKE_TIMEOUT,
            scratch: Vec::new(),
        }
    }

    /// When [`Client::on_timer`] wants to run next.
    pub fn wake(&self) -> Instant {
        self.wake
    }

    /// Cancelled when this client is finished (allocation gone, handshake
    /// timed out, or the server shutting down).
    pub fn done(&self) -> &CancellationToken {
        &self.done
    }

    /// Whether this client is finished.
    pub fn is_done(&self) -> bool {
        self.done.is_cancelled()
    }

    /// Whether a credential has verified for this client.
    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// The relay socket of an allocation granted since the last call, for
    /// the driver to receive on.
    pub fn take_new_relay(&mut self) -> Option<Arc<UdpSocket>> {
        self.new_relay.take()
    }

    /// The relayed address, once allocated.
    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        self.allocation.as_ref().map(|a| a.addr)
    }

    /// Bytes from the client: one STUN message or ChannelData frame.
    pub fn on_client(&mut self, data: &[u8], now: Instant, out: &mut impl ClientSink) {
        let mut is_request = false;
        if data.first().is_some_and(|b| b & 0xc0 == 0) {
            let Ok(msg) = Message::from_bytes(data) else {
                return;
            };
            is_request = msg.has_class(MessageClass::Request);
            if is_request {
                if let Some(reply) = self.check_request(&msg) {
                    self.send_control(&reply, out);
                    return;
                }
            }
        }
        let transmit = Transmit::new(data, self.ttype(), self.remote, self.local);
        if let Some(t) = self.inner.recv(transmit, now) {
            self.route(t, now, out);
        }
        // Only requests change what the crate waits for (allocations,
        // lifetimes); data (ChannelData, Send) does not.
        if is_request {
            self.pump(now, out);
        }
    }

    /// A datagram from `peer` on the relay socket.
    pub fn on_peer(
        &mut self,
        data: &[u8],
        peer: SocketAddr,
        now: Instant,
        out: &mut impl ClientSink,
    ) {
        let Some(relayed) = self.relayed_addr() else {
            return;
        };
        let transmit = Transmit::new(data, TransportType::Udp, peer, relayed);
        let Some(t) = self.inner.recv(transmit, now) else {
            return;
        };
        if let Some(a) = self.allocation.as_mut() {
            if !a.grant.take(data.len(), now) {
                self.ctx.metrics.refused(Refusal::Bandwidth);
                return;
            }
        }
        let n = write_out(t.data, &mut self.scratch);
        if out.send(&self.scratch[..n], true) {
            self.ctx.metrics.relayed(Direction::ToClient, data.len());
        } else {
            self.ctx.metrics.refused(Refusal::ClientBacklog);
        }
    }

    /// Expiries: call at [`Client::wake`].
    pub fn on_timer(&mut self, now: Instant, out: &mut impl ClientSink) {
        if self.allocation.is_none() && now >= self.created + super::HANDSHAKE_TIMEOUT {
            self.finish();
            return;
        }
        self.pump(now, out);
    }

    /// Ends this client: frees the allocation and wakes its driver.
    pub fn finish(&mut self) {
        self.allocation = None;
        self.new_relay = None;
        self.done.cancel();
    }

    fn ttype(&self) -> TransportType {
        match self.transport {
            Transport::Udp => TransportType::Udp,
            Transport::Tcp | Transport::Tls => TransportType::Tcp,
        }
    }

    /// Sends one of the crate's transmits where it goes.
    fn route(
        &mut self,
        t: turn_server_proto::types::transmit::TransmitBuild<DelayedMessageOrChannelSend<&[u8]>>,
        now: Instant,
        out: &mut impl ClientSink,
    ) {
        if t.from == self.local {
            let n = write_out(t.data, &mut self.scratch);
            let bytes = std::mem::take(&mut self.scratch);
            self.send_control(&bytes[..n], out);
            self.scratch = bytes;
            return;
        }
        // Towards a peer, from the relayed address.
        let peer = t.to;
        let Some(a) = self.allocation.as_mut() else {
            return;
        };
        let payload: &[u8] = match &t.data {
            DelayedMessageOrChannelSend::Range(data, range) => &data[range.clone()],
            DelayedMessageOrChannelSend::Owned(v) => v,
            _ => return,
        };
        if !a.grant.take(payload.len(), now) {
            self.ctx.metrics.refused(Refusal::Bandwidth);
            return;
        }
        // A full socket buffer drops the datagram, as the network would.
        if a.socket.try_send_to(payload, peer).is_ok() {
            self.ctx.metrics.relayed(Direction::ToPeer, payload.len());
        }
    }

    /// A control message to the client; remembers the nonce it carries.
    fn send_control(&mut self, bytes: &[u8], out: &mut impl ClientSink) {
        let is_response =
            MessageHeader::from_bytes(bytes).is_ok_and(|h| h.get_type().class().is_response());
        if is_response {
            if let Ok(msg) = Message::from_bytes(bytes) {
                if let Ok(nonce) = msg.attribute::<Nonce>() {
                    if self.nonce.as_deref() != Some(nonce.nonce()) {
                        self.nonce = Some(nonce.nonce().to_owned());
                    }
                }
            }
        }
        out.send(bytes, false);
    }

    /// Runs the crate until it waits: its queued transmits, socket
    /// allocations and closes.
    fn pump(&mut self, now: Instant, out: &mut impl ClientSink) {
        loop {
            while let Some(t) = self.inner.poll_transmit(now) {
                if t.from == self.local {
                    self.send_control(&t.data, out);
                }
            }
            match self.inner.poll(now) {
                TurnServerPollRet::WaitUntil(at) => {
                    let at = if self.allocation.is_some() {
                        at
                    } else {
                        at.min(self.created + super::HANDSHAKE_TIMEOUT)
                    };
                    // Never a deadline that has already passed: the crate
                    // expires things strictly after their time.
                    self.wake = at.max(now + std::time::Duration::from_millis(1));
                    return;
                }
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    let result = if allocation_transport == TransportType::Udp {
                        self.allocate(family, now)
                    } else {
                        // RFC 6062 TCP relays: refused (442) before they get
                        // here; never a socket for one.
                        Err(SocketAllocateError::InsufficientCapacity)
                    };
                    self.inner.allocated_socket(
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                        result,
                        now,
                    );
                }
                TurnServerPollRet::SocketClose { .. } => {
                    // The allocation expired or was deleted.
                    self.finish();
                    return;
                }
                TurnServerPollRet::TcpConnect {
                    relayed_addr,
                    peer_addr,
                    listen_addr,
                    client_addr,
                } => {
                    // Not reached: TCP allocations are refused up front.
                    self.inner.tcp_connected(
                        relayed_addr,
                        peer_addr,
                        listen_addr,
                        client_addr,
                        Err(turn_server_proto::api::TcpConnectError::Forbidden),
                        now,
                    );
                }
                TurnServerPollRet::TcpClose { .. } => {}
            }
        }
    }

    /// Binds a relay socket for an allocation the crate has authenticated.
    fn allocate(
        &mut self,
        family: AddressFamily,
        now: Instant,
    ) -> Result<SocketAddr, SocketAllocateError> {
        if self.allocation.is_some() {
            return Err(SocketAllocateError::InsufficientCapacity);
        }
        let Some(user) = self.user.as_ref() else {
            return Err(SocketAllocateError::InsufficientCapacity);
        };
        let bind_ip = self.ctx.relay_ip;
        if (family == AddressFamily::IPV6) != bind_ip.is_ipv6() {
            return Err(SocketAllocateError::AddressFamilyNotSupported);
        }
        let grant = match self.ctx.quotas.acquire(&user.label, now) {
            Ok(g) => g,
            Err(QuotaRefusal::User) => {
                self.ctx.metrics.refused(Refusal::UserQuota);
                return Err(SocketAllocateError::InsufficientCapacity);
            }
            Err(QuotaRefusal::Total) => {
                self.ctx.metrics.refused(Refusal::TotalQuota);
                return Err(SocketAllocateError::InsufficientCapacity);
            }
        };
        let Some(socket) = self.ctx.ports.bind(bind_ip) else {
            self.ctx.metrics.refused(Refusal::Capacity);
            return Err(SocketAllocateError::InsufficientCapacity);
        };
        let Ok(bound) = socket.local_addr() else {
            return Err(SocketAllocateError::InsufficientCapacity);
        };
        let Ok(socket) = UdpSocket::from_std(socket) else {
            return Err(SocketAllocateError::InsufficientCapacity);
        };
        let ip = self.advertised_ip(bound.ip());
        let addr = SocketAddr::new(ip, bound.port());
        self.ctx.filter.add_own(ip);
        self.ctx.filter.live_ports().insert(bound.port());
        self.ctx.metrics.allocation_opened(self.transport);
        let socket = Arc::new(socket);
        self.new_relay = Some(socket.clone());
        self.allocation = Some(Allocation {
            socket,
            addr,
            grant,
            ctx: self.ctx.clone(),
            transport: self.transport,
        });
        Ok(addr)
    }

    /// The address put in XOR-RELAYED-ADDRESS: `--turn-public-ip`, else the
    /// relay socket's own address, else the address this host uses to reach
    /// the client.
    fn advertised_ip(&self, bound: IpAddr) -> IpAddr {
        if let Some(ip) = self.ctx.public_ip {
            if ip.is_ipv4() == bound.is_ipv4() {
                return ip;
            }
        }
        if !bound.is_unspecified() {
            return bound;
        }
        if !self.local.ip().is_unspecified() {
            return self.local.ip();
        }
        route_source(self.remote).unwrap_or(bound)
    }
}

/// Writes one of the crate's outgoing messages into `buf`; returns its
/// length.
fn write_out(data: DelayedMessageOrChannelSend<&[u8]>, buf: &mut Vec<u8>) -> usize {
    if let DelayedMessageOrChannelSend::Message(m) = data {
        // turn-types 0.7.3's `DelayedMessage::write_into` writes a SEND
        // indication even for a client (only `build` writes DATA), so a peer's
        // packet without a channel would reach the client as a SEND.
        *buf = m.build();
        return buf.len();
    }
    let len = data.len();
    buf.resize(len, 0);
    data.write_into(&mut buf[..len])
}

/// The source address this host would use to reach `remote` (no packet is
/// sent: a UDP `connect` only consults the routing table).
fn route_source(remote: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if remote.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(remote).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

/// A STUN Binding success for a request from a client without state (the
/// relay is a STUN server too). `None` if `data` is not a Binding request.
pub(crate) fn binding_response(data: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let msg = Message::from_bytes(data).ok()?;
    if !msg.has_class(MessageClass::Request) || msg.method() != BINDING {
        return None;
    }
    let mut reply = Message::builder_success(&msg, MessageWriteVec::with_capacity(48));
    reply
        .add_attribute(&XorMappedAddress::new(from, msg.transaction_id()))
        .ok()?;
    reply.add_fingerprint().ok()?;
    Some(reply.finish())
}

/// Whether `data` is an Allocate request (the only message that may create
/// a client on the UDP listener).
pub(crate) fn is_allocate_request(data: &[u8]) -> bool {
    MessageHeader::from_bytes(data).is_ok_and(|h| {
        h.get_type().has_class(MessageClass::Request) && h.get_type().method() == ALLOCATE
    })
}
