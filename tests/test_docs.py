"""The documentation runs: README and guide snippets, docstring examples, and the strict site build.

Each Markdown page's Python blocks are executed in order in one namespace, as a
reader would run them; blocks fenced as ```` ```python {.no-run} ```` hold code that
cannot run here (a GPU device) and are skipped, and blocks fenced as
```` ```python {.needs-cola} ```` run only where that module (here `cola`) is installed,
as in CI's second environment.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
import os
import pathlib
import pkgutil
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

import structlin

# End to end: CI runs it once, in the main environment (see .ci/run).
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# A Python block and its attributes: ```python {.no-run} or ```python {.needs-cola}.
SNIPPET = re.compile(r"```python(?: \{([^}\n]*)\})?\n(.*?)```", flags=re.DOTALL)


def runnable(attributes: str) -> bool:
    """Whether a block with these attributes runs here."""
    if ".no-run" in attributes.split():
        return False
    needs = re.findall(r"\.needs-([\w]+)", attributes)
    return all(importlib.util.find_spec(module) is not None for module in needs)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_snippets_run(page: pathlib.Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    # The module name must be an identifier: plum resolves a rule's annotations through it.
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for index, (attributes, snippet) in enumerate(SNIPPET.findall(page.read_text())):
        if runnable(attributes):
            exec(compile(snippet, f"{page.name} snippet {index}", "exec"), namespace)


def test_block_attributes_choose_what_runs() -> None:
    blocks = "```python\na\n```\n```python {.no-run}\nb\n```\n```python {.needs-os}\nc\n```\n"
    blocks += "```python {.needs-no_such_module_here}\nd\n```\n"
    found = [(runnable(attributes), code.strip()) for attributes, code in SNIPPET.findall(blocks)]
    assert found == [(True, "a"), (False, "b"), (True, "c"), (False, "d")]


def modules() -> list[str]:
    names = ["structlin"]
    for info in pkgutil.walk_packages(structlin.__path__, "structlin."):
        names.append(info.name)
    return names


# Modules that need an optional dependency beyond PyTorch and JAX, and which.
OPTIONAL = {"structlin.nn.nnx": "flax"}


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name: str) -> None:
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} docstring examples failed in {name}"


def test_every_public_name_has_an_api_page() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    api = "\n".join(p.read_text() for p in (ROOT / "docs" / "api").rglob("*.md"))
    documented = set(re.findall(r"^::: (structlin[\w.]*)", api, flags=re.MULTILINE))
    public = set()
    for module_name in ("structlin", "structlin.nn", "structlin.nn.jax", "structlin.nn.nnx"):
        if module_name in OPTIONAL and importlib.util.find_spec(OPTIONAL[module_name]) is None:
            continue
        module = importlib.import_module(module_name)
        public |= {f"{module_name}.{name}" for name in module.__all__}
    public = {
        name if not isinstance(obj, type(structlin)) else obj.__name__  # a module: its own page
        for name in public
        for obj in [_resolve(name)]
    }
    assert public <= documented, f"no API page for {sorted(public - documented)}"


def _resolve(qualified: str) -> object:
    module_name, _, attr = qualified.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


# -- the built site, as a reader sees it --------------------------------------------------------
# The site is built once per test session (strictly: a warning fails the build) and the checks
# below read its HTML: what mkdocs, mkdocstrings and the theme made of the sources.

REPO_URL = "https://github.com/structlin/structlin"


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The site built with `mkdocs build --strict` into a temporary folder."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out_dir = tmp_path_factory.mktemp("site") / "site"
    mkdocs = shutil.which("mkdocs", path=str(pathlib.Path(sys.executable).parent))
    command = [mkdocs] if mkdocs else [sys.executable, "-m", "mkdocs"]
    out = subprocess.run(
        [*command, "build", "--strict", "--site-dir", str(out_dir)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-5000:]
    return out_dir


def test_site_builds_strictly(site: pathlib.Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "api" / "Monarch" / "index.html").is_file()


class Page(HTMLParser):
    """One HTML page read as a reader meets it: each text run with the elements around it,
    each `id`, each external resource."""

    VOID = frozenset(
        [
            "area",
            "base",
            "br",
            "col",
            "embed",
            "hr",
            "img",
            "input",
            "link",
            "meta",
            "param",
            "source",
            "track",
            "wbr",
        ]
    )

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, frozenset[str], int]] = []  # tag, classes, serial number
        self.texts: list[tuple[str, tuple[tuple[str, frozenset[str], int], ...]]] = []
        self.links: list[str] = []  # every <a href>
        self.content_links: list[str] = []  # those in the page's own text (not the navigation)
        self.tags: list[str] = []  # every element's tag, in order
        self.ids: list[str] = []
        self.resources: list[str] = []  # script src, stylesheet/font/icon href, img src
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append(tag)
        if values.get("id"):
            self.ids.append(values["id"])
        if tag in ("script", "img", "iframe") and values.get("src"):
            self.resources.append(values["src"])
        if tag == "link" and values.get("href") and values.get("rel") != "canonical":
            self.resources.append(values["href"])
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
            if any(t == "article" for t, _, _ in self.stack):
                self.content_links.append(values["href"])
        if tag not in self.VOID:
            classes = frozenset((values.get("class") or "").split())
            self.stack.append((tag, classes, self.getpos()[0] * 100_000 + self.getpos()[1]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth][0] == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.texts.append((data, tuple(self.stack)))

    def inside(self, context, *, tags=(), classes=()) -> bool:
        return any(tag in tags or not cls.isdisjoint(classes) for tag, cls, _ in context)


def pages(site: pathlib.Path, under: str = "") -> dict[str, Page]:
    return {
        str(path.relative_to(site)): Page(path.read_text(encoding="utf-8"))
        for path in sorted((site / under).rglob("*.html"))
        if path.name != "404.html"
    }


@pytest.fixture(scope="session")
def site_pages(site: pathlib.Path) -> dict[str, Page]:
    return pages(site)


def doctest_lines_outside_code(page: Page) -> list[str]:
    """Docstring example lines (`>>>`) that are not in a highlighted code block."""
    return [
        text.strip()[:80]
        for text, context in page.texts
        if ">>>" in text
        and not (
            page.inside(context, tags=("pre",)) and page.inside(context, classes=("highlight",))
        )
    ]


def test_docstring_examples_render_as_highlighted_code(site_pages: dict[str, Page]) -> None:
    api = {name: page for name, page in site_pages.items() if name.startswith("api/")}
    bad = {name: lines for name, page in api.items() if (lines := doctest_lines_outside_code(page))}
    assert not bad, f"examples not rendered as code blocks: {bad}"
    # An example under a section mkdocstrings does not know (`Example:`) becomes Markdown, and
    # its `>>>` prompts nested blockquotes: no docstring here quotes anything.
    quoted = [name for name, page in api.items() if "blockquote" in page.tags]
    assert not quoted, f"blockquotes (examples read as Markdown?) on {quoted}"
    # ... and every `Examples:` section there has its code.
    assert sum(text.count(">>>") for page in api.values() for text, _ in page.texts) > 100


# A documented object's heading id is its path; a private one has a component `_name`.
PRIVATE_ID = re.compile(r"^structlin(\.\w+)*\._\w*$")


def test_no_private_name_is_documented(site_pages: dict[str, Page]) -> None:
    bad = {
        name: private
        for name, page in site_pages.items()
        if (private := [i for i in page.ids if PRIVATE_ID.match(i)])
    }
    assert not bad, f"private names documented: {bad}"


def test_no_duplicate_ids(site_pages: dict[str, Page]) -> None:
    bad = {}
    for name, page in site_pages.items():
        seen: set[str] = set()
        duplicates = sorted({i for i in page.ids if i in seen or seen.add(i)})
        if duplicates:
            bad[name] = duplicates
    assert not bad, f"duplicate HTML ids: {bad}"


def headings(page: Page) -> list[tuple[str, str]]:
    """Each heading's tag and text as a reader sees it (without its permalink and labels)."""
    found: dict[int, tuple[str, str]] = {}
    for text, context in page.texts:
        heads = [(tag, serial) for tag, _, serial in context if re.fullmatch(r"h[1-6]", tag)]
        if heads and not page.inside(context, classes=("headerlink", "doc-labels")):
            tag, serial = heads[-1]
            found[serial] = (tag, found.get(serial, (tag, ""))[1] + text)
    return [(tag, " ".join(text.split())) for tag, text in found.values()]


