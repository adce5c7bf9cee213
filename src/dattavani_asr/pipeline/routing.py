"""A model per language: `--model kn=kannada-small,hi=hindi-small,en=tiny.en,*=base`.

The language of every window is identified on its own (by the `*` model, or the first
multilingual one), so a Kannada talk with English passages sends each window to the model for its
language; the windows of one model go to that model together (its own batches, its own workers).
A language given with `--language` sends every window to that language's model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from ..core.errors import InvalidOptionError
from ..core.options import DecodingOptions
from ..engine import AudioWindow, WindowResult, supported_languages
from .run import WindowDecoder, decoding_for, trims_encoder

ANY = "*"


@dataclass(frozen=True)
class Routes:
    """Which model decodes which language; `ANY` for the others."""

    by_language: tuple[tuple[str, str], ...]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(model for _, model in self.by_language))

    def model_for(self, language: str) -> str:
        table = dict(self.by_language)
        if language in table:
            return table[language]
        if ANY in table:
            return table[ANY]
        return self.by_language[0][1]  # no catch-all: the first model listed

    def __str__(self) -> str:
        return ",".join(f"{language}={model}" for language, model in self.by_language)

    def detector(self, multilingual: Callable[[str], bool]) -> str:
        """The model that identifies each window's language: the `*` model, else the first multilingual one."""
        for name in (self.model_for(ANY), *self.models):
            if multilingual(name):
                return name
        raise InvalidOptionError(f"routing {self} needs a multilingual model to tell languages: add *=base")


def parse_routes(spec: str | None) -> Routes | None:
    """Routes from `lang=model,…` (None for a plain model name)."""
    if not spec or "=" not in spec:
        return None
    pairs: list[tuple[str, str]] = []
    for part in (piece.strip() for piece in spec.split(",")):
        language, _, model = (item.strip() for item in part.partition("="))
        if not language or not model:
            raise InvalidOptionError(f"bad model route {part!r}: write language=model, e.g. kn=kannada-small,*=base")
        if language != ANY and language not in supported_languages():
            raise InvalidOptionError(f"bad model route {part!r}: {language!r} is not a Whisper language code")
        if language in dict(pairs):
            raise InvalidOptionError(f"language {language!r} is routed twice in {spec!r}")
        pairs.append((language, model))
    return Routes(tuple(pairs))


class RoutedDecoder:
    """A WindowDecoder that sends each window to the model for its language."""

    per_window_language = True

    def __init__(self, routes: Routes, decoders: Mapping[str, WindowDecoder]) -> None:
        self.routes = routes
        self.decoders = dict(decoders)
        self.detector = self.decoders[routes.detector(lambda name: self.decoders[name].multilingual)]

    @property
    def name(self) -> str:
        return str(self.routes)

    @property
    def multilingual(self) -> bool:
        return True

    def decoder_for(self, language: str) -> WindowDecoder:
        return self.decoders[self.routes.model_for(language)]

    def check(self, options: DecodingOptions) -> None:
        if options.language is not None:
            self.decoder_for(options.language).check(options)
            return
        for language, model in self.routes.by_language:
            self.decoders[model].check(replace(options, language=None if language == ANY else language))

    def detect(self, window: AudioWindow) -> tuple[str, float]:
        return self.detector.detect(window)

    def submit(self, windows: list[AudioWindow], options: DecodingOptions) -> list[Future[WindowResult]]:
        """Each window to its language's model (identified here unless given), in one call per model."""
        languages = [options.language or self.detect(window)[0] for window in windows]
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, language in enumerate(languages):
            groups[(self.routes.model_for(language), language)].append(index)
        futures: list[Future[WindowResult] | None] = [None] * len(windows)
        for (model, language), indices in groups.items():
            decoder = self.decoders[model]
            own = decoding_for(decoder, options, language if decoder.multilingual else "en")
            for index, future in zip(indices, decoder.submit([windows[i] for i in indices], own)):
                futures[index] = future
        return [future for future in futures if future is not None]


def routed(spec: str, make: Callable[[str], WindowDecoder]) -> WindowDecoder:
    """The decoder for a `--model` value: a routed one for `lang=model,…`, else `make(spec)`."""
    routes = parse_routes(spec)
    if routes is None:
        return make(spec)
    return RoutedDecoder(routes, {name: make(name) for name in routes.models})


class RoutedEngine:
    """The engine interface of batch runs (`transcribe_batch`, `detect_languages`) over a model per
    language: each window is identified and decoded by its language's engine, the windows of one
    engine in one batch."""

    per_window_language = True

    def __init__(self, routes: Routes, engines: Mapping[str, Any], decoding: DecodingOptions) -> None:
        self.routes = routes
        self.engines = dict(engines)
        self.given = decoding.language  # --language: every window to that language's model
        self.trim = decoding.trim_encoder  # as configured: each model applies its own policy
        self.detector = self.engines[routes.detector(lambda name: bool(self.engines[name].multilingual))]

    @property
    def name(self) -> str:
        return str(self.routes)

    @property
    def multilingual(self) -> bool:
        return True

    def check_options(self, options: DecodingOptions) -> None:
        for language, model in self.routes.by_language:
            wanted = self.given or (None if language == ANY else language)
            self.engines[model].check_options(replace(options, language=wanted))

    def detect_languages(self, windows: list[AudioWindow]) -> list[tuple[str, float]]:
        return list(self.detector.detect_languages(windows))

    def transcribe_batch(
        self, windows: list[AudioWindow], options: DecodingOptions, language: str | None = None
    ) -> tuple[list[WindowResult], str, float]:
        languages = [self.given] * len(windows) if self.given else [code for code, _ in self.detect_languages(windows)]
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, code in enumerate(languages):
            groups[(self.routes.model_for(str(code)), str(code))].append(index)
        results: list[WindowResult | None] = [None] * len(windows)
        for (model, detected), indices in groups.items():
            engine = self.engines[model]
            code = detected if engine.multilingual else "en"
            own = replace(options, language=code, trim_encoder=trims_encoder(self.trim, engine.multilingual))
            decoded, _, _ = engine.transcribe_batch([windows[i] for i in indices], own, code)
            for index, result in zip(indices, decoded):
                results[index] = result
        return [result for result in results if result is not None], str(languages[0]), 1.0
