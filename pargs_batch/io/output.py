"""The run directory: Parquet files that every dataset reader takes as one table, each row written once.

Layout of ``output.path`` (a local path or any ``pyarrow.fs`` URI: ``s3://``, ``gs://``, ``file://``):

    part-000000.parquet, part-000001.parquet, ...  the rows: one table
    .pargs/run.json                                the run's identity (its config, less what cannot
                                                   change outputs): a resume must match it
    .pargs/summary.json                            the last run's summary
    .pargs/pending/part-N/mb-M.parquet             finished micro-batches of the open file N
    .pargs/candidates/part-N.parquet               best-of-n candidates (``output.keep_all_candidates``)

Everything but the rows sits under ``.pargs``: pyarrow, pandas, Ray Data and Hugging Face
``datasets`` skip names that start with a dot, so the directory reads as one table.

**Commit protocol.** A finished micro-batch is written whole as ``.pargs/pending/part-N/mb-M.parquet``
(locally: to a temporary name, then renamed; on an object store a PUT appears whole or not at all):
from then on its rows are finished. When the open file's micro-batches reach
``output.rows_per_file`` rows or ``output.target_file_mb`` MB, they are compacted into
``part-N.parquet`` (row groups of up to 131,072 rows or 4 MB of Arrow memory: the compaction's
buffer, read on one thread) the same way, and then the pending directory is deleted. On opening, a pending directory whose part file exists is stale (a crash
between the two steps) and is deleted; any other holds the open file's micro-batches, which the
next file takes in. A kill therefore costs only the micro-batches in flight; nothing is renamed on
object stores, where "committed" means "the object exists".

**Finished rows** are the prompt ids earlier runs wrote, kept as 64-bit hashes in sorted arrays
(``IdSet``: 8 bytes a prompt), rebuilt on resume by reading the ``id`` and ``error`` columns only;
a run does not add its own (the reader's duplicate check already holds every id it read). Rows that failed for
infrastructure reasons (``RETRYABLE`` errors: a worker that died past its retries) are written, so
the output shows them, but never count as finished: a rerun removes them from their files and
generates them again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pargs_batch.io.batch import CANDIDATE_SCHEMA, SCHEMA, CandidateRow, ResponseRow, candidates_table, to_table
from pargs_batch.configlib import ConfigError
from pargs_batch.decoding import id_hash

RETRYABLE = "infrastructure: "  # how the errors of rows a rerun retries start
META, PENDING, CANDIDATES = ".pargs", ".pargs/pending", ".pargs/candidates"
PART = re.compile(r"part-(\d+)\.parquet$")
MB = re.compile(r"(mb|cand)-(\d+)\.parquet$")
ROW_GROUP_BYTES = 4 << 20  # a row group closes at this many in-memory Arrow bytes when compacting,
ROW_GROUP_ROWS = 1 << 17   # or at this many rows: what the writer and a resume hold in memory at once


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a local path or a ``pyarrow.fs`` URI."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path).absolute())


def part_name(number: int) -> str:
    return f"part-{number:06d}.parquet"  # more digits appear as needed: numbers are parsed, never sliced


def part_number(name: str) -> int | None:
    match = PART.search(name)
    return int(match.group(1)) if match and "/" not in name else None


def next_part(names: list[str]) -> int:
    """The number after the largest part file among ``names`` (0 when none)."""
    numbers = [n for n in map(part_number, names) if n is not None]
    return max(numbers) + 1 if numbers else 0


class IdSet:
    """A set of 64-bit id hashes in 256 buckets (by the top byte), each a few sorted uint64 arrays
    merged in levels, plus a small buffer of the newest: 8 bytes an id, and a merge only ever copies
    one bucket (1/256 of the set), so adding ids never needs a second copy of the whole set."""

    BUFFER = 1 << 14
    SHIFT = np.uint64(56)

    def __init__(self):
        self.buckets: list[list[np.ndarray]] = [[] for _ in range(256)]
        self.buffer: set[int] = set()

    def add(self, h: int) -> None:
        self.buffer.add(h)
        if len(self.buffer) >= self.BUFFER:
            self.add_many(np.fromiter(self.buffer, dtype=np.uint64, count=len(self.buffer)))
            self.buffer.clear()

    def add_many(self, hashes: np.ndarray) -> None:
        hashes = np.unique(hashes.astype(np.uint64))
        bounds = np.searchsorted(hashes >> self.SHIFT, np.arange(257, dtype=np.uint64))
        for b in np.flatnonzero(np.diff(bounds)):
            levels = self.buckets[b]
            levels.append(hashes[bounds[b]:bounds[b + 1]].copy())
            while len(levels) > 1 and len(levels[-2]) <= 2 * len(levels[-1]):
                top = levels.pop()
                levels[-1] = np.union1d(levels[-1], top)

    def __contains__(self, h: int) -> bool:
        if h in self.buffer:
            return True
        key = np.uint64(h)
        for level in self.buckets[h >> 56]:
            i = int(np.searchsorted(level, key))
            if i < len(level) and level[i] == key:
                return True
        return False

    def nbytes(self) -> int:
        return sum(level.nbytes for levels in self.buckets for level in levels)


class RunDir:
    """An output directory (see the module's docstring): ``write`` a micro-batch, ``close`` at the end."""

    def __init__(self, path: str | Path, identity: dict, metadata: dict[str, str], compression: str = "zstd",
                 overwrite: bool = False, rows_per_file: int = 1_000_000, target_file_mb: float = 128):
        self.uri = str(path)
        self.fs, self.base = filesystem(self.uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.metadata = metadata
        self.compression = None if compression == "none" else compression
        self.rows_per_file, self.target_bytes = rows_per_file, int(target_file_mb * (1 << 20))
        info = self.fs.get_file_info(self.base)
        if info.type == pafs.FileType.Directory and self._list(self.base):
            if overwrite:
                self.fs.delete_dir_contents(self.base)
            else:
                self._check_identity(identity)
        self.fs.create_dir(f"{self.base}/{PENDING}", recursive=True)
        self._put_text(f"{self.base}/{META}/run.json", json.dumps(identity, indent=2, sort_keys=True))
        self.finished = IdSet()
        self.resumed_rows = self.retried_rows = 0
        self.rows = self.micro_batches = self.files = 0
        self._resume()

    @property
    def path(self) -> str:
        """Where the table is: a local directory, or the URI it was given."""
        return self.base if self.local else self.uri

    # -- opening -------------------------------------------------------------------------------

    def _list(self, directory: str, recursive: bool = False) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True, recursive=recursive))

    def _check_identity(self, identity: dict) -> None:
        try:
            with self.fs.open_input_stream(f"{self.base}/{META}/run.json") as f:
                old = json.loads(f.read())
        except FileNotFoundError:
            raise ConfigError("output.path", self.uri,
                              "directory is not empty and holds no run; pass --overwrite to replace it") from None
        if old != identity:
            added = _added_keys(old, identity)
            if added:
                raise ConfigError("output.path", self.uri,
                                  f"holds a run written by an earlier pargs_batch (its config has no "
                                  f"{', '.join(added[:3])}; its files lack this version's columns); pass --overwrite "
                                  "to replace it or choose another output.path")
            changed = sorted(_diff_keys(old, identity))
            raise ConfigError("output.path", self.uri,
                              f"holds a run with a different config ({'; '.join(changed[:5])}); "
                              "pass --overwrite to replace it or choose another output.path")

    def _resume(self) -> None:
        """Drop what a crash left half-done, rebuild the finished ids, find the open file."""
        for sub in (self.base, f"{self.base}/{CANDIDATES}"):
            for info in self._list(sub):
                if info.base_name.endswith(".tmp"):  # a compaction cut short
                    self.fs.delete_file(info.path)
        parts = self._parts()
        pending = {}
        for info in self._list(f"{self.base}/{PENDING}"):
            number = part_number(info.base_name + ".parquet")
            if number is None:
                continue
            if number in parts:
                self.fs.delete_dir(info.path)  # compacted already; the crash came before the clean-up
            else:
                pending[number] = info.path
        self.part = max([n + 1 for n in parts] + list(pending) + [0])
        for number in sorted(pending):  # only the open file's is left pending, unless a crash cut a roll short
            if number != self.part:
                self._compact(number, pending[number])
        parts = self._parts()
        self.pending_dir = f"{self.base}/{PENDING}/part-{self.part:06d}"
        self.pending_rows = self.pending_bytes = 0
        self.next_mb = 0
        for path in parts.values():
            self._collect(path)
        for info in self._list(self.pending_dir):
            if info.base_name.endswith(".tmp"):
                self.fs.delete_file(info.path)
                continue
            match = MB.search(info.base_name)
            if match:
                self.next_mb = max(self.next_mb, int(match.group(2)) + 1)
            if match and match.group(1) == "mb":
                self.pending_rows += self._collect(info.path)
                self.pending_bytes += info.size
        if self.pending_rows >= self.rows_per_file or self.pending_bytes >= self.target_bytes:
            self.roll()  # the crash came during the roll that closes this file: finish it first

    def _parts(self) -> dict[int, str]:
        """The part files present: number -> path."""
        return {n: i.path for n, i in ((part_number(i.base_name), i) for i in self._list(self.base)) if n is not None}

    def _collect(self, path: str) -> int:
        """Add a file's finished ids; rewrite it without its retryable rows (a rerun makes them again).
        Returns the rows it keeps."""
        pf = pq.ParquetFile(path, filesystem=self.fs)
        retry = 0
        for batch in pf.iter_batches(columns=["id", "error"], batch_size=8192, use_threads=False):
            ids, errors = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            keep = [i for i, e in zip(ids, errors) if not (e and e.startswith(RETRYABLE))]
            retry += len(ids) - len(keep)
            self.finished.add_many(np.fromiter((id_hash(i) for i in set(keep)), dtype=np.uint64))
            self.resumed_rows += len(keep)
        if retry:
            table = pq.read_table(path, filesystem=self.fs)
            mask = pc.invert(pc.fill_null(pc.starts_with(table["error"], RETRYABLE), False))
            self._put(table.filter(mask), path)
            self.retried_rows += retry
        return pf.metadata.num_rows - retry

    # -- writing -------------------------------------------------------------------------------

    def is_finished(self, row_id: str) -> bool:
        """Whether an earlier run wrote a prompt's rows (all its samples share a micro-batch): what a
        resume skips. This run's own rows are not added: the reader never meets an id twice (a
        repeated id is an error row), so a fresh run keeps no finished set at all."""
        return id_hash(row_id) in self.finished

    def write(self, rows: list[ResponseRow], candidates: list[CandidateRow] = ()) -> None:
        """One finished micro-batch: durable (and its prompts finished) when this returns."""
        name = f"{self.next_mb:09d}.parquet"
        if self.next_mb == 0:
            self.fs.create_dir(self.pending_dir, recursive=True)
        if candidates:
            self._put(candidates_table(list(candidates), self.metadata), f"{self.pending_dir}/cand-{name}")
        size = self._put(to_table(rows, self.metadata), f"{self.pending_dir}/mb-{name}")
        self.next_mb += 1
        self.micro_batches += 1
        self.rows += len(rows)
        self.pending_rows += len(rows)
        self.pending_bytes += size
        if self.pending_rows >= self.rows_per_file or self.pending_bytes >= self.target_bytes:
            self.roll()

    def roll(self) -> None:
        """Compact the open file's micro-batches into its part file and open the next."""
        if not self._list(self.pending_dir):
            return
        self._compact(self.part, self.pending_dir)
        self.part += 1
        self.pending_dir = f"{self.base}/{PENDING}/part-{self.part:06d}"
        self.pending_rows = self.pending_bytes = 0
        self.next_mb = 0

    def close(self) -> None:
        """Compact what is pending: the output is then only part files (and their metadata)."""
        self.roll()

    def _compact(self, number: int, pending_dir: str) -> None:
        files = sorted((i.path for i in self._list(pending_dir) if MB.search(i.base_name)), key=_mb_order)
        cands = [f for f in files if MB.search(f).group(1) == "cand"]
        rows = [f for f in files if MB.search(f).group(1) == "mb"]
        if cands:  # before the part file: the part file's existence is the commit
            self.fs.create_dir(f"{self.base}/{CANDIDATES}", recursive=True)
            self._merge(cands, f"{self.base}/{CANDIDATES}/{part_name(number)}", CANDIDATE_SCHEMA)
        if rows:
            self._merge(rows, f"{self.base}/{part_name(number)}", SCHEMA)
            self.files += 1
        self.fs.delete_dir(pending_dir)

    def _merge(self, sources: list[str], dest: str, schema: pa.Schema) -> None:
        """Concatenate Parquet files into ``dest`` with row groups of about ``ROW_GROUP_BYTES``."""
        target = dest + ".tmp" if self.local else dest
        schema = schema.with_metadata(self.metadata)
        with self.fs.open_output_stream(target) as sink, \
                pq.ParquetWriter(sink, schema, compression=self.compression) as writer:
            group, size, rows = [], 0, 0
            for path in sources:  # one thread: per-thread allocator heaps would each keep a group's worth
                table = pq.ParquetFile(path, filesystem=self.fs).read(use_threads=False).cast(schema)
                group.append(table)
                size, rows = size + table.nbytes, rows + table.num_rows
                if size >= ROW_GROUP_BYTES or rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(group), row_group_size=ROW_GROUP_ROWS)
                    group, size, rows = [], 0, 0
            if group:
                writer.write_table(pa.concat_tables(group), row_group_size=ROW_GROUP_ROWS)
        if self.local:
            self.fs.move(target, dest)
        pa.default_memory_pool().release_unused()

    def _put(self, table: pa.Table, path: str) -> int:
        """Write ``table`` so that ``path`` appears whole or not at all; returns its size in bytes."""
        target = path + ".tmp" if self.local else path
        with self.fs.open_output_stream(target) as sink:
            pq.write_table(table, sink, compression=self.compression)
            size = sink.tell()
        if self.local:
            self.fs.move(target, path)
        return size

    def _put_text(self, path: str, text: str) -> None:
        target = path + ".tmp" if self.local else path
        with self.fs.open_output_stream(target) as f:
            f.write(text.encode())
        if self.local:
            self.fs.move(target, path)

    def write_summary(self, summary: dict) -> None:
        self._put_text(f"{self.base}/{META}/summary.json", json.dumps(summary, indent=2))


