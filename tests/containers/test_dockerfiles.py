"""Static checks of both Dockerfiles, the pins and the build context (no Docker engine needed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from dockerfile_reader import Dockerfile, parse, resolve

REPO = Path(__file__).resolve().parents[2]
IMAGES = ("train", "serve")
BUILD_STAGE = "detectron2-build"
# SageMaker GPU instance families: V100, T4, A100, A10G, L4/L40S, H100/H200.
SAGEMAKER_ARCHS = {"7.0", "7.5", "8.0", "8.6", "8.9", "9.0"}
COMPILERS = {"gcc", "g++", "clang", "build-essential", "make", "cmake", "ninja-build", "git", "python3-dev"}


def pins() -> dict[str, str]:
    lines = (REPO / "containers" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def constraints() -> dict[str, str]:
    lines = (REPO / "containers" / "constraints.txt").read_text().splitlines()
    pinned = {}
    for line in lines:
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[a-z0-9.-]+", name) and version, f"constraints.txt: {line!r} is not name==version"
            pinned[name] = version
    return pinned


@pytest.fixture(scope="module", params=IMAGES)
def image(request) -> tuple[str, Dockerfile]:
    return request.param, parse(REPO / "containers" / request.param / "Dockerfile")


def test_each_image_is_a_build_stage_then_a_final_stage_named_after_it(image):
    name, dockerfile = image
    assert [stage.name for stage in dockerfile.stages] == [BUILD_STAGE, name]


def test_dockerfile_defaults_equal_the_pins_in_versions_env(image):
    _, dockerfile = image
    declared = {**dockerfile.global_args}
    for stage in dockerfile.stages:
        for key, value in stage.args().items():
            if key in pins():
                assert value == pins()[key], f"{dockerfile.path}: ARG {key} default differs from versions.env"
            declared.setdefault(key, value)
    for key, value in pins().items():
        assert declared.get(key) == value, f"{dockerfile.path}: versions.env's {key} is not an ARG with that default"


def test_base_images_are_pinned_by_tag_and_digest_devel_to_build_runtime_to_run(image):
    _, dockerfile = image
    build_base = resolve(dockerfile.stage(BUILD_STAGE).base, dockerfile.global_args)
    final_base = resolve(dockerfile.final.base, dockerfile.global_args)
    pattern = r"nvidia/cuda:(\d+\.\d+\.\d+)-(devel|runtime)-(ubuntu\d+\.\d+)@sha256:[0-9a-f]{64}"
    build_match, final_match = re.fullmatch(pattern, build_base), re.fullmatch(pattern, final_base)
    assert build_match and build_match.group(2) == "devel", build_base
    assert final_match and final_match.group(2) == "runtime", final_base
    # Same CUDA release and OS on both sides of the COPY --from.
    assert build_match.group(1, 3) == final_match.group(1, 3)


def test_torch_is_the_cuda_build_matching_the_base_image_and_the_cpu_test_environment():
    values = pins()
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.", values["CUDA_DEVEL_IMAGE"]).groups()
    tag = "cu" + "".join(cuda)
    assert values["TORCH_VERSION"].endswith("+" + tag)
    assert values["TORCHVISION_VERSION"].endswith("+" + tag)
    assert values["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/{tag}"
    makefile = (REPO / "Makefile").read_text()
    assert f"torch=={values['TORCH_VERSION'].split('+')[0]} " in makefile
    assert f"torchvision=={values['TORCHVISION_VERSION'].split('+')[0]}" in makefile


def test_detectron2_is_compiled_at_the_pinned_commit_for_every_sagemaker_gpu_family(image):
    _, dockerfile = image
    values = pins()
    assert re.fullmatch(r"[0-9a-f]{40}", values["DETECTRON2_COMMIT"])
    assert set(values["TORCH_CUDA_ARCH_LIST"].split(";")) >= SAGEMAKER_ARCHS
    build = dockerfile.stage(BUILD_STAGE).run_commands()
    assert 'git fetch -q --depth 1 https://github.com/facebookresearch/detectron2.git "${DETECTRON2_COMMIT}"' in build
    assert 'test "$(git rev-parse HEAD)" = "${DETECTRON2_COMMIT}"' in build
    assert 'FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}"' in build
    assert "python setup.py -q bdist_wheel --dist-dir /wheels" in build
    assert "cuobjdump --list-elf" in build  # every listed architecture must be in the extension
    torch_install = '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"'
    assert torch_install in build


def test_both_images_share_one_byte_identical_build_stage_so_detectron2_compiles_once():
    train, serve = (parse(REPO / "containers" / name / "Dockerfile") for name in IMAGES)
    assert train.global_args == serve.global_args
    assert train.stage(BUILD_STAGE).text == serve.stage(BUILD_STAGE).text


def test_final_stage_carries_the_compiled_wheel_and_checks_the_cuda_ops_at_build_time(image):
    _, dockerfile = image
    final = dockerfile.final
    copies = [i for i in final.all("COPY") if f"--from={BUILD_STAGE}" in i.flags]
    assert [c.value for c in copies] == ["/opt/venv /opt/venv"]
    install = [i for i in final.all("RUN") if "pip install" in i.value]
    assert len(install) == 1
    assert f"--mount=type=bind,from={BUILD_STAGE},source=/wheels,target=/tmp/wheels" in install[0].flags
    assert "/tmp/wheels/detectron2-*.whl" in install[0].value
    assert "-c /tmp/detector/containers/constraints.txt" in install[0].value
    assert "import torch, detectron2._C as ops; assert ops.has_cuda()" in install[0].value
    assert "detector --version" in install[0].value
    assert "setup.py" not in final.run_commands(), "the final stage must not rebuild detectron2"


def test_final_stage_has_no_compilers(image):
    _, dockerfile = image
    assert dockerfile.final.apt_packages() & COMPILERS == set()
    assert "devel" not in resolve(dockerfile.final.base, dockerfile.global_args)


def test_entrypoint_is_exec_form_detector_so_the_command_is_pid_1(image):
    name, dockerfile = image
    (entrypoint,) = dockerfile.final.all("ENTRYPOINT")
    assert entrypoint.exec_form() == ["detector"]
    (cmd,) = dockerfile.final.all("CMD")
    assert cmd.exec_form() == [name]
    for stage in dockerfile.stages:
        (shell,) = stage.all("SHELL")
        assert shell.exec_form() == ["/bin/bash", "-o", "pipefail", "-c"]


def test_serve_image_has_java_the_serving_extra_and_port_8080():
    serve = parse(REPO / "containers" / "serve" / "Dockerfile").final
    assert "openjdk-17-jre-headless" in serve.apt_packages()
    assert '"/tmp/detector[serve]"' in serve.run_commands()
    assert [i.value for i in serve.all("EXPOSE")] == ["8080"]
    assert "useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin detector" in serve.run_commands()


def test_train_image_has_neither_java_nor_the_serving_extra():
    train = parse(REPO / "containers" / "train" / "Dockerfile").final
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
    _, dockerfile = image
    (label,) = dockerfile.final.all("LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in label.value
    assert 'org.opencontainers.image.revision="${GIT_REVISION}"' in label.value
    assert {"VERSION", "GIT_REVISION"} <= dockerfile.final.args().keys()


def test_no_credentials_are_baked_in(image):
    _, dockerfile = image
    text = dockerfile.path.read_text()
    for stage in dockerfile.stages:
        for instruction in stage.all("ENV") + stage.all("ARG"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", instruction.value, re.I), instruction.value
    assert not re.search(r"AKIA[0-9A-Z]{16}|\.aws/|aws_secret", text, re.I)


def test_build_context_holds_only_what_the_images_use():
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*", "the context starts empty and lists what goes in"
    included = {rule[1:] for rule in rules if rule.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "src/", "containers/constraints.txt"}
    for name in IMAGES:
        text = (REPO / "containers" / name / "Dockerfile").read_text()
        # Everything the Dockerfiles read from the context is included.
        assert "source=containers/constraints.txt" in text and "source=.,target=/tmp/detector" in text
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


def test_train_image_installs_the_toolkit_from_a_wheel_built_in_the_build_stage_and_serve_does_not():
    train, serve = (parse(REPO / "containers" / name / "Dockerfile") for name in IMAGES)
    # An sdist with a C extension: compiled where the compiler is, never in the final stage.
    build = train.stage(BUILD_STAGE).run_commands()
    assert "pip wheel --no-deps -c /tmp/constraints.txt --wheel-dir /wheels sagemaker-training" in build
    (install,) = [i for i in train.final.all("RUN") if "pip install" in i.value]
    assert "/tmp/wheels/sagemaker_training-*.whl" in install.value
    assert "sagemaker_training" not in serve.final.run_commands() and "[train]" not in serve.final.run_commands()


def test_the_toolkits_train_script_is_not_what_docker_run_image_train_runs():
    """sagemaker-training installs a console script named `train`; the exec-form ENTRYPOINT makes
    SageMaker's `docker run IMAGE train` run `detector train` all the same."""
    import importlib.metadata

    (script,) = importlib.metadata.entry_points(group="console_scripts", name="train")
    assert script.value == "sagemaker_training.cli.train:main"
    final = parse(REPO / "containers" / "train" / "Dockerfile").final
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    assert entrypoint.exec_form() + cmd.exec_form() == ["detector", "train"]
