#!/usr/bin/env python3
"""Instructions the server executes per relayed message, counted by
valgrind's callgrind: repeatable whatever else the machine is doing, so two
builds (e.g. with and without LTO) can be compared on a shared, noisy machine.

    benches/instructions_per_message.py BINARY [BINARY...]

For each binary, two runs under `valgrind --tool=callgrind` (one runtime
thread, rate limits off), each with a host and a watcher over loopback: the
watcher sends SMALL (default 2000) then LARGE (default 12000) messages of
200 bytes to the host, in windows of 50, and the host receives them all. The
figure is (instructions(LARGE) - instructions(SMALL)) / (LARGE - SMALL):
start-up, connection set-up and shutdown cancel out. Needs valgrind and the
PyPI package websockets.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile

from websockets.asyncio.client import connect

SMALL = int(os.environ.get("SMALL", "2000"))
LARGE = int(os.environ.get("LARGE", "12000"))
WINDOW = 50
PAYLOAD = "x" * 150


async def drive(port, count):
    url = f"ws://127.0.0.1:{port}/webrtc"
    async with connect(url, open_timeout=120) as host, connect(url, open_timeout=120) as viewer:
        await host.send('{"type":"init"}')
        init = json.loads(await host.recv())
        await viewer.send(json.dumps({"type": "init", "watch": init["watch"]}))
        await viewer.recv()
        sent = received = 0
        while received < count:
            while sent < count and sent - received < WINDOW:
                await viewer.send('{"type":"answer","sdp":"%s %d"}' % (PAYLOAD, sent))
                sent += 1
            msg = json.loads(await asyncio.wait_for(host.recv(), 120))
            if msg.get("type") == "answer":
                received += 1


def run(binary, count):
    out = tempfile.NamedTemporaryFile(prefix="callgrind.", delete=False).name
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary,
         "--bind", "127.0.0.1:0", "--threads", "1", "--log-format", "json",
         "--rate-limit", "1000000", "--rate-burst", "1000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RUST_LOG": "warn,signal_server::server=info"})
    port = None
    for line in proc.stderr:
        if '"listening"' in line:
            port = json.loads(line)["local"].rsplit(":", 1)[1]
            break
    if port is None:
        raise SystemExit(f"{binary} did not start")
    asyncio.run(drive(port, count))
    proc.terminate()
    proc.communicate(timeout=300)
    with open(out) as f:
        text = f.read()
    os.unlink(out)
    total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    return int(total.group(1))


def main():
    for binary in sys.argv[1:]:
        small, large = run(binary, SMALL), run(binary, LARGE)
        per = (large - small) / (LARGE - SMALL)
        print(f"{binary}: {per:,.0f} instructions per relayed message "
              f"({small:,} for {SMALL}, {large:,} for {LARGE})")


if __name__ == "__main__":
    main()
