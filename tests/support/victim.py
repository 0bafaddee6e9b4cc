"""The file a planted symbolic link points to: it must survive untouched."""
VICTIM_TEXT = "precious: must survive\n"


def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path
