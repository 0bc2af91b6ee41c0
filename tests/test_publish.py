"""Publishing: the GitHub Pages workflow is valid, ``make deploy`` pushes the
site with ``.nojekyll`` to a gh-pages branch (tested against a local bare
repository, never this project's own), every link of the built site resolves
(LinkChecker over a local server, offline), and under a /repo/ subpath a
browser finds every figure, asset, internal link and search result without
one request leaving 127.0.0.1."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
WORKFLOW = ROOT / ".github" / "workflows" / "pages.yml"


def tool(name: str) -> str:
    """A console script of the project's environment (the venv's, else PATH's)."""
    for folder in (VENV_BIN, Path(sys.executable).parent):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


# ------------------------------------------------------------------ workflow


def test_workflow_is_valid_against_the_github_workflow_schema():
    """check-jsonschema's vendored GitHub-workflow schema (no download)."""
    r = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout


def test_schema_check_catches_a_broken_workflow(tmp_path):
    """The check above is not vacuous: a job without runs-on and a step with
    an unknown key fail it."""
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    del doc["jobs"]["build"]["runs-on"]
    doc["jobs"]["deploy"]["steps"][0]["uzes"] = doc["jobs"]["deploy"]["steps"][0].pop("uses")
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(doc), encoding="utf-8")
    r = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr


def test_workflow_builds_with_cpu_torch_and_deploys_with_the_pages_actions():
    text = WORKFLOW.read_text(encoding="utf-8")
    doc = yaml.load(text, Loader=yaml.BaseLoader)  # BaseLoader: "on" stays a string key
    assert {"push", "workflow_dispatch"} <= set(doc["on"])
    assert doc["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build, deploy = doc["jobs"]["build"], doc["jobs"]["deploy"]
    uses = {s["uses"].split("@")[0]: s for s in build["steps"] if "uses" in s}
    assert uses["actions/setup-python"]["with"]["cache"] == "pip"
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "site"
    assert "actions/configure-pages" in uses and "actions/checkout" in uses
    for step in [*build["steps"], *deploy["steps"]]:
        if "uses" in step:
            assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"]), step["uses"]
    runs = [s["run"].strip() for s in build["steps"] if "run" in s]
    assert "make site" in runs
    assert deploy["needs"] == "build"
    assert deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    assert "${{ steps.deployment.outputs.page_url }}" == deploy["environment"]["url"]
    # make site installs the CPU build of torch (the PyTorch CPU index) before the project
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^TORCH_INDEX_URL \?= https://download\.pytorch\.org/whl/cpu$", makefile, re.M)
    assert re.search(r"^site: \$\(STAMP\)$", makefile, re.M)


# -------------------------------------------------------------------- deploy


def _git_env(home: Path) -> dict[str, str]:
    """An environment where git sees no user or system config and no
    repository of the caller (no GIT_DIR and the like)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Atlas Test",
               GIT_AUTHOR_EMAIL="atlas@example.invalid", GIT_COMMITTER_NAME="Atlas Test",
               GIT_COMMITTER_EMAIL="atlas@example.invalid", GIT_CEILING_DIRECTORIES=str(home.parent))
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    return env


def git(env, *args, cwd: Path) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"git {' '.join(args)}: {r.stderr}"
    return r.stdout


def _main_repo_refs() -> str | None:
    """This project's own refs (read only), to prove the deploy test leaves them alone."""
    if not (ROOT / ".git").exists():
        return None
    r = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    return r.stdout if r.returncode == 0 else None


def _files(folder: Path, skip_git: bool = False) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not (skip_git and ".git" in p.relative_to(folder).parts)}


