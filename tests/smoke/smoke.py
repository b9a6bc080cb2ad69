#!/usr/bin/env python3
"""Smoke test of a signal-server binary run some other way than cargo runs it:
under qemu-aarch64 (scripts/cross-test.sh) or from an otherwise empty root
directory (scripts/empty-root-test.sh).

    smoke.py --server 'CMD ...' [--bridge 'CMD ...']

--server: how to start the server. `--log-format json --bind 127.0.0.1:0` is
appended; the address is read from its `listening` log line. Checked through
real sockets: `GET /` serves the page, `GET /healthz` answers ok, and a
WebSocket session: a host's `init`, a watcher entering with the watch token,
the watcher's message relayed to the host with the sender's own text (not
re-serialised), and the host's reply relayed back.

--bridge: how to start the bridge (`bridge --server URL --robot URL --json`
is appended). A scripted stand-in for webrtc_ros (like tests/bridge_support:
nothing until `configure`, then an `offer` and an `ice_candidate`) listens on
loopback; the bridge hosts a room on the server; a viewer enters with the
watch token from the bridge's JSON line, sends `configure` and gets the
robot's offer and candidate back through bridge and server, and its answer
reaches the robot. Then SIGTERM: the bridge exits 0 and closes its robot
connection.

Every wait is for an event, bounded by WAIT seconds (generous: emulated
binaries on a loaded 2-core machine). Prints `smoke: N passed, N failed` last;
exit code 0 when all passed.
"""

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import urllib.request

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

WAIT = float(os.environ.get("SMOKE_WAIT", "30"))


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


async def within(what, aw, timeout=WAIT):
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        raise Failed(f"timed out after {timeout:.0f} s waiting for {what}") from None


class Process:
    """A child process whose output is kept (printed when a check failed) and
    searched."""

    def __init__(self, name, argv):
        self.name = name
        self.argv = argv
        self.proc = None
        self.lines = asyncio.Queue()
        self.stdout_lines = asyncio.Queue()
        self.log = []

    async def start(self):
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        asyncio.ensure_future(self._pump(self.proc.stderr, self.lines, "stderr"))
        asyncio.ensure_future(self._pump(self.proc.stdout, self.stdout_lines, "stdout"))

    async def _pump(self, stream, queue, label):
        while True:
            line = await stream.readline()
            if not line:
                await queue.put(None)
                return
            text = line.decode(errors="replace").rstrip("\n")
            self.log.append(f"  [{self.name} {label}] {text}")
            await queue.put(text)

    async def json_line(self, queue, what, pred):
        async def find():
            while True:
                line = await queue.get()
                if line is None:
                    raise Failed(f"{self.name} ended before {what}")
                try:
                    v = json.loads(line)
                except ValueError:
                    continue
                if pred(v):
                    return v

        return await within(f"{self.name}: {what}", find())

    def stop(self):
        if self.proc and self.proc.returncode is None:
            self.proc.kill()


class Ws:
    def __init__(self, ws, name):
        self.ws = ws
        self.name = name

    async def send(self, text):
        await self.ws.send(text)

    async def recv_raw(self, what):
        return await within(f"{self.name}: {what}", self.ws.recv())

    async def recv_type(self, ty):
        while True:
            raw = await self.recv_raw(f"a {ty!r} message")
            v = json.loads(raw)
            if v.get("type") == ty:
                return raw, v
            expect(v.get("type") != "error", f"{self.name} got an error: {raw}")


async def ws_connect(url, name):
    ws = await within(f"{name} to connect to {url}", connect(url, max_size=2**20))
    return Ws(ws, name)


def http_get(url):
    with urllib.request.urlopen(url, timeout=WAIT) as resp:
        return resp.status, resp.headers.get("content-type", ""), resp.read()


class Smoke:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    async def check(self, name, coro):
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            self.failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}")
            return False
        self.passed += 1
        print(f"ok   {name}")
        return True


async def page_and_health(base):
    status, ctype, body = await asyncio.to_thread(http_get, f"{base}/")
    expect(status == 200, f"GET / answered {status}")
    expect(ctype.startswith("text/html"), f"GET / content-type {ctype!r}")
    expect(b"<html" in body.lower(), "GET / is not an HTML page")
    status, ctype, body = await asyncio.to_thread(http_get, f"{base}/healthz")
    expect(status == 200, f"GET /healthz answered {status}")
    health = json.loads(body)
    expect(health.get("status") == "ok", f"/healthz said {health}")


async def session(ws_url):
    host = await ws_connect(ws_url, "host")
    await host.send('{"type":"init"}')
    _, init = await host.recv_type("init")
    expect(init.get("role") == "host" and init.get("watch"), f"host init: {init}")
    viewer = await ws_connect(ws_url, "watcher")
    await viewer.send(json.dumps({"type": "init", "watch": init["watch"]}))
    _, vinit = await viewer.recv_type("init")
    expect(vinit.get("role") == "watch", f"watcher init: {vinit}")
    _, joined = await host.recv_type("peer_joined")
    expect(joined.get("peer") == vinit["peer"], f"peer_joined: {joined}")
    # Odd spacing and key order: a server that re-serialised would lose them.
    own = '"type":  "answer" ,"sdp" : "v=0 smoke"'
    await viewer.send("{" + own + "}")
    raw, answer = await host.recv_type("answer")
    expect(own in raw, f"the host got {raw!r}, not the sender's own text")
    expect(answer.get("from") == vinit["peer"], f"relayed answer: {raw}")
    await host.send(json.dumps({"type": "offer", "sdp": "v=0 reply", "to": vinit["peer"]}))
    _, offer = await viewer.recv_type("offer")
    expect(offer.get("sdp") == "v=0 reply", f"relayed offer: {offer}")
    await viewer.ws.close()
    await host.ws.close()


