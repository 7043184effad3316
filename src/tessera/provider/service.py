"""`tessera provider run`: the node's HTTP server and chain watcher in one process."""

from __future__ import annotations

import contextlib
import signal
import threading

import uvicorn

from tessera.http_limits import GRACEFUL_SHUTDOWN_S
from tessera.provider.api import create_app
from tessera.provider.config import ProviderConfig
from tessera.provider.node import ProviderNode


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its own shutdown, which would skip ours; we handle the
    signals ourselves and exit normally."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def run_provider(config: ProviderConfig, node: ProviderNode | None = None) -> None:
    """Serve `node` (by default the node `config` describes) until SIGTERM or SIGINT."""
    node = node or ProviderNode(config)
    node.prepare()
    watcher = threading.Thread(target=node.watch, name="chain-watcher", daemon=True)
    server = _Server(uvicorn.Config(create_app(node), host=config.provider.host,
                                    port=config.provider.port, log_level="warning", lifespan="off",
                                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))

    def request_exit(signum, _frame):
        node.log("signal", name=signal.Signals(signum).name)
        node.stop_event.set()       # ends the round answers' long polls (provider/long_poll.py)
        server.should_exit = True

    signal.signal(signal.SIGTERM, request_exit)
    signal.signal(signal.SIGINT, request_exit)
    watcher.start()
    node.log("serving", endpoint=config.provider.endpoint, address=node.address)
    try:
        server.run()
    finally:
        node.shutdown()
        watcher.join(timeout=10)
        node.state.close()
        node.log("stopped")
