"""The documentation: README is a landing page whose links resolve, and the Sphinx site (docs/)
builds with every warning an error, every broken cross-reference included (-W -n)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_readme_is_a_landing_page_whose_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = [target for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if "://" not in target]
    assert links and [t for t in links if not (REPO / t).is_file()] == []
    # every family has its line in the table, and a page
    from hpcbench.api import registry

    for name in registry.families():
        assert f"| `benchmark={name}` |" in text and (REPO / "docs" / "families" / f"{name}.md").is_file(), name


@pytest.mark.subprocess
def test_the_documentation_site_builds_without_a_warning(tmp_path):
    pytest.importorskip("myst_parser", reason="the docs extra is not installed (pip install -e '.[docs]')")
    # a copy: the build writes the generated configuration page into its source folder
    docs = tmp_path / "src" / "docs"
    shutil.copytree(REPO / "docs", docs, ignore=shutil.ignore_patterns("_build", "configuration.md"))
    (tmp_path / "src" / "results").mkdir()
    shutil.copy(REPO / "results" / "README.md", tmp_path / "src" / "results")  # included by results-format.md
    out = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
                          str(docs), str(tmp_path / "html")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    built = {p.relative_to(tmp_path / "html").with_suffix("").as_posix() for p in (tmp_path / "html").rglob("*.html")}
    pages = {p.relative_to(docs).with_suffix("").as_posix() for p in docs.rglob("*.md")}
    assert "configuration" in pages and pages <= built, pages - built
    # the configuration reference: every family's keys, with their types from the typed configs
    reference = (docs / "configuration.md").read_text()
    assert "| `gemm.shapes` |" in reference and "| `dist.nproc` | str | `auto` |" in reference
    assert "| `grouped_gemm.layouts` | list of one of: contiguous, masked, k_grouped |" in reference
    api = (tmp_path / "html" / "api.html").read_text()
    assert "hpcbench.api.family.Family" in api and "timed_columns" in api  # autodoc found the code


def _reference():
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_reference", REPO / "docs" / "_ext" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


KEY_MENTION = re.compile(r"(?<![\w./-])((?:dist|timing|results_root|force|gemm|grouped_gemm|mamf|collectives|overlap|"
                         r"ddp_overlap|moe_alltoall|pipeline|fingerprint|whatif)\.[A-Za-z_][\w.]*?)(?=[=`\s,)\]:]|$)")


def test_every_config_key_the_docs_mention_exists():
    """`gemm.shapes=...`, `dist.timeout_s`: every key README and the docs name is a key of the
    shipped configs (a config group's keys, and entries of a mapping-valued key, included)."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
    text = _reference().render()
    keys = set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.M))
    sections = set(re.findall(r"^\| \*\*`([^`]+)`\*\* \|", text, flags=re.M))
    groups = set(re.findall(r"^`([^`]+)` is a config group", text, flags=re.M))
    mappings = {k for k in keys if re.search(rf"^\| `{re.escape(k)}` \| dict", text, flags=re.M)}
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    unknown = set()
    for page in pages:
        if page.name == "configuration.md":
            continue
        for mention in KEY_MENTION.findall(page.read_text()):
            mention = mention.rstrip(".")
            if mention.endswith((".md", ".py", ".yaml")):  # a file, not a key
                continue
            if mention in keys | sections | groups or any(mention.startswith(p + ".") for p in groups | mappings):
                continue
            unknown.add(f"{page.relative_to(REPO)}: {mention}")
    assert keys and not unknown, sorted(unknown)
