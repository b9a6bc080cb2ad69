// What the browser tests share: headless Chromium (playwright-core, no bundled
// browser), pages on the demo page, a runner of named checks, and waits for
// video frames. Used by e2e.mjs and bridge-e2e.mjs; a new browser test imports
// what it needs:
//
//   import { Checks, T, assert, launch, newPage, observe, waitLive } from './lib.mjs';
//   const checks = new Checks('my-e2e');           // prints "my-e2e: N passed, N failed"
//   checks.limit(8 * 60_000);                      // fails the run past 8 minutes
//   const browser = await launch();
//   await checks.check('a viewer plays the video', async () => {
//     const page = await newPage(browser, 'viewer');
//     await page.goto(withIce(link));
//     await waitLive([page]);
//     const [[a, b]] = await observe([page]);       // videoStats 2 s apart
//     assert(b.frames - a.frames >= 5, 'frames decoded');
//   }, { critical: true });
//   await browser.close();
//   checks.finish();
//
// Exports: T (timeouts), log, assert, sleep, waitFor, Checks, chromiumArgs, launch,
// newPage, withIce, describe, videoStats, waitLive, observe, emulatorFrame.
//
// Environment: CHROMIUM=/usr/bin/chromium, the browser to drive.
import { chromium } from 'playwright-core';

/** Timeouts, generous: the CI machine has 2 cores. */
export const T = { start: 20_000, short: 15_000, media: 60_000 };

export function log(...a) { console.log(...a); }
export function assert(cond, msg) { if (!cond) throw new Error('assertion failed: ' + msg); }
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` every 100 ms until it returns something truthy, which it returns. */
export async function waitFor(what, fn, timeout) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/**
 * Named checks, printed as `ok - NAME` / `not ok - NAME`, and a last line
 * `PREFIX: N passed, N failed`. A failed `critical` check fails the rest
 * without running them.
 */
export class Checks {
  constructor(prefix) {
    this.prefix = prefix;
    this.passed = 0;
    this.failed = 0;
    this.aborted = null;
    this.timer = null;
  }

  async check(name, fn, { critical = false } = {}) {
    if (this.aborted) {
      this.failed += 1;
      log(`not ok - ${name} (not run: "${this.aborted}" failed)`);
      return;
    }
    const t0 = Date.now();
    try {
      await fn();
      this.passed += 1;
      log(`ok - ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      this.failed += 1;
      log(`not ok - ${name} (${Date.now() - t0} ms)`);
      log('  ' + String(e && e.stack ? e.stack : e).split('\n').slice(0, 6).join('\n  '));
      if (critical) this.aborted = name;
    }
  }

  /** Counts a failure outside any check. */
  fail(why) {
    this.failed += 1;
    log(`${this.prefix}: ${why}`);
  }

  /** Fails the whole run (and exits) if it is not finished within `ms`. */
  limit(ms) {
    this.timer = setTimeout(() => {
      log(`${this.prefix}: overall time limit reached`);
      log(`${this.prefix}: ${this.passed} passed, ${this.failed + 1} failed`);
      process.exit(1);
    }, ms);
  }

  /** Prints the summary line and exits: 0 when something passed and nothing failed. */
  finish() {
    if (this.timer) clearTimeout(this.timer);
    log(`${this.prefix}: ${this.passed} passed, ${this.failed} failed`);
    process.exit(this.failed === 0 && this.passed > 0 ? 0 : 1);
  }
}

/** Chromium's flags for WebRTC tests: headless, real ICE addresses (no mDNS
 *  names), autoplay, and no throttling of background pages. */
export const chromiumArgs = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/** A headless Chromium (`$CHROMIUM`, default /usr/bin/chromium). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: chromiumArgs,
  });
}

/**
 * A page in a context of its own, named `name` (`page.pageName`): its
 * console errors are logged, its uncaught errors logged and pushed to
 * `pageErrors` when given.
 */
