"""A TCP proxy between the mount and the simulator that can make the network fail on demand.

It relays bytes both ways, one thread per direction, and tells transfer connections (whose first request is
`GET /guestFile` or `PUT /guestFile`) from API connections. Faults:

- `refuse()`: the listening socket closes and every connection is cut (vCenter unreachable: connection refused);
  `restore()` listens again on the same port.
- `api = "blackhole"`: API connections, new or kept alive, are accepted and everything sent on them is swallowed,
  nothing ever comes back (vCenter unreachable behind a dead route: the client can only time out).
- `transfers = "hang"`: a transfer request is accepted and read, and nothing is answered.
- `transfers = "stall"`: the first `stall_after` bytes of the answer go through, then silence (a hung body).
- `expire_transfers(n)`: the next `n` transfer requests are answered `404` (a URL that expired or died).

Transfer URLs name the simulator's port and the host the client called. To put the proxy on the transfer path
too, run the simulator on 127.0.0.1:P, the proxy on 127.0.0.2:P and give the mount `http://127.0.0.2:P`:
every loopback address is local on Linux, and the client rewrites the `*` of a transfer URL to 127.0.0.2.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

TRANSFER_HEADS = (b"GET /guestFile", b"PUT /guestFile")
EXPIRED = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(eq=False)  # kept in a set, by identity
class _Conn:
    client: socket.socket
    upstream: socket.socket | None = None
    transfer: bool = False
    swallowing: bool = False  # once a connection has gone silent, it stays silent
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed.set()
        for s in (self.client, self.upstream):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()


class TcpProxy:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int]):
        self.listen_addr = listen
        self.target = target
        self.api = "pass"  # "pass" | "blackhole"
        self.transfers = "pass"  # "pass" | "hang" | "stall"
        self.stall_after = 64 * 1024
        self._expire = 0
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
        self.counts = {"api": 0, "transfer": 0, "swallowed": 0, "expired": 0}

    # --- life cycle -------------------------------------------------------------------------------
    def start(self) -> "TcpProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self.listen_addr)
        listener.listen(64)
        self.listen_addr = listener.getsockname()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="proxy-accept").start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self.cut()

    def refuse(self) -> None:
        """Connections are refused from now on (and those open are cut) until `restore()`."""
        self.stop()

    def restore(self) -> None:
        if self._listener is None:
            self.start()

    def cut(self) -> None:
        """Close every connection in flight."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()

    def expire_transfers(self, n: int = 1) -> None:
        with self._lock:
            self._expire += n

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- relaying -----------------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # closed by stop()/refuse()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True, name="proxy-conn").start()

    def _serve(self, conn: _Conn) -> None:
        try:
            first = conn.client.recv(65536)
            if not first:
                return
            conn.transfer = first.startswith(TRANSFER_HEADS)
            self.counts["transfer" if conn.transfer else "api"] += 1
            if conn.transfer:
                with self._lock:
                    expire = self._expire > 0
                    self._expire -= expire
                if expire:
                    self.counts["expired"] += 1
                    conn.client.sendall(EXPIRED)
                    return
                if self.transfers == "hang":
                    conn.swallowing = True
            elif self.api == "blackhole":
                conn.swallowing = True
            if conn.swallowing:
                self._swallow(conn)
                return
            conn.upstream = socket.create_connection(self.target, timeout=10)
            conn.upstream.settimeout(None)
            conn.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.upstream.sendall(first)
            back = threading.Thread(target=self._pump_back, args=(conn,), daemon=True, name="proxy-back")
            back.start()
            while True:
                data = conn.client.recv(65536)
                if not data:
                    return
                if self._silent(conn):
                    continue
                conn.upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(conn)  # the client hung up (on a silent connection: it gave up), or a side failed

    def _silent(self, conn: _Conn) -> bool:
        if not conn.transfer and self.api == "blackhole":
            conn.swallowing = True
            self.counts["swallowed"] += 1
        return conn.swallowing

    def _swallow(self, conn: _Conn) -> None:
        """Read and drop whatever the client sends until it hangs up; answer nothing."""
        self.counts["swallowed"] += 1
        while conn.client.recv(65536):
            pass

    def _pump_back(self, conn: _Conn) -> None:
        sent = 0
        try:
            while True:
                data = conn.upstream.recv(65536)
                if not data:
                    break
                if conn.transfer and self.transfers == "stall":
                    room = max(0, self.stall_after - sent)
                    if room < len(data):
                        conn.client.sendall(data[:room])
                        sent += room
                        conn.swallowing = True
                        continue  # the rest is dropped: the client sees a body that stops
                if self._silent(conn):
                    continue
                conn.client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        if conn.swallowing:
            return  # keep the client's side open and silent: it must time out by itself
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        conn.close()
        with self._lock:
            self._conns.discard(conn)
