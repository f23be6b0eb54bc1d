"""The built book's scripts come from npm, pinned, and are served by the build (tools/vendor.py)."""

from __future__ import annotations

import tarfile

import pytest
import yaml

from tools import build_book, vendor
from tools.notebooks import ROOT

SPHINX = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]


def test_the_pages_scripts_are_local_files_that_vendor_installs():
    targets = {target.split("/")[0] for package in vendor.PACKAGES for _, target in package.copy}
    scripts = [SPHINX["mathjax_path"], *SPHINX["nb_ipywidgets_js"]]
    assert len(scripts) == 4
    for script in scripts:
        assert "://" not in script and script.split("/")[0] in targets, script
    assert SPHINX["html_static_path"][0] == "_vendor"  # book/_static (the book's CSS) may follow


def test_every_package_is_pinned_to_one_version_and_its_sha512():
    for package in vendor.PACKAGES:
        assert package.version.count(".") == 2 and package.version.replace(".", "").isdigit(), package
        assert package.integrity.startswith("sha512-") and len(package.integrity) == 95, package


def test_a_tarball_that_is_not_the_pinned_one_is_refused_and_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(vendor, "CACHE", tmp_path)
    fake = vendor.Package("mathjax", "3.2.2", vendor.MATHJAX.integrity, (("package/x.js", "x.js"),))
    (tmp_path / "x.js").write_text("tampered")
    with tarfile.open(fake.tarball, "w:gz") as archive:
        archive.add(tmp_path / "x.js", arcname="package/x.js")
    with pytest.raises(SystemExit, match="is not the pinned"):
        vendor.unpack(fake)
    assert not fake.tarball.exists()


def test_a_cached_package_installs_its_files_without_npm(tmp_path, monkeypatch):
    monkeypatch.setattr(vendor, "CACHE", tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    (tmp_path / "lib.js").write_text("define([], {});")
    (tmp_path / "unused.js").write_text("")
    package = vendor.Package("lib", "1.0.0", "", (("package", "lib"),), skip=("unused.js",))
    with tarfile.open(package.tarball, "w:gz") as archive:
        for name in ("lib.js", "unused.js"):
            archive.add(tmp_path / name, arcname=f"package/{name}")
    package = vendor.Package("lib", "1.0.0", vendor.sri_sha512(package.tarball), package.copy, package.skip)
    monkeypatch.setattr(vendor, "PACKAGES", (package,))
    monkeypatch.setattr(vendor.shutil, "which", lambda name: None)  # no npm: the cache must do
    vendor.install(tmp_path / "static")
    assert (tmp_path / "static" / "lib" / "lib.js").read_text() == "define([], {});"
    assert not (tmp_path / "static" / "lib" / "unused.js").exists()
    assert (tmp_path / "static" / "widgets" / "setup.js").read_text() == vendor.WIDGETS_SETUP_JS


def test_npm_missing_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(vendor, "CACHE", tmp_path)
    monkeypatch.setattr(vendor.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get install -y npm"):
        vendor.fetch(vendor.REQUIREJS)


def test_the_build_refuses_pages_that_load_scripts_from_the_network(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.html").write_text(
        '<script src="../_static/mathjax/tex-mml-chtml.js"></script>'
        '<script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>')
    (tmp_path / "b.html").write_text('<script src="_static/widgets/require.js"></script>')
    assert build_book.remote_scripts(tmp_path) == [
        'book/a.html: <script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"']


def test_repeated_inline_scripts_are_dropped_once_per_page():
    from types import SimpleNamespace

    from tools import sphinx_fixes

    thebe = {"body": 'const THEBE_JS_URL = "x"'}
    scripts = [SimpleNamespace(filename=None, attributes=thebe), SimpleNamespace(filename="a.js", attributes={}),
               SimpleNamespace(filename="", attributes=dict(thebe)), SimpleNamespace(filename="a.js", attributes={}),
               SimpleNamespace(filename=None, attributes={"body": "other"})]
    context = {"script_files": scripts}
    sphinx_fixes.drop_repeated_inline_scripts(None, "page", "page.html", context, None)
    assert [(s.filename, s.attributes.get("body")) for s in context["script_files"]] == [
        (None, thebe["body"]), ("a.js", None), ("a.js", None), (None, "other")]
    assert context["script_files"] is scripts  # the builder's own list, edited in place
