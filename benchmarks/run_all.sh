#!/usr/bin/env bash
# Run every mlspec benchmark in --quick mode and collect the Markdown reports.
#   benchmarks/run_all.sh [extra args passed to every script, e.g. --repeat 3 or --no-dvc]
# Uses the python of $MLSPEC_PYTHON, else `python` (run it from the repository root in an activated venv).
# Reports go to stdout and to benchmarks/.work/results-quick.md; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${MLSPEC_PYTHON:-}"
if [[ -z "$py" ]]; then
  py=python
fi
mkdir -p "$here/.work"
out="$here/.work/results-quick.md"
: > "$out"
for b in validate plan apply hash; do
  echo "== bench_$b --quick $*" >&2
  "$py" "$here/bench_$b.py" --quick "$@" | tee -a "$out"
  echo | tee -a "$out"
done
echo "== all reports: $out" >&2
