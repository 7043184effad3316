"""A raw TCP server for clients that must meet servers misbehaving below HTTP (a body or a
header a byte at a time, silence): each connection is answered on a thread of its own by the
subclass's `answer`."""

from __future__ import annotations

import socket
import threading
import time


class ScriptedTcpServer:
    """Listens on 127.0.0.1; `url` is its address, `connections` how many it accepted, `stop`
    set by `close`. A subclass sets its own fields before calling `__init__` (accepting starts
    there) and implements `answer(conn)`."""

    def __init__(self):
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def drip(self, conn: socket.socket, data: bytes, every_s: float) -> None:
        """Send `data` a byte every `every_s` until it is all sent or the server closes."""
        for i in range(len(data)):
            if self.stop.is_set():
                return
            conn.sendall(data[i:i + 1])
            time.sleep(every_s)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
