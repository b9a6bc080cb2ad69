//! The Lua scripts that change shared room state. Each runs atomically in
//! Redis, bumps the room's version and publishes the events it causes to the
//! instances concerned, so a change and its notification cannot be separated.
//! Each is called through one typed function of [`super::scripts`], the only
//! code that knows its arguments and reply.
//!
//! Every script takes the key prefix as `ARGV[1]` and builds key names from it
//! (the registry targets a single Redis server, not Redis Cluster). Layout:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}tok:{token}` | string | `j\|room`, `w\|room` or `r\|room` (join, watch, resume) |
//! | `{p}room:{room}` | hash | join, watch, resume, host (peer id), hinst (host's instance, empty while away), cinst (creator), epoch, ver, grace (ms) |
//! | `{p}room:{room}` (also) | | since, hsince (unix seconds the room opened, the host came or went), seq (the room's last event number, for webhooks) |
//! | `{p}room:{room}:peers` | hash | peer id → `j\|instance` or `w\|instance` |
//! | `{p}room:{room}:since` | hash | peer id → unix seconds it entered |
//! | `{p}rooms` | set | the open rooms (for listing them) |
//! | `{p}inst:{inst}` | string | heartbeat, expires after the heartbeat TTL |
//! | `{p}inst:{inst}:rooms` | set | rooms where the instance has the host or peers |
//! | `{p}instances` | set | instance ids, checked for missing heartbeats |
//! | `{p}grace` | sorted set | hostless rooms scored by their deadline (ms) |
//! | `{p}closed:{room}` | string | tombstone of a closed room (10 min) |
//! | `{p}reap:{inst}` | string | lock taken by the instance reaping a dead one |
//!
//! Events go to channel `{p}i:{inst}` as `|`-separated text:
//! `J|room|ver|peer|role|inst`, `L|room|ver|peer`, `HL|room|ver`,
//! `HJ|room|ver|inst|epoch|resume`, `C|room|ver|counted`, and
//! `K|room|peer|epoch` (an administrator kicked a peer of this instance;
//! the host, if `epoch` is not `0`).
//!
//! Each script that makes a change operators hear of (a webhook event)
//! bumps the room's `seq` and returns it: the instance that ran the script,
//! and only it, emits the event, with that number.

/// Helpers shared by the scripts.
const PRELUDE: &str = r#"
local P = ARGV[1]
local function rk(room) return P .. 'room:' .. room end
local function pk(room) return P .. 'room:' .. room .. ':peers' end
local function sk(room) return P .. 'room:' .. room .. ':since' end
local function unix_now() return redis.call('TIME')[1] end
local function bump(room) return redis.call('HINCRBY', rk(room), 'seq', 1) end
local function tk(t) return P .. 'tok:' .. t end
local function irk(i) return P .. 'inst:' .. i .. ':rooms' end
local function chan(i) return P .. 'i:' .. i end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Versions are microseconds of Redis time, bumped past the last one: they
-- keep growing even across a Redis restart that lost the data.
local function nextver(room)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local v = tonumber(redis.call('HGET', rk(room), 'ver') or '0') or 0
  if now > v then v = now else v = v + 1 end
  local s = string.format('%.0f', v)
  redis.call('HSET', rk(room), 'ver', s)
  return s
