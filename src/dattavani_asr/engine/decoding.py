"""Batched Whisper decoding on CTranslate2 with openai/whisper's temperature fallback."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..audio.decode import SAMPLE_RATE
from ..core.options import DecodingOptions
from ..core.types import AudioWindow, Decoded
from .loader import LoadedModel
from .script_tokens import foreign_script_tokens

WINDOW_SAMPLES = 30 * SAMPLE_RATE
TRIM_MARGIN_SECONDS = 5.0
TRIM_BUCKET_SECONDS = 2.5
MAX_TEXT_TOKENS = 448
MIN_TOKEN_LIMIT = 16
TIME_PRECISION = 0.02


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def window_features(model: LoadedModel, windows: Sequence[AudioWindow]) -> np.ndarray:
    """Log-Mel features of each window as if zero-padded to 30 s: shape [batch, n_mels, 3000].

    Zero audio maps to the clamp floor of Whisper's normalisation (max - 8 in log10 units,
    i.e. the normalised maximum minus 2), so the STFT runs only over the real audio (plus one
    second of zeros for the boundary frames) and the rest is filled with that floor.
    """
    extractor = model.feature_extractor
    frames = WINDOW_SAMPLES // extractor.hop_length
    batch = np.empty((len(windows), extractor.mel_filters.shape[0], frames), dtype=np.float32)
    for row, window in enumerate(windows):
        samples = min(WINDOW_SAMPLES, window.audio.shape[0] + SAMPLE_RATE)
        padded = np.zeros(samples, dtype=np.float32)
        padded[: window.audio.shape[0]] = window.audio[:samples]
        mel = extractor(padded, padding=160)[:, : samples // extractor.hop_length]
        batch[row, :, : mel.shape[1]] = mel
        batch[row, :, mel.shape[1] :] = mel.max() - 2.0
    return batch


def encoder_seconds(window: AudioWindow, floor: float = 0.0) -> float:
    """Encoder context of a trimmed window: its audio plus a margin, rounded up to a bucket.

    Buckets make the context (and so the transcript) of a window independent of which other
    windows share its batch, as long as batches are formed per bucket (the server's batcher does).
    """
    needed = window.duration + TRIM_MARGIN_SECONDS
    return min(30.0, max(floor, math.ceil(needed / TRIM_BUCKET_SECONDS) * TRIM_BUCKET_SECONDS))


def trimmed(features: np.ndarray, windows: Sequence[AudioWindow], floor: float = 0.0) -> np.ndarray:
    """Features cut to the largest encoder context in the batch (at most 30 s)."""
    frames = round(max(encoder_seconds(window, floor) for window in windows) * 100)
    return np.ascontiguousarray(features[:, :, : min(features.shape[2], frames)])


def encode(model: LoadedModel, features: np.ndarray) -> Any:
    """Encoder output of a batch of features.

    On a CPU the encoder is slower batched than one window at a time (15-s windows, batch 8:
    1.41 s against 0.92 s here; 30-s windows: 4.2 s against 3.5 s): its attention works on
    memory-bound matrices, so the windows are encoded one by one and the outputs joined
    (identical values); the decoder still gets the whole batch.
    """
    import ctranslate2

    if model.device != "cpu" or features.shape[0] == 1:
        return model.whisper.encode(ctranslate2.StorageView.from_array(features), to_cpu=model.device == "cpu")
    parts = [
        np.asarray(model.whisper.encode(ctranslate2.StorageView.from_array(features[i : i + 1]), to_cpu=True))
        for i in range(features.shape[0])
    ]
    return ctranslate2.StorageView.from_array(np.concatenate(parts))


def token_limit(windows: Sequence[AudioWindow], options: DecodingOptions, prompt_tokens: int) -> int:
    """CTranslate2's max_length (prompt included) for a batch of windows: see
    DecodingOptions.max_tokens_per_second."""
    if options.max_tokens_per_second is None:
        return MAX_TEXT_TOKENS
    longest = max(window.duration for window in windows)
    text_tokens = MIN_TOKEN_LIMIT + math.ceil(options.max_tokens_per_second * longest)
    return min(MAX_TEXT_TOKENS, prompt_tokens + text_tokens)


def build_prompt(tokenizer: Any, options: DecodingOptions) -> list[int]:
    """[<|startofprev|> hotwords prompt] <|startoftranscript|> lang task [<|notimestamps|>]."""
    context = " ".join(part.strip() for part in (options.hotwords, options.initial_prompt) if part and part.strip())
    prompt: list[int] = []
    if context:
        prompt = [tokenizer.sot_prev, *tokenizer.encode(" " + context)[-(MAX_TEXT_TOKENS // 2 - 1) :]]
    prompt.extend(tokenizer.sot_sequence)
    if options.without_timestamps:
        prompt.append(tokenizer.no_timestamps)
    return prompt


def suppressed_tokens(tokenizer: Any) -> list[int]:
    """Non-speech symbols and special tokens, as faster-whisper and openai/whisper suppress, and the
    tokens of scripts the language is not written in (see script_tokens)."""
    specials = [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm]
    specials.append(tokenizer.no_speech)
    language = tokenizer.language_code if tokenizer.task == tokenizer.transcribe else None  # not when translating
    foreign = foreign_script_tokens(tokenizer.tokenizer, language)
    return sorted(set(tokenizer.non_speech_tokens) | set(specials) | foreign)


def _sampling_kwargs(options: DecodingOptions, temperature: float) -> dict[str, Any]:
    if temperature > 0:
        return {
            "beam_size": 1,
            "num_hypotheses": options.best_of,
            "sampling_topk": 0,
            "sampling_temperature": temperature,
        }
    return {"beam_size": options.beam_size, "patience": options.patience}


def generate(
    model: LoadedModel,
    encoded: Any,
    prompts: list[list[int]],
    tokenizer: Any,
    options: DecodingOptions,
    temperature: float,
    max_length: int = MAX_TEXT_TOKENS,
) -> list[Decoded]:
    """One generate call for a batch; returns the best hypothesis of each item."""
    if temperature > 0 and options.best_of > 1 and model.device == "cpu":
        return _best_sampled(model, encoded, prompts, tokenizer, options, temperature, max_length)
    results = model.whisper.generate(
        encoded,
        prompts,
        length_penalty=options.length_penalty,
        repetition_penalty=options.repetition_penalty,
        no_repeat_ngram_size=options.no_repeat_ngram_size,
        max_length=max_length,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=options.suppress_blank,
        suppress_tokens=suppressed_tokens(tokenizer),
        max_initial_timestamp_index=round(options.max_initial_timestamp / TIME_PRECISION),
        **_sampling_kwargs(options, temperature),
    )
    decoded = []
    for result in results:
        tokens = tuple(result.sequences_ids[0])
        cumulative = result.scores[0] * (len(tokens) ** options.length_penalty)
        text = tokenizer.decode([t for t in tokens if t < tokenizer.eot]).strip()
        decoded.append(
            Decoded(
                tokens=tokens,
                text=text,
                avg_logprob=cumulative / (len(tokens) + 1),
                no_speech_prob=result.no_speech_prob,
                compression_ratio=compression_ratio(text),
                temperature=temperature,
            )
        )
    return decoded


def _best_sampled(
    model: LoadedModel,
    encoded: Any,
    prompts: list[list[int]],
    tokenizer: Any,
    options: DecodingOptions,
    temperature: float,
    max_length: int,
) -> list[Decoded]:
    """`best_of` samples drawn one after another, the likeliest of each item kept.

    On a CPU this is as fast as drawing them together, and needs a fifth of the memory: CTranslate2
    gives every hypothesis its own copy of the encoder output's cross-attention keys and values
    (~18 MB each for 30 s with tiny), and a 2-hour recording's peak was one such fallback.
    """
    single = replace(options, best_of=1)
    best: list[Decoded] | None = None
    for _ in range(options.best_of):
        drawn = generate(model, encoded, prompts, tokenizer, single, temperature, max_length)
        best = drawn if best is None else [max(a, b, key=lambda d: d.avg_logprob) for a, b in zip(best, drawn)]
    assert best is not None
    return best


def is_silence(decoded: Decoded, options: DecodingOptions) -> bool:
    """Whisper's own no-speech rule: the no-speech token is likely and the text is unlikely."""
    return decoded.no_speech_prob > options.no_speech_threshold and decoded.avg_logprob < options.log_prob_threshold


def needs_fallback(decoded: Decoded, options: DecodingOptions) -> bool:
    if is_silence(decoded, options):
        return False
    too_repetitive = decoded.compression_ratio > options.compression_ratio_threshold
    return too_repetitive or decoded.avg_logprob < options.log_prob_threshold


def _better(current: Decoded, candidate: Decoded, options: DecodingOptions) -> Decoded:
    """Prefer a result that passes the repetition check, then the higher log probability."""
    limit = options.compression_ratio_threshold

    def rank(item: Decoded) -> tuple[bool, float]:
        return (item.compression_ratio <= limit, item.avg_logprob)

    return candidate if rank(candidate) > rank(current) else current


def _subset(model: LoadedModel, features: np.ndarray, encoded: Any, rows: list[int]) -> Any:
    """Encoder output of some rows of a batch: sliced when it lives in host memory, else encoded again."""
    import ctranslate2

    if model.device == "cpu":
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[rows]))
    return encode(model, np.ascontiguousarray(features[rows]))


