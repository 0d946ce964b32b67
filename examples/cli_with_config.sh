#!/usr/bin/env bash
# Run the whole job from a config file, then again one step at a time.
# Extra arguments (for example `--epochs 2`) are passed to every command.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="saved_models/example"

keras-distill demo --config "$here/run.yaml" --run "$run" "$@"

# The same steps one at a time; the teacher is reused, not retrained.
keras-distill train-teacher --run "$run" "$@"
keras-distill distill --run "$run" --temperature 8 "$@"
keras-distill evaluate --run "$run"
keras-distill export --run "$run" --quantize int8
keras-distill report --run "$run"
