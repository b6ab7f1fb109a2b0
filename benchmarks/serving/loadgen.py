"""Fallback load generator for when ``wrk`` is missing: keep-alive HTTP/1.1 over asyncio.

    python loadgen.py --url URL --body-file FILE --connections 32 --duration 10
        [--expect P --tolerance T]

Prints one ``WRKJSON {...}`` line with the fields the wrk Lua script prints (latency in
microseconds). With ``--expect P --tolerance T`` every answer is checked like the wrk
script checks it: a 200 holding a number within T of P (``checked``, ``wrong``). Slower than
wrk: at high rates the generator, not the server, may be the limit, which the benchmark
says when it falls back to this.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _holds(body: bytes, expected: float, tolerance: float) -> bool:
    """Whether a number in ``body`` is within ``tolerance`` of ``expected``."""
    return any(abs(float(m) - expected) <= tolerance for m in _NUMBER.findall(body))


async def _worker(
    host: str,
    port: int,
    request: bytes,
    stop: float,
    lat: list[float],
    err: dict[str, int],
    expect: tuple[float, float] | None,
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        err["connect"] += 1
        return
    while time.perf_counter() < stop:
        start = time.perf_counter()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            err["read"] += 1
            break
        lat.append((time.perf_counter() - start) * 1e6)
        if not 200 <= status < 300:
            err["status"] += 1
        if expect is not None:
            err["checked"] += 1
            if status != 200 or not _holds(body, *expect):
                err["wrong"] += 1
    writer.close()


async def _run(args: argparse.Namespace) -> dict[str, float]:
    url = urlsplit(args.url)
    body = Path(args.body_file).read_bytes()
    request = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    lat: list[float] = []
    err = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0, "checked": 0, "wrong": 0}
    expect = (args.expect, args.tolerance) if args.expect is not None else None
    begin = time.perf_counter()
    stop = begin + args.duration
    await asyncio.gather(
        *(
            _worker(url.hostname or "127.0.0.1", url.port or 80, request, stop, lat, err, expect)
            for _ in range(args.connections)
        )
    )
    took = time.perf_counter() - begin
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else 0.0

    return {
        "requests": len(lat),
        "duration_us": took * 1e6,
        **err,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "mean_us": sum(lat) / len(lat) if lat else 0.0,
        "max_us": lat[-1] if lat else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--expect", type=float, help="a probability every answer must hold")
    parser.add_argument("--tolerance", type=float, default=0.0, help="... within this")
    args = parser.parse_args()
    print("WRKJSON " + json.dumps(asyncio.run(_run(args))), flush=True)


if __name__ == "__main__":
    main()
