"""uvicorn on a socket bound up front, in the foreground or a background thread: the shared serving of the reward
server (`eval.reward_server`) and the leaderboard (`leaderboard.app`).

Binding before uvicorn starts makes a port in use a clear error at once, and port 0 a known port (tests).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class BoundServer:
    """Bind ``host:port`` now (``error(message)`` when it is taken, the message ending in ``in_use_hint``); then
    `serve(app)` sets the app, and `start()` serves it in a daemon thread or `serve_forever()` in this one."""

    url_path = ""

    def __init__(
        self, *, host: str, port: int, name: str, in_use_hint: str, error: type[Exception] = OSError
    ):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
            self.socket.listen(2048)
        except OSError as exc:
            self.socket.close()
            raise error(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); another server may be using the port: "
                f"{in_use_hint}"
            ) from None
        self.host, self.port, self.name = host, self.socket.getsockname()[1], name
        self.uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def serve(self, app: Any, **config: Any) -> None:
        settings = {"log_level": "warning", "access_log": False, "lifespan": "off", "timeout_keep_alive": 5}
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, **(settings | config)))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.url_path}"

    def start(self) -> Any:
        self._thread = threading.Thread(target=self.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve until `close()` (or Ctrl-C in the main thread)."""
        self.uvicorn.run(sockets=[self.socket])

    def close(self) -> None:
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
