"""The result store: long-form Parquet parts, one per chunk, keyed by a hash of the chunk.

``DIR/parts/<key>.parquet`` holds one chunk's rows. What the store guarantees:

- **Whole parts only.** A part is written to a temporary file in the same directory and then
  renamed over its final name (``os.replace`` is atomic on POSIX), so a part either exists
  complete or not at all: a run killed at any moment leaves only whole parts behind, and the
  next run skips them.
- **Parts that check themselves.** Each part's Parquet key-value metadata records the chunk key
  it was written for and a SHA-256 of its rows (:func:`content_digest`). :meth:`Store.check`
  reads a part back and compares both, so a truncated or corrupted file, or a valid part copied
  over another's name, is found, reported and recomputed rather than used.
- **One writer per directory.** :meth:`Store.lock` takes a lock file (``DIR/.lock``, the
  ``filelock`` package) for the whole run; a second run on the same directory stops at once
  with a message naming the running one's pid (and so does another thread of the same process;
  the lock is re-entrant within one thread only). Temporary files carry their writer's host and
  pid (``.<key>.<host>.<pid>.<uuid>.tmp``) and :meth:`Store.prepare` removes only those whose
  writer is gone, so no run deletes the files of a run still writing. Dask workers write parts
  without the lock (their client holds it): distinct temporary names and the atomic rename keep
  concurrent writers apart, even two writing the same part.

- **One format version per directory.** ``DIR/store.json`` records the store version
  (:data:`STORE_VERSION`) the parts were written in, and every part's metadata records it too.
  A directory of another version (or of parts written before versions were recorded: version
  1) is refused with a message saying what to do (:meth:`Store.check_version`): its rows mean
  something else, and mixing them with new parts would be wrong. There is no migration: a
  study's parts are recomputed from its grid in a fresh directory.

Parts written before the store recorded keys and checksums have no such metadata: they cannot
be verified, so :meth:`Store.check` treats them as bad ("no checksum") and the run recomputes
them.
"""
import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import StudyError

#: Bump when the meaning of stored rows or of a chunk's key changes, and say what changed in
#: VERSION_CHANGES: a directory of another version is then refused (Store.check_version).
STORE_VERSION = 3
VERSION_CHANGES = {
    1: "long-form rows with the data set's arguments as data_<name> columns",
    2: "the data set's arguments also as one data_args column (JSON, the grid's values exactly); "
       "every configuration key enters a chunk's key",
    3: "the held-out telemetry of the grid engine: val_loss, accuracy, val_accuracy on every row, "
       "final_val_loss and final_val_accuracy per network",
}
VERSION_FILE = "store.json"
KEY_META = b"simstudy.key"
DIGEST_META = b"simstudy.sha256"
VERSION_META = b"simstudy.version"
# a temporary file from another host cannot be traced to a live process: left alone this long
FOREIGN_TMP_AGE_S = 24 * 3600


def chunk_key(kind, points):
    """SHA-256 (first 20 hex digits) of the chunk's canonical JSON: its kind and every point's
    full configuration, the store version included."""
    blob = json.dumps({"version": STORE_VERSION, "kind": kind, "points": points},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# the one NaN a digest sees: Arrow writes any NaN as null and reads it back as this one (the
# positive quiet NaN), so a part holding another NaN (x86's inf - inf is 0xfff8000000000000)
# must hash the same as its read-back
_NAN = np.float64(np.nan)
# the one text a missing value in an object or string column hashes as (None, NaN, pd.NA,
# NaT all read back from a null as one of them)
_NA_TEXT = "nan"


def _is_na(v):
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)


def _numeric_bytes(col):
    """The values of a numeric or boolean column as canonical bytes: every NaN one bit
    pattern, a nullable column's missing values as a mask and zeros (-0.0 stays -0.0, which
    Parquet keeps)."""
    if isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
        mask = col.isna().to_numpy()
        if mask.any():
            dtype = np.dtype(col.dtype.numpy_dtype)
            vals = col.to_numpy(dtype=dtype, na_value=dtype.type(0))
            return b"NA" + mask.tobytes() + _numeric_bytes(pd.Series(vals))
        arr = col.to_numpy(dtype=np.dtype(col.dtype.numpy_dtype))
    else:
        arr = col.to_numpy()
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind in "fc":
        flat = arr.view(arr.real.dtype) if arr.dtype.kind == "c" else arr
        nan = np.isnan(flat)
        if nan.any():
            flat = np.where(nan, flat.dtype.type(_NAN), flat)
        return np.ascontiguousarray(flat).tobytes()
    return arr.tobytes()


def content_digest(df):
    """SHA-256 (hex) of a frame's rows: each column's name, dtype and values in order.

    Numbers and booleans enter as their bytes, other values as their ``repr``, canonicalised
    so that what Parquet does not keep does not count: every NaN hashes as one NaN, every
    missing value (None, NaN, pd.NA, NaT) of an object or string column as one text, a
    nullable column's missing values as a mask. :meth:`Store.write` hashes the frame a read of
    the part returns (its Arrow table converted back), and checks the written file against it.
    """
    h = hashlib.sha256(f"rows={len(df)}".encode())
    for name in df.columns:
        col = df[name]
        h.update(f"\x1e{name}\x1f{col.dtype}\x1f".encode())
        if col.dtype.kind in "biufcmM":
            h.update(_numeric_bytes(col))
        else:
            h.update("\x1f".join(_NA_TEXT if _is_na(v) else repr(v) for v in col.tolist()).encode())
    return h.hexdigest()


