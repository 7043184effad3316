"""Every exception Tessera raises, in one module (as web3.exceptions is for web3.py).

Each names what went wrong in words a user can act on; the layer that raises it is noted."""

from __future__ import annotations


# raised in tessera.chain.client
class ChainError(Exception):
    """A chain operation failed; the message is meant for the user."""


# raised in tessera.chain.client
class RpcUnavailable(ChainError):
    """The RPC endpoint cannot be reached."""


# raised in tessera.chain.client
class TxRefused(ChainError):
    """The chain refused a transaction (a revert); nothing was sent or it changed nothing."""


# raised in tessera.chain.client (Chain.wait_for)
class TxDropped(ChainError):
    """A transaction this process sent will never be mined: the account's nonce it was signed
    on is used by another transaction (a node evicted it, and a later send took its nonce), and
    no version of it has a receipt. Nothing it would have done was done: a caller may do it
    again, on a new nonce."""


# raised in tessera.chain.tokens
class InsufficientFunds(ChainError):
    """Not enough tokens for what was asked; raised before any transaction is sent."""


# raised in tessera.chain.events
class ReorgDuringFetch(ChainError):
    """A log's block hash differs from the block fetched for its timestamp: the range moved."""


# raised in tessera.explorer.indexer
class IndexerError(ChainError):
    pass


# raised in tessera.chain.network
class NetworkError(Exception):
    """A network file is missing or malformed; the message names the file."""


# raised in tessera.chain.accounts
class AccountError(Exception):
    """An account spec or keystore could not be resolved; the message says why."""


# raised in tessera.chain.devnet
class DevnetError(Exception):
    pass


class PortInUse(DevnetError):
    """anvil could not bind its port: another process holds it (a caller may pick another)."""


# raised in tessera.protocol.jobspec
class SpecError(ValueError):
    """A job spec or config is invalid; the message names the file and field."""


# raised in tessera.compute.compress
class WireFormatError(ValueError):
    """Bytes that are not a well-formed tensor payload."""


# raised in tessera.tenant.verify
class CommitmentError(ValueError):
    """Why a worker's commitment is refused (the message names the field)."""


class CommitmentExpiresEarly(CommitmentError):
    """A commitment that expires too soon to post and challenge it (`expiry` says when)."""

    def __init__(self, message: str, expiry: int):
        super().__init__(message)
        self.expiry = expiry


# raised in tessera.validator.challenges
class CaseError(ValueError):
    """Why a pushed case is refused (the message names the check that failed)."""


# raised in tessera.tenant.client
class TenantError(Exception):
    """Something the tenant asked for could not be done; the message says what and why."""


# raised in tessera.tenant.client; retried by tessera.tenant.follow
class ProviderUnreachable(TenantError):
    """A provider did not answer a request usefully: connection refused or reset, a timeout, a
    5xx/408/429 status, an answer that is not what the route promises, or the provider is no
    longer registered. Transient: the tenant's follow loop retries it. `url`: what was asked
    (its scheme and host are the provider's endpoint); `reason`: why it failed, in words."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"provider at {url} did not answer: {reason}")
        self.url, self.reason = url, reason


# raised in tessera.tenant.client (Tenant.follow)
class ProviderGone(TenantError):
    """A lease's provider stayed unreachable past the follow loop's grace, so the tenant gave up
    on it: `settlement` (a tenant.client.LeaseClose) is the close and the downtime claimed."""

    def __init__(self, message: str, settlement):
        super().__init__(message)
        self.settlement = settlement


# raised in tessera.tenant.worker_rounds
class WorkerFault(Exception):
    """Why a worker's round was not used. `kind`: unreachable, refused (the provider refused the
    round), late, worker-error (the worker reported an error), or one of RESULT_FAULTS
    (bad-commitment: its signed commitment is missing or wrong; spot-check: a committed segment
    did not replay)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# raised in tessera.provider (its HTTP API answers with the status)
class Refused(Exception):
    """A request the node will not serve; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# raised in tessera.compute.hardware_challenge
class DeadlinePassed(Exception):
    """The product was not done before the deadline; the provider stops and does not sign."""


# raised in tessera.explorer.simulate
class WorkloadError(Exception):
    pass


# raised in tessera.daemons
class DaemonError(Exception):
    """A provider or validator process exited, or did not come up in time; names it and its log."""


class PaymentRefused(ValueError):
    """An agent's payment refused before anything is signed: it is over a limit of its budget
    (per-payment cap, period budget), its grant is paused, revoked, expired or not started, or
    its payee is not allowed. The message names the limit, as the contract's revert would."""


class PaymentError(Exception):
    """An x402 payment that could not be verified or settled (facilitator, network, asset,
    payee or amount wrong, or the settlement transaction failed on chain)."""


class BridgeError(Exception):
    """A cross-chain step that cannot go on: a route the network file does not name, a message
    that is not (or no longer) emitted on its source, too few committee signatures for a
    quorum, or a delivery the inbox refused (the message names which and why)."""
