"""Static checks of the Dockerfile, the pins, the flavours and the build context (no Docker engine needed).
tests/images builds and runs the images for real."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from dockerfile_reader import Dockerfile, Stage, effective_build, parse, resolve

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "containers" / "Dockerfile"
IMAGES = ("train", "serve")
BUILD_STAGE = "detectron2-build"
DETECTRON2_SOURCES = ("git", "git-cpu", "sdist")
# SageMaker GPU instance families: V100, T4, A100, A10G, L4/L40S, H100/H200.
SAGEMAKER_ARCHS = {"7.0", "7.5", "8.0", "8.6", "8.9", "9.0"}
COMPILERS = {"gcc", "g++", "clang", "build-essential", "make", "cmake", "ninja-build", "git", "python3-dev"}


def env_file(name: str) -> dict[str, str]:
    lines = (REPO / "containers" / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def pins() -> dict[str, str]:
    return env_file("versions.env")


def cpu_pins() -> dict[str, str]:
    """The CPU flavour's build arguments: versions.env, then cpu.env over it (scripts/build_push.sh's order)."""
    return {**pins(), **env_file("cpu.env")}


def constraints() -> dict[str, str]:
    lines = (REPO / "containers" / "constraints.txt").read_text().splitlines()
    pinned = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[a-z0-9.-]+", name) and version, f"constraints.txt: {line!r} is not name==version"
            pinned[name] = version
    return pinned


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE)


@pytest.fixture(scope="module", params=IMAGES)
def image(request, dockerfile) -> tuple[str, Stage]:
    return request.param, dockerfile.stage(request.param)


def test_one_dockerfile_builds_both_images_from_one_build_stage(dockerfile):
    names = [stage.name for stage in dockerfile.stages]
    assert names == ["python-build", "detectron2-source", "detectron2-git", "detectron2-git-cpu", "detectron2-sdist",
                     BUILD_STAGE, "train", "serve"]
    for name in IMAGES:
        copies = [i for i in dockerfile.stage(name).all("COPY") if i.flags]
        assert [c.flags for c in copies] == [[f"--from={BUILD_STAGE}"]], "each image copies from the one build stage"


def test_the_default_build_is_the_cuda_images_unchanged():
    """With no build argument, each target builds exactly what containers/train/Dockerfile and
    containers/serve/Dockerfile built before they became one file (cuda_default_build.json: the effective
    build of both, recorded from them): same bases, same steps, same arguments, in the same order."""
    recorded = json.loads((Path(__file__).parent / "cuda_default_build.json").read_text())
    for name in IMAGES:
        assert effective_build(parse(DOCKERFILE), name) == recorded[name], f"the default {name} image changed"


def test_the_recorded_default_build_would_notice_a_changed_pin():
    changed = effective_build(parse(DOCKERFILE), "serve", {"TORCH_VERSION": "2.14.0+cu126"})
    recorded = json.loads((Path(__file__).parent / "cuda_default_build.json").read_text())
    assert changed != recorded["serve"]


def test_dockerfile_defaults_equal_the_pins_in_versions_env(dockerfile):
    for key, value in pins().items():
        assert dockerfile.global_args.get(key) == value, f"{DOCKERFILE}: versions.env's {key} is not a global ARG with that default"
    for stage in dockerfile.stages:
        for key, value in stage.args().items():
            assert value == "" or key not in dockerfile.global_args or key in ("VERSION", "GIT_REVISION"), (
                f"stage {stage.name}: ARG {key} repeats a default; declare it without one to take the global pin"
            )


def test_every_flavour_key_is_a_build_argument(dockerfile):
    for key in env_file("cpu.env"):
        assert key in dockerfile.global_args, f"cpu.env's {key} is not a global ARG of {DOCKERFILE}"
    assert set(DETECTRON2_SOURCES) >= {pins()["DETECTRON2_SOURCE"], cpu_pins()["DETECTRON2_SOURCE"]}
    for source in DETECTRON2_SOURCES:
        dockerfile.stage(f"detectron2-{source}")  # DETECTRON2_SOURCE names the stage the build stage starts from
    assert dockerfile.stage(BUILD_STAGE).base == "detectron2-${DETECTRON2_SOURCE}"


def test_base_images_are_pinned_by_tag_and_digest_devel_to_build_runtime_to_run():
    values = pins()
    pattern = r"nvidia/cuda:(\d+\.\d+\.\d+)-(devel|runtime)-(ubuntu\d+\.\d+)@sha256:[0-9a-f]{64}"
    build_match, final_match = re.fullmatch(pattern, values["BUILD_IMAGE"]), re.fullmatch(pattern, values["RUNTIME_IMAGE"])
    assert build_match and build_match.group(2) == "devel", values["BUILD_IMAGE"]
    assert final_match and final_match.group(2) == "runtime", values["RUNTIME_IMAGE"]
    # Same CUDA release and OS on both sides of the COPY --from.
    assert build_match.group(1, 3) == final_match.group(1, 3)


def test_the_cpu_flavour_is_cpu_torch_on_a_pinned_slim_debian():
    values = cpu_pins()
    slim = r"debian:bookworm-slim@sha256:[0-9a-f]{64}"
    assert re.fullmatch(slim, values["BUILD_IMAGE"]) and values["RUNTIME_IMAGE"] == values["BUILD_IMAGE"]
    assert values["TORCH_VERSION"] == pins()["TORCH_VERSION"].split("+")[0] + "+cpu"
    assert values["TORCHVISION_VERSION"] == pins()["TORCHVISION_VERSION"].split("+")[0] + "+cpu"
    assert values["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert values["DETECTRON2_SOURCE"] == "git-cpu" and values["DETECTRON2_COMMIT"] == pins()["DETECTRON2_COMMIT"]
    assert "has_cuda" not in values["DETECTRON2_CHECK"]
    compile(values["DETECTRON2_CHECK"], "DETECTRON2_CHECK", "exec")


@pytest.mark.parametrize("flavour", ["cuda", "cpu", "cpu from the sdist"])
def test_each_flavour_builds_from_its_own_bases_and_sources(dockerfile, flavour):
    args = {"cuda": pins(), "cpu": cpu_pins(), "cpu from the sdist": {**cpu_pins(), "DETECTRON2_SOURCE": "sdist"}}[flavour]
    for name in IMAGES:
        build = effective_build(dockerfile, name, args)
        (stage,) = build["stages"].values()
        assert build["target"][0] == f"FROM {args['RUNTIME_IMAGE']}" and stage[0] == f"FROM {args['BUILD_IMAGE']}"
        steps = "\n".join(stage)
        assert f'--index-url "{args["TORCH_INDEX_URL"]}" "torch=={args["TORCH_VERSION"]}"' in steps
        assert ("cuobjdump" in steps) == (flavour == "cuda")
        assert ("FORCE_CUDA=1" in steps) == (flavour == "cuda") and ("FORCE_CUDA=0" in steps) == (flavour == "cpu")
        assert ("install_detectron2.py --wheel-dir /wheels" in steps) == (flavour == "cpu from the sdist")
        assert ("git fetch" in steps) != (flavour == "cpu from the sdist")
        check = args.get("DETECTRON2_CHECK", dockerfile.global_args["DETECTRON2_CHECK"])
        assert f'python -c "{check}"' in "\n".join(build["target"])


def test_torch_is_the_cuda_build_matching_the_base_image_and_the_cpu_test_environment():
    values = pins()
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.", values["BUILD_IMAGE"]).groups()
    tag = "cu" + "".join(cuda)
    assert values["TORCH_VERSION"].endswith("+" + tag)
    assert values["TORCHVISION_VERSION"].endswith("+" + tag)
    assert values["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/{tag}"
    makefile = (REPO / "Makefile").read_text()
    assert f"torch=={values['TORCH_VERSION'].split('+')[0]} " in makefile
    assert f"torchvision=={values['TORCHVISION_VERSION'].split('+')[0]}" in makefile


def test_detectron2_is_compiled_at_the_pinned_commit_for_every_sagemaker_gpu_family(dockerfile):
    values = pins()
    assert re.fullmatch(r"[0-9a-f]{40}", values["DETECTRON2_COMMIT"])
    assert set(values["TORCH_CUDA_ARCH_LIST"].split(";")) >= SAGEMAKER_ARCHS
    source = dockerfile.stage("detectron2-source").run_commands()
    assert values["DETECTRON2_REPO"] == "https://github.com/facebookresearch/detectron2.git"
    assert 'git fetch -q --depth 1 ${DETECTRON2_REPO} "${DETECTRON2_COMMIT}"' in source
    assert 'test "$(git rev-parse HEAD)" = "${DETECTRON2_COMMIT}"' in source
    build = dockerfile.stage("detectron2-git").run_commands()
    assert 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}"' in build
    assert "python setup.py -q bdist_wheel --dist-dir /wheels" in build
    assert "cuobjdump --list-elf" in build  # every listed architecture must be in the extension
    assert "python setup.py -q bdist_wheel --dist-dir /wheels" in dockerfile.stage("detectron2-git-cpu").run_commands()
    torch_install = '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"'
    assert torch_install in dockerfile.stage("python-build").run_commands()


def test_final_stage_carries_the_built_wheel_and_checks_detectron2_at_build_time(image):
    _, final = image
    copies = [i for i in final.all("COPY") if f"--from={BUILD_STAGE}" in i.flags]
    assert [c.value for c in copies] == ["/opt/venv /opt/venv"]
    install = [i for i in final.all("RUN") if "pip install" in i.value]
    assert len(install) == 1
    assert f"--mount=type=bind,from={BUILD_STAGE},source=/wheels,target=/tmp/wheels" in install[0].flags
    assert "/tmp/wheels/detectron2-*.whl" in install[0].value
    assert "-c /tmp/detector/containers/constraints.txt" in install[0].value
    assert 'python -c "${DETECTRON2_CHECK}"' in install[0].value
    assert "detector --version" in install[0].value
    assert "setup.py" not in final.run_commands(), "the final stage must not rebuild detectron2"
    assert "DETECTRON2_CHECK" in final.args()


def test_final_stage_has_no_compilers(image, dockerfile):
    _, final = image
    assert final.apt_packages() & COMPILERS == set()
    assert final.base == "${RUNTIME_IMAGE}"
    assert "devel" not in resolve(final.base, dockerfile.global_args)


def test_entrypoint_is_exec_form_detector_so_the_command_is_pid_1(image, dockerfile):
    name, final = image
    (entrypoint,) = final.all("ENTRYPOINT")
    assert entrypoint.exec_form() == ["detector"]
    (cmd,) = final.all("CMD")
    assert cmd.exec_form() == [name]
    for stage in (dockerfile.stage("python-build"), final):
        (shell,) = stage.all("SHELL")
        assert shell.exec_form() == ["/bin/bash", "-o", "pipefail", "-c"]


def test_serve_image_has_java_the_serving_extra_and_port_8080(dockerfile):
    serve = dockerfile.stage("serve")
    assert "openjdk-17-jre-headless" in serve.apt_packages()
    assert '"/tmp/detector[serve]"' in serve.run_commands()
    assert [i.value for i in serve.all("EXPOSE")] == ["8080"]
    assert "useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin detector" in serve.run_commands()


def test_train_image_has_neither_java_nor_the_serving_extra(dockerfile):
    train = dockerfile.stage("train")
    assert not any(p.startswith("openjdk") for p in train.apt_packages())
    assert "/tmp/detector[" not in train.run_commands()
    assert re.search(r"/tmp/detector(\s|$)", train.run_commands())


def test_serving_pins_agree_between_pyproject_and_constraints():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pinned = constraints()
    for requirement in pyproject["project"]["optional-dependencies"]["serve"]:
        name, _, version = requirement.partition("==")
        assert pinned[name] == version, f"{name}: pyproject pins {version}, constraints.txt {pinned.get(name)}"
    # detectron2's model zoo and sagemaker-inference import pkg_resources, which setuptools 81 removed.
    assert int(pinned["setuptools"].split(".")[0]) < 81
    assert not {"torch", "torchvision", "detectron2"} & pinned.keys()


def test_images_are_labelled_with_version_and_revision(image):
    _, final = image
    (label,) = final.all("LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in label.value
    assert 'org.opencontainers.image.revision="${GIT_REVISION}"' in label.value
    assert {"VERSION", "GIT_REVISION"} <= final.args().keys()


def test_no_credentials_are_baked_in(dockerfile):
    text = dockerfile.path.read_text()
    for stage in dockerfile.stages:
        for instruction in stage.all("ENV") + stage.all("ARG"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", instruction.value, re.I), instruction.value
    assert not re.search(r"AKIA[0-9A-Z]{16}|\.aws/|aws_secret", text, re.I)


def test_build_context_holds_only_what_the_images_use():
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*", "the context starts empty and lists what goes in"
    included = {rule[1:] for rule in rules if rule.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "src/", "containers/constraints.txt", "scripts/install_detectron2.py"}
    text = DOCKERFILE.read_text()
    # Everything the Dockerfile reads from the context is included.
    read = set(re.findall(r"\bsource=([^,\s]+)", text)) - {"/wheels"}
    assert read == {"containers/constraints.txt", "scripts/install_detectron2.py", "."}
    assert not re.search(r"^COPY (?!--from)", text, re.M), "context files come in through bind mounts only"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_closure(distribution: str) -> dict[str, str]:
    """Name -> installed version of ``distribution`` and everything it requires, here."""
    import importlib.metadata

    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    todo = [distribution]
    while todo:
        name = _normalized(todo.pop())
        if name in found:
            continue
        found[name] = importlib.metadata.version(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def test_training_pins_agree_between_pyproject_constraints_and_the_test_environment():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pinned = constraints()
    (requirement,) = pyproject["project"]["optional-dependencies"]["train"]
    name, _, version = requirement.partition("==")
    assert (name, pinned[name]) == ("sagemaker-training", version)
    # `make test` installs the extra, so the suite runs with the toolkit the image gets.
    assert "-e '.[serve,pipeline,train,dev]'" in (REPO / "Makefile").read_text()
    # The toolkit and what it pulls in: pinned for the image at the versions the test suite runs with
    # (pip itself comes with the virtualenv).
    closure = {n: v for n, v in _installed_closure(name).items() if n != "pip"}
    assert {n: pinned.get(n) for n in closure} == closure


def test_train_image_installs_the_toolkit_from_a_wheel_built_in_the_build_stage_and_serve_does_not(dockerfile):
    train, serve = dockerfile.stage("train"), dockerfile.stage("serve")
    # An sdist with a C extension: compiled where the compiler is, never in the final stage.
    build = dockerfile.stage(BUILD_STAGE).run_commands()
    assert "pip wheel --no-deps -c /tmp/constraints.txt --wheel-dir /wheels sagemaker-training" in build
    (install,) = [i for i in train.all("RUN") if "pip install" in i.value]
    assert "/tmp/wheels/sagemaker_training-*.whl" in install.value
    assert "sagemaker_training" not in serve.run_commands() and "[train]" not in serve.run_commands()


def test_the_toolkits_train_script_is_not_what_docker_run_image_train_runs():
    """sagemaker-training installs a console script named `train`; the exec-form ENTRYPOINT makes
    SageMaker's `docker run IMAGE train` run `detector train` all the same."""
    import importlib.metadata

    (script,) = importlib.metadata.entry_points(group="console_scripts", name="train")
    assert script.value == "sagemaker_training.cli.train:main"
    final = parse(DOCKERFILE).stage("train")
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    assert entrypoint.exec_form() + cmd.exec_form() == ["detector", "train"]
