-- wrk script for scripts/bench.sh: one file for every operation, chosen by
-- environment variables (wrk passes no options of its own to a script, and
-- one file keeps the counting and reporting identical for every row).
--
--   BENCH_OP       create | read | list | update | delete | token
--   BENCH_COUNT    stop after this many responses (0 or unset: run for -d);
--                  use it with -t1: each thread counts its own, and the
--                  first to reach the count ends the whole run
--   BENCH_TOKEN    admin Bearer token (create, update, delete)
--   BENCH_IDS      file of pizza IDs, one a line (read, update: cycled;
--                  delete: each deleted once, in order)
--   BENCH_IDS_OUT  create: append the ID of every created pizza here
--
-- done() prints one machine-readable line that scripts/bench/report.py reads:
--   RESULT op=... requests=... unexpected=... socket_errors=... rps=... p50_us=... p99_us=...
-- "unexpected" counts responses whose status is not the one the operation
-- must answer (201 create, 204 delete, 200 otherwise), so a 404 from a
-- delete or a 503 under load is never hidden inside a latency figure.

local op = os.getenv("BENCH_OP") or error("BENCH_OP is not set")
local limit = tonumber(os.getenv("BENCH_COUNT") or "0") or 0
local token = os.getenv("BENCH_TOKEN") or ""

local expected_status = ({ create = 201, delete = 204 })[op] or 200

-- Per-thread counters. Globals, because done() reads them with thread:get(),
-- which can copy numbers and strings but not tables reliably.
responses = 0
unexpected = 0
unexpected_statuses = "" -- "status:count,..." for the report
thread_index = 0 -- set by setup() before init() runs

-- wrk's main thread sleeps for the whole -d even after every thread has
-- stopped, so a count-limited run would last -d anyway. SIGINT is wrk's own
-- way to end a run early (it then joins the threads and reports as usual):
-- sent to the main thread (tgkill; thread ID = process ID) it wakes that
-- sleep at once. LuaJIT's FFI reaches the C library; without it the run
-- simply lasts -d.
local function end_run_now() end
do
  local has_ffi, ffi = pcall(require, "ffi")
  if has_ffi then
    ffi.cdef([[
      int getpid(void);
      int kill(int pid, int sig);
      int tgkill(int tgid, int tid, int sig);
    ]])
    local SIGINT = 2
    end_run_now = function()
      local pid = ffi.C.getpid()
      -- tgkill is in glibc from 2.30 on; kill() usually reaches the main thread too.
      if not pcall(function() return ffi.C.tgkill(pid, pid, SIGINT) end) then
        ffi.C.kill(pid, SIGINT)
      end
    end
  end
end

local ids = {}
local next_id = 1
local ids_out = nil
local seen = {}

local function read_ids(path)
  local list = {}
  for line in io.lines(path) do
    local id = tonumber(line)
    if id then list[#list + 1] = id end
  end
  if #list == 0 then error("no pizza IDs in " .. path) end
  return list
end

-- A body like the ones real clients send: a few ingredients, a description.
local function pizza_body(n)
  return string.format(
    '{"name":"Bench Pizza %d","price":19.99,"ingredients":["Tomato Sauce","Mozzarella","Basil"],'
      .. '"description":"Created by scripts/bench.sh"}',
    n
  )
end

local json_headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. token,
}
local bearer_only = { ["Authorization"] = "Bearer " .. token }
local form_headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local token_form = "grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123"

-- Runs in the main Lua state once per thread, before the threads start.
local threads = {}
function setup(thread)
  thread:set("thread_index", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  if op == "read" or op == "update" or op == "delete" then
    ids = read_ids(os.getenv("BENCH_IDS") or error("BENCH_IDS is not set for " .. op))
    -- Threads start at different points of the list so that 32 connections
    -- spread over the IDs instead of walking them in lockstep.
    next_id = 1 + (thread_index * 997) % #ids
    if op == "delete" then
      -- Each ID can be deleted once: never ask for more deletes than IDs.
      next_id = 1
      if limit == 0 or limit > #ids then limit = #ids end
    end
  elseif op == "create" then
    local path = os.getenv("BENCH_IDS_OUT")
    if path then
      ids_out = assert(io.open(path, "a"))
      -- Line-buffered: wrk never closes a thread's Lua state, so buffered
      -- IDs would be lost at exit.
      ids_out:setvbuf("line")
    end
  elseif op ~= "list" and op ~= "token" then
    error("unknown BENCH_OP " .. op)
  end
end

local function take_id()
  local id = ids[next_id]
  next_id = next_id % #ids + 1
  return id
end

local created = 0
function request()
  if op == "read" then
    return wrk.format("GET", "/api/v1/public/pizzas/" .. take_id())
  elseif op == "list" then
    return wrk.format("GET", "/api/v1/public/pizzas?limit=10")
  elseif op == "create" then
    created = created + 1
    return wrk.format("POST", "/api/v1/pizzas", json_headers, pizza_body(thread_index * 1000000 + created))
  elseif op == "update" then
    local id = take_id()
    return wrk.format("PUT", "/api/v1/pizzas/" .. id, json_headers, pizza_body(id))
  elseif op == "delete" then
    return wrk.format("DELETE", "/api/v1/pizzas/" .. take_id(), bearer_only)
  else -- token
    return wrk.format("POST", "/api/v1/oauth/token", form_headers, token_form)
  end
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= expected_status then
    unexpected = unexpected + 1
    seen[status] = (seen[status] or 0) + 1
    local parts = {}
    for s, n in pairs(seen) do parts[#parts + 1] = s .. ":" .. n end
    unexpected_statuses = table.concat(parts, ",")
  elseif ids_out then
    local id = body:match('^{"id":(%d+)')
    if id then
      ids_out:write(id, "\n")
    else
      unexpected = unexpected + 1 -- a 201 without an ID is as wrong as a 500
    end
  end
  if limit > 0 and responses >= limit then
    wrk.thread:stop()
    end_run_now()
  end
end

-- Runs in the main Lua state after every thread has stopped.
function done(summary, latency, requests)
  local total_responses, total_unexpected, by_status = 0, 0, {}
  for _, thread in ipairs(threads) do
    total_responses = total_responses + thread:get("responses")
    total_unexpected = total_unexpected + thread:get("unexpected")
    for status, n in thread:get("unexpected_statuses"):gmatch("(%d+):(%d+)") do
      by_status[status] = (by_status[status] or 0) + tonumber(n)
    end
  end
  local statuses = {}
  for status, n in pairs(by_status) do statuses[#statuses + 1] = status .. ":" .. n end
  table.sort(statuses)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(
    string.format(
      "RESULT op=%s requests=%d responses=%d unexpected=%d unexpected_statuses=%s socket_errors=%d "
        .. "duration_s=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
      op,
      summary.requests,
      total_responses,
      total_unexpected,
      #statuses > 0 and table.concat(statuses, ",") or "-",
      e.connect + e.read + e.write + e.timeout,
      seconds,
      summary.requests / seconds,
      latency:percentile(50),
      latency:percentile(90),
      latency:percentile(99),
      latency.max,
      latency.mean
    )
  )
end
