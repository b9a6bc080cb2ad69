// The viewer's half of scripts/turn-e2e.sh: a headless Chromium, in a
// network namespace with no route to the robot's, opens the bridge's watch
// link and must get the emulator's video through a TURN relay.
//
//   node tests/browser/turn-e2e.mjs WATCH_URL
//
// Environment:
//   CHROMIUM=FILE        the browser (scripts/turn-e2e.sh passes a wrapper that
//                        runs /usr/bin/chromium in the viewer's namespace)
//   RELAY=embedded       what relays (for the report: embedded or coturn)
//   EMULATOR_LOG=FILE    the emulator's JSON lines (did the robot get TURN?)
//   REFRESH=1            also wait for the page to refresh its credentials
//                        (the server runs with a short --turn-ttl)
//   RELAY_ONLY_SWITCH=1  also flip the page's "relay only" switch
// Prints "turn-e2e[RELAY]: N passed, N failed" last; exit 0 when all passed.
import { existsSync, readFileSync } from 'node:fs';
import {
  Checks, T, assert, emulatorFrame, launch, log, newPage, observe, selectedPairOf,
} from './lib.mjs';

const watchUrl = process.argv[2];
const relay = process.env.RELAY || 'embedded';
const checks = new Checks(`turn-e2e[${relay}]`);
let page = null;

function emulatorEvents() {
  const file = process.env.EMULATOR_LOG;
  if (!file || !existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => {
    try { return JSON.parse(l); } catch (e) { return null; }
  }).filter(Boolean);
}

async function state(page) {
  return page.evaluate(() => ({
    state: window.signalDemo.state,
    pc: window.signalDemo.connectionState(),
    route: window.signalDemo.route,
    error: window.signalDemo.error,
    log: window.signalDemo.log.slice(-12).map((l) => l.dir + ':' + l.type).join(' '),
  }));
}

async function waitLive(page, minPcs) {
  try {
    await page.waitForFunction(
      (pcs) => document.getElementById('video').videoWidth > 0 && window.signalDemo.state === 'live'
        && window.signalDemo.pcCount >= pcs,
      minPcs, { timeout: T.media });
  } catch (e) {
    log('  page: ' + JSON.stringify(await state(page)));
    throw e;
  }
}

/** Frames advance, and the selected pair goes through a relay. */
async function relayedVideo(page) {
  const [[before, after]] = await observe([page], emulatorFrame);
  log(`  ${after.w}x${after.h}, frame number ${before.n} -> ${after.n}, framesDecoded ${before.frames} -> ${after.frames}`);
  assert(before.n !== null && after.n !== null, 'the frame number can be read from the video');
  assert(after.n - before.n >= 10, `frame numbers advance (${before.n} -> ${after.n})`);
  assert(after.frames - before.frames >= 10, `framesDecoded increases (${before.frames} -> ${after.frames})`);
  const pair = await selectedPairOf(page);
  log('  getStats selected pair: ' + JSON.stringify(pair));
  assert(pair && pair.state === 'succeeded', 'a selected, succeeded candidate pair');
  assert(pair.local.type === 'relay' || pair.remote.type === 'relay',
    `a relay candidate in the pair (local ${pair.local.type}, remote ${pair.remote.type})`);
  const direct = pair.carrying.filter((p) => p.local !== 'relay' && p.remote !== 'relay');
  assert(direct.length === 0, 'no media bytes arrived over a direct pair: ' + JSON.stringify(direct));
  const shown = await page.evaluate(() => document.getElementById('route').textContent.trim());
  log(`  the page shows the route: ${shown}`);
  assert(/^Relayed/.test(shown), 'the page says the video is relayed');
  return pair;
}

checks.limit(4 * 60_000);

let browser = null;
try {
  await checks.check(`[${relay}] the viewer decodes advancing frames and getStats reports a relay candidate pair`, async () => {
    assert(watchUrl, 'a watch URL');
    browser = await launch();
    page = await newPage(browser, 'viewer', { viewport: { width: 1024, height: 768 } });
    await page.goto(watchUrl);
    await waitLive(page, 1);
    const ice = await page.evaluate(() => window.signalDemo.iceServers);
    log('  the page\'s ICE servers: ' + JSON.stringify(ice.map((s) => ({ urls: s.urls, username: s.username }))));
    await relayedVideo(page);
  }, { critical: true });

  await checks.check(`[${relay}] the robot got TURN credentials from the bridge's --ice-endpoint`, async () => {
    const got = emulatorEvents().filter((e) => e.event === 'ice_servers');
    log('  emulator: ' + JSON.stringify(got.slice(-1)));
    assert(got.length > 0, 'the emulator asked for ICE servers');
    const last = got[got.length - 1];
    assert(last.turn === true && last.status === 200, 'a 200 with username and password');
    assert(/^\d+:[^/]+\/.+$/.test(last.username), `a REST username <expiry>:<room>/<peer>: ${last.username}`);
  });

  if (process.env.REFRESH) {
    await checks.check(`[${relay}] the page refreshes its credentials before they expire; the video goes on`, async () => {
      const ttl = await page.evaluate(() => window.signalDemo.iceTtl);
      assert(typeof ttl === 'number' && ttl > 0, 'the init reply gave ice_servers_ttl: ' + ttl);
      const before = await page.evaluate(() => window.signalDemo.iceServers.slice(-1)[0].username);
      await page.waitForFunction(() => window.signalDemo.iceRefreshes >= 1, null, { timeout: (ttl / 2 + 20) * 1000 });
      const after = await page.evaluate(() => window.signalDemo.iceServers.slice(-1)[0].username);
      log(`  ttl ${ttl} s; username ${before} -> ${after}`);
      assert(after !== before, 'fresh credentials');
      await relayedVideo(page);
    });
  }

  if (process.env.RELAY_ONLY_SWITCH) {
    await checks.check(`[${relay}] the "relay only" switch reconnects with iceTransportPolicy "relay": relay candidates only`, async () => {
      const pcs = await page.evaluate(() => window.signalDemo.pcCount);
      await page.click('#relay-only');
      await waitLive(page, pcs + 1);
      const pair = await relayedVideo(page);
      assert(pair.policy === 'relay', 'the connection was made with iceTransportPolicy relay: ' + pair.policy);
      assert(pair.localCandidateTypes.length > 0 && pair.localCandidateTypes.every((t) => t === 'relay'),
        'only relay candidates were gathered: ' + pair.localCandidateTypes.join(','));
    });
  }
} catch (e) {
  checks.fail('unexpected error: ' + (e && e.stack ? e.stack : e));
} finally {
  if (browser) await browser.close().catch(() => {});
}

checks.finish();
