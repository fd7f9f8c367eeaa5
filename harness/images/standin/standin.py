"""STAND-IN servers for the local test images (not the real software).

Roles (the container's command): neo4j, grafana, api, worker.
- neo4j: HTTP 7474 (discovery JSON), bolt port 7687 with a line-JSON protocol spoken by the
  stand-in cypher-shell; NEO4J_AUTH=neo4j/PASSWORD or none; statements are appended to
  /data/standin/statements.jsonl; `RETURN <expr>` answers like cypher-shell's plain output.
  Start-up takes STANDIN_START_SECONDS (default 3) like a JVM warming up.
- grafana: HTTP 3000 /api/health.   - api: HTTP 8000 /health, /docs.
- worker: touches /tmp/worker.heartbeat every 2 s.
"""
import http.server, json, os, re, signal, socketserver, sys, threading, time

ROLE = sys.argv[1] if len(sys.argv) > 1 else "neo4j"
DELAY = float(os.environ.get("STANDIN_START_SECONDS", "3"))
VERSION = {"neo4j": "5.26.0", "grafana": "11.0.0", "api": "0.0.0", "worker": "0.0.0"}.get(ROLE, "0")


def log(msg):
    print(time.strftime("%Y-%m-%d %H:%M:%S+0000"), "INFO ", msg, flush=True)


def http_server(port, routes):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = routes.get(self.path.split("?")[0])
            if body is None:
                self.send_response(404); self.end_headers(); return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = socketserver.ThreadingTCPServer(("0.0.0.0", port), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def neo4j():
    auth = os.environ.get("NEO4J_AUTH", "neo4j/neo4j")
    user, _, password = auth.partition("/") if auth != "none" else ("", "", "")
    store = "/data/standin"
    os.makedirs(store, exist_ok=True)
    log("Starting... (STAND-IN for Neo4j %s, not the real server)" % VERSION)
    time.sleep(DELAY)
    lock = threading.Lock()

    class Bolt(socketserver.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline()
            if not line:
                return
            req = json.loads(line)
            if auth != "none" and (req.get("user"), req.get("password")) != (user, password):
                out = {"error": "The client is unauthorized due to authentication failure."}
            else:
                stmt = req.get("statement", "").strip()
                with lock, open(os.path.join(store, "statements.jsonl"), "a") as f:
                    f.write(json.dumps({"database": req.get("database"), "statement": stmt}) + "\n")
                m = re.fullmatch(r"(?is)RETURN\s+(.+?)\s*(?:AS\s+(\w+))?;?", stmt)
                out = {"lines": [m.group(2) or m.group(1), m.group(1)]} if m else {"lines": []}
            self.wfile.write(json.dumps(out).encode() + b"\n")

    bolt = socketserver.ThreadingTCPServer(("0.0.0.0", 7687), Bolt)
    bolt.daemon_threads = True
    threading.Thread(target=bolt.serve_forever, daemon=True).start()
    http_server(7474, {"/": {"bolt_direct": "bolt://localhost:7687", "neo4j_version": VERSION,
                             "neo4j_edition": "community", "standin": True}})
    log("Bolt enabled on 0.0.0.0:7687.")
    log("Remote interface available at http://localhost:7474/")
    log("Started.")


def main():
    if ROLE == "neo4j":
        neo4j()
    elif ROLE == "grafana":
        time.sleep(DELAY)
        http_server(3000, {"/api/health": {"commit": "standin", "database": "ok", "version": VERSION}})
        log("HTTP Server Listen (STAND-IN for Grafana) address=[::]:3000")
    elif ROLE == "api":
        time.sleep(DELAY)
        http_server(int(os.environ.get("API_PORT", "8000")),
                    {"/health": {"status": "healthy", "standin": True}, "/docs": {"docs": "standin"}})
        log("Uvicorn running on http://0.0.0.0:8000 (STAND-IN for the MemStack API)")
    elif ROLE == "worker":
        log("worker started (STAND-IN for the MemStack worker)")
        while True:
            open("/tmp/worker.heartbeat", "w").close()
            time.sleep(2)
    else:
        sys.exit("unknown stand-in role %r: use neo4j, grafana, api or worker" % ROLE)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    # PID 1 ignores signals without a handler: exit promptly on `docker stop`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        main()
    except KeyboardInterrupt:
        pass
