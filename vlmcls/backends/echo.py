"""The lightest smoke backend: no model, no torch. It answers in a sentence naming one of the
offered candidates, chosen by a hash of the prompt, so its accuracy is chance (1/N). It exists to
exercise the plugin, store, resolver and reports in a fraction of a second."""
from __future__ import annotations

import hashlib
import os
import time
from typing import Sequence

from ..types import Answer, Query


def requirements(entry, settings, labels) -> str | None:
    return None


class EchoBackend:
    kind = "text"

    def __init__(self, styles: Sequence[str], delay_s: float = 0.0, crash: bool = False):
        self.styles = tuple(styles)
        self.crash = crash
        self.delay_s = delay_s  # per query: lets tests interrupt a case midway

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        if self.crash:  # tests: a worker process that dies in the middle of a case
            os._exit(3)
        time.sleep(self.delay_s * len(queries))
        return [self._one(q) for q in queries]

    def _one(self, q: Query) -> Answer:
        h = int.from_bytes(hashlib.sha256((q.sample_id + q.prompt + q.prefix).encode()).digest()[:8], "big")
        label = q.labels[h % len(q.labels)]
        text = self.styles[(h >> 16) % len(self.styles)].format(label=label)
        return Answer(text=text, prompt_tokens=len((q.prefix + q.prompt).split()), completion_tokens=len(text.split()))

    def close(self) -> None:
        pass


def load(entry, settings, labels) -> EchoBackend:
    if settings.extra.get("load_log"):  # tests: count loads per process
        with open(settings.extra["load_log"], "a") as log:
            log.write(f"{entry.name} {os.getpid()}\n")
    styles = settings.extra.get("styles") or (
        'The most probable class that the object in the image belongs to is "{label}."',
        "**{label}**",
        "{label}",
    )
    return EchoBackend(styles, float(settings.extra.get("delay_s", 0.0)), bool(settings.extra.get("crash", False)))
