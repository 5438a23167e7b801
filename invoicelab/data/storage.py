"""Storage: read documents and manifests from a local folder or object storage by location string.

A location is a local path or a URI (``s3://bucket/key``, ``gs://``, ``file://`` and whatever else
``pyarrow.fs.FileSystem.from_uri`` opens). Workers call this module themselves, so a dataset on
object storage needs no copy on the nodes; ``local_copy`` fetches one object into a cache for the
Path-based page loaders. S3 honours the standard ``AWS_*`` environment variables, including an
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible servers.

Every failure to read becomes a ``DocumentError`` naming the location; callers that read a whole
dataset turn it into their own error. This module must never import Ray, and never follow a
directory symlink while listing a local folder.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from invoicelab.config import is_uri
from invoicelab.data.pages import DocumentError

_CHUNK = 1 << 20  # bytes per read when streaming: bounded memory for any object size


def is_local(location: str) -> bool:
    """Whether a location is a path on this machine's disk (not a URI with a scheme)."""
    return not is_uri(str(location))


def join(folder: str, relative: str) -> str:
    """The location of ``relative`` (posix) inside ``folder``: an absolute path or a URI."""
    if is_local(folder):
        return str(Path(folder).absolute() / relative)
    return folder.rstrip("/") + "/" + relative


def read_bytes(uri: str) -> bytes:
    """All bytes of one file or object.

    Args:
        uri: A local path or a URI.

    Returns:
        The content.

    Raises:
        DocumentError: It does not exist or cannot be read; the message names ``uri``.
    """
    with _open(uri) as stream:
        return _guard(uri, stream.readall)


