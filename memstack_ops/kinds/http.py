"""Readiness over HTTP on 127.0.0.1 inside the container, with whatever client the image has
(minio, qdrant, milvus)."""

from __future__ import annotations

from .spec import Ready

# get PORT PATH: GET http://127.0.0.1:PORT/PATH, 0 on a 2xx answer; 127 when the image has no client.
GET = r"""get() {
  if command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$1$2"
  elif command -v wget >/dev/null 2>&1; then wget -q -T 5 -O /dev/null "http://127.0.0.1:$1$2"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "http://127.0.0.1:$1$2"
  elif command -v bash >/dev/null 2>&1; then
    bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3
      IFS= read -r -t 5 line <&3; case "$line" in "HTTP/"*" 2"[0-9][0-9]*) exit 0 ;; esac
      echo "${line:-no answer}" >&2; exit 1' get "$1" "$2"
  else echo "no HTTP client (curl, wget, python3 or bash) in the container" >&2; return 127; fi
}
"""


def get_ready(port: int, path: str, then: str = "") -> Ready:
    """Ready when ``GET http://127.0.0.1:PORT/PATH`` answers 2xx (``then``: shell text run after
    the request, with its exit code in $rc, e.g. a fallback for images without an HTTP client)."""
    body = f'get {port} {path}' + (f'; rc=$?\n{then}' if then else "")
    return Ready(("sh", "-c", GET + body, "sh"))
