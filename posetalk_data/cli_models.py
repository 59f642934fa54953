"""posetalk-data models ...: fetch every weight the builds, trainers and evaluator can use (on a machine with
internet), and list what is on this one."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_output import console, fail

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

PROFILE = typer.Option("paper", "--profile", help="The profile whose speech and text models to use.")
PIPELINE = typer.Option(None, "--pipeline", help="Pipeline YAML naming other speech or text models.")
OVERRIDES = typer.Option([], "--set", help="Config overrides, as for build.")


def _config(pipeline: Optional[Path], overrides: list[str], profile: str):
    from .config import ConfigError, load_config

    try:
        return load_config(pipeline, overrides, profile)
    except ConfigError as err:
        fail(str(err))


def _names(only: list[str]) -> list[str]:
    from .weight_pull import all_names

    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_names()]
    if unknown:
        fail(f"unknown weight {', '.join(unknown)}; choose from {', '.join(all_names())}",
             "`posetalk-data models list` shows each one, where it goes and what uses it.")
    return list(dict.fromkeys(names))


@app.command("pull")
def pull(
    only: list[str] = typer.Option([], "--only", help="Fetch only these (repeatable, or a comma list): hubert, "
                                                      "wav2vec2, clip, vgg19, alexnet, syncnet, fan."),
    profile: str = PROFILE,
    pipeline: Optional[Path] = PIPELINE,
    overrides: list[str] = OVERRIDES,
) -> None:
    """Fetch the profile's speech model and CLIP into the Hugging Face cache (HF_HOME) and VGG19, AlexNet, SyncNet
    and FAN into the torch hub cache ($TORCH_HOME/hub/checkpoints), each file checked by sha256 before it is put in
    place. Copy those caches to offline machines; builds, trainers and the evaluator never download."""
    from .weight_pull import PullError, hub_models, profile_names, pull_file, pull_hub
    from .weights import WEIGHT_FILES

    cfg = _config(pipeline, overrides, profile)
    names = _names(only) or profile_names(cfg)
    if not only and cfg.speech.backend == "mel" and cfg.text.encoder != "clip":
        console.print(f"profile {cfg.profile}: no Hugging Face models (its speech and text models ship inside "
                      "installed packages)")
    try:
        hub = hub_models(cfg) if set(names) - set(WEIGHT_FILES) else {}
    except ValueError as err:                 # open_clip does not know the configured model
        fail(str(err))
    failed = []
    for name in names:
        try:
            said = pull_file(WEIGHT_FILES[name]) if name in WEIGHT_FILES else pull_hub(hub[name])
            console.print(f"{name}: {said}", soft_wrap=True)
        except PullError as err:
            console.print(f"[red]{name}: not fetched[/]: {err}", soft_wrap=True)
            failed.append(name)
    if failed:
        fail(f"could not fetch {', '.join(failed)} (see above)",
             f"Fix what is said above and rerun `posetalk-data models pull --only {','.join(failed)}`.")


@app.command("list")
def list_weights(
    verify: bool = typer.Option(False, "--verify", help="Hash the files that are present and compare them with "
                                                        "their published sha256 (or file-name prefix)."),
    profile: str = PROFILE,
    pipeline: Optional[Path] = PIPELINE,
    overrides: list[str] = OVERRIDES,
) -> None:
    """Each weight: present or missing, where it is (or goes), what uses it, and for a missing one the command
    that fetches it."""
    from .weight_pull import file_status, hub_models, hub_status
    from .weights import WEIGHT_FILES, pull_command

    cfg = _config(pipeline, overrides, profile)
    try:
        rows = [hub_status(m) for m in hub_models(cfg).values()]
    except ValueError as err:                 # open_clip does not know the configured model
        fail(str(err))
    rows += [file_status(f, verify) for f in WEIGHT_FILES.values()]
    for row in rows:
        typer.echo(f"{row.name:<9} {row.state:<17} {row.where}")
        typer.echo(f"{'':<9} used by: {row.used_by}; checked by: {row.check}")
        if row.state == "missing":
            typer.echo(f"{'':<9} get it: {pull_command(row.name)}")
        elif row.state == "mismatch":
            typer.echo(f"{'':<9} not the published file: move it away, then {pull_command(row.name)}")
    missing = [row.name for row in rows if row.state in ("missing", "mismatch")]
    typer.echo(f"{len(rows) - len(missing)} of {len(rows)} present" +
               (f"; all missing ones: posetalk-data models pull --only {','.join(missing)}" if missing else ""))
