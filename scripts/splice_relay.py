#!/usr/bin/env python3
"""Reference point for scripts/bench, not part of the proxy: the cheapest relay Linux
allows. It forwards each request head to the upstream and moves the response body with
splice(2) (socket -> pipe -> socket, no copy through user space). If even this stays far
below direct on a machine, no user-space proxy can reach direct there.
Handles plain HTTP/1.1 GETs with Content-Length only (what the blob benchmark sends).
Usage: splice_relay.py LISTEN_PORT UPSTREAM_PORT"""
import os
import socket
import sys
import threading

F_SETPIPE_SZ = 1031


def read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None, b""
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    return buf[:end], buf[end:]


def relay(client, upstream_port):
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    r, w = os.pipe()
    try:
        import fcntl
        fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    pending = b""
    try:
        while True:
            req, pending = read_head(client, pending)
            if req is None:
                return
            upstream.sendall(req)
            head, body_start = read_head(upstream, b"")
            if head is None:
                return
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            client.sendall(head + body_start)
            length -= len(body_start)
            while length > 0:
                moved = os.splice(upstream.fileno(), w, min(length, 1 << 20))
                if moved == 0:
                    return
                left = moved
                while left > 0:
                    left -= os.splice(r, client.fileno(), left)
                length -= moved
    except OSError:
        pass
    finally:
        for fd in (r, w):
            os.close(fd)
        upstream.close()
        client.close()


def main():
    listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(64)
    while True:
        client, _ = server.accept()
        threading.Thread(target=relay, args=(client, upstream_port), daemon=True).start()


if __name__ == "__main__":
    main()
