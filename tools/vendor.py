"""The scripts the built book runs in the reader's browser, from npm, pinned, served by the build.

    python -m tools.vendor        # fill the cache, print what the book will serve

Without this the pages load MathJax (and, for widget outputs, require.js and the ipywidgets
embed manager) from CDNs and show raw LaTeX offline. Each package is fetched once with
`npm pack` into `_build/vendor/` (the cache; never committed), checked against the sha512
pinned below, unpacked there, and the files the pages need are copied into the static folder
`_config.yml` names (`html_static_path: [_vendor]`), which Sphinx serves as `_static/`, with
one small script of ours (WIDGETS_SETUP_JS).
Not handled: widget libraries beyond ipywidgets' own (base, controls, output) would still be
fetched from a CDN by the embed manager.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tools.notebooks import ROOT

CACHE = ROOT / "_build" / "vendor"
NPM_MISSING = (
    "npm is not installed, and `make book` needs it once to download MathJax and the widget "
    "scripts from the npm registry into _build/vendor/: install Node.js 18+ with npm "
    "(Debian/Ubuntu: `apt-get install -y npm`; or https://nodejs.org), then run `make book` again"
)


@dataclass(frozen=True)
class Package:
    name: str  # npm name
    version: str  # exact: the book's pages are tested against this one
    integrity: str  # npm's sha512 of the tarball (`npm view NAME@VERSION dist.integrity`)
    copy: tuple[tuple[str, str], ...]  # (path inside the package, path under the static folder)
    skip: tuple[str, ...] = ()  # top-level files of a copied folder left out (unused builds)

    @property
    def tarball(self) -> Path:
        return CACHE / f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


# MathJax 3's es5 build: the combined TeX+MathML -> CommonHTML file, and the folders it loads
# on demand (TeX extensions, CHTML fonts, the menu and its accessibility/speech parts).
MATHJAX = Package(
    "mathjax", "3.2.2",
    "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
    (("package/es5", "mathjax"),),
    skip=("tex-chtml-full-speech.js", "tex-chtml-full.js", "tex-chtml.js", "tex-mml-svg.js",
          "tex-svg-full.js", "tex-svg.js", "mml-chtml.js", "mml-svg.js", "node-main.js", "adaptors",
          "latest.js"),  # latest.js would load MathJax from a CDN
)
# The embed manager matching ipywidgets 8.1.9 (@jupyter-widgets/base 6.0.12, controls 5.0.13,
# as jupyterlab_widgets 3.0.17); its fonts sit beside embed-amd.js, which finds them there.
HTML_MANAGER = Package(
    "@jupyter-widgets/html-manager", "1.0.15",
    "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
    (("package/dist", "widgets"),),
    skip=("embed.js", "embed.js.map", "embed.js.LICENSE.txt", "libembed-amd.js"),
)
REQUIREJS = Package(
    "requirejs", "2.3.8",
    "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
    (("package/require.js", "widgets/require.js"),),
)
PACKAGES = (MATHJAX, HTML_MANAGER, REQUIREJS)

# Ours, loaded before require.js and the embed manager (_config.yml: nb_ipywidgets_js). It
# tells the manager where its fonts are (it finds them from its AMD module's URL, which require.js
# would put beside the page), and lets it typeset widget labels with MathJax 2's
# `MathJax.Hub.Queue`, which it calls and MathJax 3 lacks (a TypeError per label).
WIDGETS_SETUP_JS = """\
(() => {
  const widgetsFolder = new URL("./", document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = widgetsFolder;
  // Read by require.js when it loads: the manager's AMD modules are "in" this folder.
  const folder = widgetsFolder.replace(/\\/$/, "");
  window.require = {paths: {"@jupyter-widgets/html-manager/dist": folder, "@jupyter-widgets": folder}};
  if (window.MathJax) {  // the page's MathJax 3 configuration; MathJax itself loads later
    const waiting = [];
    const hub = {Queue: job => {
      const mathjax = window.MathJax;
      if (mathjax.typesetPromise) mathjax.startup.promise.then(() => mathjax.typesetPromise([job[2]]));
      else waiting.push(job[2]);
    }};
    window.MathJax.Hub = hub;
    window.MathJax.startup = Object.assign(window.MathJax.startup || {}, {ready: () => {
      MathJax.startup.defaultReady();
      MathJax.Hub = hub;
      if (waiting.length) MathJax.startup.promise.then(() => MathJax.typesetPromise(waiting));
    }});
  }
})();
"""


def sri_sha512(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(package: Package) -> Path:
    """The package's tarball in the cache, downloaded with `npm pack` when missing, hash-checked."""
    if not package.tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit(NPM_MISSING)
        CACHE.mkdir(parents=True, exist_ok=True)
        spec = f"{package.name}@{package.version}"
        print(f"downloading {spec} from the npm registry into {CACHE.relative_to(ROOT)}/", flush=True)
        done = subprocess.run([npm, "pack", spec, "--pack-destination", str(CACHE), "--ignore-scripts",
                               "--silent"], capture_output=True, text=True)
        if done.returncode != 0 or not package.tarball.exists():
            raise SystemExit(f"`npm pack {spec}` failed (is the npm registry reachable?):\n{done.stderr}")
    found = sri_sha512(package.tarball)
    if found != package.integrity:
        package.tarball.unlink()
        raise SystemExit(f"{package.tarball.name}: sha512 {found} is not the pinned {package.integrity}; "
                         "deleted it, run again to download it anew")
    return package.tarball


def unpack(package: Package) -> Path:
    """The unpacked package in the cache (unpacked once; a marker file says it is complete)."""
    folder = package.tarball.with_suffix("")
    if not (folder / ".complete").exists():
        tarball = fetch(package)
        shutil.rmtree(folder, ignore_errors=True)
        with tarfile.open(tarball) as archive:
            archive.extractall(folder, filter="data")  # "data": no links or paths out of folder
        (folder / ".complete").touch()
    return folder


def install(static: Path) -> list[Path]:
    """Copy every package's files into `static` (the folder Sphinx serves as `_static/`)."""
    copied = []
    for package in PACKAGES:
        folder = unpack(package)
        for inside, target in package.copy:
            source, destination = folder / inside, static / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, destination, dirs_exist_ok=True,
                                ignore=lambda where, names, p=package, s=source: [
                                    n for n in names if Path(where) == s and n in p.skip])
            else:
                shutil.copy2(source, destination)
            copied.append(destination)
    setup = static / "widgets" / "setup.js"
    setup.parent.mkdir(parents=True, exist_ok=True)
    setup.write_text(WIDGETS_SETUP_JS)
    return copied + [setup]


def main() -> int:
    for package in PACKAGES:
        print(f"{package.name}@{package.version}: {unpack(package).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
