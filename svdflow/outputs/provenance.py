"""Provenance inside the files: where each format keeps the job's JSON, and reading it back.

- video (mp4, hevc, prores, webm) and masters (mkv): the container's `comment` tag, which ffmpeg
  copies on a stream-copy remux (`ffmpeg -i in.mp4 -c copy out.mp4`);
- PNG frames: an iTXt chunk with the keyword `svdflow` (zlib-compressed UTF-8);
- GIF: a comment extension;
- WebP: an XMP packet, the JSON as the text of its `svdflow:provenance` element.
`svdflow inspect FILE` and `svdflow rerender FILE` read it with `read_provenance`.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess

from pydantic import ValidationError

from svdflow.errors import UsageError
from svdflow.outputs.codecs import ffmpeg_exe
from svdflow.outputs.entry import PROVENANCE_FORMAT, Provenance

PNG_KEYWORD = "svdflow"
XMP_NAMESPACE = "https://svdflow.dev/ns/provenance/1/"
_XMP_TEXT = re.compile(r"<svdflow:provenance>(.*?)</svdflow:provenance>", re.DOTALL)
# What svdflow 0.1 put in an mp4's comment: the content key alone.
_RELEASE_0_1_COMMENT = re.compile(r"^svdflow key=[0-9a-f]{64}$")


def xmp_packet(text: str) -> bytes:
    """An XMP packet holding `text` (WebP's metadata is XMP or EXIF; XMP is the one for custom fields)."""
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:svdflow="{XMP_NAMESPACE}">'
            f"<svdflow:provenance>{html.escape(text, quote=False)}</svdflow:provenance>"
            '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>').encode()


def _from_xmp(packet: bytes | str | None) -> str | None:
    if packet is None:
        return None
    text = packet.decode("utf-8", "replace") if isinstance(packet, bytes) else packet
    match = _XMP_TEXT.search(text)
    return html.unescape(match.group(1)) if match else None


def ffmetadata(comment: str) -> str:
    """An ffmetadata file setting the global `comment` tag (what `parse_ffmetadata` reads back)."""
    escaped = "".join("\\" + ch if ch in "=;#\\\n" else ch for ch in comment)
    return f";FFMETADATA1\ncomment={escaped}\n"


def parse_ffmetadata(text: str) -> dict[str, str]:
    """ffmpeg's ffmetadata output as {lowercased key: value} (Matroska writes its tags in capitals).

    ffmetadata escapes '=', ';', '#', '\\' and newline with a backslash, so a value may span physical
    lines; only an unescaped newline ends an entry. The first (global) value wins.
    """
    tags: dict[str, str] = {}
    key: list[str] = []
    value: list[str] = []
    in_value = False
    chars = iter(text + "\n")
    for ch in chars:
        if ch == "\\":
            (value if in_value else key).append(next(chars, ""))
        elif ch == "\n":
            if in_value:
                tags.setdefault("".join(key).lower(), "".join(value))
            key, value, in_value = [], [], False
        elif ch == "=" and not in_value:
            in_value = True
        else:
            (value if in_value else key).append(ch)
    return tags


def read_comment(path: str) -> str | None:
    """The comment tag of a local video file, or None. Raises UsageError when ffmpeg cannot read it."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", path, "-f", "ffmetadata", "-"],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"{path}: not a video or image svdflow can read ({lines[-1] if lines else 'ffmpeg failed'}); "
                         "pass a file svdflow wrote")
    return parse_ffmetadata(proc.stdout.decode("utf-8", "replace")).get("comment")


def embedded_text(path: str) -> str | None:
    """The provenance text stored in a local file (or the first PNG of a frames folder), or None."""
    from PIL import Image, UnidentifiedImageError

    if os.path.isdir(path):
        pngs = sorted(name for name in os.listdir(path) if name.endswith(".png"))
        if not pngs:
            raise UsageError(f"{path}: a folder without PNG frames; pass a file svdflow wrote")
        path = os.path.join(path, pngs[0])
    with open(path, "rb") as f:
        head = f.read(12)
    if head.startswith((b"\x89PNG", b"GIF8")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        try:
            with Image.open(path) as image:
                if image.format == "PNG":
                    return image.text.get(PNG_KEYWORD)
                if image.format == "GIF":
                    comment = image.info.get("comment")
                    return comment.decode("utf-8", "replace") if comment else None
                return _from_xmp(image.info.get("xmp"))
        except (UnidentifiedImageError, OSError) as exc:
            raise UsageError(f"{path}: a damaged image ({exc}); pass a file svdflow wrote") from exc
    return read_comment(path)


def read_provenance(path: str) -> Provenance:
    """The provenance a file svdflow wrote carries. UsageError (naming the file and what to do) when
    it is missing, carries none, or carries what this svdflow cannot read."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file; pass a video, image or frames folder svdflow wrote")
    text = embedded_text(path)
    if text is None:
        raise UsageError(f"{path}: carries no svdflow provenance (written by another program, or its metadata "
                         "was stripped); pass a file svdflow wrote, or use `svdflow rerender "
                         "INDEX --id ID` with the run's index.json")
    if _RELEASE_0_1_COMMENT.match(text):
        raise UsageError(f"{path}: written by svdflow 0.1, which stored only the content key ({text[len('svdflow key='):][:12]}…); "
                         "use `svdflow rerender INDEX --id ID` with the run's index.json")
    try:
        raw = json.loads(text)
    except ValueError:
        raw = None
    version = raw.get("svdflow_provenance") if isinstance(raw, dict) else None
    if not isinstance(version, int):
        raise UsageError(f"{path}: its comment is not svdflow provenance; pass a file svdflow wrote")
    if version > PROVENANCE_FORMAT:
        raise UsageError(f"{path}: provenance format {version} was written by a newer svdflow (this one reads "
                         f"{PROVENANCE_FORMAT}); upgrade svdflow (pip install -U svdflow)")
    try:
        return Provenance.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "(the JSON)"
        raise UsageError(f"{path}: its svdflow provenance does not fit the format this svdflow reads ({where}: "
                         f"{error['msg']}); read it with the svdflow that wrote it") from exc