def decode_with_fallback(
    model: LoadedModel,
    features: np.ndarray,
    encoded: Any,
    prompts: list[list[int]],
    tokenizer: Any,
    options: DecodingOptions,
    max_length: int = MAX_TEXT_TOKENS,
) -> list[Decoded]:
    """Decode at the first temperature; re-decode only the failing items at the next ones."""
    temperatures = options.temperatures or (0.0,)
    best = generate(model, encoded, prompts, tokenizer, options, temperatures[0], max_length)
    for temperature in temperatures[1:]:
        failing = [i for i, item in enumerate(best) if needs_fallback(item, options)]
        if not failing:
            break
        subset = _subset(model, features, encoded, failing)
        with model.heavy_step():
            retried = generate(
                model, subset, [prompts[i] for i in failing], tokenizer, options, temperature, max_length
            )
        for index, candidate in zip(failing, retried):
            chosen = candidate if not needs_fallback(candidate, options) else _better(best[index], candidate, options)
            best[index] = chosen
    return best


def confidence(avg_logprob: float, no_speech_prob: float) -> float:
    """A 0–1 score: the mean token probability, discounted by the chance of no speech."""
    mean_token_probability = math.exp(min(0.0, avg_logprob))
    return round(mean_token_probability * (1.0 - no_speech_prob), 4)
