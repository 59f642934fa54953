"""The package as users get it: no import cycles, and a wheel install (not editable) that ships its configs."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

from conftest import REPO

PACKAGES = ("posetalk_data", "posetalk_models")


def module_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports, at the top level or inside functions."""
    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def test_no_import_cycles():
    graph, cycles = module_graph(), []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt == path[0]:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > path[0]:     # each cycle once, from its smallest module
                visit(nxt, [*path, nxt])

    for start in graph:
        visit(start, [start])
    assert not cycles, cycles


def test_only_the_commands_import_a_command_module():
    """posetalk_models.cli.* are the commands: the library (nets, data, runs, generate, evaluate, train) never
    imports them, so every piece works without typer's error handling in between."""
    graph = module_graph()
    assert any(m.startswith("posetalk_models.cli.") for m in graph)     # the walk sees the model package
    wrong = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                   if t.startswith("posetalk_models.cli") and not m.startswith("posetalk_models.cli"))
    assert not wrong, wrong


def test_a_wheel_install_finds_its_shipped_configs(tmp_path):
    """Built and installed without the source tree on the path, the trainers read the shipped YAMLs (not their
    tiny defaults) and a build's pipeline YAML is found."""
    src = tmp_path / "src"
    for name in (*PACKAGES, "pyproject.toml", "README.md"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (REPO / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("posetalk-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    probe = ("import posetalk_data, posetalk_models.cli.train as cli; from posetalk_data.config import shipped; "
             "print(posetalk_data.__file__); print(shipped('folder')); "
             "print(cli._config('vae', None, [], None, None, None).model.d_model)")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0].startswith(str(tmp_path / "site")), out     # the installed copy, not the checkout
    assert out[1].startswith(str(tmp_path / "site")) and out[1].endswith("folder.yaml"), out
    assert out[2] == "256", out                                # pose-vae.yaml's size, not the tiny default (64)


def test_train_help_shows_each_example_on_its_own_line():
    from typer.testing import CliRunner

    from posetalk_models.cli.train import app

    lines = CliRunner().invoke(app, ["--help"]).output.splitlines()
    for example in ("posetalk-train vae --manifest", "posetalk-train pld --manifest", "posetalk-train coarse ",
                    "posetalk-train sync "):
        assert any(line.strip().startswith(example) for line in lines), (example, lines)


def test_console_commands_freeze_the_collector_before_exit_and_keep_their_exit_codes():
    """Every console command goes through run_command: its exit code is the app's, and the collector is frozen
    (checked from an atexit handler, which runs after the command returns) so the interpreter's exit is quick."""
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    check = ("import atexit, gc, importlib, sys\n"
             "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
             "module, name = sys.argv[1].split(':'); sys.argv = ['cmd', *sys.argv[2:]]\n"
             "getattr(importlib.import_module(module), name)()\n")
    for script, target in scripts.items():
        ok = subprocess.run([sys.executable, "-c", check, target, "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
        assert ok.returncode == 0 and "frozen True" in ok.stdout, (script, ok.stdout[-300:], ok.stderr[-500:])
    bad = subprocess.run([sys.executable, "-c", check, scripts["posetalk-data"], "build", "--src", "nonesuch"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "frozen True" in bad.stdout, (bad.stdout[-300:], bad.stderr[-500:])


def test_run_names_are_read_without_torch():
    """The commands' output checks ask which folder a run argument names before any model loads: run_paths answers
    without importing torch (seconds before a one-line error), for a folder, a checkpoint, a store URL or none."""
    code = ("import sys; from pathlib import Path; from posetalk_models.run_paths import is_checkpoint, run_folder\n"
            "print(run_folder('s3://b/runs/coarse/step-00000010.safetensors'), run_folder('s3://b/runs/coarse/'),\n"
            "      run_folder(Path('runs/coarse/step-00000010.safetensors')), run_folder(Path('runs/coarse')),\n"
            "      run_folder(None), is_checkpoint('step-00000010.safetensors'),\n"
            "      is_checkpoint('step-00000010.disc.safetensors'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.split() == ["s3://b/runs/coarse", "s3://b/runs/coarse/", "runs/coarse", "runs/coarse", "None", "True",
                           "False", "False"]
