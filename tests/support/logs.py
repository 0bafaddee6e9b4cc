"""Reading the log.txt files runs leave."""
import os
import re


def log_lines(log_dir_root, pattern):
    """Lines of every log.txt under log_dir_root matching regex ``pattern``
    (as match objects), in run order (log dirs sort by start time)."""
    found = []
    for run in sorted(os.listdir(log_dir_root)):
        path = os.path.join(log_dir_root, run, "log.txt")
        if os.path.isfile(path):
            with open(path) as f:
                found += [m for m in map(re.compile(pattern).search, f) if m]
    return found
