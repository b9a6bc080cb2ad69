#!/usr/bin/env python3
"""Baseline for the benchmarks: a signalling relay in the original project's
style (Python `websockets`, one coroutine per socket, json.loads on every
message), speaking the subset of docs/PROTOCOL.md that the load generator
uses, so `signal-bench --proto python` drives it like signal-server:

- {"type":"init"} creates a room: reply {"type":"init","join":T,"peer":ID,
  "role":"host",...}; {"type":"init","join":T} enters it (reply with the
  peer's id; the host gets peer_joined).
- A peer's message goes to the host with "from" added as its first field
  (re-serialised with json.dumps); the host's goes to "to", or to every peer.
- peer_left / host_left when sockets close; errors as {"type":"error",...}.

It validates only what routing needs. Usage: python_relay.py [HOST] [PORT]
"""

import asyncio
import json
import secrets
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

ROOMS = {}  # join token -> Room


class Room:
    def __init__(self, host):
        self.join = secrets.token_urlsafe(12)
        self.host = host
        self.host_id = secrets.token_urlsafe(6)
        self.peers = {}  # id -> websocket


def error(code, message):
    return json.dumps({"type": "error", "code": code, "message": message})


async def handler(ws):
    room = None
    me = None
    is_host = False
    try:
        async for text in ws:
            try:
                msg = json.loads(text)
            except ValueError:
                await ws.send(error("bad_json", "not valid JSON"))
                continue
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                await ws.send(error("bad_message", "a message is a JSON object with a string `type`"))
                continue
            kind = msg["type"]
            if kind == "init":
                if room is not None:
                    await ws.send(error("already_in_room", "already in a room"))
                elif "join" in msg:
                    room = ROOMS.get(msg["join"])
                    if room is None:
                        await ws.send(error("room_not_found", "no open room has this token"))
                        continue
                    me = secrets.token_urlsafe(6)
                    room.peers[me] = ws
                    await ws.send(json.dumps({"type": "init", "peer": me, "role": "join", "ice_servers": []}))
                    await room.host.send(json.dumps({"type": "peer_joined", "peer": me, "role": "join"}))
                else:
                    room = Room(ws)
                    ROOMS[room.join] = room
                    is_host = True
                    me = room.host_id
                    await ws.send(json.dumps({
                        "type": "init", "join": room.join, "peer": me,
                        "role": "host", "ice_servers": [],
                    }))
            elif room is None:
                await ws.send(error("not_in_room", "send init first"))
            elif is_host:
                to = msg.get("to")
                if to is None:
                    for peer in list(room.peers.values()):
                        await peer.send(text)
                elif to in room.peers:
                    await room.peers[to].send(text)
                else:
                    await ws.send(error("peer_not_found", "`to` names no peer of this room"))
            else:
                if room.host is None:
                    await ws.send(error("host_absent", "the host is disconnected"))
                    continue
                msg.pop("from", None)
                await room.host.send(json.dumps({"from": me, **msg}))
    except ConnectionClosed:
        pass
    finally:
        if room is not None:
            if is_host:
                ROOMS.pop(room.join, None)
                room.host = None
                for peer in list(room.peers.values()):
                    try:
                        await peer.send('{"type":"host_left"}')
                    except ConnectionClosed:
                        pass
            else:
                room.peers.pop(me, None)
                if room.host is not None:
                    try:
                        await room.host.send(json.dumps({"type": "peer_left", "peer": me}))
                    except ConnectionClosed:
                        pass


async def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8765
    async with serve(handler, host, port, max_size=65536, compression=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
