package sessions

// The Redis store's scripts. Each touches only the keys of one session (KEYS[1] the meta hash,
// KEYS[2] the history tail, KEYS[3] the sealed history blocks, all tagged {id}), so each is
// atomic and runs on Redis Cluster.
//
// History: new entries go to the tail list; commits move them, HistoryBlock at a time, into
// flate-compressed blocks (about 8x smaller; see Redis.Commit). The blocks precede the tail;
// whole blocks are dropped from the front once the rest still holds the history limit.
// Every script takes ARGV[1] = event channel, ARGV[2] = now (unix ms, from the store's Clock),
// ARGV[3] = session id, and answers {code, state before, state after, meta as HGETALL, ...}:
// the whole hash for a read of the history, else the fields without result tags (see meta).
// Events are published inside the script, so one goes out exactly when a change commits.
//
// Meta fields: a agent, p profile, l labels, sc scope, rm removed (JSON arrays), st state,
// why reason, c created, e expires, la last activity (unix ms), i idle timeout (ms), b budget,
// n calls, d denied, r risk, hl history limit, hb entries in blocks, v version, th token hash,
// ds detector state, and t:<seq> result tags of call seq (JSON array).

const luaPrelude = `
local m, h, blk = KEYS[1], KEYS[2], KEYS[3]
local ch, now, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local function publish(kind, reason)
  redis.call('PUBLISH', ch, cjson.encode({id = id, agent = redis.call('HGET', m, 'a'), kind = kind, reason = reason,
    v = tonumber(redis.call('HGET', m, 'v'))}))
end

-- meta answers the session's fields without the result tags (t:<seq>), which only a read of
-- the history needs: '#' then the values of the fields of metaFields (redis.go) in that order,
-- false for a missing one, up to v, or up to ds when ds, or up to th when th, as one MessagePack
-- array. One string instead of a value per field spares the client most of the work of
-- decoding the answer, and cmsgpack packs it in C, faster than Redis answers the values apart.
local function meta(th, ds)
  if th then
    return {'#', cmsgpack.pack(redis.call('HMGET', m, 'a', 'p', 'l', 'sc', 'rm', 'st', 'why', 'c', 'e', 'la', 'i', 'b', 'n', 'd', 'r', 'hl', 'v', 'ds', 'th'))}
  elseif ds then
    return {'#', cmsgpack.pack(redis.call('HMGET', m, 'a', 'p', 'l', 'sc', 'rm', 'st', 'why', 'c', 'e', 'la', 'i', 'b', 'n', 'd', 'r', 'hl', 'v', 'ds'))}
  end
  return {'#', cmsgpack.pack(redis.call('HMGET', m, 'a', 'p', 'l', 'sc', 'rm', 'st', 'why', 'c', 'e', 'la', 'i', 'b', 'n', 'd', 'r', 'hl', 'v'))}
end

-- refresh turns an active or frozen session whose expiry or idle timeout passed into an
-- expired one; idle time counts only while active. f holds the fields st, e, i and la.
local function refresh(f)
  local st = f[1]
  if st ~= 'active' and st ~= 'frozen' then return end
  local reason
  if now >= tonumber(f[2]) then
    reason = 'lifetime ended'
  elseif st == 'active' and tonumber(f[3]) > 0 and now - tonumber(f[4]) >= tonumber(f[3]) then
    reason = 'idle timeout'
  end
  if reason then
    redis.call('HSET', m, 'st', 'expired', 'why', reason)
    redis.call('HINCRBY', m, 'v', 1)
    publish('expired', reason)
  end
end

-- merge adds the names of the JSON array add to the JSON array in field; true if it grew.
local function merge(field, add)
  local cur = cjson.decode(redis.call('HGET', m, field) or '[]')
  if type(cur) ~= 'table' then cur = {} end -- Create writes a session without labels as null
  local seen, grew = {}, false
  for _, x in ipairs(cur) do seen[x] = true end
  for _, x in ipairs(cjson.decode(add)) do
    if not seen[x] then
      seen[x] = true
      cur[#cur + 1] = x
      grew = true
    end
  end
  if grew then redis.call('HSET', m, field, cjson.encode(cur)) end
  return grew
end

-- A meta hash always has st (a placeholder being written too, see claimScript).
local pre = redis.call('HMGET', m, 'st', 'e', 'i', 'la')
if not pre[1] then return {'nf'} end
local before = pre[1]
refresh(pre)
`

