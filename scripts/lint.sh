#!/usr/bin/env bash
# The linters CI runs (`make lint`): import rules, ruff, mypy. All three run; the script fails if any failed.
#   lint-imports  the floor plan's import-linter contracts (setup.cfg [importlinter])
#   ruff check .  style and bug rules (pyproject.toml [tool.ruff])
#   mypy          types of the `convoy` package (pyproject.toml [tool.mypy])
# Tools come from the venv's bin (BIN, default .venv/bin; `make install-test` installs them).
# The rules and the baseline policy are described in docs/architecture.md ("Lint rules").
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}

# mypy needs the files under a folder named `convoy` (setup.cfg maps convoy = the repository root, which
# mypy cannot express): a link in mypy's own cache folder (ignored by git, ruff, pytest and mypy's crawl)
# gives it one; pyproject.toml's mypy_path points there.
mkdir -p .mypy_cache/src && ln -sfn ../.. .mypy_cache/src/convoy

failed=()
run() {
  local name=$1; shift
  echo "== $name"
  "$@" || failed+=("$name")
}
run lint-imports "$BIN/lint-imports"
run ruff "$BIN/ruff" check .
# paths printed as the repository's own (tasks/x.py, not .mypy_cache/src/convoy/tasks/x.py)
run mypy bash -c "set -o pipefail; '$BIN/mypy' 2>&1 | sed 's#^\.mypy_cache/src/convoy/##'"

if [ ${#failed[@]} -ne 0 ]; then
  echo "lint: FAILED: ${failed[*]}"
  exit 1
fi
echo "lint: all passed"
