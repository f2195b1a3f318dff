"""``python -m sample_app``: seed a database and serve the school API.
``python -m sample_app token LOGIN``: print the access token of one demo login.
``python -m sample_app policies``: print the row-level security DDL (PostgreSQL)."""

from __future__ import annotations

import os
import sys
import tempfile

from . import create_app, policies, seed


def main(argv: list[str]) -> int:
    if argv == ["policies"]:
        print(";\n".join(policies()) + ";")
        return 0
    default = f"sqlite:///{os.path.join(tempfile.gettempdir(), 'resources_kit_sample_2.sqlite3')}"
    os.environ.setdefault("SAMPLE_APP_DATABASE_URL", default)
    os.environ.setdefault("SAMPLE_APP_ONE_PROCESS", "1")  # the development server: one
    app = create_app()
    with app.app_context():
        tokens = seed()
    if argv[:1] == ["token"]:
        if len(argv) != 2 or argv[1] not in tokens:
            print(f"usage: python -m sample_app token {{{','.join(tokens)}}}", file=sys.stderr)
            return 2
        print(tokens[argv[1]])
        return 0
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5000"))
    print(f"School API on http://{host}:{port}/api/teachers (docs: /api/docs)", flush=True)
    for login, token in tokens.items():
        print(f"  {login}: Authorization: Bearer {token}", flush=True)
    print(
        '  try: curl -H "Authorization: Bearer $(python -m sample_app token north-admin)" '
        f"http://{host}:{port}/api/teachers",
        flush=True,
    )
    app.run(host=host, port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
