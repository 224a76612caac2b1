#!/usr/bin/env bash
# Set up and run the test suite: installs the dependencies if missing (see
# scripts/deps.sh), configures a Release build in build/ with warnings as errors,
# builds it and runs every test with ctest.
#
#   bash scripts/test.sh
#
# Environment: JOBS (parallel build jobs, default 2), BUILD_DIR (default build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs=${JOBS:-2}
build=${BUILD_DIR:-build}

bash scripts/deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGPTQ_WERROR=ON
cmake --build "$build" -j"$jobs"
ctest --test-dir "$build" --output-on-failure
