"""Paths that are local folders or ``s3://bucket/prefix`` URIs, through ``pyarrow.fs``.

S3 honours the standard AWS variables (``AWS_ENDPOINT_URL`` for any S3-compatible store,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) and fails fast: a wrong
endpoint is an error within seconds, not minutes of retries.
"""
from __future__ import annotations

import os
import posixpath

import pyarrow.fs as pafs

from .errors import DataError, one_line


def is_s3(path: str) -> bool:
    return str(path).startswith("s3://")


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``path`` and the path inside it (``bucket/key`` for S3)."""
    path = str(path)
    if not is_s3(path):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    inner = path[len("s3://"):].strip("/")
    if not inner:
        raise DataError(f"{path}: an S3 URI needs a bucket, as in s3://bucket/prefix")
    options = dict(connect_timeout=5, request_timeout=60,
                   retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
    if os.environ.get("AWS_ENDPOINT_URL"):
        options["endpoint_override"] = os.environ["AWS_ENDPOINT_URL"]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options), inner


def join(base: str, *parts: str) -> str:
    """Join a local path or an S3 URI with relative parts."""
    if is_s3(base):
        return "s3://" + posixpath.join(str(base)[len("s3://"):].rstrip("/"), *parts)
    return os.path.join(base, *parts)


def uri(fs: pafs.FileSystem, inner: str) -> str:
    """The user-facing name of ``inner`` on ``fs`` (inverse of :func:`filesystem`)."""
    return "s3://" + inner if isinstance(fs, pafs.S3FileSystem) else inner


def info(path: str) -> pafs.FileInfo:
    """File info of ``path``; a DataError naming it if the store cannot be reached."""
    fs, inner = filesystem(path)
    try:
        return fs.get_file_info(inner)
    except OSError as e:
        raise DataError(f"{path}: cannot reach it ({one_line(e)})") from None


def is_file(path: str) -> bool:
    """Whether ``path`` (local or s3://) is an existing file; a DataError if the store cannot be reached."""
    return info(path).type == pafs.FileType.File


def is_dir(path: str) -> bool:
    """Whether ``path`` (local or s3://) is an existing folder (an S3 prefix holding objects)."""
    return info(path).type == pafs.FileType.Directory


def list_files(path: str, suffixes: tuple[str, ...]) -> list[pafs.FileInfo]:
    """Files under a folder or prefix (recursively) whose names end in ``suffixes`` (any case)."""
    fs, inner = filesystem(path)
    found = info(path)
    if found.type == pafs.FileType.NotFound:
        raise DataError(f"{path}: no such file or folder")
    if found.type == pafs.FileType.File:
        return [found] if found.path.lower().endswith(suffixes) else []
    try:
        listing = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    except OSError as e:
        raise DataError(f"{path}: cannot list it ({one_line(e)})") from None
    return sorted((f for f in listing if f.type == pafs.FileType.File and f.path.lower().endswith(suffixes)),
                  key=lambda f: f.path)


def read_bytes(path: str) -> bytes:
    fs, inner = filesystem(path)
    with fs.open_input_stream(inner) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    fs, inner = filesystem(path)
    parent = posixpath.dirname(inner) if is_s3(path) else os.path.dirname(inner)
    if parent:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(inner) as f:
        f.write(data)
