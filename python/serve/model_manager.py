"""The model manager: TF Serving's pieces composed, as ServerCore does.

`ModelManager` serves every configured model's versions, composing one piece
per concern, each in its own module with TF Serving's name:

* `storage_path_source` (FileSystemStoragePathSource): each model's
  `base_path` is listed every `file_system_poll_wait_seconds` (local,
  `tf.io.gfile` or `s3://`, whose versions are downloaded to a local cache),
  and its `model_version_policy` picks the aspired versions;
* `version_policy` (ServableVersionPolicy, AvailabilityPreservingPolicy): pure
  functions; `next_action` says which version to load or unload next: the
  highest new aspired version is loaded (and warmed up) before any version is
  unloaded, and a version that is no longer aspired is unloaded only while
  another aspired version is available (or none is aspired at all);
* `loader_harness` (Loader, LoaderHarness): one version's load with
  retries (`max_num_load_retries`, then END with its error while the
  previous version keeps serving), request plans, batching and warmup; its
  unload;
* `servable_state_monitor` (ServableStateMonitor): every version's state and
  error for GetModelStatus, and the waits of `reload_config`.

The manager itself keeps what ServerCore and AspiredVersionsManager keep:
the model list and its changes (`reload_config`, version labels), the
serving map and the request path (`servable()`: a version enters it only
after load and warmup, takes a reference per request, and its session closes
only after the last request holding it has finished), and the threads that
poll, load and unload.
"""

import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set

from absl import logging
import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from python.serve import batching
from python.serve import load_priority
from python.serve import loader_harness
from python.serve import servable as servable_lib
from python.serve import servable_state_monitor
from python.serve import serving_error
from python.serve import storage_path_source
from python.serve import version_policy

State = get_model_status_pb2.ModelVersionStatus.State
ModelConfig = model_server_config_pb2.ModelConfig
ModelConfigList = model_server_config_pb2.ModelConfigList

_TENSORFLOW_PLATFORM = 'tensorflow'


class ConfigError(ValueError):
  """A ModelServerConfig is invalid (bad path, duplicate name, ...)."""


class ModelsUnavailableError(RuntimeError):
  """Some models did not become available (startup or config reload)."""


@dataclasses.dataclass
class ManagerOptions:
  """Tuning knobs, named after the tensorflow_model_server flags."""
  saved_model_tags: Sequence[str] = ('serve',)
  session_config: Optional[tf.compat.v1.ConfigProto] = None
  enable_model_warmup: bool = True
  num_request_iterations_for_warmup: int = 1
  file_system_poll_wait_seconds: float = 1.0
  max_num_load_retries: int = 5
  load_retry_interval_seconds: float = 60.0
  allow_version_labels_for_unavailable_models: bool = False
  # --num_load_threads: 0 loads serially in the manager's loop; N loads the
  # versions of up to N models at once.
  num_load_threads: int = 0
  # --num_unload_threads: 0 unloads in the manager's loop; N closes unloaded
  # versions in a pool of N threads, so a slow close delays no load.
  num_unload_threads: int = 0
  runtime: servable_lib.RuntimeOptions = dataclasses.field(
      default_factory=servable_lib.RuntimeOptions)
  # --model_cache_dir: where versions of s3:// base paths are downloaded
  # ('' = a temporary directory removed at shutdown).
  model_cache_dir: str = ''
  # --enable_batching: the server's BatchingParameters message
  # (batching.parse_batching_parameters); None runs every request alone.
  batching_parameters: Optional[object] = None
  # --enable_per_model_batching_parameters: each version's
  # batching_params.pbtxt replaces the queue options of
  # `batching_parameters` (a version without one is not batched); the pool of
  # batch threads stays the server's.
  enable_per_model_batching_parameters: bool = False
  # Slow ModelService calls (HandleReloadConfigRequest) that may wait at
  # once; more are refused with RESOURCE_EXHAUSTED instead of taking the
  # threads that serve requests and health checks.
  max_concurrent_control_calls: int = 16
  # A python.serve.metrics.Metrics recording load and warmup attempts
  # (record_load, record_warmup); None records nothing. (issue 12)
  metrics: Optional[object] = None


