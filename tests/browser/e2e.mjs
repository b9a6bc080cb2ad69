// End-to-end test of the demo page with real WebRTC video in headless Chromium.
//
//   node tests/browser/e2e.mjs http://127.0.0.1:9099/
//
// Run it through scripts/browser-test.sh, which starts the server inside a private
// network namespace (media traffic must stay inside it). Environment:
//   CHROMIUM=/usr/bin/chromium   browser to drive (playwright-core, no bundled browser)
//   SAVE_SCREENSHOT=1            also write docs/screenshot-viewer.png
//   SCREENSHOT_DIR=DIR           where the temporary screenshots go (default: a temp dir)
import { mkdtempSync, mkdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Checks, T, assert, describe as describePage, launch, log, newPage as openPage, observe,
  videoStats, waitLive, withIce,
} from './lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const base = new URL(process.argv[2] || process.env.BASE_URL || 'http://127.0.0.1:9099/');
const shotDir = process.env.SCREENSHOT_DIR || mkdtempSync(join(tmpdir(), 'signal-e2e-'));
mkdirSync(shotDir, { recursive: true });

const checks = new Checks('browser-e2e');
const check = checks.check.bind(checks);
const pageErrors = [];
const newPage = (browser, name, viewport) => openPage(browser, name, { viewport, pageErrors });
const describe = (...pages) => Promise.all(pages.map(describePage));

const browser = await launch();

let host, watcher, guest, stranger;
let links = {};
checks.limit(8 * 60_000);

