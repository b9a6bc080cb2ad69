// Shared pieces of the browser tests that watch the webrtc_ros emulator's
// video (tests/e2e/robot_emulator.py) on the demo page: reading the frame
// number the emulator draws into each frame, checking that it advances, and
// reading the ICE candidate pair a connection uses from getStats.
//
// `launchChromium` and `CHROMIUM_ARGS` are the launch code the browser
// scripts share (the flags of /work/shared/notes/browser-webrtc-tests.md);
// they belong with the other scripts' launch code once that has one home.
import { chromium } from 'playwright-core';

/** Chromium's flags for WebRTC in headless tests (real IP candidates, no
 *  background networking, timers not throttled in background tabs). */
export const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/** A headless Chromium (`executablePath` may be a wrapper, e.g. one that
 *  runs Chromium in a network namespace). */
export function launchChromium(executablePath) {
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The frame number the emulator drew into the frame now shown, read back
 *  from the pixels (null when the read is not sound), and the decoder's
 *  frame count. */
export function readFrame(page) {
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
export async function frameNumber(page) {
  let last = null;
  for (let i = 0; i < 20; i++) {
    last = await readFrame(page);
    if (last.n !== null) return last;
    await sleep(50);
  }
  return last;
}

/** Frame numbers and framesDecoded over a window of `ms`: {before, after}. */
export async function frameAdvance(page, ms = 2000) {
  const before = await frameNumber(page);
  await sleep(ms);
  const after = await frameNumber(page);
  return { before, after };
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
