"""``python -m sample_app``: seed a database and serve the school API."""

from __future__ import annotations

import os
import tempfile

from . import create_app, seed


def main() -> None:
    default = f"sqlite:///{os.path.join(tempfile.gettempdir(), 'resources_kit_sample.sqlite3')}"
    os.environ.setdefault("SAMPLE_APP_DATABASE_URL", default)
    app = create_app()
    with app.app_context():
        tokens = seed()
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5000"))
    print(f"School API on http://{host}:{port}/api/teachers", flush=True)
    for school, token in tokens.items():
        print(f"  {school}: Authorization: Bearer {token}", flush=True)
    print(
        f"  try: curl -H 'Authorization: Bearer {next(iter(tokens.values()))}' "
        f"http://{host}:{port}/api/teachers",
        flush=True,
    )
    app.run(host=host, port=port)


if __name__ == "__main__":
    main()
