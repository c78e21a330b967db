"""The result store: long-form Parquet parts, one per chunk, keyed by a hash of the chunk.

``DIR/parts/<key>.parquet`` holds one chunk's rows. A part is written to a temporary file in
the same directory and then renamed over its final name (``os.replace`` is atomic on POSIX),
so a part either exists complete or not at all: a run killed at any moment leaves only whole
parts behind, and the next run skips them.
"""
import hashlib
import json
import os
import uuid
from pathlib import Path

import pandas as pd

from .errors import StudyError

# Bump when the meaning of stored rows changes: old parts then stop matching and are recomputed.
STORE_VERSION = 1


def chunk_key(kind, points):
    """SHA-256 (first 20 hex digits) of the chunk's canonical JSON: its kind and every point's
    full configuration, the store version included."""
    blob = json.dumps({"version": STORE_VERSION, "kind": kind, "points": points},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class Store:
    """Parquet parts under ``root/parts``."""

    def __init__(self, root):
        self.root = Path(root)
        self.parts = self.root / "parts"

    def prepare(self):
        """Create the directories and check that they are writable (before any computing)."""
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            probe = self.parts / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StudyError(f"output directory {str(self.root)!r} is not writable: "
                             f"{e.strerror or e}") from None
        # temporary files of a killed run: never read, safe to remove
        for tmp in self.parts.glob(".*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass
        return self

    def path(self, key):
        return self.parts / f"{key}.parquet"

    def has(self, key):
        return self.path(key).exists()

    def write(self, key, df):
        """Write one part atomically: temporary file, fsync, rename."""
        final = self.path(key)
        tmp = self.parts / f".{key}.{uuid.uuid4().hex}.tmp"
        try:
            df.to_parquet(tmp, index=False)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        return final

    def read(self, keys):
        """Concatenate the parts of ``keys`` (all must exist)."""
        missing = [k for k in keys if not self.has(k)]
        if missing:
            raise StudyError(f"{len(missing)} of {len(keys)} chunks have no results in "
                             f"{str(self.parts)!r}; run the study again to finish it")
        frames = [pd.read_parquet(self.path(k)) for k in keys]
        if not frames:
            return pd.DataFrame()
        # integer columns absent from some parts (another sub-grid's data arguments) would turn
        # float in the concatenation: keep them integers, with <NA> where absent
        ints = {c for f in frames for c in f.columns if f[c].dtype.kind in "iu"}
        ints -= {c for f in frames for c in f.columns if f[c].dtype.kind not in "iu"}
        df = pd.concat(frames, ignore_index=True)
        for c in ints:
            if df[c].isna().any():
                df[c] = df[c].astype("Int64")
        return df
