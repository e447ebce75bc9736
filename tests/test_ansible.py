"""The Ansible role's static promises (ansible/roles/edged): argument specs in sync with the
defaults, one source for the unit, no_log wherever the Redis password is evaluated, and every
default prefixed `edged_`. ansible-lint and --syntax-check run in .ci/run (the `deploy` extra)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
ROLE = ANSIBLE / "roles" / "edged"
SECRET = re.compile(r"\bedged_redis_password(_src)?\b")
# Keys whose whole value is a Jinja expression; elsewhere only {{ }} and {% %} are evaluated.
EXPRESSION_KEYS = {"when", "that", "until", "changed_when", "failed_when", "loop"}
TYPES = {"str": str, "path": str, "int": int, "bool": bool, "list": list, "dict": dict}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _defaults() -> dict[str, Any]:
    return _yaml(ROLE / "defaults" / "main.yml")


def _specs() -> dict[str, Any]:
    return _yaml(ROLE / "meta" / "argument_specs.yml")["argument_specs"]


def test_defaults_are_prefixed() -> None:
    bad = [name for name in _defaults() if not name.startswith("edged_")]
    assert not bad, f"role defaults without the edged_ prefix: {bad}"


def test_argument_specs_match_defaults() -> None:
    """Every default is documented in the main entry point with the same default and a type
    that fits it, and the spec names nothing that has no default."""
    defaults = _defaults()
    options = _specs()["main"]["options"]
    assert set(options) == set(defaults), (
        f"only in defaults: {sorted(set(defaults) - set(options))}; "
        f"only in argument_specs: {sorted(set(options) - set(defaults))}"
    )
    for name, spec in options.items():
        assert spec.get("description"), f"{name}: no description"
        assert spec.get("default") == defaults[name], f"{name}: spec default differs from defaults"
        value = defaults[name]
        if isinstance(value, str) and "{{" in value:
            continue  # templated: its type is the rendered one's
        assert isinstance(value, TYPES[spec["type"]]), f"{name}: {value!r} is not a {spec['type']}"
        if "choices" in spec:
            assert value in spec["choices"], name


def test_other_entry_points_agree_with_main() -> None:
    main = _specs()["main"]["options"]
    for entry, body in _specs().items():
        for name, spec in body.get("options", {}).items():
            assert name in main, f"{entry}: {name} is not a role variable"
            assert spec["type"] == main[name]["type"] and spec.get("default") == main[name].get("default"), (
                f"{entry}: {name} differs from the main entry point"
            )


def test_version_default_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert _defaults()["edged_version"] == version


def _tasks(node: Any) -> list[dict[str, Any]]:
    """Every task in a task file, blocks flattened."""
    found: list[dict[str, Any]] = []
    for item in node or []:
        if not isinstance(item, dict):
            continue
        found.append(item)
        for key in ("block", "rescue", "always"):
            found.extend(_tasks(item.get(key)))
    return found


def _role_task_files() -> list[Path]:
    return sorted([*(ROLE / "tasks").glob("*.yml"), *(ROLE / "handlers").glob("*.yml")])


def _expressions(value: Any, key: str = "") -> list[str]:
    if isinstance(value, dict):
        return [e for k, v in value.items() if k not in ("block", "rescue", "always")
                for e in _expressions(v, str(k))]
    if isinstance(value, list):
        return [e for v in value for e in _expressions(v, key)]
    if not isinstance(value, str):
        return []
    if key in EXPRESSION_KEYS:
        return [value]
    return re.findall(r"\{\{.*?\}\}|\{%.*?%\}", value, re.S)


def test_password_tasks_have_no_log() -> None:
    """A task that evaluates the password (or reads the file holding it) hides its output."""
    touching = []
    for path in _role_task_files():
        for task in _tasks(_yaml(path)):
            if any(SECRET.search(e) for e in _expressions(task)):
                touching.append(task["name"])
                assert task.get("no_log") is True, f"{path.name}: {task['name']!r} lacks no_log: true"
    assert len(touching) >= 3, touching  # the preflight fact and both ways of writing the file


def test_templates_never_see_the_password() -> None:
    for path in (ROLE / "templates").rglob("*"):
        if path.is_file():
            assert not SECRET.search(path.read_text()), path


def test_role_carries_no_copy_of_the_unit() -> None:
    """The unit has one source, systemd/ in this repository, and the role installs that file."""
    assert not list(ANSIBLE.rglob("*.service")), "a unit file under ansible/"
    sources = [
        task["ansible.builtin.copy"]["src"]
        for path in _role_task_files() for task in _tasks(_yaml(path))
        if str(task.get("ansible.builtin.copy", {}).get("dest", "")).endswith("/edged.service")
    ]
    assert sources == ["{{ role_path }}/../../../systemd/edged.service"], sources
    assert (ROLE / "../../../systemd/edged.service").resolve() == ROOT / "systemd" / "edged.service"


def test_unit_runs_the_current_version_with_the_roles_paths() -> None:
    unit = (ROOT / "systemd" / "edged.service").read_text()
    assert "ExecStart=/opt/edged/current/bin/edged start -c /etc/edged/edged.toml" in unit
    assert "LoadCredential=redis:/etc/edged/redis.password" in unit
    assert "User=edged" in unit and "StateDirectory=edged" in unit


def test_playbooks_gate_rollouts() -> None:
    for name in ("rollout.yml", "rollback.yml"):
        (play,) = _yaml(ANSIBLE / name)
        assert play["max_fail_percentage"] == 0, name
        assert play["serial"][0] == 1, name
    (rollback,) = _yaml(ANSIBLE / "rollback.yml")
    assert rollback["roles"][0]["vars"]["edged_rollback"] is True


def test_systemd_tasks_survive_check_mode_before_the_first_install() -> None:
    """In check mode on a fresh host the unit file is not written, and systemd knows no edged:
    every task or handler that restarts or starts it is skipped then (run.yml reads whether the
    unit exists; tests/fleet/test_rollout.py runs site.yml --check on fresh hosts)."""
    guarded = []
    for path in _role_task_files():
        for task in _tasks(_yaml(path)):
            if "ansible.builtin.systemd_service" in task:
                guarded.append(task["name"])
                assert "_edged_unit_file.stat.exists" in str(task.get("when", "")), (
                    f"{path.name}: {task['name']!r} would fail in check mode on a fresh host")
    assert len(guarded) == 2, guarded


def test_pip_module_finds_packaging_on_the_hosts() -> None:
    """Ansible's pip module imports packaging (or setuptools) on the host before it runs pip."""
    assert "python3-packaging" in _defaults()["edged_system_packages"]