// readScript: ARGV[4] = "1" to include the history; ARGV[5] = the seq of the last history entry
// the caller already holds (-1: none), ARGV[6] = the creation time (ms) of the session it holds
// them for, ARGV[7] = the history block size. Answers {ok, before, after, meta, tail, blocks, 0,
// delta}: with delta 0, tail and blocks are the whole history; with delta 1, the entries after
// ARGV[5] are the last ones of the blocks followed by the tail (none when nothing was added).
// Without the history, meta has no result tags.
var readScript = newScript(luaPrelude + `
local hist, blocks, delta = {}, {}, 0
if ARGV[4] == '1' then
  local known = tonumber(ARGV[5])
  local f = redis.call('HMGET', m, 'n', 'd', 'c', 'hl')
  local total = tonumber(f[1] or '0') + tonumber(f[2] or '0')
  local want = total - known
  if known >= 0 and tonumber(f[3]) == tonumber(ARGV[6]) and want >= 0 and want < tonumber(f[4] or '0') then
    delta = 1
    if want > 0 then
      local tl = redis.call('LLEN', h)
      if want <= tl then
        hist = redis.call('LRANGE', h, tl - want, -1)
      else
        hist = redis.call('LRANGE', h, 0, -1)
        blocks = redis.call('LRANGE', blk, -math.ceil((want - tl) / tonumber(ARGV[7])), -1)
      end
    end
  else
    hist = redis.call('LRANGE', h, 0, -1)
    blocks = redis.call('LRANGE', blk, 0, -1)
  end
  return {'ok', before, redis.call('HGET', m, 'st'), redis.call('HGETALL', m), hist, blocks, 0, delta}
end
return {'ok', before, redis.call('HGET', m, 'st'), meta(true, true)}
`)

// commitScript: ARGV[4] version, [5] history entry, [6] "1" if denied, [7] risk or "",
// [8] removals (JSON) or "", [9] labels to add (JSON) or "", [10] new expiry (ms) or "",
// [11] "revoke", "freeze" or "", [12] reason, [13] grace (ms), [14] call time (unix ms),
// [15] history block size, [16] "1" to replace the detector state with [17], [18] the
// session's creation time (ms) the version belongs to, or "" (the version is checked alone),
// [19] and [20] a block to seal: the seq of its first entry and the first tail entries
// compressed, or "" and "" (see Redis.Commit).
// The entry lacks its first item, the call time relative to creation, which is prepended here.
// Answers {ok|state|conflict|budget, before, after, meta}, meta without result tags (the caller
// applies the commit to the history it holds) and, after a commit, without the detector state
// when [17] set it; after a commit also {..., seal, {}, tail length, 0, first}: once the tail
// holds a block's worth of entries, seal holds them, first being the seq of the first.
var commitScript = newScript(luaPrelude + `
local f = redis.call('HMGET', m, 'st', 'v', 'c', 'b', 'n', 'd', 'hl', 'e', 'hb')
local st = f[1]
if st ~= 'active' then return {'state', before, st, meta(false, false)} end
if f[2] ~= ARGV[4] or (ARGV[18] ~= '' and f[3] ~= ARGV[18]) then
  return {'conflict', before, st, meta(false, false)}
end
local created, budget, calls, denied = tonumber(f[3]), tonumber(f[4]), tonumber(f[5]), tonumber(f[6])
local hl, expires, hb = tonumber(f[7]), tonumber(f[8]), tonumber(f[9] or '0')
if ARGV[6] ~= '1' and budget > 0 and calls >= budget then
  return {'budget', before, st, meta(false, false)}
end
local block = tonumber(ARGV[15])
local tl = redis.call('LLEN', h)
if ARGV[19] ~= '' and calls + denied - tl + 1 == tonumber(ARGV[19]) and tl >= block then
  -- Seal the block the caller compressed: the tail still starts with its first entry (else
  -- another replica sealed first, or the tail was trimmed).
  redis.call('LTRIM', h, block, -1)
  redis.call('RPUSH', blk, ARGV[20])
  hb = hb + block
end
tl = redis.call('RPUSH', h, '[' .. string.format('%d', tonumber(ARGV[14]) - created) .. ARGV[5])
-- Drop whole blocks from the front while the rest still holds the history limit, and cap the
-- tail itself at the limit (then no block is left).
while hb > 0 and hb - block + tl >= hl do
  redis.call('LPOP', blk)
  hb = hb - block
end
if tl > hl then
  redis.call('LTRIM', h, -hl, -1)
  tl = hl
end
if ARGV[6] == '1' then denied = denied + 1 else calls = calls + 1 end
local set = {'la', now, 'hb', hb, 'n', calls, 'd', denied, 'v', tonumber(f[2]) + 1}
if ARGV[16] == '1' then
  set[#set + 1], set[#set + 2] = 'ds', ARGV[17]
end
if ARGV[7] ~= '' then
  set[#set + 1], set[#set + 2] = 'r', ARGV[7]
end
if ARGV[10] ~= '' and tonumber(ARGV[10]) < expires then
  expires = tonumber(ARGV[10])
  set[#set + 1], set[#set + 2] = 'e', ARGV[10]
  redis.call('PEXPIRE', m, math.max(expires + tonumber(ARGV[13]) - now, 1))
end
redis.call('HSET', m, unpack(set))
if ARGV[9] ~= '' then merge('l', ARGV[9]) end
-- RPUSH may just have created the list: give it the session's key lifetime. TTLs are relative
-- to the store's clock (ARGV[2]), not to the Redis server's.
local ttl = math.max(expires + tonumber(ARGV[13]) - now, 1)
redis.call('PEXPIRE', h, ttl)
redis.call('PEXPIRE', blk, ttl)
if ARGV[8] ~= '' and merge('rm', ARGV[8]) then publish('narrowed', '') end
if ARGV[11] == 'revoke' then
  st = 'revoked'
  redis.call('HSET', m, 'st', st, 'why', ARGV[12])
  publish('revoked', ARGV[12])
elseif ARGV[11] == 'freeze' then
  st = 'frozen'
  redis.call('HSET', m, 'st', st, 'why', ARGV[12])
  publish('frozen', ARGV[12])
end
local seal, first = {}, 0
if tl >= block then
  seal = redis.call('LRANGE', h, 0, block - 1)
  first = calls + denied - tl + 1
end
return {'ok', before, st, meta(false, ARGV[16] ~= '1'), seal, {}, tl, 0, first}
`)

