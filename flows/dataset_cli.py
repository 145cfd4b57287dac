"""`capflow dataset ...`: read the versioned caption dataset, and take assets down."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer

from flows.cli_common import (
    EXIT_CONFIG,
    EXIT_INFRA,
    ConfigOpt,
    RootOpt,
    fail,
    load_cfg,
    storage_override,
)

app = typer.Typer(
    name="dataset",
    help="The versioned caption dataset (Delta table <root>/tables/captions): list versions, "
    "show one, diff two, take assets down, vacuum old files.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _call(
    config: Any, root: str | None, action: Callable[[str, Any], Any], exclusive: bool = False
) -> Any:
    """Run ``action(root, s3)`` against the configured dataset, mapping errors to exit codes;
    ``exclusive`` holds the root's lock (as a refresh does) while it writes."""
    import contextlib

    from capflow_core.captions_store import open_captions
    from capflow_core.delta_store import table_uri
    from capflow_core.errors import ConfigError, InfrastructureError
    from capflow_core.root_lock import root_lock

    cfg = load_cfg(config, storage=storage_override(root))
    where = cfg.storage.root
    try:
        if open_captions(where, cfg.s3) is None:
            raise fail(
                f"no dataset at {table_uri(where, 'captions')}: nothing was promoted under this "
                "root yet (check --root / the config's storage.root)",
                EXIT_CONFIG,
            )
        held = (
            root_lock(where, cfg.s3, cfg.storage.lock_wait_s, cfg.storage.lock_ttl_s)
            if exclusive
            else contextlib.nullcontext()
        )
        with held:
            return action(where, cfg.s3)
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
    except InfrastructureError as err:  # another writer kept the root's lock
        raise fail(str(err), EXIT_INFRA) from None
    except OSError as err:
        raise fail(f"storage: {type(err).__name__}: {err}", EXIT_INFRA) from None


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@app.command()
def versions(config: ConfigOpt = None, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """List the dataset versions, oldest first: run, gate and added/changed/removed."""
    from capflow_core.captions_store import versions as list_versions

    found = _call(config, root, list_versions)
    if as_json:
        return _echo_json([v.to_dict() for v in found])
    typer.echo(
        f"{'version':>7}  {'timestamp (UTC)':<23} {'operation':<9} {'run':<24} gate     "
        f"{'added':>7} {'changed':>7} {'removed':>7}"
    )
    for v in found:
        c = v.counts
        typer.echo(
            f"{v.version:>7}  {v.timestamp[:23]:<23} {v.operation:<9} {v.run_id or '-':<24} "
            f"{v.gate or '-':<8} {c.get('added', 0):>7} {c.get('changed', 0):>7} "
            f"{c.get('removed', 0):>7}"
        )


def _show(where: str, s3: Any, version: int | None, limit: int) -> dict[str, Any]:
    from collections import Counter

    from capflow_core.captions_store import read_version, versions

    table = read_version(where, s3, version, columns=["asset_id", "domain", "accepted", "caption"])
    known = {v.version: v for v in versions(where, s3)}
    number = version if version is not None else max(known, default=None)
    info = known[number].to_dict() if number in known else {"version": number}
    rows = table.select(["domain", "accepted"]).to_pylist()
    by_domain: dict[str, dict[str, int]] = {}
    for (domain, accepted), n in sorted(
        Counter((r["domain"], r["accepted"]) for r in rows).items(),
        key=lambda kv: (str(kv[0][0]), kv[0][1]),
    ):
        entry = by_domain.setdefault(domain or "", {"rows": 0, "accepted": 0})
        entry["rows"] += n
        entry["accepted"] += n if accepted else 0
    return info | {
        "rows": table.num_rows,
        "by_domain": by_domain,
        "captions": table.slice(0, limit).select(["asset_id", "domain", "caption"]).to_pylist(),
    }


@app.command()
def show(
    version: Annotated[int | None, typer.Option(help="Dataset version (default: latest).")] = None,
    limit: Annotated[int, typer.Option(help="How many captions to print.")] = 5,
    config: ConfigOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One version: its commit metadata, rows and accepted rows by domain, first captions."""
    data = _call(config, root, lambda w, s3: _show(w, s3, version, limit))
    if as_json:
        return _echo_json(data)
    typer.echo(f"dataset version {data['version']}: {data['rows']} rows")
    for key in ("timestamp", "operation", "run_id", "flow_run_id", "gate", "config_hash"):
        if data.get(key):
            typer.echo(f"  {key:<12} {data[key]}")
    if data.get("counts"):
        typer.echo(f"  {'counts':<12} {json.dumps(data['counts'], sort_keys=True)}")
    typer.echo(f"\n{'domain':<20} {'rows':>8} {'accepted':>9}")
    for domain, c in data["by_domain"].items():
        typer.echo(f"{domain:<20} {c['rows']:>8} {c['accepted']:>9}")
    for row in data["captions"]:
        typer.echo(f"\n[{row['domain']}] {row['asset_id'][:16]}  {row['caption']}")


@app.command()
def diff(
    old: Annotated[int, typer.Argument(help="The older version.")],
    new: Annotated[int, typer.Argument(help="The newer version.")],
    examples: Annotated[int, typer.Option(help="Example captions per kind.")] = 3,
    config: ConfigOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Captions added, changed and removed from OLD to NEW, by domain, with examples."""
    from capflow_core.dataset_diff import KINDS, diff_versions

    d = _call(config, root, lambda w, s3: diff_versions(w, s3, old, new))
    data = d.to_dict() | {"examples": {k: d.examples(k, examples) for k in KINDS}}
    if as_json:
        return _echo_json(data)
    typer.echo(f"version {old} -> {new}: " + ", ".join(f"{data[k]} {k}" for k in KINDS))
    typer.echo(f"\n{'domain':<20} {'added':>7} {'changed':>8} {'removed':>8}")
    for domain, c in data["by_domain"].items():
        typer.echo(f"{domain:<20} {c['added']:>7} {c['changed']:>8} {c['removed']:>8}")
    for kind in KINDS:
        for row in data["examples"][kind]:
            typer.echo(f"\n{kind} [{row['domain']}] {row['asset_id'][:16]}: {row['caption']}")
            if "old_caption" in row:
                typer.echo(f"  was: {row['old_caption']}")


@app.command()
def remove(
    asset: Annotated[
        list[str] | None, typer.Option("--asset", help="Asset id (repeatable).")
    ] = None,
    source_uri: Annotated[
        list[str] | None, typer.Option("--source-uri", help="Source URI (repeatable).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Recorded in the version's metadata.")] = "takedown",
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Take assets down: delete their captions in a new version (old versions keep the
    bytes until `capflow dataset vacuum`)."""
    from capflow_core.captions_takedown import remove_assets

    if not asset and not source_uri:
        raise fail("name what to remove: --asset ID and/or --source-uri URI", EXIT_CONFIG)
    res = _call(
        config,
        root,
        lambda w, s3: remove_assets(
            w, s3, asset_ids=asset or (), source_uris=source_uri or (), reason=reason
        ),
        exclusive=True,
    )
    if res.version is None:
        typer.echo("no matching caption rows: nothing removed, no new version")
        return
    typer.echo(f"removed {res.removed} caption row(s): dataset version {res.version}")
    typer.echo(
        "older versions still hold these captions until their files are vacuumed: run "
        "`capflow dataset vacuum --retention-hours 0 --yes` to delete them now (that also "
        "ends time travel to those versions), or let the weekly VACUUM policy do it."
    )


@app.command()
def vacuum(
    retention_hours: Annotated[
        int, typer.Option(help="Keep files still needed by versions younger than this.")
    ] = 168,
    yes: Annotated[bool, typer.Option("--yes", help="Delete (default: list only).")] = False,
    temp_age_hours: Annotated[
        float,
        typer.Option(
            help="Also delete temporary objects (`*.tmp-*`) under <root>/staging/ older than "
            "this: left by writers killed mid-write."
        ),
    ] = 1.0,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Delete data files no version younger than --retention-hours needs, and temporary
    objects killed writers left in staging (dry run without --yes). Versions older than
    --retention-hours can no longer be read by time travel."""
    from capflow_core.captions_takedown import vacuum as run_vacuum
    from capflow_core.staging_cleanup import abandoned_temp_files, delete_temp_files

    def both(where: str, s3: Any) -> tuple[list[str], list[str]]:
        files = run_vacuum(where, s3, retention_hours, dry_run=not yes)
        temps = abandoned_temp_files(where, s3, temp_age_hours * 3600)
        if yes:
            delete_temp_files(where, s3, temps)
        return files, temps

    files, temps = _call(config, root, both, exclusive=yes)
    verb = "deleted" if yes else "would delete"
    _listed(f"{verb} {len(files)} file(s) older than {retention_hours} h", files)
    _listed(f"{verb} {len(temps)} abandoned temporary object(s) in staging", temps)
    if (files or temps) and not yes:
        typer.echo("run again with --yes to delete them")


def _listed(head: str, names: list[str], most: int = 20) -> None:
    typer.echo(head)
    for name in names[:most]:
        typer.echo(f"  {name}")
    if len(names) > most:
        typer.echo(f"  ... and {len(names) - most} more")