def test_one_title_per_page(site_pages: dict[str, Page]) -> None:
    """One `<h1>` per page, and no heading under it repeats it: an API page's title is its
    object's heading, not a Markdown title above it."""
    bad = {}
    for name, page in site_pages.items():
        found = headings(page)
        titles = [text for tag, text in found if tag == "h1"]
        if len(titles) != 1 or any(text == titles[0] for tag, text in found if tag != "h1"):
            bad[name] = found[:3]
    assert not bad, f"pages with no title, or a title shown twice: {bad}"


# TeX a reader would see raw: delimiters and commands left in the page's text.
RAW_TEX = re.compile(
    r"\\[()\[\]]|\$\$|\\(?:frac|sqrt|mathbb|mathrm|operatorname|sum|prod|otimes|top|cdot|left|right|begin)\b|(?<![\w`])\$(?=\S)[^$\n]*(?<=\S)\$(?![\w`])|(?:^|\s)\$(?:\s|$)"
)


def raw_tex(page: Page) -> list[str]:
    return [
        text.strip()[:80]
        for text, context in page.texts
        if RAW_TEX.search(text)
        and not page.inside(
            context, tags=("pre", "code", "script", "style", "title"), classes=("arithmatex",)
        )
    ]


def test_no_raw_tex_outside_math(site: pathlib.Path, site_pages: dict[str, Page]) -> None:
    bad = {name: found for name, page in site_pages.items() if (found := raw_tex(page))}
    assert not bad, f"raw TeX outside math: {bad}"
    # The search index's section titles are shown as they are: no TeX in them either.
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    titles = [doc["title"] for doc in index["docs"] if RAW_TEX.search(doc["title"])]
    assert not titles, f"raw TeX in search titles: {titles}"


