"""`tessera provider run`: the node's HTTP server and chain watcher in one process."""

from __future__ import annotations

import threading

import uvicorn

from tessera.provider.api import create_app
from tessera.provider.config import ProviderConfig
from tessera.provider.node import ProviderNode


def run_provider(config: ProviderConfig) -> None:
    node = ProviderNode(config)
    node.prepare()
    watcher = threading.Thread(target=node.watch, name="chain-watcher", daemon=True)
    server = uvicorn.Server(uvicorn.Config(create_app(node), host=config.provider.host,
                                           port=config.provider.port, log_level="warning",
                                           lifespan="off"))
    watcher.start()
    node.log("serving", endpoint=config.provider.endpoint, address=node.address)
    try:
        server.run()  # returns on SIGINT/SIGTERM (uvicorn installs the handlers)
    finally:
        node.shutdown()
        watcher.join(timeout=10)
        node.state.close()
        node.log("stopped")
