"""The sandbox image's tag: a hash of everything the image carries of ours, so that a change to the
runner, the image recipe or the supervisor (copied in beside the runner) never reuses a stale image."""

from __future__ import annotations

import shutil

from ttsd.sandbox import image
from ttsd.sandbox.image import image_tag, sandbox_dir


def test_tag_follows_the_sandbox_files_and_the_supervisor(tmp_path, monkeypatch):
    folder = tmp_path / "sandbox"
    shutil.copytree(sandbox_dir(), folder, ignore=shutil.ignore_patterns("__pycache__"))
    supervisor = tmp_path / "supervisor.py"
    shutil.copy(image.SUPERVISOR_SOURCE, supervisor)
    monkeypatch.setattr(image, "SUPERVISOR_SOURCE", supervisor)
    first = image_tag(folder)
    assert first == image_tag(folder) and first.startswith("ttsd-sandbox:")

    supervisor.write_text(supervisor.read_text() + "\n# changed\n")
    second = image_tag(folder)
    assert second != first

    (folder / "runner.py").write_text((folder / "runner.py").read_text() + "\n# changed\n")
    assert image_tag(folder) not in (first, second)
