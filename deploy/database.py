"""The retrieval database: its list, its cached codes, its search index, and
where a query image stands in the dataset's lists (its labels, its own
database entry)."""
import copy
import os

from utils.retrieval.code_cache import DatabaseCodeCache, make_fingerprint
from utils.retrieval.index import is_saved_index, open_saved_index, parse_spec
from utils.data.loaders import ImageList, build_loader
from utils.data.list_format import parse_list
from utils.base.errors import UserError


def database_list(args):
    return os.path.join(args.list_dir, "database.txt")


def open_database(args):
    """The database list (parsed, images not yet checked), read with
    ``args.pipeline`` (deploy/cli.py set_pipeline)."""
    return ImageList(database_list(args), args.data_path, args.num_class,
                     train=False, resize_size=args.resize_size, crop_size=args.crop_size,
                     pipeline=args.pipeline)


def database_loader(db, batch_size):
    """In-order batches of the database (every image checked first)."""
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    db.check_files()
    return build_loader(db, batch_size, shuffle=False)


def database_tail(db, start):
    """The entries of ``db`` from ``start`` on (the images a grown list adds)."""
    return with_entries(db, db.paths[start:], db.labels[start:])


def with_entries(db, paths, labels):
    """``db`` (an ImageList) holding other entries: same root and transforms."""
    other = copy.copy(db)
    other.paths, other.labels = paths, labels
    return other


def database_code_cache(args, model_files, tag="", device=None):
    """The code cache of this dataset, bit and producer under --save_path; the
    reference's ``database_code_{bit}.npy`` there is the legacy fallback.
    ``device`` ("cpu"/"gpu") encodes; default: Paddle's current device."""
    fingerprint = make_fingerprint(model_files, database_list(args), args.data_path, args.bit,
                                   args.crop_size, args.resize_size, device)
    name = f"database_code_{args.dataset}_{args.bit}{tag}.npz"
    return DatabaseCodeCache(os.path.join(args.save_path, name), fingerprint,
                             legacy_path=os.path.join(args.save_path, f"database_code_{args.bit}.npy"))


def index_directory(args, tag=""):
    """Where the --index is saved: the folder named, else
    --save_path/index_<dataset>_<bit><tag>_<backend>_<kind>; None for
    ``exact`` (kept in memory: its codes are the code cache)."""
    if is_saved_index(args.index):
        return args.index
    cls, params = parse_spec(args.index)
    if cls.backend == "exact":
        return None
    return os.path.join(args.save_path, f"index_{args.dataset}_{args.bit}{tag}_"
                                        f"{cls.backend}_{params['kind']}")


def database_search_index(args, cache, packed, tag=""):
    """The --index over the database codes ``packed`` (from ``cache``)."""
    return open_saved_index(args.index, packed, cache.fingerprint, index_directory(args, tag))


def query_label(img, db, list_dir, num_class):
    """The query's labels when its file is in a list of the dataset
    (database, then test, then train): (label [C], "file:line") or (None, None)."""
    root = os.path.realpath(db.root)
    rel = os.path.normpath(os.path.relpath(os.path.realpath(img), root))
    if rel.startswith(".."):
        return None, None
    for name in ("database", "test", "train"):
        list_file = os.path.join(list_dir, f"{name}.txt")
        if name == "database":
            paths, labels = db.paths, db.labels
        elif os.path.isfile(list_file):
            try:
                paths, labels = parse_list(list_file, num_class)
            except UserError:
                continue
        else:
            continue
        for i, p in enumerate(paths):
            if os.path.normpath(p) == rel:
                return labels[i], f"{list_file}:{i + 1}"
    return None, None


def database_index(img, db):
    """Index of the query's own file in the database list, or None."""
    target = os.path.realpath(img)
    for i, p in enumerate(db.paths):
        if os.path.realpath(os.path.join(db.root, p)) == target:
            return i
    return None
