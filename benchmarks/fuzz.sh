#!/usr/bin/env bash
# Schemathesis against the sample app's own OpenAPI document: every operation, bounded
# examples, stateful links. Fails on any 5xx or any response the document does not allow.
#   bash benchmarks/fuzz.sh [max-examples]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
database=$(mktemp -d)/fuzz.sqlite3
SAMPLE_APP_DATABASE_URL="sqlite:///$database" PORT=$port "$python" -m sample_app > "$database.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/api/openapi.json')" 2>/dev/null && break
    sleep 0.2
done
# The north school's admin (every operation allowed), from the tokens the app printed.
token=$(sed -n 's/^  north-admin: Authorization: Bearer //p' "$database.log" | head -1)
[ -n "$token" ] || { echo "fuzz: the sample app printed no token" >&2; cat "$database.log" >&2; exit 1; }
"$(dirname "$python")/schemathesis" run "http://127.0.0.1:$port/api/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "${1:-30}" --seed 1 --request-timeout 30
