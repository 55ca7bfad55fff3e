"""scripts/build_push.sh against stand-in `docker` and `aws` executables that record every call.

Each test copies the script and the files it reads into a fresh git repository, and runs it with a
PATH holding only the stand-ins and the few system tools the script needs, so a real docker or aws
on the machine can never be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ACCOUNT = "123456789012"
REGION = "eu-west-1"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
TOKEN = "stand-in-ecr-password"
SYSTEM_TOOLS = ("bash", "dirname", "sed", "git")

# One program for both stand-ins: it records its name, argv and stdin, then behaves as configured by
# FAKE_* environment variables.
STAND_IN = r'''
import json, os, sys
tool = os.path.basename(sys.argv[0])
args = sys.argv[1:]
stdin = sys.stdin.read() if args[:1] == ["login"] else None
with open(os.environ["FAKE_RECORD"], "a") as f:
    f.write(json.dumps({"tool": tool, "args": args, "stdin": stdin}) + "\n")
env = os.environ.get

def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.exit(code)

if tool == "docker":
    if args[:1] == ["info"] and env("FAKE_DOCKER_DOWN"):
        fail("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")
    if args[:1] == ["login"] and env("FAKE_LOGIN_FAIL"):
        fail("Error response from daemon: login attempt failed with status: 400 Bad Request")
    if args[:2] == ["buildx", "version"] and env("FAKE_NO_BUILDX"):
        fail("docker: 'buildx' is not a docker command.")
    if args[:1] == ["version"]:
        print(env("FAKE_CLIENT_VERSION", "27.3.1"))
        sys.exit(0)
    if "build" in args[:2] and env("FAKE_BUILD_FAIL"):
        fail("ERROR: failed to solve: process did not complete successfully")
    if "build" in args[:2] and env("FAKE_BUILD_ENV"):
        print("DOCKER_BUILDKIT=" + env("DOCKER_BUILDKIT", ""))
    print("docker " + " ".join(args[:1]) + " ok")
elif tool == "aws":
    if args[:2] == ["sts", "get-caller-identity"]:
        if env("FAKE_STS_FAIL"):
            fail("Unable to locate credentials. You can configure credentials by running \"aws configure\".", 255)
        print(env("FAKE_ACCOUNT", "123456789012"))
    elif args[:3] == ["configure", "get", "region"]:
        if not env("FAKE_CONFIGURED_REGION"):
            sys.exit(1)
        print(env("FAKE_CONFIGURED_REGION"))
    elif args[:2] == ["ecr", "describe-repositories"]:
        name = args[args.index("--repository-names") + 1]
        if env("FAKE_DESCRIBE_ERROR"):
            fail("An error occurred (AccessDeniedException) when calling the DescribeRepositories operation: "
                 "not authorized to perform: ecr:DescribeRepositories", 254)
        if name not in env("FAKE_EXISTING_REPOS", "").split(","):
            fail(f"An error occurred (RepositoryNotFoundException) when calling the DescribeRepositories "
                 f"operation: The repository with name '{name}' does not exist", 254)
        print(json.dumps({"repositories": [{"repositoryName": name}]}))
    elif args[:2] == ["ecr", "create-repository"]:
        print(json.dumps({"repository": {"repositoryName": args[args.index("--repository-name") + 1]}}))
    elif args[:2] == ["ecr", "get-login-password"]:
        print("stand-in-ecr-password")
    else:
        fail("stand-in aws: unexpected call " + " ".join(args), 2)
'''


class Project:
    """A throw-away git checkout holding build_push.sh and the files it reads."""

    def __init__(self, root: Path, bin_dir: Path, record: Path):
        self.root = root
        self.bin_dir = bin_dir
        self.record = record

    def run(self, *args: str, tools: tuple[str, ...] = ("docker", "aws"), **fake: str) -> subprocess.CompletedProcess:
        for tool in ("docker", "aws"):
            path = self.bin_dir / tool
            path.unlink(missing_ok=True)
            if tool in tools:
                path.write_text(f"#!{sys.executable}\n{STAND_IN}")
                path.chmod(0o755)
        self.record.write_text("")
        env = {"PATH": str(self.bin_dir), "HOME": str(self.root), "FAKE_RECORD": str(self.record)}
        for key, value in fake.items():
            # aws_region / aws_default_region set the real variables; the rest configure the stand-ins.
            env[key.upper() if key.startswith("aws_") else f"FAKE_{key.upper()}"] = value
        return subprocess.run(
            [shutil.which("bash"), str(self.root / "scripts" / "build_push.sh"), *args],
            env=env, capture_output=True, text=True, timeout=60,
        )

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def commands(self) -> list[list[str]]:
        return [[c["tool"], *c["args"]] for c in self.calls()]

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.root), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "build_push.sh", root / "scripts" / "build_push.sh")
    shutil.copytree(REPO / "containers", root / "containers")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    git = ["git", "-C", str(root), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], check=True)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run build_push.sh"
        (bin_dir / tool).symlink_to(found)
    return Project(root, bin_dir, tmp_path / "calls.jsonl")


def versions(root: Path) -> list[str]:
    lines = (root / "containers" / "versions.env").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def pins(root: Path, name: str) -> list[str]:
    lines = (root / "containers" / name).read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


BUILDX = ("docker", "buildx", "build", "--platform", "linux/amd64", "--provenance=false", "--output", "type=docker")


def expected_build(project: Project, name: str, repository: str, tag: str, extra: tuple[str, ...] = (), *,
                   flavour: str = "cuda", registry: str | None = REGISTRY, builder: tuple[str, ...] = BUILDX,
                   latest: str = "latest") -> list[str]:
    lines = versions(project.root) + (pins(project.root, "cpu.env") if flavour == "cpu" else [])
    build_args = [item for line in lines for item in ("--build-arg", line)]
    for line in extra:
        build_args += ["--build-arg", line]
    build_args += ["--build-arg", "VERSION=0.1.0", "--build-arg", f"GIT_REVISION={project.git('rev-parse', 'HEAD')}"]
    uri = f"{registry}/{repository}" if registry else repository
    return [
        *builder, "--file", str(project.root / "containers" / "Dockerfile"), "--target", name, *build_args,
        "--tag", f"{uri}:{tag}", "--tag", f"{uri}:{latest}", str(project.root),
    ]


PROBE = ["docker", "buildx", "version"]


def describe(name: str) -> list[str]:
    return ["aws", "ecr", "describe-repositories", "--region", REGION, "--registry-id", ACCOUNT, "--repository-names", name]


def create(name: str) -> list[str]:
    return ["aws", "ecr", "create-repository", "--region", REGION, "--registry-id", ACCOUNT, "--repository-name", name,
            "--image-scanning-configuration", "scanOnPush=true", "--image-tag-mutability", "MUTABLE"]


def uri_lines(train: str, serve: str) -> list[str]:
    return [f"TRAIN_IMAGE_URI={REGISTRY}/{train}", f"SERVE_IMAGE_URI={REGISTRY}/{serve}"]


def test_full_run_creates_only_the_missing_repository_logs_in_builds_and_pushes(project):
    result = project.run("--region", REGION, "--tag", "v1", existing_repos="detector-serve")
    assert result.returncode == 0, result.stderr

    assert project.commands() == [
        ["docker", "info"],
        PROBE,
        ["aws", "sts", "get-caller-identity", "--query", "Account", "--output", "text"],
        describe("detector-train"),
        create("detector-train"),
        describe("detector-serve"),
        ["aws", "ecr", "get-login-password", "--region", REGION],
        ["docker", "login", "--username", "AWS", "--password-stdin", REGISTRY],
        expected_build(project, "train", "detector-train", "v1"),
        expected_build(project, "serve", "detector-serve", "v1"),
        ["docker", "push", f"{REGISTRY}/detector-train:v1"],
        ["docker", "push", f"{REGISTRY}/detector-train:latest"],
        ["docker", "push", f"{REGISTRY}/detector-serve:v1"],
        ["docker", "push", f"{REGISTRY}/detector-serve:latest"],
    ]
    assert result.stdout.splitlines() == uri_lines("detector-train:v1", "detector-serve:v1")


def test_password_goes_through_stdin_never_the_command_line(project):
    result = project.run("--region", REGION, "--account", ACCOUNT, "--tag", "v1", existing_repos="detector-train,detector-serve")
    assert result.returncode == 0, result.stderr
    calls = project.calls()
    login = [c for c in calls if c["tool"] == "docker" and c["args"][0] == "login"]
    assert [c["stdin"].strip() for c in login] == [TOKEN]
    assert not any(TOKEN in arg for c in calls for arg in c["args"])
    assert TOKEN not in result.stdout + result.stderr


def test_existing_repositories_are_not_created_and_names_tags_are_configurable(project):
    result = project.run("--region", REGION, "--account", ACCOUNT, "--tag", "2026-11-26.1",
                         "--train-repo", "team/d2-train", "--serve-repo", "team/d2-serve",
                         existing_repos="team/d2-train,team/d2-serve")
    assert result.returncode == 0, result.stderr
    commands = project.commands()
    assert not any(c[:3] == ["aws", "ecr", "create-repository"] for c in commands)
    assert [c for c in commands if c[:2] == ["aws", "sts"]] == []  # --account given: no STS call
    assert expected_build(project, "train", "team/d2-train", "2026-11-26.1") in commands
    assert result.stdout.splitlines() == uri_lines("team/d2-train:2026-11-26.1", "team/d2-serve:2026-11-26.1")


def test_default_tag_is_the_git_short_revision_marked_dirty_with_uncommitted_changes(project):
    short = project.git("rev-parse", "--short", "HEAD")
    clean = project.run("--region", REGION, "--account", ACCOUNT, "--no-push")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines() == uri_lines(f"detector-train:{short}", f"detector-serve:{short}")

    with open(project.root / "pyproject.toml", "a") as f:
        f.write("\n# local edit\n")
    dirty = project.run("--region", REGION, "--account", ACCOUNT, "--no-push")
    assert dirty.returncode == 0, dirty.stderr
    assert dirty.stdout.splitlines() == uri_lines(f"detector-train:{short}-dirty", f"detector-serve:{short}-dirty")


def test_no_push_builds_both_images_without_touching_aws(project):
    result = project.run("--region", REGION, "--account", ACCOUNT, "--tag", "v2", "--no-push", tools=("docker",))
    assert result.returncode == 0, result.stderr
    assert project.commands() == [
        ["docker", "info"],
        PROBE,
        expected_build(project, "train", "detector-train", "v2"),
        expected_build(project, "serve", "detector-serve", "v2"),
    ]
    assert result.stdout.splitlines() == uri_lines("detector-train:v2", "detector-serve:v2")


def test_dry_run_runs_nothing_and_prints_every_command(project):
    result = project.run("--dry-run", "--region", REGION, "--account", ACCOUNT, "--tag", "v3", tools=())
    assert result.returncode == 0, result.stderr
    assert project.commands() == []
    printed = [line[2:] for line in result.stderr.splitlines() if line.startswith("+ ")]
    assert printed == [
        " ".join(describe("detector-train")),
        " ".join(create("detector-train")),
        " ".join(describe("detector-serve")),
        " ".join(create("detector-serve")),
        f"aws ecr get-login-password --region {REGION} | docker login --username AWS --password-stdin {REGISTRY}",
        *[" ".join(cmd).replace(";", "\\;") for cmd in (
            expected_build(project, "train", "detector-train", "v3"),
            expected_build(project, "serve", "detector-serve", "v3"),
        )],
        f"docker push {REGISTRY}/detector-train:v3",
        f"docker push {REGISTRY}/detector-train:latest",
        f"docker push {REGISTRY}/detector-serve:v3",
        f"docker push {REGISTRY}/detector-serve:latest",
    ]
    assert result.stdout.splitlines() == uri_lines("detector-train:v3", "detector-serve:v3")


def test_dry_run_asks_sts_for_the_account_when_none_is_given(project):
    result = project.run("--dry-run", "--tag", "v3", tools=("aws",), aws_region=REGION, account="210987654321")
    assert result.returncode == 0, result.stderr
    assert project.commands() == [["aws", "sts", "get-caller-identity", "--query", "Account", "--output", "text"]]
    assert result.stdout.splitlines()[-1] == f"SERVE_IMAGE_URI=210987654321.dkr.ecr.{REGION}.amazonaws.com/detector-serve:v3"


def test_build_arg_overrides_follow_the_pins_so_they_win(project):
    override = "DETECTRON2_COMMIT=0123456789abcdef0123456789abcdef01234567"
    result = project.run("--region", REGION, "--account", ACCOUNT, "--tag", "v4", "--no-push", "--build-arg", override)
    assert result.returncode == 0, result.stderr
    assert expected_build(project, "serve", "detector-serve", "v4", extra=(override,)) in project.commands()


def test_region_comes_from_the_environment_then_the_cli_configuration(project):
    from_env = project.run("--account", ACCOUNT, "--tag", "v5", "--no-push", aws_default_region="us-west-2")
    assert from_env.returncode == 0, from_env.stderr
    assert ".dkr.ecr.us-west-2.amazonaws.com/" in from_env.stdout

    from_config = project.run("--account", ACCOUNT, "--tag", "v5", "--no-push", configured_region="ap-southeast-2")
    assert from_config.returncode == 0, from_config.stderr
    assert ".dkr.ecr.ap-southeast-2.amazonaws.com/" in from_config.stdout


def test_china_regions_use_their_own_registry_domain(project):
    result = project.run("--region", "cn-north-1", "--account", ACCOUNT, "--tag", "v6", "--no-push")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"TRAIN_IMAGE_URI={ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/detector-train:v6"


@pytest.mark.parametrize(
    ("tools", "fake", "message"),
    [
        (("aws",), {}, "docker is not installed or not on PATH"),
        (("docker",), {}, "the AWS CLI (aws) is not installed or not on PATH"),
        (("docker", "aws"), {"docker_down": "1"}, "cannot reach the Docker daemon"),
        (("docker", "aws"), {"sts_fail": "1"}, "not logged in to AWS: 'aws sts get-caller-identity' failed (Unable to locate credentials"),
    ],
    ids=["docker-missing", "aws-missing", "docker-daemon-down", "aws-not-logged-in"],
)
def test_missing_tools_and_credentials_stop_before_anything_changes(project, tools, fake, message):
    result = project.run("--region", REGION, "--tag", "v1", tools=tools, **fake)
    assert result.returncode != 0
    assert f"build_push.sh: error: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any("build" in c[1:3] or c[1] in ("push", "login") or c[1:3] == ["ecr", "create-repository"]
                   for c in project.commands())
    assert result.stdout == ""


def test_failed_login_stops_before_building(project):
    result = project.run("--region", REGION, "--account", ACCOUNT, "--tag", "v1",
                         existing_repos="detector-train,detector-serve", login_fail="1")
    assert result.returncode != 0
    assert f"docker login to {REGISTRY} failed" in result.stderr
    assert not any("build" in c[1:3] or c[1] == "push" for c in project.commands())
    assert result.stdout == ""


def test_repository_lookup_errors_other_than_not_found_are_reported_not_papered_over(project):
    result = project.run("--region", REGION, "--account", ACCOUNT, "--tag", "v1", describe_error="1")
    assert result.returncode != 0
    assert "cannot look up ECR repository detector-train in eu-west-1: An error occurred (AccessDeniedException)" in result.stderr
    assert not any(c[1:3] == ["ecr", "create-repository"] for c in project.commands())


def test_a_failed_build_pushes_nothing_and_prints_no_uris(project):
    result = project.run("--region", REGION, "--account", ACCOUNT, "--tag", "v1",
                         existing_repos="detector-train,detector-serve", build_fail="1")
    assert result.returncode != 0
    assert "failed to solve" in result.stderr
    assert not any(c[1] == "push" for c in project.commands())
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--frobnicate",), "unknown option '--frobnicate'"),
        (("--region",), "option --region needs a value"),
        (("--region", "--no-push"), "option --region needs a value"),
        (("--region", "Europe"), "--region 'Europe' does not look like an AWS region"),
        (("--account", "12345"), "account id '12345' is not a 12-digit AWS account id"),
        (("--tag", "-bad"), "--tag '-bad' is not a valid image tag"),
        (("--train-repo", "Detector_Train"), "'Detector_Train' is not a valid ECR repository name"),
        (("--build-arg", "lowercase=1"), "--build-arg 'lowercase=1': expected KEY=VALUE"),
        (("--flavour", "rocm"), "--flavour 'rocm': expected cuda or cpu"),
        (("--network", "host;rm"), "--network 'host;rm' is not a network name"),
    ],
)
def test_bad_options_get_specific_errors(project, args, message):
    defaults = {"--region": REGION, "--account": ACCOUNT}
    full = list(args)
    for option, value in defaults.items():
        if option not in args:
            full += [option, value]
    result = project.run(*full, "--no-push")
    assert result.returncode == 1
    assert f"build_push.sh: error: {message}" in result.stderr
    assert not any("build" in c[1:3] for c in project.commands())


def test_no_region_anywhere_is_an_error(project):
    result = project.run("--account", ACCOUNT, "--no-push")
    assert result.returncode == 1
    assert "no AWS region: pass --region" in result.stderr


def test_help_describes_every_option(project):
    result = project.run("--help", tools=())
    assert result.returncode == 0
    for option in ("--region", "--account", "--train-repo", "--serve-repo", "--tag", "--build-arg", "--no-push", "--dry-run",
                   "--flavour", "--network", "--local"):
        assert option in result.stdout
    assert "set -euo" not in result.stdout


def test_script_is_strict_and_executable():
    script = REPO / "scripts" / "build_push.sh"
    assert os.access(script, os.X_OK)
    assert "\nset -euo pipefail\n" in script.read_text()


def test_the_cpu_flavour_passes_cpu_env_after_the_pins_and_tags_with_cpu(project):
    short = project.git("rev-parse", "--short", "HEAD")
    result = project.run("--region", REGION, "--account", ACCOUNT, "--flavour", "cpu",
                         existing_repos="detector-train,detector-serve")
    assert result.returncode == 0, result.stderr
    tag = f"{short}-cpu"
    commands = project.commands()
    assert expected_build(project, "train", "detector-train", tag, flavour="cpu", latest="latest-cpu") in commands
    assert expected_build(project, "serve", "detector-serve", tag, flavour="cpu", latest="latest-cpu") in commands
    assert [c[2] for c in commands if c[1] == "push"] == [
        f"{REGISTRY}/detector-train:{tag}", f"{REGISTRY}/detector-train:latest-cpu",
        f"{REGISTRY}/detector-serve:{tag}", f"{REGISTRY}/detector-serve:latest-cpu",
    ]
    assert result.stdout.splitlines() == uri_lines(f"detector-train:{tag}", f"detector-serve:{tag}")


def test_local_builds_local_names_without_aws_region_or_account(project):
    result = project.run("--local", "--flavour", "cpu", "--tag", "cpu", "--network", "host", tools=("docker",))
    assert result.returncode == 0, result.stderr
    with_network = (*BUILDX, "--network", "host")
    assert project.commands() == [
        ["docker", "info"],
        PROBE,
        expected_build(project, "train", "detector-train", "cpu", flavour="cpu", registry=None, builder=with_network,
                       latest="latest-cpu"),
        expected_build(project, "serve", "detector-serve", "cpu", flavour="cpu", registry=None, builder=with_network,
                       latest="latest-cpu"),
    ]
    assert result.stdout.splitlines() == ["TRAIN_IMAGE_URI=detector-train:cpu", "SERVE_IMAGE_URI=detector-serve:cpu"]


def test_a_client_older_than_23_without_buildx_builds_with_its_classic_buildkit(project):
    result = project.run("--local", "--tag", "v7", tools=("docker",), no_buildx="1", client_version="20.10.24+dfsg1",
                         build_env="1")
    assert result.returncode == 0, result.stderr
    classic = ("docker", "build", "--platform", "linux/amd64")
    assert project.commands()[-1] == expected_build(project, "serve", "detector-serve", "v7", registry=None, builder=classic)
    # BuildKit, not the legacy builder (which cannot run RUN --mount).
    assert "DOCKER_BUILDKIT=1" in result.stderr


def test_a_newer_client_without_buildx_is_refused_with_what_to_do(project):
    result = project.run("--local", "--tag", "v8", tools=("docker",), no_buildx="1", client_version="28.2.2")
    assert result.returncode == 1
    assert "build_push.sh: error: docker (client 28.2.2) has no buildx plugin" in result.stderr
    assert "scripts/engine.sh up" in result.stderr
    assert not any("build" in c[1:3] for c in project.commands())


def test_the_docker_client_can_be_named_by_the_docker_variable(project):
    own = project.bin_dir / "engine-docker"
    result = project.run("--local", "--tag", "v9", tools=("docker",))
    (project.bin_dir / "docker").rename(own)
    result = subprocess.run([shutil.which("bash"), str(project.root / "scripts" / "build_push.sh"), "--local", "--tag", "v9"],
                            env={"PATH": str(project.bin_dir), "HOME": str(project.root), "FAKE_RECORD": str(project.record),
                                 "DOCKER": str(own)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert {c["tool"] for c in project.calls()} == {"docker", "engine-docker"}
    assert project.calls()[-1]["args"][:2] == ["buildx", "build"] and project.calls()[-1]["tool"] == "engine-docker"
