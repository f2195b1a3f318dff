"""The sample school API's command line; ``python -m sample_app --help`` lists it."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile

from flask import Flask

from . import create_app, policies, seed
from .models import db, jobs

#: Where the demo keeps its data between runs, unless SAMPLE_APP_DATABASE_URL says.
DEMO_DATABASE = os.path.join(tempfile.gettempdir(), "resources_kit_sample_2.sqlite3")


def parser() -> argparse.ArgumentParser:
    command = f"{os.path.basename(sys.executable)} -m sample_app"
    parser = argparse.ArgumentParser(
        prog=command,
        description="The sample school API of resources_kit.",
        epilog=(
            "The data lives in SAMPLE_APP_DATABASE_URL (default: the SQLite file "
            f"{DEMO_DATABASE}), seeded on first use; changes persist across runs until "
            f"'{command} reset'. HOST and PORT set where it serves (127.0.0.1:5000)."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="seed the database if empty and serve (the default)")
    token = commands.add_parser("token", help="print the access token of one demo login")
    token.add_argument(
        "login", help="north-admin, north-ada, north-grace, north-auditor, south-..."
    )
    commands.add_parser("reset", help="drop the demo data and seed it afresh")
    commands.add_parser("policies", help="print the row-level security DDL (PostgreSQL)")
    worker = commands.add_parser(
        "worker",
        help="run the background jobs: a Celery worker with SAMPLE_APP_BROKER_URL; "
        "without one, the relay every second",
    )
    worker.add_argument("celery_args", nargs=argparse.REMAINDER, help="passed to Celery")
    return parser


def main(argv: list[str]) -> int:
    commands = parser()
    args, rest = commands.parse_known_args(argv)  # --help prints the usage and exits
    if rest and args.command != "worker":
        commands.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "policies":
        print(";\n".join(policies()) + ";")
        return 0
    os.environ.setdefault("SAMPLE_APP_DATABASE_URL", f"sqlite:///{DEMO_DATABASE}")
    if args.command in (None, "serve"):
        os.environ.setdefault("SAMPLE_APP_ONE_PROCESS", "1")  # the development server: one
    app = create_app()
    if args.command == "worker":
        with app.app_context():
            jobs.worker([*args.celery_args, *rest])  # Celery's own options
        return 0
    if argv[:1] == ["worker"]:
        with app.app_context():
            jobs.worker(argv[1:])
        return 0
    with app.app_context():
        if args.command == "reset":
            db.drop_all()
            db.create_all()
        tokens = seed()
    if args.command == "reset":
        print(f"Reset the demo data in {os.environ['SAMPLE_APP_DATABASE_URL']}.")
        return 0
    if args.command == "token":
        if args.login not in tokens:
            print(f"unknown login {args.login!r}; one of: {', '.join(tokens)}", file=sys.stderr)
            return 2
        print(tokens[args.login])
        return 0
    return serve(app, tokens)


def serve(app: Flask, tokens: dict[str, str]) -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5000"))
    print(f"School API on http://{host}:{port}/api/teachers (docs: /api/docs)", flush=True)
    for login, token in tokens.items():
        print(f"  {login}: Authorization: Bearer {token}", flush=True)
    # The interpreter running now: a bare `python` may not be it (or exist) outside a venv.
    python = shlex.quote(sys.executable)
    print(
        f'  try: curl -H "Authorization: Bearer $({python} -m sample_app token north-admin)" '
        f"http://{host}:{port}/api/teachers",
        flush=True,
    )
    app.run(host=host, port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
