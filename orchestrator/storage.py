"""Run storage: local paths and URIs (s3://, gs://, NFS mounts) through one pyarrow filesystem interface."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Iterator, Optional

import pyarrow.fs as pafs

# Write failures that are the storage's state, not a bug: said in one line with what to do, never a traceback.
_FULL = {errno.ENOSPC: "no space left", errno.EDQUOT: "the disk quota is exceeded", errno.EROFS: "it is read-only"}
_FULL_WORDS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
               "Read-only file system": errno.EROFS}  # fmt: skip


class StorageFull(OSError):
    """A write failed because the storage is full, over quota or read-only; the message is one line for the user."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def free_bytes(path: str) -> Optional[int]:
    """Free bytes on the local filesystem holding `path` (its nearest existing parent); None when unknown."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path or "/").free
    except OSError:
        return None


def _full_errno(exc: BaseException) -> Optional[int]:
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return exc.errno
    text = str(exc)
    return next((code for words, code in _FULL_WORDS.items() if words in text), None)


@contextlib.contextmanager
def full_disk_is_one_line(path: str, *cleanup: str) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT / EROFS while writing `path` into one StorageFull line naming the path, the free space and
    what to do; remove the temporary files or directories in `cleanup` first, so nothing half-written is left."""
    try:
        yield
    except OSError as exc:
        code = _full_errno(exc)
        for leftover in cleanup:
            with contextlib.suppress(OSError):
                shutil.rmtree(leftover) if os.path.isdir(leftover) else os.remove(leftover)
        if code is None:
            raise
        free = free_bytes(path)
        room = f" ({free / 2**20:.1f} MiB free there)" if free is not None and code != errno.EROFS else ""
        raise StorageFull(
            code,
            f"cannot write {path}: {_FULL[code]}{room}; free some space (or pick another --storage) and run the same "
            f"command again: what was written before is kept",
        ) from None


@dataclass(frozen=True)
class Storage:
    """A storage root as Ray Train wants it (`uri`) and as we read and write it (`fs`, `root`)."""

    uri: str  # absolute local path or URI, passed to RunConfig(storage_path=...)
    fs: pafs.FileSystem
    root: str  # path inside fs
    is_local: bool

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def uri_of(self, *parts: str) -> str:
        return "/".join([self.uri.rstrip("/"), *parts])

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_dir(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.Directory

    def size(self, path: str) -> int:
        """Bytes in a file; 0 where there is none."""
        info = self.fs.get_file_info(path)
        return info.size if info.type == pafs.FileType.File else 0

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write whole-file and atomically: a reader sees the old file or the new one, never half of one."""
        parent = path.rsplit("/", 1)[0]
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with full_disk_is_one_line(path, *([tmp] if self.is_local else [])):
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)

    def list_dirs(self, path: str) -> list[str]:
        if not self.is_dir(path):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=False))
        return sorted(i.path for i in infos if i.type == pafs.FileType.Directory)

    def put_dir(self, local_dir: str, path: str) -> None:
        """Copy a local directory to `path`, under a temporary name first and then renamed (atomic on a local disk)."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with full_disk_is_one_line(path, *([tmp] if self.is_local else [])):
            self.fs.create_dir(tmp, recursive=True)
            pafs.copy_files(local_dir, tmp, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
            if self.exists(path):
                self.fs.delete_dir(path)
            self.fs.move(tmp, path)

    def delete_dir(self, path: str) -> None:
        if self.is_dir(path):
            self.fs.delete_dir(path)

    def move_aside(self, path: str) -> str:
        """Keep an old run instead of deleting it: rename to <path>.old-<timestamp>."""
        target = f"{path}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        self.fs.move(path, target)
        return target


def open_storage(storage: str, writable: bool = True) -> Storage:
    """Resolve `--storage`; local paths become absolute so every worker and Ray itself agree on them. writable:
    create the directory and check that it can be written (readers pass False)."""
    if "://" in storage and not storage.startswith("file://"):
        try:
            fs, root = pafs.FileSystem.from_uri(storage)
        except Exception as exc:  # pyarrow raises several types for bad or unsupported URIs
            raise ValueError(f"--storage {storage!r} is not a usable URI ({' '.join(str(exc).split())})") from None
        return Storage(uri=storage.rstrip("/"), fs=fs, root=root.rstrip("/"), is_local=False)
    path = os.path.abspath(os.path.expanduser(storage.removeprefix("file://")))
    if not writable:
        return Storage(uri=path, fs=pafs.LocalFileSystem(), root=path, is_local=True)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-probe-{uuid.uuid4().hex[:8]}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise ValueError(
            f"--storage {storage} is not writable ({exc.strerror}); pass a directory you can write to"
        ) from None
    return Storage(uri=path, fs=pafs.LocalFileSystem(), root=path, is_local=True)
