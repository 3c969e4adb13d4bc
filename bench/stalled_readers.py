#!/usr/bin/env python3
"""Server memory with readers that stall while catching up on large events.

    bench/stalled_readers.py [--herald target/release/herald] [--events 1100]
                             [--readers 8] [--bytes 262144] [--address-space-gib 0]

Starts `herald` on a SQLite data dir in a temporary folder (loopback, a port
of its own), publishes EVENTS events of BYTES bytes of line breaks (each
encodes to about seven times its size: `data: ` and a line break per line)
alternately to two topics, then opens READERS streams of both topics with an
unknown Last-Event-ID (so each catches up on all of history) that never read.
Prints the server's resident memory before, its peak over the next 10 s, and
the growth per reader. With --address-space-gib N the server runs under
`prlimit --as` (a server that would take more aborts instead of taking the
machine down). Every wait is bounded; the server is stopped at the end.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SECRET = "stalled-readers-benchmark-secret-0123456789"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token() -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": "bench", "exp": int(time.time()) + 3600, "herald": {"publish": ["*"], "subscribe": ["*"]}}
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def request(address, head: bytes, body: bytes = b"", timeout=30) -> bytes:
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--herald", default="target/release/herald")
    parser.add_argument("--events", type=int, default=1100)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--bytes", type=int, default=256 << 10)
    parser.add_argument("--address-space-gib", type=int, default=0)
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="herald-stalled-")
    command = [args.herald, "serve", "--listen", "127.0.0.1:0", "--data-dir", folder, "--jwt-secret", SECRET]
    if args.address_space_gib:
        command = ["prlimit", f"--as={args.address_space_gib << 30}", "--"] + command
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "NO_COLOR": "1"})
    try:
        address = None
        deadline = time.time() + 30
        while address is None and time.time() < deadline:
            line = server.stdout.readline()
            found = re.search(r"listening on http://([0-9.]+):(\d+)", line)
            if found:
                address = (found.group(1), int(found.group(2)))
        if address is None:
            print("herald did not start", file=sys.stderr)
            return 1
        auth = f"Authorization: Bearer {token()}\r\n"
        data = b"\n" * args.bytes
        started = time.time()
        for n in range(args.events):
            topic = ("big.a", "big.b")[n % 2]
            head = (f"POST /topics/{topic}/events HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: text/plain\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
            answer = request(address, head, data)
            if not answer.startswith(b"HTTP/1.1 201"):
                print(f"publish {n} failed: {answer[:200]!r}", file=sys.stderr)
                return 1
        print(f"published {args.events} events of {args.bytes} bytes in {time.time() - started:.1f} s")
        time.sleep(1)
        pid = server.pid
        if args.address_space_gib:
            children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
            pid = int(children[0]) if children else server.pid
        before = rss(pid)
        readers = []
        for _ in range(args.readers):
            s = socket.create_connection(address, timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall((f"GET /events?topic=big.a&topic=big.b HTTP/1.1\r\nHost: x\r\n{auth}"
                       "Last-Event-ID: nowhere\r\n\r\n").encode())
            readers.append(s)
        peak = before
        end = time.time() + 10
        while time.time() < end and server.poll() is None:
            peak = max(peak, rss(pid))
            time.sleep(0.05)
        alive = server.poll() is None
        mib = 1 << 20
        print(f"readers {args.readers}: RSS before {before / mib:.1f} MiB, peak {peak / mib:.1f} MiB, "
              f"growth per reader {(peak - before) / max(args.readers, 1) / mib:.1f} MiB"
              + ("" if alive else f"; the server died (exit {server.returncode}) at the address-space limit"))
        for s in readers:
            s.close()
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