try {
  await check('page loads and its ICE helpers convert fields', async () => {
    host = await newPage(browser, 'host');
    const res = await host.goto(new URL('/?ice=none', base).toString());
    assert(res && res.status() === 200, `GET / status ${res && res.status()}`);
    const r = await host.evaluate(() => {
      const u = window.signalDemo.util;
      return {
        fromWire: u.iceFromWire({ type: 'ice_candidate', candiate: 'candidate:1 1 udp 1 198.51.100.1 9 typ host', sdp_mid: '0', sdp_mline_index: 0 }),
        toWire: u.iceToWire({ candidate: 'candidate:2', sdpMid: 'video', sdpMLineIndex: 1 }),
        none: u.parseIceParam('none'),
        turn: u.parseIceParam('stun:h:3478,turn:user:pa%20ss@t.example:3478'),
        wsUrl: u.signallingUrl({ protocol: 'https:', host: 'x.example' }),
        words: u.describeError('room_not_found', 'no such room'),
        other: u.describeError('bad_message', 'missing field sdp'),
        role: window.signalDemo.role,
        fpSame: u.sdpFingerprint('v=0\r\na=fingerprint:sha-256 AB:CD\r\n') === u.sdpFingerprint('v=0\r\no=x\r\na=fingerprint:sha-256 ab:cd\r\n'),
        fpDiff: u.sdpFingerprint('a=fingerprint:sha-256 AB:CD') !== u.sdpFingerprint('a=fingerprint:sha-256 AB:CE'),
        configure: u.buildConfigure('s1', 'ros_image:/camera/image_raw'),
      };
    });
    assert(r.fromWire.candidate.startsWith('candidate:1') && r.fromWire.sdpMid === '0' && r.fromWire.sdpMLineIndex === 0, 'iceFromWire ' + JSON.stringify(r.fromWire));
    assert(r.toWire.candidate === 'candidate:2' && r.toWire.sdp_mid === 'video' && r.toWire.sdp_mline_index === 1, 'iceToWire ' + JSON.stringify(r.toWire));
    assert(Array.isArray(r.none) && r.none.length === 0, 'ice=none is an empty list');
    assert(r.turn[1].urls === 'turn:t.example:3478' && r.turn[1].username === 'user' && r.turn[1].credential === 'pa ss', 'turn credentials ' + JSON.stringify(r.turn));
    assert(r.wsUrl === 'wss://x.example/webrtc', 'signalling URL from https origin: ' + r.wsUrl);
    assert(/not valid/.test(r.words) && /missing field sdp/.test(r.other), 'error words');
    assert(r.role === 'host', 'role host without a token');
    assert(r.fpSame && r.fpDiff, 'sdpFingerprint tells connections apart');
    assert(JSON.stringify(r.configure) === JSON.stringify({ type: 'configure', actions: [
      { type: 'add_stream', id: 's1' },
      { type: 'add_video_track', stream_id: 's1', id: 's1/subscribed_video', src: 'ros_image:/camera/image_raw' }] }), 'configure ' + JSON.stringify(r.configure));
  }, { critical: true });

  await check('host shares the test pattern and shows watch and join links', async () => {
    await host.click('#share-button');
    await host.waitForFunction(() => window.signalDemo.links.watch && window.signalDemo.state === 'waiting', null, { timeout: T.short });
    links = await host.evaluate(() => ({
      watch: document.getElementById('watch-link').getAttribute('href'),
      join: document.getElementById('join-link').getAttribute('href'),
      status: document.getElementById('status').textContent.trim(),
      preview: document.getElementById('preview').videoWidth,
    }));
    const origin = base.origin;
    assert(/^\?watch=[A-Za-z0-9_-]{16}(&|$)/.test(links.watch.slice((origin + '/').length)) && links.watch.startsWith(origin + '/?watch='), 'watch link ' + links.watch);
    assert(links.join.startsWith(origin + '/?join='), 'join link ' + links.join);
    assert(new URL(links.watch).searchParams.get('watch') !== new URL(links.join).searchParams.get('join'), 'distinct tokens');
    log(`  watch link: ${links.watch}\n  join link:  ${links.join}\n  host status: ${links.status}`);
  }, { critical: true });

  await check('watcher and guest pages play the video (videoWidth > 0)', async () => {
    watcher = await newPage(browser, 'watcher', { width: 1280, height: 960 });
    guest = await newPage(browser, 'guest', { width: 390, height: 844 });
    await Promise.all([watcher.goto(withIce(links.watch)), guest.goto(withIce(links.join))]);
    try {
        await waitLive([watcher, guest]);
    } catch (e) {
      await describe(host);
      throw e;
    }
    const roles = await Promise.all([watcher, guest].map((p) => p.evaluate(() => window.signalDemo.role)));
    assert(roles[0] === 'watch' && roles[1] === 'join', 'roles ' + roles);
  }, { critical: true });

  await check('video keeps playing: currentTime advances and framesDecoded increases over 2 s', async () => {
    const seen = await observe([watcher, guest]); // the deliberate observation window
    ['watcher', 'guest'].forEach((name, i) => {
      const [a, b] = seen[i];
      log(`  ${name}: ${b.w}x${b.h}, currentTime ${a.t.toFixed(2)} -> ${b.t.toFixed(2)}, framesDecoded ${a.frames} -> ${b.frames}`);
      assert(b.w > 0 && b.h > 0, `${name} has a video size`);
      assert(b.t - a.t > 0.5, `${name} currentTime advanced (${a.t} -> ${b.t})`);
      assert(b.frames - a.frames >= 5, `${name} framesDecoded increased (${a.frames} -> ${b.frames})`);
    });
  });

  await check('host lists both peers as receiving, viewer shows live stats', async () => {
    await host.waitForFunction(() => {
      const p = window.signalDemo.peers;
      return p.length === 2 && p.every((x) => x.state === 'connected');
    }, null, { timeout: T.short });
    const peers = await host.evaluate(() => ({
      list: window.signalDemo.peers,
      text: document.getElementById('peers').textContent,
      status: document.getElementById('status').textContent.trim(),
    }));
    assert(peers.list.map((p) => p.role).sort().join() === 'join,watch', 'peer roles ' + JSON.stringify(peers.list));
    assert(peers.list.every((p) => peers.text.includes(p.id)), '#peers names every peer');
    assert(/2 viewers/.test(peers.status), 'host status ' + peers.status);
    await watcher.waitForFunction(() => /^\d+ × \d+$/.test(document.getElementById('stat-resolution').textContent)
      && /\d/.test(document.getElementById('stat-bitrate').textContent)
      && Number(document.getElementById('stat-frames').textContent.replace(/,/g, '')) > 0, null, { timeout: T.short });
  });

  await check('screenshot of a viewer with video playing', async () => {
    await watcher.waitForFunction(() => /\d/.test(document.getElementById('stat-fps').textContent), null, { timeout: T.short });
    const file = join(shotDir, 'screenshot-viewer.png');
    await watcher.screenshot({ path: file, fullPage: true });
    await guest.screenshot({ path: join(shotDir, 'screenshot-viewer-phone.png') });
    await host.screenshot({ path: join(shotDir, 'screenshot-host.png') });
    log(`  screenshots in ${shotDir}`);
    if (process.env.SAVE_SCREENSHOT === '1') {
      const dest = join(repo, 'docs', 'screenshot-viewer.png');
      mkdirSync(dirname(dest), { recursive: true });
      copyFileSync(file, dest);
      log(`  saved ${dest}`);
    }
  });

  await check('a second configure (new source) renegotiates a fresh connection', async () => {
    const n0 = await guest.evaluate(() => window.signalDemo.pcCount);
    await guest.fill('#src-input', 'ros_image:/camera/other');
    await guest.click('#src-form button[type="submit"]');
    await guest.waitForFunction((n) => window.signalDemo.pcCount > n && window.signalDemo.state === 'live', n0, { timeout: T.media });
    const a = await videoStats(guest);
    await guest.waitForFunction((f) => window.signalDemo.inboundVideo().then((s) => s && s.framesDecoded > f + 5), a.frames, { timeout: T.short, polling: 250 });
  });

  await check('host socket drops: host resumes, viewers get host_left, host_joined and video again', async () => {
    const mark = await Promise.all([watcher, guest].map((p) => p.evaluate(() => ({ log: window.signalDemo.log.length, pcs: window.signalDemo.pcCount }))));
    const watchBefore = links.watch;
    await host.evaluate(() => window.signalDemo.dropSignal());
    try {
      await Promise.all([watcher, guest].map((p, i) => p.waitForFunction((m) => {
        const d = window.signalDemo;
        const seen = d.log.slice(m.log).filter((l) => l.dir === 'in').map((l) => l.type);
        return seen.includes('host_left') && seen.includes('host_joined') && d.pcCount > m.pcs
          && d.state === 'live' && document.getElementById('video').videoWidth > 0;
      }, mark[i], { timeout: T.media })));
    } catch (e) {
      await describe(host, watcher, guest);
      throw e;
    }
    const after = await host.evaluate(() => ({ watch: window.signalDemo.links.watch, state: window.signalDemo.state }));
    assert(after.watch === watchBefore, 'same watch link after resume');
    await host.waitForFunction(() => window.signalDemo.peers.length === 2
      && window.signalDemo.peers.every((x) => x.state === 'connected'), null, { timeout: T.media });
  });

  await check('viewer socket drops: it reconnects with its token and gets video again', async () => {
    const m = await watcher.evaluate(() => ({ pcs: window.signalDemo.pcCount, peer: window.signalDemo.peerId }));
    await watcher.evaluate(() => window.signalDemo.dropSignal());
    await watcher.waitForFunction((m) => window.signalDemo.pcCount > m.pcs && window.signalDemo.peerId
      && window.signalDemo.peerId !== m.peer && window.signalDemo.state === 'live', m, { timeout: T.media });
    // The host saw the old peer leave and the new one arrive.
    const newPeer = await watcher.evaluate(() => window.signalDemo.peerId);
    await host.waitForFunction((p) => {
      const ids = window.signalDemo.peers.map((x) => x.id);
      return ids.length === 2 && ids.includes(p);
    }, newPeer, { timeout: T.short });
  });

  await check('viewers say the host left when the host page closes', async () => {
    await host.context().close();
    host = null;
    await Promise.all([watcher, guest].map((p) => p.waitForFunction(
      () => /host left/i.test(document.getElementById('status').textContent)
        && /host left/i.test(document.getElementById('video-overlay').textContent)
        && window.signalDemo.state === 'host_left',
      null, { timeout: T.short })));
    await watcher.screenshot({ path: join(shotDir, 'screenshot-host-left.png') });
  });

  await check('viewers say "Room closed" when the host does not come back', async () => {
    // The script runs the server with a short --host-grace; the default is 30 s.
    await Promise.all([watcher, guest].map((p) => p.waitForFunction(
      () => /room closed/i.test(document.getElementById('status').textContent) && window.signalDemo.state === 'closed',
      null, { timeout: T.media })));
  });

  await check('a wrong token shows "link is not valid" in words', async () => {
    stranger = await newPage(browser, 'stranger');
    await stranger.goto(new URL('/?watch=WRONGTOKEN123456&ice=none', base).toString());
    await stranger.waitForFunction(() => {
      const e = document.getElementById('error');
      return !e.hidden && /not valid or the room has closed/i.test(e.textContent);
    }, null, { timeout: T.short });
    const st = await stranger.evaluate(() => ({ state: window.signalDemo.state, code: window.signalDemo.error && window.signalDemo.error.code }));
    assert(st.state === 'error' && st.code === 'room_not_found', 'state ' + JSON.stringify(st));
    await stranger.screenshot({ path: join(shotDir, 'screenshot-error.png') });
  });

  await check('a refused signed link (?token=) is explained in words', async () => {
    // This run's server is in open mode; the words for each refusal a server
    // in token mode sends (its codes and sentences, docs/AUTH.md) are checked
    // on the page's own helpers.
    const r = await stranger.evaluate(() => {
      const u = window.signalDemo.util;
      const jwt = (claims) => 'eyJhbGciOiJIUzI1NiJ9.' + btoa(JSON.stringify(claims)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_') + '.sig';
      return {
        expired: u.describeError('token_expired', 'the token has expired'),
        revoked: u.describeError('unauthorized', 'the token has been revoked'),
        garbage: u.describeError('unauthorized', 'the token is not a valid JWT: not three parts'),
        forged: u.describeError('unauthorized', "the token's signature is wrong"),
        early: u.describeError('unauthorized', 'the token is not valid yet'),
        room: u.describeError('forbidden', 'the token does not allow this: it is for another room'),
        join: u.tokenGrants(jwt({ grants: ['join'] })),
        none: u.tokenGrants('not-a-token'),
      };
    });
    assert(/expired/i.test(r.expired), r.expired);
    assert(/revoked/i.test(r.revoked), r.revoked);
    assert(/not a valid link/i.test(r.garbage), r.garbage);
    assert(/not signed by this server/i.test(r.forged), r.forged);
    assert(/not valid yet/i.test(r.early), r.early);
    assert(/wrong room or role/i.test(r.room) && /another room/.test(r.room), r.room);
    assert(r.join.length === 1 && r.join[0] === 'join' && r.none.length === 0, JSON.stringify(r));
  });

  await check('?server= override (WebSocket at /) is used and carried into the links', async () => {
    const ws = `ws://${base.host}/`;
    const page = await newPage(browser, 'host2');
    await page.goto(new URL(`/?ice=none&server=${encodeURIComponent(ws)}`, base).toString());
    await page.click('#share-button');
    await page.waitForFunction(() => window.signalDemo.links.watch && window.signalDemo.state === 'waiting', null, { timeout: T.short });
    const r = await page.evaluate(() => ({ url: window.signalDemo.serverUrl, watch: window.signalDemo.links.watch, footer: document.getElementById('server-url').textContent }));
    assert(r.url === ws && r.footer === ws, 'signalling URL ' + JSON.stringify(r));
    assert(new URL(r.watch).searchParams.get('server') === ws, 'watch link carries server: ' + r.watch);
    await page.context().close();
  });

  await check('no uncaught errors in any page', async () => {
    assert(pageErrors.length === 0, pageErrors.join('; '));
  });
} finally {
  await browser.close().catch(() => {});
}

checks.finish();