class ControlCallsExhaustedError(RuntimeError):
  """Too many slow control calls are already waiting."""


def _remaining(deadline: Optional[float]) -> Optional[float]:
  return None if deadline is None else max(0.0, deadline - time.monotonic())


def is_absolute_path_or_uri(path: str) -> bool:
  """True for `/abs/path` or `scheme://...`, as ServerCore requires."""
  return path.startswith('/') or '://' in path


def validate_config_list(config_list: ModelConfigList) -> None:
  """Checks a ModelConfigList the way ServerCore does before using it.

  Args:
    config_list: The models to serve.

  Raises:
    ConfigError: a name is empty or repeated, a base path is relative, or a
      platform other than tensorflow is requested.
  """
  seen = set()
  for config in config_list.config:
    if not config.name:
      raise ConfigError(
          f'A model in the config list has no name (base_path='
          f'{config.base_path!r}); set `name: "..."` in its config block.')
    if config.name in seen:
      raise ConfigError(
          f'Illegal to list model {config.name} multiple times in config list')
    seen.add(config.name)
    if not is_absolute_path_or_uri(config.base_path):
      raise ConfigError(
          f'Expected model {config.name} to have an absolute path or URI; got '
          f'base_path()={config.base_path}')
    if config.model_platform not in ('', _TENSORFLOW_PLATFORM):
      raise ConfigError(
          f'Model {config.name} requested model_platform '
          f'"{config.model_platform}"; this server only serves '
          f'"{_TENSORFLOW_PLATFORM}" SavedModels.')


def check_version_labels(model_name: str, labels: Dict[str, int],
                         current_labels: Dict[str, int],
                         available: Iterable[int],
                         allow_unavailable: bool) -> None:
  """Checks version_labels like ServerCore::UpdateModelVersionLabelMap.

  A label must name an available version. With
  --allow_version_labels_for_unavailable_models, a new label (or one that
  keeps its version) may name any version, but moving a label that is in use
  to another version still needs that version to be available, so that
  requests by label never fail during a rollout.

  Args:
    model_name: The model, for messages.
    labels: The requested label -> version map.
    current_labels: The labels in force now.
    available: The versions currently available.
    allow_unavailable: --allow_version_labels_for_unavailable_models.

  Raises:
    ModelsUnavailableError: a label names a version it may not name yet.
  """
  available = set(available)
  for label, version in sorted(labels.items()):
    if version in available:
      continue
    moved = label in current_labels and current_labels[label] != version
    if allow_unavailable and not moved:
      continue
    hint = (f' Label "{label}" is in use (version {current_labels[label]}), '
            'so --allow_version_labels_for_unavailable_models does not apply;'
            ' wait until the version is available, then move the label.'
            if moved and allow_unavailable else '')
    raise ModelsUnavailableError(
        f'Request to assign label "{label}" to version {version} of model '
        f'{model_name}, which is not currently available for inference. '
        f'Available versions: {sorted(available)}.{hint}')


# The pieces' public names, as this module exported them before the split.
aspired_versions = version_policy.aspired_versions
next_action = version_policy.next_action
LOAD = version_policy.LOAD
UNLOAD = version_policy.UNLOAD
list_versions = storage_path_source.list_versions


@dataclasses.dataclass
class _Model:
  config: ModelConfig
  removed: bool = False
  polled: bool = False
  base_path_error: Optional[str] = None
  aspired: Dict[int, str] = dataclasses.field(default_factory=dict)
  harnesses: Dict[int, loader_harness.LoaderHarness] = dataclasses.field(
      default_factory=dict)
  available: Dict[int, servable_lib.Servable] = dataclasses.field(
      default_factory=dict)
  labels: Dict[str, int] = dataclasses.field(default_factory=dict)


