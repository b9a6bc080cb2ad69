// signal-server fleet page: every robot room, live over Server-Sent Events
// (GET /api/v1/events), with a Watch button that mints a short-lived watch
// link (POST /api/v1/rooms/{room}/watch-links). Plain JS, no dependencies.
//
// The credential (the admin key or an operator token) comes in the page's
// URL as ?access_token=...; the server refuses /fleet without one. State for
// tests and debugging: window.fleetDemo.
'use strict';

(function () {
  const params = new URLSearchParams(location.search);
  const credential = params.get('access_token') || '';
  const $ = (id) => document.getElementById(id);
  const list = $('robots');
  const template = $('robot-card');
  const state = { robots: [], at: 0, skew: 0, events: 0, feed: 'connecting', cards: new Map() };
  window.fleetDemo = state;

  function notice(text) {
    $('notice').textContent = text;
    $('notice').hidden = !text;
  }

  function ago(secs) {
    secs = Math.max(0, Math.round(secs));
    if (secs < 60) return secs + ' s';
    const m = Math.floor(secs / 60);
    if (m < 60) return m + ' min ' + (secs % 60) + ' s';
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min';
    return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
  }

  // Server seconds now, from the last view's `at` and the local clock.
  const serverNow = () => Date.now() / 1000 - state.skew;

  function setFeed(s, text) {
    state.feed = s;
    $('feed').dataset.state = s;
    $('feed').textContent = text;
  }

  function card(room) {
    let el = state.cards.get(room);
    if (!el) {
      el = template.content.firstElementChild.cloneNode(true);
      el.dataset.room = room;
      el.querySelector('.name').textContent = room;
      el.querySelector('.watch').addEventListener('click', () => watch(room, el));
      state.cards.set(room, el);
    }
    return el;
  }

  function tick() {
    const now = serverNow();
    for (const r of state.robots) {
      const el = state.cards.get(r.room);
      if (!el) continue;
      el.querySelector('.time-label').textContent = r.online ? 'Up' : 'Last seen';
      el.querySelector('.time').textContent = r.online
        ? ago(now - r.online_since)
        : ago(now - r.last_seen) + ' ago';
    }
  }

  function render(view) {
    state.robots = view.robots;
    state.at = view.at;
    state.skew = Date.now() / 1000 - view.at;
    state.events += 1;
    const seen = new Set();
    for (const r of view.robots) {
      seen.add(r.room);
      const el = card(r.room);
      el.dataset.online = String(r.online);
      el.querySelector('.state').textContent = r.online ? 'online' : 'offline';
      el.querySelector('.viewers-watch').textContent = String(r.viewers.watch);
      el.querySelector('.viewers-join').textContent = String(r.viewers.join);
      const peers = el.querySelector('.peers');
      peers.replaceChildren(...r.peers.map((p) => {
        const li = document.createElement('li');
        li.textContent = p.role + ' ' + p.id;
        li.title = 'since ' + new Date(p.since * 1000).toLocaleTimeString();
        return li;
      }));
      list.appendChild(el); // keeps the server's order (by room name)
    }
    for (const [room, el] of state.cards) {
      if (!seen.has(room)) { el.remove(); state.cards.delete(room); }
    }
    const online = view.robots.filter((r) => r.online).length;
    $('summary').textContent = `${online} online · ${view.robots.length - online} offline`;
    $('empty').hidden = view.robots.length > 0;
    tick();
  }

  async function watch(room, el) {
    const button = el.querySelector('.watch');
    const error = el.querySelector('.error');
    const link = el.querySelector('.watch-link');
    error.hidden = true;
    button.disabled = true;
    // Opened now, while the click still counts as the user's: popup
    // blockers allow it; it gets its address once the link is minted.
    const tab = window.open('', '_blank');
    if (tab) tab.opener = null;
    try {
      const res = await fetch(`/api/v1/rooms/${encodeURIComponent(room)}/watch-links`, {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + credential, 'Content-Type': 'application/json' },
        body: JSON.stringify({ ttl_secs: 300 }),
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error((body.error && body.error.message) || `HTTP ${res.status}`);
      const url = new URL(body.path, location.origin).toString();
      link.href = url;
      link.textContent = 'link (valid 5 min)';
      link.hidden = false;
      if (tab) tab.location.href = url;
    } catch (e) {
      if (tab) tab.close();
      error.textContent = 'Cannot make a watch link: ' + e.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  function connect() {
    if (!credential) {
      notice('This page needs ?access_token= (the admin key or an operator token).');
      setFeed('lost', 'no key');
      return;
    }
    const es = new EventSource('/api/v1/events?access_token=' + encodeURIComponent(credential));
    es.addEventListener('fleet', (e) => {
      try { render(JSON.parse(e.data)); } catch (err) { console.error('bad fleet event', err); }
      setFeed('live', 'live');
      notice('');
    });
    es.onerror = () => {
      // EventSource reconnects by itself (after the server's `retry`);
      // a refused key closes it for good.
      if (es.readyState === EventSource.CLOSED) {
        setFeed('lost', 'disconnected');
        notice('The live feed was refused: the key may be wrong, expired or revoked. Reload to retry.');
      } else {
        setFeed('connecting', 'reconnecting…');
      }
    };
  }

  setInterval(tick, 1000);
  connect();
})();
