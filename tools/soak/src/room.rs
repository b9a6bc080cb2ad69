//! Honest rooms: a host and its guests doing full offer/answer/ICE/configure
//! exchanges, with every message accounted for.
//!
//! Every message carries a tag `"soak":{"r":ROOM,"s":FROM,"d":TO,"q":SEQ}`
//! (the server keeps unknown fields). Before a message is written, its
//! sequence number is appended to the expected list of each (sender,
//! receiver) channel; a receiver must see exactly the head of that list.
//! So a message that never arrives, arrives twice, arrives out of order, at
//! the wrong peer, in the wrong room or with the wrong `from` is counted at
//! once, and whatever is still expected at the end is lost.
//!
//! A room's host sometimes drops its TCP connection without a close frame
//! (after its guests' messages have all arrived, and right after a burst of
//! its own, which must still be delivered), then resumes with its secret;
//! sometimes it never comes back, and the room must close and its tokens die.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::net::{self, ConnectError, Rng, Sink, Stream, STEP};
use crate::{Ctx, PublicRoom};

/// Broadcast (no `to`): `d` in the tag.
const ALL: i64 = -1;

/// The accounting of one room: shared by the driver and the readers.
struct Book {
    serial: u64,
    ids: Vec<String>,
    /// (sender slot, receiver slot) -> sequence numbers still expected, in order.
    pending: HashMap<(usize, usize), VecDeque<u64>>,
    delivered: u64,
    /// Error replies received, by slot and code.
    errors: HashMap<(usize, String), u64>,
    /// Slots whose connection may end now without that being a failure.
    expect_close: Vec<bool>,
    chaos_received: u64,
}

impl Book {
    fn pending_total(&self) -> usize {
        self.pending.values().map(VecDeque::len).sum()
    }
}

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a reader passes to its room's driver.
#[derive(Debug)]
enum Ev {
    Msg(Value),
    Closed(Option<u16>),
    Ended(String),
}

/// (slot, connection generation, event).
type Event = (usize, u64, Ev);

/// Reads one connection: checks every tagged message against the book and
/// passes the rest to the driver.
async fn reader(
    ctx: Arc<Ctx>,
    book: Arc<Mutex<Book>>,
    slot: usize,
    gen: u64,
    mut stream: Stream,
    events: mpsc::UnboundedSender<Event>,
) {
    loop {
        let ev = match stream.next().await {
            None => Ev::Ended("end of stream".into()),
            Some(Err(e)) => Ev::Ended(e.to_string()),
            Some(Ok(Message::Close(f))) => Ev::Closed(f.map(|f| u16::from(f.code))),
            Some(Ok(Message::Text(t))) => {
                let v: Value = match serde_json::from_str(&t) {
                    Ok(v) => v,
                    Err(_) => {
                        ctx.stats.fail(
                            "honest.server_sent_non_json",
                            t.chars().take(200).collect::<String>(),
                        );
                        continue;
                    }
                };
                if let Some(tag) = v.get("soak") {
                    check(&ctx, &book, slot, &v, tag);
                    continue;
                }
                if v.get("chaos").is_some() {
                    chaos_arrived(&ctx, &book, slot, &v);
                    continue;
                }
                if v["type"] == "error" {
                    let code = v["code"].as_str().unwrap_or("?").to_string();
                    *lock(&book).errors.entry((slot, code)).or_default() += 1;
                }
                Ev::Msg(v)
            }
            Some(Ok(Message::Binary(_))) => {
                ctx.stats
                    .fail("honest.server_sent_binary", format!("slot {slot}"));
                continue;
            }
            Some(Ok(_)) => continue,
        };
        let done = !matches!(ev, Ev::Msg(_));
        if done && !lock(&book).expect_close[slot] {
            ctx.stats.fail(
                "honest.connection_lost",
                format!("room {} slot {slot}: {ev:?}", lock(&book).serial),
            );
        }
        if events.send((slot, gen, ev)).is_err() || done {
            return;
        }
    }
}

/// A message from a chaos client reached an honest peer: only a host may get
/// one, from a chaos guest of its own room; a cross-room probe never.
fn chaos_arrived(ctx: &Ctx, book: &Mutex<Book>, slot: usize, v: &Value) {
    if v.get("xroom").is_some() {
        ctx.stats.fail(
            "leak.cross_room",
            format!("chaos probe reached an honest peer: {v}"),
        );
    } else if slot != 0 {
        ctx.stats.fail("leak.chaos_to_guest", format!("{v}"));
    } else {
        lock(book).chaos_received += 1;
    }
}

