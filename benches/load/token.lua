-- wrk script of benches/load/run and benches/load/scale: every request is a client_credentials
-- token request to the path $LOAD_PATH, by default for resource urn:invoices, client "client"
-- with secret "secret" (client_secret_basic); $LOAD_BODY and $LOAD_BASIC (the base64 of
-- `id:secret`) change them. Prints one `LOAD key=value ...` line with what the scripts read.

wrk.method = "POST"
wrk.path = os.getenv("LOAD_PATH") or "/connect/token"
wrk.body = os.getenv("LOAD_BODY") or "grant_type=client_credentials&scope=read&resource=urn%3Ainvoices"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. (os.getenv("LOAD_BASIC") or "Y2xpZW50OnNlY3JldA==")

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "LOAD requests=%d duration_us=%d socket_errors=%d bad_status=%d p50_us=%d p99_us=%d wraps=0\n",
    summary.requests, summary.duration,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status,
    latency:percentile(50), latency:percentile(99)))
end
