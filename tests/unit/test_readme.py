"""The README stays a front door: short, its calls aimed at routes the service declares, its links live."""

from __future__ import annotations

import re
from pathlib import Path

from keel.serving import routes

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

URL = re.compile(r"http://127\.0\.0\.1:3000(/[^\s'\";]*)")


def curl_commands() -> list[str]:
    """Each `curl` command of the README, up to its end: a `;` or a newline outside single quotes
    and not escaped (a JSON body spans lines inside its quotes)."""
    commands = []
    for found in re.finditer(r"\bcurl\b", README):
        quoted, at = False, found.start()
        while at < len(README):
            char = README[at]
            if char == "'":
                quoted = not quoted
            elif not quoted and (char == ";" or (char == "\n" and README[at - 1] != "\\")):
                break
            at += 1
        commands.append(README[found.start() : at])
    return commands


def call(command: str) -> tuple[str, str]:
    """(method, path) of a curl command; the README's <placeholders> stand for one path segment."""
    url = URL.search(command)
    assert url is not None, command
    return ("POST" if "-X POST" in command else "GET"), re.sub(r"<[^>]+>", "x", url.group(1))


def test_readme_is_at_most_250_lines() -> None:
    assert len(README.splitlines()) <= 250


def test_every_curl_example_calls_a_declared_route_with_the_right_method() -> None:
    calls = [call(command) for command in curl_commands()]
    assert set(calls) == {
        ("POST", "/v1/routing/decide"),
        ("POST", "/v1/feedback"),
        ("GET", "/v1/decisions/x"),
        ("GET", "/v1/models"),
        ("POST", "/v1/admin/reload"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }, calls
    for method, path in calls:
        assert routes.match(method, path) is not None, (method, path)


def test_examples_send_the_key_exactly_where_the_route_needs_one() -> None:
    for command in curl_commands():
        found = routes.match(*call(command))
        assert found is not None, command
        assert ("Authorization: Bearer $KEEL_KEY" in command) == (not found.route.public), command


def test_every_link_into_docs_names_a_page_of_the_site() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", README)
    assert links, "the README points readers into docs/"
    nav = (ROOT / "mkdocs.yml").read_text()
    for link in links:
        assert (ROOT / link).is_file(), link
        assert f": {Path(link).name}" in nav, f"{link} is not in mkdocs.yml's nav"
