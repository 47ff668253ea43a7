"""A loopback TCP proxy in front of a real registry that lets a set number of connections through
and then drops every new one: an upload cut off halfway. It records each connection's request line
and the registry's status line (the OCI client sends one request per connection)."""

from __future__ import annotations

import socket
import threading
from typing import List, Optional, Tuple

from helpers.mosquitto import free_port


class CuttingProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream`` for ``allow`` connections (None: all of them)."""

    def __init__(self, upstream: Tuple[str, int], allow: Optional[int]) -> None:
        self.upstream = upstream
        self.allow = allow
        self.port = free_port()
        self.exchanges: List[Tuple[str, str]] = []  # (request line, status line)
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> CuttingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with self._lock:
                cut = self.allow is not None and self.allow <= 0
                if self.allow is not None:
                    self.allow -= 1
            if cut:
                conn.close()  # the network is gone
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        record = ["", ""]
        try:
            with conn, socket.create_connection(self.upstream, timeout=30) as up:
                conn.settimeout(30)
                back = threading.Thread(target=self._pipe, args=(up, conn, record, 1), daemon=True)
                back.start()
                self._pipe(conn, up, record, 0)
                back.join(30)
        except OSError:
            pass
        with self._lock:
            self.exchanges.append((record[0], record[1]))

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, record: List[str], slot: int) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not record[slot]:
                    record[slot] = data.split(b"\r\n", 1)[0].decode("latin-1")
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
