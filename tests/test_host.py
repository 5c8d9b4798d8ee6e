"""The entry points' host-memory setting (sana_jax/_host.py): the environment it starts them under, and the restart."""

import os
import subprocess
import sys

import pytest

from sana_jax._host import MALLOC_TUNABLE, _glibc_version, tuned_environ


def test_tuned_environ_adds_the_tunable_after_the_users_own():
    assert tuned_environ({"PATH": "/bin"}, glibc=(2, 36)) == {"PATH": "/bin", "GLIBC_TUNABLES": MALLOC_TUNABLE}
    assert tuned_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, glibc=(2, 35))["GLIBC_TUNABLES"] == (
        "glibc.malloc.arena_max=2:" + MALLOC_TUNABLE)


@pytest.mark.parametrize("environ, glibc", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36)),                          # the user's choice stands
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1:glibc.malloc.hugetlb=2"}, (2, 36)),
    ({}, (2, 34)),                                                                     # before the tunable existed
])
def test_tuned_environ_changes_nothing_where_it_should_not(environ, glibc):
    assert tuned_environ(environ, glibc=glibc) is None


def test_tuned_environ_is_none_off_glibc(monkeypatch):
    monkeypatch.setattr(os, "confstr", lambda name: "musl 1.2", raising=False)
    assert _glibc_version() is None and tuned_environ({}) is None


@pytest.mark.skipif(_glibc_version() is None or _glibc_version() < (2, 35), reason="needs glibc >= 2.35 (the tunable)")
def test_reexec_restarts_with_the_tunable_and_the_same_command(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text("import os, sys\n"
                      "print('start', flush=True)\n"
                      "from sana_jax._host import reexec_with_tuned_malloc\n"
                      "reexec_with_tuned_malloc()\n"
                      "print(os.environ['GLIBC_TUNABLES'], sys.flags.utf8_mode, sys.argv[1:])\n")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["GLIBC_TUNABLES"] = "glibc.malloc.arena_max=4"
    out = subprocess.run([sys.executable, "-X", "utf8", str(script), "a", "--b=1"], env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    # started twice (the restart), then ran under the user's tunable plus ours, with options and arguments kept
    assert out == ["start", "start", f"glibc.malloc.arena_max=4:{MALLOC_TUNABLE} 1 ['a', '--b=1']"]
