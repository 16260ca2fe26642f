-- Reserving GCRA + concurrency leases + 429 penalty for one budget, in one round trip.
-- Mirrors airflow_dify/limits/gcra.py (schedule/commit/correct_tokens) and penalty.py (penalise):
-- keep them visibly parallel. Times are seconds from the Redis server clock (TIME), so worker
-- clock skew does not matter; ARGV[2] overrides it only in unit tests.
-- KEYS[1]: hash with the GCRA state; KEYS[2]: zset of slot id -> lease expiry.
-- ARGV: op, now_override, then per op (see below). Every op returns strings (Lua numbers would be
-- truncated to integers on the way back).
local op = ARGV[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local KEEP = 3600  -- an idle budget's keys vanish this long after its last future timestamp

local function num(v) return tonumber(v) or 0 end
local function fmt(x) return string.format('%.6f', x) end

local s = redis.call('HMGET', KEYS[1], 'request_tat', 'token_tat', 'penalty_until', 'penalty_step',
                     'last_throttled')
local request_tat, token_tat = num(s[1]), num(s[2])
local penalty_until, penalty_step, last_throttled = num(s[3]), num(s[4]), num(s[5])

local function save()
  redis.call('HSET', KEYS[1], 'request_tat', fmt(request_tat), 'token_tat', fmt(token_tat),
             'penalty_until', fmt(penalty_until), 'penalty_step', fmt(penalty_step),
             'last_throttled', fmt(last_throttled))
  local horizon = math.max(request_tat, token_tat, penalty_until, now) - now + KEEP
  redis.call('PEXPIRE', KEYS[1], math.ceil(horizon * 1000))
end

if op == 'grant' then
  -- ARGV: 3 request_interval (0: none), 4 token_interval (0: none), 5 token_burst, 6 tokens,
  --       7 max_wait (<0: unbounded), 8 cap (0: none), 9 lease, 10 slot id
  local req_t, tok_t, tok_burst = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local tokens, max_wait = tonumber(ARGV[6]), tonumber(ARGV[7])
  local cap, lease, slot_id = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
  -- concurrency slot first (expired leases are reclaimed)
  if cap > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now))
    if redis.call('ZCARD', KEYS[2]) >= cap then
      local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      return {'busy', fmt(tonumber(first[2]) - now)}
    end
  end
  -- schedule(): earliest start conforming to every budget and the penalty (REQUEST_BURST = 1)
  local start = math.max(now, penalty_until)
  if req_t > 0 then
    start = math.max(start, request_tat + req_t - 1 * req_t)
  end
  if tok_t > 0 then
    local tau = math.max(tokens, tok_burst) * tok_t
    start = math.max(start, token_tat + tokens * tok_t - tau)
  end
  if max_wait >= 0 and start - now > max_wait then
    return {'late', fmt(start - now)}
  end
  -- commit(): move every TAT as if the request arrived at start
  if req_t > 0 then request_tat = math.max(request_tat, start) + req_t end
  if tok_t > 0 then token_tat = math.max(token_tat, start) + tokens * tok_t end
  save()
  if cap > 0 then
    redis.call('ZADD', KEYS[2], fmt(start + lease), slot_id)
    local ttl = math.ceil((start - now + lease + 60) * 1000)
    if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
  end
  return {'ok', fmt(start - now)}

elseif op == 'settle' then
  -- ARGV: 3 slot id ('' : none), 4 token_interval (0: none), 5 token delta
  if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
  local tok_t, delta = tonumber(ARGV[4]), tonumber(ARGV[5])
  if tok_t > 0 and delta ~= 0 then
    -- correct_tokens(): a refund moves the TAT back, never below now
    if delta > 0 then
      token_tat = math.max(token_tat, now) + delta * tok_t
    else
      token_tat = math.max(token_tat + delta * tok_t, now)
    end
    save()
  end
  return {'ok', '0'}

elseif op == 'throttle' then
  -- ARGV: 3 first, 4 max, 5 quiet (penalty.py constants)
  local first, max_step, quiet = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  if now < penalty_until then
    last_throttled = now
  else
    if penalty_step <= 0 or now - last_throttled > quiet then
      penalty_step = first
    else
      penalty_step = math.min(penalty_step * 2, max_step)
    end
    penalty_until = now + penalty_step
    last_throttled = now
  end
  save()
  return {'ok', fmt(penalty_until - now)}
end
return redis.error_reply('unknown op ' .. tostring(op))
