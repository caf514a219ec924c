"""The Docker sandbox: the same bad-input suite as the local one, per-job and warm-pool containers.

These tests need a running engine and the image (`scripts/setup` starts dockerd and runs
`ttsd sandbox build --if-missing`). Without an engine they fail with a message saying how to start
one; set TTSD_ALLOW_NO_DOCKER=1 to skip them instead (never in CI).
"""

from __future__ import annotations

import os

import pytest

from ttsd.sandbox import Job, SandboxUnavailable
from ttsd.sandbox.docker import LABEL, DockerSandbox, connect, owner_id
from tests.test_sandbox_local import BAD_INPUT, ctx, run_bad_input  # noqa: F401  (ctx is a fixture)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def _sandbox(**options) -> DockerSandbox:
    try:
        return DockerSandbox(**options)
    except SandboxUnavailable as exc:
        if os.environ.get("TTSD_ALLOW_NO_DOCKER") == "1":
            pytest.skip(f"Docker unavailable and TTSD_ALLOW_NO_DOCKER=1: {exc}")
        pytest.fail(f"Docker sandbox unavailable: {exc}", pytrace=False)


@pytest.fixture(scope="module", params=["per_job", "warm_pool"])
def docker_sandbox(request):
    sandbox = _sandbox(pool_size=0 if request.param == "per_job" else 2)
    yield sandbox
    sandbox.close()
    assert not _own_containers(sandbox), "close() left containers behind"


def _own_containers(sandbox: DockerSandbox) -> list:
    return sandbox.containers()


def _settle(sandbox: DockerSandbox) -> None:
    sandbox.settle()  # recycled containers are removed and replaced in the background


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c.name for c in BAD_INPUT])
def test_bad_input_docker(docker_sandbox, case, ctx):  # noqa: F811
    run_bad_input(docker_sandbox, case, ctx)
    _settle(docker_sandbox)
    live = _own_containers(docker_sandbox)
    if docker_sandbox.pool_size == 0:
        assert not live, "a per-job container was left behind"
    else:
        assert len(live) <= docker_sandbox.pool_size
        assert all(c.status == "running" for c in live), [c.status for c in live]


def test_warm_pool_reuses_clean_containers_and_recycles_failed_ones():
    sandbox = _sandbox(pool_size=1)
    try:
        ids = []
        for code in ("print(1)", "print(2)", "raise SystemExit(4)", "print(3)"):
            r = sandbox.run(Job(files={"m.py": code}, argv=["python3", "m.py"]))
            ids.append(r)
            _settle(sandbox)
            ids[-1] = {c.id for c in _own_containers(sandbox)}
        assert len(ids[0]) == 1 and ids[0] == ids[1], "a clean job should leave its container in the pool"
        assert len(ids[2]) == 1 and ids[2] != ids[1], "a failed job's container must be replaced"
        assert ids[3] == ids[2], "the replacement should serve the next job"
        r = sandbox.run(Job(files={"m.py": "open('/tmp/mark', 'w').write('x')\nprint(open('/tmp/mark').read())"},
                            argv=["python3", "m.py"]))
        assert r.stdout == "x\n"
        r = sandbox.run(Job(files={"m.py": "import os\nprint(os.listdir('/tmp'), os.listdir('.'))"},
                            argv=["python3", "m.py"]))
        assert r.stdout == "[] ['m.py']\n", "a reused container must start every job clean"
    finally:
        sandbox.close()


def test_container_is_hardened():
    sandbox = _sandbox(pool_size=1)
    try:
        sandbox.run(Job(files={"m.py": "print(0)"}, argv=["python3", "m.py"]))
        (container,) = _own_containers(sandbox)
        host = container.attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["LogConfig"]["Type"] == "none"
        assert host["PidsLimit"] == 64 and host["Memory"] > 0 and host["NanoCpus"] == 10**9
        assert container.attrs["Config"]["User"] == "65534:65534"
        assert set(host["Tmpfs"]) == {"/work", "/tmp", "/dev/shm"}
        r = sandbox.run(Job(files={"m.py": "import os\nprint(os.getuid(), open('/proc/self/status').read().count('0000000000000000'))"},
                            argv=["python3", "m.py"]))
        uid, zero_cap_sets = r.stdout.split()
        assert uid == "65534" and int(zero_cap_sets) >= 4  # CapInh/Prm/Eff/Bnd/Amb all empty
    finally:
        sandbox.close()


def test_leftovers_of_dead_owners_are_removed_at_start():
    client = connect()
    from ttsd.sandbox.image import image_tag

    dead_owner = owner_id().rsplit(":", 1)[0] + ":not-a-start-time"
    stale = client.containers.create(image_tag(), labels={LABEL: "1", "ttsd.sandbox.owner": dead_owner})
    sandbox = _sandbox(pool_size=0)
    sandbox.close()
    remaining = client.containers.list(all=True, filters={"id": stale.id})
    assert not remaining, "a leftover container of a dead ttsd process survived"


def test_no_engine_gives_a_clear_message(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxUnavailable, match="dockerd") as info:
        connect()
    assert "ttsd sandbox build" in str(info.value)


