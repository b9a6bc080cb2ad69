#!/usr/bin/env python3
"""A stand-in for ROS webrtc_ros's server, with a real WebRTC stack (aiortc).

It behaves as webrtc_ros does towards its WebSocket clients (see the project's
notes on webrtc_ros):

- WebSocket upgrades at /webrtc (anything else: HTTP 404); one WebSocket
  connection = one RTCPeerConnection;
- nothing happens until `configure`; on `configure` it applies the actions,
  creates an SDP offer (the robot is the offerer), sends
  {"type":"offer","sdp":...} and then trickles its candidates as
  {"type":"ice_candidate","sdp_mid":...,"sdp_mline_index":...,"candidate":...};
- it takes {"type":"answer"} and {"type":"ice_candidate"} back; an unknown type
  is only logged; a frame that is not JSON drops the client;
- it pings every 10 s; closing the WebSocket closes the peer connection.

Every `add_video_track` whose `src` is a `ros_image:` URI gets a synthetic
video track whose frames carry their frame number: 16 cells across the top
third of the frame hold the number's bits (white = 1, most significant bit
first) and the 16 cells below them hold the inverted bits, so a viewer can
read the number back from a decoded frame and know the read is sound.

ICE servers: like webrtc_ros with its stock ROS 1 provider
(`ice_server_service.py`), every new connection asks for them once: with
`--turn-server-creds-uri` it POSTs the form fields `username` and `password`
there, takes `username` and `password` from the JSON answer for each of
`--turn-server-uris`, and adds `--stun-servers` (the provider's parameters of
the same names; no STUN server by default, as none is reachable in a test).

Events go to stdout as JSON lines (`{"event": "open", "conn": 1, ...}`), for
tests to follow.

    python3 robot_emulator.py --port 9090
"""

import argparse
import asyncio
import json
import logging
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http import HTTPStatus

import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.sdp import candidate_from_sdp
from av import VideoFrame
from websockets.asyncio.server import serve

WIDTH, HEIGHT = 320, 240
BITS = 16

log = logging.getLogger("robot-emulator")


def emit(event, **fields):
    """One JSON line on stdout per event."""
    fields = {"event": event, "t": round(time.time(), 3), **fields}
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def counter_image(n):
    """An RGB frame that carries `n` (mod 2**16) in two rows of 16 cells."""
    img = np.full((HEIGHT, WIDTH, 3), 96, dtype=np.uint8)
    cell = WIDTH // BITS
    row = HEIGHT // 4
    for i in range(BITS):
        bit = (n >> (BITS - 1 - i)) & 1
        x0, x1 = i * cell, (i + 1) * cell
        img[0:row, x0:x1] = 255 if bit else 0
        img[row:2 * row, x0:x1] = 0 if bit else 255
    # Something that moves, so that the encoder never idles.
    x = (n * 4) % WIDTH
    img[2 * row + 10:HEIGHT - 10, x:min(WIDTH, x + 12)] = (250, 200, 40)
    return img


class CounterTrack(VideoStreamTrack):
    """A video track whose frames carry their frame number."""

    def __init__(self, conn, src):
        super().__init__()
        self.conn = conn
        self.src = src
        self.frames = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(counter_image(self.frames), format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        self.frames += 1
        if self.frames % 150 == 0:
            emit("frames", conn=self.conn, src=self.src, frames=self.frames)
        return frame


def candidates_of(sdp):
    """The candidates of an SDP, as webrtc_ros trickles them."""
    out = []
    mline = -1
    mid = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            mline += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):]
        elif line.startswith("a=candidate:") and mline >= 0:
            out.append({"sdp_mid": mid or str(mline), "sdp_mline_index": mline,
                        "candidate": line[len("a="):]})
    return out


