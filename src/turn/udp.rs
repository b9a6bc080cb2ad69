//! TURN over UDP: the listening socket's task demultiplexes datagrams by
//! source address to [`Client`]s, and each allocation has a task of its own
//! receiving on its relay socket (one span per allocation). A client sits
//! behind a `std` mutex taken by both (never across an `.await`), so a
//! packet is relayed where it is received, with no channel hop.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::client::{binding_response, is_allocate_request, Client, ClientSink};
use super::metrics::{Refusal, Transport};
use super::{Context, MAX_HANDSHAKES, RELAY_DATAGRAM_MAX};

/// Datagrams taken from a ready socket before the task looks at its other
/// events again (fewer wake-ups under load; a bound so timers still run).
const DRAIN: usize = 32;

/// Sends to one client through the listening socket; a full socket buffer
/// drops the datagram.
struct UdpSink<'a> {
    socket: &'a UdpSocket,
    to: SocketAddr,
}

impl ClientSink for UdpSink<'_> {
    fn send(&mut self, bytes: &[u8], _relayed: bool) -> bool {
        self.socket.try_send_to(bytes, self.to).is_ok()
    }
}

type Shared = Arc<Mutex<Client>>;

fn lock(c: &Shared) -> MutexGuard<'_, Client> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves the listening UDP socket until shutdown.
pub(crate) async fn run(socket: UdpSocket, ctx: Arc<Context>, tracker: TaskTracker) {
    let socket = Arc::new(socket);
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut clients: HashMap<SocketAddr, Shared> = HashMap::new();
    // Clients created by an Allocate that has not authenticated yet, oldest
    // first (stale entries are skipped when popped).
    let mut handshakes: VecDeque<SocketAddr> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    let shutdown = ctx.shutdown.clone();
    let stopped = shutdown.cancelled();
    tokio::pin!(stopped);
    // Datagrams left to take without waiting (see DRAIN).
    let mut ready = 0;
    loop {
        let received = if ready > 0 {
            ready -= 1;
            match socket.try_recv_from(&mut buf) {
                Ok(r) => r,
                Err(_) => {
                    ready = 0;
                    continue;
                }
            }
        } else {
            tokio::select! {
                _ = &mut stopped => break,
                _ = sweep.tick() => {
                    sweep_clients(&ctx, &socket, &mut clients, &mut handshakes);
                    continue;
                }
                r = socket.recv_from(&mut buf) => match r {
                    Ok(r) => {
                        ready = DRAIN;
                        r
                    }
                    Err(_) => continue,
                },
            }
        };
        let (n, from) = received;
        let data = &buf[..n];
        let now = ctx.clock.now();
        let mut sink = UdpSink {
            socket: &socket,
            to: from,
        };
        if let Some(client) = clients.get(&from).cloned() {
            let mut c = lock(&client);
            if !c.is_done() {
                guarded(&mut c, |c| c.on_client(data, now, &mut sink));
                if let Some(relay) = c.take_new_relay() {
                    spawn_relay(&ctx, &tracker, &socket, &client, &c, relay, from);
                }
                if !c.is_done() {
                    continue;
                }
            }
            drop(c);
            clients.remove(&from);
            if !is_allocate_request(data) {
                continue;
            }
        }
        // A source without state: a Binding is answered statelessly, an
        // Allocate starts a client, anything else is dropped.
        if let Some(reply) = binding_response(data, from) {
            sink.send(&reply, false);
            continue;
        }
        if !is_allocate_request(data) {
            continue;
        }
        while handshakes.len() >= MAX_HANDSHAKES {
            let Some(oldest) = handshakes.pop_front() else {
                break;
            };
            let evict = clients
                .get(&oldest)
                .is_some_and(|c| !lock(c).is_authenticated());
            if evict {
                clients.remove(&oldest);
                ctx.metrics.refused(Refusal::Capacity);
            }
        }
        let mut client = Client::new(ctx.clone(), Transport::Udp, local, from, now);
        guarded(&mut client, |c| c.on_client(data, now, &mut sink));
        if client.is_done() {
            continue;
        }
        let authenticated = client.is_authenticated();
        let client = Arc::new(Mutex::new(client));
        clients.insert(from, client.clone());
        if !authenticated {
            handshakes.push_back(from);
        }
        let mut c = lock(&client);
        if let Some(relay) = c.take_new_relay() {
            spawn_relay(&ctx, &tracker, &socket, &client, &c, relay, from);
        }
    }
    // Shutdown: dropping the clients frees their allocations; relay tasks
    // see the cancellation themselves.
    clients.clear();
}