def test_total_memory_of_all_processes_is_capped():
    """rlimits cap each process; the container's cgroup caps them together (and says so)."""
    sandbox = _sandbox(pool_size=1)
    code = """
import os, time
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        block = bytearray(400 << 20)  # under the 512 MB address-space limit of each process
        time.sleep(2)
        os._exit(0)
    children.append(pid)
print([os.waitpid(pid, 0)[1] for pid in children])
"""
    try:
        r = sandbox.run(Job(files={"m.py": code}, argv=["python3", "m.py"], memory_limit_mb=512, time_limit_s=20))
        assert r.memory_exceeded, r
        assert "9" in r.stdout  # at least one child was killed by the OOM killer (SIGKILL)
        sandbox.settle()
        assert all(c.status == "running" for c in _own_containers(sandbox))
    finally:
        sandbox.close()


def test_cli_build_if_missing_is_quick_and_status_reports_both_backends():
    from typer.testing import CliRunner

    from ttsd.cli import app
    from ttsd.sandbox.image import image_tag

    runner = CliRunner()
    result = runner.invoke(app, ["sandbox", "build", "--if-missing"])
    assert result.exit_code == 0, result.output
    assert f"present: {image_tag()}" in result.output
    status = runner.invoke(app, ["sandbox", "status"], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    assert "bubblewrap + rlimits" in status.output and image_tag() in status.output


def test_cli_reports_a_missing_engine_with_exit_code_2():
    from typer.testing import CliRunner

    from ttsd.cli import app

    result = CliRunner().invoke(app, ["sandbox", "build", "--if-missing"],
                                env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.exit_code == 2
    assert "dockerd" in result.output and "Traceback" not in result.output


def _racing_client(vanish: str):
    """A real client that behaves as if another ttsd process removed the containers of owner
    `vanish` right after each listing (the engine really removes them: the race is real, its timing
    forced; containers of other owners are left alone)."""
    import docker

    from ttsd.sandbox.docker import OWNER_LABEL

    class RacingAPI(docker.APIClient):
        def containers(self, *args, **kwargs):
            listed = super().containers(*args, **kwargs)
            for entry in listed:
                if (entry.get("Labels") or {}).get(OWNER_LABEL) == vanish:
                    self.remove_container(entry["Id"], force=True)
            return listed

    client = docker.from_env()
    client.api.__class__ = RacingAPI
    return client


def test_a_container_that_vanishes_during_leftover_removal_is_not_an_error():
    """Many ttsd processes starting at once remove each other's leftovers; a container listed and
    then removed by another process (NotFound on inspect or remove) must not escape."""
    from ttsd.sandbox.docker import OWNER_LABEL, remove_leftovers
    from ttsd.sandbox.image import image_tag

    client = connect()
    owner, vanishing = (f"{owner_id().rsplit(':', 1)[0]}:{what}-{os.getpid()}" for what in ("dead", "vanishing"))
    made = [client.containers.create(image_tag(), labels={LABEL: "1", OWNER_LABEL: o}).id for o in (owner, owner, vanishing)]
    try:
        assert remove_leftovers(_racing_client(vanish=vanishing), owner=owner) == 2  # one vanished before its inspection
        made.append(client.containers.create(image_tag(), labels={LABEL: "1", OWNER_LABEL: vanishing}).id)
        assert remove_leftovers(_racing_client(vanish=vanishing), owner=vanishing) == 0, "vanished before its removal: not counted"
        for gone in (owner, vanishing):
            assert not client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={gone}"})
    finally:
        for cid in made:
            try:
                client.api.remove_container(cid, force=True)
            except Exception:
                pass


def test_other_sandbox_images_are_kept_until_asked_and_then_only_they_go(monkeypatch):
    """Builds keep the images of other sandbox/ files (another checkout on the same engine may use
    one); `ttsd sandbox cleanup --images` removes them and never the current one. A repository of this test's
    own keeps the developer's real ttsd-sandbox images out of it."""
    from ttsd.sandbox import image

    client = connect()
    real = client.images.get(image.image_tag())
    monkeypatch.setattr(image, "REPOSITORY", f"ttsd-sandbox-test-{os.getpid()}")
    current = image.image_tag()
    repository, version = current.split(":")
    try:
        for name in (version, "older-a", "older-b"):
            real.tag(repository, name)
        assert image.other_images(client) == [f"{repository}:older-a", f"{repository}:older-b"]
        from typer.testing import CliRunner

        from ttsd.cli import app

        status = CliRunner().invoke(app, ["sandbox", "status"], env={"COLUMNS": "300"})
        assert "2 other ttsd-sandbox image(s)" in status.output, status.output
        cleanup = CliRunner().invoke(app, ["sandbox", "cleanup", "--images"], env={"COLUMNS": "300"})
        assert cleanup.exit_code == 0, cleanup.output
        assert f"removed 2 other ttsd-sandbox image(s): {repository}:older-a, {repository}:older-b" in cleanup.output
        assert image.other_images(client) == [] and image.image_exists(client, current)
        assert image.image_exists(client, real.tags[0])  # the real image is untouched
    finally:
        for stale in client.images.list(name=repository):
            for tag in stale.tags:
                if tag.startswith(f"{repository}:"):  # the image also carries the real tag
                    client.images.remove(tag)
