// End-to-end test of `signal-server bridge` with real WebRTC on both sides: the
// webrtc_ros emulator (aiortc) as the robot, the bridge, the server, and two
// headless Chromium viewers on the demo page's watch link.
//
//   node tests/browser/bridge-e2e.mjs http://127.0.0.1:9098/
//
// Run it through scripts/bridge-e2e.sh, which starts the server and the
// emulator inside a private network namespace. This script starts, kills and
// restarts the bridge itself. Environment:
//   BRIDGE_BIN=target/debug/signal-server   the binary (its `bridge` subcommand)
//   ROBOT_URL=ws://127.0.0.1:9090/webrtc    the emulator
//   EMULATOR_LOG=FILE                       the emulator's JSON-lines stdout
//   STATE_FILE=FILE                         the bridge's --state-file
//   BRIDGE_LOG=FILE                         where the bridge's stderr goes
//   CHROMIUM=/usr/bin/chromium
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { createWriteStream, readFileSync, statSync, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { frameNumber } from './robot-video.mjs';

const base = new URL(process.argv[2] || process.env.BASE_URL || 'http://127.0.0.1:9098/');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const bridgeBin = process.env.BRIDGE_BIN || 'target/debug/signal-server';
const robotUrl = process.env.ROBOT_URL || 'ws://127.0.0.1:9090/webrtc';
const emulatorLog = process.env.EMULATOR_LOG;
const stateFile = process.env.STATE_FILE;
const bridgeLog = createWriteStream(process.env.BRIDGE_LOG || '/dev/null', { flags: 'a' });
const serverWs = `ws://${base.host}/webrtc`;

const T = { start: 20_000, media: 60_000, short: 15_000 }; // generous: 2 cores

let passed = 0;
let failed = 0;
let aborted = null;

function log(...a) { console.log(...a); }
function assert(cond, msg) { if (!cond) throw new Error('assertion failed: ' + msg); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function check(name, fn, { critical = false } = {}) {
  if (aborted) {
    failed += 1;
    log(`not ok - ${name} (not run: "${aborted}" failed)`);
    return;
  }
  const t0 = Date.now();
  try {
    await fn();
    passed += 1;
    log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed += 1;
    log(`not ok - ${name} (${Date.now() - t0} ms)`);
    log('  ' + String(e && e.stack ? e.stack : e).split('\n').slice(0, 6).join('\n  '));
    if (critical) aborted = name;
  }
}

// ---------------------------------------------------------------------------
// The bridge process
// ---------------------------------------------------------------------------

/** Starts the bridge; resolves with {proc, room} once it prints its room. */
function startBridge() {
  const args = [
    'bridge', '--server', serverWs, '--robot', robotUrl, '--json',
    '--allow-src', 'ros_image:/camera/*', '--max-viewers', '4',
    '--backoff-min', '200ms', '--backoff-max', '2s',
  ];
  if (stateFile) args.push('--state-file', stateFile);
  const proc = spawn(bridgeBin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.BRIDGE_RUST_LOG || 'info' },
  });
  proc.stderr.pipe(bridgeLog, { end: false });
  proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  proc.events = [];
  const waiters = [];
  createInterface({ input: proc.stdout }).on('line', (line) => {
    bridgeLog.write(`[bridge stdout] ${line}\n`);
    let ev;
    try { ev = JSON.parse(line); } catch (e) { return; }
    proc.events.push(ev);
    for (const w of waiters.splice(0)) w();
  });
  proc.nextEvent = async (kind, timeout) => {
    const deadline = Date.now() + timeout;
    let seen = 0;
    for (;;) {
      const found = proc.events.slice(seen).find((e) => e.event === kind);
      if (found) { proc.events.splice(proc.events.indexOf(found), 1); return found; }
      seen = proc.events.length;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the bridge printed no "${kind}" event within ${timeout} ms`);
      await Promise.race([new Promise((r) => waiters.push(r)), sleep(left), proc.exited]);
      if (proc.exitCode !== null) throw new Error(`the bridge exited (${proc.exitCode})`);
    }
  };
  return proc;
}

async function stopBridge(proc, signal) {
  proc.kill(signal);
  const r = await Promise.race([proc.exited, sleep(10_000).then(() => null)]);
  if (!r) {
    proc.kill('SIGKILL');
    throw new Error(`the bridge did not exit within 10 s of ${signal}`);
  }
  return r;
}

// ---------------------------------------------------------------------------
// The emulator's log
// ---------------------------------------------------------------------------

function emulatorEvents() {
  if (!emulatorLog || !existsSync(emulatorLog)) return [];
  return readFileSync(emulatorLog, 'utf8').split('\n').filter(Boolean).map((l) => {
    try { return JSON.parse(l); } catch (e) { return null; }
  }).filter(Boolean);
}

/** Robot connections open now (opened and not closed). */
function openRobotConns() {
  const open = new Set();
  for (const e of emulatorEvents()) {
    if (e.event === 'open') open.add(e.conn);
    if (e.event === 'close') open.delete(e.conn);
  }
  return open;
}

async function waitFor(what, fn, timeout) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------
// Viewers
// ---------------------------------------------------------------------------

async function launch() {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--autoplay-policy=no-user-gesture-required',
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
    ],
  });
}

async function newViewer(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => log(`  [${name} pageerror] ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') log(`  [${name} console.error] ${m.text()}`); });
  page.viewerName = name;
  return page;
}

async function describe(page) {
  try {
    const s = await page.evaluate(() => ({
      state: window.signalDemo && window.signalDemo.state,
      status: document.getElementById('status').textContent.trim(),
      error: window.signalDemo && window.signalDemo.error,
      pc: window.signalDemo && window.signalDemo.connectionState(),
      pcs: window.signalDemo && window.signalDemo.pcCount,
      log: window.signalDemo && window.signalDemo.log.slice(-14).map((l) => l.dir + ':' + l.type).join(' '),
    }));
    log(`  ${page.viewerName}: ${JSON.stringify(s)}`);
  } catch (e) {
    log(`  ${page.viewerName}: (cannot read state: ${e.message})`);
  }
}

async function waitLive(pages, minPcs) {
  try {
    await Promise.all(pages.map((p) => p.waitForFunction(
      (pcs) => document.getElementById('video').videoWidth > 0 && window.signalDemo.state === 'live'
        && window.signalDemo.pcCount >= pcs,
      minPcs, { timeout: T.media })));
  } catch (e) {
    for (const p of pages) await describe(p);
    log('  robot connections open: ' + JSON.stringify([...openRobotConns()]));
    throw e;
  }
}

/** Both viewers decode frames whose numbers advance, over the same window. */
async function bothAdvance(pages) {
  const before = await Promise.all(pages.map(frameNumber));
  await sleep(2000); // the observation window
  const after = await Promise.all(pages.map(frameNumber));
  pages.forEach((p, i) => {
    const a = before[i], b = after[i];
    log(`  ${p.viewerName}: ${b.w}x${b.h}, frame number ${a.n} -> ${b.n}, framesDecoded ${a.frames} -> ${b.frames}`);
    assert(a.n !== null && b.n !== null, `${p.viewerName}: the frame number can be read from the video`);
    assert(b.n - a.n >= 10, `${p.viewerName}: frame numbers advance (${a.n} -> ${b.n})`);
    assert(b.frames - a.frames >= 10, `${p.viewerName}: framesDecoded increases (${a.frames} -> ${b.frames})`);
  });
}

// ---------------------------------------------------------------------------

const exitTimer = setTimeout(() => {
  log('bridge e2e: overall time limit reached');
  log(`bridge-e2e: ${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, 9 * 60_000);

let bridge = null;
let room = null;
const browsers = [];
let viewers = [];

try {
  await check('the bridge connects out, hosts a room and prints its links as JSON', async () => {
    bridge = startBridge();
    room = await bridge.nextEvent('room', T.start);
    assert(room.resumed === false, 'a new room: ' + JSON.stringify(room));
    assert(room.watch_url === `${base.origin}/?watch=${room.watch}`, 'watch link ' + room.watch_url);
    assert(room.join_url === `${base.origin}/?join=${room.join}`, 'join link ' + room.join_url);
    if (stateFile) {
      const mode = statSync(stateFile).mode & 0o777;
      assert(mode === 0o600, 'state file mode ' + mode.toString(8));
      const saved = JSON.parse(readFileSync(stateFile, 'utf8'));
      assert(saved.watch === room.watch && typeof saved.resume === 'string', 'state file names the room');
    }
    log(`  watch link: ${room.watch_url}`);
  }, { critical: true });

  await check('two Chromium viewers on the watch link decode advancing frames at the same time', async () => {
    browsers.push(await launch(), await launch());
    viewers = [await newViewer(browsers[0], 'viewer-1'), await newViewer(browsers[1], 'viewer-2')];
    const link = room.watch_url + '&ice=none';
    await Promise.all(viewers.map((p) => p.goto(link)));
    await waitLive(viewers, 1);
    await bothAdvance(viewers);
  }, { critical: true });

  await check('each viewer has its own robot connection, and webrtc_ros never sees `from`', async () => {
    const open = openRobotConns();
    assert(open.size === 2, 'robot connections open: ' + JSON.stringify([...open]));
    const events = emulatorEvents();
    const tracks = new Set(events.filter((e) => e.event === 'track').map((e) => e.conn));
    for (const c of open) assert(tracks.has(c), `connection ${c} carries a track`);
    const leaked = events.filter((e) => e.event === 'received' && e.has_from);
    assert(leaked.length === 0, 'messages with `from` reached the robot: ' + leaked.length);
    const connected = new Set(events.filter((e) => e.event === 'pc_state' && e.state === 'connected').map((e) => e.conn));
    for (const c of open) assert(connected.has(c), `robot peer connection ${c} is connected`);
  });

  await check('a source outside --allow-src is refused on the page and never reaches the robot', async () => {
    const before = emulatorEvents().filter((e) => e.event === 'open').length;
    const page = await newViewer(browsers[0], 'viewer-secret');
    await page.goto(room.watch_url + '&ice=none&src=' + encodeURIComponent('ros_image:/secret/map'));
    await page.waitForFunction(() => window.signalDemo.error && window.signalDemo.error.code === 'source_not_allowed',
      null, { timeout: T.short });
    const shown = await page.evaluate(() => document.getElementById('error').textContent.trim());
    log(`  page shows: ${shown}`);
    assert(shown.length > 0, 'the page shows the refusal');
    await page.context().close();
    const after = emulatorEvents().filter((e) => e.event === 'open').length;
    assert(after === before, `no robot connection was opened (${before} -> ${after})`);
  });

  await check('SIGTERM stops the bridge cleanly (exit 0); robot connections close; viewers see the host leave', async () => {
    const r = await stopBridge(bridge, 'SIGTERM');
    assert(r.code === 0, 'exit ' + JSON.stringify(r));
    await waitFor('the robot connections to close', () => openRobotConns().size === 0, T.short);
    await Promise.all(viewers.map((p) => p.waitForFunction(() => window.signalDemo.state === 'host_left',
      null, { timeout: T.short })));
    const text = await viewers[0].evaluate(() => document.getElementById('status').textContent.trim());
    log(`  viewer status: ${text}`);
  }, { critical: true });

  await check('the restarted bridge resumes the room (same links); both viewers get video again', async () => {
    const pcs = await Promise.all(viewers.map((p) => p.evaluate(() => window.signalDemo.pcCount)));
    bridge = startBridge();
    const again = await bridge.nextEvent('room', T.start);
    assert(again.resumed === true, 'resumed: ' + JSON.stringify(again));
    assert(again.watch_url === room.watch_url && again.join_url === room.join_url, 'same links');
    await waitLive(viewers, Math.max(...pcs) + 1);
    await bothAdvance(viewers);
    assert(openRobotConns().size === 2, 'two robot connections again');
  }, { critical: true });

  await check('after SIGKILL and a restart, the room and the video come back', async () => {
    const pcs = await Promise.all(viewers.map((p) => p.evaluate(() => window.signalDemo.pcCount)));
    await stopBridge(bridge, 'SIGKILL');
    await Promise.all(viewers.map((p) => p.waitForFunction(() => window.signalDemo.state === 'host_left',
      null, { timeout: T.short })));
    await waitFor('the robot connections to close', () => openRobotConns().size === 0, T.short);
    bridge = startBridge();
    const again = await bridge.nextEvent('room', T.start);
    assert(again.resumed === true && again.watch_url === room.watch_url, 'resumed with the same links');
    await waitLive(viewers, Math.max(...pcs) + 1);
    await bothAdvance(viewers);
  });
} catch (e) {
  failed += 1;
  log('bridge e2e: unexpected error: ' + (e && e.stack ? e.stack : e));
} finally {
  clearTimeout(exitTimer);
  for (const b of browsers) await b.close().catch(() => {});
  if (bridge && bridge.exitCode === null) {
    await stopBridge(bridge, 'SIGTERM').catch(() => bridge.kill('SIGKILL'));
  }
  bridgeLog.end();
}

log(`bridge-e2e: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
