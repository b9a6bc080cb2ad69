/* signal-server demo page.
 *
 * One page, three ways in:
 *   /                  Share: this browser creates a room and is its host. Like webrtc_ros,
 *                      the host is always the offerer: one RTCPeerConnection per peer that
 *                      sends `configure`.
 *   /?watch=TOKEN      Watch: view-only peer of a room.
 *   /?token=JWT        A signed link (server in token mode, docs/AUTH.md):
 *                      watch, or join when the token grants `join`.
 *   /?join=TOKEN       Join: full peer of a room (here it views, like a watcher).
 *
 * Other query parameters:
 *   server=wss://host/webrtc   signalling URL (default: this page's origin + /webrtc)
 *   ice=stun:h:p,turn:u:p@h:p  ICE servers ("none" or empty: no ICE servers)
 *   src=ros_image:/topic       the source a viewer asks for in `configure`
 *   relay=1                    "relay only": ICE over TURN relays only (iceTransportPolicy
 *                              "relay"), for testing a TURN set-up
 *
 * Plain script, no build step, no external resources. Wire contract: docs/PROTOCOL.md.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------------------
  // Pure helpers (no DOM, no globals): exposed as window.signalDemo.util.
  // ---------------------------------------------------------------------------

  const DEFAULT_ICE_SERVERS = [{ urls: 'stun:stun.l.google.com:19302' }];
  const DEFAULT_SRC = 'ros_image:/camera/image_raw';

  /** Browser RTCIceCandidate (or its JSON) -> webrtc_ros wire fields. */
  function iceToWire(c) {
    return {
      candidate: c.candidate,
      sdp_mid: c.sdpMid == null ? '' : String(c.sdpMid),
      sdp_mline_index: c.sdpMLineIndex == null ? 0 : c.sdpMLineIndex,
    };
  }

  /** webrtc_ros wire message -> RTCIceCandidateInit. Accepts the misspelling `candiate`
   *  and, leniently, browser-style field names. Returns null without a candidate. */
  function iceFromWire(m) {
    if (!m) return null;
    const candidate = typeof m.candidate === 'string' ? m.candidate
      : typeof m.candiate === 'string' ? m.candiate : null;
    if (candidate == null) return null;
    let sdpMid = m.sdp_mid != null ? m.sdp_mid : m.sdpMid;
    let sdpMLineIndex = m.sdp_mline_index != null ? m.sdp_mline_index : m.sdpMLineIndex;
    if (sdpMid === '' || sdpMid === undefined) sdpMid = null;
    if (sdpMLineIndex === undefined || sdpMLineIndex === null || sdpMLineIndex === '') {
      sdpMLineIndex = null;
    } else {
      sdpMLineIndex = Number(sdpMLineIndex);
    }
    if (sdpMid === null && sdpMLineIndex === null) sdpMLineIndex = 0;
    return { candidate, sdpMid: sdpMid === null ? null : String(sdpMid), sdpMLineIndex };
  }

  /** The signalling URL: `override` if given, else ws(s)://<page host>/webrtc. */
  function signallingUrl(loc, override) {
    if (override) return override;
    if (loc.protocol !== 'http:' && loc.protocol !== 'https:') return null;
    return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/webrtc';
  }

  /** `?ice=` value -> RTCIceServer[]; undefined when the parameter is absent.
   *  "none" or "" -> []. Entries are comma-separated URLs; a TURN entry may carry
   *  credentials as turn:USER:PASS@host:port. */
  function parseIceParam(value) {
    if (value == null) return undefined;
    const v = value.trim();
    if (v === '' || v.toLowerCase() === 'none') return [];
    return v.split(',').map((s) => s.trim()).filter(Boolean).map((url) => {
      const m = /^(turns?):([^:@/]+):([^@/]+)@(.+)$/.exec(url);
      if (m) {
        return {
          urls: m[1] + ':' + m[4],
          username: decodeURIComponent(m[2]),
          credential: decodeURIComponent(m[3]),
        };
      }
      return { urls: url };
    });
  }

  /** Which ICE servers to use: an explicit `?ice=` wins, then a non-empty list from the
   *  server's init reply, then the default public STUN server. */
  function chooseIceServers(fromParam, fromServer) {
    if (fromParam !== undefined) return fromParam;
    if (Array.isArray(fromServer) && fromServer.length > 0) return fromServer;
    return DEFAULT_ICE_SERVERS.slice();
  }

  /** The `configure` message webrtc_ros.js would send for one video track. */
  function buildConfigure(streamId, src, removeStreamId) {
    const actions = [];
    if (removeStreamId) actions.push({ type: 'remove_stream', id: removeStreamId });
    actions.push({ type: 'add_stream', id: streamId });
    actions.push({ type: 'add_video_track', stream_id: streamId, id: streamId + '/subscribed_video', src });
    return { type: 'configure', actions };
  }

  /** A full page link for a token: <origin><path>?watch=TOKEN[&server=...][&ice=...]. */
  function pageLink(kind, token, base, extra) {
    const q = new URLSearchParams();
    q.set(kind, token);
    if (extra) {
      for (const [k, v] of Object.entries(extra)) if (v != null) q.set(k, v);
    }
    return base + '?' + q.toString();
  }

  const ERROR_TEXT = {
    room_not_found: 'This link is not valid or the room has closed.',
    room_full: 'This room is full. Try again later.',
    rate_limited: 'Too many messages: the server is slowing this page down.',
    forbidden: 'That is not allowed for your role in this room.',
    peer_not_found: 'That viewer has already left.',
    not_in_room: 'Not connected to a room yet.',
    already_in_room: 'Already connected to a room.',
    too_large: 'A message was too large for the server.',
  };

  /** Why a signed link (?token=) was refused, in words: the server's
   *  sentence says which check failed (expired, revoked, wrong room, not a
   *  token, ...). */
  function describeTokenRefusal(code, message) {
    const m = typeof message === 'string' ? message : '';
    if (code === 'token_expired') return 'This link has expired. Ask for a new one.';
    if (/revoked/.test(m)) return 'This link has been revoked. Ask for a new one.';
    if (/not valid yet/.test(m)) return 'This link is not valid yet. Try again later.';
    if (/not a valid JWT|not signed|algorithm/.test(m)) return 'This is not a valid link: its token is damaged or not a token.';
    if (/signature|key this server does not have/.test(m)) return 'This link was not signed by this server (wrong key, or it was altered).';
    if (code === 'forbidden') return 'This link does not allow that here (wrong room or role): ' + m;
    return 'This link is not valid: ' + (m || 'the server refused its token') + '.';
  }

  /** The grants a signed token says it carries (read, not checked: the
   *  server checks it). */
  function tokenGrants(jwt) {
    try {
      const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(atob(part + '==='.slice((part.length + 3) % 4)));
      return Array.isArray(claims.grants) ? claims.grants : [];
    } catch (e) {
      return [];
    }
  }

  /** A server error -> words for a person. */
  function describeError(code, message) {
    if (code === 'unauthorized' || code === 'token_expired'
      || (code === 'forbidden' && /^the token /.test(message || ''))) return describeTokenRefusal(code, message);
    if (ERROR_TEXT[code]) return ERROR_TEXT[code];
    const m = typeof message === 'string' && message.trim() ? message.trim() : 'Something went wrong.';
    return code ? m + ' (' + code + ')' : m;
  }

  /** The DTLS fingerprint(s) of an SDP, to tell a renegotiation on the same remote
   *  connection (webrtc_ros re-offering) from a brand-new remote connection. */
  function sdpFingerprint(sdp) {
    if (typeof sdp !== 'string') return '';
    const f = sdp.match(/^a=fingerprint:.*$/gim);
    return f ? f.map((s) => s.trim().toLowerCase()).sort().join('\n') : '';
  }

  /** Backoff delay in ms for reconnect attempt n (0-based): 1 s, 2 s, 4 s ... 30 s, with jitter. */
  function backoffDelay(attempt, random) {
    const base = Math.min(30000, 1000 * Math.pow(2, Math.min(attempt, 5)));
    const r = typeof random === 'number' ? random : Math.random();
    return Math.round(base * (0.8 + 0.4 * r));
  }

  function formatBitrate(bps) {
    if (!isFinite(bps) || bps < 0) return '—';
    if (bps >= 1e6) return (bps / 1e6).toFixed(2) + ' Mb/s';
    if (bps >= 1e3) return Math.round(bps / 1e3) + ' kb/s';
    return Math.round(bps) + ' b/s';
  }

  function randomId(prefix) {
    const a = new Uint8Array(6);
    (self.crypto || window.crypto).getRandomValues(a);
    return prefix + Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  /** The candidate pair ICE is using, from an RTCStatsReport: the transport's
   *  selectedCandidatePairId, else a pair marked `selected` (Firefox), else a nominated,
   *  succeeded one. `{local, remote}` candidate stats, or null before one is chosen. */
  function selectedPair(report) {
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId && !pair) {
        pair = report.get(s.selectedCandidatePairId) || null;
      }
    });
    if (!pair) {
      report.forEach((s) => {
        if (s.type !== 'candidate-pair' || pair) return;
        if (s.selected || (s.nominated && s.state === 'succeeded')) pair = s;
      });
    }
    if (!pair) return null;
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    if (!local || !remote) return null;
    return { local, remote };
  }

  /** How media flows over a selected pair: through a TURN relay when either end's
   *  candidate is a relay candidate, directly otherwise. */
  function describeRoute(pair) {
    if (!pair) return { route: 'unknown', text: '—' };
    const lt = pair.local.candidateType;
    const rt = pair.remote.candidateType;
    const relayed = lt === 'relay' || rt === 'relay';
    const proto = (pair.local.relayProtocol || pair.local.protocol || '').toLowerCase();
    const text = relayed
      ? 'Relayed (TURN' + (proto ? ' ' + proto : '') + ')'
      : 'Direct (' + lt + ' ↔ ' + rt + ')';
    return { route: relayed ? 'relay' : 'direct', text, local: lt, remote: rt, protocol: proto };
  }

  /** When to ask for fresh TURN credentials, in ms: at half their lifetime, at least
   *  hourly (`ice_servers_ttl` in seconds; null when they do not expire). */
  function refreshDelay(ttlSeconds) {
    if (typeof ttlSeconds !== 'number' || !isFinite(ttlSeconds) || ttlSeconds <= 0) return null;
    return Math.max(1000, Math.min(ttlSeconds / 2, 3600) * 1000);
  }

  /** `?relay=` value -> whether the "relay only" switch starts on. */
  function parseRelayParam(value) {
    return value != null && /^(1|true|yes|on)$/i.test(value.trim());
  }

  const util = {
    DEFAULT_ICE_SERVERS, DEFAULT_SRC, iceToWire, iceFromWire, signallingUrl, parseIceParam,
    chooseIceServers, buildConfigure, pageLink, describeError, describeTokenRefusal, tokenGrants, sdpFingerprint, backoffDelay,
    formatBitrate, selectedPair, describeRoute, refreshDelay, parseRelayParam,
  };

  // ---------------------------------------------------------------------------
  // Page state and test hook
  // ---------------------------------------------------------------------------

  const params = new URLSearchParams(location.search);
  const watchToken = params.get('watch');
  const joinToken = params.get('join');
  const signedToken = params.get('token');
  const serverOverride = params.get('server') || null;
  const iceParam = parseIceParam(params.get('ice'));
  let relayOnly = parseRelayParam(params.get('relay'));
  const role = watchToken ? 'watch' : joinToken ? 'join'
    : signedToken ? (tokenGrants(signedToken).includes('join') ? 'join' : 'watch') : 'host';

  const demo = {
    role,                 // 'host' | 'watch' | 'join'
    state: 'idle',        // idle|connecting|waiting|negotiating|live|host_left|reconnecting|closed|failed|error
    wsState: 'closed',    // closed|connecting|open
    peerId: null,         // our peer id from the server
    peers: [],            // host: [{id, role, state}]
    links: { watch: null, join: null },
    error: null,          // {code, message, text} of the last server error
    stats: null,          // viewer: last stats sample
    iceServers: null,     // what the last RTCPeerConnection used
    iceTtl: null,         // seconds the server's TURN credentials were valid for, when given
    iceRefreshes: 0,      // fresh credentials received (`ice_servers` replies)
    relayOnly,            // the "relay only" switch (iceTransportPolicy "relay")
    route: null,          // viewer: {route: 'relay'|'direct'|'unknown', text, local, remote}
    pcCount: 0,           // viewer: RTCPeerConnections created so far
    serverUrl: null,
    log: [],              // last signalling events, for debugging
    util,
  };
  window.signalDemo = demo;

  function log(dir, msg) {
    demo.log.push({ t: Date.now(), dir, type: msg && msg.type });
    if (demo.log.length > 200) demo.log.shift();
  }

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'), statusText: $('status-text'), error: $('error'), notice: $('notice'),
    serverUrl: $('server-url'), peerIdLine: $('peer-id-line'), peerId: $('peer-id'),
    shareView: $('share-view'), watchView: $('watch-view'),
  };

  function setState(state, text) {
    demo.state = state;
    ui.status.dataset.state = state;
    ui.statusText.textContent = text;
    document.title = text + ' · signal-server';
  }

  function showError(text, html) {
    if (text == null) {
      ui.error.hidden = true;
      ui.error.textContent = '';
      return;
    }
    ui.error.textContent = text;
    if (html) ui.error.appendChild(html);
    ui.error.hidden = false;
  }

  function showNotice(text) {
    ui.notice.textContent = text || '';
    ui.notice.hidden = !text;
  }

  function setPeerId(p) {
    demo.peerId = p || null;
    ui.peerId.textContent = p || '';
    ui.peerIdLine.hidden = !p;
  }

  // ---------------------------------------------------------------------------
  // Signalling socket with reconnect
  // ---------------------------------------------------------------------------

  /** A WebSocket to the signalling server that reconnects with backoff when it drops
   *  unexpectedly. `onOpen` runs on every (re)connect and must send `init`. */
  function createSignal(url, handlers) {
    let ws = null;
    let attempt = 0;
    let timer = null;
    let stopped = false;
    let countdown = null;
    let everOpened = false;

    function connect() {
      clearTimeout(timer);
      clearInterval(countdown);
      demo.wsState = 'connecting';
      try {
        ws = new WebSocket(url);
      } catch (e) {
        handlers.onFatal('Cannot open the signalling connection to ' + url + ': ' + e.message);
        return;
      }
      const sock = ws;
      sock.onopen = () => {
        if (sock !== ws) return;
        demo.wsState = 'open';
        everOpened = true;
        handlers.onOpen();
      };
      sock.onmessage = (ev) => {
        if (sock !== ws) return;
        if (typeof ev.data !== 'string') return;
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { console.warn('signal: bad JSON', ev.data); return; }
        if (!msg || typeof msg.type !== 'string') return;
        log('in', msg);
        handlers.onMessage(msg);
      };
      sock.onclose = (ev) => {
        if (sock !== ws) return;
        demo.wsState = 'closed';
        ws = null;
        if (stopped) return;
        const delay = backoffDelay(attempt++);
        const what = everOpened ? 'Connection lost' : 'Cannot reach the server';
        handlers.onDrop(ev, what + ' — retrying in ' + Math.ceil(delay / 1000) + ' s…');
        let left = Math.ceil(delay / 1000);
        countdown = setInterval(() => {
          left -= 1;
          if (left > 0) handlers.onDrop(null, what + ' — retrying in ' + left + ' s…');
        }, 1000);
        timer = setTimeout(connect, delay);
      };
    }

    return {
      start() { stopped = false; attempt = 0; connect(); },
      send(msg) {
        if (!ws || ws.readyState !== WebSocket.OPEN) return false;
        log('out', msg);
        ws.send(JSON.stringify(msg));
        return true;
      },
      /** Test hook: drop the socket as a network failure would (it reconnects). */
      drop() { if (ws) ws.close(4000, 'dropped for a test'); },
      /** The session is established: reset the backoff. */
      established() { attempt = 0; },
      /** Starts over on a new socket at once (a new `init`, a new peer id). */
      reconnect() {
        if (stopped) return;
        const old = ws;
        ws = null;
        if (old) { try { old.close(1000, 'reconnecting'); } catch (e) { /* ignore */ } }
        attempt = 0;
        connect();
      },
      /** Close for good (no reconnect). */
      stop(code) {
        stopped = true;
        clearTimeout(timer);
        clearInterval(countdown);
        if (ws) { try { ws.close(code || 1000); } catch (e) { /* ignore */ } }
        ws = null;
        demo.wsState = 'closed';
      },
      get stopped() { return stopped; },
    };
  }

  function currentIceServers(fromServer) {
    const list = chooseIceServers(iceParam, fromServer);
    demo.iceServers = list;
    return list;
  }

  /** The RTCConfiguration of a new connection: the ICE servers, and the relay-only
   *  switch. */
  function rtcConfig(fromServer) {
    return { iceServers: currentIceServers(fromServer), iceTransportPolicy: relayOnly ? 'relay' : 'all' };
  }

  /** Fresh TURN credentials before they expire: after an `init` or `ice_servers`
   *  reply with `ice_servers_ttl`, asks for new ones at half their lifetime (at least
   *  hourly), and again every 30 s until a reply comes. A connection made with the old
   *  ones keeps its relay until they expire; new gathering (an ICE restart, a new
   *  connection) uses the new ones. */
  function createIceRefresher(signal) {
    let timer = null;
    function ask() {
      signal.send({ type: 'ice_servers' });
      timer = setTimeout(ask, 30000);
    }
    return {
      /** A reply arrived: plan the next request. */
      schedule(ttl) {
        clearTimeout(timer);
        timer = null;
        demo.iceTtl = typeof ttl === 'number' ? ttl : null;
        const delay = refreshDelay(ttl);
        if (delay != null) timer = setTimeout(ask, delay);
      },
      /** Test hook and manual refresh: ask now. */
      now() { clearTimeout(timer); ask(); },
      stop() { clearTimeout(timer); timer = null; },
    };
  }

  /** Gives a live connection the new ICE servers for its next gathering. */
  function applyIceServers(pc, fromServer) {
    if (!pc || pc.connectionState === 'closed') return;
    try {
      pc.setConfiguration(Object.assign(pc.getConfiguration(), { iceServers: currentIceServers(fromServer) }));
    } catch (e) {
      console.warn('setConfiguration', e);
    }
  }

  /** The route of a connection's media, read from its stats. */
  async function routeOf(pc) {
    try {
      return describeRoute(selectedPair(await pc.getStats()));
    } catch (e) {
      return describeRoute(null);
    }
  }

  /** The "relay only" switch of a view: reflects `relayOnly`, calls `onChange` when
   *  flipped. */
  function bindRelaySwitch(id, onChange) {
    const box = $(id);
    if (!box) return;
    box.checked = relayOnly;
    box.addEventListener('change', () => {
      relayOnly = box.checked;
      demo.relayOnly = relayOnly;
      onChange();
    });
  }

  // ---------------------------------------------------------------------------
  // Host (Share)
  // ---------------------------------------------------------------------------

  function startTestPattern() {
    const W = 640, H = 360;
    const canvas = document.createElement('canvas');
    canvas.width = W;
    canvas.height = H;
    const ctx = canvas.getContext('2d');
    const started = performance.now();
    let frame = 0;

    function draw() {
      frame += 1;
      const t = (performance.now() - started) / 1000;
      const bg = ctx.createLinearGradient(0, 0, W, H);
      bg.addColorStop(0, '#0f1f3d');
      bg.addColorStop(1, '#1d4ed8');
      ctx.fillStyle = bg;
      ctx.fillRect(0, 0, W, H);

      // Colour bars along the bottom.
      const bars = ['#f8fafc', '#facc15', '#22d3ee', '#4ade80', '#e879f9', '#f87171', '#60a5fa'];
      const bw = W / bars.length;
      bars.forEach((c, i) => { ctx.fillStyle = c; ctx.fillRect(i * bw, H - 36, bw + 1, 36); });

      // A sweeping bar and an orbiting dot: motion is obvious at a glance.
      const x = ((t * 160) % (W + 80)) - 40;
      ctx.fillStyle = 'rgba(255,255,255,0.12)';
      ctx.fillRect(x, 0, 40, H - 36);
      const cx = W - 80, cy = 250, r = 40;
      ctx.strokeStyle = 'rgba(255,255,255,0.35)';
      ctx.lineWidth = 3;
      ctx.beginPath(); ctx.arc(cx, cy, r, 0, Math.PI * 2); ctx.stroke();
      const a = t * Math.PI; // one turn every 2 s
      ctx.fillStyle = '#facc15';
      ctx.beginPath(); ctx.arc(cx + r * Math.cos(a), cy + r * Math.sin(a), 7, 0, Math.PI * 2); ctx.fill();

      const now = new Date();
      const clock = now.toTimeString().slice(0, 8) + '.' + String(now.getMilliseconds()).padStart(3, '0');
      ctx.fillStyle = '#ffffff';
      ctx.textBaseline = 'alphabetic';
      ctx.font = '600 20px system-ui, "DejaVu Sans", sans-serif';
      ctx.fillText('signal-server test pattern', 40, 84);
      ctx.font = '700 64px ui-monospace, "DejaVu Sans Mono", monospace';
      ctx.fillText(clock, 40, 196);
      ctx.font = '500 24px ui-monospace, "DejaVu Sans Mono", monospace';
      ctx.fillStyle = '#cbd5e1';
      ctx.fillText('frame ' + String(frame).padStart(6, '0'), 40, 242);
    }

    draw();
    const timer = setInterval(draw, 1000 / 30);
    const stream = canvas.captureStream(30);
    return { stream, stop() { clearInterval(timer); stream.getTracks().forEach((tr) => tr.stop()); } };
  }

  async function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('This browser cannot use a camera here (a camera needs https or localhost).');
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: false,
    });
    return { stream, stop() { stream.getTracks().forEach((tr) => tr.stop()); } };
  }

  function initHost() {
    ui.shareView.hidden = false;
    const shareBtn = $('share-button');
    const stopBtn = $('stop-button');
    const picker = $('source-picker');
    const preview = $('preview');
    const previewOverlay = $('preview-overlay');
    const linksCard = $('links-card');
    const peersList = $('peers');
    const peerCount = $('peer-count');

    let source = null;        // {stream, stop}
    let signal = null;
    let resumeToken = null;
    let serverIce = null;
    let refresher = null;
    let awaitingResume = false; // sent {"type":"init","resume":R}, reply pending
    let resumeFailed = false;   // the resume was refused; a fresh init is pending
    const peers = new Map();  // id -> {id, role, pc, pending: [], state, stats, prev}

    setState('idle', 'Ready to share');
    ui.serverUrl.textContent = signallingUrl(location, serverOverride) || '—';

    function setPickerEnabled(on) {
      picker.classList.toggle('disabled', !on);
      picker.querySelectorAll('input').forEach((i) => { i.disabled = !on; });
    }

    function syncPeers() {
      demo.peers = Array.from(peers.values()).map((p) => ({ id: p.id, role: p.role, state: p.state }));
      peerCount.textContent = String(peers.size);
      peersList.textContent = '';
      if (peers.size === 0) {
        const li = document.createElement('li');
        li.className = 'empty';
        li.textContent = 'Nobody yet. Viewers appear here when they open a link.';
        peersList.appendChild(li);
      }
      for (const p of peers.values()) {
        const li = document.createElement('li');
        li.dataset.peer = p.id;
        const id = document.createElement('span');
        id.className = 'peer-id';
        id.textContent = p.id;
        const badge = document.createElement('span');
        badge.className = 'badge';
        badge.textContent = p.role === 'join' ? 'guest' : p.role === 'watch' ? 'watcher' : (p.role || 'peer');
        const st = document.createElement('span');
        st.className = 'peer-state';
        st.dataset.state = p.state;
        st.textContent = peerStateText(p.state);
        li.append(id, badge, st);
        if (p.statsText) {
          const s = document.createElement('span');
          s.className = 'peer-stats';
          s.textContent = p.statsText;
          li.appendChild(s);
        }
        peersList.appendChild(li);
      }
      updateHostStatus();
    }

    function peerStateText(s) {
      return {
        waiting: 'waiting for request', negotiating: 'connecting…', connected: 'receiving',
        failed: 'connection failed', closed: 'closed', disconnected: 'interrupted',
      }[s] || s;
    }

    function updateHostStatus() {
      if (!signal || signal.stopped) return;
      if (demo.wsState !== 'open' || !demo.links.watch) return;
      const live = Array.from(peers.values()).filter((p) => p.state === 'connected').length;
      if (live > 0) setState('live', 'Live — ' + live + (live === 1 ? ' viewer' : ' viewers'));
      else if (peers.size > 0) setState('negotiating', 'Sharing — connecting viewers…');
      else setState('waiting', 'Sharing — waiting for viewers');
    }

    function closePeerConnection(p) {
      if (p.pc) {
        p.pc.onicecandidate = null;
        p.pc.onconnectionstatechange = null;
        try { p.pc.close(); } catch (e) { /* ignore */ }
      }
      p.pc = null;
      p.pending = [];
      p.prev = null;
      p.statsText = '';
    }

    function ensurePeer(id, peerRole) {
      let p = peers.get(id);
      if (!p) {
        p = { id, role: peerRole || null, pc: null, pending: [], state: 'waiting', statsText: '', prev: null };
        peers.set(id, p);
      } else if (peerRole) {
        p.role = peerRole;
      }
      p.stale = false;
      return p;
    }

    async function offerTo(p) {
      closePeerConnection(p);
      const pc = new RTCPeerConnection(rtcConfig(serverIce));
      p.pc = pc;
      p.iceExpires = demo.iceTtl ? Date.now() + demo.iceTtl * 1000 : null;
      p.route = 'unknown';
      p.state = 'negotiating';
      syncPeers();
      pc.onicecandidate = (ev) => {
        if (p.pc !== pc || !ev.candidate || !ev.candidate.candidate) return;
        signal.send(Object.assign({ type: 'ice_candidate', to: p.id }, iceToWire(ev.candidate)));
      };
      pc.onconnectionstatechange = () => {
        if (p.pc !== pc) return;
        const s = pc.connectionState;
        if (s === 'connected') p.state = 'connected';
        else if (s === 'failed') p.state = 'failed';
        else if (s === 'disconnected') p.state = 'disconnected';
        else if (s === 'closed') p.state = 'closed';
        else p.state = 'negotiating';
        syncPeers();
      };
      for (const track of source.stream.getTracks()) pc.addTrack(track, source.stream);
      try {
        const offer = await pc.createOffer();
        if (p.pc !== pc) return;
        await pc.setLocalDescription(offer);
        if (p.pc !== pc) return;
        signal.send({ type: 'offer', sdp: pc.localDescription.sdp, to: p.id });
      } catch (e) {
        console.error('offer to', p.id, e);
        if (p.pc === pc) { p.state = 'failed'; syncPeers(); }
      }
    }

    /** Moves a connection onto fresh TURN credentials: an ICE restart (the page is the
     *  offerer), which gathers with the ICE servers set by applyIceServers. */
    async function restartIce(p) {
      const pc = p.pc;
      if (!pc || pc.signalingState !== 'stable') return;
      try {
        const offer = await pc.createOffer({ iceRestart: true });
        if (p.pc !== pc) return;
        await pc.setLocalDescription(offer);
        if (p.pc !== pc) return;
        p.iceExpires = demo.iceTtl ? Date.now() + demo.iceTtl * 1000 : null;
        signal.send({ type: 'offer', sdp: pc.localDescription.sdp, to: p.id });
      } catch (e) {
        console.warn('ICE restart for', p.id, e);
      }
    }

    /** Fresh credentials: every connection gets them for its next gathering; a relayed
     *  one whose credentials would expire before the next refresh restarts ICE now
     *  (the embedded relay does not let an allocation outlive its credential). */
    function onIceServers(msg) {
      serverIce = msg.ice_servers;
      demo.iceRefreshes += 1;
      refresher.schedule(msg.ice_servers_ttl);
      const next = refreshDelay(msg.ice_servers_ttl);
      for (const p of peers.values()) {
        if (!p.pc) continue;
        applyIceServers(p.pc, serverIce);
        const soon = next != null && p.iceExpires != null && p.iceExpires - Date.now() < 2 * next;
        if (soon && p.route === 'relay') restartIce(p);
      }
    }

    async function onAnswer(msg) {
      const p = peers.get(msg.from);
      if (!p || !p.pc || typeof msg.sdp !== 'string') return;
      const pc = p.pc;
      if (pc.signalingState !== 'have-local-offer') {
        console.warn('answer from', p.id, 'in state', pc.signalingState);
        return;
      }
      try {
        await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
        const queued = p.pending;
        p.pending = [];
        for (const c of queued) await pc.addIceCandidate(c).catch((e) => console.warn('ice', e));
      } catch (e) {
        console.error('answer from', p.id, e);
      }
    }

    function onRemoteIce(msg) {
      const p = peers.get(msg.from);
      const c = iceFromWire(msg);
      if (!p || !p.pc || !c) return;
      if (!p.pc.remoteDescription) { p.pending.push(c); return; }
      p.pc.addIceCandidate(c).catch((e) => console.warn('ice from', p.id, e));
    }

    function showLinks(msg) {
      const base = location.origin + location.pathname;
      const extra = {};
      if (serverOverride) extra.server = serverOverride;
      if (params.has('ice')) extra.ice = params.get('ice');
      demo.links.watch = pageLink('watch', msg.watch, base, extra);
      demo.links.join = pageLink('join', msg.join, base, extra);
      for (const kind of ['watch', 'join']) {
        const a = $(kind + '-link');
        a.href = demo.links[kind];
        a.textContent = demo.links[kind];
      }
      linksCard.hidden = false;
    }

    function onMessage(msg) {
      switch (msg.type) {
        case 'init': {
          if (typeof msg.watch !== 'string' || typeof msg.join !== 'string') return;
          const wasResume = awaitingResume;
          const expired = resumeFailed;
          awaitingResume = false;
          resumeFailed = false;
          resumeToken = typeof msg.resume === 'string' ? msg.resume : null;
          serverIce = msg.ice_servers;
          refresher.schedule(msg.ice_servers_ttl);
          setPeerId(msg.peer);
          signal.established();
          showError(null);
          showLinks(msg);
          if (expired) {
            // A new room: the old peers are gone with the old one.
            for (const p of peers.values()) closePeerConnection(p);
            peers.clear();
            syncPeers();
            showNotice('The room expired while the connection was down, so a new room was started. Send the new links.');
          } else if (wasResume) {
            showNotice(null);
            // The server re-announces the peers still present; forget the rest unless
            // they come back within a few seconds.
            for (const p of peers.values()) p.stale = true;
            setTimeout(() => {
              for (const p of Array.from(peers.values())) {
                if (p.stale) { closePeerConnection(p); peers.delete(p.id); }
              }
              syncPeers();
            }, 5000);
          }
          updateHostStatus();
          break;
        }
        case 'peer_joined': {
          if (typeof msg.peer !== 'string') return;
          ensurePeer(msg.peer, msg.role);
          syncPeers();
          break;
        }
        case 'peer_left': {
          const p = peers.get(msg.peer);
          if (!p) return;
          closePeerConnection(p);
          peers.delete(msg.peer);
          syncPeers();
          break;
        }
        case 'configure': {
          if (typeof msg.from !== 'string') return;
          const p = ensurePeer(msg.from);
          offerTo(p); // a second configure replaces the connection
          break;
        }
        case 'answer': onAnswer(msg); break;
        case 'ice_candidate': onRemoteIce(msg); break;
        case 'ice_servers': onIceServers(msg); break;
        case 'error': {
          demo.error = { code: msg.code, message: msg.message, text: describeError(msg.code, msg.message) };
          if (msg.code === 'room_not_found' && awaitingResume) {
            // Resume failed (grace period over): start a fresh room on this socket.
            resumeToken = null;
            awaitingResume = false;
            resumeFailed = true;
            signal.send({ type: 'init' });
            return;
          }
          showError(demo.error.text);
          break;
        }
        default:
          console.warn('signal: ignoring message', msg.type);
      }
    }

    async function share() {
      showError(null);
      showNotice(null);
      shareBtn.disabled = true;
      setPickerEnabled(false);
      const choice = document.querySelector('input[name="source"]:checked').value;
      try {
        source = choice === 'camera' ? await startCamera() : startTestPattern();
      } catch (e) {
        shareBtn.disabled = false;
        setPickerEnabled(true);
        const why = e && e.name === 'NotAllowedError' ? 'Camera permission was refused.'
          : e && e.name === 'NotFoundError' ? 'No camera was found.'
          : (e && e.message) || String(e);
        showError('Could not start the camera: ' + why + ' You can share the test pattern instead.');
        return;
      }
      preview.srcObject = source.stream;
      preview.play().catch(() => {});
      previewOverlay.hidden = true;
      shareBtn.hidden = true;
      stopBtn.hidden = false;

      const url = signallingUrl(location, serverOverride);
      demo.serverUrl = url;
      ui.serverUrl.textContent = url || '—';
      if (!url) {
        showError('This page was not loaded from a signalling server. Add ?server=wss://host/webrtc to the address.');
        stop();
        return;
      }
      setState('connecting', 'Connecting to server…');
      signal = createSignal(url, {
        onOpen() {
          setState('connecting', 'Starting room…');
          awaitingResume = resumeToken != null;
          if (awaitingResume) signal.send({ type: 'init', resume: resumeToken });
          else signal.send({ type: 'init' });
        },
        onMessage,
        onDrop(ev, text) {
          setState('reconnecting', text);
        },
        onFatal(text) {
          setState('error', 'Cannot connect');
          showError(text);
        },
      });
      refresher = createIceRefresher(signal);
      signal.start();
    }

    function stop() {
      if (refresher) refresher.stop();
      refresher = null;
      if (signal) {
        // End the room at once: viewers get `room_closed` now rather than
        // `host_left` and a wait for the grace period. Sent before the
        // close, which the browser writes after it.
        signal.send({ type: 'close_room' });
        signal.stop(1000);
      }
      signal = null;
      for (const p of peers.values()) closePeerConnection(p);
      peers.clear();
      syncPeers();
      if (source) source.stop();
      source = null;
      resumeToken = null;
      awaitingResume = false;
      resumeFailed = false;
      preview.srcObject = null;
      previewOverlay.hidden = false;
      linksCard.hidden = true;
      demo.links = { watch: null, join: null };
      setPeerId(null);
      shareBtn.hidden = false;
      shareBtn.disabled = false;
      stopBtn.hidden = true;
      setPickerEnabled(true);
      setState('idle', 'Stopped — press Share to start a new room');
    }

    // Per-peer outbound stats, once a second.
    setInterval(async () => {
      let changed = false;
      for (const p of peers.values()) {
        if (!p.pc || p.state !== 'connected') continue;
        try {
          const report = await p.pc.getStats();
          const route = describeRoute(selectedPair(report));
          p.route = route.route;
          report.forEach((s) => {
            if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
            let bitrate = NaN;
            if (p.prev) bitrate = (8 * (s.bytesSent - p.prev.bytes)) / ((s.timestamp - p.prev.ts) / 1000);
            p.prev = { bytes: s.bytesSent, ts: s.timestamp };
            const parts = [];
            if (s.frameWidth) parts.push(s.frameWidth + '×' + s.frameHeight);
            if (s.framesPerSecond != null) parts.push(Math.round(s.framesPerSecond) + ' fps');
            if (isFinite(bitrate)) parts.push(formatBitrate(bitrate));
            if (route.route !== 'unknown') parts.push(route.route === 'relay' ? 'relayed (TURN)' : 'direct');
            p.statsText = parts.join(' · ');
            changed = true;
          });
        } catch (e) { /* closed meanwhile */ }
      }
      if (changed) syncPeers();
    }, 1000);

    demo.dropSignal = () => { if (signal) signal.drop(); };
    demo.refreshIceServers = () => { if (refresher) refresher.now(); };
    // New connections take the switch; the current ones are made again with it.
    bindRelaySwitch('relay-only-share', () => {
      for (const p of peers.values()) if (p.pc) offerTo(p);
    });
    shareBtn.addEventListener('click', share);
    stopBtn.addEventListener('click', stop);
    window.addEventListener('pagehide', () => { if (signal) signal.stop(1001); });
    demo.share = share;
    demo.stop = stop;
    syncPeers();
  }

  // ---------------------------------------------------------------------------
  // Viewer (Watch / Join)
  // ---------------------------------------------------------------------------

  function initViewer() {
    ui.watchView.hidden = false;
    document.body.classList.add('viewer');
    const token = role === 'watch' ? watchToken : joinToken;
    const video = $('video');
    const overlay = $('video-overlay');
    const overlayText = $('overlay-text');
    const srcForm = $('src-form');
    const srcInput = $('src-input');
    $('watch-title').textContent = role === 'watch' ? 'Watching' : 'Joined';
    $('role-badge').textContent = role === 'watch' ? 'Viewer · watch link' : 'Guest · join link';
    srcInput.value = params.get('src') || DEFAULT_SRC;

    const stat = {
      resolution: $('stat-resolution'), fps: $('stat-fps'), bitrate: $('stat-bitrate'), frames: $('stat-frames'),
    };
    const routeEl = $('route');

    let signal = null;
    let refresher = null;
    let serverIce = null;
    let pc = null;
    let lastRecovery = 0;     // when a failed video connection was last started over
    let pendingRemote = [];   // remote candidates waiting for the remote description
    let pendingLocal = [];    // local candidates waiting for our answer to go out
    let answerSent = false;
    let streamId = randomId('signal-demo-');
    let configured = false;
    let hostAway = false;
    let finished = false;     // room closed or link invalid: no more reconnects
    let prevStats = null;
    let everLive = false;

    function overlayMsg(text, tone) {
      if (text == null) { overlay.hidden = true; return; }
      overlay.hidden = false;
      overlay.dataset.tone = tone || '';
      overlayText.textContent = text;
    }

    function view(state, text, overlayText, tone) {
      setState(state, text);
      overlayMsg(overlayText === undefined ? text : overlayText, tone);
    }

    function closePc() {
      if (pc) {
        pc.ontrack = null;
        pc.onicecandidate = null;
        pc.onconnectionstatechange = null;
        try { pc.close(); } catch (e) { /* ignore */ }
      }
      pc = null;
      pendingRemote = [];
      pendingLocal = [];
      answerSent = false;
      prevStats = null;
      demo.stats = null;
      demo.route = null;
      for (const el of Object.values(stat)) el.textContent = '—';
      routeEl.textContent = '—';
      routeEl.dataset.route = 'unknown';
    }

    function sendConfigure(removeOld) {
      const old = streamId;
      if (removeOld) streamId = randomId('signal-demo-');
      const src = srcInput.value.trim() || DEFAULT_SRC;
      signal.send(buildConfigure(streamId, src, removeOld ? old : null));
      configured = true;
      if (!everLive || !pc) view('waiting', 'Waiting for video…', 'Waiting for the host to send video…');
    }

    function newPeerConnection() {
      closePc();
      const conn = new RTCPeerConnection(rtcConfig(serverIce));
      pc = conn;
      demo.pcCount += 1;
      conn.ontrack = (ev) => {
        if (pc !== conn) return;
        const stream = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
        if (video.srcObject !== stream) video.srcObject = stream;
        video.play().catch(() => {});
      };
      conn.onicecandidate = (ev) => {
        if (pc !== conn || !ev.candidate || !ev.candidate.candidate) return;
        const msg = Object.assign({ type: 'ice_candidate' }, iceToWire(ev.candidate));
        if (answerSent) signal.send(msg); else pendingLocal.push(msg);
      };
      conn.onconnectionstatechange = () => {
        if (pc !== conn) return;
        const s = conn.connectionState;
        if (hostAway) return; // keep saying the host left
        if (s === 'failed' && everLive && !finished && Date.now() - lastRecovery > 30000) {
          // It worked, then broke (a network change, or a relay allocation whose
          // credentials ran out): start over on a new socket, with fresh credentials and
          // (behind a bridge) a new robot connection. At most every 30 s.
          lastRecovery = Date.now();
          startOver('Video connection lost — reconnecting…');
        } else if (s === 'failed') {
          view('failed', 'Video connection failed',
            'The video connection failed. The network between you and the host may block it (a TURN server can help: ?ice=turn:USER:PASS@host:port).', 'bad');
        } else if (s === 'disconnected' && !hostAway) {
          view('negotiating', 'Video interrupted — recovering…', 'Video interrupted — recovering…', 'warn');
        } else if (s === 'connected' && !hostAway) {
          markLiveIfPlaying();
        }
      };
      return conn;
    }

    async function onOffer(msg) {
      if (typeof msg.sdp !== 'string') return;
      // Same remote DTLS identity and a usable connection: a renegotiation (webrtc_ros
      // re-offering on its connection). Otherwise a fresh connection for a fresh offer.
      let conn = pc;
      const reuse = conn && conn.remoteDescription && conn.signalingState === 'stable'
        && conn.connectionState !== 'failed' && conn.connectionState !== 'closed'
        && sdpFingerprint(conn.remoteDescription.sdp) === sdpFingerprint(msg.sdp)
        && sdpFingerprint(msg.sdp) !== '';
      if (!reuse) conn = newPeerConnection();
      if (!everLive) view('negotiating', 'Connecting video…', 'Connecting video…');
      try {
        await conn.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
        if (pc !== conn) return;
        const queued = pendingRemote;
        pendingRemote = [];
        for (const c of queued) await conn.addIceCandidate(c).catch((e) => console.warn('ice', e));
        const answer = await conn.createAnswer();
        if (pc !== conn) return;
        await conn.setLocalDescription(answer);
        if (pc !== conn) return;
        signal.send({ type: 'answer', sdp: conn.localDescription.sdp });
        answerSent = true;
        const out = pendingLocal;
        pendingLocal = [];
        for (const m of out) signal.send(m);
      } catch (e) {
        console.error('offer', e);
        view('failed', 'Could not accept the video', 'Could not accept the video offer: ' + e.message, 'bad');
      }
    }

    /** A new socket, a new `init`, a new connection (the relay-only switch, or a
     *  connection that failed). */
    function startOver(text) {
      closePc();
      configured = false;
      everLive = false;
      view('reconnecting', text, undefined, 'warn');
      signal.reconnect();
    }

    function onRemoteIce(msg) {
      const c = iceFromWire(msg);
      if (!c) return;
      if (!pc || !pc.remoteDescription) { pendingRemote.push(c); return; }
      pc.addIceCandidate(c).catch((e) => console.warn('ice', e));
    }

    function markLiveIfPlaying() {
      if (hostAway || finished) return;
      if (video.videoWidth > 0 && pc && pc.connectionState === 'connected') {
        everLive = true;
        view('live', 'Live', null);
      }
    }
    video.addEventListener('playing', markLiveIfPlaying);
    video.addEventListener('resize', markLiveIfPlaying);
    video.addEventListener('loadedmetadata', markLiveIfPlaying);

    function onMessage(msg) {
      switch (msg.type) {
        case 'init': {
          setPeerId(msg.peer);
          serverIce = msg.ice_servers;
          refresher.schedule(msg.ice_servers_ttl);
          signal.established();
          showError(null);
          hostAway = false;
          sendConfigure(false);
          break;
        }
        case 'offer': onOffer(msg); break;
        case 'ice_candidate': onRemoteIce(msg); break;
        case 'ice_servers': {
          // For the next gathering (a re-offer that restarts ICE, or a new connection).
          serverIce = msg.ice_servers;
          demo.iceRefreshes += 1;
          refresher.schedule(msg.ice_servers_ttl);
          applyIceServers(pc, serverIce);
          break;
        }
        case 'host_left': {
          hostAway = true;
          view('host_left', 'Host left — waiting for it to come back', undefined, 'warn');
          break;
        }
        case 'host_joined': {
          hostAway = false;
          everLive = false;
          closePc();
          sendConfigure(false);
          break;
        }
        case 'room_closed': {
          finished = true;
          refresher.stop();
          closePc();
          video.srcObject = null;
          signal.stop(1000);
          view('closed', 'Room closed', 'Room closed. The host has ended this stream.', 'bad');
          break;
        }
        case 'error': {
          const text = describeError(msg.code, msg.message);
          demo.error = { code: msg.code, message: msg.message, text };
          const refused = signedToken && ['unauthorized', 'token_expired', 'forbidden'].includes(msg.code);
          if (refused) {
            // Refused at entry, or ended (expired, revoked): no retry helps.
            finished = true;
            signal.stop(1000);
            closePc();
            video.srcObject = null;
            showError(text);
            view('error', 'Link refused', text, 'bad');
          } else if (msg.code === 'room_not_found') {
            finished = true;
            signal.stop(1000);
            closePc();
            showError(text);
            setState('error', 'Link not valid');
            ui.watchView.hidden = true;
            $('gone-view').hidden = false;
            const keep = new URLSearchParams();
            for (const k of ['server', 'ice']) if (params.has(k)) keep.set(k, params.get(k));
            $('start-own').href = location.pathname + (keep.toString() ? '?' + keep : '');
          } else {
            showError(text);
          }
          break;
        }
        default:
          console.warn('signal: ignoring message', msg.type);
      }
    }

    /** Test hook: the current connection's inbound video RTP stats, read fresh. */
    demo.inboundVideo = async () => {
      if (!pc) return null;
      const report = await pc.getStats();
      let found = null;
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          found = {
            framesDecoded: s.framesDecoded || 0, bytesReceived: s.bytesReceived || 0,
            frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0,
          };
        }
      });
      return found;
    };
    demo.connectionState = () => (pc ? pc.connectionState : 'none');
    /** Test hook: the current RTCPeerConnection (for reading its stats). */
    demo.peerConnection = () => pc;
    demo.refreshIceServers = () => { if (refresher) refresher.now(); };
    bindRelaySwitch('relay-only', () => {
      if (signal && !finished) startOver(relayOnly ? 'Relay only — reconnecting…' : 'Reconnecting…');
    });

    srcForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (!signal || finished || demo.wsState !== 'open' || !configured) return;
      everLive = false;
      sendConfigure(true);
    });

    // Live stats, once a second.
    setInterval(async () => {
      if (!pc) return;
      let report;
      try { report = await pc.getStats(); } catch (e) { return; }
      let inbound = null;
      report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s; });
      const route = describeRoute(selectedPair(report));
      demo.route = route;
      routeEl.textContent = route.text;
      routeEl.dataset.route = route.route;
      if (!inbound) return;
      let bitrate = NaN;
      if (prevStats && inbound.timestamp > prevStats.ts) {
        bitrate = (8 * (inbound.bytesReceived - prevStats.bytes)) / ((inbound.timestamp - prevStats.ts) / 1000);
      }
      prevStats = { bytes: inbound.bytesReceived, ts: inbound.timestamp };
      const w = inbound.frameWidth || video.videoWidth;
      const h = inbound.frameHeight || video.videoHeight;
      demo.stats = {
        width: w || 0, height: h || 0,
        fps: inbound.framesPerSecond || 0,
        bitrate: isFinite(bitrate) ? bitrate : null,
        framesDecoded: inbound.framesDecoded || 0,
        bytesReceived: inbound.bytesReceived || 0,
      };
      stat.resolution.textContent = w ? w + ' × ' + h : '—';
      stat.fps.textContent = inbound.framesPerSecond != null ? String(Math.round(inbound.framesPerSecond)) : '—';
      stat.bitrate.textContent = formatBitrate(bitrate);
      stat.frames.textContent = (inbound.framesDecoded || 0).toLocaleString('en-US');
      markLiveIfPlaying();
    }, 1000);

    const url = signallingUrl(location, serverOverride);
    demo.serverUrl = url;
    ui.serverUrl.textContent = url || '—';
    if (!url) {
      view('error', 'No server', 'Open this page from the server, or add ?server=wss://host/webrtc', 'bad');
      showError('This page was not loaded from a signalling server. Add ?server=wss://host/webrtc to the address.');
      return;
    }
    view('connecting', 'Connecting to server…');
    signal = createSignal(url, {
      onOpen() {
        configured = false;
        view('connecting', 'Joining room…');
        const init = { type: 'init' };
        if (signedToken) init.token = signedToken;
        else init[role] = token;
        signal.send(init);
      },
      onMessage,
      onDrop(ev, text) {
        if (ev) { closePc(); configured = false; }
        view('reconnecting', text, undefined, 'warn');
      },
      onFatal(text) {
        view('error', 'Cannot connect', text, 'bad');
        showError(text);
      },
    });
    refresher = createIceRefresher(signal);
    signal.start();
    demo.dropSignal = () => signal.drop();
    window.addEventListener('pagehide', () => signal.stop(1001));
  }

  // ---------------------------------------------------------------------------
  // Copy buttons
  // ---------------------------------------------------------------------------

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* fall back */ }
    }
    const ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.style.position = 'fixed';
    ta.style.opacity = '0';
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    ta.remove();
    return ok;
  }

  document.addEventListener('click', async (ev) => {
    const btn = ev.target.closest('button[data-copy]');
    if (!btn) return;
    const el = $(btn.dataset.copy);
    const text = el && (el.href && el.href !== '#' ? el.getAttribute('href') : el.textContent);
    if (!text) return;
    const ok = await copyText(text);
    btn.textContent = ok ? 'Copied' : 'Select & copy';
    btn.classList.toggle('copied', ok);
    if (!ok) {
      const r = document.createRange();
      r.selectNodeContents(el);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(r);
    }
    setTimeout(() => { btn.textContent = 'Copy'; btn.classList.remove('copied'); }, 1800);
  });

  // ---------------------------------------------------------------------------

  if (serverOverride && !/^wss?:\/\//i.test(serverOverride)) {
    showError('The server address must start with ws:// or wss:// (got "' + serverOverride + '").');
    setState('error', 'Bad server address');
    return;
  }
  if (role === 'host') initHost(); else initViewer();
})();