@pytest.fixture
def pages_remote(tmp_path):
    """A bare repository (the "GitHub" remote) and a working repository whose
    ``origin`` is that bare one."""
    home = tmp_path / "home"
    home.mkdir()
    env = _git_env(home)
    bare = tmp_path / "pages.git"
    git(env, "init", "--bare", "--quiet", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    git(env, "init", "--quiet", cwd=work)
    git(env, "remote", "add", "origin", str(bare), cwd=work)
    return {"env": env, "bare": bare, "work": work, "tmp": tmp_path}


def make(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_make_deploy_pushes_the_site_to_gh_pages_of_a_local_bare_repository(built_site, pages_remote):
    env, bare, work, tmp = (pages_remote[k] for k in ("env", "bare", "work", "tmp"))
    refs_before = _main_repo_refs()
    site = built_site["site"]
    r = make(env, "deploy", "NO_BUILD=1", f"SITE_DIR={site}", f"DEPLOY_REPO={work}", "REMOTE=origin")
    assert r.returncode == 0, r.stdout + r.stderr
    # the remote now has gh-pages (and nothing else); a fresh checkout holds the site plus .nojekyll
    heads = git(env, "for-each-ref", "--format=%(refname)", cwd=bare).split()
    assert heads == ["refs/heads/gh-pages"]
    checkout = tmp / "checkout"
    git(env, "clone", "--quiet", "--branch", "gh-pages", str(bare), str(checkout), cwd=tmp)
    published = _files(checkout, skip_git=True)
    assert published.pop(".nojekyll") == b""
    assert published == _files(site)
    assert "Deploy Attention Atlas site" in git(env, "log", "-1", "--format=%s", cwd=checkout)
    # a second deploy (a new site version) adds a commit on top
    r = make(env, "deploy", "NO_BUILD=1", f"SITE_DIR={site}", f"DEPLOY_REPO={work}", "DEPLOY_MESSAGE=second")
    assert r.returncode == 0, r.stdout + r.stderr
    log = git(env, "log", "--format=%s", "gh-pages", cwd=bare).split("\n")
    assert log[:2] == ["second", "Deploy Attention Atlas site"]
    assert _main_repo_refs() == refs_before, "the deploy test touched this project's own repository"


def test_make_deploy_refuses_a_folder_without_a_site(pages_remote):
    env, bare, work, tmp = (pages_remote[k] for k in ("env", "bare", "work", "tmp"))
    empty = tmp / "empty"
    empty.mkdir()
    r = make(env, "deploy", "NO_BUILD=1", f"SITE_DIR={empty}", f"DEPLOY_REPO={work}")
    assert r.returncode != 0
    assert "deploy: no site in" in r.stderr
    assert git(env, "for-each-ref", cwd=bare).strip() == ""


def test_make_deploy_builds_the_site_first():
    """Without NO_BUILD, deploy depends on the site target (dry run: nothing runs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(["make", "--no-print-directory", "-n", "-C", str(ROOT), "deploy", "CONFIG=my_config.yml"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    build = next(i for i, line in enumerate(lines) if "-m generator build --config my_config.yml" in line)
    push = next(i for i, line in enumerate(lines) if "ghp-import" in line)
    assert build < push
    assert "--no-jekyll" in lines[push] and "--push" in lines[push] and "--branch \"gh-pages\"" in lines[push]


# --------------------------------------------------------------- link check


class _CheckHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def end_headers(self):
        # LinkChecker keeps to 10 requests a second per host unless the server
        # sends this header (documented for maxrequestspersecond).
        self.send_header("LinkChecker", "local test server")
        super().end_headers()


class _CheckServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # a checker closing early is no error
        pass


@pytest.fixture
def serve_for_check():
    servers = []

    def start(root: Path) -> str:
        server = _CheckServer(("127.0.0.1", 0), functools.partial(_CheckHandler, directory=str(root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()


def linkcheck(urls: list[str], tmp: Path) -> tuple[int, list[dict], str]:
    """Run LinkChecker on ``urls`` (recursively, internal URLs only); returns
    (exit code, CSV rows, stderr). One thread: parsing is CPU-bound and this
    is the fastest on two cores. Anchors are checked by :func:`broken_anchors`
    (LinkChecker's AnchorCheck plugin takes minutes on this site)."""
    rc = tmp / "linkcheckerrc"
    rc.write_text("[checking]\nmaxrequestspersecond=1000\nthreads=1\n", encoding="utf-8")
    home = tmp / "lc-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local")}
    r = subprocess.run([tool("linkchecker"), "--config", str(rc), "--no-status", "--output", "csv", "--verbose",
                        "--timeout", "30", "--stdin"], input="\n".join(urls), capture_output=True, text=True,
                       env=env, timeout=300)
    lines = [line for line in r.stdout.splitlines() if line and not line.startswith("#")]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines)), delimiter=";"))
    return r.returncode, rows, r.stderr


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            elif name == "href" and tag == "a" and value:
                self.hrefs.append(value)


def broken_anchors(site: Path) -> list[tuple[str, str]]:
    """``(page, href)`` for every link ``...#fragment`` of a page whose target
    page (in the built folder) has no element with that id."""
    parsed = {}
    for path in site.rglob("*.html"):
        parser = _Anchors()
        parser.feed(path.read_text(encoding="utf-8"))
        parsed[path.resolve()] = parser
    broken = []
    for path, parser in parsed.items():
        for href in parser.hrefs:
            url, fragment = urllib.parse.urldefrag(href)
            if not fragment or urllib.parse.urlparse(url).scheme:
                continue
            target = (path.parent / urllib.parse.unquote(url)).resolve() if url else path
            if target.is_dir():
                target = target / "index.html"
            if target not in parsed or urllib.parse.unquote(fragment) not in parsed[target].ids:
                broken.append((str(path.relative_to(site.resolve())), href))
    return broken


