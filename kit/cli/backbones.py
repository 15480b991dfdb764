"""The backbone table as the user reads it: ``kit list``'s pretrained section and ``kit weights list``."""

from __future__ import annotations

import typer

from kit.models.backbones import by_family
from kit.models.hub_backbones import HUB_EXTRA, by_title

weights_app = typer.Typer(
    help="The pretrained weights of the backbones: Keras' ImageNet files, keras-hub presets.", no_args_is_help=True
)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def backbone_lines() -> list[str]:
    """Every backbone row, grouped by family, with its native size and parameter count."""
    lines = ["pretrained backbones (model=<name>; native input size, backbone parameters without kit's head):"]
    for family, rows in by_family().items():
        lines.append(f"  {family}")
        lines.extend(f"    {row.name:18s} {row.native_size:4d} px {row.params / 1e6:7.1f} M" for row in rows)
    lines.append(
        f"keras-hub backbones (model=<name> model.weights=preset|<preset folder>|none; need the hub extra: {HUB_EXTRA}):"
    )
    for title, hub_rows in by_title().items():
        lines.append(f"  {title}")
        lines.extend(
            f"    {row.name:18s} {row.native_size:4d} px {row.params / 1e6:7.1f} M  {row.pooling:6s} {row.preset}"
            for row in hub_rows
        )
    return lines


@weights_app.command("list")
def weights_list(
    verify: bool = typer.Option(False, "--verify", help="Also check each present file's hash (reads every file)."),
) -> None:
    """For every backbone: the notop file weights=imagenet reads, whether it is in the Keras cache, and its size;
    for every keras-hub row: the preset weights=preset loads, whether a kernel mount or the kagglehub cache has it."""
    from kit.models.weights import cache_listing, weights_cache_dir

    typer.echo(f"Keras cache: {weights_cache_dir()} (KERAS_HOME/models, else ~/.keras/models)")
    typer.echo(_line("backbone", "file", "state", "size"))
    for item in cache_listing(verify=verify):
        typer.echo(_line(item.row.name, item.row.weights_file, item.state, _megabytes(item.size) if item.size else "-"))
    hub_weights_lines()


def hub_weights_lines() -> None:
    """For every keras-hub row: the preset weights=preset loads, where it was found, and its size."""
    from kit.models.hub_presets import kaggle_input_root, kagglehub_cache, preset_listing

    typer.echo(
        f"keras-hub presets: a kernel's Kaggle Model under {kaggle_input_root()}, else the kagglehub cache "
        f"{kagglehub_cache()}/models (KAGGLEHUB_CACHE)"
    )
    for item in preset_listing():
        state = "missing" if item.folder is None else "present (kernel)" if item.in_kernel else "present (cache)"
        typer.echo(_line(item.row.name, item.row.handle, state, _megabytes(item.size) if item.size else "-"))


def _line(name: str, file_name: str, state: str, size: str) -> str:
    return f"{name:18s} {file_name:56s} {state:20s} {size:>10s}"
