"""What the browser test checks on a built page: the page's facts (gathered by JavaScript in
Chromium) turned into problems a person can act on, each naming the page's element.

Used by `tools.browser`; the checks: math rendered by MathJax with no TeX errors and no raw TeX
left in the text, every image loaded with alt text that describes it, no code block or output
wider than the page, no console errors, the launch buttons pointing at the page's notebook, no
machine paths in the text. Not handled: whether a figure is readable (the screenshots are for
people), widgets beyond "no console errors".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse

# Runs in the page (async): waits for images, MathJax's first typeset, fonts; says what went wrong.
WAIT_JS = r"""
const done = arguments[arguments.length - 1];
const sleep = ms => new Promise(r => setTimeout(r, ms));
const notes = [];
const settle = async () => {
  for (const img of document.images) img.loading = 'eager';
  const t0 = Date.now();
  while ([...document.images].some(i => !i.complete) && Date.now() - t0 < 15000) await sleep(50);
  if (document.querySelector('.math')) {
    // MathJax's script (async or defer) has run by the load event: a short grace period only.
    const t1 = Date.now();
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() - t1 < 2000)
      await sleep(50);
    if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) notes.push('MathJax did not load');
    else await MathJax.startup.promise.catch(e => notes.push('MathJax failed: ' + e));
  }
  await document.fonts.ready;
  await sleep(300);  // the widget manager renders after load
};
const stuck = sleep(30000).then(() => notes.push('the page was still loading after 30 s'));
Promise.race([settle(), stuck]).then(() => done(notes));
"""

# Runs in the page after the screenshot, with every folded block opened: the facts to check.
FACTS_JS = r"""
const scope = document.querySelector('article') || document.body;
const cells = [...document.querySelectorAll('.cell')];
const where = el => {
  const cell = el.closest('.cell');
  if (!cell) return 'text';
  const part = el.closest('.cell_output') ? 'output' : 'source';
  return `code cell ${cells.indexOf(cell)} ${part}`;  // counted from 0, as on the page
};
const facts = {title: document.title, url: location.href};
facts.math_total = document.querySelectorAll('.math').length;
facts.math_raw = [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container'))
  .map(e => `${where(e)}: ${e.textContent.trim().slice(0, 80)}`);
facts.math_errors = [];
if (window.MathJax && MathJax.startup && MathJax.startup.document) {
  for (const item of MathJax.startup.document.math) {
    item.root.walkTree(node => {
      const red = node.isKind('mtext') && node.attributes.get('mathcolor') === 'red';
      if (node.isKind('merror') || red)
        facts.math_errors.push(`${item.math.trim().slice(0, 80)}: ` +
          (node.attributes.get('data-mjx-error') || 'undefined control sequence'));
    });
  }
}
facts.fonts_failed = [...document.fonts].filter(f => f.status === 'error').map(f => f.family);
const skip = 'script,style,noscript,pre,code,kbd,samp,textarea,mjx-container,.math';
const tex = /\\\(|\\\[|\$\$|\$[^$\n]*[\\^_{][^$\n]*\$/;
facts.raw_tex = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  if (tex.test(n.data) && !n.parentElement.closest(skip))
    facts.raw_tex.push(`${where(n.parentElement)}: ${n.data.trim().slice(0, 80)}`);
}
facts.images = [...document.images].map((img, i) => ({
  index: i, src: img.getAttribute('src') || '', alt: img.getAttribute('alt'),
  loaded: img.complete && img.naturalWidth > 0, where: where(img)}));
// A block is too wide when it scrolls or cuts sideways, or (a pre) spills out of its box;
// parts of a widget that stick out of their own little box (a slider's handle) are not.
const blocks = [...scope.querySelectorAll(
  'pre, div.highlight, .cell_output div, .cell_output table, .output, .cell_output')];
const clips = el => ['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(el).overflowX);
const wide = blocks.filter(el => el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1
  && (el.tagName === 'PRE' || clips(el)));
facts.page_width = [document.documentElement.scrollWidth, document.documentElement.clientWidth];
facts.overflows = wide.filter(el => !wide.some(other => other !== el && el.contains(other))).map(el => {
  const lines = el.innerText.split('\n');
  return {where: where(el), tag: el.tagName.toLowerCase(), first: lines.find(l => l.trim()) || '',
          longest: Math.max(...lines.map(l => l.length)), by: el.scrollWidth - el.clientWidth};
});
facts.launch = [...document.querySelectorAll('a')].filter(a =>
  /launch on/i.test(a.getAttribute('title') || a.getAttribute('data-bs-original-title') || ''))
  .map(a => ({text: a.textContent.trim(), href: a.href}));
const clone = document.body.cloneNode(true);
clone.querySelectorAll('script,style,noscript').forEach(e => e.remove());
facts.text = clone.textContent;
return facts;
"""

MACHINE_PATH = re.compile(r"/(?:work|tmp|home|root)/")
FILE_NAME = re.compile(r"^\S*\.(?:png|jpe?g|gif|svg|webp)$", re.IGNORECASE)
VAGUE_ALT = {"image", "figure", "plot", "output", "png", "img", "picture", "chart"}


@dataclass(frozen=True)
class Problem:
    kind: str  # math, font, image, alt, overflow, console, launch, path, load, redirect, missing (no such page)
    message: str


def alt_problem(alt: str | None) -> str | None:
    """Why an image's alt text does not describe it, or None when it is fine."""
    if alt is None or not alt.strip():
        return "has no alt text"
    if FILE_NAME.match(alt.strip()) or "_images/" in alt:
        return f"alt text is a file name ({alt.strip()!r}), not a description"
    if alt.strip().lower().rstrip(".") in VAGUE_ALT:
        return f"alt text {alt.strip()!r} does not describe the image"
    return None


def launch_expectations(launch_buttons: dict, repository: dict, notebook: str) -> dict[str, str]:
    """The launch buttons' expected links, by button text, for `notebook` (its path in the repo).

    Raises ValueError for a configured button this check does not know (so it is never skipped).
    """
    org_repo = urlparse(repository["url"]).path.strip("/").removesuffix(".git")
    branch = repository.get("branch", "main")
    expected = {}
    for key, value in launch_buttons.items():
        if key in {"notebook_interface"} or not value:
            continue
        base = str(value).rstrip("/")
        if key == "colab_url":
            expected["Colab"] = f"{base}/github/{org_repo}/blob/{branch}/{notebook}"
        elif key == "binderhub_url":
            ui = {"classic": "tree", "jupyterlab": "lab/tree"}[launch_buttons.get("notebook_interface", "classic")]
            expected["Binder"] = f"{base}/v2/gh/{org_repo}/{branch}?urlpath={ui}/{notebook}"
        else:
            raise ValueError(f"launch_buttons.{key} is configured but tools/page_checks.py cannot check it")
    return expected


def problems(facts: dict, console: list[dict], launch: dict[str, str] | None) -> list[Problem]:
    """Everything wrong with one page. `launch`: the expected launch links (None: no launch buttons)."""
    found = [Problem("math", f"raw TeX, not typeset by MathJax: {t}") for t in facts["math_raw"]]
    found += [Problem("math", f"raw TeX in the text: {t}") for t in facts["raw_tex"]]
    found += [Problem("math", f"MathJax error in {e}") for e in facts["math_errors"]]
    found += [Problem("math" if "MathJax" in note else "load", note) for note in facts.get("notes", [])]
    found += [Problem("font", f"font {family!r} failed to load") for family in facts["fonts_failed"]]
    for img in facts["images"]:
        src = "an inline data: URI" if img["src"].startswith("data:") else img["src"][:80]
        name = f"image {img['index']} ({img['where']}, src {src})"
        if not img["loaded"]:
            found.append(Problem("image", f"{name} did not load"))
        why = alt_problem(img["alt"])
        if why:
            found.append(Problem("alt", f"{name} {why}"))
    if facts["page_width"][0] > facts["page_width"][1] + 1:
        found.append(Problem("overflow", f"the page itself scrolls sideways ({facts['page_width'][0]} px "
                                         f"of content in a {facts['page_width'][1]} px window)"))
    for o in facts["overflows"]:
        found.append(Problem("overflow", f"{o['where']}: {o['tag']} is {o['by']} px wider than the page "
                                         f"(longest line {o['longest']} characters) at: {o['first'].strip()[:70]}"))
    errors = dict.fromkeys(entry["message"] for entry in console if entry.get("level") == "SEVERE")
    found += [Problem("console", f"console error: {message[:300]}") for message in errors]
    found += launch_problems(facts["launch"], launch)
    for match in list(MACHINE_PATH.finditer(facts["text"]))[:5]:
        context = facts["text"][max(match.start() - 40, 0):match.end() + 40].replace("\n", " ")
        found.append(Problem("path", f"a machine path in the page text: ...{context.strip()}..."))
    return found


def launch_problems(links: list[dict], expected: dict[str, str] | None) -> list[Problem]:
    found = []
    if expected is None:
        return [Problem("launch", f"launch button {link['text']!r} on a page with no notebook") for link in links]
    actual = {link["text"]: link["href"] for link in links}
    for text, url in expected.items():
        if text not in actual:
            found.append(Problem("launch", f"no {text} launch button (expected a link to {url})"))
        elif actual[text] != url:
            found.append(Problem("launch", f"the {text} launch button points at {actual[text]}, not {url}"))
    return found


def report(results: dict[str, list[Problem]]) -> str:
    """All problems of all pages, grouped by page, with a count per kind first."""
    counts: dict[str, int] = {}
    for found in results.values():
        for problem in found:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
    bad = {page: found for page, found in results.items() if found}
    lines = [f"{sum(counts.values())} problems on {len(bad)} of {len(results)} pages ("
             + ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items())) + ")"]
    for page, found in bad.items():
        kinds = sorted({p.kind for p in found})
        lines.append(f"{page}: {len(found)} ({', '.join(f'{k} {sum(p.kind == k for p in found)}' for k in kinds)})")
        lines += [f"  - [{p.kind}] {p.message}" for p in found]
    return "\n".join(lines)
