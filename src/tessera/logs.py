"""Structured log lines: one JSON object per line, to stderr."""

from __future__ import annotations

import json
import sys
import time


class EventLog:
    def __init__(self, component: str, stream=None):
        self.component = component
        self.stream = stream or sys.stderr

    def __call__(self, event: str, level: str = "info", **fields) -> None:
        line = {"ts": round(time.time(), 3), "level": level, "component": self.component,
                "event": event, **fields}
        self.stream.write(json.dumps(line, default=str) + "\n")
        self.stream.flush()
