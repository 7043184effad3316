"""Shaped links for benches: each remote node in its own network namespace (needs root).

`ShapedHost(i, mbit, rtt_ms)` creates namespace `tsr-bench-i` joined to this one by a veth pair
(this side 10.77.i.1, its side 10.77.i.2). Both ends of the pair are shaped, so each direction
has the rate and half the round trip:

- with `tc netem` (`delay rtt/2 rate mbit`), the kernel does both: TCP sees a real 50 ms path;
- where the kernel has no netem (`Specified qdisc kind is unknown`, as on the machine these
  figures were first taken on), `tc tbf` shapes the rate in the kernel and every TCP connection
  crossing the link goes through a `DelayLine` on this side, which holds each chunk rtt/2 before
  passing it on. That adds the latency to every request and answer, but it is a split-TCP path:
  TCP's windows grow over two short hops rather than one 50 ms one, which favours transfers of
  many windows a little. `ShapedHost.mode` says which was used, and the results record it.

`forward(host, target_port)` gives the namespace a way to reach a port on this side's loopback
(anvil listens on 127.0.0.1): a `DelayLine` listening on 10.77.i.1, delaying only when the
kernel does not. `expose(port)` is the address this side uses for a port inside the namespace.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time


def ip(*args: str, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True)


def checked(*args: str, ns: str | None = None) -> None:
    done = ip(*args, ns=ns)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


class DelayLine:
    """A TCP forwarder from (listen_host, any port) to (target_host, target_port) that holds
    each chunk `delay_s` in each direction, in order."""

    def __init__(self, listen_host: str, target_host: str, target_port: int, delay_s: float):
        self.target, self.delay_s = (target_host, target_port), delay_s
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(listen_host, ready), daemon=True).start()
        ready.wait()

    def _serve(self, host: str, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._connection, host, 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _connection(self, client_r, client_w) -> None:
        try:
            target_r, target_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pump(client_r, target_w), self._pump(target_r, client_w),
                             return_exceptions=True)

    async def _pump(self, reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay_s, data))
        except ConnectionError:
            pass
        queue.put_nowait(None)
        try:
            await sender
        except ConnectionError:
            pass
        writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


class DelayLineProcess:
    """A DelayLine in a process of its own (this file run as a script), so that its forwarding
    never waits on the bench process's interpreter (the tenant's coordinator runs there, with
    its replays) and it runs on whatever cores this process may use."""

    def __init__(self, listen_host: str, target_host: str, target_port: int, delay_s: float):
        self.proc = subprocess.Popen([sys.executable, __file__, listen_host, target_host,
                                      str(target_port), repr(delay_s)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"delay line did not start: {line!r}")
        self.port = int(line)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class ShapedHost:
    def __init__(self, index: int, mbit: float, rtt_ms: float):
        self.ns, self.index = f"tsr-bench-{index}", index
        self.here, self.there = f"10.77.{index}.1", f"10.77.{index}.2"
        here_if, there_if = f"tsrb{index}h", f"tsrb{index}n"
        ip("ip", "netns", "del", self.ns)                   # a crashed run's leftovers
        checked("ip", "netns", "add", self.ns)
        checked("ip", "link", "add", here_if, "type", "veth", "peer", "name", there_if)
        checked("ip", "link", "set", there_if, "netns", self.ns)
        checked("ip", "addr", "add", f"{self.here}/24", "dev", here_if)
        checked("ip", "link", "set", here_if, "up")
        checked("ip", "addr", "add", f"{self.there}/24", "dev", there_if, ns=self.ns)
        checked("ip", "link", "set", there_if, "up", ns=self.ns)
        checked("ip", "link", "set", "lo", "up", ns=self.ns)
        half = f"{rtt_ms / 2:g}ms"
        netem = ["tc", "qdisc", "add", "dev", "{dev}", "root", "netem", "delay", half,
                 "rate", f"{mbit:g}mbit", "limit", "100000"]
        if ip(*[a.format(dev=here_if) for a in netem]).returncode == 0:
            checked(*[a.format(dev=there_if) for a in netem], ns=self.ns)
            self.mode, self.delay_s = "tc netem (rate and delay)", 0.0
        else:
            tbf = ["tc", "qdisc", "add", "dev", "{dev}", "root", "tbf", "rate", f"{mbit:g}mbit",
                   "burst", "64kb", "latency", "200ms"]
            checked(*[a.format(dev=here_if) for a in tbf])
            checked(*[a.format(dev=there_if) for a in tbf], ns=self.ns)
            self.mode = "tc tbf (rate) + a userspace delay line (delay): no netem in this kernel"
            self.delay_s = rtt_ms / 2000
        self.lines: list[DelayLineProcess] = []

    def forward(self, target_port: int) -> int:
        """A port on 10.77.i.1 that reaches 127.0.0.1:target_port (over the shaped link)."""
        line = DelayLineProcess(self.here, "127.0.0.1", target_port, self.delay_s)
        self.lines.append(line)
        return line.port

    def expose(self, port: int) -> str:
        """The URL this side uses for http://10.77.i.2:port inside the namespace."""
        if not self.delay_s:
            return f"http://{self.there}:{port}"
        line = DelayLineProcess("127.0.0.1", self.there, port, self.delay_s)
        self.lines.append(line)
        return f"http://127.0.0.1:{line.port}"

    def popen(self, command: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *command], **kw)

    def close(self) -> None:
        for line in self.lines:
            line.close()
        ip("ip", "netns", "del", self.ns)


if __name__ == "__main__":   # one delay line: LISTEN_HOST TARGET_HOST TARGET_PORT DELAY_S
    listen, target, target_port, delay = sys.argv[1:5]
    served = DelayLine(listen, target, int(target_port), float(delay))
    print(served.port, flush=True)
    threading.Event().wait()
