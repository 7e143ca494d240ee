"""Ctrl-C in the first moments, while Python loads the modules, is one sentence too (no traceback)."""

from __future__ import annotations

import builtins
import sys

import pytest

from adsync_plan import __main__ as entry_point


def test_ctrl_c_while_the_modules_load_is_one_sentence(monkeypatch, capsys):
    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "adsync_plan.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "adsync_plan.cli", raising=False)
    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as stopped:
        entry_point.entry()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "Error: interrupted while starting; nothing was done.\n"
