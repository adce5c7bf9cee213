"""Command-line options made from the one declaration of each option (`dattavani_asr.core.options`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..core.options import (
    BATCH_SIZE,
    BEAM_SIZE,
    CHANNELS_AS_SPEAKERS,
    COMPUTE_TYPE,
    CPU_THREADS,
    DEVICE,
    DEVICE_INDEX,
    DIARIZE,
    FALLBACK_MODEL,
    HOTWORDS,
    INITIAL_PROMPT,
    LANGUAGE,
    MAX_SPEAKERS,
    MIN_CONFIDENCE,
    MIN_SPEAKERS,
    MODEL,
    NUM_SPEAKERS,
    TASK,
    TRIM_ENCODER,
    VAD,
    WORD_TIMESTAMPS,
    Option,
)


def _bound(option: Option, value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if isinstance(option.default, int) and not isinstance(option.default, bool) else value


def option(declared: Option) -> Any:
    """A typer option with the declared flag (and short flag), range and help.

    Its default is None, "not given": the value then comes from the environment, the config file or
    the declared default (`config.load_settings`).
    """
    flags = [declared.flag, *([declared.short] if declared.short else [])]
    extra = f" [one of: {', '.join(declared.choices)}]" if declared.choices else ""
    return typer.Option(
        *flags, min=_bound(declared, declared.ge), max=_bound(declared, declared.le), help=declared.help + extra
    )


ModelOption = Annotated[str | None, option(MODEL)]
LanguageOption = Annotated[str | None, option(LANGUAGE)]
TaskOption = Annotated[str | None, option(TASK)]
BeamSizeOption = Annotated[int | None, option(BEAM_SIZE)]
BatchSizeOption = Annotated[int | None, option(BATCH_SIZE)]
WordTimestampsOption = Annotated[bool | None, option(WORD_TIMESTAMPS)]
InitialPromptOption = Annotated[str | None, option(INITIAL_PROMPT)]
HotwordsOption = Annotated[str | None, option(HOTWORDS)]
VadOption = Annotated[bool | None, option(VAD)]
TrimEncoderOption = Annotated[bool | None, option(TRIM_ENCODER)]
FallbackModelOption = Annotated[str | None, option(FALLBACK_MODEL)]
MinConfidenceOption = Annotated[float | None, option(MIN_CONFIDENCE)]
DeviceOption = Annotated[str | None, option(DEVICE)]
ComputeTypeOption = Annotated[str | None, option(COMPUTE_TYPE)]
CpuThreadsOption = Annotated[int | None, option(CPU_THREADS)]
DiarizeOption = Annotated[bool | None, option(DIARIZE)]
NumSpeakersOption = Annotated[int | None, option(NUM_SPEAKERS)]
MinSpeakersOption = Annotated[int | None, option(MIN_SPEAKERS)]
MaxSpeakersOption = Annotated[int | None, option(MAX_SPEAKERS)]
ChannelsAsSpeakersOption = Annotated[bool | None, option(CHANNELS_AS_SPEAKERS)]
DeviceIndexOption = Annotated[str | None, option(DEVICE_INDEX)]
