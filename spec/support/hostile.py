#!/usr/bin/env python3
"""A hostile HTTP/1.1 server on 127.0.0.1 for the specs: it answers what a
misbehaving or malicious API, proxy or gateway could answer.

    hostile.py DIR WATCH_PID [HOST]

binds HOST (default 127.0.0.1; any 127/8 address is loopback on Linux) on
a free port, writes DIR/port and DIR/pid, and serves
until SIGTERM, or until WATCH_PID (the spec runner) is gone, or for at most
15 minutes. Driven by spec/support/hostile.lua through its control routes:

  POST /_hostile/script  {"rules": [RULE, ...]}  replace the rules
  POST /_hostile/reset                           no rules, empty log
  GET  /_hostile/log                             every API request so far

Every other request is matched against the rules in order; the first rule
whose `method` and `path` match (a Lua-free prefix match on the path
without its query; either may be absent) and whose `times` is not used up
answers it. RULE fields:

  status, reason      status line (reason "" sends "HTTP/1.1 422 ")
  headers             [[name, value], ...] sent as given, in order
  body                text (UTF-8); or body_hex for raw bytes
  delay               seconds to wait before answering
  action              "respond" (default); "close": read the request, then
                      close without a byte ("lost after processing");
                      "reset": the same with an RST
  times               how many requests it answers (default: all)

Templates in header values and the body, filled from the request:
  {{auth}} the Authorization header; {{key}} the bearer token alone;
  {{header:NAME}}; {{body}} the raw request body; {{json:a.b}} a string
  field of the request's JSON body, JSON-escaped without quotes;
  {{n}} how many requests this rule has answered, this one included;
  {{query:NAME}} a query parameter.

Unmatched requests get 404 problem+json. Standard library only.
"""
import json
import os
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
STATE = {"rules": [], "used": [], "log": []}
MAX_LIFETIME = 900


def read_request(f):
    line = f.readline(65536)
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) < 3:
        return None
    method, target = parts[0], parts[1]
    headers = []
    while True:
        h = f.readline(65536)
        if not h or h in (b"\r\n", b"\n"):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    hmap = {k.lower(): v for k, v in headers}
    body = b""
    if "content-length" in hmap:
        body = f.read(int(hmap["content-length"]))
    elif hmap.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int(f.readline().strip().split(b";")[0], 16)
            if size == 0:
                f.readline()
                break
            body += f.read(size)
            f.readline()
    return method, target, headers, hmap, body


def field(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return ""
        obj = obj[part]
    return obj if isinstance(obj, str) else ""


def fill(text, hmap, body, n, query):
    def sub(m):
        name = m.group(1)
        if name == "auth":
            return hmap.get("authorization", "")
        if name == "key":
            return re.sub(r"^Bearer\s+", "", hmap.get("authorization", ""))
        if name == "body":
            return body.decode("utf-8", "replace")
        if name == "n":
            return str(n)
        kind, _, arg = name.partition(":")
        if kind == "header":
            return hmap.get(arg.lower(), "")
        if kind == "query":
            return (query.get(arg) or [""])[0]
        if kind == "json":
            try:
                value = field(json.loads(body or b"null"), arg)
            except ValueError:
                value = ""
            return json.dumps(value)[1:-1]
        return m.group(0)
    return re.sub(r"\{\{([^}]+)\}\}", sub, text)


def pick(method, path):
    with LOCK:
        for i, rule in enumerate(STATE["rules"]):
            if rule.get("method") and rule["method"] != method:
                continue
            if rule.get("path") and not path.startswith(rule["path"]):
                continue
            times = rule.get("times")
            if times is not None and STATE["used"][i] >= times:
                continue
            STATE["used"][i] += 1
            return rule, STATE["used"][i]
    return None, 0


def answer(status, reason, headers, body):
    head = "HTTP/1.1 %d %s\r\n" % (status, reason)
    names = [h[0].lower() for h in headers]
    if "content-length" not in names:
        headers = list(headers) + [["Content-Length", str(len(body))]]
    for name, value in headers:
        head += "%s: %s\r\n" % (name, value)
    return head.encode("utf-8") + b"\r\n" + body


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            req = read_request(self.rfile)
            if req is None:
                return
            method, target, headers, hmap, body = req
            url = urlsplit(target)
            if url.path.startswith("/_hostile/"):
                self.wfile.write(self.control(method, url.path, body))
                continue
            with LOCK:
                STATE["log"].append({"method": method, "path": url.path, "query": url.query,
                                     "headers": headers, "body": body.decode("utf-8", "replace")})
            rule, n = pick(method, url.path)
            if rule is None:
                problem = json.dumps({"status": 404, "title": "Not Found",
                                      "detail": "hostile: no rule for %s %s" % (method, url.path)})
                self.wfile.write(answer(404, "Not Found",
                                        [["Content-Type", "application/problem+json"]],
                                        problem.encode()))
                continue
            if rule.get("delay"):
                time.sleep(rule["delay"])
            action = rule.get("action", "respond")
            if action in ("close", "reset"):
                if action == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                return
            query = parse_qs(url.query)
            hs = [[k, fill(v, hmap, body, n, query)] for k, v in rule.get("headers", [])]
            if "body_hex" in rule:
                out = bytes.fromhex(rule["body_hex"])
            else:
                out = fill(rule.get("body", ""), hmap, body, n, query).encode("utf-8")
            self.wfile.write(answer(rule.get("status", 200), rule.get("reason", "OK"), hs, out))
            self.wfile.flush()

    def control(self, method, path, body):
        with LOCK:
            if method == "POST" and path == "/_hostile/script":
                STATE["rules"] = json.loads(body)["rules"]
                STATE["used"] = [0] * len(STATE["rules"])
                out = {"ok": True}
            elif method == "POST" and path == "/_hostile/reset":
                STATE.update(rules=[], used=[], log=[])
                out = {"ok": True}
            elif method == "GET" and path == "/_hostile/log":
                out = {"log": STATE["log"]}
            else:
                return answer(404, "Not Found", [], b"")
        return answer(200, "OK", [["Content-Type", "application/json"]], json.dumps(out).encode())


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    directory, watch = sys.argv[1], int(sys.argv[2])
    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    if not host.startswith("127."):
        sys.exit("hostile.py: only loopback addresses (127/8)")
    server = Server((host, 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name, value in (("pid", os.getpid()), ("port", server.server_address[1])):
        with open(os.path.join(directory, name + ".tmp"), "w") as f:
            f.write(str(value))
        os.rename(os.path.join(directory, name + ".tmp"), os.path.join(directory, name))
    started = time.monotonic()
    while time.monotonic() - started < MAX_LIFETIME:
        time.sleep(0.5)
        try:
            os.kill(watch, 0)
        except OSError:
            break
    os._exit(0)


if __name__ == "__main__":
    main()
