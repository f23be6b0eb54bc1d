"""`python -m llama_from_scratch data`: list, locate or download the data files.

Chapter: warmup.
"""

from __future__ import annotations

import argparse

from llama_from_scratch import datafiles
from llama_from_scratch.cli.main import CLIError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "path", "fetch"],
                        help="list: every file and whether it is local; path NAME: print its local "
                             "path (downloading it if needed); fetch: download every missing file")
    parser.add_argument("name", nargs="?", help="a file name from `data list` (for `path`)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            folder = datafiles.data_dir()
            print(f"# data directory: {folder} (set ${datafiles.ENV_VAR} to change it)")
            for entry in datafiles.FILES.values():
                status = "local" if (folder / entry.name).is_file() else "missing"
                print(f"{entry.name}\t{status}\t{entry.size:,} bytes\t{entry.about}")
        elif args.action == "path":
            if not args.name:
                raise CLIError("`data path` needs a file name; see `data list`")
            print(datafiles.path(args.name))
        else:
            for name in datafiles.FILES:
                print(datafiles.path(name))
    except datafiles.DataError as err:
        raise CLIError(str(err)) from err
    return 0