fn check(ctx: &Ctx, book: &Mutex<Book>, slot: usize, v: &Value, tag: &Value) {
    let mut b = lock(book);
    let (Some(r), Some(s), Some(d), Some(q)) = (
        tag["r"].as_u64(),
        tag["s"].as_u64().map(|s| s as usize),
        tag["d"].as_i64(),
        tag["q"].as_u64(),
    ) else {
        ctx.stats.fail("honest.bad_tag", v.to_string());
        return;
    };
    if r != b.serial {
        ctx.stats.fail(
            "leak.cross_room",
            format!(
                "room {} slot {slot} got a message of room {r}: {v}",
                b.serial
            ),
        );
        return;
    }
    if tag.get("a").is_some() {
        ctx.stats
            .fail("misdelivered.sent_while_host_absent", v.to_string());
        return;
    }
    let to_me = if slot == 0 {
        d == 0 && s != 0
    } else {
        s == 0 && (d == ALL || d == slot as i64)
    };
    if !to_me || s >= b.ids.len() {
        ctx.stats.fail(
            "misdelivered.wrong_peer",
            format!("room {r} slot {slot}: {v}"),
        );
        return;
    }
    // `from` is the sender's real id on the way to the host, absent otherwise.
    let from_ok = if slot == 0 {
        v.get("from").and_then(Value::as_str) == Some(b.ids[s].as_str())
    } else {
        v.get("from").is_none()
    };
    if !from_ok {
        ctx.stats.fail(
            "misdelivered.wrong_from",
            format!("room {r} slot {slot}: {v}"),
        );
    }
    let book = &mut *b;
    let queue = book.pending.entry((s, slot)).or_default();
    match queue.iter().position(|&e| e == q) {
        Some(0) => {
            queue.pop_front();
            book.delivered += 1;
        }
        Some(n) => {
            queue.drain(..=n);
            book.delivered += 1;
            ctx.stats.fail_n(
                "lost.gap",
                n as u64,
                format!("room {r} {s}->{slot}: got {q}, {n} earlier never arrived"),
            );
            ctx.stats.add("honest.lost", n as u64);
        }
        None => ctx.stats.fail(
            "duplicate_or_unexpected",
            format!("room {r} {s}->{slot}: seq {q} not expected (duplicate or reordered)"),
        ),
    }
}

/// One room's driver: owns the connections' write halves.
struct Room {
    ctx: Arc<Ctx>,
    index: usize,
    guests: usize,
    book: Arc<Mutex<Book>>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    backlog: VecDeque<Event>,
    sinks: Vec<Option<Sink>>,
    readers: Vec<Option<JoinHandle<()>>>,
    gens: Vec<u64>,
    host_seq: u64,
    guest_seq: Vec<u64>,
    absent_sent: Vec<u64>,
    join: String,
    watch: String,
    resume: String,
    rng: Rng,
}

enum AfterDrop {
    Resumed,
    Abandoned,
}

