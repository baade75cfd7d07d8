"""`conveyor deploy PATH`: the directory packed as the project ignores it,
uploaded to an upload app that is created when missing."""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from pathlib import Path

import httpx

from conveyor.cli.source import files_to_pack
from conveyor.clients.oci_registry import source_repository

FILES = {
    "Dockerfile": "FROM scratch\n",
    "Procfile": "web: ./serve\n",
    "app.py": "print('hi')\n",
    ".gitignore": "*.log\n!keep.log\nbuild/\n/secret.txt\n",
    "debug.log": "x",
    "keep.log": "x",
    "build/out.bin": "x",
    "secret.txt": "x",
    "sub/secret.txt": "kept: the root's /secret.txt is anchored",
    "sub/.gitignore": "*.tmp\n",
    "sub/a.tmp": "x",
    "sub/b.txt": "x",
    "sub/deeper/c.tmp": "x",
    "other/c.tmp": "kept: sub/.gitignore speaks for sub/ only",
    ".dockerignore": "# comment\ndocs\n!docs/keep.md\n**/*.bak\n/Dockerfile\n*.md\n",
    "README.md": "left out: *.md at the root",
    "lib/notes.md": "kept: *.md matches at the root only",
    "docs/guide.md": "x",
    "docs/keep.md": "x",
    "deep/x/y.bak": "x",
    "deep/x/y.txt": "x",
    ".git/config": "[core]\n",
    "empty/": None,
}
PACKED = {
    "Dockerfile", "Procfile", "app.py", ".gitignore", ".dockerignore", "keep.log",
    "sub", "sub/secret.txt", "sub/.gitignore", "sub/b.txt", "sub/deeper",
    "other", "other/c.tmp", "lib", "lib/notes.md", "docs/keep.md", "deep", "deep/x", "deep/x/y.txt", "empty",
}


def project_tree(root: Path) -> Path:
    for name, text in FILES.items():
        path = root / name
        if text is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.mkfifo(root / "a-fifo")  # neither a file nor a directory: not packed
    return root


def test_what_is_packed_honours_gitignore_and_dockerignore(tmp_path):
    assert set(files_to_pack(project_tree(tmp_path / "site"))) == PACKED


def uploaded_members(registry: str, project_id: str) -> list[set[str]]:
    """The members of every source tarball the API stored for the project."""
    repository = source_repository(project_id)
    base = f"http://{registry}/v2/{repository}"
    tags = httpx.get(f"{base}/tags/list").json()["tags"]
    archives = []
    for tag in tags:
        blob = httpx.get(f"{base}/blobs/sha256:{tag.removeprefix('upload-')}").content
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
            archives.append({member.name for member in archive.getmembers()})
    return archives


def test_deploy_packs_uploads_and_creates_the_app_when_missing(cli, tmp_path):
    site = project_tree(tmp_path / f"site-{uuid.uuid4().hex[:6]}")
    first = cli.json("deploy", str(site), "--port", "9000", "--detach")
    assert first["operation"] == "deploy" and first["build_id"].startswith("bld_")
    app = cli.json("apps", "show", site.name)
    assert (app["source_type"], app["port"]) == ("upload", 9000)
    assert uploaded_members(cli.served.settings.registry, cli.project.id) == [PACKED]

    cli.forget_sent()
    (site / "app.py").write_text("print('v2')\n")
    again = cli.json("deploy", str(site), "--detach")
    assert again["number"] == 2
    assert [(s.method, s.path) for s in cli.sent() if s.method == "POST"] == [("POST", f"/api/v1/apps/{app['id']}/build")]

    refused = cli.run("deploy", str(site), "--port", "9001")
    assert refused.exit_code == 2 and "--port only apply when deploy creates the app" in refused.stderr


def test_deploy_with_an_app_name_and_from_the_current_directory(cli, tmp_path, monkeypatch):
    site = project_tree(tmp_path / "here")
    monkeypatch.chdir(site)
    named = f"web-{uuid.uuid4().hex[:6]}"
    deployment = cli.json("deploy", "--app", named, "-d")
    assert cli.json("apps", "show", named)["id"] == deployment["app_id"]


def test_deploy_an_image(cli):
    named = f"img-{uuid.uuid4().hex[:6]}"
    from tests.support.api_client import DEMO_IMAGE

    first = cli.json("deploy", "--app", named, "--image", f"{DEMO_IMAGE}:v1", "-d")
    assert first["number"] == 1 and first["image"] == f"{DEMO_IMAGE}:v1"
    moved = cli.json("deploy", "--app", named, "--image", f"{DEMO_IMAGE}:v2", "-d")
    assert moved["number"] == 2 and cli.json("apps", "show", named)["image_url"] == f"{DEMO_IMAGE}:v2"
    assert cli.run("deploy", "--image", f"{DEMO_IMAGE}:v2").exit_code == 2  # --image needs --app
    assert cli.run("deploy", "--app", named).exit_code == 2  # an image app takes no directory
