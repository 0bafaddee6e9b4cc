"""Saved indexes: a folder with the backend's files and ``index.json``, and
the policy predict.py and infer.py follow to reuse, extend or rebuild one.

``index.json`` (written last, atomically) holds the spec's backend and
parameters, the code length, the number of codes, the sha256 of those codes
(packed bytes) and of each payload file, and the code cache's fingerprint
(utils/retrieval/code_cache.py: weights, list, data root, sizes, bit, Paddle
version, device). An index is reused only when that fingerprint, list aside,
equals the current one and its codes are the current database's first
codes: all of them (reuse) or a prefix (the list grew: the new codes are
added, nothing is re-encoded or rebuilt). Otherwise it is rebuilt with a line
saying why, or, for an index the user named by its folder, refused.
"""
import hashlib
import os
import time

from utils.base.errors import UserError, one_line
from utils.base.fingerprint import (CacheError, StaleCache, check_fingerprint, is_sha256,
                                    sha256_file)
from utils.base.io import atomic_write_json
from utils.base.text_files import read_json
from utils.retrieval.code_cache import CHANGES
from utils.retrieval.index.registry import (BACKENDS, build_index, params_problem, parse_spec,
                                            recreate_index)

FORMAT = 1
META_FILE = "index.json"
MAX_BIT = 4096   # a code length beyond this is a corrupt file, not a model


def is_saved_index(path):
    return os.path.isfile(os.path.join(str(path), META_FILE))


def codes_digest(packed):
    return hashlib.sha256(packed.tobytes()).hexdigest()


def save_index(index, directory, fingerprint=None, packed=None):
    """Write ``index`` to ``directory``. ``packed``: the codes it holds (their
    digest lets a later run check or extend it); ``fingerprint``: what made them."""
    os.makedirs(directory, exist_ok=True)
    files = index.save_files(directory)
    meta = {"format": FORMAT, "backend": index.backend, "params": index.params,
            "bit": index.bit, "count": len(index), "fingerprint": fingerprint,
            "codes_sha256": None if packed is None else codes_digest(packed[:len(index)]),
            "files": {name: sha256_file(os.path.join(directory, name)) for name in files}}
    atomic_write_json(meta, os.path.join(directory, META_FILE))


def read_meta(directory):
    """``index.json`` of a saved folder, every field checked for its type
    and range; CacheError naming the first that is not."""
    path = os.path.join(directory, META_FILE)
    try:
        meta = read_json(path)
    except (OSError, ValueError) as err:
        raise CacheError(f"{path}: {one_line(err)}")
    problem = meta_problem(meta)
    if problem:
        raise CacheError(f"{path} is not an index description of format {FORMAT}: {problem}")
    return meta


META_TYPES = {"backend": (str, "a name"), "params": (dict, "an object"),
              "bit": (int, "an integer"), "count": (int, "an integer"),
              "files": (dict, "an object")}


