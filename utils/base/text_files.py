"""Text files people edit by hand (image lists) and JSON documents: read
what common editors write, or say in one line what the file really is.

Read as-is: UTF-8 with or without a byte-order mark (Windows Notepad adds
one), CRLF or CR line ends, tabs or several spaces between fields, blank
lines anywhere, no final newline, and UTF-16 with a byte-order mark (Notepad's
"Unicode"). Refused, naming the cause: UTF-16 without a byte-order mark (NUL
bytes in the text) and bytes that are not UTF-8 (a legacy code page).
"""
import codecs
import json

from utils.base.errors import UserError

UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def read_lines(path):
    """The lines of text file ``path`` (no line ends), decoded as above."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(UTF16_BOMS):
        try:
            return data.decode("utf-16").splitlines()
        except UnicodeDecodeError as err:
            raise UserError(f"{path} starts like UTF-16 but is not valid UTF-16 ({err.reason}): "
                            "re-save it as UTF-8")
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        raise UserError(f"{path}:{line}: NUL bytes: the file looks like UTF-16 without a "
                        "byte-order mark (or is binary); re-save it as UTF-8")
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: byte 0x{data[err.start]:02x} is not UTF-8 (saved in "
                        "a legacy code page?): re-save the file as UTF-8")


def parse_json(text):
    """The JSON value of ``text`` (str or bytes); ValueError for anything
    that is not one, nesting too deep for the decoder included (Python's
    json raises RecursionError there)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json(path):
    """The JSON value in file ``path`` (UTF-8, a byte-order mark allowed);
    ValueError when it is not JSON, OSError when it cannot be read."""
    with open(path, "rb") as f:
        data = f.read()
    return parse_json(data.decode("utf-8-sig"))
