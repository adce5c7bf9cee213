"""`dattavani-asr transcribe`: files or URLs, one after another (the work is in `transcribe_job`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ConfigOption, settings_for
from .options import (
    BatchSizeOption,
    BeamSizeOption,
    ChannelsAsSpeakersOption,
    ComputeTypeOption,
    CpuThreadsOption,
    DeviceIndexOption,
    DeviceOption,
    DiarizeOption,
    FallbackModelOption,
    HotwordsOption,
    InitialPromptOption,
    LanguageOption,
    MaxSpeakersOption,
    MinConfidenceOption,
    MinSpeakersOption,
    ModelOption,
    NumSpeakersOption,
    TaskOption,
    TrimEncoderOption,
    VadOption,
    WordTimestampsOption,
)


def transcribe(
    # Strings, not Paths: typer's Path would turn http://host into http:/host.
    inputs: Annotated[list[str], typer.Argument(help="Audio or video files, or http(s) URLs", show_default=False)],
    model: ModelOption = None,
    language: LanguageOption = None,
    task: TaskOption = None,
    output_format: Annotated[str | None, typer.Option("--format", "-f", help="txt,srt,vtt,json,tsv or all")] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-d", help="Default: <input dir>/gen-transcript (./gen-transcript for URLs)"),
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="'-' writes the first format to stdout")] = None,
    word_timestamps: WordTimestampsOption = None,
    beam_size: BeamSizeOption = None,
    device: DeviceOption = None,
    compute_type: ComputeTypeOption = None,
    cpu_threads: CpuThreadsOption = None,
    device_index: DeviceIndexOption = None,
    vad: VadOption = None,
    trim_encoder: TrimEncoderOption = None,
    start: Annotated[float | None, typer.Option(min=0.0, help="Start of the clip range (s)")] = None,
    end: Annotated[float | None, typer.Option(min=0.0, help="End of the clip range (s)")] = None,
    channel: Annotated[int | None, typer.Option(min=0, help="Transcribe one channel (0 = left)")] = None,
    initial_prompt: InitialPromptOption = None,
    hotwords: HotwordsOption = None,
    fallback_model: FallbackModelOption = None,
    min_confidence: MinConfidenceOption = None,
    batch_size: BatchSizeOption = None,
    diarize: DiarizeOption = None,
    num_speakers: NumSpeakersOption = None,
    min_speakers: MinSpeakersOption = None,
    max_speakers: MaxSpeakersOption = None,
    channels_as_speakers: ChannelsAsSpeakersOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print transcripts")] = False,
    config: ConfigOption = None,
) -> None:
    """Transcribe files or URLs; write <input dir>/gen-transcript/<name>.<ext> and print the text.

    A URL's transcript goes to ./gen-transcript/<name>.<ext> in the current directory.
    """
    settings = settings_for(
        config, model=model, language=language, task=task, formats=output_format, output_dir=output_dir,
        word_timestamps=word_timestamps, beam_size=beam_size, device=device, compute_type=compute_type,
        cpu_threads=cpu_threads, device_index=device_index, vad=vad, trim_encoder=trim_encoder,
        initial_prompt=initial_prompt, hotwords=hotwords, fallback_model=fallback_model,
        min_confidence=min_confidence, batch_size=batch_size, diarize=diarize, num_speakers=num_speakers,
        min_speakers=min_speakers, max_speakers=max_speakers, channels_as_speakers=channels_as_speakers,
    )  # fmt: skip
    from .transcribe_job import TranscribeJob

    job = TranscribeJob(settings, output=output, quiet=quiet, start=start, end=end, channel=channel)
    failures = job.run(inputs)
    if failures:
        raise typer.Exit(failures[0].exit_code)
