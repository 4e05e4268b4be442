"""Safe defaults for `celery -A app flower`: loopback unless told otherwise, never open without auth.

Flower binds every interface by default and serves its API and task arguments to anyone who can
reach it. Imported only when the process is Flower, it checks Flower's options once they are
parsed (command line, FLOWER_* variables, flowerconfig.py) and before it starts listening.
"""

from __future__ import annotations

import ipaddress
import sys

LOOPBACK_HINT = "127.0.0.1"
# Flower's boolean options: they take no separate value (`--persistent` alone means true).
FLAGS = {
    "debug",
    "inspect",
    "persistent",
    "enable_events",
    "auto_refresh",
    "natural_time",
    "xheaders",
    "read_only",
    "purge_offline_workers_enabled",
    "help",
}


def is_loopback(address: str) -> bool:
    if address in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check(options) -> None:
    if not options.address:
        options.address = LOOPBACK_HINT  # Flower's own default ('') is every interface
    if is_loopback(options.address) or options.basic_auth or options.auth:
        return
    sys.stderr.write(
        f"refusing to start Flower on {options.address!r} without authentication: anyone who can "
        "reach it could read task arguments and control workers. Bind it to 127.0.0.1 (behind a "
        "proxy) or set --basic-auth=user:password (FLOWER_BASIC_AUTH) or --auth with OAuth.\n"
    )
    raise SystemExit(2)


def join_option_values(args: list[str]) -> list[str]:
    """`--port 5555` → `--port=5555`: Flower's (tornado's) option parser takes only the joined form."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        takes_value = arg.startswith("--") and "=" not in arg and i + 1 < len(args) and not args[i + 1].startswith("-")
        if takes_value and arg[2:].replace("-", "_") not in FLAGS:
            out.append(f"{arg}={args[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def install() -> None:
    import flower.command as command

    original_extract, original_apply = command.extract_settings, command.apply_options

    def checked_extract_settings():
        check(command.options)
        original_extract()

    command.extract_settings = checked_extract_settings
    command.apply_options = lambda prog_name, argv: original_apply(prog_name, join_option_values(list(argv)))
