"""One Xenium "outs" folder on any fsspec filesystem (local path or s3://)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import pandas as pd
from fsspec.spec import AbstractFileSystem

from ghist_ray.xenium._errors import XeniumFormatError


@dataclass(frozen=True)
class OutsFolder:
    """A folder listed once, so finding the file variant costs one listing, not one request each."""

    fs: AbstractFileSystem
    root: str
    uri: str
    names: frozenset[str]

    @classmethod
    def open(cls, uri: str, storage_options: dict[str, Any] | None = None) -> OutsFolder:
        """List `uri`; `storage_options` go to fsspec (credentials, S3 endpoint)."""
        fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        root = root.rstrip("/")
        try:
            listing = fs.ls(root, detail=False)
        except (FileNotFoundError, NotADirectoryError) as err:
            raise XeniumFormatError(f"{uri}: Xenium outs folder not found") from err
        if not listing and not fs.isdir(root):
            raise XeniumFormatError(f"{uri}: Xenium outs folder not found")
        names = frozenset(p.rstrip("/").rsplit("/", 1)[-1] for p in listing)
        return cls(fs=fs, root=root, uri=uri.rstrip("/"), names=names)

    def first(self, *candidates: str) -> str | None:
        """The first of `candidates` present in the folder (preference order), or None."""
        return next((name for name in candidates if name in self.names), None)

    def url(self, name: str) -> str:
        """The file as the user would write it, for error messages."""
        return f"{self.uri}/{name}"

    @contextmanager
    def open_file(self, name: str) -> Iterator[IO[bytes]]:
        """A binary file object; `.gz` is decompressed on the fly."""
        with self.fs.open(f"{self.root}/{name}", "rb") as raw:
            if name.endswith(".gz"):
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    yield unzipped
            else:
                yield raw

    def read_csv(self, name: str, **kwargs: Any) -> pd.DataFrame:
        """A CSV table without the unnamed row-index column that R's write.csv adds."""
        with self.open_file(name) as f:
            return drop_r_index(pd.read_csv(f, **kwargs))

    def sub(self, name: str) -> OutsFolder:
        """A sub-folder (the MEX `cell_feature_matrix/`)."""
        path = f"{self.root}/{name}"
        names = frozenset(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))
        return OutsFolder(fs=self.fs, root=path, uri=self.url(name), names=names)


def drop_r_index(frame: pd.DataFrame) -> pd.DataFrame:
    """R's write.csv writes row names as a first column with an empty header."""
    first = str(frame.columns[0]) if len(frame.columns) else ""
    if first == "" or first.startswith("Unnamed: 0"):
        return frame.drop(columns=frame.columns[0])
    return frame
