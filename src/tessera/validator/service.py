"""`tessera validator run`: the validator's HTTP server and probe loop in one process."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

import uvicorn

from tessera.chain.devnet import bridge_confirmations
from tessera.http_limits import GRACEFUL_SHUTDOWN_S
from tessera.validator.api import create_app
from tessera.validator.bridge_attester import BridgeAttester, attestation_routes
from tessera.validator.challenges import router as challenge_routes
from tessera.validator.config import ValidatorConfig
from tessera.validator.node import ValidatorNode


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its own shutdown, which would skip ours; we handle the
    signals ourselves and exit normally."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def bridge_attester(node: ValidatorNode, config: ValidatorConfig) -> BridgeAttester | None:
    """The bridge duty, where the network names a peer chain and the config does not opt out."""
    if not config.bridge.attest or not node.chain.network.peers:
        return None
    confirmations = bridge_confirmations(node.chain.network, config.bridge.confirmations)
    return BridgeAttester(node.account, node.chain.network, Path(config.validator.state_dir),
                          node.log, confirmations)


def run_validator(config: ValidatorConfig) -> None:
    node = ValidatorNode(config)
    node.prepare()
    threads = [threading.Thread(target=node.watch, name="probe-loop", daemon=True)]
    if config.outages.report:
        threads.append(threading.Thread(target=node.watch_outages, name="outage-loop", daemon=True))
    if node.liveness is not None:
        threads.append(threading.Thread(target=node.watch_liveness, name="liveness-loop",
                                        daemon=True))
    if node.liveness_watch is not None:
        threads.append(threading.Thread(target=node.watch_liveness_reports,
                                        name="liveness-watch-loop", daemon=True))
    if config.hardware.enabled:
        threads.append(threading.Thread(target=node.watch_hardware, name="hardware-loop",
                                        daemon=True))
    app = create_app(node)
    attester = bridge_attester(node, config)
    if attester is not None:
        threads.append(threading.Thread(
            target=node._loop, args=(attester.poll_once, config.bridge.interval_s, "bridge-error"),
            name="bridge-loop", daemon=True))
        app.include_router(attestation_routes(attester))
    if node.challenges is not None:
        threads.append(threading.Thread(target=node.watch_challenges, name="challenge-loop",
                                        daemon=True))
        app.include_router(challenge_routes(node.challenges))
    server = _Server(uvicorn.Config(app, host=config.validator.host,
                                    port=config.validator.port, log_level="warning",
                                    lifespan="off", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))

    def request_exit(signum, _frame):
        node.log("signal", name=signal.Signals(signum).name)
        server.should_exit = True

    signal.signal(signal.SIGTERM, request_exit)
    signal.signal(signal.SIGINT, request_exit)
    for thread in threads:
        thread.start()
    node.log("serving", endpoint=config.validator.endpoint, address=node.address)
    try:
        server.run()
    finally:
        node.stop_event.set()
        for thread in threads:
            thread.join(timeout=10)
        node.shutdown()  # lets probes in flight finish (each within its timeout)
        node.store.close()
        if node.challenges is not None:
            node.challenges.close()
        node.hardware.store.close()
        if node.liveness is not None:
            node.liveness.close()
        if node.liveness_watch is not None:
            node.liveness_watch.close()
        if attester is not None:
            attester.close()
        node.log("stopped")
