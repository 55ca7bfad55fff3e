"""A small reader for the project's Dockerfiles: instructions grouped into build stages."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    value: str
    flags: list[str] = field(default_factory=list)

    def exec_form(self) -> list[str] | None:
        """The JSON-array form of ENTRYPOINT/CMD/SHELL, or None for the shell form."""
        try:
            value = json.loads(self.value)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


@dataclass
class Stage:
    base: str
    name: str | None
    text: str
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def args(self) -> dict[str, str]:
        return arg_defaults(self.all("ARG"))

    def run_commands(self) -> str:
        return "\n".join(i.value for i in self.all("RUN"))

    def apt_packages(self) -> set[str]:
        packages: set[str] = set()
        for command in re.findall(r"apt-get install ([^&|;]+)", self.run_commands()):
            packages.update(word for word in command.split() if not word.startswith("-"))
        return packages


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"{self.path}: no stage named {name!r}")

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for instruction in instructions:
        name, _, default = instruction.value.partition("=")
        defaults[name] = default[1:-1] if default[:1] == default[-1:] == '"' and len(default) > 1 else default
    return defaults


def _logical_lines(text: str) -> list[tuple[str, str]]:
    """(instruction line with continuations joined, its raw text including comments above it)."""
    lines: list[tuple[str, str]] = []
    current: list[str] = []
    raw: list[str] = []
    for line in text.splitlines():
        raw.append(line)
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        lines.append((" ".join(part for part in current if part), "\n".join(raw)))
        current, raw = [], []
    assert not current, "Dockerfile ends inside a continued line"
    return lines


def parse(path: Path) -> Dockerfile:
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for line, raw in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
        instruction = Instruction(keyword, rest.strip(), flags)
        if keyword == "FROM":
            words = shlex.split(instruction.value)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name, text=raw, instructions=[instruction]))
        elif not stages:
            assert keyword == "ARG", f"{path}: only ARG may come before the first FROM, found {keyword}"
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
            stages[-1].text += "\n" + raw
    return Dockerfile(path, arg_defaults(global_args), stages)


def resolve(reference: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], reference)


# --- what a build of one target runs, with build arguments applied ---------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_STAGE_FLAG = re.compile(r"(--from=|\bfrom=)([\w.-]+)")


def _substitute(text: str, scope: dict[str, str]) -> str:
    """${NAME} and $NAME of build arguments in scope replaced by their values; anything else (shell
    variables, ${NAME#pattern}) left as written, as the shell sees it at build time."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return scope[name] if name in scope else match.group(0)

    return _VARIABLE.sub(value, text)


def effective_build(dockerfile: Dockerfile, target: str, build_args: dict[str, str] | None = None) -> dict:
    """The instructions a build of ``target`` runs, as BuildKit resolves them: the base image
    references and every ARG substituted, the chain of stages a stage builds FROM inlined in order,
    and each stage another stage reads (COPY --from, RUN --mount from=) named by the digest of its own
    effective build. ARG lines themselves produce nothing and are left out; stage names, comments and
    line breaks do not matter. Two Dockerfiles with equal results build the same images.

    Returns {"target": [lines], "stages": {digest: [lines]}}."""
    import hashlib

    build_args = build_args or {}
    globals_ = {**dockerfile.global_args, **{k: v for k, v in build_args.items() if k in dockerfile.global_args}}
    by_name = {stage.name.lower(): stage for stage in dockerfile.stages if stage.name}
    stages: dict[str, list[str]] = {}

    def lines_of(stage: Stage) -> list[str]:
        base = resolve(stage.base, globals_)
        lines = lines_of(by_name[base.lower()]) if base.lower() in by_name else [f"FROM {base}"]
        scope: dict[str, str] = {}
        for instruction in stage.instructions[1:]:
            if instruction.keyword == "ARG":
                name, has_default, default = instruction.value.partition("=")
                if name in build_args:
                    scope[name] = build_args[name]
                elif has_default:
                    scope[name] = arg_defaults([instruction])[name]
                elif name in globals_:
                    scope[name] = globals_[name]
                continue
            flags = [_STAGE_FLAG.sub(lambda m: m.group(1) + digest_of(m.group(2)), _substitute(f, scope))
                     for f in instruction.flags]
            lines.append(" ".join([instruction.keyword, *flags, _substitute(instruction.value, scope)]))
        return lines

    def digest_of(name: str) -> str:
        if name.lower() not in by_name:
            return name  # an image, not a stage
        lines = lines_of(by_name[name.lower()])
        digest = "stage-" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
        stages[digest] = lines
        return digest

    return {"target": lines_of(by_name[target.lower()]), "stages": stages}