def sha256(uri: str) -> str:
    """The SHA-256 hex digest of a file or object, read in chunks (memory stays bounded).

    Args:
        uri: A local path or a URI.

    Returns:
        64 lowercase hex digits.

    Raises:
        DocumentError: It does not exist or cannot be read.
    """
    digest = hashlib.sha256()
    with _open(uri) as stream:
        while chunk := _guard(uri, stream.read, _CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(folder_uri: str) -> dict[str, tuple[int, int]]:
    """Every file under a folder (recursively), from one listing.

    Object stores are listed with one recursive ``FileSelector`` (one paged LIST, no request per
    file). Local folders are walked with ``os.scandir`` instead, because pyarrow's local recursive
    listing follows directory symlinks: a dataset holding a link to ``/`` would walk the whole
    disk and loop through ``/proc``. Here a directory symlink is listed as nothing; a file symlink
    is listed with its target's size (the manifest reader decides whether the target is allowed).

    Args:
        folder_uri: A local folder or a URI prefix (``s3://bucket/prefix``).

    Returns:
        Path relative to the folder (posix) -> (size in bytes, modification time in ns).

    Raises:
        DocumentError: The folder does not exist (``FileNotFoundError`` as its cause) or cannot be listed.
    """
    if is_local(folder_uri):
        return _list_local(Path(folder_uri).absolute())
    fs, base = _filesystem(folder_uri)
    base = base.rstrip("/")
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except FileNotFoundError as err:
        raise DocumentError(f"folder not found: {folder_uri}") from err
    except OSError as err:
        raise DocumentError(f"cannot list {folder_uri}: {err}") from None
    return {info.path[len(base) + 1:]: (info.size, info.mtime_ns or 0)
            for info in infos if info.type == pafs.FileType.File}


def local_copy(uri: str, cache_dir: Path | None) -> Path:
    """A path on this machine's disk holding the content of ``uri``, for Path-based loaders.

    A local path is returned unchanged (nothing is copied). A remote object is downloaded once
    into ``cache_dir/fetched/<hash of uri, size and mtime><suffix>``, through a temporary file
    renamed into place, so concurrent workers never see half a file and a changed object is
    fetched again. The suffix is kept because loaders word some errors by it (a ``.pdf`` name).

    Args:
        uri: A local path or a URI.
        cache_dir: Cache root; None uses a folder under the system's temporary directory.

    Returns:
        The local path.

    Raises:
        DocumentError: The object does not exist or cannot be fetched.
    """
    if is_local(uri):
        return Path(uri)
    fs, path = _filesystem(uri)
    info = _guard(uri, fs.get_file_info, path)
    if info.type != pafs.FileType.File:
        raise DocumentError(f"file not found: {uri}")
    # Object stores give mtimes in whole seconds: an object rewritten at the same size within one
    # second keeps its old copy. Callers hash the copy they read (doc_sha256), so results stay
    # consistent with the bytes actually used.
    key = hashlib.sha256(f"{uri}\n{info.size}\n{info.mtime_ns}".encode()).hexdigest()
    root = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "invoicelab"
    target = root / "fetched" / f"{key}{PurePosixPath(path).suffix.lower()}"
    if not target.is_file():
        _download(uri, fs, path, target)
    return target


# --- internals ------------------------------------------------------------------------------


def _download(uri: str, fs: pafs.FileSystem, path: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with _guard(uri, fs.open_input_stream, path) as stream, tmp.open("wb") as out:
            while chunk := _guard(uri, stream.read, _CHUNK):
                out.write(chunk)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _open(uri: str):
    """An input stream over ``uri`` (use it in a ``with`` block)."""
    fs, path = _filesystem(uri)
    return _guard(uri, fs.open_input_stream, path)


def _guard(uri: str, call, *args):
    """``call(*args)`` with storage errors turned into DocumentError naming ``uri``."""
    try:
        return call(*args)
    except FileNotFoundError:
        raise DocumentError(f"file not found: {uri}") from None
    except IsADirectoryError:
        raise DocumentError(f"not a file: {uri}") from None
    except OSError as err:  # pyarrow reports S3 errors (access denied, no such bucket) as OSError
        raise DocumentError(f"cannot read {uri}: {err}") from None


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The file system holding ``uri`` and the path within it."""
    if is_local(uri):
        return pafs.LocalFileSystem(), str(Path(uri).absolute())
    parts = urlsplit(uri)
    if parts.scheme == "s3" and not parts.query:
        env = {name: os.environ.get(name, "") for name in _S3_ENV}
        return _s3(tuple(sorted(env.items()))), parts.netloc + parts.path
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError) for unknown schemes
        raise DocumentError(f"cannot open {uri}: {err}") from None


# The environment an S3 file system depends on; part of the cache key so a changed variable
# (a test's endpoint, rotated keys) builds a new one.
_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
           "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@functools.lru_cache(maxsize=8)
def _s3(env: tuple[tuple[str, str], ...]) -> pafs.S3FileSystem:
    """An S3 file system for the given environment (cached: each one starts an SDK client).

    Built directly rather than with ``FileSystem.from_uri``, which asks AWS for the bucket's region
    when the URI names none (a network call to amazonaws.com, wrong for a private endpoint).
    pyarrow 26's AWS SDK reads ``AWS_ENDPOINT_URL`` by itself (checked against a local server), but
    pyarrow 23 did not (apache/arrow#49643) and the project allows pyarrow >= 17, so the endpoint is
    passed explicitly; credentials are left to the SDK's own chain (variables, profile, instance role).
    """
    values = dict(env)
    options: dict = {"region": values["AWS_REGION"] or values["AWS_DEFAULT_REGION"] or None}
    endpoint = values["AWS_ENDPOINT_URL_S3"] or values["AWS_ENDPOINT_URL"]
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme)
    return pafs.S3FileSystem(**{k: v for k, v in options.items() if v is not None})


def _list_local(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.is_dir():
        raise DocumentError(f"folder not found: {folder}") from FileNotFoundError(str(folder))
    files: dict[str, tuple[int, int]] = {}
    pending = [(folder, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as err:
            raise DocumentError(f"cannot list {directory}: {err.strerror or err}") from None
        for entry in entries:
            name = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                pending.append((Path(entry.path), name + "/"))
                continue
            try:
                st = entry.stat()  # follows a file symlink: the target's size, as a reader would see
            except OSError:
                continue  # a broken link: absent, so the manifest reports "file not found"
            if stat.S_ISREG(st.st_mode):
                files[name] = (st.st_size, st.st_mtime_ns)
    return files
