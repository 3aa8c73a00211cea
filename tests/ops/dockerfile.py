"""Just enough Dockerfile and .dockerignore reading for the ops tests."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.ops.metric_contract import REPO_ROOT

DOCKERFILES = (REPO_ROOT / "docker" / "Dockerfile", REPO_ROOT / "docker" / "Dockerfile.cuda")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of ENTRYPOINT/CMD, or of HEALTHCHECK after its options."""
        return json.loads(self.arguments[self.arguments.index("["):])

    def words(self) -> list[str]:
        return shlex.split(self.arguments)


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    instructions: tuple[Instruction, ...]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        instructions, logical = [], ""
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue  # comments, parser directives, and comment lines inside a continuation
            if stripped.endswith("\\"):
                logical += stripped[:-1] + " "
                continue
            keyword, _, arguments = (logical + stripped).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
            logical = ""
        return cls(path, tuple(instructions))

    def stages(self) -> list[list[Instruction]]:
        stages: list[list[Instruction]] = []
        for instruction in self.instructions:
            if instruction.keyword == "FROM":
                stages.append([])
            if stages:
                stages[-1].append(instruction)
        return stages

    def runtime(self) -> list[Instruction]:
        """The last stage: what the image runs."""
        return self.stages()[-1]

    def runtime_one(self, keyword: str) -> Instruction:
        found = [i for i in self.runtime() if i.keyword == keyword]
        assert len(found) == 1, f"{self.path.name}: expected one {keyword} in the runtime stage, found {len(found)}"
        return found[0]

    def runtime_env(self) -> dict[str, str]:
        env = {}
        for instruction in self.runtime():
            if instruction.keyword == "ENV":
                env.update(word.split("=", 1) for word in instruction.words())
        return env

    def arg_defaults(self) -> dict[str, str]:
        return dict(w.split("=", 1) for i in self.instructions if i.keyword == "ARG" for w in i.words() if "=" in w)

    def context_sources(self) -> list[str]:
        """COPY/ADD sources taken from the build context (not from another stage)."""
        sources = []
        for instruction in self.instructions:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            words = instruction.words()
            if any(w.startswith("--from=") for w in words):
                continue
            sources += [w for w in words if not w.startswith("--")][:-1]
        return sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher semantics: `**` spans folders, `*` and `?` stay within one."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i:end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


class DockerIgnore:
    """The build-context filter: the last matching pattern decides; a folder's match applies
    to everything below it."""

    def __init__(self, text: str) -> None:
        self.patterns = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            self.patterns.append((negated, _pattern_regex(pattern)))

    @classmethod
    def read(cls, path: Path = REPO_ROOT / ".dockerignore") -> DockerIgnore:
        return cls(path.read_text())

    def excludes(self, relative_path: str) -> bool:
        parts = relative_path.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negated, regex in self.patterns:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not negated
        return excluded
