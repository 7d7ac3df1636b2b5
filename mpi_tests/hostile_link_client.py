#!/usr/bin/python3
"""Hostile TCP clients against an mpixfer link listener (test_link_auth.sh).

Usage: hostile_link_client.py CONNECTION_INFO

Bounded in count and time. Sends, one kind after another:
  - 500 connections of random bytes (0 to 64 KiB), closed at once;
  - 100 idle connections held open, which the listener must close (handshake timeout);
  - truncated handshakes (a hello cut short, a hello and a proof cut short);
  - a valid handshake, recorded, then its proof replayed on a new connection: the server's
    fresh nonce must make the replay fail (the connection is closed, nothing is sent);
  - 10,000 connect/close pairs.
Exit 0 when the listener behaved (closed what it had to, within its timeout, and answered
the valid handshake), 1 otherwise. Needs only the standard library.
"""
import hashlib
import hmac
import os
import random
import socket
import struct
import sys
import time

MAGIC = b"MPXL"
HELLO_FIXED = 40
AUTH_FIXED = 52


def parse_info(info):
    # mpixfer:3:<world>:<rank>:<ip>:<port>:key=<32 hex>:<name>
    head, _, rest = info.partition(":key=")
    parts = head.split(":")
    host, port = parts[4], int(parts[5])
    key = bytes.fromhex(rest[:32])
    name = rest[33:]
    return host, port, key, name


def hello(nonce, name):
    n = name.encode()
    return MAGIC + struct.pack("<HH", 1, len(n)) + nonce + n


def mac_server(key, nonce_c, nonce_s, name):
    return hmac.new(key, b"mpixfer-s" + nonce_c + nonce_s + name.encode(), hashlib.sha256).digest()


def auth(key, nonce_c, nonce_s, name, client):
    c = client.encode()
    ident = struct.pack("<QIIHH", 0x1234, 0, os.getpid(), len(c), 0)
    mac = hmac.new(key, b"mpixfer-c" + nonce_s + nonce_c + name.encode() + ident + c,
                   hashlib.sha256).digest()
    return mac + ident + c


def connect(addr):
    s = socket.create_connection(addr, timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n, timeout=5.0):
    s.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return buf
        buf += chunk
    return buf


def closed_within(s, seconds):
    """True when the peer closes the connection (EOF or reset) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if s.recv(4096) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def main():
    host, port, key, name = parse_info(sys.argv[1])
    addr = (host, port)
    rng = random.Random(1234)
    failures = []
    t0 = time.monotonic()

    # 1. Random bytes.
    for i in range(500):
        try:
            s = connect(addr)
            s.sendall(rng.randbytes(rng.randint(0, 64 << 10)))
            s.close()
        except OSError:
            pass  # the listener may close first: that is its right
    print(f"random: 500 connections in {time.monotonic() - t0:.1f} s", flush=True)

    # 2. Idle connections held open: all must be closed by the handshake timeout.
    idle = []
    for i in range(100):
        idle.append(connect(addr))
    t1 = time.monotonic()
    still_open = sum(0 if closed_within(s, max(0.1, 8.0 - (time.monotonic() - t1))) else 1
                     for s in idle)
    for s in idle:
        s.close()
    if still_open:
        failures.append(f"{still_open} of 100 idle connections still open after 8 s")
    print(f"idle: 100 connections, closed after {time.monotonic() - t1:.1f} s", flush=True)

    # 3. Truncated handshakes.
    s = connect(addr)
    s.sendall(hello(os.urandom(32), name)[:17])
    if not closed_within(s, 8.0):
        failures.append("a truncated hello was never closed")
    s.close()
    s = connect(addr)
    nonce_c = os.urandom(32)
    s.sendall(hello(nonce_c, name))
    chal = recv_exact(s, 64)
    if len(chal) != 64:
        failures.append("no challenge for a well-formed hello")
    s.sendall(auth(key, nonce_c, chal[:32], name, "hostile")[:30])
    if not closed_within(s, 8.0):
        failures.append("a truncated proof was never closed")
    s.close()
    # A wrong proof of the right length.
    s = connect(addr)
    nonce_c = os.urandom(32)
    s.sendall(hello(nonce_c, name))
    chal = recv_exact(s, 64)
    s.sendall(auth(bytes(16), nonce_c, chal[:32], name, "hostile"))
    if not closed_within(s, 8.0):
        failures.append("a wrong proof was never closed")
    s.close()

    # 4. A valid handshake (we hold the key), then its proof replayed.
    s = connect(addr)
    nonce_c = os.urandom(32)
    hs = hello(nonce_c, name)
    s.sendall(hs)
    chal = recv_exact(s, 64)
    if len(chal) != 64 or not hmac.compare_digest(chal[32:], mac_server(key, nonce_c, chal[:32],
                                                                        name)):
        failures.append("the server's proof is wrong")
    proof = auth(key, nonce_c, chal[:32], name, "recorder")
    s.sendall(proof)
    welcome = recv_exact(s, 5)
    if len(welcome) != 5 or welcome[4] != 1:
        failures.append(f"a valid handshake got no WELCOME frame ({welcome!r})")
    s.close()
    r = connect(addr)
    r.sendall(hs)  # the same hello, the same nonce
    chal2 = recv_exact(r, 64)
    r.sendall(proof)  # the recorded proof: the server's nonce is new, so it must fail
    if not closed_within(r, 8.0):
        failures.append("a replayed proof was not refused")
    r.close()
    print("truncated, wrong and replayed handshakes refused", flush=True)

    # 5. Connect/close pairs.
    t2 = time.monotonic()
    for i in range(10000):
        try:
            socket.create_connection(addr, timeout=5).close()
        except OSError as e:
            failures.append(f"connect {i} failed: {e}")
            break
    print(f"connect/close: 10000 pairs in {time.monotonic() - t2:.1f} s", flush=True)
    print(f"hostile client done in {time.monotonic() - t0:.1f} s", flush=True)
    for f in failures:
        print("FAIL:", f, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
