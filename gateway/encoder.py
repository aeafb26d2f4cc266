"""Turning samples into queue payloads: the privacy transformation and JSON, off the event loop.

Pseudonymising a long clinical note costs milliseconds of regular expressions; in the gateway's event
loop that would hold up requests. The sampler runs ``encode_batch`` in a thread, or (sampling.encoder:
process) in a separate process forked from a fork server that has imported only this module.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson

from pipeline import privacy

log = logging.getLogger("medic_gateway.sampler")


def encode_batch(samples: list[dict[str, Any]], mode: str, key: bytes | None) -> list[bytes | None]:
    """Pseudonymise or encrypt, then encode, each sample; None for one that fails (never its content)."""
    encoded: list[bytes | None] = []
    for sample in samples:
        try:
            if mode == "pseudonymised":
                sample = privacy.pseudonymise(sample)
            elif mode == "encrypted" and key is not None:
                sample = privacy.encrypt(sample, key)
            encoded.append(orjson.dumps(sample))
        except Exception as exc:  # one odd payload must not stop the others; its content is never logged
            log.error("sample %s not shipped: %s", sample.get("request_id"), type(exc).__name__)
            encoded.append(None)
    return encoded


def encoder_pool(processes: int) -> ProcessPoolExecutor:
    """A pool whose processes import this module only: not the gateway, its server or its clients."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(processes, mp_context=context)
