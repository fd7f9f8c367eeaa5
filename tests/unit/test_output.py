"""output: confirmation of destructive steps, plain tables off a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memstack_ops import output
from memstack_ops.errors import Refused

REPO = Path(__file__).resolve().parents[2]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_confirm_refuses_when_stdin_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("memstack\n"))  # even the right answer is not read
    with pytest.raises(Refused) as e:
        output.confirm("This deletes ALL data.", "memstack")
    assert "This deletes ALL data. Refusing: stdin is not a terminal" in str(e.value)
    assert "--yes" in str(e.value)
    assert e.value.exit_code == 2
    assert sys.stdin.read() == "memstack\n"  # nothing was consumed
    assert capsys.readouterr().out == ""  # and nobody was asked


def test_confirm_refuses_without_any_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(Refused, match="stdin is not a terminal"):
        output.confirm("Drop?", "memstack")


def test_confirm_with_yes_skips_the_question(monkeypatch, capsys):
    stdin = io.StringIO("")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert output.confirm("This deletes ALL data.", "memstack", yes=True) is None
    assert capsys.readouterr().out == ""


def test_confirm_accepts_the_expected_answer_typed_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", FakeTTY("  memstack \n"))
    output.confirm("This deletes ALL data.", "memstack")
    assert capsys.readouterr().out == "This deletes ALL data.\nType 'memstack' to confirm: "


@pytest.mark.parametrize("answer", ["y", "yes", "MEMSTACK", "memstac", ""])
def test_confirm_refuses_a_wrong_typed_answer(monkeypatch, answer):
    monkeypatch.setattr(sys, "stdin", FakeTTY(answer + "\n"))
    with pytest.raises(Refused) as e:
        output.confirm("Drop?", "memstack")
    assert str(e.value) == f"Not confirmed (typed {answer!r}, expected 'memstack'); nothing was changed."


def test_interactive_is_false_off_a_terminal_and_in_ci(monkeypatch):
    assert output.interactive(io.StringIO()) is False
    assert output.interactive(FakeTTY()) is True
    monkeypatch.setenv("CI", "true")
    assert output.interactive(FakeTTY()) is False


def test_table_off_a_terminal_prints_aligned_plain_columns(capsys):
    output.table("URLs", ["service", "url"], [["api", "http://127.0.0.1:8000/docs"], ["db", None]])
    assert capsys.readouterr().out.splitlines() == [
        "URLs",
        "service  url",
        "api      http://127.0.0.1:8000/docs",
        "db",
    ]


def test_warn_goes_to_stderr(capsys):
    output.warn("careful")
    assert capsys.readouterr() == ("", "careful\n")


def test_one_human_size_in_decimal_units_for_backups_and_shipped_images():
    from memstack_ops.backup import sets
    from memstack_ops.output import human_size
    from memstack_ops.remote.images import Shipment

    assert [human_size(n) for n in (0, 999, 1000, 1_500_000, 2.5e9)] == ["0 B", "999 B", "1.0 KB", "1.5 MB", "2.5 GB"]
    assert sets.human_size is human_size
    assert "(470.0 MB" in Shipment(shipped=["a"], bytes=470_000_000).describe()  # was 448.2 "MB" (MiB)
    left = Shipment(shipped=["a"], bytes=34_000_000, layers_left=3, bytes_left=217_400_000).describe()
    assert left == ("shipped 1 image(s) (34.0 MB: a), 3 layer(s) left out: the host had them (217.4 MB), "
                    "0 already present")


def _closed_pipe_run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run argv with standard output a pipe whose reader is already gone (`... | head` after head
    exited): every write to it fails with EPIPE."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(w)


def test_a_reader_that_went_away_is_no_traceback_and_exits_141_as_cat_does():
    res = _closed_pipe_run([sys.executable, "-m", "memstack_ops", "--help"])
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
    assert res.returncode == 141, (res.returncode, res.stderr)


def test_say_keeps_the_work_going_when_the_reader_went_away():
    code = ("import sys; from memstack_ops.output import say\n"
            "for i in range(3): say(f'line {i}')\n"
            "sys.stderr.write('work finished\\n')")
    res = _closed_pipe_run([sys.executable, "-c", code])
    assert res.returncode == 0 and res.stderr == "work finished\n", res.stderr
