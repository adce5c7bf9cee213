"""Choose the device and compute type CTranslate2 runs on."""

from __future__ import annotations

from ..core.errors import InvalidOptionError

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count()) > 0
    except RuntimeError:
        return False


def resolve_device(device: str) -> str:
    """`auto` means CUDA when a GPU is visible, otherwise the CPU."""
    if device not in DEVICES:
        raise InvalidOptionError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise InvalidOptionError("device cuda requested but no CUDA GPU is visible to CTranslate2")
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    """`auto` means int8 on the CPU and float16 on a GPU; other values must be supported there."""
    import ctranslate2

    if compute_type == "auto":
        return "float16" if device == "cuda" else "int8"
    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type not in supported and compute_type != "default":
        raise InvalidOptionError(
            f"compute type {compute_type!r} is not supported on {device}: use one of {', '.join(sorted(supported))}"
        )
    return compute_type
