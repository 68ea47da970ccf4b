r"""Shows what a frozen graph or a SavedModel contains.

  bazel run //python/merge:inspect -- --frozen=/data/hyaudio.pb
  bazel run //python/merge:inspect -- --dir=/models/merged/3 --format=json

--frozen lists the placeholders, probable outputs and every tensor with dtype
and shape (what a spec author needs) plus a spec skeleton; --dir lists the
tag-sets and signatures of a SavedModel like `saved_model_cli show --all`.
Both list the nodes running ops the merge refuses by default (like
`saved_model_cli scan`). Only regular files are read (a FIFO or device is
refused at once), at most --max_input_bytes of them.
Exit codes: 0 ok, 1 unreadable input, 2 bad flags.
"""

# First, before anything imports TensorFlow: its INFO chatter stays off
# unless --verbose (see python/common/quiet.py).
from python.common import quiet  # pylint: disable=unused-import,g-bad-import-order

import json
from typing import Sequence

from absl import app
from absl import flags

from python.common import bounded_read
from python.merge import cli
from python.merge import inspect_lib

_FROZEN = flags.DEFINE_string(
    "frozen", None, "A frozen GraphDef to describe (.pb binary, .pbtxt text).")
_DIR = flags.DEFINE_string(
    "dir", None, "A SavedModel (version) directory to describe.")
_FORMAT = flags.DEFINE_enum("format", "text", ["text", "json"],
                            "Output format on stdout.")
_MAX_INPUT_BYTES = flags.DEFINE_integer(
    "max_input_bytes", bounded_read.DEFAULT_MAX_INPUT_BYTES,
    "Files larger than this are refused (default 2 GiB).", lower_bound=1)

flags.register_multi_flags_validator(
    ["frozen", "dir"],
    lambda values: bool(values["frozen"]) != bool(values["dir"]),
    message="pass exactly one of --frozen=<graph.pb> and --dir=<SavedModel "
    "directory>.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise cli.usage_error(
        f"unexpected arguments {list(argv[1:])}; use --frozen or --dir.")
  if _FROZEN.value:
    desc = cli.run_job(lambda: inspect_lib.describe_frozen(
        cli.user_path(_FROZEN.value), _MAX_INPUT_BYTES.value))
    text = inspect_lib.format_frozen_text
  else:
    desc = cli.run_job(lambda: inspect_lib.describe_saved_model(
        cli.user_path(_DIR.value), _MAX_INPUT_BYTES.value))
    text = inspect_lib.format_saved_model_text
  if _FORMAT.value == "json":
    print(json.dumps(desc, indent=2))
  else:
    print(text(desc))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
