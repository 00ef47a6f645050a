"""A loopback TCP forwarder that counts bytes and can throttle, to stop a real registry mid-push."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class ThrottledProxy:
    def __init__(self, target_port: int, bytes_per_second: int = 8 << 20) -> None:
        self.target_port = target_port
        self.rate = bytes_per_second
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
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, throttle: bool) -> None:
        try:
            while data := src.recv(64 * 1024):
                dst.sendall(data)
                if throttle:
                    with self._lock:
                        self.forwarded += len(data)
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
