"""The bad-input corpus, generated on demand (no checked-in binaries): broken files and a broken gt.jsonl.

``make_corpus(folder)`` writes a dataset folder in which every kind of bad input the tool must
survive sits beside two good documents, and returns what each document's error must say.
``make_corpus(folder, containment=True)`` adds entries that point outside the folder (absolute,
``..``, a URI, symlinks leading out) at a secret file in a sibling folder, which must never be read.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

GOOD = {"good_a": "INV-1", "good_b": "INV-2"}


def image_bytes(fmt: str, size=(400, 300)) -> bytes:
    """A noise image (no long runs, so truncation really cuts pixel data)."""
    img = Image.effect_noise(size, 60).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def text_image(text: str) -> bytes:
    img = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(img).text((20, 80), text, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, idat: bytes) -> bytes:
    """A 1-bit greyscale PNG with the given IDAT payload (cheap to make at any declared size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def bomb_png(side: int) -> bytes:
    """A valid all-black 1-bit PNG of side x side pixels: a few kB on disk, side*side pixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return png_header_only(side, side, idat)


_PDF_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: bytes) -> bytes:
    """A one-page PDF that opens only with ``user_password`` (PDF 1.3 standard security, RC4 40-bit, R2)."""

    def pad(pw: bytes) -> bytes:
        return (pw + _PDF_PAD)[:32]

    perms = -44
    file_id = hashlib.md5(b"invoicelab test").digest()
    owner = _rc4(hashlib.md5(pad(b"owner")).digest()[:5], pad(user_password))
    key = hashlib.md5(pad(user_password) + owner + struct.pack("<i", perms) + file_id).digest()[:5]
    user = _rc4(key, _PDF_PAD)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (owner.hex().encode(), user.hex().encode(), perms),
    ]
    out = bytearray(b"%PDF-1.3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    ident = file_id.hex().encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>] >>\n" % (len(objects) + 1, ident, ident)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


# doc_id -> (file name, bytes); the reason each bad one's error row must contain is in EXPECTED.
def _files() -> dict[str, tuple[str, bytes]]:
    jpeg = image_bytes("JPEG")
    return {
        "good_a": ("good_a.png", text_image("INVOICE INV-1  TOTAL 10.00")),
        "good_b": ("good_b.png", text_image("INVOICE INV-2  TOTAL 20.00")),
        "truncated": ("truncated.jpg", jpeg[: len(jpeg) // 2]),
        "zero_byte": ("zero.jpg", b""),
        "not_an_image": ("notes.jpg", b"these are meeting notes, not a picture\n" * 20),
        "bomb": ("bomb.png", bomb_png(20_000)),
        "corrupt_pdf": ("corrupt.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 8),
        "encrypted_pdf": ("locked.pdf", encrypted_pdf(b"secret")),
    }


EXPECTED = {
    "truncated": "truncated or corrupt image",
    "zero_byte": "empty file",
    "not_an_image": "not an image",
    "bomb": "image too large",
    "corrupt_pdf": "corrupt PDF",
    "encrypted_pdf": "encrypted PDF (password required)",
    "missing_file": "file not found: nowhere.png",
    "no_fields": "has no 'fields' object",
    "line-11": "gt.jsonl line 11: invalid JSON",
    "line-12": "gt.jsonl line 12: not valid UTF-8",
}


OUTSIDE = "file outside the dataset folder"
CONTAINMENT = {  # doc_id -> what its error must say; the secret file they point at must never be read
    "outside_absolute": f"{OUTSIDE}: /",
    "outside_dotdot": "'..' in the path",
    "outside_uri": "a URI, not a path in the folder",
    "outside_symlink": f"{OUTSIDE}: leak.png (a symlink to",
    "outside_symlink_dir": f"{OUTSIDE}: leakdir/secret.png (a symlink to",
}
SECRET_TEXT = "SECRET 4242 PAYROLL"


def secret_path(folder: Path) -> Path:
    """The file that the containment entries of ``make_corpus(folder, containment=True)`` point at."""
    return folder.parent / f"{folder.name}-outside" / "secret.png"


def _containment_lines(folder: Path) -> list[bytes]:
    secret = secret_path(folder)
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(text_image(SECRET_TEXT))
    (folder / "leak.png").symlink_to(secret)
    (folder / "leakdir").symlink_to(secret.parent, target_is_directory=True)
    files = {"outside_absolute": str(secret), "outside_dotdot": f"../{secret.parent.name}/secret.png",
             "outside_uri": secret.as_uri(), "outside_symlink": "leak.png", "outside_symlink_dir": "leakdir/secret.png"}
    return [json.dumps({"doc_id": doc_id, "file": file, "fields": {"total": "1.00"}}).encode()
            for doc_id, file in files.items()]


def make_corpus(folder: Path, containment: bool = False) -> Path:
    """Write the corpus into ``folder``; returns the folder. Document ids: GOOD keys and EXPECTED keys.

    Args:
        folder: Where to write (created).
        containment: Also add the CONTAINMENT entries (after line 12, so the line numbers in EXPECTED
            hold), and write their secret target into a sibling folder (see ``secret_path``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for doc_id, (name, data) in _files().items():
        (folder / name).write_bytes(data)
        fields = {"invoice_number": GOOD.get(doc_id, "X"), "total": "10.00" if doc_id == "good_a" else "20.00"}
        lines.append(json.dumps({"doc_id": doc_id, "file": name, "fields": fields}).encode())
    lines.append(json.dumps({"doc_id": "missing_file", "file": "nowhere.png", "fields": {"total": "1.00"}}).encode())
    lines.append(json.dumps({"doc_id": "no_fields", "file": "good_a.png"}).encode())
    lines.append(b'{"doc_id": "broken", "file": "good_a.png", "fields": {')  # line 11: invalid JSON
    lines.append(b'{"doc_id": "latin1", "file": "good_a.png", "fields": {"vendor": "Caf\xe9"}}')  # line 12
    if containment:
        lines.extend(_containment_lines(folder))
    (folder / "gt.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder
