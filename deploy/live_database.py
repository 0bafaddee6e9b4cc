"""The service's database, changed live: images added and removed while
searches run, the list, the code cache and the saved index in agreement on
disk after every change.

Concurrency: a readers-writer lock. Searches hold it shared and run side by
side; an add or a remove holds it alone, so a search sees the database as it
was before a change or after it, never half of one.

Durability. A change is written in this order:

  1. a journal beside the code cache (``<cache>.journal.npz``): the change
     (the positions removed, or the codes, labels and paths added) and the
     digests of the list's entries and of the codes, before and after;
  2. the list (``database.txt``), atomically;
  3. the code cache, atomically;
  4. the saved index (its ``index.json`` last: utils/retrieval/index/saved.py);
  5. the journal is removed.

A kill at any point leaves either no journal (nothing started, or all done)
or one whose list tells how far it got: a list still as before means nothing
happened (the journal and the uploads it names are dropped); a list as after
means the cache and then the index are brought forward from the journal, each
only if it still holds the codes before. The next start does this
(``recover``) before it opens the database, and so does a change that fails
half-way (a full disk), before the database is read back from disk.
"""
import contextlib
import dataclasses
import json
import os
import threading
import zipfile

import numpy as np

from deploy.database import (database_code_cache, database_list, database_loader,
                             index_directory, with_entries)
from deploy.retrieve import Database, open_coded_database
from utils.base.errors import UserError
from utils.base.fingerprint import CacheError, file_stats, sha256_file
from utils.base.io import atomic_write
from utils.data.list_format import parse_list, write_list
from utils.inference.encoder import encode_batches
from utils.retrieval.code_cache import entries_digest, same_but_list
from utils.retrieval.hamming import pack_codes
from utils.retrieval.index import is_saved_index, load_index, save_index
from utils.retrieval.index.saved import codes_digest, read_meta


class UnknownImage(UserError):
    """An id that is not a position of the database list."""


class ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before new readers."""

    def __init__(self):
        self.condition = threading.Condition()
        self.readers, self.writer_in, self.writers_waiting = 0, False, 0

    @contextlib.contextmanager
    def reading(self):
        with self.condition:
            self.condition.wait_for(lambda: not self.writer_in and not self.writers_waiting)
            self.readers += 1
        try:
            yield
        finally:
            with self.condition:
                self.readers -= 1
                self.condition.notify_all()

    @contextlib.contextmanager
    def writing(self):
        with self.condition:
            self.writers_waiting += 1
            self.condition.wait_for(lambda: not self.writer_in and self.readers == 0)
            self.writers_waiting -= 1
            self.writer_in = True
        try:
            yield
        finally:
            with self.condition:
                self.writer_in = False
                self.condition.notify_all()


@dataclasses.dataclass(frozen=True)
class Change:
    """One add or remove: what the journal records and what is applied to
    the list's entries, the codes and the index alike."""
    op: str                                   # "add" or "remove"
    positions: np.ndarray = None              # remove: sorted, unique
    packed: np.ndarray = None                 # add: the new codes
    labels: np.ndarray = None                 # add: their labels [n, C]
    paths: tuple = ()                         # add: their list paths
    uploads: tuple = ()                       # add: files written for it, under the root

    def rows(self, old, added):
        """``old`` rows (a list or an array) with this change applied."""
        if self.op == "remove":
            drop = set(self.positions.tolist())
            if isinstance(old, list):
                return [row for i, row in enumerate(old) if i not in drop]
            return np.delete(old, self.positions, axis=0)
        return list(old) + list(added) if isinstance(old, list) else np.concatenate([old, added])

    def entries(self, paths, labels, packed):
        """(paths, labels, packed) after the change."""
        return (self.rows(list(paths), self.paths),
                self.rows(np.asarray(labels, np.float32), self.labels),
                self.rows(packed, self.packed))

    def stats(self, old, root):
        """The code cache's image stats (``old``, int64 [n, 3]) after the
        change: an added image's read from disk now, as it was encoded."""
        added = file_stats([os.path.join(root, p) for p in self.paths])
        return self.rows(np.asarray(old, np.int64).reshape(-1, 3), added)

    def apply_to_index(self, index):
        if self.op == "remove":
            index.remove(self.positions)
        else:
            index.add(self.packed)


# ---------------------------------------------------------------- the journal
def journal_path(cache):
    return cache.path + ".journal.npz"


def write_journal(path, change, digests):
    arrays = {name: value for name, value in (("positions", change.positions),
                                               ("packed", change.packed),
                                               ("labels", change.labels)) if value is not None}
    meta = dict(digests, op=change.op, paths=list(change.paths), uploads=list(change.uploads))

    def write(tmp):
        with open(tmp, "wb") as f:   # a file object: np.savez would add ".npz" to a name
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    atomic_write(path, write)


def read_journal(path):
    """(change, digests) of a journal; CacheError if it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"][()]))
            arrays = {name: data[name] for name in ("positions", "packed", "labels")
                      if name in data}
        change = Change(meta.pop("op"), paths=tuple(meta.pop("paths")),
                        uploads=tuple(meta.pop("uploads")), **arrays)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise CacheError(f"{type(err).__name__}: {err}")
    return change, meta


def recover(cache, list_file, num_class, root, index_dir, log=print):
    """Finish or undo the change a journal beside ``cache`` records (see the
    module docstring); nothing when there is none."""
    path = journal_path(cache)
    if not os.path.isfile(path):
        return
    try:
        change, digests = read_journal(path)
    except CacheError as err:
        log(f"journal: {path} is unreadable ({err}); dropped: the code cache and the index "
            "are checked against the list as on any start")
        os.remove(path)
        return
    paths, labels = parse_list(list_file, num_class)
    now = entries_digest(paths, labels)
    if now == digests["entries_before"]:
        drop_uploads(change.uploads, paths, root)
        log(f"journal: an interrupted {change.op} had not reached {list_file}: undone")
    elif now == digests["entries_after"]:
        packed = roll_cache_forward(cache, change, digests, (paths, labels), root)
        if packed is not None and index_dir and is_saved_index(index_dir):
            roll_index_forward(index_dir, change, digests, cache.fingerprint, packed)
        log(f"journal: an interrupted {change.op} had reached {list_file}: completed")
    else:
        log(f"journal: {list_file} is neither as before nor as after the interrupted "
            f"{change.op}; the code cache and the index are checked against it as on any start")
    os.remove(path)


def drop_uploads(uploads, paths, root):
    """Remove the files an undone add wrote, unless the list ``paths`` holds them."""
    for upload in set(uploads) - set(paths):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(root, upload))


def roll_cache_forward(cache, change, digests, entries, root):
    """The cache's codes after the change (written if it held those before),
    or None when it holds neither. ``root``: the images' folder."""
    try:
        packed, labels, saved, _, stats = cache.read_unchecked()
    except CacheError:
        return None
    if not same_but_list(saved, cache.fingerprint):
        return None
    if codes_digest(packed) == digests["codes_before"]:
        _, _, packed = change.entries([], labels, packed)
        if stats is not None:
            cache.images = (entries[0], change.stats(stats, root))
        cache.write(packed, entries[1], entries)
    return packed if codes_digest(packed) == digests["codes_after"] else None


def roll_index_forward(index_dir, change, digests, fingerprint, packed):
    """Apply the change to the saved index if it holds the codes before."""
    try:
        if read_meta(index_dir).get("codes_sha256") != digests["codes_before"]:
            return
        index, _ = load_index(index_dir)
    except CacheError:
        return   # opening the database rebuilds it, saying why
    try:
        change.apply_to_index(index)
        save_index(index, index_dir, fingerprint, packed)
    finally:
        index.close()


# ---------------------------------------------------------------- the live database
class LiveDatabase:
    """The database of ``args`` (deploy/cli.py database flags) under
    ``encoder``, open for searches (``reading``), adds and removes."""

    def __init__(self, args, encoder, batch_size, log=print):
        self.args, self.encoder, self.batch_size, self.log = args, encoder, batch_size, log
        self.list_file = database_list(args)
        self.index_dir = index_directory(args, encoder.tag)
        self.lock = ReadWriteLock()
        self.db = None
        self.open()

    def open(self):
        """Finish or undo an interrupted change, then read everything from disk."""
        cache = database_code_cache(self.args, list(self.encoder.files), tag=self.encoder.tag,
                                    device=self.encoder.device)
        recover(cache, self.list_file, self.args.num_class, self.args.data_path, self.index_dir,
                self.log)
        self.db = open_coded_database(self.args, self.encoder, self.batch_size)

    @contextlib.contextmanager
    def reading(self):
        """The database as it stands, unchanged while the block runs."""
        with self.lock.reading():
            yield self.db

    def __len__(self):
        return len(self.db.packed)

    def encode(self, paths, labels):
        """Codes of images under the root, as the database's own are encoded."""
        images = with_entries(self.db.images, list(paths), np.asarray(labels, np.float32))
        codes, _, _ = encode_batches(self.encoder.database(len(paths)),
                                     database_loader(images, self.batch_size), "encoding added")
        return pack_codes(codes)

    def add(self, paths, labels, uploads=()):
        """Append images (paths under the root, labels [n, C]); returns their positions."""
        labels = np.asarray(labels, np.float32).reshape(len(paths), -1)
        change = Change("add", packed=self.encode(paths, labels), labels=labels,
                        paths=tuple(paths), uploads=tuple(uploads))
        with self.lock.writing():
            first = len(self.db.packed)
            self.apply(change)
        return list(range(first, first + len(paths)))

    def remove(self, positions):
        """Remove the images at ``positions``; returns their paths."""
        positions = np.unique(np.asarray(positions, np.int64))
        with self.lock.writing():
            unknown = positions[(positions < 0) | (positions >= len(self.db.packed))]
            if len(unknown):
                raise UnknownImage(f"no image {unknown[0]}: ids are 0..{len(self.db.packed) - 1}")
            removed = [self.db.images.paths[p] for p in positions]
            self.apply(Change("remove", positions=positions))
        return removed

    def apply(self, change):
        """Write ``change`` through (module docstring), then make it visible;
        the caller holds the lock alone."""
        db, cache = self.db, self.db.cache
        paths, labels, packed = change.entries(db.images.paths, db.labels, db.packed)
        journal = journal_path(cache)
        write_journal(journal, change, {
            "entries_before": entries_digest(db.images.paths, db.labels),
            "entries_after": entries_digest(paths, labels),
            "codes_before": codes_digest(db.packed), "codes_after": codes_digest(packed)})
        try:
            write_list(self.list_file, paths, labels)
            cache.fingerprint = dict(cache.fingerprint, list_sha256=sha256_file(self.list_file))
            if cache.images is not None:   # the stat identity of every image the codes are of
                cache.images = (paths, change.stats(cache.images[1], self.args.data_path))
            cache.write(packed, labels, (paths, labels))
            change.apply_to_index(db.index)
            if self.index_dir:
                save_index(db.index, self.index_dir, cache.fingerprint, packed)
            os.remove(journal)
        except BaseException:
            failed, self.db = self.db, None   # a failed reopen leaves the service unready
            failed.index.close()
            self.open()
            raise
        self.db = Database(with_entries(db.images, paths, labels), packed, labels, "live",
                           db.index, cache)
