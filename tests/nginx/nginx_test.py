"""Debian's nginx in front of `switchboard serve`, with the configuration from docs/deploy.md.

    scripts/nginx-test.sh        (finds nginx, Python websockets and the server binary)

Starts `$SWITCHBOARD_BIN serve --listen 127.0.0.1:0`, makes a self-signed certificate for
chat.test, takes the nginx block of docs/deploy.md (the one after the nginx-test comment),
points it at the server, a free 127.0.0.1 port and the certificate, runs nginx as the current
user with everything in a temporary directory, and chats through it with Python `websockets`
clients. Prints one `ok - ...` / `not ok - ...` line per check and ends with
`nginx: N passed, M failed`. Stops what it started.

Environment: SWITCHBOARD_BIN (server binary), NGINX (nginx binary), OPENSSL, ARTIFACTS_DIR
(where the configuration and logs are kept after the run).
"""

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
BIN = os.environ.get("SWITCHBOARD_BIN") or str(ROOT / "target" / "release" / "switchboard")
NGINX = os.environ.get("NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"
OPENSSL = os.environ.get("OPENSSL") or shutil.which("openssl") or "/usr/bin/openssl"
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR") or ROOT / "target" / "nginx-artifacts")
NAME = "chat.test"  # the site's name in the certificate, Host and Origin
WAIT = 10.0

passed = 0
failed = 0


def report(ok, name, why=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok - {name}", flush=True)
    else:
        failed += 1
        print(f"not ok - {name}: {why}", flush=True)


def why(e):
    """A short reason for a failed check."""
    if isinstance(e, websockets.exceptions.InvalidStatus):
        body = bytes(e.response.body or b"").decode("utf-8", "replace").strip()
        return f"HTTP {e.response.status_code}: {body[:160]}"
    return repr(e)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def start_server(log_path):
    log = open(log_path, "wb")
    env = {**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"}
    proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0"], stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = Path(log_path).read_text(errors="replace")
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", text))
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not log 'listening on' (see {log_path})")


def site_config(up_port, port, cert, key):
    """The tested block of docs/deploy.md, with this run's addresses and certificate."""
    doc = DOC.read_text()
    m = re.search(r"<!-- scripts/nginx-test\.sh runs the block below.*?-->\s*```nginx\n(.*?)```", doc, re.S)
    if not m:
        raise RuntimeError("docs/deploy.md has no nginx block after the nginx-test comment")
    conf = m.group(1)
    subs = [
        (r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{up_port};"),
        (r"listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        (r"listen \[::\]:443 ssl;\n", ""),
        (r"server_name chat\.example\.com;", f"server_name {NAME};"),
        (r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};"),
        (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};"),
    ]
    for pattern, repl in subs:
        conf, n = re.subn(pattern, repl, conf)
        if n != 1:
            raise RuntimeError(f"docs/deploy.md's nginx block: expected one match of {pattern!r}, found {n}")
    return conf


def nginx_config(tmp, site):
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers run as the current user
    temps = "\n".join(
        f"    {k}_temp_path {tmp}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
{temps}
{site}
}}
"""


def tls_context(cert):
    ctx = ssl.create_default_context(cafile=str(cert))
    return ctx


async def chat_checks(port, ctx, server):
    base = f"wss://{NAME}:{port}"
    origin = f"https://{NAME}:{port}"

    def client(path, **kw):
        # Connect to 127.0.0.1; the URI's name goes into SNI, Host and the certificate check.
        return connect(base + path, host="127.0.0.1", port=port, ssl=ctx, proxy=None,
                       open_timeout=WAIT, **kw)

    async def next_of(ws, kind):
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if m.get("type") == kind:
                return m

    # 1. A browser's handshake (Origin = the site) through the proxy.
    try:
        ada = await client("/chat?room=proxied&name=Ada", origin=origin, subprotocols=["switchboard.chat.v1"])
        w = await next_of(ada, "welcome")
        ok = w["you"]["name"] == "Ada" and ada.subprotocol == "switchboard.chat.v1"
        report(ok, "a browser-like client (Origin: the site) opens /chat through nginx", f"welcome {w}")
    except Exception as e:  # noqa: BLE001
        report(False, "a browser-like client (Origin: the site) opens /chat through nginx", why(e))
        return
    # 2. A second client, a message both ways, plain text too.
    try:
        bob = await client("/chat?room=proxied&name=Bob")
        await next_of(bob, "welcome")
        await ada.send(json.dumps({"type": "message", "text": "hello through nginx"}))
        m = await next_of(bob, "message")
        await bob.send("plain text back")
        m2 = await next_of(ada, "message")
        while m2["text"] == "hello through nginx":
            m2 = await next_of(ada, "message")
        ok = m["text"] == "hello through nginx" and m["from"]["name"] == "Ada" and m2["text"] == "plain text back"
        report(ok, "two clients chat through nginx", f"{m} / {m2}")
    except Exception as e:  # noqa: BLE001
        report(False, "two clients chat through nginx", why(e))
        return
    # 3. A large message (60 KiB, under the server's 64 KiB limit) arrives whole.
    try:
        big = "x" * 60_000
        await ada.send(json.dumps({"type": "message", "text": big[:4000]}))
        await next_of(bob, "message")
        async with client("/echo") as e:
            await e.send(big)
            back = await asyncio.wait_for(e.recv(), WAIT)
        report(back == big, "a 60,000-byte message passes nginx both ways", f"got {len(back)} bytes")
    except Exception as e:  # noqa: BLE001
        report(False, "a 60,000-byte message passes nginx both ways", why(e))
    # 4. Another site's page is still refused (the proxy does not open the Origin check).
    try:
        async with client("/chat", origin="https://evil.example"):
            report(False, "a page on another origin gets 403 through nginx", "the handshake succeeded")
    except websockets.exceptions.InvalidStatus as e:
        code = e.response.status_code
        report(code == 403, "a page on another origin gets 403 through nginx", f"status {code}")
    except Exception as e:  # noqa: BLE001
        report(False, "a page on another origin gets 403 through nginx", why(e))
    # 5. The server shuts down: both clients get 1001 through nginx, and no false "left".
    try:
        server.send_signal(signal.SIGTERM)
        seen = []
        for ws in (ada, bob):
            try:
                while True:
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), 15))["type"])
            except websockets.exceptions.ConnectionClosed:
                pass
        codes = [ws.close_code for ws in (ada, bob)]
        ok = codes == [1001, 1001] and "leave" not in seen
        report(ok, "SIGTERM to the server: 1001 reaches both clients through nginx", f"codes {codes}, messages {seen}")
    except Exception as e:  # noqa: BLE001
        report(False, "SIGTERM to the server: 1001 reaches both clients through nginx", why(e))


def http_get(port, ctx, path):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=WAIT)
    try:
        # SNI and the certificate check use the connection's host: the test's context checks
        # the chain against its own certificate, and Host names the site.
        c.request("GET", path, headers={"Host": f"{NAME}:{port}"})
        r = c.getresponse()
        return r.status, r.getheader("content-type") or "", r.read().decode("utf-8", "replace")
    finally:
        c.close()


def main():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-nginx-"))
    server = nginx = None
    try:
        for tool in (BIN, NGINX, OPENSSL):
            if not os.access(tool, os.X_OK):
                raise RuntimeError(f"{tool} not found or not executable")
        server, up_port = start_server(tmp / "server.log")
        report(True, f"server listens on 127.0.0.1:{up_port}")

        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(
            [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
             "-out", str(cert), "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}"],
            check=True, capture_output=True)
        port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_config(tmp, site_config(up_port, port, cert, key)))
        t = subprocess.run([NGINX, "-t", "-p", str(tmp), "-c", str(conf)], capture_output=True, text=True)
        report(t.returncode == 0, "nginx -t accepts docs/deploy.md's configuration", t.stderr.strip().replace("\n", " | "))
        if t.returncode != 0:
            return
        nginx = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=open(tmp / "nginx.stderr", "wb"))
        if not wait_port(port):
            report(False, f"nginx listens on 127.0.0.1:{port}", (tmp / "error.log").read_text(errors="replace")[-400:])
            return
        ctx = tls_context(cert)
        ctx.check_hostname = False  # http.client checks against 127.0.0.1; the chain is still verified
        status, ctype, body = http_get(port, ctx, "/")
        report(status == 200 and ctype.startswith("text/html") and 'id="messages"' in body,
               "GET / (the chat page) through nginx over TLS", f"{status} {ctype}")
        status, _, body = http_get(port, ctx, "/healthz")
        report(status == 200 and body.strip() == "ok", "GET /healthz through nginx", f"{status} {body[:80]!r}")
        asyncio.run(chat_checks(port, tls_context(cert), server))
    except Exception as e:  # noqa: BLE001
        report(False, "the nginx test ran to its end", why(e))
    finally:
        for p in (nginx, server):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for f in ("nginx.conf", "error.log", "access.log", "server.log", "nginx.stderr"):
            if (tmp / f).exists():
                shutil.copy(tmp / f, ARTIFACTS / f)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"# configuration and logs in {ARTIFACTS}")
        print(f"nginx: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
