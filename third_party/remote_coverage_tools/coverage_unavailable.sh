#!/bin/sh
# Stands in for Bazel's downloadable coverage tools, which cannot be fetched on
# these offline machines. Any coverage request ends here, loudly.
cat >&2 <<'MSG'
ERROR: code coverage is not available in this offline build.
  `bazel coverage` needs @remote_coverage_tools (lcov_merger and
  coverage_report_generator), which Bazel downloads from the internet, and
  this workspace replaces it with third_party/remote_coverage_tools.
  Fix: run `./bazelw test` instead, or on a machine with internet access
  remove the `remote_coverage_tools` local_repository from WORKSPACE.
MSG
exit 1
