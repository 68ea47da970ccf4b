"""Loading one version: retries, request plans, batching, warmup; unloading.

TF Serving's Loader and LoaderHarness. A `LoaderHarness` is the manager's
record of one version (its state, the loaded servable or the error of its
failed load); `Loader` carries out the work on it, outside the manager's
lock:

1. fetch a loadable copy (`storage_path_source`: s3:// versions are
   downloaded) and load the SavedModel under the serving tags
   (`servable.load`);
2. prepare it: each signature's request plan and callables
   (`inference.prepare`), then a BatchingSession when batching is on
   (the server's BatchingParameters, or the version's own
   `batching_params.pbtxt` with --enable_per_model_batching_parameters);
3. replay its warmup requests (`warmup.run_warmup`).

A failure at any step closes what was loaded, deletes the local copy and is
retried `max_num_load_retries` times, `load_retry_interval_seconds` apart;
`stopping` ends the retries. Load and warmup attempts are recorded in the
server's metrics.
"""

import dataclasses
import threading
import time
from typing import Optional, Sequence, Tuple

from absl import logging
import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from python.serve import batching
from python.serve import inference
from python.serve import servable as servable_lib
from python.serve import serving_error
from python.serve import storage_path_source
from python.serve import warmup

State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass
class LoaderHarness:
  """One version the manager knows about (loading, serving or failed)."""
  version: int
  path: str
  state: int
  servable: Optional[servable_lib.Servable] = None
  error: Optional[serving_error.ServingError] = None


@dataclasses.dataclass(frozen=True)
class LoadOptions:
  """What a load does, named after the tensorflow_model_server flags."""
  saved_model_tags: Sequence[str] = ('serve',)
  session_config: Optional[tf.compat.v1.ConfigProto] = None
  runtime: servable_lib.RuntimeOptions = dataclasses.field(
      default_factory=servable_lib.RuntimeOptions)
  enable_model_warmup: bool = True
  num_request_iterations_for_warmup: int = 1
  max_num_load_retries: int = 5
  load_retry_interval_seconds: float = 60.0
  # --batching_parameters_file's BatchingParameters; None: no batching.
  batching_parameters: Optional[object] = None
  enable_per_model_batching_parameters: bool = False
  # A python.serve.metrics.Metrics (record_load, record_warmup), or None.
  metrics: Optional[object] = None


class Loader:
  """Loads and unloads versions; see the module docstring."""

  def __init__(self, options: LoadOptions,
               source: storage_path_source.StoragePathSource,
               batch_scheduler: Optional[batching.SharedBatchScheduler],
               stopping: threading.Event):
    """Creates the loader.

    Args:
      options: What a load does.
      source: Where loadable copies of versions come from.
      batch_scheduler: The shared batch threads (with batching on).
      stopping: Set when the server stops: ends retries and skips warmup.
    """
    self._options = options
    self._source = source
    self._batch_scheduler = batch_scheduler
    self._stopping = stopping

  def load(self, name: str, version: int, path: str,
           deadline_callables: Sequence[Tuple] = ()
          ) -> Tuple[Optional[servable_lib.Servable],
                     Optional[serving_error.ServingError]]:
    """Loads, prepares and warms up one version, with retries.

    `deadline_callables` are the deadline callables the version being
    replaced was asked for (`Servable.deadline_callables`); they are built
    before the new version serves (`Servable.prebuild`).

    Returns:
      (the servable, None) once loaded; (None, the last attempt's error)
      when every attempt failed, or (None, that error or None) when
      `stopping` ended the attempts.
    """
    attempts = self._options.max_num_load_retries + 1
    error = None
    for attempt in range(attempts):
      if attempt:
        logging.info('Retrying load of {name: %s version: %d} (retry %d of '
                     '%d)', name, version, attempt, attempts - 1)
        if self._stopping.wait(self._options.load_retry_interval_seconds):
          break
      start = time.monotonic()
      try:
        loaded = servable_lib.load(name, version,
                                   self._source.local_copy(path),
                                   self._options.saved_model_tags,
                                   self._options.session_config,
                                   self._options.runtime)
      except servable_lib.LoadError as e:
        self._record('record_load', path, False, time.monotonic() - start)
        error = serving_error.ServingError(e.code, str(e))
        logging.error('%s', error.message)
        self._source.evict(path)
        continue
      try:
        self.prepare(loaded)
        loaded.prebuild(deadline_callables)
      except servable_lib.LoadError as e:
        loaded.close()
        self._record('record_load', path, False, time.monotonic() - start)
        error = serving_error.ServingError(e.code, str(e))
        logging.error('%s', error.message)
        self._source.evict(path)
        continue
      self._record('record_load', path, True, time.monotonic() - start)
      start = time.monotonic()
      try:
        if self._options.enable_model_warmup and not self._stopping.is_set():
          warmup.run_warmup(loaded,
                            self._options.num_request_iterations_for_warmup)
          self._record('record_warmup', path, grpc.StatusCode.OK,
                       time.monotonic() - start)
      except servable_lib.LoadError as e:
        self._record('record_warmup', path, e.code, time.monotonic() - start)
        loaded.close()
        self._source.evict(path)
        error = serving_error.ServingError(
            e.code,
            f'Failed to warm up {{name: {name} version: {version}}}: {e}')
        logging.error('%s', error.message)
        continue
      if self._stopping.is_set():
        loaded.close()  # stop() has stopped collecting versions to unload.
        break
      return loaded, None
    return None, error

  def prepare(self, loaded: servable_lib.Servable) -> None:
    """Per-signature request plans and callables, then batching if on.

    Raises:
      LoadError: the version's batching parameters are invalid.
    """
    inference.prepare(loaded)
    common = self._options.batching_parameters
    if common is None:
      return
    try:
      params = batching.per_model_batching_parameters(
          loaded.path, common,
          self._options.enable_per_model_batching_parameters)
      if params is None:
        logging.info('No %s in %s: version %d of %s is not batched.',
                     batching.PER_MODEL_FILENAME, loaded.path,
                     loaded.version, loaded.name)
        return
      source = (f'{loaded.path}/{batching.PER_MODEL_FILENAME}'
                if params is not common else '--batching_parameters_file')
      options = batching.queue_options(params, source)
    except batching.BatchingConfigError as e:
      raise servable_lib.LoadError(
          f'Failed to set up batching for {{name: {loaded.name} version: '
          f'{loaded.version}}}: {e}', grpc.StatusCode.INVALID_ARGUMENT) from e
    loaded.enable_batching(self._batch_scheduler, options)
    logging.info('Wrapping session to perform batch processing: {name: %s '
                 'version: %d} (max_batch_size %d, batch_timeout_micros %d)',
                 loaded.name, loaded.version, options.max_batch_size,
                 options.batch_timeout_micros)

  def unload(self, harness: LoaderHarness) -> None:
    """Closes the version once no request holds it; deletes its copy."""
    harness.servable.close()
    self._source.evict(harness.path)

  def _record(self, method: str, *args) -> None:
    if self._options.metrics is not None:
      getattr(self._options.metrics, method)(*args)
