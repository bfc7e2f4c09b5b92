"""The store's SQLite files carry a file format number; a file from a newer posswarm is refused, not misread."""

import sqlite3

import pytest

from posswarm.sales.ledger import Ledger
from posswarm.sqlite_file import StoreFileError, open_db


def test_a_new_file_is_stamped_and_reopens(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    Ledger(path).close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (1,)
    Ledger(path).close()


def test_a_file_written_by_a_newer_posswarm_is_refused_and_left_alone(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=9")
    db.close()
    with pytest.raises(StoreFileError, match=r"file format 9 is newer than this posswarm reads \(1\); upgrade"):
        open_db(path, "sales ledger", "CREATE TABLE t (x);")
    db = sqlite3.connect(path)
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
    assert db.execute("PRAGMA user_version").fetchone() == (9,)
