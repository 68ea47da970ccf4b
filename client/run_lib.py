"""What the //client binary does: check every signature, or load-test them.

`run()` asks the server for the model's signatures, then either sends one
request per signature and reports its outputs and latency (check mode), or
sends `requests` requests per signature with `concurrency` in flight and
reports throughput and p50/p90/p99 latency (load mode). Reports are text for
people or one JSON document for scripts.

The parts live apart: `calls` makes one request (inputs, learned
tf.Examples), `load_mode` the load mode and `report` the text and JSON; this
module picks the signatures and the mode, and runs check mode.
"""

import dataclasses
import json
import sys
from typing import List, Optional, Sequence, TextIO

from client import calls
from client import client_lib
from client import example_features
from client import input_files
from client import load_mode
from client import report
# The one percentile (load_mode's); run_lib_test checks it here.
from python.common.stats import percentile  # pylint: disable=unused-import

# run_lib_test names the load mode's progress bar here.
ProgressBar = load_mode.ProgressBar


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """What to run.

  Attributes:
    signature_names: the signatures to call (empty: every signature).
    inputs: --input flag values (see input_files).
    batch_size: the size of unknown dimensions of sampled inputs.
    requests: 0 for check mode; else requests per signature (load mode).
    concurrency: requests in flight in load mode.
    output_format: "text" or "json".
    max_values: how many leading values of each output to print.
    progress: show a progress bar on stderr in load mode.
    model_base_path: the model's base path (or a version directory), read
      to learn the tf.Example features of classify/regress signatures
      (warmup records, else parse ops); None: learn them from the server's
      errors.
    max_feature_retries: how many requests per signature may be resent
      after the server names a missing feature (or a wrong shape or dtype).
  """
  signature_names: Sequence[str] = ()
  inputs: Sequence[str] = ()
  batch_size: int = 1
  requests: int = 0
  concurrency: int = 1
  output_format: str = "text"
  max_values: int = 6
  progress: bool = True
  model_base_path: Optional[str] = None
  max_feature_retries: int = 10


def select_signatures(metadata: client_lib.ModelMetadata,
                      names: Sequence[str],
                      where: str) -> List[client_lib.Signature]:
  """The signatures to run: `names` in order, or all of them.

  Raises:
    client_lib.SignatureError: for a name the model does not have.
  """
  if not names:
    return list(metadata.signatures.values())
  selected = []
  for name in names:
    if name not in metadata.signatures:
      choices = sorted(metadata.signatures)
      message = (f"{where} has no signature {name!r} (--signature_name); it "
                 f"has: {', '.join(choices)}.")
      close = client_lib.closest_names(name, choices)
      if close:
        message += f" Did you mean {close[0]!r}?"
      raise client_lib.SignatureError(message)
    if metadata.signatures[name] not in selected:
      selected.append(metadata.signatures[name])
  return selected


def _check_unused(loaded: Sequence[input_files.NamedArray],
                  signatures: Sequence[client_lib.Signature],
                  all_names: Sequence[str]) -> None:
  for item in loaded:
    if item.signature is not None:
      if item.signature not in [s.name for s in signatures]:
        raise client_lib.InputError(
            f"--input for {item.signature}:{item.name} ({item.source}) names "
            f"a signature that is not being run; running: "
            f"{', '.join(s.name for s in signatures)} (of "
            f"{', '.join(all_names)})")
      continue
    takers = [s for s in signatures
              if s.takes_examples or item.name in s.inputs]
    if not takers:
      aliases = sorted({a for s in signatures for a in s.inputs})
      raise client_lib.InputError(
          f"--input {item.name!r} ({item.source}) matches no input of the "
          f"signatures being run; their inputs are: {', '.join(aliases)}")


def bundle_for(config: RunConfig,
               metadata: client_lib.ModelMetadata) -> calls.Bundle:
  """The version directory to learn features from (config.model_base_path)."""
  if not config.model_base_path:
    return calls.Bundle(max_retries=config.max_feature_retries)
  try:
    export_dir = example_features.export_dir_of(config.model_base_path,
                                                metadata.version)
  except example_features.BundleError as e:
    return calls.Bundle(note=f" (--model_base_path not used: {e})",
                         max_retries=config.max_feature_retries)
  return calls.Bundle(export_dir, max_retries=config.max_feature_retries)


def check(client: client_lib.ServingClient,
          signatures: Sequence[client_lib.Signature],
          loaded: Sequence[input_files.NamedArray],
          batch_size: int,
          bundle: calls.Bundle = calls.Bundle()) -> List[calls.CallReport]:
  """Sends one request to each signature; never raises for server errors."""
  reports = []
  claimed = calls.predict_input_names(signatures)
  for signature in signatures:
    entry = calls.CallReport(signature.name, signature.method, {},
                             signature.rpc)
    try:
      inputs, entry.inputs = calls.build_inputs(client, signature, loaded,
                                                batch_size, claimed)
      entry.result, _ = calls.call_signature(client, signature, inputs,
                                             batch_size, bundle, entry.inputs)
    except client_lib.RpcError as e:
      entry.error_code = e.code.name
      entry.error = f"{e.code.name}: {e.details}"
    except client_lib.ClientError as e:
      entry.error_code = "CLIENT"
      entry.error = str(e)
    reports.append(entry)
  return reports


def run(client: client_lib.ServingClient, config: RunConfig,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
  """Runs the client once and prints the report.

  Args:
    client: the client.
    config: what to run.
    out: where the report goes.
    err: where errors (text mode) and the progress bar go.

  Returns:
    0 if every request succeeded, else 1.

  Raises:
    input_files.InputFileError: for bad --input values (bad usage), before
      any call is made.
  """
  loaded = input_files.load_inputs(config.inputs)
  metadata = None
  error = None
  reports: List[calls.CallReport] = []
  load_reports: List[load_mode.LoadReport] = []
  try:
    metadata = client.metadata()
    signatures = select_signatures(
        metadata, config.signature_names,
        f"model {client.model_name!r} at {client.server}")
    _check_unused(loaded, signatures, list(metadata.signatures))
    bundle = bundle_for(config, metadata)
    if config.requests > 0:
      load_reports = load_mode.load(client, signatures, loaded,
                                    config.batch_size, config.requests,
                                    config.concurrency,
                                    err if config.progress else None, bundle)
    else:
      reports = check(client, signatures, loaded, config.batch_size, bundle)
  except client_lib.ClientError as e:
    error = e
  if config.output_format == "json":
    document = report.to_json(client, metadata, reports, load_reports, error,
                              config.max_values)
    out.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
    ok = document["ok"]
  else:
    text = report.to_text(client, metadata, reports, load_reports, error,
                          config.max_values)
    (err if error is not None else out).write(text)
    ok = error is None and all(r.ok for r in reports) and all(
        r.ok for r in load_reports)
  out.flush()
  return 0 if ok else 1