def _mb_order(path: str) -> int:
    return int(MB.search(path).group(2))


def _added_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Keys of ``new`` that ``old`` does not have at all (a config from an earlier version)."""
    keys = []
    for key, value in new.items():
        if key not in old:
            keys.append(prefix + key)
        elif isinstance(value, dict) and isinstance(old[key], dict):
            keys += _added_keys(old[key], value, f"{prefix}{key}.")
    return keys


def _diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _diff_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return keys


def output_files(path: str | Path, kind: str = "rows") -> tuple[pafs.FileSystem, list[str]]:
    """(filesystem, part files in number order) of a finished output; ``kind="candidates"``: the
    best-of-n candidates' files. ``FileNotFoundError`` when there are none."""
    fs, base = filesystem(str(path))
    if kind == "candidates":
        base = f"{base}/{CANDIDATES}"
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    files = sorted((part_number(i.base_name), i.path) for i in infos if part_number(i.base_name) is not None)
    if not files:
        raise FileNotFoundError(f"no Parquet part files in {path}")
    return fs, [p for _, p in files]


def read_output(path: str | Path, kind: str = "rows") -> pa.Table:
    """A finished output as one Arrow table (part files in number order); ``kind="candidates"``
    reads the best-of-n candidates. The same table ``pyarrow.parquet.read_table(path)`` gives."""
    fs, files = output_files(path, kind)
    return pa.concat_tables([pq.read_table(p, filesystem=fs) for p in files])


def iter_output(path: str | Path, columns: list[str] | None = None, batch_size: int = 4096):
    """A finished output's rows as record batches of at most ``batch_size`` rows, in file order:
    memory holds one batch (and one row group's pages), however large the output."""
    fs, files = output_files(path)
    for p in files:
        yield from pq.ParquetFile(p, filesystem=fs).iter_batches(batch_size=batch_size, columns=columns,
                                                                 use_threads=False)


def output_info(path: str | Path) -> tuple[dict, int]:
    """(the generation config from the file metadata, total rows) of a finished output, from footers only."""
    fs, files = output_files(path)
    first = pq.ParquetFile(files[0], filesystem=fs)
    config = json.loads(first.schema_arrow.metadata[b"pargs_batch.config"])
    rows = sum(pq.ParquetFile(p, filesystem=fs).metadata.num_rows for p in files)
    return config, rows
