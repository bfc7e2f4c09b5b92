"""Config files: one line naming the file, the line and the fix for whatever is wrong with one."""

import pytest

from posswarm.errors import PosswarmError
from posswarm.toml_file import MAX_BYTES, load_toml


def _error(path) -> str:
    with pytest.raises(PosswarmError) as caught:
        load_toml(path, "rollouts config", fix="check --rollout-config")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"rollouts config {path}: ")
    return message


def test_a_good_file_is_its_document(tmp_path):
    (tmp_path / "c.toml").write_text('rings = ["canary", "all"]\n[groups]\nnorth = ["S0*"]\n')
    assert load_toml(tmp_path / "c.toml", "rollouts config", fix="") == {
        "rings": ["canary", "all"], "groups": {"north": ["S0*"]}}


def test_a_missing_or_unreadable_file_says_what_to_do(tmp_path):
    assert _error(tmp_path / "nowhere.toml").endswith("no such file (check --rollout-config)")
    assert "cannot read it (Is a directory; check --rollout-config)" in _error(tmp_path)


@pytest.mark.parametrize(("text", "expected"), [
    ('rings = ["a"]\nrings = ["b"]\n', "not valid TOML, line 2: Cannot overwrite a value (fix that line)"),
    ("[groups\nnorth = 1\n", "not valid TOML, line 1: Expected ']' at the end of a table declaration (fix that line)"),
    ("rings = [", "not valid TOML at the end of the file: Invalid value (finish the last entry)"),
])
def test_bad_toml_names_the_line(tmp_path, text, expected):
    (tmp_path / "c.toml").write_text(text)
    assert _error(tmp_path / "c.toml").endswith(expected)


def test_text_that_is_not_utf8_names_its_line(tmp_path):
    (tmp_path / "c.toml").write_bytes(b'rings = ["all"]\nname = "caf\xe9"\n')
    assert _error(tmp_path / "c.toml").endswith("not valid TOML, line 2 is not UTF-8 text (save it as UTF-8)")


def test_a_huge_file_is_not_read_whole(tmp_path):
    (tmp_path / "c.toml").write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    assert "larger than 1024 KiB, not a config" in _error(tmp_path / "c.toml")
