"""Personal copies of the course notebooks, where a course update cannot conflict with them.

``make lab`` runs this first. It copies every ``notebooks/NN_*.ipynb`` that is not yet in
``my-work/`` (a folder git ignores) and never overwrites a copy: your edits, outputs and
exercise answers stay yours. JupyterLab then opens ``my-work/``, so ``git pull`` can update
``notebooks/`` without touching what you wrote.

When the course's version of a notebook has changed since your copy was made, the script
says so and leaves your copy alone. To take the new version, rename (or delete) your copy
and run ``make lab`` again::

    python scripts/my_work.py            # copy what is missing, list copies with a newer course version
    python scripts/my_work.py --dest DIR # another folder (at the same depth as notebooks/, so ../data works)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ".course-versions.json"  # inside the destination: the hash of the course file each copy was made from


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sync_copies(source: Path, dest: Path) -> dict[str, list[str]]:
    """Copy each ``NN_*.ipynb`` of ``source`` missing from ``dest``; never overwrite.

    Returns ``{"copied": [...], "kept": [...], "updated_upstream": [...]}`` (file names):
    ``updated_upstream`` lists copies whose course version changed since they were made.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {source}: run this from a clone of the course")
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"{dest} exists and is not a folder: move it away or pass --dest OTHER")
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    except json.JSONDecodeError:
        manifest = {}  # a damaged manifest only loses the "newer version" notices, never a notebook
    report: dict[str, list[str]] = {"copied": [], "kept": [], "updated_upstream": []}
    for notebook in sorted(source.glob("[0-9][0-9]_*.ipynb")):
        target = dest / notebook.name
        if target.exists():
            report["kept"].append(notebook.name)
            if manifest.get(notebook.name) not in (None, _digest(notebook)):
                report["updated_upstream"].append(notebook.name)
            continue
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(notebook, partial)
        partial.replace(target)  # atomic: a copy is either whole or absent
        manifest[notebook.name] = _digest(notebook)
        report["copied"].append(notebook.name)
    partial = manifest_path.with_name(MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=1) + "\n")
    partial.replace(manifest_path)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--dest", type=Path, default=ROOT / "my-work")
    args = parser.parse_args(argv)
    try:
        report = sync_copies(args.source, args.dest)
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    where = args.dest.relative_to(ROOT) if args.dest.resolve().is_relative_to(ROOT) else args.dest
    if report["copied"]:
        print(f"Your copies in {where}/: {len(report['copied'])} new ({', '.join(report['copied'])}).")
    else:
        print(f"Your copies in {where}/: all {len(report['kept'])} notebooks already there, left as they are.")
    for name in report["updated_upstream"]:
        print(f"  note: the course's {name} changed since your copy was made. Your copy is untouched; to get the "
              f"new version, rename yours (e.g. to old_{name}) and run `make lab` again.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