def test_linkchecker_finds_no_broken_link_in_the_whole_site(built_site, tmp_path, serve_for_check):
    """Every page (each one is a start URL, so pages reached only through the
    JavaScript corpus table are checked too) and every asset answers, under
    the /repo/ subpath; external URLs are never fetched; every #anchor
    exists."""
    shutil.copytree(built_site["site"], tmp_path / "pages" / "repo")
    base = serve_for_check(tmp_path / "pages") + "repo/"
    pages = sorted(p.relative_to(built_site["site"]).as_posix() for p in built_site["site"].rglob("*.html"))
    starts = [base + (p.removesuffix("index.html")) for p in pages if p != "404.html"]
    code, rows, stderr = linkcheck(starts, tmp_path)
    broken = [(r["url"], r["parentname"], r["result"]) for r in rows if r["valid"] != "True"]
    assert code == 0 and not broken, (broken[:10], stderr[-2000:])
    checked = {r["url"] for r in rows}
    assert set(starts) <= checked
    assert {base + "assets/plotly.min.js", base + "data/heads.json"} <= checked
    outside = {r["url"] for r in rows if not r["url"].startswith(("http://127.0.0.1", "data:"))}
    # the only external link is Material's "Made with" footer; only its syntax was checked
    assert outside <= {"https://squidfunk.github.io/mkdocs-material/"}
    for r in rows:
        if r["url"] in outside:
            assert "outside of the domain filter" in r["infostring"]
    assert "Checking intern URLs only" in stderr
    assert not broken_anchors(built_site["site"])


def test_linkchecker_reports_a_broken_link(tmp_path, serve_for_check):
    """The checks above are not vacuous: a missing page and a missing anchor fail them."""
    site = tmp_path / "s"
    (site / "a").mkdir(parents=True)
    (site / "index.html").write_text('<a href="a/">a</a> <a href="missing/">m</a> <a href="a/#nowhere">n</a>',
                                     encoding="utf-8")
    (site / "a" / "index.html").write_text('<h1 id="here">a</h1>', encoding="utf-8")
    base = serve_for_check(site)
    code, rows, _ = linkcheck([base], tmp_path)
    assert code == 1
    bad = {r["url"] for r in rows if r["valid"] != "True"}
    assert bad == {base + "missing/"}
    assert broken_anchors(site) == [("index.html", "a/#nowhere")]


# ------------------------------------------------------------ browser, /repo/

SUBPATH_PAGES = ["", "layers/layer-02/", "heads/layer-01-head-00/", "patterns/previous/", "pairs/",
                 "methodology/"]


class Recorder:
    """Every request of a browser context (pages and the search worker),
    with a route that answers anything outside 127.0.0.1 with an error
    instead of letting it out."""

    def __init__(self, context):
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.bad_status: list[tuple[int, str]] = []
        context.route("**/*", self._route)
        context.on("request", lambda r: self.requests.append(r.url))
        context.on("response", lambda r: self.bad_status.append((r.status, r.url)) if r.status >= 400 else None)

    def _route(self, route):
        url = route.request.url
        if url.startswith("http://127.0.0.1:") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def outside(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]


def _internal_links(page, base: str) -> set[str]:
    links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    return {urllib.parse.urldefrag(u)[0] for u in links if u.startswith("http://127.0.0.1")}


@pytest.mark.browser
def test_subpath_pages_assets_and_links(watched, subpath_url):
    """Under /repo/: figures render, no console error, every request stays on
    127.0.0.1 under /repo/ and answers, and every internal link of these
    pages answers 200."""
    rec = Recorder(watched.page.context)
    links: set[str] = set()
    for path in SUBPATH_PAGES:
        watched.open(subpath_url + path)
        page = watched.page
        expected = page.locator(".atlas-figure").count()
        assert page.locator(".atlas-figure.js-plotly-plot").count() == expected, path
        links |= _internal_links(page, subpath_url)
    assert not watched.errors, watched.errors
    assert not watched.failed and not rec.bad_status, (watched.failed, rec.bad_status)
    assert not rec.outside() and not rec.blocked, (rec.outside(), rec.blocked)
    here = [u for u in rec.requests if u.startswith("http://127.0.0.1:")]
    assert all(urllib.parse.urlparse(u).path.startswith("/repo/") for u in here), \
        [u for u in here if "/repo/" not in u]
    kinds = {u.rsplit(".", 1)[-1] for u in here if "/assets/" in u}
    assert {"js", "css"} <= kinds
    assert any(u.endswith("/repo/assets/plotly.min.js") for u in here)
    # the navigation (pruned to the open section: navigation.prune) links every layer
    assert {f"{subpath_url}layers/layer-{layer:02d}/" for layer in range(6)} <= links, sorted(links)
    assert len(links) > 50
    assert all(urllib.parse.urlparse(u).path.startswith("/repo/") for u in links)
    bad = []
    for url in sorted(links):
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                if resp.status != 200:
                    bad.append((resp.status, url))
        except urllib.error.HTTPError as exc:
            bad.append((exc.code, url))
    assert not bad, bad


