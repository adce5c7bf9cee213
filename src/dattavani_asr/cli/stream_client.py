"""The client side of the live protocol (docs/streaming.md): send PCM, collect events, measure latency.

Used by `dattavani-asr stream` and benchmarks/stream_bench.py. Every event is stamped with the
wall time it arrived, and every audio frame with the wall time it was sent, so:

- final latency = arrival of a `final` minus the time the audio at its `end` had been sent;
- update interval = time between consecutive partial/final events of the same stretch of speech,
  and, where speech starts, from the time its first word had been sent to the first event;
- lag = seconds of audio sent minus the event's `audio_received`.
"""

from __future__ import annotations

import bisect
import json
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import StreamError

Event = dict[str, Any]
EventCallback = Callable[[Event], None]
Chunk = tuple[bytes, float]  # PCM bytes and the seconds of audio they hold
# An event whose first word starts within this of the previous event's end continues the same speech.
CONTINUOUS_SPEECH_GAP = 0.3
UPDATE_TYPES = ("partial", "final")


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (as numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class StreamReport:
    """Events with their arrival times, and the audio sent with its send times (perf_counter)."""

    events: list[tuple[float, Event]] = field(default_factory=list)
    sent_audio: list[float] = field(default_factory=list)  # seconds of audio sent so far, after each frame
    sent_wall: list[float] = field(default_factory=list)  # when that frame was sent
    ended_at: float | None = None  # when `end` was sent

    def of_type(self, *types: str) -> list[tuple[float, Event]]:
        return [(wall, event) for wall, event in self.events if event["type"] in types]

    @property
    def finals(self) -> list[Event]:
        return [event for _, event in self.of_type("final")]

    @property
    def text(self) -> str:
        """The `done` text (or the finals joined, when the stream did not finish)."""
        done = self.of_type("done")
        return str(done[-1][1]["text"]) if done else " ".join(final["text"] for final in self.finals)

    @property
    def audio_seconds(self) -> float:
        return self.sent_audio[-1] if self.sent_audio else 0.0

    def sent_at(self, audio_seconds: float) -> float:
        """Wall time when the audio up to `audio_seconds` had been sent."""
        index = bisect.bisect_left(self.sent_audio, audio_seconds - 1e-6)
        return self.sent_wall[min(index, len(self.sent_wall) - 1)]

    def audio_sent_by(self, wall: float) -> float:
        """Seconds of audio sent at wall time `wall`."""
        index = bisect.bisect_right(self.sent_wall, wall) - 1
        return self.sent_audio[index] if index >= 0 else 0.0

    def final_latencies(self) -> list[float]:
        return [wall - self.sent_at(float(event["end"])) for wall, event in self.of_type("final")]

    def update_gaps(self) -> tuple[list[float], list[float]]:
        """(gaps between updates within speech, delays from a speech onset being sent to its first update)."""
        gaps: list[float] = []
        onsets: list[float] = []
        previous: tuple[float, Event] | None = None
        for wall, event in self.of_type(*UPDATE_TYPES):
            if previous is not None and event["start"] <= previous[1]["end"] + CONTINUOUS_SPEECH_GAP:
                gaps.append(wall - previous[0])
            else:
                onsets.append(wall - self.sent_at(float(event["start"])))
            previous = (wall, event)
        return gaps, onsets

    def lags(self, until: float | None = None) -> list[tuple[float, float]]:
        """(wall time, audio sent minus the event's `audio_received`) for events up to wall time `until`."""
        return [
            (wall, max(0.0, self.audio_sent_by(wall) - float(event["audio_received"])))
            for wall, event in self.events
            if "audio_received" in event and (until is None or wall <= until)
        ]

    def summary(self) -> dict[str, float | int | None]:
        latencies = self.final_latencies()
        gaps, onsets = self.update_gaps()
        lags = [lag for _, lag in self.lags(until=self.ended_at)]
        return {
            "audio_seconds": round(self.audio_seconds, 2),
            "finals": len(latencies),
            "final_latency_p50": percentile(latencies, 50),
            "final_latency_p95": percentile(latencies, 95),
            "update_gap_mean": statistics.fmean(gaps) if gaps else None,
            "update_gap_max": max(gaps, default=None),
            "first_update_mean": statistics.fmean(onsets) if onsets else None,
            "first_update_max": max(onsets, default=None),
            "lag_last": lags[-1] if lags else None,
            "lag_max": max(lags, default=None),
        }


class _Receiver(threading.Thread):
    """Reads events into the report; notes `ready`, `done`, errors and how the connection ended."""

    def __init__(self, socket: Any, report: StreamReport, on_event: EventCallback | None) -> None:
        super().__init__(daemon=True, name="stream-receiver")
        self.socket, self.report, self.on_event = socket, report, on_event
        self.ready, self.finished = threading.Event(), threading.Event()
        self.errors: list[Event] = []
        self.failure: str | None = None

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.socket:
                event = json.loads(message)
                self.report.events.append((time.perf_counter(), event))
                self._note(event)
                if event["type"] == "done":
                    return
        except ConnectionClosed as exc:
            self.failure = _closed_reason(exc)
        except (ValueError, KeyError, TypeError) as exc:
            self.failure = f"not a protocol event: {exc}"
        finally:
            self.finished.set()
            self.ready.set()

    def _note(self, event: Event) -> None:
        refusal = event["type"] == "error" and not self.ready.is_set()  # raised as StreamError, not passed on
        if event["type"] == "ready":
            self.ready.set()
        elif event["type"] == "error":
            self.errors.append(event)
        if self.on_event is not None and not refusal:
            self.on_event(event)

    def problem(self) -> str:
        """Why the stream stopped: the server's last error event, else how the connection closed."""
        if self.errors:
            error = self.errors[-1]
            return f"{error.get('code', 'error')}: {error.get('message', '')}"
        return self.failure or "the connection closed"


def _closed_reason(exc: Exception) -> str:
    received = getattr(exc, "rcvd", None)
    if received is None:
        return "the connection closed without a close frame"
    return f"the server closed the connection ({received.code}{': ' + received.reason if received.reason else ''})"


def _connect(url: str, api_key: str | None, open_timeout: float) -> Any:
    from websockets.exceptions import InvalidHandshake, InvalidURI
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    try:
        return connect(url, additional_headers=headers, open_timeout=open_timeout, max_size=None)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise StreamError(f"cannot open {url}: {exc or type(exc).__name__}") from exc


def stream_pcm(
    url: str,
    chunks: Iterable[Chunk],
    *,
    api_key: str | None = None,
    realtime: bool = True,
    on_event: EventCallback | None = None,
    timeout: float = 120.0,
) -> StreamReport:
    """Stream (PCM bytes, seconds) chunks to `url` and collect the events until `done`.

    With `realtime`, each chunk is sent once its audio would have been spoken (as a microphone
    delivers it). Raises StreamError when the connection cannot be opened, is refused (an `error`
    event before `ready`), breaks, or does not finish within `timeout` seconds after the end.
    """
    from websockets.exceptions import ConnectionClosed

    report = StreamReport()
    with _connect(url, api_key, open_timeout=min(timeout, 30.0)) as socket:
        receiver = _Receiver(socket, report, on_event)
        receiver.start()
        if not receiver.ready.wait(timeout):
            raise StreamError(f"{url}: no ready event within {timeout:.0f} s")
        if receiver.finished.is_set():
            raise StreamError(f"{url}: refused ({receiver.problem()})")
        try:
            completed = _send_audio(socket, chunks, report, realtime, receiver)
            if completed:
                socket.send(json.dumps({"type": "end"}))
                report.ended_at = time.perf_counter()
        except ConnectionClosed:
            completed = False
        if not completed:
            receiver.finished.wait(5.0)
            raise StreamError(f"{url}: stream broken ({receiver.problem()})")
        receiver.finished.wait(timeout)
    if not report.of_type("done"):
        raise StreamError(f"{url}: the server did not finish the stream ({receiver.problem()})")
    return report


def _send_audio(
    socket: Any, chunks: Iterable[Chunk], report: StreamReport, realtime: bool, receiver: _Receiver
) -> bool:
    """Send the chunks (paced when `realtime`); False if the server closed the stream meanwhile."""
    started, audio = time.perf_counter(), 0.0
    for data, seconds in chunks:
        if receiver.finished.is_set():
            return False
        audio += seconds
        if realtime:
            time.sleep(max(0.0, started + audio - time.perf_counter()))
        socket.send(data)
        report.sent_audio.append(audio)
        report.sent_wall.append(time.perf_counter())
    return True