export async function newPage(browser, name, { viewport = { width: 1280, height: 800 }, pageErrors = null } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.pageName = name;
  page.on('pageerror', (e) => {
    if (pageErrors) pageErrors.push(`${name}: ${e.message}`);
    else log(`  [${name} pageerror] ${e.message}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error') log(`  [${name} console.error] ${m.text()}`);
  });
  return page;
}

/** `link` with `ice=none` unless it names its ICE servers: media stays inside
 *  the test's network namespace. */
export function withIce(link) {
  const u = new URL(link);
  if (!u.searchParams.has('ice')) u.searchParams.set('ice', 'none');
  return u.toString();
}

/** Logs a demo page's state (window.signalDemo), to explain a failure. */
export async function describe(page) {
  try {
    const s = await page.evaluate(() => {
      const d = window.signalDemo;
      return {
        state: d && d.state,
        status: document.getElementById('status').textContent.trim(),
        error: d && d.error,
        ws: d && d.wsState,
        pc: d && d.connectionState && d.connectionState(),
        pcs: d && d.pcCount,
        log: d && d.log.slice(-14).map((l) => l.dir + ':' + l.type).join(' '),
      };
    });
    log(`  ${page.pageName}: ${JSON.stringify(s)}`);
  } catch (e) {
    log(`  ${page.pageName}: (cannot read state: ${e.message})`);
  }
}

/** A viewer page's video now: size, playback position, decoded frames, and
 *  the demo's state and peer-connection count. */
export function videoStats(page) {
  return page.evaluate(async () => {
    const v = document.getElementById('video');
    const s = await window.signalDemo.inboundVideo();
    return {
      t: v.currentTime, w: v.videoWidth, h: v.videoHeight, frames: s ? s.framesDecoded : -1,
      state: window.signalDemo.state, pcs: window.signalDemo.pcCount,
    };
  });
}

/** Waits until every page plays video (`videoWidth > 0`, state `live`) on at
 *  least `minPcs` peer connections so far; describes each page on a timeout. */
export async function waitLive(pages, { minPcs = 0, timeout = T.media, explain = null } = {}) {
  try {
    await Promise.all(pages.map((p) => p.waitForFunction(
      (pcs) => document.getElementById('video').videoWidth > 0 && window.signalDemo.state === 'live'
        && window.signalDemo.pcCount >= pcs,
      minPcs, { timeout })));
  } catch (e) {
    for (const p of pages) await describe(p);
    if (explain) explain();
    throw e;
  }
}

/** `read` of every page, then again after `ms` (the observation window):
 *  [[before, after], ...] in the order of `pages`. */
export async function observe(pages, read = videoStats, ms = 2000) {
  const before = await Promise.all(pages.map(read));
  await sleep(ms);
  const after = await Promise.all(pages.map(read));
  return pages.map((_, i) => [before[i], after[i]]);
}

/** The frame number tests/e2e/robot_emulator.py drew into the frame a
 *  viewer page shows now, read back from the pixels (`n`, null when the read
 *  is not sound), with the video's size, the decoder's frame count, and the
 *  demo's state and peer-connection count. */
function readFrame(page) {
  return page.evaluate(async () => {
    const v = document.getElementById('video');
    const s = await window.signalDemo.inboundVideo();
    const out = {
      w: v.videoWidth, h: v.videoHeight, frames: s ? s.framesDecoded : -1, n: null,
      state: window.signalDemo.state, pcs: window.signalDemo.pcCount,
    };
    if (!v.videoWidth) return out;
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(v, 0, 0);
    const img = ctx.getImageData(0, 0, c.width, c.height).data;
    const lum = (x, y) => {
      const i = (Math.floor(y) * c.width + Math.floor(x)) * 4;
      return (img[i] + img[i + 1] + img[i + 2]) / 3;
    };
    let a = 0, b = 0;
    for (let i = 0; i < 16; i++) {
      const x = ((i + 0.5) * c.width) / 16;
      a = (a << 1) | (lum(x, c.height / 8) > 128 ? 1 : 0);
      b = (b << 1) | (lum(x, (3 * c.height) / 8) > 128 ? 1 : 0);
    }
    out.n = ((a ^ b) & 0xffff) === 0xffff ? a : null;
    return out;
  });
}

/** A sound read of the frame number (a few tries: a read can catch a frame
 *  mid-way through decoding artefacts). */
export async function emulatorFrame(page) {
  let last = null;
  for (let i = 0; i < 20; i++) {
    last = await readFrame(page);
    if (last.n !== null) return last;
    await sleep(50);
  }
  return last;
}

/** The candidate pair the page's current connection uses, read from its own
 *  getStats (not from the page's route indicator): both candidates' type,
 *  protocol, relay protocol and address, the pair's state and bytes. */
export function selectedPairOf(page) {
  return page.evaluate(async () => {
    const pc = window.signalDemo.peerConnection();
    if (!pc) return null;
    const report = await pc.getStats();
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const cand = (id) => {
      const c = report.get(id) || {};
      return {
        type: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol || null,
        address: c.address || c.ip, port: c.port, url: c.url || null,
      };
    };
    const locals = [];
    const carrying = [];
    report.forEach((s) => {
      if (s.type === 'local-candidate') locals.push(s.candidateType);
      if (s.type === 'candidate-pair' && s.bytesReceived > 0) {
        const l = cand(s.localCandidateId);
        const r = cand(s.remoteCandidateId);
        carrying.push({
          local: l.type, remote: r.type, via: l.url || (r.type === 'relay' ? r.address + ':' + r.port : null),
          bytesReceived: s.bytesReceived, selected: s.id === pair.id,
        });
      }
    });
    return {
      state: pair.state, nominated: pair.nominated,
      bytesReceived: pair.bytesReceived, bytesSent: pair.bytesSent,
      local: cand(pair.localCandidateId), remote: cand(pair.remoteCandidateId),
      localCandidateTypes: locals,
      // Every pair that received media bytes: the media's real path.
      carrying,
      policy: pc.getConfiguration().iceTransportPolicy,
    };
  });
}
