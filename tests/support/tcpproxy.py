"""A loopback TCP forwarder that counts bytes and can throttle, to stop a real registry mid-push, or
(with a SharedLimit) make several servers share one bandwidth, as a CI runner's network does."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class SharedLimit:
    """One bandwidth for every connection of every proxy that holds it (both directions)."""

    def __init__(self, bytes_per_second: int) -> None:
        self.rate = bytes_per_second
        self._lock = threading.Lock()
        self._free_at = time.monotonic()

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free_at)
            self._free_at = start + n / self.rate
        time.sleep(max(0.0, start + n / self.rate - now))


class ThrottledProxy:
    def __init__(self, target_port: int, bytes_per_second: int = 8 << 20, shared: SharedLimit | None = None) -> None:
        self.target_port = target_port
        self.rate = bytes_per_second
        self.shared = shared
        self.forwarded = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.shared is not None), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, throttle: bool) -> None:
        try:
            while data := src.recv(64 * 1024):
                dst.sendall(data)
                if throttle:
                    with self._lock:
                        self.forwarded += len(data)
                    if self.shared is not None:
                        self.shared.take(len(data))
                    else:
                        time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._closed = True
        self._sock.close()
