"""Photos attached to cases: checked, stripped of their location, stored by their sha256.

A photo is uploaded before the step that attaches it (opening a case, accepting or handling it),
so that a phone on a slow network sends the large file once and the step itself stays small.
`store` checks what it is given by its content (JPEG, PNG or WebP, decoded by Pillow, within a
size and a pixel limit), removes the location unless the uploader keeps it on purpose, writes the
file under a folder outside the database (`<root>/<sha256[:2]>/<sha256>`, written to a temporary
file and renamed into place, so a reader never sees half a file) and records an unattached `photo`
row. The step that attaches photos names them by sha256: its event's data carries the hashes, so
the chain covers the files, and the step links the rows to its case in its own transaction.

The location is removed without re-encoding the picture: the EXIF GPS directory is blanked in
place (its entries and values become zero bytes, so every other offset in the EXIF block stays
valid), and XMP packets, which may repeat the location in many spellings, are dropped whole. A
block too broken to edit safely is dropped whole too. The pixels are never touched, so a photo
kept as evidence loses no quality.

Nothing here knows HTTP or Flask: the storage root is passed in.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageOps
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .errors import Invalid
from .models import Photo

MAX_BYTES = 10 * 1024 * 1024  # one photo's file, after stripping
MAX_PIXELS = 50_000_000  # width × height; more is refused before any decoding
MAX_PER_STEP = 6  # photos one opening or one task completion attaches (the forms' maxItems)
THUMB_SIZE = 320  # the longer side of a thumbnail, in pixels
HEX64 = re.compile(r"[0-9a-f]{64}")
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
GPS_IFD = 0x8825

# Messages of the per-field errors (the web layer translates them by these exact words).
TOO_LARGE = f"must be at most {MAX_BYTES // (1024 * 1024)} MB"
NOT_AN_IMAGE = "must be a JPEG, PNG or WebP image"
UNREADABLE = "is not a readable image"
TOO_MANY_PIXELS = f"must have at most {MAX_PIXELS // 1_000_000} million pixels"
EMPTY = "required"
NOT_YOURS = "not a photo you uploaded"
NOT_A_HASH = "not a photo's sha256"
REPEATED = "must not repeat"
TOO_MANY = f"at most {MAX_PER_STEP} photos"
NO_UPLOADER = "only officers attach photos"


@dataclass(frozen=True)
class Upload:
    """What `store` kept: the stored file's sha256 and what it is."""

    sha256: str
    content_type: str
    size: int
    kept_location: bool


# ----------------------------------------------------------------------------- the files


class PhotoFiles:
    """The folder of photo files, each named by the sha256 of its bytes, and their thumbnails."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if not HEX64.fullmatch(sha256):
            raise ValueError("not a sha256")
        return self.root / sha256[:2] / sha256

    def thumb_path(self, sha256: str) -> Path:
        self.path(sha256)  # refuses anything but a sha256, as for the photo itself
        return self.root / "thumbs" / sha256[:2] / f"{sha256}.jpg"

    def write(self, data: bytes) -> str:
        """Store bytes under their sha256 (a file already there with those bytes stays)."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path(sha256)
        if not (path.is_file() and _file_sha256(path) == sha256):
            _write_atomically(path, data)
        return sha256

    def thumbnail(self, sha256: str) -> bytes:
        """A small JPEG of a stored photo (made once, then kept beside it): upright, no metadata.
        Raises FileNotFoundError when the photo is not stored."""
        path = self.thumb_path(sha256)
        if path.is_file():
            return path.read_bytes()
        with Image.open(self.path(sha256)) as img:
            if img.format == "JPEG":
                img.draft("RGB", (THUMB_SIZE, THUMB_SIZE))  # decode at 1/2…1/8 scale: fast
            small = ImageOps.exif_transpose(img)
            small.thumbnail((THUMB_SIZE, THUMB_SIZE))
            if small.mode != "RGB":
                rgba = small.convert("RGBA")
                small = Image.new("RGB", rgba.size, "white")
                small.paste(rgba, mask=rgba.getchannel("A"))
            out = io.BytesIO()
            small.save(out, "JPEG", quality=80)
        data = out.getvalue()
        _write_atomically(path, data)
        return data


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- uploading


