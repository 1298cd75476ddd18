# bench/benchlib.py - what bench/run and bench/instructions share: the rock
# trees' Lua paths, a private nginx from one of the bench/*.conf.in
# templates, and the raw libcurl loop's build.
# SPDX-License-Identifier: MIT
import os
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
OUT = os.path.join(ROOT, "build", "bench")
KEY = "tc_test_bench0123456789"


def lua_env(version, trees=None):
    """Environment that makes the rock tree of `version` visible; trees is
    the directory holding the trees (build/ by default)."""
    abi = "5.1" if version == "luajit" else version
    tree = os.path.join(trees or os.path.join(ROOT, "build"), version)
    env = dict(os.environ)
    env["LUA_PATH"] = f"{tree}/share/lua/{abi}/?.lua;{tree}/share/lua/{abi}/?/init.lua;;"
    env["LUA_CPATH"] = f"{tree}/lib/lua/{abi}/?.so;;"
    env.pop("TOPCALLS_API_KEY", None)
    env.pop("TOPCALLS_BASE_URL", None)
    return env


def build_raw():
    """Compile bench/raw_curl.c into build/bench/raw_curl; returns its path."""
    os.makedirs(OUT, exist_ok=True)
    raw_bin = os.path.join(OUT, "raw_curl")
    src = os.path.join(BENCH, "raw_curl.c")
    if not os.path.exists(raw_bin) or os.path.getmtime(raw_bin) < os.path.getmtime(src):
        subprocess.run(["gcc", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o", raw_bin, src, "-lcurl"],
                       check=True, cwd=ROOT)
    return raw_bin


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(100):
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"bench: {what} exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: {what} did not start on port {port}")


class Nginx:
    """A private nginx on a free loopback port, from a bench/ template with
    @PREFIX@ and @PORT@ (nginx.conf.in: the fixed 201; slow.conf.in: the
    same after a 20 ms ngx.sleep)."""

    def __init__(self, template="nginx.conf.in"):
        self.template = template

    def __enter__(self):
        self.prefix = tempfile.mkdtemp(prefix="topcalls-bench-")
        os.makedirs(os.path.join(self.prefix, "tmp"))
        self.port = free_port()
        with open(os.path.join(BENCH, self.template)) as f:
            conf = f.read().replace("@PREFIX@", self.prefix).replace("@PORT@", str(self.port))
        path = os.path.join(self.prefix, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["nginx", "-p", self.prefix, "-c", path, "-e", "stderr"],
                                     stdout=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "nginx")
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(3)   # SIGQUIT: graceful
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)
