"""Working as a team: data, models, the run cache and experiments shared through a DVC remote.

The S3 remote is a real S3 server (moto's) started here on 127.0.0.1; the default
remote is the local folder .dvc/config names (under $HOME, which each test points at
its own scratch folder)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.docs import section_commands
from tests.project import DIGITS, Project, assert_clean_failure, env, free_port

PAGE, SECTION = "docs/team.md", "# Working as a team"

CACHED = ["data/raw/train-images-idx3-ubyte", "data/prepared/train.npz", "data/prepared/test.npz",
          "models/model.npz", "data/predictions/test.npz"]
TRACKED = ["reports/metrics.json", "reports/confusion.json", "reports/train/history.json", "reports/report.md",
           "reports/figures/training_curves.png"]


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module", autouse=True)
def credentials():
    """S3 credentials for the server below, in the environment the dvc commands inherit."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in CREDENTIALS.items():
            mp.setenv(key, value)
        yield


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Each test its own $HOME, so its own default remote."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def wait_for_port(server, port: int) -> None:
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert server.poll() is None and time.time() < deadline, "moto_server did not start"
            time.sleep(0.2)


def moto_server(**environment):
    """Run a real S3 server (moto_server) on 127.0.0.1 for the caller's `yield from` -> its endpoint URL."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, **environment}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_for_port(server, port)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait()


@pytest.fixture(scope="module")
def s3():
    """A real S3 server on 127.0.0.1 -> its endpoint URL."""
    yield from moto_server()


def s3_client(endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def new_bucket(endpoint: str) -> str:
    name = f"team-{uuid.uuid4().hex[:8]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def use_s3(project, endpoint: str, bucket: str) -> None:
    """docs/team.md's set-up: the whole remote in .dvc/config.local, the default for this clone."""
    project.dvc("remote", "add", "--local", "--default", "team", f"s3://{bucket}/store")
    project.dvc("remote", "modify", "--local", "team", "endpointurl", endpoint)


def clone(source, path) -> Project:
    subprocess.run(["git", "clone", "-q", str(source), str(path)], check=True, env=env())
    project = Project.__new__(Project)
    project.path = path
    return project


def snapshot(project) -> dict[str, str]:
    return project.digests(CACHED + TRACKED)


def locked_md5(project, stage: str, path: str) -> str:
    outs = yaml.safe_load(project.read("dvc.lock"))["stages"][stage]["outs"]
    return next(o["md5"] for o in outs if o["path"] == path)


@pytest.fixture(scope="module")
def team_a(tmp_path_factory, s3):
    """Clone A: the pipeline run (baseline, committed) and a second run with train.seed 1, both pushed
    to a fresh bucket with the run cache. -> (A, bucket, baseline outputs, the seed-1 model)."""
    root = tmp_path_factory.mktemp("team")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(root / "home"))
        a = Project(root / "a", DIGITS)
        assert a.repro() == ["fetch", "prepare", "train", "evaluate", "plots"]
        a.commit("a run")
        bucket = new_bucket(s3)
        use_s3(a, s3, bucket)
        a.dvc("push", "--run-cache")
        baseline = snapshot(a)
        a.set("train.seed", 1)
        assert a.repro() == ["train", "evaluate", "plots"]
        a.dvc("push", "--run-cache")
        seed1 = a.read("models/model.npz")
        a.git("checkout", "HEAD", "--", ".")  # HEAD: autostage has staged the new dvc.lock
        a.dvc("checkout")
        assert snapshot(a) == baseline
    return a, bucket, baseline, seed1


def test_a_colleague_pulls_everything_and_runs_nothing(team_a, s3, tmp_path):
    a, bucket, baseline, _ = team_a
    b = clone(a.path, tmp_path / "b")
    use_s3(b, s3, bucket)
    b.dvc("pull")
    assert snapshot(b) == baseline
    assert b.status() == {}
    assert b.repro() == []


def test_the_run_cache_restores_training_instead_of_rerunning_it(team_a, s3, tmp_path):
    a, bucket, baseline, seed1 = team_a
    c = clone(a.path, tmp_path / "c")
    use_s3(c, s3, bucket)
    c.dvc("pull", "--run-cache")
    out = c.dvc("repro", "--pull")
    assert "Running stage 'train'" not in out.stdout and "epoch 1/" not in out.stderr, out.stdout
    assert snapshot(c) == baseline
    c.set("train.seed", 1)  # a run A made and pushed
    out = c.dvc("repro", "--pull")
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out.stdout, out.stdout
    assert "Running stage 'train'" not in out.stdout and "epoch 1/" not in out.stderr, out.stdout
    assert c.read("models/model.npz") == seed1


