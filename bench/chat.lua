-- wrk script: POST /v1/chat/completions with a small JSON body (or the body of a file).
--   BENCH_STREAM=1          ask for "stream": true
--   BENCH_HEADERS="k: v|k2: v2"  extra request headers, separated by "|"
--   BENCH_MODEL=name        the "model" field (default bench-model)
--   BENCH_BODY_FILE=path    send this file's bytes as the body instead of the built-in one (sent as is:
--                           BENCH_STREAM and BENCH_MODEL do not change it; bench/run.py --body writes it)
-- At the end it prints one machine-readable line:
--   BENCH_RESULT {"requests":N,"duration_us":N,"p50_us":N,"p99_us":N,...}
local stream = os.getenv("BENCH_STREAM") == "1"
local model = os.getenv("BENCH_MODEL") or "bench-model"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
local extra = os.getenv("BENCH_HEADERS") or ""
for pair in string.gmatch(extra, "[^|]+") do
  local k, v = string.match(pair, "^%s*([^:]+):%s*(.-)%s*$")
  if k then wrk.headers[k] = v end
end

local body_file = os.getenv("BENCH_BODY_FILE") or ""
if body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
else
  wrk.body = '{"model":"' .. model .. '","messages":[{"role":"system","content":"You are a helpful assistant."},'
    .. '{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16,"temperature":0'
    .. (stream and ',"stream":true' or '') .. '}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,'
    .. '"mean_us":%.1f,"max_us":%.1f,"non2xx":%d,"err_connect":%d,"err_read":%d,"err_write":%d,'
    .. '"err_timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
