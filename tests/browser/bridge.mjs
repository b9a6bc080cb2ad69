// The bridge as a child process, and the emulator's log: what the browser
// tests that run a robot share (bridge-e2e.mjs, auth-e2e.mjs).
//
//   const bridge = startBridge({ bin, server: 'ws://127.0.0.1:9098/webrtc',
//     robot: 'ws://127.0.0.1:9090/webrtc', args: ['--token', t], log: stream });
//   const room = await bridge.nextEvent('room', T.start);   // its JSON events
//   await stopBridge(bridge, 'SIGTERM');                     // {code, signal}
//   openRobotConns(emulatorLogFile)                          // a Set of conn ids
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { sleep } from './lib.mjs';

/**
 * Starts `bin bridge --server SERVER --robot ROBOT --json` with the test
 * flags (the camera sources, 4 viewers, a quick backoff) and `args`; its
 * stderr and stdout lines go to `log` (a writable stream). The process gets
 * `events` (its JSON lines) and `nextEvent(kind, timeout)`, which takes the
 * next event of that kind (waiting for it) or throws.
 */
export function startBridge({ bin, server, robot, args = [], log }) {
  const argv = [
    'bridge', '--server', server, '--robot', robot, '--json',
    '--allow-src', 'ros_image:/camera/*', '--max-viewers', '4',
    '--backoff-min', '200ms', '--backoff-max', '2s', ...args,
  ];
  const proc = spawn(bin, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.BRIDGE_RUST_LOG || 'info' },
  });
  proc.stderr.pipe(log, { end: false });
  proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  proc.events = [];
  const waiters = [];
  createInterface({ input: proc.stdout }).on('line', (line) => {
    log.write(`[bridge stdout] ${line}\n`);
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

/** Sends `signal` and waits for the exit (SIGKILL and a throw after 10 s). */
export async function stopBridge(proc, signal) {
  proc.kill(signal);
  const r = await Promise.race([proc.exited, sleep(10_000).then(() => null)]);
  if (!r) {
    proc.kill('SIGKILL');
    throw new Error(`the bridge did not exit within 10 s of ${signal}`);
  }
  return r;
}

/** The emulator's JSON-lines log (tests/e2e/robot_emulator.py's stdout). */
export function emulatorEvents(file) {
  if (!file || !existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => {
    try { return JSON.parse(l); } catch (e) { return null; }
  }).filter(Boolean);
}

/** Robot connections open now (opened and not closed). */
export function openRobotConns(file) {
  const open = new Set();
  for (const e of emulatorEvents(file)) {
    if (e.event === 'open') open.add(e.conn);
    if (e.event === 'close') open.delete(e.conn);
  }
  return open;
}