def run_and_shared(tmp_path) -> tuple[Project, Path]:
    """Clone A of the digits project, run, committed and pushed to a bare git repository -> (A, that
    repository: the team's git remote)."""
    a = Project(tmp_path / "a", DIGITS)
    assert a.repro() == ["fetch", "prepare", "train", "evaluate", "plots"]
    a.commit("a run")
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    a.git("remote", "add", "origin", str(origin))
    a.git("push", "-q", "origin", "HEAD")
    return a, origin


def test_the_default_remote_needs_no_set_up_and_experiments_travel(tmp_path, home):
    """Clone A pushes to the default remote (a folder under ~/.cache) and pushes an experiment to
    a bare git repository; a fresh clone B pulls both: the same bytes."""
    a, origin = run_and_shared(tmp_path)
    a.dvc("push")  # no remote named: the default one in .dvc/config
    assert (home / ".cache/mnist-dvc-from-scratch/dvc-remote/files/md5").is_dir()
    a.dvc("exp", "run", "-n", "seed2", "-S", "train.seed=2")
    exp_model = a.read("models/model.npz")
    a.dvc("exp", "push", "origin", "seed2")
    a.git("checkout", "HEAD", "--", ".")  # HEAD: autostage has staged the new dvc.lock
    a.dvc("checkout")

    b = clone(origin, tmp_path / "b")
    b.dvc("pull")
    assert snapshot(b) == snapshot(a)
    b.dvc("exp", "pull", "origin", "seed2")
    assert "seed2" in b.dvc("exp", "show", "--json").stdout
    b.dvc("exp", "apply", "seed2")
    b.dvc("pull")
    assert b.read("models/model.npz") == exp_model
    assert b.status() == {}


# -- bad remotes: one clear line naming the remote, and nothing in the workspace damaged ------------
@pytest.fixture(scope="module")
def s3_strict():
    """A second S3 server that checks credentials (and knows none)."""
    yield from moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0")


@pytest.mark.parametrize("breakage,dvc_says,we_say", [
    (lambda p, bucket, strict: p.dvc("remote", "modify", "--local", "team", "endpointurl",
                                     f"http://127.0.0.1:{free_port()}"),
     "Could not connect to the endpoint URL", "the endpoint does not answer"),
    (lambda p, bucket, strict: p.dvc("remote", "modify", "--local", "team", "url", "s3://no-such-bucket/store"),
     "bucket does not exist", "the bucket 'no-such-bucket' does not exist"),
    (lambda p, bucket, strict: p.dvc("remote", "modify", "--local", "team", "endpointurl", strict),
     "Forbidden", "the store refuses the credentials"),
])
def test_an_unusable_remote(team_a, s3, s3_strict, tmp_path, monkeypatch, breakage, dvc_says, we_say):
    """dvc pull fails in DVC's words (naming the endpoint or bucket, not the remote); the project's
    `python -m remote` says it in one line naming the remote. Nothing is written."""
    # one try per request: botocore's default five tries of a refused connection took ~20 s a
    # command here and change no word of what is checked (the other two breakages are never retried)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    a, bucket, _, _ = team_a
    b = clone(a.path, tmp_path / "b")
    use_s3(b, s3, bucket)
    breakage(b, bucket, s3_strict)
    proc = b.dvc("pull", check=False)
    assert proc.returncode != 0 and dvc_says in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (b.path / "models/model.npz").exists() and not (b.path / "data/raw").exists()
    line = assert_clean_failure(b.run(sys.executable, "-m", "remote", check=False), "remote 'team'")
    assert we_say in line or (we_say == "the store refuses the credentials" and "access is denied" in line), line


def test_the_remote_check_says_a_good_remote_is_reachable(team_a, s3, tmp_path, home):
    a, bucket, _, _ = team_a
    b = clone(a.path, tmp_path / "b")
    use_s3(b, s3, bucket)
    before = objects(s3, bucket)
    proc = b.run(sys.executable, "-m", "remote")
    assert proc.stdout.strip() == f"remote 'team' (s3://{bucket}/store): reachable and writable"
    assert objects(s3, bucket) == before  # the probe object is gone
    proc = b.run(sys.executable, "-m", "remote", "local")  # the default folder: not made yet
    assert "remote 'local'" in proc.stdout and "empty: the first dvc push fills it" in proc.stdout
    assert not (home / ".cache/mnist-dvc-from-scratch").exists()  # the probe's folders are gone too