/// Runs rooms in slot `index` until the load phase ends: a room that is
/// abandoned is replaced by a new one.
pub async fn run(ctx: Arc<Ctx>, index: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    // Spread the start over the ramp-up time.
    let ramp = ctx.opts.ramp_ms.max(1);
    tokio::time::sleep(Duration::from_millis(rng.below(ramp))).await;
    while !ctx.load_over() {
        let serial = ctx.serial.fetch_add(1, Ordering::Relaxed);
        let mut room = Room::new(Arc::clone(&ctx), index, serial, rng.next());
        let result = room.run().await;
        if let Err(e) = &result {
            ctx.stats
                .fail("honest.room_failed", format!("room {serial}: {e}"));
        }
        room.finish(result.is_ok()).await;
        if result.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Room {
    fn new(ctx: Arc<Ctx>, index: usize, serial: u64, seed: u64) -> Room {
        let guests = ctx.opts.guests.max(1);
        let slots = guests + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        Room {
            book: Arc::new(Mutex::new(Book {
                serial,
                ids: vec![String::new(); slots],
                pending: HashMap::new(),
                delivered: 0,
                errors: HashMap::new(),
                expect_close: vec![false; slots],
                chaos_received: 0,
            })),
            ctx,
            index,
            guests,
            tx,
            rx,
            backlog: VecDeque::new(),
            sinks: (0..slots).map(|_| None).collect(),
            readers: (0..slots).map(|_| None).collect(),
            gens: vec![0; slots],
            host_seq: 0,
            guest_seq: vec![0; slots],
            absent_sent: vec![0; slots],
            join: String::new(),
            watch: String::new(),
            resume: String::new(),
            rng: Rng::new(seed),
        }
    }

    fn serial(&self) -> u64 {
        lock(&self.book).serial
    }

    /// Opens `path` for `slot` and starts its reader.
    async fn open(&mut self, slot: usize, path: &str) -> Result<(), String> {
        let ws = self
            .ctx
            .net
            .ws(path, false)
            .await
            .map_err(|e| format!("slot {slot} connect {path}: {e}"))?;
        let (sink, stream) = ws.split();
        self.gens[slot] += 1;
        lock(&self.book).expect_close[slot] = false;
        let handle = tokio::spawn(reader(
            Arc::clone(&self.ctx),
            Arc::clone(&self.book),
            slot,
            self.gens[slot],
            stream,
            self.tx.clone(),
        ));
        self.sinks[slot] = Some(sink);
        self.readers[slot] = Some(handle);
        Ok(())
    }

    async fn send_raw(&mut self, slot: usize, v: &Value) -> Result<(), String> {
        let sink = self.sinks[slot]
            .as_mut()
            .ok_or_else(|| format!("slot {slot} has no connection"))?;
        net::send(sink, v).await
    }

    /// Waits for an event of `slot`'s current connection that `want` accepts.
    async fn expect(
        &mut self,
        slot: usize,
        within: Duration,
        what: &str,
        want: impl Fn(&Ev) -> bool,
    ) -> Result<Ev, String> {
        let gen = self.gens[slot];
        if let Some(i) = self
            .backlog
            .iter()
            .position(|(s, g, e)| *s == slot && *g == gen && want(e))
        {
            return self
                .backlog
                .remove(i)
                .map(|x| x.2)
                .ok_or_else(|| "backlog".to_string());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => {
                    return Err(format!(
                        "room {} slot {slot}: no {what} within {within:?}",
                        self.serial()
                    ))
                }
                Ok(None) => return Err("event channel closed".into()),
                Ok(Some((s, g, e))) => {
                    if s == slot && g == gen && want(&e) {
                        return Ok(e);
                    }
                    if g == self.gens[s] {
                        self.backlog.push_back((s, g, e));
                        if self.backlog.len() > 256 {
                            self.backlog.pop_front();
                        }
                    }
                }
            }
        }
    }

    async fn expect_msg(
        &mut self,
        slot: usize,
        within: Duration,
        kind: &str,
    ) -> Result<Value, String> {
        match self
            .expect(
                slot,
                within,
                kind,
                |e| matches!(e, Ev::Msg(v) if v["type"] == kind),
            )
            .await?
        {
            Ev::Msg(v) => Ok(v),
            other => Err(format!("expected {kind}, got {other:?}")),
        }
    }

    /// Waits for `peer_joined` of every honest guest on the host.
    async fn expect_guests_joined(&mut self) -> Result<(), String> {
        let ids: Vec<String> = lock(&self.book).ids[1..].to_vec();
        for id in ids {
            self.expect(0, STEP, "peer_joined", |e| {
                matches!(e, Ev::Msg(v) if v["type"] == "peer_joined" && v["peer"] == id.as_str())
            })
            .await?;
        }
        Ok(())
    }

    fn track_token(&self, t: &str) {
        self.ctx
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t.to_string());
    }

    async fn run(&mut self) -> Result<(), String> {
        self.open(0, "/webrtc").await?;
        self.send_raw(0, &json!({"type":"init"})).await?;
        let r = self.expect_msg(0, STEP, "init").await?;
        let field = |k: &str| {
            r[k].as_str()
                .map(str::to_string)
                .ok_or(format!("init reply without {k}: {r}"))
        };
        self.join = field("join")?;
        self.watch = field("watch")?;
        self.resume = field("resume")?;
        lock(&self.book).ids[0] = field("peer")?;
        for t in [self.join.clone(), self.watch.clone(), self.resume.clone()] {
            self.track_token(&t);
        }
        for slot in 1..=self.guests {
            // Alternate the ways in: init with join, the query string with
            // watch, the query string with join.
            let (role, by_query) = match slot % 3 {
                1 => ("join", false),
                2 => ("watch", true),
                _ => ("join", true),
            };
            let token = if role == "join" {
                self.join.clone()
            } else {
                self.watch.clone()
            };
            if by_query {
                self.open(slot, &format!("/webrtc?{role}={token}")).await?;
            } else {
                self.open(slot, "/webrtc").await?;
                self.send_raw(slot, &json!({"type":"init", role: token}))
                    .await?;
            }
            let r = self.expect_msg(slot, STEP, "init").await?;
            if r["role"] != role {
                return Err(format!("guest init reply {r}"));
            }
            lock(&self.book).ids[slot] = field_of(&r, "peer")?;
        }
        self.expect_guests_joined().await?;
        self.publish();
        self.ctx.stats.inc("honest.rooms_created");
        let round = self.ctx.opts.round_ms.max(1);
        while !self.ctx.load_over() {
            self.round().await?;
            self.ctx.stats.inc("honest.rounds");
            if self.rng.chance(self.ctx.opts.drop_prob) {
                if let AfterDrop::Abandoned = self.host_drop().await? {
                    return Ok(());
                }
            }
            let pause = round / 2 + self.rng.below(round);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
                _ = self.ctx.load_end.cancelled() => {}
            }
        }
        Ok(())
    }

    /// Lets chaos clients find this room's tokens and peers.
    fn publish(&self) {
        let ids = lock(&self.book).ids.clone();
        let mut rooms = self.ctx.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms[self.index] = Some(PublicRoom {
            join: self.join.clone(),
            watch: self.watch.clone(),
            peers: ids,
        });
    }

    fn unpublish(&self) {
        let mut rooms = self.ctx.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms[self.index] = None;
    }

    /// Sends one tagged message from `from` (0 = host) to `to` (`None`: the
    /// host's broadcast; guests always send to the host).
    async fn send_tagged(
        &mut self,
        from: usize,
        to: Option<usize>,
        mut body: Value,
    ) -> Result<(), String> {
        let q = if from == 0 {
            self.host_seq += 1;
            self.host_seq
        } else {
            self.guest_seq[from] += 1;
            self.guest_seq[from]
        };
        let (d, receivers): (i64, Vec<usize>) = match (from, to) {
            (0, Some(i)) => (i as i64, vec![i]),
            (0, None) => (ALL, (1..=self.guests).collect()),
            _ => (0, vec![0]),
        };
        let serial;
        {
            let mut b = lock(&self.book);
            serial = b.serial;
            if let (0, Some(i)) = (from, to) {
                body["to"] = json!(b.ids[i]);
            }
            for &r in &receivers {
                b.pending.entry((from, r)).or_default().push_back(q);
            }
        }
        body["soak"] = json!({"r": serial, "s": from, "d": d, "q": q});
        if self.rng.chance(0.2) {
            // Vary the size; the server relays it untouched.
            body["pad"] = json!("p".repeat(self.rng.below(4096) as usize));
        }
        match self.send_raw(from, &body).await {
            Ok(()) => {
                self.ctx.stats.add("honest.sent", receivers.len() as u64);
                Ok(())
            }
            Err(e) => {
                let mut b = lock(&self.book);
                for &r in &receivers {
                    if let Some(qu) = b.pending.get_mut(&(from, r)) {
                        qu.retain(|&x| x != q);
                    }
                }
                Err(e)
            }
        }
    }

    fn sdp(&self, kind: &str, seq: u64) -> Value {
        json!({"type": kind, "sdp": format!("v=0\r\no=- {seq} 2 IN IP4 127.0.0.1\r\ns=soak\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n")})
    }

    fn ice(&mut self, seq: u64) -> Value {
        let line = format!(
            "candidate:{seq} 1 udp 2122260223 198.51.100.{} 5{:04} typ host",
            seq % 250,
            seq % 10000
        );
        if self.rng.chance(0.3) {
            // webrtc_ros's documented misspelling: relayed as `candidate`.
            json!({"type":"ice_candidate","candiate": line, "sdp_mid":"0","sdp_mline_index":0})
        } else {
            json!({"type":"ice_candidate","candidate": line, "sdp_mid":"0","sdp_mline_index":0})
        }
    }

    /// One full exchange with every guest, then a broadcast.
    async fn round(&mut self) -> Result<(), String> {
        for g in 1..=self.guests {
            let mut offer = self.sdp("offer", self.guest_seq[g]);
            if self.rng.chance(0.2) {
                offer["from"] = json!("forged-from");
            }
            self.send_tagged(g, None, offer).await?;
            let answer = self.sdp("answer", self.host_seq);
            self.send_tagged(0, Some(g), answer).await?;
            for _ in 0..2 {
                let c = self.ice(self.guest_seq[g]);
                self.send_tagged(g, None, c).await?;
                let c = self.ice(self.host_seq);
                self.send_tagged(0, Some(g), c).await?;
            }
            if self.rng.chance(0.1) {
                let e = json!({"type":"error","code":"soak_refused","message":"a peer may relay a typed error"});
                self.send_tagged(g, None, e).await?;
            }
        }
        let id = format!("webrtc_ros-stream-{}", self.host_seq);
        let configure = json!({"type":"configure","actions":[
            {"type":"add_stream","id": id},
            {"type":"add_video_track","stream_id": id,"id": format!("{id}/subscribed_video"),"src":"ros_image:/camera/image_raw"}
        ]});
        self.send_tagged(0, None, configure).await
    }

    /// Waits until every message sent so far has arrived.
    async fn quiesce(&self, within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = lock(&self.book).pending_total();
            if left == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{left} messages still undelivered after {within:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drops `slot`'s connection without a close frame (TCP FIN).
    fn drop_abruptly(&mut self, slot: usize) {
        lock(&self.book).expect_close[slot] = true;
        if let Some(h) = self.readers[slot].take() {
            h.abort();
        }
        self.sinks[slot] = None;
        self.gens[slot] += 1;
    }

    async fn host_drop(&mut self) -> Result<AfterDrop, String> {
        self.quiesce(STEP).await?;
        // A burst the host writes just before it vanishes: its guests are
        // alive, so every message must still reach them.
        self.send_tagged(0, Some(1), self.sdp("offer", self.host_seq))
            .await?;
        self.send_tagged(
            0,
            None,
            json!({"type":"configure","actions":[{"type":"remove_stream","id":"s"}]}),
        )
        .await?;
        let last = self.guests;
        let c = self.ice(self.host_seq);
        self.send_tagged(0, Some(last), c).await?;
        self.drop_abruptly(0);
        self.ctx.stats.inc("honest.host_drops");
        for g in 1..=self.guests {
            self.expect_msg(g, STEP, "host_left").await?;
        }
        // While the host is away, guests' messages are refused, not queued.
        for g in 1..=self.guests {
            let mut m = self.sdp("offer", 0);
            let serial = self.serial();
            m["soak"] = json!({"r": serial, "s": g, "d": 0, "q": 0, "a": 1});
            self.send_raw(g, &m).await?;
            self.absent_sent[g] += 1;
            self.ctx.stats.inc("honest.sent_while_host_absent");
        }
        self.wait_errors("host_absent").await?;
        if self.rng.chance(self.ctx.opts.abandon_prob) {
            return self.abandoned().await.map(|()| AfterDrop::Abandoned);
        }
        tokio::time::sleep(Duration::from_millis(self.rng.below(500))).await;
        self.open(0, "/webrtc").await?;
        let old = self.resume.clone();
        self.send_raw(0, &json!({"type":"init","resume": old}))
            .await?;
        let r = self.expect_msg(0, STEP, "init").await?;
        let host_id = lock(&self.book).ids[0].clone();
        if r["join"] != self.join.as_str()
            || r["watch"] != self.watch.as_str()
            || r["peer"] != host_id.as_str()
            || r["role"] != "host"
            || r["resume"] == old.as_str()
        {
            return Err(format!("resume reply {r}"));
        }
        self.resume = field_of(&r, "resume")?;
        self.track_token(&self.resume.clone());
        self.expect_guests_joined().await?;
        for g in 1..=self.guests {
            self.expect_msg(g, STEP, "host_joined").await?;
        }
        self.ctx.stats.inc("honest.host_resumes");
        // The secret used up by the resume is dead.
        self.expect_refused(&json!({"type":"init","resume": old}), "room_not_found")
            .await?;
        Ok(AfterDrop::Resumed)
    }

    async fn wait_errors(&mut self, code: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let short: Vec<usize> = {
                let b = lock(&self.book);
                (1..=self.guests)
                    .filter(|&g| {
                        b.errors.get(&(g, code.to_string())).copied().unwrap_or(0)
                            < self.absent_sent[g]
                    })
                    .collect()
            };
            if short.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("guests {short:?} got no {code}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A fresh connection sends `init` and must get error `code`.
    async fn expect_refused(&self, init: &Value, code: &str) -> Result<(), String> {
        let ws = self
            .ctx
            .net
            .ws("/webrtc", false)
            .await
            .map_err(|e| format!("probe connect: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        net::send(&mut sink, init).await?;
        let r = net::read_until(&mut stream, STEP, |v| {
            v["type"] == "error" || v["type"] == "init"
        })
        .await?;
        let _ = sink.close().await;
        if r["code"] != code {
            return Err(format!("{init} answered {r}, expected {code}"));
        }
        Ok(())
    }

    /// The host never comes back: the guests get `room_closed` and a 1000
    /// close; then every token of the room is dead.
    async fn abandoned(&mut self) -> Result<(), String> {
        for g in 1..=self.guests {
            lock(&self.book).expect_close[g] = true;
        }
        let grace = self.ctx.opts.host_grace + STEP;
        for g in 1..=self.guests {
            self.expect_msg(g, grace, "room_closed").await?;
            match self
                .expect(g, STEP, "close", |e| !matches!(e, Ev::Msg(_)))
                .await?
            {
                Ev::Closed(Some(1000)) => {}
                Ev::Ended(e) => {
                    return Err(format!(
                        "guest {g} after room_closed: ended without a close frame ({e})"
                    ))
                }
                other => return Err(format!("guest {g} after room_closed: {other:?}")),
            }
            self.sinks[g] = None;
            self.readers[g] = None;
        }
        self.unpublish();
        self.ctx.stats.inc("honest.rooms_abandoned");
        for init in [
            json!({"type":"init","join": self.join}),
            json!({"type":"init","watch": self.watch}),
            json!({"type":"init","resume": self.resume}),
        ] {
            self.expect_refused(&init, "room_not_found").await?;
        }
        for (role, t) in [("join", &self.join), ("watch", &self.watch)] {
            match self.ctx.net.ws(&format!("/webrtc?{role}={t}"), false).await {
                Err(ConnectError::Http(404)) => {}
                Err(e) => return Err(format!("?{role}= of a closed room: {e}")),
                Ok(_) => return Err(format!("?{role}= of a closed room was accepted")),
            }
        }
        self.ctx.stats.add("honest.dead_tokens_refused", 5);
        self.ctx
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.join.clone(), self.watch.clone()));
        Ok(())
    }

    /// Accounts for what is left and closes every connection with a close
    /// frame.
    async fn finish(&mut self, ok: bool) {
        self.unpublish();
        if ok {
            if let Err(e) = self.quiesce(STEP).await {
                self.ctx.stats.fail(
                    "honest.final_quiesce",
                    format!("room {}: {e}", self.serial()),
                );
            }
        }
        for slot in (0..self.sinks.len()).rev() {
            lock(&self.book).expect_close[slot] = true;
            if let Some(mut sink) = self.sinks[slot].take() {
                let _ = tokio::time::timeout(STEP, sink.send(Message::Close(None))).await;
            }
            if let Some(h) = self.readers[slot].take() {
                // The reader ends when the server answers the close.
                let abort = h.abort_handle();
                if tokio::time::timeout(STEP, h).await.is_err() {
                    abort.abort();
                }
            }
        }
        let b = lock(&self.book);
        let lost = b.pending_total() as u64;
        if lost > 0 {
            let detail: Vec<String> = b
                .pending
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|((s, r), q)| format!("{s}->{r}: {:?}", q.iter().take(5).collect::<Vec<_>>()))
                .collect();
            self.ctx.stats.fail_n(
                "lost.never_arrived",
                lost,
                format!("room {}: {}", b.serial, detail.join("; ")),
            );
            self.ctx.stats.add("honest.lost", lost);
        }
        self.ctx.stats.add("honest.delivered", b.delivered);
        self.ctx
            .stats
            .add("honest.chaos_messages_received_by_hosts", b.chaos_received);
        for ((slot, code), n) in &b.errors {
            let expected = if code == "host_absent" {
                self.absent_sent[*slot]
            } else {
                0
            };
            if *n > expected {
                self.ctx.stats.fail_n(
                    &format!("honest.unexpected_error.{code}"),
                    n - expected,
                    format!("room {} slot {slot}", b.serial),
                );
            }
            if code == "host_absent" {
                self.ctx
                    .stats
                    .add("honest.host_absent_errors", (*n).min(expected));
            }
        }
    }
}

fn field_of(v: &Value, k: &str) -> Result<String, String> {
    v[k].as_str()
        .map(str::to_string)
        .ok_or(format!("no {k} in {v}"))
}