def test_no_external_resources(site: pathlib.Path, site_pages: dict[str, Page]) -> None:
    """Scripts, stylesheets, fonts and images all come from the site: it renders offline."""
    external = re.compile(r"^(?:[a-z]+:)?//", flags=re.IGNORECASE)
    bad = {
        name: found
        for name, page in site_pages.items()
        if (found := [r for r in page.resources if external.match(r)])
    }
    assert not bad, f"resources fetched from elsewhere: {bad}"
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"@import|url\(\s*[\"']?(?:https?:)?//", text), css
    assert (site / "assets" / "mathjax" / "tex-mml-chtml.js").is_file()


def test_signatures_are_formatted(site_pages: dict[str, Page]) -> None:
    """A signature formatter (ruff, in the docs extra) wraps long signatures."""
    long, count = {}, 0
    for name, page in site_pages.items():
        signatures: dict[int, str] = {}  # the text of each signature's <pre>
        for text, context in page.texts:
            if page.inside(context, classes=("doc-signature",)):
                pre = [serial for tag, _, serial in context if tag == "pre"]
                signatures[pre[-1]] = signatures.get(pre[-1], "") + text
        count += len(signatures)
        lines = [line for text in signatures.values() for line in text.splitlines()]
        if found := [line for line in lines if len(line) > 80]:
            long[name] = found
    assert count > 100
    assert not long, f"signatures not wrapped: {long}"


def test_cited_repository_files_are_links_that_exist(site_pages: dict[str, Page]) -> None:
    """Every `examples/`, `tests/` or `benchmarks/` file a guide cites links to the repository,
    at a path that exists."""
    unlinked, missing = {}, set()
    cited = re.compile(r"\b((?:examples|tests|benchmarks)/[\w/]+\.py)\b")
    for name, page in site_pages.items():
        if not name.startswith("guides/"):
            continue
        paths = {path for text, _ in page.texts for path in cited.findall(text)}
        linked = {
            link.removeprefix(f"{REPO_URL}/blob/main/")
            for link in page.links
            if link.startswith(f"{REPO_URL}/blob/main/")
        }
        missing |= {path for path in linked | paths if not (ROOT / path).exists()}
        if paths - linked:
            unlinked[name] = sorted(paths - linked)
    assert not missing, f"the site links files that do not exist: {sorted(missing)}"
    assert not unlinked, f"files cited and never linked: {unlinked}"


