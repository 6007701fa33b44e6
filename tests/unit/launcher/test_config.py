"""The studio's launcher.toml: read, checked, and every mistake named."""

from __future__ import annotations

from pathlib import Path

import pytest

from changeover.errors import InvalidInput
from changeover.launcher.config import load

GOOD = """
title = "Hourai"
logo = "logo.png"
content_url = "https://cdn.example.com/content/"
root = "root.json"
image = "hourai"
install_dir = "/games/hourai"
news = "https://example.com/news.xml"

[[branches]]
name = "production"
title = "Live"

[[branches]]
name = "beta"

[game.linux]
executable = "bin/hourai"
args = ["--fullscreen", "--lang=en"]

[game.windows]
executable = "Hourai.exe"

[launcher]
image = "hourai-launcher"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "launcher.toml"
    path.write_text(text)
    return path


def test_a_full_config(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    assert config.title == "Hourai"
    assert config.content_url == "https://cdn.example.com/content"
    assert config.root == tmp_path / "root.json" and config.logo == tmp_path / "logo.png"
    assert [(b.name, b.title) for b in config.branches] == [
        ("production", "Live"),
        ("beta", "beta"),
    ]
    assert config.command("linux").args == ("--fullscreen", "--lang=en")
    assert config.command("windows").executable == "Hourai.exe"
    assert config.install_path("beta") == Path("/games/hourai/beta")
    assert config.self_update is not None and config.self_update.branch == "production"
    assert config.news_url == "https://example.com/news.xml"
    with pytest.raises(InvalidInput, match=r"\[game.macos\] is missing"):
        config.command("macos")
    with pytest.raises(InvalidInput, match="no branch 'alpha'"):
        config.branch("alpha")


def test_a_minimal_config_installs_under_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    text = GOOD.replace('install_dir = "/games/hourai"\n', "").split("[launcher]")[0]
    config = load(write(tmp_path, text))
    assert config.self_update is None
    assert config.install_dir == tmp_path / "data" / "Hourai"  # XDG: this is Linux


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('title = "Hourai"\n', ""), "title is missing"),
        (
            ('content_url = "https://cdn.example.com/content/"', 'content_url = "ftp://x"'),
            "not an http:// or https:// URL",
        ),
        (
            ('content_url = "https://cdn.example.com/content/"', "content_url = 3"),
            "content_url must be a non-empty string",
        ),
        (('image = "hourai"\n', ""), "image is missing"),
        (('executable = "bin/hourai"', 'executable = "../../etc/passwd"'), "inside the build"),
        (('executable = "Hourai.exe"', 'executable = "C:/x.exe"'), "inside the build"),
        (("[game.windows]", "[game.amiga]"), r"\[game.amiga\] is not a platform"),
        (('args = ["--fullscreen", "--lang=en"]', "args = [1]"), "args must be a list"),
        (('name = "beta"', 'name = "production"'), "names a branch twice"),
        (('news = "https://example.com/news.xml"', 'news = "javascript:alert(1)"'), "news"),
        (('title = "Hourai"', "title = [unclosed"), "not valid TOML"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert change[0] in GOOD
    with pytest.raises(InvalidInput, match=message) as e:
        load(write(tmp_path, GOOD.replace(change[0], change[1])))
    assert str(tmp_path / "launcher.toml") in e.value.message


def test_no_branches_and_no_file(tmp_path: Path) -> None:
    text = GOOD.replace("[[branches]]", "[[other]]")
    with pytest.raises(InvalidInput, match=r"\[\[branches\]\] is missing"):
        load(write(tmp_path, text))
    with pytest.raises(InvalidInput, match="does not exist"):
        load(tmp_path / "nope.toml")


def test_copy_mode_is_a_top_level_flag(tmp_path: Path) -> None:
    assert load(write(tmp_path, GOOD)).install_mode == "link"
    config = load(write(tmp_path, "copy = true\n" + GOOD))
    assert config.copy is True and config.install_mode == "copy"
    with pytest.raises(InvalidInput, match="copy must be true or false"):
        load(write(tmp_path, 'copy = "yes"\n' + GOOD))
