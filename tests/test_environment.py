"""pyproject.toml (pip) and environment.yml (conda) list the same dependencies."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from PyPI names
NOT_DEPENDENCIES = {"python", "pip"}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def pip_dependencies() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    return dict(_name_and_spec(r) for r in reqs)


def conda_dependencies() -> dict[str, str]:
    deps, in_dependencies = {}, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\S", line):  # a top-level key: name, channels, dependencies
            in_dependencies = line.startswith("dependencies:")
            continue
        item = re.match(r"^\s+-\s+([^#\s][^#]*?)\s*(#.*)?$", line)
        if not in_dependencies or not item or item.group(1).endswith(":"):
            continue
        name, spec = _name_and_spec(item.group(1))
        if name in NOT_DEPENDENCIES:
            continue
        deps[CONDA_TO_PIP.get(name, name)] = spec
    return deps


def test_same_packages_and_versions():
    pip, conda = pip_dependencies(), conda_dependencies()
    assert set(pip) == set(conda), f"only in pyproject: {set(pip) - set(conda)}; only in environment.yml: {set(conda) - set(pip)}"
    for name in pip:
        assert pip[name] == conda[name], f"{name}: pyproject says {pip[name]!r}, environment.yml says {conda[name]!r}"


def test_required_packages_present():
    required = {"jupyterlab", "torch", "torchvision", "matplotlib", "ipywidgets", "nbval", "numpy", "pycocotools", "tqdm"}
    assert required <= set(pip_dependencies())


def test_constraints_pin_a_version_the_ranges_allow():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
    deps = pip_dependencies()
    for name, version in pins.items():
        lower = deps[name].removeprefix(">=").split(",")[0]
        as_tuple = lambda v: tuple(int(x) for x in re.findall(r"\d+", v)[:3])  # noqa: E731
        assert as_tuple(version) >= as_tuple(lower), f"constraints.txt pins {name}=={version} below pyproject's {deps[name]}"