# API pages without an example of their own, and why.
NO_EXAMPLE = {
    "api/nn/jax/ScaleByMup/index.html": "the transform's type; scale_by_mup's page has the example",
    "api/nn/jax/ScaleByMupState/index.html": "the transform's state; scale_by_mup's page has it",
}


def test_api_pages_have_an_example(site_pages: dict[str, Page]) -> None:
    """Every API page shows code (a docstring example or a code block), besides signatures."""
    bad = [
        name
        for name, page in site_pages.items()
        if name.startswith("api/")
        and name not in NO_EXAMPLE
        and not any(
            page.inside(context, tags=("pre",))
            and page.inside(context, classes=("highlight",))
            and not page.inside(context, classes=("doc-signature",))
            for _, context in page.texts
        )
    ]
    assert not bad, f"API pages without an example: {bad}"


def test_api_pages_link_to_guides(site_pages: dict[str, Page]) -> None:
    """Every API page has a "See also" that leads to the guide covering its subject."""
    bad = [
        name
        for name, page in site_pages.items()
        if name.startswith("api/")
        and not any(re.match(r"(\.\./)+(guides/[\w-]+|faq)/", link) for link in page.content_links)
    ]
    assert not bad, f"API pages that link to no guide: {bad}"


# -- the site in a browser with the network off --------------------------------------------------
# What a reader offline (or behind a firewall) sees: headless Chromium loads pages from a local
# server with every other host unreachable, runs MathJax, and the test reads the rendered DOM.
# Skipped where Chromium is not installed, except in CI (CI=true), where it must run.

BROWSER_PAGES = {
    "home": "index.html",
    "guide": "guides/structures/index.html",  # the guide with the most math
    "api": "api/Monarch/index.html",
}
# Appended to a copy of a page: once MathJax has typeset, report what a reader would notice
# (display equations wider than the text column) and whether an outside host was reachable.
PROBE = """<script>
window.addEventListener("load", async () => {
  let network = "blocked";
  try { await fetch("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"); network = "open"; }
  catch (e) {}
  await MathJax.startup.promise;
  const wide = [];
  document.querySelectorAll("div.arithmatex mjx-container[display=true]").forEach((m) => {
    const box = m.closest("div.arithmatex");
    const width = m.firstElementChild.getBoundingClientRect().width;
    if (width > box.clientWidth + 1) wide.push(box.textContent.slice(0, 60));
  });
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({network, wide});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("Chromium is not installed; CI needs it (apt-get install -y chromium)")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def dump_dom(browser: str, url: str, profile: pathlib.Path) -> str:
    """The DOM of `url` after its scripts ran, with every host but 127.0.0.1 unreachable."""
    out = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--window-size=1280,1000",
            # No network: names do not resolve, and a proxy on a closed port takes the rest.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="session")
def served(site: pathlib.Path):
    """The built site served on 127.0.0.1, as a reader's browser gets it."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("which", sorted(BROWSER_PAGES))
def test_pages_render_offline_in_a_browser(
    which: str, site: pathlib.Path, served: str, tmp_path: pathlib.Path
) -> None:
    browser = chromium()
    page = site / BROWSER_PAGES[which]
    # A copy with the probe, beside the page so relative URLs resolve; `.htm`, so that the
    # checks reading the site's `.html` files never see it.
    probe = page.with_name(f"probe-{which}.htm")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    try:
        dom = Page(dump_dom(browser, f"{served}/{probe.relative_to(site).as_posix()}", tmp_path))
    finally:
        probe.unlink()
    report = json.loads(next(t for t, _ in dom.texts if t.startswith('{"network"')))
    assert report["network"] == "blocked", "the browser reached the network: the check is void"
    rendered = dom.tags.count("mjx-container")
    unrendered = [
        text.strip()[:80]
        for text, context in dom.texts
        if dom.inside(context, classes=("arithmatex",)) and re.search(r"\\[(\[]", text)
    ]
    assert not unrendered, f"math left as TeX on {which}: {unrendered}"
    assert not raw_tex(dom), f"raw TeX on {which}: {raw_tex(dom)}"
    if which in ("home", "guide"):
        assert rendered > (100 if which == "guide" else 3), f"MathJax did not render {which}"
    assert not report["wide"], f"display equations wider than the page on {which}: {report}"
    headings = [t for t, context in dom.texts if context and context[-1][0] == "h1"]
    assert headings, f"{which} has no title"