def store(
    session: Session,
    root: Path | str,
    data: bytes,
    *,
    uploader: str,
    keep_location: bool,
    now: datetime,
) -> Upload:
    """Check a photo, strip its location unless `keep_location`, write the file and record an
    unattached photo row for `uploader`, in one transaction of its own (committed here: the step
    that attaches the photo runs later, in its own). Raises Invalid ({"file": message}) and then
    stores nothing."""
    content_type, stored, kept = prepare(data, keep_location)
    sha256 = PhotoFiles(root).write(stored)
    if (
        _waiting(session, uploader, sha256) is None
    ):  # the same file uploaded again before it was attached: one row
        session.add(
            Photo(
                sha256=sha256,
                case_id=None,
                uploaded_by=uploader,
                uploaded_at=now,
                content_type=content_type,
                size=len(stored),
                kept_location=kept,
            )
        )
    session.commit()
    return Upload(sha256, content_type, len(stored), kept)


def prepare(data: bytes, keep_location: bool) -> tuple[str, bytes, bool]:
    """(content type, the bytes to store, whether they keep metadata that stripping removes):
    the photo checked by its content, and without its location unless `keep_location`. Raises
    Invalid with a message for the field `file`."""
    if not data:
        raise _refused(EMPTY)
    if len(data) > MAX_BYTES:
        raise _refused(TOO_LARGE)
    kind = sniff(data)
    if kind is None:
        raise _refused(NOT_AN_IMAGE)
    try:
        if kind == "JPEG":
            data = primary_jpeg(data)
        stripped = strip_location(kind, data)
    except _Malformed:
        raise _refused(UNREADABLE) from None
    stored = data if keep_location else stripped
    _check_image(kind, stored)
    if not keep_location and has_gps(stored):  # never store a location by accident
        raise _refused(UNREADABLE)
    return CONTENT_TYPES[kind], stored, keep_location and stripped != data


def sniff(data: bytes) -> str | None:
    """The format by its magic bytes (JPEG, PNG, WEBP), else None: a name or a declared content
    type says nothing."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def has_gps(data: bytes) -> bool:
    """Whether Pillow finds a GPS directory with entries in the image's EXIF."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return bool(img.getexif().get_ifd(GPS_IFD))
    except Exception:
        return False


