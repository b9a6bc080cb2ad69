// Token mode end to end (issue 13): the bridge claims the named room
// `robot-7` with a host token, a viewer's watch link is minted with
// `signal-server token create`, Chromium decodes the robot's video through
// it; the server is killed and started again, the bridge takes its room back
// under the same name, and the link made before the restart gets video again.
//
//   node tests/browser/auth-e2e.mjs http://127.0.0.1:9097/
//
// Run it through scripts/auth-e2e.sh, which starts the emulator inside a
// private network namespace; this script starts and restarts the server and
// the bridge. Environment:
//   SERVER_BIN=target/debug/signal-server   the binary (server, bridge, token create)
//   ROBOT_URL=ws://127.0.0.1:9090/webrtc    the emulator
//   EMULATOR_LOG=FILE                       the emulator's JSON-lines stdout
//   LOG_DIR=DIR                             server-N.log and bridge.log go here
//   CHROMIUM=/usr/bin/chromium
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { openRobotConns, startBridge, stopBridge } from './bridge.mjs';
import {
  Checks, T, assert, emulatorFrame, launch, log, newPage, observe, sleep, waitFor, waitLive,
} from './lib.mjs';

const base = new URL(process.argv[2] || 'http://127.0.0.1:9097/');
const bin = process.env.SERVER_BIN || 'target/debug/signal-server';
const robotUrl = process.env.ROBOT_URL || 'ws://127.0.0.1:9090/webrtc';
const emulatorLog = process.env.EMULATOR_LOG;
const logDir = process.env.LOG_DIR || '/tmp';
const bridgeLog = createWriteStream(`${logDir}/bridge.log`, { flags: 'a' });
// The server's and `token create`'s keys: the same secret, by environment.
const env = { ...process.env, SIGNAL_SERVER_AUTH_SECRET: 'auth-e2e-secret-of-at-least-32-bytes-0123456789' };
delete env.PORT;
const ROOM = 'robot-7';

const checks = new Checks('auth-e2e');
const check = checks.check.bind(checks);

let serverRuns = 0;
/** The server in token mode on `base`'s port; resolves once /healthz is 200. */
async function startServer() {
  serverRuns += 1;
  const out = createWriteStream(`${logDir}/server-${serverRuns}.log`);
  const proc = spawn(bin, ['--bind', base.host, '--auth', 'token', '--host-grace', '30s'], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, RUST_LOG: 'info' },
  });
  proc.stdout.pipe(out);
  proc.stderr.pipe(out);
  proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  await waitFor('the server to answer /healthz', async () => {
    if (proc.exitCode !== null) throw new Error(`the server exited (${proc.exitCode})`);
    try { return (await fetch(new URL('/healthz', base))).status === 200; } catch (e) { return false; }
  }, T.start);
  return proc;
}

/** `signal-server token create ... --json`: {token, link, ...}. */
function mint(grant, sub) {
  const out = execFileSync(bin, [
    'token', 'create', '--room', ROOM, '--grant', grant, '--ttl', '1h', '--sub', sub,
    '--page-url', base.href, '--json',
  ], { env });
  return JSON.parse(out.toString());
}

async function advances(page) {
  const [[a, b]] = await observe([page], emulatorFrame);
  log(`  ${page.pageName}: ${b.w}x${b.h}, frame number ${a.n} -> ${b.n}, framesDecoded ${a.frames} -> ${b.frames}`);
  assert(a.n !== null && b.n !== null, 'the frame number can be read from the video');
  assert(b.n - a.n >= 10, `frame numbers advance (${a.n} -> ${b.n})`);
  assert(b.frames - a.frames >= 10, `framesDecoded increases (${a.frames} -> ${b.frames})`);
}

checks.limit(8 * 60_000);

let server = null;
let bridge = null;
let browser = null;
let watch = null;

try {
  await check('the bridge claims the named room robot-7 with a host token', async () => {
    server = await startServer();
    const host = mint('host', 'robot-7');
    bridge = startBridge({
      bin, server: `ws://${base.host}/webrtc`, robot: robotUrl, log: bridgeLog, args: ['--token', host.token],
    });
    const room = await bridge.nextEvent('room', T.start);
    log('  bridge: ' + JSON.stringify(room));
    assert(room.room === ROOM, 'the room is named robot-7: ' + JSON.stringify(room));
  }, { critical: true });

  await check('a watch link minted by `token create` plays the robot video in Chromium', async () => {
    watch = mint('watch', 'alice');
    assert(watch.link.startsWith(base.href) && watch.link.includes('token='), 'a page link: ' + watch.link);
    browser = await launch();
    const page = await newPage(browser, 'viewer-before', { viewport: { width: 1024, height: 768 } });
    await page.goto(watch.link + '&ice=none');
    await waitLive([page], { minPcs: 1 });
    await advances(page);
    await page.context().close();
  }, { critical: true });

  await check('a forged link is refused and the page says why in words', async () => {
    const page = await newPage(browser, 'viewer-forged');
    const forged = watch.link.replace(/token=([^&]+)/, (_, t) => `token=${t.slice(0, -4)}AAAA`);
    await page.goto(forged + '&ice=none');
    await page.waitForFunction(() => window.signalDemo.error, null, { timeout: T.short });
    const shown = await page.evaluate(() => document.getElementById('error').textContent.trim());
    log(`  page shows: ${shown}`);
    assert(shown.length > 0 && !/undefined/.test(shown), 'a refusal in words: ' + shown);
    await page.context().close();
  });

  await check('after the server is killed and restarted, the bridge takes robot-7 back and the old link gets video again', async () => {
    server.kill('SIGKILL');
    await server.exited;
    await waitFor('the robot connections to close', () => openRobotConns(emulatorLog).size === 0, T.short);
    await sleep(500);
    server = await startServer();
    // The bridge reconnects on its own (backoff of at most 2 s) and claims
    // the name again; the link minted before the restart still names it.
    const page = await newPage(browser, 'viewer-after', { viewport: { width: 1024, height: 768 } });
    await waitFor('the bridge to host robot-7 again', async () => {
      const r = await fetch(new URL('/healthz', base));
      const h = await r.json();
      return (h.rooms || 0) >= 1;
    }, T.start);
    await page.goto(watch.link + '&ice=none');
    await waitLive([page], { minPcs: 1 });
    await advances(page);
    assert(bridge.exitCode === null, 'the same bridge process, still running');
  }, { critical: true });
} catch (e) {
  checks.fail('unexpected error: ' + (e && e.stack ? e.stack : e));
} finally {
  if (browser) await browser.close().catch(() => {});
  if (bridge && bridge.exitCode === null) await stopBridge(bridge, 'SIGTERM').catch(() => bridge.kill('SIGKILL'));
  if (server && server.exitCode === null) server.kill('SIGTERM');
  bridgeLog.end();
}

checks.finish();