class RobotStandIn:
    """webrtc_ros's /webrtc as the bridge sees it (tests/bridge_support)."""

    def __init__(self):
        self.received = asyncio.Queue()
        self.closed = asyncio.Queue()
        self.server = None
        self.url = None

    async def start(self):
        self.server = await serve(self.conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/webrtc"

    async def conn(self, ws):
        try:
            async for raw in ws:
                msg = json.loads(raw)
                await self.received.put(msg)
                if msg.get("type") == "configure":
                    await ws.send(json.dumps({"type": "offer", "sdp": "v=0 from the robot"}))
                    await ws.send(json.dumps({
                        "type": "ice_candidate", "sdp_mid": "video", "sdp_mline_index": 0,
                        "candidate": "candidate:1 1 UDP 2122252543 198.51.100.9 50000 typ host",
                    }))
        finally:
            await self.closed.put(True)

    async def next(self, what):
        return await within(f"the robot stand-in: {what}", self.received.get())


async def bridge_flow(bridge, robot, ws_url):
    room = await bridge.json_line(
        bridge.stdout_lines, "its room line (--json)", lambda v: v.get("event") == "room")
    viewer = await ws_connect(ws_url, "viewer")
    await viewer.send(json.dumps({"type": "init", "watch": room["watch"]}))
    _, vinit = await viewer.recv_type("init")
    expect(vinit.get("role") == "watch", f"viewer init: {vinit}")
    configure = {"type": "configure", "actions": [
        {"type": "add_stream", "id": "s"},
        {"type": "add_video_track", "stream_id": "s", "id": "s/v", "src": "ros_image:/camera/image_raw"},
    ]}
    await viewer.send(json.dumps(configure))
    got = await robot.next("the viewer's configure")
    expect(got == configure, f"the robot got {got}, not the viewer's configure without `from`")
    _, offer = await viewer.recv_type("offer")
    expect(offer.get("sdp") == "v=0 from the robot", f"viewer's offer: {offer}")
    _, cand = await viewer.recv_type("ice_candidate")
    expect("198.51.100.9" in cand.get("candidate", ""), f"viewer's candidate: {cand}")
    await viewer.send(json.dumps({"type": "answer", "sdp": "v=0 from the viewer"}))
    got = await robot.next("the viewer's answer")
    expect(got == {"type": "answer", "sdp": "v=0 from the viewer"}, f"the robot got {got}")
    bridge.proc.send_signal(signal.SIGTERM)
    code = await within("the bridge to exit after SIGTERM", bridge.proc.wait())
    expect(code == 0, f"the bridge exited with {code} after SIGTERM")
    await within("the robot connection to close", robot.closed.get())
    await viewer.ws.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="command that starts the server")
    ap.add_argument("--bridge", help="command that starts the bridge")
    args = ap.parse_args()

    smoke = Smoke()
    procs = []
    try:
        server = Process("server", shlex.split(args.server) + ["--log-format", "json", "--bind", "127.0.0.1:0"])
        procs.append(server)
        await server.start()
        listening = None

        async def started():
            nonlocal listening
            listening = await server.json_line(server.lines, "its `listening` line",
                                               lambda v: v.get("message") == "listening")

        if not await smoke.check("the server starts and listens", started()):
            return smoke
        addr = listening["local"]
        base, ws_url = f"http://{addr}", f"ws://{addr}/webrtc"
        await smoke.check("GET / serves the page and GET /healthz answers ok", page_and_health(base))
        await smoke.check("init, a watcher enters, messages relayed both ways (sender's own text)",
                          session(ws_url))
        if args.bridge:
            robot = RobotStandIn()
            await robot.start()
            bridge = Process("bridge", shlex.split(args.bridge) + [
                "bridge", "--server", ws_url, "--robot", robot.url, "--json"])
            procs.append(bridge)
            await bridge.start()
            await smoke.check("the bridge hosts a room; a viewer's configure reaches the robot and "
                              "its offer, candidate and answer cross; SIGTERM exits 0",
                              bridge_flow(bridge, robot, ws_url))
        server.proc.send_signal(signal.SIGTERM)

        async def stops():
            code = await within("the server to exit after SIGTERM", server.proc.wait())
            expect(code == 0, f"the server exited with {code} after SIGTERM")

        await smoke.check("the server exits 0 on SIGTERM", stops())
    finally:
        for p in procs:
            p.stop()
        if smoke.failed or os.environ.get("SMOKE_VERBOSE"):
            for p in procs:
                print(f"--- {p.name}: {shlex.join(p.argv)}")
                print("\n".join(p.log))
    return smoke


if __name__ == "__main__":
    result = asyncio.run(main())
    print(f"smoke: {result.passed} passed, {result.failed} failed")
    sys.exit(0 if result.failed == 0 and result.passed > 0 else 1)
