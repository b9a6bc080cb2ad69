// The fleet page (/fleet) in headless Chromium, with two robots: the aiortc
// webrtc_ros emulator behind two bridges, each holding a named room with a
// host token. Run by scripts/fleet-e2e.sh inside a network namespace.
//
//   node tests/browser/fleet-e2e.mjs http://127.0.0.1:9097/
//
// Environment: BRIDGE_BIN (the binary: its `bridge` and `token create`),
// ROBOT_URL (the emulator), ADMIN_KEY, SIGNAL_SERVER_AUTH_SECRET (to mint the
// robots' host tokens), BRIDGE_LOG, SAVE_SCREENSHOT=1 (docs/screenshot-fleet.png).
import { execFileSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { startBridge as start, stopBridge as stop } from './bridge.mjs';
import { Checks, T, assert, launch, log, newPage, sleep, waitFor, waitLive, withIce } from './lib.mjs';

const base = new URL(process.argv[2] || 'http://127.0.0.1:9097/');
const bin = process.env.BRIDGE_BIN || 'target/debug/signal-server';
const robotUrl = process.env.ROBOT_URL || 'ws://127.0.0.1:9090/webrtc';
const key = process.env.ADMIN_KEY;
const bridgeLog = createWriteStream(process.env.BRIDGE_LOG || '/dev/null', { flags: 'a' });
// What the fleet page documents: a change shows within 2 s (the registry is
// polled once a second, then pushed).
const FLEET_LATENCY_MS = 2000;

const checks = new Checks('fleet-e2e');
checks.limit(8 * 60_000);
const check = checks.check.bind(checks);

function hostToken(room) {
  const out = execFileSync(bin, ['token', 'create', '--room', room, '--grant', 'host', '--ttl', '1h'],
    { env: process.env, encoding: 'utf8' });
  return out.split('\n')[0].trim();
}

/** A bridge for the named room `room`; `proc.room` resolves with the time
 *  (ms) it printed its room. */
function startBridge(room) {
  const proc = start({
    bin, server: `ws://${base.host}/webrtc`, robot: robotUrl, log: bridgeLog,
    args: ['--token', hostToken(room)],
  });
  proc.room = proc.nextEvent('room', T.start).then(() => Date.now());
  return proc;
}

/** Stops a bridge with SIGTERM; the time (ms) it had exited. */
async function stopBridge(proc) {
  await stop(proc, 'SIGTERM');
  return Date.now();
}

const card = (room) => `li.robot[data-room="${room}"]`;
const online = (page, room) => page.$eval(card(room), (el) => el.dataset.online === 'true').catch(() => false);
const offline = (page, room) => page.$eval(card(room), (el) => el.dataset.online === 'false').catch(() => false);
const watching = (page, room) => page.$eval(`${card(room)} .viewers-watch`, (el) => Number(el.textContent)).catch(() => -1);

const fleetUrl = `${base.origin}/fleet?access_token=${encodeURIComponent(key)}`;
const bridges = [];
let browser;
try {
  browser = await launch();
  let fleet;

  await check('the fleet page refuses to open without a key (401), also with a wrong one', async () => {
    const page = await newPage(browser, 'nokey');
    for (const url of [`${base.origin}/fleet`, `${base.origin}/fleet?access_token=wrong-key-0123456789`]) {
      const res = await page.goto(url);
      assert(res.status() === 401, `GET ${url}: ${res.status()}`);
      assert(!(await page.$('#robots')), 'no fleet without a key');
    }
    await page.context().close();
  }, { critical: true });

  await check('with the admin key the page opens and its live feed connects', async () => {
    fleet = await newPage(browser, 'fleet', { viewport: { width: 1280, height: 760 } });
    const res = await fleet.goto(fleetUrl);
    assert(res.status() === 200, 'status ' + res.status());
    await waitFor('the feed', () => fleet.evaluate(() => window.fleetDemo && window.fleetDemo.feed === 'live'), T.short);
  }, { critical: true });

  await check(`two robots (emulator behind two bridges) appear online within ${FLEET_LATENCY_MS} ms`, async () => {
    bridges.push(startBridge('robot-1'), startBridge('robot-2'));
    const printed = Math.max(...(await Promise.all(bridges.map((b) => b.room))));
    await waitFor('both rows online', async () => (await online(fleet, 'robot-1')) && (await online(fleet, 'robot-2')), T.short);
    const took = Date.now() - printed;
    log(`  both online ${took} ms after the later bridge printed its room`);
    assert(took <= FLEET_LATENCY_MS, `took ${took} ms`);
  }, { critical: true });

  await check('a viewer joins through the Watch button, gets video, and the viewer count updates', async () => {
    const popup = fleet.context().waitForEvent('page', { timeout: T.short });
    await fleet.click(`${card('robot-1')} button.watch`);
    const viewer = await popup;
    viewer.pageName = 'viewer';
    await waitFor('the minted link', () => viewer.url().includes('token='), T.short);
    const link = new URL(viewer.url());
    assert(link.pathname === '/' && link.searchParams.get('token').split('.').length === 3, 'a JWT link: ' + link);
    // Media stays inside the namespace.
    await viewer.goto(withIce(link.toString()));
    await waitLive([viewer]);
    const t0 = Date.now();
    await waitFor('viewer count 1', async () => (await watching(fleet, 'robot-1')) === 1, T.short);
    log(`  count updated ${Date.now() - t0} ms after the video played`);
    assert((await watching(fleet, 'robot-2')) === 0, 'robot-2 has no viewer');
  });

  await check('the page works on a phone screen (one column, no sideways scrolling)', async () => {
    const phone = await newPage(browser, 'phone', { viewport: { width: 390, height: 844 } });
    await phone.goto(fleetUrl);
    await waitFor('rows', async () => (await online(phone, 'robot-1')) && (await online(phone, 'robot-2')), T.short);
    const m = await phone.evaluate(() => ({
      scroll: document.documentElement.scrollWidth, width: window.innerWidth,
      cards: [...document.querySelectorAll('li.robot')].map((c) => c.getBoundingClientRect()),
      button: document.querySelector('button.watch').getBoundingClientRect(),
    }));
    assert(m.scroll <= m.width, `page ${m.scroll} px wide in ${m.width}`);
    assert(m.cards.length === 2 && m.cards[0].left === m.cards[1].left, 'one column');
    assert(m.cards.every((c) => c.right <= m.width), 'cards fit');
    assert(m.button.height >= 40, 'a button a thumb can hit');
    await phone.context().close();
  });

  await check(`a stopped bridge's row turns offline within ${FLEET_LATENCY_MS} ms, with "last seen"`, async () => {
    const stopped = await stopBridge(bridges[1]);
    await waitFor('robot-2 offline', () => offline(fleet, 'robot-2'), T.short);
    const took = Date.now() - stopped;
    log(`  offline ${took} ms after the bridge exited`);
    assert(took <= FLEET_LATENCY_MS, `took ${took} ms`);
    const label = await fleet.$eval(`${card('robot-2')} .time-label`, (el) => el.textContent);
    assert(label === 'Last seen', label);
    assert(await online(fleet, 'robot-1'), 'robot-1 still online');
    if (process.env.SAVE_SCREENSHOT === '1') {
      await fleet.setViewportSize({ width: 900, height: 320 });
      await sleep(1200); // let the clocks tick once
      await fleet.screenshot({ path: 'docs/screenshot-fleet.png' });
      log('  saved docs/screenshot-fleet.png');
    }
  });
} catch (e) {
  checks.fail(String(e && e.stack ? e.stack : e));
} finally {
  for (const b of bridges) if (b.exitCode === null && b.signalCode === null) await stopBridge(b);
  if (browser) await browser.close();
}
checks.finish();