def get_ice_servers(creds_uri, turn_uris, stun_servers):
    """What webrtc_ros's stock provider answers to `get_ice_servers`: a TURN
    server per URI with the credentials POSTed for, then the STUN servers.
    Returns (servers, what happened)."""
    servers, got = [], {"turn": False}
    if creds_uri:
        body = urllib.parse.urlencode({"username": "", "password": ""}).encode()
        request = urllib.request.Request(creds_uri, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                data, got["status"] = json.load(resp), resp.status
        except urllib.error.HTTPError as e:  # requests.post does not raise either
            got["status"] = e.code
            try:
                data = json.load(e)
            except ValueError:
                data = {}
        except (OSError, ValueError) as e:
            data, got["error"] = {}, repr(e)
        if isinstance(data, dict) and "username" in data and "password" in data:
            got.update(turn=True, username=data["username"])
            for uri in turn_uris:
                servers.append(RTCIceServer(urls=uri, username=data["username"],
                                            credential=data["password"]))
    for uri in stun_servers:
        servers.append(RTCIceServer(urls=uri))
    return servers, got


class Emulator:
    def __init__(self, allowed_scheme="ros_image", creds_uri="", turn_uris=(), stun_servers=()):
        self.next_conn = 1
        self.open = set()
        self.allowed_scheme = allowed_scheme
        self.creds_uri = creds_uri
        self.turn_uris = list(turn_uris)
        self.stun_servers = list(stun_servers)

    async def process_request(self, connection, request):
        path = request.path.split("?", 1)[0]
        if path != "/webrtc":
            return connection.respond(HTTPStatus.NOT_FOUND, "webrtc_ros emulator: try /webrtc\n")
        return None

    async def handle(self, ws):
        conn = self.next_conn
        self.next_conn += 1
        self.open.add(conn)
        emit("open", conn=conn, open=len(self.open))
        servers, got = await asyncio.to_thread(
            get_ice_servers, self.creds_uri, self.turn_uris, self.stun_servers)
        if self.creds_uri:
            emit("ice_servers", conn=conn, servers=len(servers), **got)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        tracks = []

        @pc.on("connectionstatechange")
        async def on_state():
            emit("pc_state", conn=conn, state=pc.connectionState)

        async def send(msg):
            await ws.send(json.dumps(msg))

        try:
            async for text in ws:
                if not isinstance(text, str):
                    log.warning("conn %d: binary frame ignored", conn)
                    continue
                try:
                    msg = json.loads(text)
                except ValueError:
                    # As webrtc_ros does: invalid JSON drops the client.
                    emit("bad_json", conn=conn)
                    break
                if not isinstance(msg, dict):
                    emit("bad_message", conn=conn)
                    break
                kind = msg.get("type")
                emit("received", conn=conn, type=kind, has_from="from" in msg)
                if kind == "configure":
                    await self.configure(conn, pc, tracks, msg, send)
                elif kind == "answer":
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
                elif kind == "ice_candidate":
                    line = msg.get("candidate") or ""
                    if line.startswith("candidate:"):
                        try:
                            c = candidate_from_sdp(line[len("candidate:"):])
                            c.sdpMid = msg.get("sdp_mid")
                            c.sdpMLineIndex = msg.get("sdp_mline_index")
                            await pc.addIceCandidate(c)
                        except Exception as e:  # a candidate aiortc cannot use
                            log.info("conn %d: candidate ignored: %s", conn, e)
                else:
                    log.warning("conn %d: unexpected message type %r", conn, kind)
        except Exception as e:
            emit("error", conn=conn, error=repr(e))
        finally:
            self.open.discard(conn)
            await pc.close()
            emit("close", conn=conn, open=len(self.open))

    async def configure(self, conn, pc, tracks, msg, send):
        for action in msg.get("actions", []):
            kind = action.get("type")
            if kind == "add_video_track":
                src = action.get("src", "")
                if not src.startswith(self.allowed_scheme + ":"):
                    log.warning("conn %d: unsupported src %r", conn, src)
                    continue
                track = CounterTrack(conn, src)
                tracks.append(track)
                pc.addTrack(track)
                emit("track", conn=conn, src=src)
            elif kind in ("add_stream", "remove_stream"):
                pass  # streams are the tracks' grouping; nothing to do here
            else:
                log.info("conn %d: action %r not emulated", conn, kind)
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)  # aiortc gathers candidates here
        sdp = pc.localDescription.sdp
        await send({"type": "offer", "sdp": sdp})
        cands = candidates_of(sdp)
        for c in cands:
            await send({"type": "ice_candidate", **c})
        emit("offer", conn=conn, candidates=len(cands))


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--turn-server-creds-uri", default="",
                        help="where to POST for TURN credentials (the provider's turn_server_creds_uri)")
    parser.add_argument("--turn-server-uris", default="",
                        help="comma-separated TURN URIs the credentials are for")
    parser.add_argument("--stun-servers", default="", help="comma-separated STUN URIs")
    args = parser.parse_args()
    split = lambda v: [x.strip() for x in v.split(",") if x.strip()]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    emulator = Emulator(creds_uri=args.turn_server_creds_uri,
                        turn_uris=split(args.turn_server_uris),
                        stun_servers=split(args.stun_servers))
    async with serve(emulator.handle, args.host, args.port,
                     process_request=emulator.process_request,
                     ping_interval=10, ping_timeout=20) as server:
        emit("listening", host=args.host, port=args.port)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