def _host():
    return socket.gethostname().replace(".", "-") or "host"


def _pid_alive(pid):
    """Whether a process with this pid runs on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tmp_writer(name):
    """(host, pid) of a temporary file named ``.<key>.<host>.<pid>.<uuid>.tmp``; ``None`` for
    a name without them (a temporary file of a version before pids were recorded)."""
    fields = name[1:].split(".")
    if len(fields) < 5 or not fields[-3].isdigit():
        return None
    return fields[-4], int(fields[-3])


class BadPart(Exception):
    """A stored part that cannot be used: unreadable, of another chunk, or changed."""


class Store:
    """Parquet parts under ``root/parts``."""

    def __init__(self, root):
        self.root = Path(root)
        self.parts = self.root / "parts"

    # ----------------------------------------------------------------------------------------
    # the format version

    def version(self):
        """The store version of this directory: the one ``store.json`` records, 1 for parts
        without it (written before versions were recorded), ``None`` for a directory without
        parts (a new store). StudyError if ``store.json`` cannot be read as a version record."""
        record = self.root / VERSION_FILE
        try:
            found = json.loads(record.read_text())["version"]
        except FileNotFoundError:
            return 1 if self.parts.is_dir() and any(self.parts.glob("*.parquet")) else None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StudyError(f"{str(record)!r} is not a simstudy store version record ({e}); "
                             f"give another --out") from None
        if isinstance(found, bool) or not isinstance(found, int):
            raise StudyError(f"{str(record)!r} records version {found!r}, not an integer; give another --out")
        return found

    def check_version(self):
        """StudyError unless this directory is a store of :data:`STORE_VERSION` (or has no parts
        yet), naming the version found, what the current one changed, and what to do."""
        found = self.version()
        if found is None or found == STORE_VERSION:
            return
        if found > STORE_VERSION:
            why = "a newer simstudy wrote it; use that one, or give another --out"
        else:
            why = (f"version {STORE_VERSION} stores {VERSION_CHANGES[STORE_VERSION]}, so its parts cannot be "
                   f"reused; give another --out, or delete {str(self.parts)!r} (and {VERSION_FILE}) to "
                   f"recompute the study here")
        raise StudyError(f"{str(self.root)!r} holds results of store version {found}, this simstudy "
                         f"reads and writes version {STORE_VERSION}: {why}")

    def prepare(self):
        """Create the directories and check that they are writable (before any computing) and of
        this store version (:meth:`check_version`; a new store records it in ``store.json``);
        remove temporary files whose writer is gone."""
        self.check_version()
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            probe = self.parts / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
            record = self.root / VERSION_FILE
            if not record.exists():
                tmp = self.root / f".{VERSION_FILE}.{_host()}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
                tmp.write_text(json.dumps({"format": "simstudy", "version": STORE_VERSION}) + "\n")
                os.replace(tmp, record)
        except OSError as e:
            raise StudyError(f"output directory {str(self.root)!r} is not writable: "
                             f"{e.strerror or e}") from None
        host, now = _host(), time.time()
        for tmp in self.parts.glob(".*.tmp"):
            writer = _tmp_writer(tmp.name)
            try:
                if writer is None:
                    dead = True                   # written before pids were recorded: no live writer left
                elif writer[0] == host:
                    dead = not _pid_alive(writer[1])
                else:
                    dead = now - tmp.stat().st_mtime > FOREIGN_TMP_AGE_S
                if dead:
                    tmp.unlink()
            except OSError:
                pass
        return self

    # ----------------------------------------------------------------------------------------
    # locking

    @contextlib.contextmanager
    def lock(self):
        """Hold ``root/.lock`` while the block runs; StudyError at once if another process
        holds it (its pid is in ``root/.lock.owner``) or another thread of this process does.
        Re-entrant within one thread: the lock is released when its outermost block ends."""
        from filelock import FileLock, Timeout

        key = str(self.root.resolve())
        me = threading.get_ident()
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None and held["thread"] == me:
                held["depth"] += 1
            elif held is not None:
                raise StudyError(f"{str(self.root)!r} is in use by another thread of this process "
                                 f"(pid {os.getpid()}); wait for it to finish or give another --out")
        if held is not None:
            try:
                yield self
            finally:
                with _HELD_GUARD:
                    held["depth"] -= 1
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StudyError(f"output directory {str(self.root)!r} is not writable: "
                             f"{e.strerror or e}") from None
        lock = FileLock(self.root / ".lock", timeout=0, thread_local=False)
        with _HELD_GUARD:
            if key in _HELD:                      # another thread got here first
                raise StudyError(f"{str(self.root)!r} is in use by another thread of this process "
                                 f"(pid {os.getpid()}); wait for it to finish or give another --out")
            try:
                lock.acquire()
            except Timeout:
                raise StudyError(f"{str(self.root)!r} is in use by another simstudy run ({self._owner()}); "
                                 f"wait for it to finish or give another --out") from None
            except OSError as e:
                raise StudyError(f"cannot lock {str(self.root)!r}: {e.strerror or e}") from None
            held = _HELD[key] = {"thread": me, "depth": 1}
        owner = self.root / ".lock.owner"
        try:
            owner.write_text(f"{os.getpid()} {_host()}\n")
            yield self
        finally:
            with _HELD_GUARD:
                held["depth"] = 0                 # the outermost block: release whatever the nesting
                with contextlib.suppress(OSError):
                    owner.unlink()
                _HELD.pop(key, None)
                lock.release()

    def _owner(self):
        try:
            pid, host = (self.root / ".lock.owner").read_text().split()
        except (OSError, ValueError):
            return "pid unknown"
        return f"pid {pid}" + ("" if host == _host() else f" on {host}")

    # ----------------------------------------------------------------------------------------
    # parts

    def path(self, key):
        return self.parts / f"{key}.parquet"

    def has(self, key):
        return self.path(key).exists()

    def write(self, key, df):
        """Write one part atomically: temporary file named after this writer, fsync, rename.
        The part's metadata records ``key`` and the rows' :func:`content_digest`."""
        final = self.path(key)
        tmp = self.parts / f".{key}.{_host()}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[KEY_META] = key.encode()
        meta[VERSION_META] = str(STORE_VERSION).encode()
        # the digest of what a read returns (NaN, None and dtypes as Arrow gives them back)
        meta[DIGEST_META] = content_digest(table.to_pandas()).encode()
        table = table.replace_schema_metadata(meta)
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            try:
                self._verify(pq.read_table(tmp), key)
            except BadPart as e:      # a part that could never verify: a bug, not bad input
                raise RuntimeError(f"part {key} does not verify right after writing: {e}") from None
            os.replace(tmp, final)
            with contextlib.suppress(FileNotFoundError):
                self.failure_path(key).unlink()
        finally:
            if tmp.exists():
                tmp.unlink()
        return final

    def load(self, key):
        """The rows of part ``key``, verified; raises :class:`BadPart` saying why not."""
        path = self.path(key)
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise BadPart("missing") from None
        except (OSError, pa.ArrowException) as e:
            raise BadPart(f"unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        return self._verify(table, key)

    @staticmethod
    def _verify(table, key):
        """The rows of ``table`` (a part read back) if its metadata names ``key`` and its
        digest matches them, else :class:`BadPart`."""
        meta = table.schema.metadata or {}
        if KEY_META not in meta or DIGEST_META not in meta:
            raise BadPart("no checksum (written before parts recorded one)")
        version = meta.get(VERSION_META, b"1").decode(errors="replace")
        if version != str(STORE_VERSION):
            raise BadPart(f"written by store version {version}, not {STORE_VERSION}")
        stored_key = meta[KEY_META].decode(errors="replace")
        if stored_key != key:
            raise BadPart(f"holds chunk {stored_key}, not {key} (a part copied over another)")
        df = table.to_pandas()
        if content_digest(df) != meta[DIGEST_META].decode(errors="replace"):
            raise BadPart("checksum mismatch (its rows changed after it was written)")
        return df

    def check(self, key):
        """``None`` if part ``key`` exists and is intact, else why it cannot be used."""
        try:
            self.load(key)
        except BadPart as e:
            return str(e)
        return None

    def failure_path(self, key):
        return self.parts / f"{key}.failed.json"

    def record_failure(self, key, record):
        """Note that chunk ``key`` raised (``record``: a JSON-able dict); writing its part
        later removes the note."""
        tmp = self.parts / f".{key}.failed.{_host()}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, self.failure_path(key))

    def failure(self, key):
        """The failure record of chunk ``key``, or ``None``."""
        try:
            return json.loads(self.failure_path(key).read_text())
        except (OSError, ValueError):
            return None

    def read(self, keys):
        """Concatenate the verified parts of ``keys`` (all must exist and be intact; the store
        must be of this version, :meth:`check_version`)."""
        self.check_version()
        keys = list(keys)
        missing = [k for k in keys if not self.has(k)]
        if missing:
            raise StudyError(f"{len(missing)} of {len(keys)} chunks have no results in "
                             f"{str(self.parts)!r}; run the study again to finish it")
        frames = []
        for k in keys:
            try:
                frames.append(self.load(k))
            except BadPart as e:
                raise StudyError(f"part {str(self.path(k))!r} is bad: {e}; run the study again "
                                 f"to recompute it") from None
        return concat_parts(frames)


def concat_parts(frames):
    """One frame from parts whose columns differ (each sub-grid has its own configuration)."""
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


# root directory -> {"thread": the holder's ident, "depth": its nesting} of the locks this
# process holds; _HELD_GUARD serialises changes to it and the file lock's acquire and release
_HELD = {}
_HELD_GUARD = threading.Lock()