def objects(endpoint: str, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3_client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", []))


def test_the_remote_check_refuses_a_read_only_folder_in_one_line(tmp_path):
    """A local remote that can be listed but not written (as a user sees a folder of another, or
    read-only: root's override is dropped) is refused before any dvc push fails on it; made
    writable, it passes - and is left as it was."""
    p = Project(tmp_path / "p", DIGITS)
    store = tmp_path / "store"
    (store / "files/md5/ab").mkdir(parents=True)
    (store / "files/md5/ab/cdef").write_bytes(b"an object")
    p.dvc("remote", "add", "--local", "-f", "-d", "shared", str(store))
    folders = [store, store / "files", store / "files/md5", store / "files/md5/ab"]
    for folder in folders:
        folder.chmod(0o555)
    line = assert_clean_failure(p.run(sys.executable, "-m", "remote", check=False, as_user=True),
                                f"remote 'shared' ({store})", "can be read but not written, so dvc push would fail",
                                f"{store}/files/md5 refused a probe file", f"chmod -R u+w {store}")
    assert "Permission denied" in line, line
    for folder in folders:
        folder.chmod(0o755)
    proc = p.run(sys.executable, "-m", "remote", as_user=True)
    assert proc.stdout.strip() == f"remote 'shared' ({store}): reachable and writable"
    assert sorted(str(f.relative_to(store)) for f in store.rglob("*")) == ["files", "files/md5", "files/md5/ab",
                                                                         "files/md5/ab/cdef"]


@pytest.fixture(scope="module")
def s3_auth():
    """A third S3 server that checks credentials: its first requests (unchecked) make a bucket and a
    user who may list and read it, not write -> (endpoint, bucket, the user's credentials)."""
    import json

    import boto3

    for endpoint in moto_server(INITIAL_NO_AUTH_ACTION_COUNT="4"):
        client = {"endpoint_url": endpoint, "region_name": "us-east-1", **{
            "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}}
        bucket = f"team-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", **client).create_bucket(Bucket=bucket)
        iam = boto3.client("iam", **client)
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject", "s3:GetBucketLocation"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield endpoint, bucket, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                                 "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_the_remote_check_refuses_a_read_only_bucket_in_one_line(s3_auth, tmp_path):
    """A bucket the credentials may list but not write to: dvc push would be refused; the check
    says so first, in one line naming the remote."""
    endpoint, bucket, reader = s3_auth
    p = Project(tmp_path / "p", DIGITS)
    use_s3(p, endpoint, bucket)
    line = assert_clean_failure(p.run(sys.executable, "-m", "remote", check=False,
                                      extra_env={**reader, "AWS_MAX_ATTEMPTS": "1"}),
                                f"remote 'team' (s3://{bucket}/store)", "can be read but not written",
                                f"a probe object under {bucket}/store/files/md5 was refused", "write access")
    assert "Access Denied" in line or "AccessDenied" in line, line


def pushed_elsewhere(a, s3, tmp_path) -> tuple[str, str]:
    """Another machine with A's outputs pushes them to a fresh bucket -> (bucket, the model's object key)."""
    bucket = new_bucket(s3)
    a2 = clone(a.path, tmp_path / "a2")
    shutil.copytree(a.path / ".dvc/cache", a2.path / ".dvc/cache")
    a2.dvc("checkout")
    use_s3(a2, s3, bucket)
    a2.dvc("push")
    md5 = locked_md5(a, "train", "models/model.npz")
    return bucket, f"store/files/md5/{md5[:2]}/{md5[2:]}"


def test_a_file_missing_from_the_remote_is_named_and_the_rest_is_pulled(team_a, s3, tmp_path):
    a, _, baseline, _ = team_a
    bucket, key = pushed_elsewhere(a, s3, tmp_path)
    s3_client(s3).delete_object(Bucket=bucket, Key=key)  # ... but the model's object is lost
    md5 = locked_md5(a, "train", "models/model.npz")
    b = clone(a.path, tmp_path / "b")
    use_s3(b, s3, bucket)
    proc = b.dvc("pull", check=False)
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert f"md5: {md5}" in said and "failed for following targets:\nmodels/model.npz" in said, said
    assert not (b.path / "models/model.npz").exists()
    assert b.digests(["data/prepared/train.npz"])["data/prepared/train.npz"] == baseline["data/prepared/train.npz"]


def test_a_corrupted_object_in_the_remote_is_caught_by_dvc_hash_check(team_a, s3, tmp_path):
    """With `verify = true` on the remote (docs/team.md's set-up), DVC hashes what it downloads."""
    a, _, _, _ = team_a
    bucket, key = pushed_elsewhere(a, s3, tmp_path)
    client = s3_client(s3)
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body[:-8] + b"XXXXXXXX")
    b = clone(a.path, tmp_path / "b")
    use_s3(b, s3, bucket)
    b.dvc("remote", "modify", "--local", "team", "verify", "true")
    proc = b.dvc("pull", check=False)
    assert proc.returncode != 0, proc.stdout
    assert "models/model.npz" in proc.stdout + proc.stderr
    assert not (b.path / "models/model.npz").exists()


def test_the_remote_check_on_http_a_missing_plugin_and_a_file(tmp_path):
    """Other kinds of remote get one line too: an http server that answers or does not (http
    cannot be listed), a scheme whose DVC plugin is not installed, a local path that is a file,
    a URL with a slash missing (a local folder to DVC), a folder inside the project."""
    import functools
    import http.server
    import importlib.util
    import threading

    p = Project(tmp_path / "p", DIGITS)
    (tmp_path / "a_file").write_text("not a folder\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cases = [(f"http://127.0.0.1:{free_port()}/store", "the server does not answer"),
                 (str(tmp_path / "a_file"), "a file, not a folder"),
                 # DVC takes these for folders (dvc push then fills them): a slash short, inside the project
                 (str(p.path / "s3:/bucket/store"), "not a s3 remote: a URL is s3://..., with two slashes; fix the "
                  "url (dvc remote modify --local NAME url s3://bucket/store)"),
                 (str(p.path / "store"), "a folder inside this project")]
        if importlib.util.find_spec("dvc_gs") is None:
            cases.append(("gs://bucket/store", "requires 'dvc-gs' to be installed"))
        for url, says in cases:
            p.dvc("remote", "add", "--local", "-f", "-d", "t", url)
            assert_clean_failure(p.run(sys.executable, "-m", "remote", check=False), f"remote 't' ({url})"
                                 if "dvc-gs" not in says else "remote 't'", says)
        line = assert_clean_failure(p.run(sys.executable, "-m", "remote", "nosuch", check=False),
                                    "remote 'nosuch'", "(dvc remote list)")
        assert set(line.split("the remotes are: ")[1].split(" (")[0].split(", ")) == {"local", "t"}, line
        url = f"http://127.0.0.1:{server.server_address[1]}/store"
        p.dvc("remote", "add", "--local", "-f", "-d", "t", url)
        out = p.run(sys.executable, "-m", "remote").stdout.strip()
        assert out.startswith(f"remote 't' ({url}): the server answers (an http remote cannot be listed"), out
    finally:
        server.shutdown()


def test_the_team_page_as_written(s3, tmp_path, home):
    """docs/team.md's commands, run as written in two clones, A and a colleague's B, sharing a git
    remote (a bare repository, `origin`) and a real S3 server. Filled in, as a reader would: the
    bucket for BUCKET, the server's URL for https://s3.example.com, its keys for the `…`s.
    B runs the page's `remote add` lines too ("after the same remote add"); `pip install` is not
    run (tests/docs.py NOT_RUN)."""
    steps = section_commands(PAGE, SECTION)
    assert [s.split()[:3] for s in steps] == [
        ["dvc", "remote", "add"], ["dvc", "remote", "modify"], ["dvc", "remote", "modify"], ["export",
        "AWS_ACCESS_KEY_ID=…", "AWS_SECRET_ACCESS_KEY=…"], ["python", "-m", "remote"], ["dvc", "push", "--run-cache"],
        ["dvc", "pull", "--run-cache"], ["dvc", "repro", "--pull"], ["dvc", "exp", "run"], ["dvc", "exp", "pull"]]
    bucket = new_bucket(s3)
    filled = [s.replace("s3://BUCKET/", f"s3://{bucket}/").replace("https://s3.example.com", s3)
              .replace("…", "testing") for s in steps]
    set_up, share, colleague = filled[:5], filled[5], filled[6:8]
    experiment, colleague_experiment = filled[8], filled[9]

    def bash(project, lines):
        proc = subprocess.run(["bash", "-ec", "\n".join(lines)], cwd=project.path, env=env(), capture_output=True,
                              text=True)
        assert proc.returncode == 0, f"{lines} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    a, origin = run_and_shared(tmp_path)
    said = bash(a, set_up + [share])
    assert f"remote 'team' (s3://{bucket}/mnist): reachable and writable" in said, said

    b = clone(origin, tmp_path / "b")
    said = bash(b, set_up[:-1] + colleague)
    assert "Running stage 'train'" not in said, said  # nothing trains again: the model came from the remote
    assert snapshot(b) == snapshot(a) and b.status() == {}

    keys = set_up[3]  # each shell its own: the export again
    bash(a, [keys, experiment])
    model = a.read("models/model.npz")
    said = bash(b, [keys, colleague_experiment])
    assert "seed2" in said and b.read("models/model.npz") == model, said