class ModelManager:
  """Loads, serves and unloads the versions of every configured model."""

  def __init__(self, options: ManagerOptions):
    self._options = options
    # Guards the models, their harnesses and the states; notified on every
    # change (the monitor shares it).
    self._cond = threading.Condition()
    self._models: Dict[str, _Model] = {}
    self._monitor = servable_state_monitor.ServableStateMonitor(self._cond)
    self._source = storage_path_source.StoragePathSource(
        options.model_cache_dir)
    self._load_pool = None
    if options.num_load_threads > 0:
      self._load_pool = concurrent.futures.ThreadPoolExecutor(
          options.num_load_threads, thread_name_prefix='load')
    self._unload_pool = None
    if options.num_unload_threads > 0:
      self._unload_pool = concurrent.futures.ThreadPoolExecutor(
          options.num_unload_threads, thread_name_prefix='unload')
    self._wake = threading.Event()
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._config_lock = threading.Lock()
    self._control_slots = threading.BoundedSemaphore(
        max(1, options.max_concurrent_control_calls))
    self.batch_scheduler: Optional[batching.SharedBatchScheduler] = None
    if options.batching_parameters is not None:
      # Checked here so that a bad file fails the start, not every load.
      batching.queue_options(options.batching_parameters)
      self.batch_scheduler = batching.SharedBatchScheduler(
          batching.scheduler_options(options.batching_parameters))
    self._loader = loader_harness.Loader(
        loader_harness.LoadOptions(
            saved_model_tags=options.saved_model_tags,
            session_config=options.session_config,
            runtime=options.runtime,
            enable_model_warmup=options.enable_model_warmup,
            num_request_iterations_for_warmup=(
                options.num_request_iterations_for_warmup),
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=options.load_retry_interval_seconds,
            batching_parameters=options.batching_parameters,
            enable_per_model_batching_parameters=(
                options.enable_per_model_batching_parameters),
            metrics=options.metrics),
        self._source, self.batch_scheduler, self._stop)

  @contextlib.contextmanager
  def control_call(self) -> Iterator[None]:
    """Holds one of the slots of slow control calls while the block runs.

    Raises:
      ControlCallsExhaustedError: every slot is taken (no waiting: a waiting
        call would hold a thread that serves requests).
    """
    if not self._control_slots.acquire(blocking=False):  # pylint: disable=consider-using-with
      raise ControlCallsExhaustedError(
          f'{self._options.max_concurrent_control_calls} model-config reloads '
          'are already waiting for their models; retry when one has '
          'finished (GetModelStatus shows the loading versions).')
    try:
      yield
    finally:
      self._control_slots.release()

  # --- lifecycle -----------------------------------------------------------

  def start(self) -> None:
    """Starts the background discovery/loading thread."""
    # TensorFlow's shared pools at this (serving) priority, not the load
    # threads' lowered one.
    servable_lib.start_thread_pools(self._options.session_config)
    # Loads run at this priority but for their long GIL-free steps.
    load_priority.start()
    self._thread = threading.Thread(target=self._run, name='model_manager',
                                    daemon=True)
    self._thread.start()

  def stop(self, timeout_s: Optional[float] = None) -> bool:
    """Stops polling and loading, then unloads every version.

    Safe to call from several threads and more than once. A `reload_config`
    waiting for models raises ModelsUnavailableError at once; a load or
    warmup already running in TensorFlow cannot be interrupted, and a
    version is closed only after the requests holding it finish, so both
    are waited for at most `timeout_s`.

    Args:
      timeout_s: Bound on the whole call; None waits as long as it takes.

    Returns:
      True if every version was unloaded; False if the loading thread or a
      request was still busy when `timeout_s` passed.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    self._stop.set()
    self._wake.set()
    self._monitor.notify()  # Wakes _wait_until_available.
    if self._thread is not None:
      self._thread.join(_remaining(deadline))
      if self._thread.is_alive():
        logging.warning(
            'Model manager thread still busy after %.1fs (a load or warmup '
            'running in TensorFlow); not waiting for it.', timeout_s)
        return False
    for pool in (self._load_pool, self._unload_pool):
      if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
    with self._cond:
      harnesses = [(name, h) for name, m in self._models.items()
                   for h in m.harnesses.values() if h.servable is not None]
      for model in self._models.values():
        model.available.clear()
    for name, harness in harnesses:
      if not harness.servable.close(_remaining(deadline)):
        logging.warning(
            'Version %d of model %s is still used by %d request(s) after '
            '%.1fs; not waiting for them.', harness.version, name,
            harness.servable.in_use, timeout_s)
        return False
      self._monitor.set_state(name, harness.version, State.END)
    self._source.close()
    if self.batch_scheduler is not None:
      self.batch_scheduler.stop()
    return True

  # --- configuration -------------------------------------------------------

  def reload_config(self, config_list: ModelConfigList,
                    timeout_s: Optional[float] = None) -> None:
    """Installs a new model list and waits for newly added models.

    Models missing from `config_list` are unloaded, new ones are loaded and
    awaited (as ServerCore::ReloadConfig does), existing ones pick up their
    new version policy and labels.

    Args:
      config_list: The complete new list of models.
      timeout_s: Optional bound on the wait; None waits as long as it takes.

    Raises:
      ConfigError: the list is invalid; nothing changed.
      ModelsUnavailableError: a new model failed to load, or a label names a
        version that is not available.
    """
    validate_config_list(config_list)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    if not self._config_lock.acquire(  # pylint: disable=consider-using-with
        timeout=-1 if timeout_s is None else max(0.0, timeout_s)):
      raise ModelsUnavailableError(
          f'Another config reload was still waiting for its models after '
          f'{timeout_s}s; nothing changed. Retry later, or fix the model the '
          'other reload waits for (see GetModelStatus).')
    try:
      with self._cond:
        new_names = set()
        wanted = {c.name: c for c in config_list.config}
        for name, model in self._models.items():
          if name not in wanted:
            model.removed = True
        for name, config in wanted.items():
          model = self._models.get(name)
          if model is None or model.removed:
            if model is None:
              model = _Model(config=ModelConfig())
              self._models[name] = model
            model.removed = False
            model.polled = False
            model.base_path_error = None
            new_names.add(name)
          model.config.CopyFrom(config)
      self._wake.set()
      self._wait_until_available(new_names, _remaining(deadline))
      self._install_labels(config_list)
    finally:
      self._config_lock.release()

  def _install_labels(self, config_list: ModelConfigList) -> None:
    with self._cond:
      new_labels = {}
      for config in config_list.config:
        model = self._models[config.name]
        labels = dict(config.version_labels)
        check_version_labels(
            config.name, labels, model.labels, model.available,
            self._options.allow_version_labels_for_unavailable_models)
        new_labels[config.name] = labels
      for name, labels in new_labels.items():
        self._models[name].labels = labels

  def _wait_until_available(self, names: Set[str],
                            timeout_s: Optional[float]) -> None:
    pending = []

    def available() -> bool:  # Under self._cond, as the monitor calls it.
      pending.clear()
      failures = []
      for name in sorted(names):
        model = self._models[name]
        if model.base_path_error:
          failures.append(model.base_path_error)
          continue
        if not model.polled or not model.aspired:
          pending.append(name)
          continue
        # Every aspired version must settle; the newest must be available.
        settling = [v for v in model.aspired
                    if v not in model.harnesses or
                    model.harnesses[v].state in (State.START, State.LOADING)]
        latest = max(model.aspired)
        if settling:
          pending.append(name)
        elif model.harnesses[latest].state != State.AVAILABLE:
          error = model.harnesses[latest].error
          failures.append(f'{{name: {name} version: {latest}}} failed: '
                          f'{error.message if error else "unloaded"}')
      if failures:
        raise ModelsUnavailableError(
            'Some servables were not available: ' + '; '.join(failures))
      if not pending:
        return True
      if self._stop.is_set():
        raise ModelsUnavailableError(
            f'Server stopping before models {pending} became available.')
      return False

    if not self._monitor.wait_until(available, timeout_s):
      raise ModelsUnavailableError(
          f'Models {pending} did not become available within {timeout_s}s.')

  # --- request path --------------------------------------------------------

  @contextlib.contextmanager
  def servable(self, model_spec: model_pb2.ModelSpec
              ) -> Iterator[servable_lib.Servable]:
    """Resolves a ModelSpec to a loaded version and holds it while in use.

    Args:
      model_spec: name plus optional version or version_label.

    Yields:
      The loaded version; it stays loaded until the block exits.

    Raises:
      ServingError: INVALID_ARGUMENT for an empty name or unknown label,
        NOT_FOUND for an unknown model or version.
    """
    with self._cond:
      servable = self._resolve(model_spec)
      servable.acquire()
    try:
      yield servable
    finally:
      servable.release()

  def _resolve(self, model_spec: model_pb2.ModelSpec
              ) -> servable_lib.Servable:
    name = model_spec.name
    if not name:
      raise serving_error.invalid_argument(
          'ModelSpec has no name specified. Set model_spec.name to one of '
          f'{self._known_models()}.')
    model = self._models.get(name)
    if model is not None and model.removed:
      model = None
    choice = model_spec.WhichOneof('version_choice')
    if choice == 'version_label':
      label = model_spec.version_label
      if model is None or label not in model.labels:
        known = sorted(model.labels) if model else []
        raise serving_error.invalid_argument(
            f'Unrecognized servable version label: {label}. Labels of model '
            f'{name}: {known}.')
      version = model.labels[label]
      request = f'Specific({name}, {version})'
    elif choice == 'version':
      version = model_spec.version.value
      request = f'Specific({name}, {version})'
    else:
      version = None
      request = f'Latest({name})'
    if model is None:
      raise serving_error.not_found(
          f'Servable not found for request: {request}. Known models: '
          f'{self._known_models()}.')
    if version is None and model.available:
      version = max(model.available)
    servable = model.available.get(version)
    if servable is None:
      raise serving_error.not_found(
          f'Servable not found for request: {request}. Available versions of '
          f'model {name}: {sorted(model.available)}.')
    return servable

  def model_availability(self) -> Dict[str, bool]:
    """Configured model name -> whether it has an available version."""
    with self._cond:
      return {name: bool(model.available)
              for name, model in self._models.items() if not model.removed}

  def unready_models(self) -> List[str]:
    """Configured models that have no available version, sorted."""
    return sorted(name for name, available in
                  self.model_availability().items() if not available)

  def _known_models(self) -> List[str]:
    return sorted(n for n, m in self._models.items() if not m.removed)

  def model_status(self, name: str, version: Optional[int] = None
                  ) -> List[tuple]:
    """Returns (version, state, error) like ServableStateMonitor.

    See `servable_state_monitor.ServableStateMonitor.model_status`.

    Raises:
      ServingError: NOT_FOUND if the model or version was never seen.
    """
    return self._monitor.model_status(name, version)

  # --- background work -----------------------------------------------------

  def _run(self) -> None:
    poll_wait = self._options.file_system_poll_wait_seconds
    while not self._stop.is_set():
      self._wake.clear()
      try:
        self._poll_once()
      except Exception:  # pylint: disable=broad-except
        logging.exception('Model manager poll failed; retrying next poll.')
      if self._stop.is_set():
        return
      if poll_wait > 0:
        self._wake.wait(poll_wait)
      else:
        self._wake.wait()

  def _poll_model(self, name: str, model: _Model) -> None:
    if self._stop.is_set():
      return
    if model.removed:
      aspired = {}
    else:
      aspired = self._discover(name, model)
      if aspired is None:
        return
    with self._cond:
      model.aspired = aspired
      model.polled = True
      self._cond.notify_all()
    self._reconcile(name, model)

  def _poll_once(self) -> None:
    with self._cond:
      models = list(self._models.items())
    if self._load_pool is None:
      for name, model in models:
        self._poll_model(name, model)
    else:
      futures = [self._load_pool.submit(self._poll_model, name, model)
                 for name, model in models]
      for future in futures:
        error = future.exception()
        if error is not None:
          logging.error('Model manager poll of a model failed: %s', error)
    with self._cond:
      for name, model in list(self._models.items()):
        if model.removed and not model.harnesses:
          del self._models[name]
      self._cond.notify_all()

  def _discover(self, name: str, model: _Model) -> Optional[Dict[int, str]]:
    with self._cond:
      config = ModelConfig()
      config.CopyFrom(model.config)
    try:
      return self._source.aspired_versions(name, config)
    except storage_path_source.BasePathError as e:
      with self._cond:
        if not model.polled:
          model.base_path_error = str(e)
          self._cond.notify_all()
      return None

  def _reconcile(self, name: str, model: _Model) -> None:
    """Applies availability-preserving actions until none is left."""
    while not self._stop.is_set():
      with self._cond:
        aspired = dict(model.aspired)
        for version in [v for v, h in model.harnesses.items()
                        if h.state == State.END and v not in aspired]:
          del model.harnesses[version]  # forget failed loads once unaspired
        action = next_action(
            aspired, {v: h.state for v, h in model.harnesses.items()})
      if action is None:
        return
      kind, version = action
      if kind == UNLOAD:
        self._unload(name, model, version)
      else:
        self._load(name, model, version, aspired[version])

  def _load(self, name: str, model: _Model, version: int, path: str) -> None:
    harness = loader_harness.LoaderHarness(version=version, path=path,
                                           state=State.LOADING)
    with self._cond:
      model.harnesses[version] = harness
    self._monitor.set_state(name, version, State.LOADING)
    logging.info('Loading servable: {name: %s version: %d} from %s', name,
                 version, path)
    with self._cond:
      # The version this one replaces: its clients' deadlines.
      latest = max(model.available) if model.available else None
      previous = model.available[latest] if latest is not None else None
    loaded, error = self._loader.load(
        name, version, path,
        previous.deadline_callables() if previous is not None else ())
    if loaded is not None:
      with self._cond:
        harness.servable = loaded
        harness.state = State.AVAILABLE
        model.available[version] = loaded
      self._monitor.set_state(name, version, State.AVAILABLE)
      logging.info('Successfully loaded servable version {name: %s version: '
                   '%d}', name, version)
      return
    with self._cond:
      harness.state = State.END
      harness.error = error or serving_error.ServingError(
          grpc.StatusCode.CANCELLED, 'load cancelled: server stopping')
    self._monitor.set_state(name, version, State.END, harness.error)

  def _unload(self, name: str, model: _Model, version: int) -> None:
    with self._cond:
      harness = model.harnesses[version]
      model.available.pop(version, None)
      harness.state = State.UNLOADING
    self._monitor.set_state(name, version, State.UNLOADING)
    logging.info('Unloading servable version {name: %s version: %d}', name,
                 version)
    with self._cond:
      del model.harnesses[version]

    def finish():
      self._loader.unload(harness)
      self._monitor.set_state(name, version, State.END)
      logging.info('Done unloading servable version {name: %s version: %d}',
                   name, version)

    if self._unload_pool is None:
      finish()
    else:
      self._unload_pool.submit(finish)
