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
import { spawn } from 'node:child_process';
import { createWriteStream, readFileSync, statSync, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import {
  Checks, T, assert, emulatorFrame, launch, log, newPage, observe, sleep, waitFor,
  waitLive as waitPagesLive,
} from './lib.mjs';

const base = new URL(process.argv[2] || process.env.BASE_URL || 'http://127.0.0.1:9098/');
const bridgeBin = process.env.BRIDGE_BIN || 'target/debug/signal-server';
const robotUrl = process.env.ROBOT_URL || 'ws://127.0.0.1:9090/webrtc';
const emulatorLog = process.env.EMULATOR_LOG;
const stateFile = process.env.STATE_FILE;
const bridgeLog = createWriteStream(process.env.BRIDGE_LOG || '/dev/null', { flags: 'a' });
const serverWs = `ws://${base.host}/webrtc`;

const checks = new Checks('bridge-e2e');
const check = checks.check.bind(checks);

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

// ---------------------------------------------------------------------------
// Viewers
// ---------------------------------------------------------------------------

const newViewer = (browser, name) => newPage(browser, name, { viewport: { width: 1024, height: 768 } });

function waitLive(pages, minPcs) {
  return waitPagesLive(pages, {
    minPcs,
    explain: () => log('  robot connections open: ' + JSON.stringify([...openRobotConns()])),
  });
}

/** Both viewers decode frames whose numbers advance, over the same window. */
async function bothAdvance(pages) {
  const seen = await observe(pages, emulatorFrame); // the observation window
  pages.forEach((p, i) => {
    const [a, b] = seen[i];
    log(`  ${p.pageName}: ${b.w}x${b.h}, frame number ${a.n} -> ${b.n}, framesDecoded ${a.frames} -> ${b.frames}`);
    assert(a.n !== null && b.n !== null, `${p.pageName}: the frame number can be read from the video`);
    assert(b.n - a.n >= 10, `${p.pageName}: frame numbers advance (${a.n} -> ${b.n})`);
    assert(b.frames - a.frames >= 10, `${p.pageName}: framesDecoded increases (${a.frames} -> ${b.frames})`);
  });
}

// ---------------------------------------------------------------------------

checks.limit(9 * 60_000);

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
  checks.fail('unexpected error: ' + (e && e.stack ? e.stack : e));
} finally {
  for (const b of browsers) await b.close().catch(() => {});
  if (bridge && bridge.exitCode === null) {
    await stopBridge(bridge, 'SIGTERM').catch(() => bridge.kill('SIGKILL'));
  }
  bridgeLog.end();
}

checks.finish();