end
local function peer_insts(room)
  local seen, out = {}, {}
  for _, v in ipairs(redis.call('HVALS', pk(room))) do
    local i = string.sub(v, 3)
    if not seen[i] then seen[i] = true; out[#out + 1] = i end
  end
  return out
end
local function has_peers_on(room, inst)
  for _, v in ipairs(redis.call('HVALS', pk(room))) do
    if string.sub(v, 3) == inst then return true end
  end
  return false
end
local function touch(room, ttl)
  redis.call('PEXPIRE', rk(room), ttl)
  redis.call('PEXPIRE', pk(room), ttl)
  redis.call('PEXPIRE', sk(room), ttl)
  for _, t in ipairs(redis.call('HMGET', rk(room), 'join', 'watch', 'resume')) do
    if t then redis.call('PEXPIRE', tk(t), ttl) end
  end
end
local function enlist(inst, room, ttl)
  redis.call('SADD', irk(inst), room)
  redis.call('PEXPIRE', irk(inst), ttl)
  redis.call('SADD', P .. 'instances', inst)
end
local function forget_if_unused(inst, room)
  if redis.call('HGET', rk(room), 'hinst') ~= inst and not has_peers_on(room, inst) then
    redis.call('SREM', irk(inst), room)
  end
end
local function set_host_absent(room)
  redis.call('HSET', rk(room), 'hinst', '', 'hsince', unix_now())
  local v = nextver(room)
  local grace = tonumber(redis.call('HGET', rk(room), 'grace') or '0') or 0
  redis.call('ZADD', P .. 'grace', now_ms() + grace, room)
  local msg = 'HL|' .. room .. '|' .. v
  for _, i in ipairs(peer_insts(room)) do redis.call('PUBLISH', chan(i), msg) end
end
-- The room as attach, resume and sync return it (one layout, decoded in one
-- place): status, room, ver, host, hinst, epoch, join, watch, resume, grace,
-- cinst, seq, then, with peers, the members as peer id, value pairs.
local function snapshot(status, room, with_peers)
  local r = redis.call('HMGET', rk(room), 'ver', 'host', 'hinst', 'epoch', 'join', 'watch', 'resume', 'grace', 'cinst', 'seq')
  local out = {status, room}
  for n = 1, 10 do out[#out + 1] = r[n] or '0' end
  if with_peers then
    local all = redis.call('HGETALL', pk(room))
    for n = 1, #all do out[#out + 1] = all[n] end
  end
  return out
end
-- Closes a room now (its host away or not): every instance with a member
-- of it is told (`C`), the creator with `counted` (it counts the close in
-- its metrics). Returns the room's event number of its `room_ended`.
local function close_room(room)
  local r = redis.call('HMGET', rk(room), 'hinst', 'join', 'watch', 'resume', 'cinst')
  local v = nextver(room)
  local seq = bump(room)
  local insts = peer_insts(room)
  if r[1] and r[1] ~= '' then
    local found = false
    for _, i in ipairs(insts) do if i == r[1] then found = true end end
    if not found then insts[#insts + 1] = r[1] end
  end
  redis.call('DEL', rk(room), pk(room), sk(room), tk(r[2]), tk(r[3]), tk(r[4]))
  redis.call('SREM', P .. 'rooms', room)
  redis.call('ZREM', P .. 'grace', room)
  redis.call('SET', P .. 'closed:' .. room, '1', 'PX', 600000)
  local told = false
  for _, i in ipairs(insts) do
    local counted = '0'
    if i == r[5] then counted = '1'; told = true end
    redis.call('PUBLISH', chan(i), 'C|' .. room .. '|' .. v .. '|' .. counted)
    redis.call('SREM', irk(i), room)
  end
  if not told and r[5] and r[5] ~= '' then
    redis.call('PUBLISH', chan(r[5]), 'C|' .. room .. '|' .. v .. '|1')
  end
  return seq
end
"#;

/// Creates a room. ARGV: prefix, room, host id, join, watch, resume,
/// instance, grace ms, key ttl ms. Returns `clash` or the room's version.
pub const CREATE: &str = r#"
local room, host, join, watch, resume, inst, grace, ttl =
  ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
-- A token whose room is gone is dead (a named room's tokens are used again).
for _, t in ipairs({join, watch, resume}) do
  local v = redis.call('GET', tk(t))
  if v and redis.call('EXISTS', rk(string.sub(v, 3))) == 0 then redis.call('DEL', tk(t)) end
end
if redis.call('EXISTS', rk(room), tk(join), tk(watch), tk(resume), P .. 'closed:' .. room) > 0 then
  return 'clash'
end
local now = unix_now()
redis.call('HSET', rk(room), 'join', join, 'watch', watch, 'resume', resume, 'host', host,
  'hinst', inst, 'cinst', inst, 'epoch', '1', 'grace', grace, 'since', now, 'hsince', now, 'seq', '1')
redis.call('SADD', P .. 'rooms', room)
local v = nextver(room)
redis.call('SET', tk(join), 'j|' .. room, 'PX', ttl)
redis.call('SET', tk(watch), 'w|' .. room, 'PX', ttl)
redis.call('SET', tk(resume), 'r|' .. room, 'PX', ttl)
redis.call('PEXPIRE', rk(room), ttl)
enlist(inst, room, ttl)
return v
"#;

/// Attaches a guest or watcher. ARGV: prefix, token, role (`j`/`w`), peer id,
/// instance, max peers, key ttl ms. Returns `{nf}`, `{full}`, `{clash}` or
/// the room's snapshot without its peers.
pub const ATTACH: &str = r#"
local tok = redis.call('GET', tk(ARGV[2]))
if not tok or string.sub(tok, 1, 1) ~= ARGV[3] then return {'nf'} end
local room = string.sub(tok, 3)
local r = redis.call('HMGET', rk(room), 'host', 'hinst', 'epoch', 'join', 'watch', 'resume', 'grace', 'cinst')
if not r[1] then return {'nf'} end
if redis.call('HLEN', pk(room)) >= tonumber(ARGV[6]) then return {'full'} end
local peer, inst, ttl = ARGV[4], ARGV[5], ARGV[7]
if peer == r[1] or redis.call('HEXISTS', pk(room), peer) == 1 then return {'clash'} end
redis.call('HSET', pk(room), peer, ARGV[3] .. '|' .. inst)
redis.call('HSET', sk(room), peer, unix_now())
bump(room)
local v = nextver(room)
touch(room, ttl)
enlist(inst, room, ttl)
if r[2] ~= '' then
  redis.call('PUBLISH', chan(r[2]), 'J|' .. room .. '|' .. v .. '|' .. peer .. '|' .. ARGV[3] .. '|' .. inst)
end
return snapshot('ok', room, false)
"#;

/// Resumes hosting. ARGV: prefix, secret, new secret (the same secret for a
/// named room), instance, key ttl ms.
/// Returns `{nf}`, `{clash}` or the room's snapshot with its peers.
pub const RESUME: &str = r#"
local secret, fresh, inst, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local tok = redis.call('GET', tk(secret))
if not tok or string.sub(tok, 1, 1) ~= 'r' then return {'nf'} end
local room = string.sub(tok, 3)
local r = redis.call('HMGET', rk(room), 'host', 'hinst', 'epoch', 'join', 'watch', 'resume', 'grace', 'cinst')
if not r[1] or r[6] ~= secret then return {'nf'} end
-- A named room keeps its secret (fresh == secret).
if fresh ~= secret and redis.call('EXISTS', tk(fresh)) == 1 then return {'clash'} end
local epoch = redis.call('HINCRBY', rk(room), 'epoch', 1)
redis.call('HSET', rk(room), 'resume', fresh, 'hinst', inst, 'hsince', unix_now())
bump(room)
local v = nextver(room)
redis.call('DEL', tk(secret))
redis.call('SET', tk(fresh), 'r|' .. room, 'PX', ttl)
redis.call('ZREM', P .. 'grace', room)
touch(room, ttl)
enlist(inst, room, ttl)
local msg = 'HJ|' .. room .. '|' .. v .. '|' .. inst .. '|' .. epoch .. '|' .. fresh
local sent = {}
for _, i in ipairs(peer_insts(room)) do sent[i] = true; redis.call('PUBLISH', chan(i), msg) end
if r[2] ~= '' and not sent[r[2]] then sent[r[2]] = true; redis.call('PUBLISH', chan(r[2]), msg) end
if not sent[inst] then redis.call('PUBLISH', chan(inst), msg) end
return snapshot('ok', room, true)
"#;

/// A guest or watcher leaves. ARGV: prefix, room, peer, instance.
pub const LEAVE: &str = r#"
local room, peer, inst = ARGV[2], ARGV[3], ARGV[4]
local hinst = redis.call('HGET', rk(room), 'hinst')
if not hinst then return 'gone' end
local v = redis.call('HGET', pk(room), peer)
if not v or string.sub(v, 3) ~= inst then return 'gone' end
redis.call('HDEL', pk(room), peer)
redis.call('HDEL', sk(room), peer)
local seq = bump(room)
local ver = nextver(room)
if hinst ~= '' then redis.call('PUBLISH', chan(hinst), 'L|' .. room .. '|' .. ver .. '|' .. peer) end
forget_if_unused(inst, room)
return 'ok|' .. seq
"#;

/// The host leaves: the grace period starts. ARGV: prefix, room, epoch,
/// instance.
pub const LEAVE_HOST: &str = r#"
local room, epoch, inst = ARGV[2], ARGV[3], ARGV[4]
local r = redis.call('HMGET', rk(room), 'hinst', 'epoch')
if not r[1] then return 'gone' end
if r[1] ~= inst or r[2] ~= epoch then return 'stale' end
local seq = bump(room)
set_host_absent(room)
forget_if_unused(inst, room)
return 'ok|' .. seq
"#;

/// Closes the rooms whose grace period has ended. ARGV: prefix. Returns the
/// rooms closed and the number of each one's `room_ended`: room, seq, ...
pub const SWEEP: &str = r#"
local due = redis.call('ZRANGEBYSCORE', P .. 'grace', '-inf', now_ms(), 'LIMIT', 0, 64)
local closed = {}
for _, room in ipairs(due) do
  redis.call('ZREM', P .. 'grace', room)
  if redis.call('HGET', rk(room), 'hinst') == '' then
    local seq = close_room(room)
    closed[#closed + 1] = room
    closed[#closed + 1] = tostring(seq)
  end
end
return closed
"#;

/// Closes a room now (an administrator, or its host with `epoch`, `0` for
/// any). ARGV: prefix, room, epoch. Returns `nf`, `stale` (the host of
/// that epoch was replaced) or the number of the `room_ended` event.
pub const CLOSE: &str = r#"
local room, epoch = ARGV[2], ARGV[3]
local r = redis.call('HMGET', rk(room), 'hinst', 'epoch')
if not r[1] then return 'nf' end
if epoch ~= '0' and r[2] ~= epoch then return 'stale' end
return tostring(close_room(room))
"#;

/// An administrator removes peer `peer` (or the host) of `room`. ARGV:
/// prefix, room, peer. Returns `{nf}` or `{ok, seq, role}` (role `j`, `w`,
/// or `h` for the host).
pub const KICK: &str = r#"
local room, peer = ARGV[2], ARGV[3]
local r = redis.call('HMGET', rk(room), 'host', 'hinst', 'epoch')
if not r[1] then return {'nf'} end
if peer == r[1] then
  if r[2] == '' then return {'nf'} end
  local seq = bump(room)
  set_host_absent(room)
  redis.call('PUBLISH', chan(r[2]), 'K|' .. room .. '|' .. peer .. '|' .. r[3])
  forget_if_unused(r[2], room)
  return {'ok', tostring(seq), 'h'}
end
local v = redis.call('HGET', pk(room), peer)
if not v then return {'nf'} end
local inst = string.sub(v, 3)
redis.call('HDEL', pk(room), peer)
redis.call('HDEL', sk(room), peer)
local seq = bump(room)
local ver = nextver(room)
if r[2] ~= '' then redis.call('PUBLISH', chan(r[2]), 'L|' .. room .. '|' .. ver .. '|' .. peer) end
redis.call('PUBLISH', chan(inst), 'K|' .. room .. '|' .. peer .. '|0')
forget_if_unused(inst, room)
return {'ok', tostring(seq), string.sub(v, 1, 1)}
"#;

/// Every open room, for operators. ARGV: prefix. Returns, for each room:
/// room, host, hinst, since, hsince, name (a named room's, whose resume
/// secret is `NAME/host`; else empty), number of peers, then per peer: id,
/// role (`j`/`w`), since. Rooms whose keys expired leave the set.
pub const ROOMS: &str = r#"
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', P .. 'rooms')) do
  local r = redis.call('HMGET', rk(room), 'host', 'hinst', 'since', 'hsince', 'resume')
  if not r[1] then
    redis.call('SREM', P .. 'rooms', room)
  else
    local all = redis.call('HGETALL', pk(room))
    out[#out + 1] = room
    for n = 1, 4 do out[#out + 1] = r[n] or '0' end
    out[#out + 1] = string.match(r[5] or '', '^(.+)/host$') or ''
    out[#out + 1] = tostring(#all / 2)
    for k = 1, #all, 2 do
      out[#out + 1] = all[k]
      out[#out + 1] = string.sub(all[k + 1], 1, 1)
      out[#out + 1] = redis.call('HGET', sk(room), all[k]) or '0'
    end
  end
end
return out
"#;

/// Instances whose heartbeat key is gone. ARGV: prefix, own instance.
pub const FIND_DEAD: &str = r#"
local out = {}
for _, i in ipairs(redis.call('SMEMBERS', P .. 'instances')) do
  if i ~= ARGV[2] and redis.call('EXISTS', P .. 'inst:' .. i) == 0 then out[#out + 1] = i end
end
return out
"#;

/// Removes a dead instance's peers and host from one room, telling the
/// others. ARGV: prefix, room, dead instance. Returns who left: id, role
/// (`j`, `w`, or `h` for the host), event number, ...
pub const REAP: &str = r#"
local room, dead = ARGV[2], ARGV[3]
local r = redis.call('HMGET', rk(room), 'hinst', 'host')
local hinst = r[1]
if not hinst then return {} end
local out = {}
local all = redis.call('HGETALL', pk(room))
for k = 1, #all, 2 do
  if string.sub(all[k + 1], 3) == dead then
    redis.call('HDEL', pk(room), all[k])
    redis.call('HDEL', sk(room), all[k])
    local seq = bump(room)
    out[#out + 1] = all[k]
    out[#out + 1] = string.sub(all[k + 1], 1, 1)
    out[#out + 1] = tostring(seq)
    local v = nextver(room)
    if hinst ~= '' and hinst ~= dead then
      redis.call('PUBLISH', chan(hinst), 'L|' .. room .. '|' .. v .. '|' .. all[k])
    end
  end
end
if hinst == dead then
  local seq = bump(room)
  set_host_absent(room)
  out[#out + 1] = r[2]
  out[#out + 1] = 'h'
  out[#out + 1] = tostring(seq)
end
return out
"#;

/// Re-asserts what one instance knows of a room after Redis was unreachable
/// or lost its data, and returns the room as Redis now has it. ARGV: prefix,
/// room, instance, key ttl ms, heartbeat ttl ms, have (`1` if the room's
/// data follows, `0` if this instance does not know the room); then, only
/// with `1`: join, watch, resume, host id, epoch, grace, host here
/// (`1`/`0`), host's instance as last known, creator instance, then local
/// peer id and role pairs. An instance listed on another's behalf gets a
/// heartbeat of its own (`NX`) so that it has a full TTL to show up before
/// it can be taken for dead.
/// Returns `{gone}` or the room's snapshot with its peers.
pub const SYNC: &str = r#"
local room, inst, ttl, hbttl, have = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local join, watch, resume, host, epoch, grace = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local hlocal, hknown, cinst = ARGV[13], ARGV[14], ARGV[15]
local mine = {}
for n = 16, #ARGV, 2 do mine[ARGV[n]] = ARGV[n + 1] end
local R = rk(room)
if redis.call('EXISTS', R) == 0 then
  if have ~= '1' or redis.call('EXISTS', P .. 'closed:' .. room) == 1 then return {'gone'} end
  local h = hknown
  if hlocal == '1' then h = inst end
  redis.call('HSET', R, 'join', join, 'watch', watch, 'resume', resume, 'host', host,
    'hinst', h, 'cinst', cinst, 'epoch', epoch, 'grace', grace, 'since', unix_now(), 'hsince', unix_now())
  redis.call('SADD', P .. 'rooms', room)
  nextver(room)
  redis.call('SET', tk(join), 'j|' .. room, 'PX', ttl)
  redis.call('SET', tk(watch), 'w|' .. room, 'PX', ttl)
  redis.call('SET', tk(resume), 'r|' .. room, 'PX', ttl)
  if h == '' then
    redis.call('ZADD', P .. 'grace', now_ms() + tonumber(grace), room)
  elseif h ~= inst then
    redis.call('SET', P .. 'inst:' .. h, '1', 'PX', hbttl, 'NX')
    enlist(h, room, ttl)
  end
end
local hinst = redis.call('HGET', R, 'hinst')
local all = redis.call('HGETALL', pk(room))
for k = 1, #all, 2 do
  local id = all[k]
  if string.sub(all[k + 1], 3) == inst and not mine[id] then
    redis.call('HDEL', pk(room), id)
    redis.call('HDEL', sk(room), id)
    local v = nextver(room)
    if hinst ~= '' then redis.call('PUBLISH', chan(hinst), 'L|' .. room .. '|' .. v .. '|' .. id) end
  end
end
for id, role in pairs(mine) do
  local want = role .. '|' .. inst
  if redis.call('HGET', pk(room), id) ~= want then
    redis.call('HSET', pk(room), id, want)
    redis.call('HSETNX', sk(room), id, unix_now())
    local v = nextver(room)
    if hinst ~= '' then
      redis.call('PUBLISH', chan(hinst), 'J|' .. room .. '|' .. v .. '|' .. id .. '|' .. role .. '|' .. inst)
    end
  end
end
local repoch = tonumber(redis.call('HGET', R, 'epoch') or '0') or 0
if hlocal == '1' then
  local old = redis.call('HGET', R, 'resume')
  local e = tonumber(epoch)
  if e >= repoch and (hinst ~= inst or e ~= repoch or old ~= resume) then
    if old and old ~= resume then redis.call('DEL', tk(old)) end
    redis.call('HSET', R, 'hinst', inst, 'epoch', epoch, 'resume', resume)
    redis.call('SET', tk(resume), 'r|' .. room, 'PX', ttl)
    redis.call('ZREM', P .. 'grace', room)
    local v = nextver(room)
    if hinst ~= inst or e ~= repoch then
      local msg = 'HJ|' .. room .. '|' .. v .. '|' .. inst .. '|' .. epoch .. '|' .. resume
      for _, i in ipairs(peer_insts(room)) do redis.call('PUBLISH', chan(i), msg) end
    end
  end
elseif hinst == inst then
  set_host_absent(room)
end
touch(room, ttl)
enlist(inst, room, ttl)
return snapshot('ok', room, true)
"#;

/// Refreshes the expiry of rooms an instance takes part in. ARGV: prefix,
/// instance, key ttl ms, rooms...
pub const TOUCH: &str = r#"
local inst, ttl = ARGV[2], ARGV[3]
for n = 4, #ARGV do
  if redis.call('EXISTS', rk(ARGV[n])) == 1 then
    touch(ARGV[n], ttl)
    enlist(inst, ARGV[n], ttl)
  end
end
redis.call('PEXPIRE', irk(inst), ttl)
return 1
"#;

/// A script's full source: the prelude and its body.
pub fn source(body: &str) -> String {
    format!("{PRELUDE}\n{body}")
}