def _open_search(page):
    box = page.locator("input.md-search__input")
    box.click()
    return box


def _search(page, box, query: str, limit_s: float = 180.0):
    """Type ``query`` once Material's search worker is ready, and wait for results.

    Material shows "Initializing search" in the result list's meta line until its worker has
    fetched and indexed ``search_index.json``; on a busy machine that takes a while, so the test
    waits for that real signal (bounded by ``limit_s``) instead of a fixed time. A query typed
    before then can be dropped, so it is typed again while no result shows."""
    import time

    deadline = time.monotonic() + limit_s
    page.wait_for_function(
        "() => { const m = document.querySelector('.md-search-result__meta');"
        " return m && m.textContent.trim() !== '' && !/initiali[sz]ing/i.test(m.textContent); }",
        timeout=limit_s * 1000)
    results = page.locator(".md-search-result__item")
    while True:
        box.fill("")
        box.type(query, delay=20)
        try:
            results.first.wait_for(timeout=10_000)
            return results
        except Exception:
            if time.monotonic() > deadline:
                raise


@pytest.mark.browser
def test_search_works_offline_under_subpath(watched, subpath_url):
    rec = Recorder(watched.page.context)
    watched.open(subpath_url)
    page = watched.page
    box = _open_search(page)
    results = _search(page, box, "strawberries")
    assert results.count() >= 1
    assert "matching document" in page.locator(".md-search-result__meta").inner_text()
    assert any(u.endswith("/repo/search/search_index.json") for u in rec.requests)
    href = results.first.locator("a").first.get_attribute("href")
    assert urllib.parse.urlparse(urllib.parse.urljoin(page.url, href)).path.startswith("/repo/")
    results.first.locator("a").first.click()
    page.wait_for_load_state("load")
    assert "/repo/" in page.url
    assert not watched.errors, watched.errors
    assert not rec.outside() and not rec.blocked, (rec.outside(), rec.blocked)
    assert not rec.bad_status, rec.bad_status


@pytest.mark.browser
def test_searching_hostile_text_shows_it_as_text(watched, subpath_url):
    """The corpus holds ``<img src=x onerror=alert(1)>``; searching for it
    (and typing markup into the box, and a highlight parameter in the URL)
    shows text and runs nothing (a dialog would be recorded as an error)."""
    rec = Recorder(watched.page.context)
    watched.open(subpath_url + "pairs/")
    page = watched.page
    box = _open_search(page)
    results = _search(page, box, "onerror")
    texts = " ".join(results.all_inner_texts())
    assert "<img src=x onerror=alert(1)>" in texts
    assert page.locator(".md-search-result img, .md-search-result script").count() == 0
    box.fill("<img src=x onerror=alert(1)> </script><script>alert(2)</script>")
    page.wait_for_timeout(500)
    assert page.locator("img[src=x]").count() == 0
    # search.highlight marks the query on the result page: markup in ?h= stays text
    hostile = urllib.parse.quote("<img src=x onerror=alert(3)>")
    watched.open(subpath_url + f"pairs/?h={hostile}")
    page.wait_for_timeout(300)
    assert page.locator("img[src=x]").count() == 0
    assert not watched.errors, watched.errors
    assert not rec.outside() and not rec.blocked, (rec.outside(), rec.blocked)


def test_theme_fonts_are_off_and_nothing_external_is_referenced(built_site):
    """Material's Google Fonts are off (``theme.font: false``) and no page,
    stylesheet or script names a font CDN or any other host to load from."""
    site = built_site["site"]
    hosts = re.compile(r"fonts\.googleapis|fonts\.gstatic|cdn\.jsdelivr|unpkg\.com|cdnjs|cdn\.plot\.ly")
    for path in [*site.rglob("*.html"), *site.rglob("*.css")]:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not hosts.search(text), path
        for match in re.finditer(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(https?:)?//', text):
            raise AssertionError(f"{path}: external resource {match.group(0)}")