def _check_image(kind: str, data: bytes) -> None:
    """Pillow must read the whole picture as the format its magic bytes said, within the limit."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != kind:
                raise _refused(NOT_AN_IMAGE)
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise _refused(TOO_MANY_PIXELS)
            if kind == "JPEG":  # every scan is still decoded, at 1/8 scale
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            img.load()
    except Invalid:
        raise
    except Exception:  # Pillow's many ways of saying "broken": OSError, SyntaxError, bombs …
        raise _refused(UNREADABLE) from None


def _refused(message: str) -> Invalid:
    return Invalid("the photo cannot be used", {"file": message})


# ----------------------------------------------------------------------------- the location


class _Malformed(Exception):
    """A container too broken to edit."""


def strip_location(kind: str, data: bytes) -> bytes:
    """The image without its location: EXIF GPS blanked in place, XMP dropped. Bytes that carry
    no location come back unchanged."""
    return {"JPEG": _strip_jpeg, "PNG": _strip_png, "WEBP": _strip_webp}[kind](data)


XMP_HEADERS = (b"http://ns.adobe.com/xap/1.0/\x00", b"http://ns.adobe.com/xmp/extension/\x00")
EXIF_HEADER = b"Exif\x00\x00"


MPF_HEADER = b"MPF\x00"
RST = range(0xD0, 0xD8)


def primary_jpeg(data: bytes) -> bytes:
    """The file's first picture alone, up to its end-of-image marker, without a multi-picture
    (MPF) directory. Phones put more after it: the other frames of a multi-picture JPEG, a
    motion photo's video, an HDR gain map, a picture appended whole; each may carry metadata of
    its own, a location included, which stripping the first picture's would not reach. A plain
    JPEG comes back unchanged."""
    drop: list[tuple[int, int]] = []
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            raise _Malformed("no marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of the first picture: nothing after it is kept
            end = pos + 2
            out = bytearray(data[:end])
            for start, stop in reversed(drop):
                del out[start:stop]
            return data if end == len(data) and not drop else bytes(out)
        if marker in (0x01, 0xD8) or marker in RST:  # markers without a length
            pos += 2
            continue
        if pos + 4 > len(data):
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise _Malformed("segment past the end")
        if marker == 0xE2 and data.startswith(MPF_HEADER, pos + 4):
            drop.append((pos, end))
        pos = end
        if marker == 0xDA:  # entropy-coded data up to the next marker (FF 00 and RSTn are data)
            while pos + 1 < len(data) and not (
                data[pos] == 0xFF and data[pos + 1] not in (0x00, 0xFF) and data[pos + 1] not in RST
            ):
                pos += 1
    raise _Malformed("no end of image")


def _strip_jpeg(data: bytes) -> bytes:
    out = bytearray(data)
    drop: list[tuple[int, int]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise _Malformed("no marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no metadata after this
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise _Malformed("segment past the end")
        body = pos + 4
        if marker == 0xE1 and data.startswith(EXIF_HEADER, body):
            if not _blank_gps(out, body + len(EXIF_HEADER), end):
                drop.append((pos, end))
        elif marker == 0xE1 and any(data.startswith(h, body) for h in XMP_HEADERS):
            drop.append((pos, end))
        pos = end
    for start, end in reversed(drop):
        del out[start:end]
    return bytes(out)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Text chunks that hold XMP or a whole EXIF block as text (ImageMagick's "Raw profile type …").
PNG_METADATA_KEYWORDS = (b"XML:com.adobe.xmp", b"Raw profile type exif", b"Raw profile type APP1")


def _strip_png(data: bytes) -> bytes:
    out = bytearray(PNG_SIGNATURE)
    pos, changed = len(PNG_SIGNATURE), False
    while pos < len(data):
        if pos + 12 > len(data):
            raise _Malformed("chunk past the end")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise _Malformed("chunk past the end")
        body = bytearray(data[pos + 8 : pos + 8 + length])
        if kind == b"eXIf":
            start = len(EXIF_HEADER) if body.startswith(EXIF_HEADER) else 0
            if not _blank_gps(body, start, len(body)):
                pos, changed = end, True
                continue
            changed = changed or body != data[pos + 8 : pos + 8 + length]
        elif kind in (b"tEXt", b"zTXt", b"iTXt") and body.split(b"\x00", 1)[0] in (
            PNG_METADATA_KEYWORDS
        ):
            pos, changed = end, True
            continue
        out += struct.pack(">I", length) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        pos = end
        if kind == b"IEND":
            break
    return bytes(out) if changed else data


def _strip_webp(data: bytes) -> bytes:
    chunks = bytearray()
    pos, dropped_xmp = 12, False
    vp8x = None  # where the VP8X flags byte lands in `chunks`
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        end = pos + 8 + length + (length & 1)
        if pos + 8 + length > len(data):
            raise _Malformed("chunk past the end")
        body = bytearray(data[pos + 8 : pos + 8 + length])
        if kind == b"XMP ":
            dropped_xmp = True
        elif kind == b"EXIF" and not _blank_gps(
            body, len(EXIF_HEADER) if body.startswith(EXIF_HEADER) else 0, len(body)
        ):
            pass  # a broken EXIF block: dropped whole
        else:
            if kind == b"VP8X":
                vp8x = len(chunks) + 8
            chunks += data[pos : pos + 8] + body + (b"\x00" if length & 1 else b"")
        pos = end
    if dropped_xmp and vp8x is not None:
        chunks[vp8x] &= ~0x04 & 0xFF  # the "has XMP" flag
    if bytes(chunks) == data[12:pos]:
        return data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + bytes(chunks)


# TIFF field types and the size of one value, in bytes.
TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


def _blank_gps(buf: bytearray, start: int, end: int) -> bool:
    """Blank the GPS directory of the TIFF structure in buf[start:end] (an EXIF block) in place:
    its values and entries become zero bytes and its entry count zero, which leaves an empty but
    valid directory and every other offset as it was. False when the block cannot be read safely
    (the caller then drops it whole); True otherwise, whether or not it had a location."""
    tiff = memoryview(buf)[start:end]
    try:
        order = {b"II": "<", b"MM": ">"}[bytes(tiff[:2])]

        def u16(at: int) -> int:
            if at < 0 or at + 2 > len(tiff):
                raise _Malformed("outside the EXIF block")
            return struct.unpack_from(order + "H", tiff, at)[0]

        def u32(at: int) -> int:
            if at < 0 or at + 4 > len(tiff):
                raise _Malformed("outside the EXIF block")
            return struct.unpack_from(order + "I", tiff, at)[0]

        ifd0 = u32(4)
        gps = None
        for i in range(u16(ifd0)):
            entry = ifd0 + 2 + 12 * i
            if u16(entry) == GPS_IFD:
                gps = u32(entry + 8)
                break
        if not gps:
            return True
        count = u16(gps)
        blanks = [(gps, gps + 2 + 12 * count + 4)]
        u32(gps + 2 + 12 * count)  # the directory, with its next-directory offset, is inside
        for i in range(count):
            entry = gps + 2 + 12 * i
            kind, values = u16(entry + 2), u32(entry + 4)
            if kind not in TIFF_SIZES:
                raise _Malformed("unknown field type")
            size = TIFF_SIZES[kind] * values
            if size > 4:
                offset = u32(entry + 8)
                if offset + size > len(tiff):
                    raise _Malformed("value outside the EXIF block")
                blanks.append((offset, offset + size))
        for a, b in blanks:
            tiff[a:b] = bytes(b - a)
        return True
    except (KeyError, _Malformed, struct.error):
        return False
    finally:
        tiff.release()


# ----------------------------------------------------------------------------- attaching


def attach_problems(
    session: Session,
    uploader: str | None,
    case_id: int | None,
    hashes: list | None,
    field: str = "photos",
) -> dict[str, str]:
    """What is wrong with attaching these photos, one message per field (`photos[1]`): each must
    be a photo this person uploaded and no case holds yet, or one already on this case."""
    if not hashes:
        return {}
    if uploader is None:
        return {field: NO_UPLOADER}
    problems: dict[str, str] = {}
    if len(hashes) > MAX_PER_STEP:
        problems[field] = TOO_MANY
    seen: set[str] = set()
    for i, sha256 in enumerate(hashes):
        key = f"{field}[{i}]"
        if not isinstance(sha256, str) or not HEX64.fullmatch(sha256):
            problems[key] = NOT_A_HASH
        elif sha256 in seen:
            problems[key] = REPEATED
        elif (
            case_photo(session, case_id, sha256) is None
            and _waiting(session, uploader, sha256) is None
        ):
            problems[key] = NOT_YOURS
        seen.add(str(sha256))
    return problems


def attach(
    session: Session, uploader: str, case_id: int, hashes: list[str] | None, field: str = "photos"
) -> None:
    """Link the uploaded photos to the case, in the caller's transaction (the step's). Checked
    again here: a photo another step attached meanwhile is refused, not taken from its case."""
    for i, sha256 in enumerate(hashes or []):
        if case_photo(session, case_id, sha256) is not None:
            continue
        moved = session.execute(
            update(Photo)
            .where(Photo.sha256 == sha256, Photo.uploaded_by == uploader, Photo.case_id.is_(None))
            .values(case_id=case_id)
        ).rowcount
        if moved != 1:
            raise Invalid("the photos have errors", {f"{field}[{i}]": NOT_YOURS})


def _waiting(session: Session, uploader: str, sha256: str) -> Photo | None:
    return session.scalars(
        select(Photo)
        .where(Photo.sha256 == sha256, Photo.uploaded_by == uploader, Photo.case_id.is_(None))
        .order_by(Photo.id)
        .limit(1)
    ).first()


# ----------------------------------------------------------------------------- reading


def case_photo(session: Session, case_id: int | None, sha256: str) -> Photo | None:
    """The photo with this hash on this case, if it is one of the case's."""
    if case_id is None or not HEX64.fullmatch(sha256 or ""):
        return None
    return session.scalars(
        select(Photo).where(Photo.case_id == case_id, Photo.sha256 == sha256).limit(1)
    ).first()


def waiting_photo(session: Session, uploader: str, sha256: str) -> Photo | None:
    """A photo this person uploaded that no case holds yet (for their own preview)."""
    if not HEX64.fullmatch(sha256 or ""):
        return None
    return _waiting(session, uploader, sha256)


def case_photos(session: Session, case_id: int) -> list[Photo]:
    return list(session.scalars(select(Photo).where(Photo.case_id == case_id).order_by(Photo.id)))