// mutateScript: ARGV[4] = touch|narrow|freeze|resume|revoke, ARGV[5] = reason, or the
// removals (JSON) for narrow. Answers {ok|state, before, after, meta}.
var mutateScript = newScript(luaPrelude + `
local op, arg = ARGV[4], ARGV[5]
local st = redis.call('HGET', m, 'st')
local function answer(code) return {code, before, redis.call('HGET', m, 'st'), meta(false, true)} end
if op == 'touch' then
  if st ~= 'active' then return answer('state') end
  -- Activity alone does not change what policy decides: no new version.
  redis.call('HSET', m, 'la', now)
elseif op == 'narrow' then
  if st ~= 'active' and st ~= 'frozen' then return answer('state') end
  if merge('rm', arg) then
    redis.call('HINCRBY', m, 'v', 1)
    publish('narrowed', '')
  end
elseif op == 'freeze' then
  if st == 'active' then
    redis.call('HSET', m, 'st', 'frozen', 'why', arg)
    redis.call('HINCRBY', m, 'v', 1)
    publish('frozen', arg)
  elseif st ~= 'frozen' then
    return answer('state')
  end
elseif op == 'resume' then
  if st ~= 'frozen' then return answer('state') end
  -- Time spent frozen does not count as idle time.
  redis.call('HSET', m, 'st', 'active', 'why', '', 'la', now)
  redis.call('HINCRBY', m, 'v', 1)
  publish('resumed', '')
elseif op == 'revoke' then
  if st == 'active' or st == 'frozen' then
    redis.call('HSET', m, 'st', 'revoked', 'why', arg)
    redis.call('HINCRBY', m, 'v', 1)
    publish('revoked', arg)
  end
else
  return redis.error_reply('ERR unknown session operation ' .. op)
end
return answer('ok')
`)

// claimScript takes a session id for a chosen token. KEYS: meta, history, blocks; ARGV: now
// (ms). It returns 0 when a session that has not expired holds the id (a placeholder being
// written counts), else clears the keys, leaves a placeholder and returns 1.
var claimScript = newScript(`
local st = redis.call('HGET', KEYS[1], 'st')
if st then
  local e = tonumber(redis.call('HGET', KEYS[1], 'e'))
  if st ~= 'expired' and (e == nil or e > tonumber(ARGV[1])) then
    return 0
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'st', 'creating')
redis.call('PEXPIRE', KEYS[1], 10000)
return 1
`)

// annotateScript: ARGV[4] seq, [5] result tags (JSON) or "", [6] "1" to replace the detector
// state with [7], [8] the version the session must be at, or "0" for any. Tags live in the meta hash as t:<seq>; the tags of the call that just left
// the history are dropped (older strays go with the key). Answers {ok|conflict, before, after,
// version}: the caller needs no more, and the meta hash holds up to one tag field per call.
var annotateScript = newScript(luaPrelude + `
if ARGV[8] ~= '0' and redis.call('HGET', m, 'v') ~= ARGV[8] then
  return {'conflict', before, redis.call('HGET', m, 'st'), redis.call('HGET', m, 'v')}
end
if ARGV[5] ~= '' then
  merge('t:' .. ARGV[4], ARGV[5])
  local old = tonumber(ARGV[4]) - tonumber(redis.call('HGET', m, 'hl'))
  if old > 0 then redis.call('HDEL', m, 't:' .. old) end
end
if ARGV[6] == '1' then redis.call('HSET', m, 'ds', ARGV[7]) end
local v = redis.call('HINCRBY', m, 'v', 1)
return {'ok', before, redis.call('HGET', m, 'st'), tostring(v)}
`)