def meta_problem(meta):
    """What makes ``meta`` not an index.json this code writes, or None."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return "no \"format\": 1"
    wrong = [key for key, (type_, _) in META_TYPES.items() if type(meta.get(key)) is not type_]
    if wrong:
        return f"{wrong[0]} is not {META_TYPES[wrong[0]][1]}"
    if meta["backend"] not in BACKENDS:
        return f"unknown backend {meta['backend'][:40]!r}"
    if not 1 <= meta["bit"] <= MAX_BIT or meta["count"] < 0:
        return f"bit {meta['bit']} or count {meta['count']} out of range"
    if not (meta.get("fingerprint") is None or isinstance(meta["fingerprint"], dict)):
        return "fingerprint is not an object"
    if not (meta.get("codes_sha256") is None or is_sha256(meta["codes_sha256"])):
        return "codes_sha256 is not a sha256"
    bad = next((name for name, digest in meta["files"].items()
                if not is_plain_file_name(name) or not is_sha256(digest)), None)
    if bad is not None:
        return f"files lists {bad[:80]!r}, not a file name of the folder with its sha256"
    return params_problem(BACKENDS[meta["backend"]], meta["params"])


def is_plain_file_name(name):
    """A name inside the index folder: no separator, not . or .."""
    return bool(name) and name not in (".", "..") and "/" not in name and os.sep not in name


def load_index(directory):
    """(index, meta) from a saved folder; CacheError if it is incomplete or
    altered (a payload file whose digest differs, a row count that does
    not, a payload its backend cannot read)."""
    meta = read_meta(directory)
    for name, digest in meta["files"].items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path) or sha256_file(path) != digest:
            raise CacheError(f"{path} is missing or differs from when the index was saved")
    try:
        index = recreate_index(meta["backend"], meta["params"], meta["bit"], directory)
        index.load_files(directory, meta["count"], meta["files"])
    except (UserError, OSError, ValueError, RuntimeError) as err:   # faiss: RuntimeError
        raise CacheError(f"{directory}: its {meta['backend']} payload cannot be read "
                         f"({one_line(err)})")
    if len(index) != meta["count"]:
        index.close()
        raise CacheError(f"the index holds {len(index)} codes, {META_FILE} says {meta['count']} "
                         "(an interrupted add?)")
    return index, meta


def without_list(fingerprint):
    return {k: v for k, v in (fingerprint or {}).items() if k != "list_sha256"}


def check_reusable(meta, packed, fingerprint, params):
    """StaleCache saying why an index described by ``meta`` cannot serve
    ``packed`` (made as ``fingerprint`` says); ``params``: the spec asked for
    (None: whatever the folder holds)."""
    if params is not None and meta["params"] != params:
        raise StaleCache(f"it was built as {meta['backend']} {meta['params']}")
    if meta.get("fingerprint") is None:
        raise StaleCache("it has no fingerprint")
    check_fingerprint(without_list(meta["fingerprint"]), without_list(fingerprint), CHANGES)
    count = meta["count"]
    if count > len(packed) or meta.get("codes_sha256") != codes_digest(packed[:count]):
        raise StaleCache(f"the database list changed (its first {count:,} codes are not the "
                         "index's)")


def open_saved_index(choice, packed, fingerprint, default_dir, log=print):
    """The search index of predict.py / infer.py for database codes ``packed``.

    ``choice``: a spec (the index lives in ``default_dir``, rebuilt when
    stale; ``exact`` is kept in memory only, its codes are the code cache) or
    the folder of a saved index (used as it is or extended, refused when it
    was built for other inputs)."""
    named = is_saved_index(choice)
    if not named:
        cls, params = parse_spec(choice)
        if cls.backend == "exact":
            return build_index(choice, packed, fingerprint["bit"])
    directory = choice if named else default_dir
    where = f"--index {directory}" if named else f"index {directory}"
    if named or is_saved_index(directory):
        try:
            meta = read_meta(directory)
            check_reusable(meta, packed, fingerprint, None if named else params)
            index, meta = load_index(directory)
            return extend_if_grown(index, meta, packed, fingerprint, directory, log)
        except CacheError as err:
            stale = isinstance(err, StaleCache)
            if named:
                raise UserError(f"{where} cannot serve this database: "
                                f"{'it was built for other inputs: ' if stale else ''}{err}; "
                                "build another with --index BACKEND[:KIND] or fix the flags")
            log(f"index: {directory} is {'stale' if stale else 'unreadable'} ({err}); rebuilding")
    return build_and_save(choice, packed, fingerprint, directory, log)


def extend_if_grown(index, meta, packed, fingerprint, directory, log):
    added = len(packed) - len(index)
    if added == 0:
        log(f"index: loaded the {index.spec} index of {len(index):,} codes from {directory} "
            "(fingerprint matches)")
        return index
    start = time.time()
    index.add(packed[len(index):])
    save_index(index, directory, fingerprint, packed)
    log(f"index: the database grew by {added:,} codes: added them to {directory} in "
        f"{time.time() - start:.1f}s ({len(index):,} codes)")
    return index


def build_and_save(spec, packed, fingerprint, directory, log):
    start = time.time()
    index = build_index(spec, packed, fingerprint["bit"], directory)
    save_index(index, directory, fingerprint, packed)
    log(f"index: built {index.spec} over {len(index):,} codes in {time.time() - start:.1f}s; "
        f"saved to {directory}")
    return index
