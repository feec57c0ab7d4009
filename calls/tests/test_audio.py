"""Format sniffing and MP3 conversion on real audio made with the bundled ffmpeg."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from calls.audio import audio_convert_to_mp3, audio_format_sniff, ffmpeg_binary

# (extension, ffmpeg output options, the format the sniffer must see)
FORMATS = [
    ("mp3", ["-codec:a", "libmp3lame"], "mp3"),
    ("wav", ["-codec:a", "pcm_s16le"], "wav"),
    ("m4a", ["-codec:a", "aac"], "m4a"),
    ("aac", ["-codec:a", "aac", "-f", "adts"], "aac"),
    ("amr", ["-ar", "8000", "-codec:a", "libopencore_amrnb", "-b:a", "12.2k"], "amr"),
    ("3gp", ["-ar", "8000", "-codec:a", "libopencore_amrnb", "-b:a", "12.2k"], "3gp"),
    ("ogg", ["-codec:a", "libopus"], "ogg"),
]


def make_audio(directory: Path, extension: str, options: list[str], seconds: float = 1.0) -> Path:
    target = directory / f"tone.{extension}"
    subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=440:duration={seconds}", "-ac", "1", *options, str(target)],
        check=True,
    )  # fmt: skip
    return target


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("audio")
    return {ext: make_audio(directory, ext, options) for ext, options, _ in FORMATS}


@pytest.mark.parametrize(("extension", "expected"), [(f[0], f[2]) for f in FORMATS])
def test_real_audio_is_recognised_by_content(
    audio_files: dict[str, Path], extension: str, expected: str
) -> None:
    assert audio_format_sniff(audio_files[extension].read_bytes()[:64]) == expected


@pytest.mark.parametrize(
    "content",
    [b"%PDF-1.7 ...", b"\x89PNG\r\n\x1a\n....", b"<html><body>", b"PK\x03\x04zip", b"", b"hello"],
)
def test_non_audio_is_not_recognised(content: bytes) -> None:
    assert audio_format_sniff(content) is None


@pytest.mark.parametrize("extension", ["m4a", "amr", "ogg", "3gp"])
def test_phone_formats_convert_to_mp3(audio_files: dict[str, Path], extension: str) -> None:
    mp3 = audio_convert_to_mp3(audio_files[extension])
    assert audio_format_sniff(mp3[:64]) == "mp3"
    assert len(mp3) > 1000