/// Runs `f` on a client; a panic in the protocol crate ends that client
/// only, not the listening socket's task that serves every other one.
fn guarded(c: &mut Client, f: impl FnOnce(&mut Client)) {
    let run = std::panic::AssertUnwindSafe(|| f(&mut *c));
    if std::panic::catch_unwind(run).is_err() {
        tracing::warn!("TURN client dropped after a panic in the protocol layer");
        c.finish();
    }
}

/// Forgets finished clients and those that never allocated in time.
fn sweep_clients(
    ctx: &Context,
    socket: &UdpSocket,
    clients: &mut HashMap<SocketAddr, Shared>,
    handshakes: &mut VecDeque<SocketAddr>,
) {
    let now = ctx.clock.now();
    clients.retain(|addr, client| {
        let mut c = lock(client);
        if c.relayed_addr().is_none() && !c.is_done() {
            let mut sink = UdpSink { socket, to: *addr };
            c.on_timer(now, &mut sink);
        }
        !c.is_done()
    });
    handshakes.retain(|a| clients.get(a).is_some_and(|c| !lock(c).is_authenticated()));
}

fn spawn_relay(
    ctx: &Arc<Context>,
    tracker: &TaskTracker,
    listener: &Arc<UdpSocket>,
    client: &Shared,
    c: &Client,
    relay: Arc<UdpSocket>,
    remote: SocketAddr,
) {
    let span = tracing::info_span!(
        "turn_allocation",
        transport = "udp",
        client = %remote,
        relayed = %c.relayed_addr().map_or_else(String::new, |a| a.to_string()),
    );
    let task = relay_task(
        ctx.clone(),
        client.clone(),
        relay,
        listener.clone(),
        remote,
        c.done().clone(),
    );
    tracker.spawn(task.instrument(span));
}

/// Receives on one allocation's relay socket and runs its timers.
async fn relay_task(
    ctx: Arc<Context>,
    client: Shared,
    relay: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    remote: SocketAddr,
    done: tokio_util::sync::CancellationToken,
) {
    tracing::debug!("allocated");
    let mut buf = vec![0u8; RELAY_DATAGRAM_MAX];
    let mut wake = lock(&client).wake();
    let sleep = tokio::time::sleep_until(ctx.clock.deadline(wake));
    tokio::pin!(sleep);
    let finished = done.cancelled();
    tokio::pin!(finished);
    loop {
        tokio::select! {
            _ = &mut finished => break,
            r = relay.recv_from(&mut buf) => {
                let Ok((mut n, mut peer)) = r else { continue };
                let now = ctx.clock.now();
                let mut sink = UdpSink { socket: &listener, to: remote };
                let mut c = lock(&client);
                // Whatever else is queued goes under the same lock.
                for _ in 0..DRAIN {
                    // A full buffer may be a truncated datagram: larger than
                    // any WebRTC packet, dropped.
                    if n < buf.len() {
                        guarded(&mut c, |c| c.on_peer(&buf[..n], peer, now, &mut sink));
                    }
                    match relay.try_recv_from(&mut buf) {
                        Ok((m, p)) => (n, peer) = (m, p),
                        Err(_) => break,
                    }
                }
            }
            () = &mut sleep => {
                let now = ctx.clock.now();
                let mut sink = UdpSink { socket: &listener, to: remote };
                lock(&client).on_timer(now, &mut sink);
            }
        }
        let c = lock(&client);
        if c.is_done() {
            break;
        }
        if c.wake() != wake {
            wake = c.wake();
            sleep.as_mut().reset(ctx.clock.deadline(wake));
        }
    }
    tracing::debug!("freed");
}
