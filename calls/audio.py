"""Recognising call recordings by their content, and converting them to what Bitrix24 takes.

Phones label files unreliably (3GP as video, AMR as octet-stream), so the format is read from
the first bytes, never from the name or Content-Type. Bitrix24 attaches only MP3 and WAV
(REFERENCE 4.3); everything else is converted to MP3 with the ffmpeg binary that the
imageio-ffmpeg wheel ships, so no system package is needed.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg

# Formats Bitrix24 attaches as they are.
BITRIX24_FORMATS = {"mp3", "wav"}
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
    "3gp": "audio/3gpp",
    "amr": "audio/amr",
    "ogg": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "webm": "audio/webm",
}
SNIFF_BYTES = 64
CONVERT_TIMEOUT_SECONDS = 300

# ISO base media brands phones use for audio (m4a) and 3GPP recordings.
_THREE_GP_BRANDS = (b"3gp", b"3g2")


class ConversionFailed(Exception):
    pass


def audio_format_sniff(head: bytes) -> str | None:  # noqa: PLR0911 - one return per format
    """The audio container of a file from its first bytes, or None when it is not audio."""
    if head.startswith(b"#!AMR"):  # AMR-NB and AMR-WB ("#!AMR-WB\n")
        return "amr"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska/WebM (Opus from some recorder apps)
        return "webm"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "3gp" if brand.startswith(_THREE_GP_BRANDS) else "m4a"
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF:
        layer_bits = (head[1] >> 1) & 0b11
        if head[1] & 0xF6 == 0xF0:  # ADTS: sync word, layer 00
            return "aac"
        if head[1] & 0xE0 == 0xE0 and layer_bits != 0:  # MPEG audio frame sync, layer I-III
            return "mp3"
    return None


def ffmpeg_binary() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def audio_convert_to_mp3(source: Path) -> bytes:
    """Decodes any audio ffmpeg reads and encodes it as mono MP3 (speech needs no more)."""
    with tempfile.TemporaryDirectory(prefix="simtrix-audio-") as workdir:
        target = Path(workdir) / "out.mp3"
        command = [
            ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-i", str(source), "-vn", "-ac", "1", "-codec:a", "libmp3lame", "-q:a", "5",
            str(target),
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, capture_output=True, timeout=CONVERT_TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ConversionFailed("ffmpeg took too long") from exc
        if result.returncode != 0 or not target.exists() or target.stat().st_size == 0:
            message = result.stderr.decode(errors="replace").strip().splitlines()
            raise ConversionFailed(message[-1] if message else "ffmpeg produced no audio")
        return target.read_bytes()
