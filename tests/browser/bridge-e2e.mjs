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
import { createWriteStream, readFileSync, statSync } from 'node:fs';
import {
  emulatorEvents as emulatorLogEvents, openRobotConns as openConns, startBridge as start, stopBridge,
} from './bridge.mjs';
import {
  Checks, T, assert, emulatorFrame, launch, log, newPage, observe, waitFor,
  waitLive as waitPagesLive,
} from './lib.mjs';

const base = new URL(process.argv[2] || process.env.BASE_URL || 'http://127.0.0.1:9098/');
const bridgeBin = process.env.BRIDGE_BIN || 'target/debug/signal-server';
const robotUrl = process.env.ROBOT_URL || 'ws://127.0.0.1:9090/webrtc';
const emulatorLog = process.env.EMULATOR_LOG;
const stateFile = process.env.STATE_FILE;
const bridgeLog = createWriteStream(process.env.BRIDGE_LOG || '/dev/null', { flags: 'a' });
const serverWs = `ws://${base.host}/webrtc`;

const startBridge = () => start({
  bin: bridgeBin, server: serverWs, robot: robotUrl, log: bridgeLog,
  args: stateFile ? ['--state-file', stateFile] : [],
});
const emulatorEvents = () => emulatorLogEvents(emulatorLog);
const openRobotConns = () => openConns(emulatorLog);

const checks = new Checks('bridge-e2e');
const check = checks.check.bind(checks);

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
