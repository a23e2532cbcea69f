"""The user's own module sent by value (data/own_code.py): what is sent, what is not, and the
module imported from what was sent."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbparallel.data import own_code
from dbparallel.errors import UserError


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package ``mycodec`` (a sub-module, a data file, a cache) and a file ``onefile.py``,
    importable here."""
    code = tmp_path / "code"
    (code / "mycodec" / "__pycache__").mkdir(parents=True)
    (code / "mycodec" / "__init__.py").write_text("")
    (code / "mycodec" / "vae.py").write_text(
        "from pathlib import Path\n"
        "SCALE = float((Path(__file__).parent / 'scale.txt').read_text())\n"
        "def encode(x):\n    return x * SCALE\n")
    (code / "mycodec" / "scale.txt").write_text("0.5")
    (code / "mycodec" / "__pycache__" / "vae.cpython-311.pyc").write_bytes(b"stale")
    (code / "onefile.py").write_text("def encode(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(code))
    importlib.import_module("mycodec.vae")
    importlib.import_module("onefile")
    return code


def _elsewhere(tmp_path: Path, script: str, codes: list) -> list[str]:
    """What ``script`` prints, run by another Python process that reads ``codes`` pickled on
    its stdin, without the code on its path, its temporary folder tmp_path/tmp."""
    import pickle

    (tmp_path / "tmp").mkdir()
    out = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(codes),
                         capture_output=True, check=True, cwd=tmp_path / "..",
                         env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path / "tmp"),
                              "PYTHONPATH": str(Path(own_code.__file__).parents[2])})
    return out.stdout.decode().split()


def test_a_package_and_a_file_are_sent_and_import_elsewhere(tmp_path, monkeypatch) -> None:
    _module(tmp_path, monkeypatch)
    package = own_code.pack("mycodec.vae:encode", "--encoder mycodec.vae:encode")
    assert package is not None
    assert sorted(package.files) == ["mycodec/__init__.py", "mycodec/scale.txt",
                                     "mycodec/vae.py"]  # no cache
    single = own_code.pack("onefile:encode", "--encoder onefile:encode")
    assert single is not None and list(single.files) == ["onefile.py"]
    assert package.digest != single.digest
    # another process, without the code on its path, imports what was sent
    script = (
        "import pickle, sys\n"
        "from dbparallel.data.own_code import unpack\n"
        "for code in pickle.loads(sys.stdin.buffer.read()):\n"
        "    unpack(code)\n"
        "    unpack(code)\n"  # a second task of the same process: once on the path
        "from mycodec.vae import encode\n"
        "import onefile\n"
        "print(encode(4.0), onefile.encode(1), sys.path.count(sys.path[0]))\n")
    assert _elsewhere(tmp_path, script, [package, single]) == ["2.0", "2", "1"]
    assert len(list((tmp_path / "tmp").iterdir())) == 2  # one folder each, no staging left


def test_installed_code_is_not_sent_and_large_code_is_refused(tmp_path, monkeypatch) -> None:
    assert own_code.pack("json:dumps", "--encoder json:dumps") is None  # Python's own
    assert own_code.pack("numpy:zeros", "--encoder numpy:zeros") is None  # site-packages
    _module(tmp_path, monkeypatch)
    monkeypatch.setattr(own_code, "MAX_BYTES", 10)
    with pytest.raises(UserError, match=r"--encoder mycodec.vae:encode: its module's folder "
                                        r".*mycodec holds [\d.]+ MiB, more than"):
        own_code.pack("mycodec.vae:encode", "--encoder mycodec.vae:encode")


def _packed_with_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                      ) -> tuple[own_code.OwnCode, Path]:
    """The code of ``onefile``, and the empty folder that stands in for the temporary one."""
    _module(tmp_path, monkeypatch)
    code = own_code.pack("onefile:encode", "--encoder onefile:encode")
    assert code is not None
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(own_code.tempfile, "tempdir", str(tmp))
    return code, tmp


def test_two_tasks_that_unpack_at_once_leave_one_folder(tmp_path, monkeypatch) -> None:
    """Two tasks of one node unpack the same code at once: the one whose folder comes second
    finds the other's there, and its own staging folder goes."""
    code, tmp = _packed_with_temp(tmp_path, monkeypatch)
    rename = own_code.os.rename
    raced = []

    def racing(src, dst) -> None:  # the other task renames its staging folder first
        if not raced:
            raced.append(True)
            own_code.unpack(code)
        rename(src, dst)

    monkeypatch.setattr(own_code.os, "rename", racing)
    own_code.unpack(code)
    assert [p.name for p in tmp.iterdir()] == [f"dbparallel-code-{code.digest}"]
    assert (tmp / f"dbparallel-code-{code.digest}" / "onefile.py").is_file()


def test_code_no_task_used_for_a_day_is_removed_by_the_next_unpack(tmp_path,
                                                                   monkeypatch) -> None:
    code, tmp = _packed_with_temp(tmp_path, monkeypatch)
    day = time.time() - own_code.KEEP_S
    folders = {"dbparallel-code-old": day - 60, "dbparallel-code-old.x1y2": day - 60,
               "dbparallel-code-recent": day + 60, "other-old": day - 60}
    for name, when in folders.items():
        (tmp / name).mkdir()
        os.utime(tmp / name, (when, when))
    mine = tmp / f"dbparallel-code-{code.digest}"
    own_code.unpack(code)
    assert sorted(p.name for p in tmp.iterdir()) == sorted(
        [mine.name, "dbparallel-code-recent", "other-old"])
    os.utime(mine, (day - 60, day - 60))  # its own folder, however old, is used again
    own_code.unpack(code)
    assert mine.is_dir() and mine.stat().st_mtime > day + 60


def test_a_process_kept_for_the_next_task_imports_the_code_sent_last(tmp_path,
                                                                     monkeypatch) -> None:
    """A Ray worker kept from an earlier encode, sent the module again after an edit."""
    code = _module(tmp_path, monkeypatch)
    first = own_code.pack("onefile:encode", "--encoder onefile:encode")
    (code / "onefile.py").write_text("def encode(x):\n    return x + 2\n")
    second = own_code.pack("onefile:encode", "--encoder onefile:encode")
    assert first is not None and second is not None and first.digest != second.digest
    script = (
        "import pickle, sys\n"
        "from dbparallel.data.own_code import unpack\n"
        "first, second = pickle.loads(sys.stdin.buffer.read())\n"
        "unpack(first)\n"
        "import onefile\n"
        "print(onefile.encode(1))\n"
        "unpack(second)\n"
        "import onefile\n"
        "print(onefile.encode(1))\n")
    assert _elsewhere(tmp_path, script, [first, second]) == ["2", "3"]
