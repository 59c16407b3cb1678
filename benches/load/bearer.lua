-- wrk script of benches/load/run: every request is `GET $LOAD_PATH` with
-- `Authorization: Bearer <token>`, taking the tokens of the file $LOAD_TOKENS in turn.
-- Thread i of n sends lines i, i+n, i+2n, ... so no two threads send the same token; a thread
-- that reaches the end of its share starts again (counted as a wrap: the cold rows need none).
-- The requests are built once, in init, so that wrk spends as little CPU as it can per request.
-- Prints one `LOAD key=value ...` line with what the run script reads.

local path = os.getenv("LOAD_PATH") or "/invoices/2024/INV-0042"
local file = os.getenv("LOAD_TOKENS")
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  -- Each thread has its own Lua state: the thread count comes from the run script.
  local n = tonumber(os.getenv("LOAD_THREADS") or "2")
  requests = {}
  local line_no = 0
  for token in io.lines(file) do
    if line_no % n == id then
      requests[#requests + 1] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
    end
    line_no = line_no + 1
  end
  if #requests == 0 then
    error("no tokens for thread " .. id .. " in " .. tostring(file))
  end
  next_request = 0
  wraps = 0
end

function request()
  next_request = next_request + 1
  if next_request > #requests then
    next_request = 1
    wraps = wraps + 1
  end
  return requests[next_request]
end

function done(summary, latency, requests)
  local wrapped = 0
  for _, thread in ipairs(threads) do
    wrapped = wrapped + (thread:get("wraps") or 0)
  end
  local errors = summary.errors
  io.write(string.format(
    "LOAD requests=%d duration_us=%d socket_errors=%d bad_status=%d p50_us=%d p99_us=%d wraps=%d\n",
    summary.requests, summary.duration,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status,
    latency:percentile(50), latency:percentile(99), wrapped))
end
