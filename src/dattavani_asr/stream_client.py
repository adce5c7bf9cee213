"""The client side of the live protocol (docs/streaming.md): send PCM, collect events, measure lag.

Used by `dattavani-asr stream` and benchmarks/stream_bench.py. Latency of a final is the wall time
it arrived minus the wall time the audio at its `end` had been sent.
"""

from __future__ import annotations

import bisect
import itertools
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import StreamError

Event = dict[str, Any]
EventCallback = Callable[[Event], None]


@dataclass
class StreamReport:
    """Events with their arrival times, and what was sent when."""

    events: list[tuple[float, Event]] = field(default_factory=list)
    sent: list[tuple[float, float]] = field(default_factory=list)  # (audio seconds sent so far, wall time)

    @property
    def finals(self) -> list[Event]:
        return [event for _, event in self.events if event["type"] == "final"]

    @property
    def text(self) -> str:
        done = [event for _, event in self.events if event["type"] == "done"]
        return str(done[-1]["text"]) if done else " ".join(final["text"] for final in self.finals)

    def sent_at(self, audio_seconds: float) -> float:
        """Wall time when the audio up to `audio_seconds` had been sent."""
        index = bisect.bisect_left([seconds for seconds, _ in self.sent], audio_seconds)
        return self.sent[min(index, len(self.sent) - 1)][1]

    def final_latencies(self) -> list[float]:
        return [wall - self.sent_at(event["end"]) for wall, event in self.events if event["type"] == "final"]

    def update_gaps(self) -> list[float]:
        """Seconds between consecutive partial/final events, within utterances (gaps over 3 s are pauses)."""
        times = [wall for wall, event in self.events if event["type"] in ("partial", "final")]
        return [later - earlier for earlier, later in itertools.pairwise(times) if later - earlier < 3.0]

    def lags(self) -> list[tuple[float, float]]:
        """(wall time, audio sent minus audio the server had) at each event."""
        rows = []
        for wall, event in self.events:
            if "audio_received" in event:
                index = bisect.bisect_right([w for _, w in self.sent], wall) - 1
                sent = self.sent[index][0] if index >= 0 else 0.0
                rows.append((wall, max(0.0, sent - float(event["audio_received"]))))
        return rows

    def summary(self) -> dict[str, float | int | None]:
        latencies, gaps = self.final_latencies(), self.update_gaps()
        return {
            "finals": len(latencies),
            "final_latency_p50": _percentile(latencies, 50),
            "final_latency_p95": _percentile(latencies, 95),
            "update_gap_mean": statistics.fmean(gaps) if gaps else None,
            "update_gap_max": max(gaps) if gaps else None,
            "lag_last": self.lags()[-1][1] if self.lags() else None,
        }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _connect(url: str, api_key: str | None) -> Any:
    from websockets.exceptions import InvalidHandshake, InvalidURI
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    try:
        return connect(url, additional_headers=headers, open_timeout=10, max_size=None)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise StreamError(f"cannot open {url}: {exc}") from exc


def _receive(socket: Any, report: StreamReport, on_event: EventCallback | None, failed: list[Event]) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        for message in socket:
            event = json.loads(message)
            report.events.append((time.perf_counter(), event))
            if event["type"] == "error" and not report.sent:
                failed.append(event)
            if on_event is not None:
                on_event(event)
            if event["type"] == "done":
                return
    except ConnectionClosed:
        return


def stream_pcm(
    url: str,
    chunks: Iterable[tuple[bytes, float]],
    *,
    api_key: str | None = None,
    realtime: bool = True,
    on_event: EventCallback | None = None,
    timeout: float = 120.0,
) -> StreamReport:
    """Send (pcm bytes, seconds of audio in them) chunks, paced at real time unless told otherwise."""
    report = StreamReport()
    failed: list[Event] = []
    with _connect(url, api_key) as socket:
        receiver = threading.Thread(target=_receive, args=(socket, report, on_event, failed), daemon=True)
        receiver.start()
        _wait_ready(report, failed, url)
        started, audio = time.perf_counter(), 0.0
        for data, seconds in chunks:
            if realtime:
                time.sleep(max(0.0, started + audio - time.perf_counter()))
            socket.send(data)
            audio += seconds
            report.sent.append((audio, time.perf_counter()))
        socket.send(json.dumps({"type": "end"}))
        receiver.join(timeout)
    if receiver.is_alive() or not any(event["type"] == "done" for _, event in report.events):
        raise StreamError(f"{url}: the server did not finish the stream")
    return report


def _wait_ready(report: StreamReport, failed: list[Event], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if failed:
            raise StreamError(f"{url}: refused ({failed[0].get('code')}): {failed[0].get('message')}")
        if any(event["type"] == "ready" for _, event in report.events):
            return
        time.sleep(0.01)
    raise StreamError(f"{url}: no ready event within 60 s")
