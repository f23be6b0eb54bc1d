"""Data files: found locally, downloaded with a sha256 check, clear errors otherwise.

Downloads are tested against a real HTTP server on 127.0.0.1 serving a temporary folder.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading

import pytest

from llama_from_scratch import datafiles


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture()
def fake_file(monkeypatch, server, tmp_path):
    """Register a small file served by `server` and point the data folder at an empty one."""
    root, base = server
    payload = b"to be, or not to be\n" * 100
    (root / "hamlet.txt").write_bytes(payload)
    entry = datafiles.DataFile("plays/hamlet.txt", f"{base}/hamlet.txt", hashlib.sha256(payload).hexdigest(),
                          len(payload), "test file")
    monkeypatch.setitem(datafiles.FILES, entry.name, entry)
    monkeypatch.setenv(datafiles.ENV_VAR, str(tmp_path / "cache"))
    return entry, payload


def test_shared_files_are_found_and_match_their_sha256():
    for entry in datafiles.FILES.values():
        local = datafiles.path(entry.name, download_if_missing=False)
        assert local.stat().st_size == entry.size
        assert datafiles.sha256_of(local) == entry.sha256, entry.name


def test_without_the_variable_the_user_cache_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv(datafiles.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datafiles.data_dir() == tmp_path / "llama_from_scratch"
    monkeypatch.setenv(datafiles.ENV_VAR, "  ")  # blank counts as unset
    assert datafiles.data_dir() == tmp_path / "llama_from_scratch"


def test_download_verifies_and_caches(fake_file, server):
    entry, payload = fake_file
    got = datafiles.path(entry.name)
    assert got == datafiles.data_dir() / "plays" / "hamlet.txt" and got.read_bytes() == payload
    (server[0] / "hamlet.txt").unlink()  # a second call must not download again
    assert datafiles.path(entry.name).read_bytes() == payload
    assert not list(got.parent.glob("*.part")), "temporary download files were left behind"


def test_corrupted_download_is_refused_and_not_kept(fake_file, server):
    entry, _ = fake_file
    (server[0] / "hamlet.txt").write_bytes(b"tampered")
    with pytest.raises(datafiles.DataError, match="sha256") as err:
        datafiles.path(entry.name)
    assert entry.sha256 in str(err.value) and entry.url in str(err.value)
    assert not (datafiles.data_dir() / entry.name).exists()
    assert not list((datafiles.data_dir() / "plays").glob("*")), "a corrupted or partial file was kept"


def test_offline_error_names_file_url_and_variable(monkeypatch, fake_file):
    entry, _ = fake_file
    dead = datafiles.DataFile(entry.name, "http://127.0.0.1:9/hamlet.txt", entry.sha256, entry.size, "")
    monkeypatch.setitem(datafiles.FILES, entry.name, dead)
    with pytest.raises(datafiles.DataError) as err:
        datafiles.path(entry.name)
    message = str(err.value)
    assert entry.name in message and dead.url in message and datafiles.ENV_VAR in message


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(datafiles.DataError, match="tinyshakespeare.txt"):
        datafiles.path("no-such-file.txt")


def test_cli_lists_and_locates_files():
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "llama_from_scratch", "data", "list"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert all(name in out for name in datafiles.FILES)
    located = subprocess.run([sys.executable, "-m", "llama_from_scratch", "data", "path", "stories260K/tok512.bin"],
                             capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert located == str(datafiles.path("stories260K/tok512.bin"))
    bad = subprocess.run([sys.executable, "-m", "llama_from_scratch", "data", "path", "nope"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stdout == "" and "unknown data file 'nope'" in bad.stderr
