"""Run storage: local paths and URIs (s3://, gs://, NFS mounts) through one pyarrow filesystem interface."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs


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
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
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


def open_storage(storage: str) -> Storage:
    """Resolve `--storage`; local paths become absolute so every worker and Ray itself agree on them."""
    if "://" in storage and not storage.startswith("file://"):
        try:
            fs, root = pafs.FileSystem.from_uri(storage)
        except Exception as exc:  # pyarrow raises several types for bad or unsupported URIs
            raise ValueError(f"--storage {storage!r} is not a usable URI ({' '.join(str(exc).split())})") from None
        return Storage(uri=storage.rstrip("/"), fs=fs, root=root.rstrip("/"), is_local=False)
    path = os.path.abspath(os.path.expanduser(storage.removeprefix("file://")))
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
