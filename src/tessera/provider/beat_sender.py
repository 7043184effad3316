"""Sending this node's beat to the validators and checking their receipts (provider/heartbeats.py
decides when). Built so that no validator can hold up the node's liveness (issue 15's review):

- Every POST has a wall-clock deadline (`[liveness] timeout_s`, default 3 s) for the whole
  exchange: connect, headers and body together. The POSTs run as tasks of one asyncio loop in a
  thread of their own, each under `asyncio.timeout`, which cancels it wherever it waits; a
  per-read timeout (httpx's) or a check between body chunks would not do: an endpoint that
  sends a byte of its headers or body every 2.9 s would keep one request going for hours.
- A round (`post`) waits for its answers only until they are all in or the caller's `until`
  (the fallback deadline) comes, whichever is first; what is still in flight then carries on
  in the loop, is bounded by its own deadline, and is collected by the next round. The
  liveness thread is never held longer than that, so the on-chain heartbeat fallback goes out
  at its deadline whatever the validators do.
- All of an epoch's targets are asked at once (tasks, not threads: a slow one takes no pool
  slot from an honest one; name lookups get a thread per target), at most MAX_TARGETS of
  them: one receipt is enough (a validator that receipted the beat names it in its report or
  the node claims the epoch with the receipt), so more targets only add redundancy, while each
  costs a connection and a signature check, and a crowd of sybil validators (100 TSTK each)
  that never answer must not grow a round's cost without bound. The targets are the
  validators that receipted the last beat first (at most half of the places, so that others
  are always tried too), then the others in a random order, new each epoch: an honest
  validator, once it receipted, keeps being asked; one that stops answering drops out after an
  epoch; and in an epoch whose sample holds no honest validator the fallback heartbeat keeps
  the node up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time

import httpx
import pydantic_core
from prometheus_client import Counter
from pydantic import ValidationError

from tessera.protocol import liveness, messages
from tessera.provider.context import NodeContext

MAX_TARGETS = 64              # validators a beat is sent to in one epoch (see above)
MAX_RECEIPT_BYTES = 16 << 10  # a receipt is ~300 bytes; more is read no further
VALIDATORS_REFRESH_S = 600.0  # the validators' endpoints are read again at least this often


class BeatSender:
    """Sends a node's beat to the validators and checks what they answer."""

    def __init__(self, ctx: NodeContext):
        self.ctx = ctx
        self.settings = ctx.config.liveness
        self._validators: tuple[int, float, list[tuple[str, str]]] | None = None
        self._trusted: set[str] = set()   # receipted the last beat
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None   # used in the loop's thread only
        # (epoch, validator) -> (endpoint, the POST's future): POSTs not yet collected
        self._inflight: dict[tuple[int, str], tuple[str, concurrent.futures.Future]] = {}
        self._domain: tuple[int, str] | None = None   # (chain id, Uptime): what receipts name
        self.m_beats = Counter("tessera_provider_beats", "beats POSTed to validators",
                               ["outcome"], registry=ctx.metrics.registry)

    def forget_validators(self) -> None:
        """Read the list again next time (an endpoint may have moved)."""
        self._validators = None

    def active_validators(self) -> list[tuple[str, str]]:
        """(address, endpoint) of every active validator with an endpoint; the list is read
        again when their count changes, after a failed epoch, and every VALIDATORS_REFRESH_S."""
        validators = self.ctx.validators
        count = validators.count()
        cached = self._validators
        if cached is None or cached[0] != count or time.monotonic() - cached[1] > VALIDATORS_REFRESH_S:
            cached = self._validators = (count, time.monotonic(),
                                         validators.active_with_endpoints() if count else [])
        return list(cached[2])

    def targets(self) -> list[tuple[str, str]]:
        """This epoch's validators to send the beat to (see the module's docstring)."""
        everyone = self.active_validators()
        trusted = [v for v in everyone if v[0] in self._trusted]
        others = [v for v in everyone if v[0] not in self._trusted]
        random.shuffle(trusted)
        random.shuffle(others)
        keep = trusted[:MAX_TARGETS // 2]
        return keep + (others + trusted[len(keep):])[:MAX_TARGETS - len(keep)]

    def post(self, cur, until: float) -> None:
        """POST the beat (`cur`: heartbeats.EpochBeat) to each of `cur.validators` that has not
        receipted it and has no POST in flight, all at once, and collect the answers until all
        are in or `until` (monotonic) comes, whichever is first."""
        loop = self._start()
        if self._domain is None:
            self._domain = (self.ctx.chain.network.chain_id, self.ctx.uptime.address)
        body = liveness.SignedBeat(provider=self.ctx.address, epoch=cur.epoch,
                                   signature=cur.signature).model_dump()
        for validator, url in cur.validators:
            key = (cur.epoch, validator)
            if validator not in cur.receipts and key not in self._inflight:
                self._inflight[key] = (url, asyncio.run_coroutine_threadsafe(
                    self._send(validator, url, cur.epoch, body), loop))
        waiting = [f for (epoch, _), (_, f) in self._inflight.items() if epoch == cur.epoch]
        concurrent.futures.wait(waiting, timeout=max(0.0, until - time.monotonic()))
        self._collect(cur)

    def _collect(self, cur) -> None:
        """Take in the POSTs that ended; those of an earlier epoch only keep their receipt."""
        for key, (url, future) in list(self._inflight.items()):
            if not future.done():
                continue
            del self._inflight[key]
            epoch, validator = key
            try:
                receipt, problem = future.result()
            except concurrent.futures.CancelledError:
                continue
            except Exception as exc:   # a bug in _send: one validator's answer is lost, no more
                receipt, problem = None, ("error", f"{type(exc).__name__}: {exc}"[:200])
            if receipt is not None:
                self.ctx.state.add_receipt(epoch, validator, receipt)
                self.m_beats.labels("receipted").inc()
                if epoch == cur.epoch:
                    cur.receipts[validator] = receipt
                continue
            self.m_beats.labels(problem[0]).inc()
            self.ctx.log("beat-not-receipted", "warning", epoch=epoch, validator=validator,
                         endpoint=url, reason=problem[1])
        self._trusted = set(cur.receipts)   # what the next epoch's targets() starts with

    async def _send(self, validator: str, url: str, epoch: int,
                    body: dict) -> tuple[str | None, tuple[str, str]]:
        """(receipt signature, ('', '')) or (None, (outcome, reason)). Never raises."""
        limit = self.settings.timeout_s
        try:
            async with asyncio.timeout(limit):
                status, raw = await self._exchange(url, body)
        except TimeoutError:
            return None, ("timeout", f"no whole answer within {limit:g} s")
        except Exception as exc:   # httpx errors, a junk URL a validator published
            return None, ("unreachable", f"{type(exc).__name__}: {exc}"[:200])
        if raw is None:
            return None, ("bad-receipt", f"answer over {MAX_RECEIPT_BYTES} bytes")
        if status != 200:
            return None, ("refused", f"HTTP {status}: {raw[:300].decode(errors='replace')}")
        try:
            receipt = liveness.BeatReceipt.model_validate(pydantic_core.from_json(raw))
        except (ValueError, ValidationError) as exc:
            return None, ("bad-receipt", f"not a BeatReceipt: {str(exc)[:200]}")
        problem = self.receipt_problem(receipt, validator, epoch)
        return (None, ("bad-receipt", problem)) if problem else (receipt.signature, ("", ""))

    async def _exchange(self, url: str, body: dict) -> tuple[int, bytes | None]:
        """(HTTP status, body or None when over MAX_RECEIPT_BYTES)."""
        if self._http is None:   # its own timeouts only back up _send's deadline
            timeout = 2 * self.settings.timeout_s
            self._http = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(
                max_connections=MAX_TARGETS, max_keepalive_connections=MAX_TARGETS))
        async with self._http.stream("POST", url.rstrip("/") + "/liveness/beat",
                                     json=body) as reply:
            raw = bytearray()
            async for chunk in reply.aiter_bytes():
                raw += chunk
                if len(raw) > MAX_RECEIPT_BYTES:
                    return reply.status_code, None
            return reply.status_code, bytes(raw)

    def receipt_problem(self, receipt: liveness.BeatReceipt, validator: str,
                        epoch: int) -> str | None:
        """Why Uptime.claim_beat would refuse this receipt, or None (`post` set the domain)."""
        me = self.ctx.address
        if (receipt.provider.lower(), receipt.validator.lower(), receipt.epoch) != \
                (me.lower(), validator.lower(), epoch):
            return "the receipt names another provider, validator or epoch"
        form = messages.signature_refusal(bytes.fromhex(receipt.signature[2:]))
        if form is not None:
            return f"receipt signature: {form}"
        typed = liveness.receipt_typed_data(*self._domain, me, validator, epoch)
        signer = messages.signer_or_none(typed, receipt.signature)
        if signer is None or signer.lower() != validator.lower():
            return f"the receipt is signed by {signer}, not by {validator}"
        return None

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            # Name lookups run in the loop's default executor (a thread each while it waits):
            # with a thread per target, an endpoint whose DNS stalls delays no other's.
            self._loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
                MAX_TARGETS, thread_name_prefix="beat-lookup"))
            threading.Thread(target=self._loop.run_forever, name="beat-sender",
                             daemon=True).start()
        return self._loop

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        for _, future in self._inflight.values():
            future.cancel()
        self._inflight.clear()
        if self._http is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._http.aclose(), loop).result(timeout=2)
            except Exception:   # closing anyway
                pass
        loop.call_soon_threadsafe(loop.stop)
