"""One loaded SavedModel version: a TensorFlow session plus its signatures.

TF Serving keeps one `SavedModelBundle` (session + MetaGraphDef) per loaded
version. `Servable` is the same thing built on TensorFlow's Python runtime:
one `Session` per version, loaded under the requested tags by
`saved_model_loader` (the steps of C++ `LoadSavedModel`).

Requests run through session callables (`CallableOptions`), the C++ runtime
path TF Serving's `Session::Run` takes: feeds are checked against the graph
by the executor (dtype), not by Python's `Session.run`, which also refuses a
value whose shape differs from the Placeholder's declared shape (TF Serving
feeds `x` of shape [1] into a [None, 1] placeholder and answers). Callables
are built once per (feeds, fetches, deadline bucket) and cached; the ones of
each signature's full inputs/outputs are built at load (`inference.prepare`),
in the load's niced worker (`load_priority`), with the deadline buckets the
version being replaced was asked for (`prebuild`): building a callable on a
request blocks the session's other runs while it prunes the graph.
They release the GIL, so many request threads can run one servable at once.
Runs of small signatures execute in the request's thread instead of TF's
inter-op pool (`caller_thread`), which saves the pool's hand-off.
With --enable_batching, runs go through a `batching.BatchingSession` (one
queue per feeds/fetches set, a shared pool of batch threads). A reference
count lets the manager unload a version only after every request holding it
has finished.
"""

import collections
import dataclasses
import threading
from typing import Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from python.serve import batching as batching_lib
from python.serve import caller_thread
from python.serve import load_priority
from python.serve import saved_model_loader
from python.serve import serving_error

# Callables kept per servable; the oldest built is released past this many
# (each holds a pruned executor of the graph). Lookups take no lock.
MAX_CALLABLES = 256


class LoadError(Exception):
  """A SavedModel version could not be loaded (or warmed up).

  Attributes:
    code: The gRPC status code GetModelStatus reports for the failed version
      (TF Serving keeps the loader's own status code).
  """

  def __init__(self, message: str,
               code: grpc.StatusCode = grpc.StatusCode.UNKNOWN):
    super().__init__(message)
    self.code = code


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
  """Request-path options, named after tensorflow_model_server flags."""
  # --enable_signature_method_name_check: Predict refuses signatures whose
  # method_name is not predict/classify/regress.
  enable_signature_method_name_check: bool = False
  # --enable_serialization_as_tensor_content: Predict outputs in
  # tensor_content instead of the typed *_val fields.
  serialize_as_tensor_content: bool = False
  # --remove_unused_fields_from_bundle_metagraph: keep only what requests
  # need (signatures, meta info) of the MetaGraphDef after the load.
  remove_unused_fields_from_bundle_metagraph: bool = True


# Longest runtime message passed to a client (TensorFlow's messages may quote
# a whole input value).
MAX_MESSAGE_CHARS = 2000


def _bounded(message: str) -> str:
  if len(message) <= MAX_MESSAGE_CHARS:
    return message
  return (message[:MAX_MESSAGE_CHARS] +
          f'... ({len(message) - MAX_MESSAGE_CHARS} more characters)')


def _timeout_bucket_ms(timeout_s: Optional[float]) -> int:
  """Rounds a deadline up to a power of two milliseconds (0 = none).

  A callable's RunOptions are fixed when it is built, so deadlines share
  callables by bucket: a run is cancelled at most twice as late as its
  deadline (the gRPC layer has answered DEADLINE_EXCEEDED by then anyway).
  """
  if timeout_s is None:
    return 0
  ms = max(1, int(timeout_s * 1000))
  return 1 << (ms - 1).bit_length()


class Servable:
  """A loaded SavedModel version shared by concurrent requests.

  Attributes:
    name: The model name this version belongs to.
    version: The numeric version.
    path: The version directory.
    meta_graph_def: The MetaGraphDef loaded for the serving tags.
    signatures: Signature name -> SignatureDef, as in the SavedModel.
  """

  def __init__(self, name: str, version: int, path: str,
               session: tf.compat.v1.Session,
               meta_graph_def: meta_graph_pb2.MetaGraphDef,
               options: RuntimeOptions = RuntimeOptions(),
               caller_thread_runs: Optional[Mapping[Tuple[str, ...],
                                                    frozenset]] = None):
    self.name = name
    self.version = version
    self.path = path
    self.options = options
    self.meta_graph_def = meta_graph_def
    self.signatures = meta_graph_def.signature_def
    self._session = session
    self._cond = threading.Condition()
    self._refs = 0
    self._closed = False
    self._callables_lock = threading.Lock()
    self._callables: 'collections.OrderedDict[Tuple, object]' = (
        collections.OrderedDict())
    self._batching: Optional[batching_lib.BatchingSession] = None
    # Feeds -> fetches whose runs stay in the calling thread
    # (caller_thread.simple_runs).
    self._caller_thread_runs = caller_thread_runs or {}
    # Per-signature request plans (inference.py fills it at load).
    self.plans: dict = {}

  def enable_batching(self, scheduler: batching_lib.SharedBatchScheduler,
                      options: batching_lib.QueueOptions) -> None:
    """Routes every run through a BatchingSession on `scheduler`.

    Creates the queue of each signature's (inputs, outputs) set now; other
    sets (output filters, MultiInference) get theirs on first use.
    """
    session = batching_lib.BatchingSession(
        scheduler, options, self._run_direct,
        name=f'{{name: {self.name} version: {self.version}}}')
    for signature in self.signatures.values():
      feeds = tuple(sorted({t.name for t in signature.inputs.values()}))
      fetches = tuple(sorted({t.name for t in signature.outputs.values()}))
      if feeds:
        session.add_signature(feeds, fetches)
    self._batching = session

  @property
  def batching(self) -> Optional[batching_lib.BatchingSession]:
    """The BatchingSession of this version, or None when not batched."""
    return self._batching

  def in_caller_thread(self, feeds: Tuple[str, ...],
                       fetches: Tuple[str, ...]) -> bool:
    """True if runs of these sorted feeds and fetches skip TF's pool."""
    return caller_thread.in_caller_thread(self._caller_thread_runs, feeds,
                                          fetches)

  def callable_for(self, feeds: Tuple[str, ...], fetches: Tuple[str, ...],
                   timeout_s: Optional[float] = None, *,
                   at_load: bool = False):
    """Builds (or finds) the session callable of a feeds/fetches set.

    With `at_load`, a callable not built yet is built in the load's niced
    worker (`load_priority`).
    """
    return self._callable(feeds, fetches, _timeout_bucket_ms(timeout_s),
                          at_load)

  def _callable(self, feeds: Tuple[str, ...], fetches: Tuple[str, ...],
                timeout_ms: int, at_load: bool = False):
    key = (feeds, fetches, timeout_ms)
    run = self._callables.get(key)
    if run is not None:
      return run
    return self._build(key, at_load)

  def deadline_callables(self) -> list:
    """The (feeds, fetches, deadline bucket ms) sets built with a deadline."""
    return [key for key in list(self._callables) if key[2]]

  def prebuild(self, keys, limit: int = 32) -> int:
    """Builds at load the deadline callables an older version was asked for.

    Only for feeds/fetches sets this version built at load (its signatures'
    own), at most `limit`, in the niced worker. A hot-swapped version then
    serves its clients' deadlines without building anything on their
    requests (a build blocks the session's other runs while it prunes the
    graph). Sets the new graph cannot run are skipped.

    Returns:
      How many were built.
    """
    built = 0
    for key in keys:
      if built >= limit:
        break
      if key in self._callables or (key[0], key[1], 0) not in self._callables:
        continue
      try:
        self._build(key, at_load=True)
        built += 1
      except Exception:  # pylint: disable=broad-except
        pass  # Its requests will build (and fail) it themselves.
    return built

  def _build(self, key: Tuple, at_load: bool = False):
    feeds, fetches, timeout_ms = key
    options = config_pb2.CallableOptions(feed=list(feeds),
                                         fetch=list(fetches))
    if timeout_ms:
      options.run_options.timeout_in_ms = timeout_ms
    if self.in_caller_thread(feeds, fetches):
      options.run_options.inter_op_thread_pool = -1
    # pylint: disable-next=protected-access
    make = self._session._make_callable_from_options
    run = load_priority.run_niced(make, options) if at_load else make(options)
    with self._callables_lock:
      self._callables[key] = run
      while len(self._callables) > MAX_CALLABLES:
        self._callables.popitem(last=False)  # The oldest built.
    return run

  def run(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str],
          timeout_s: Optional[float] = None) -> list:
    """Runs the graph through a session callable, as TF Serving's C++ does.

    Args:
      feeds: Tensor name -> value.
      fetches: Tensor names to fetch (distinct).
      timeout_s: Optional deadline for the run, in seconds.

    Returns:
      The fetched values, in `fetches` order.

    Raises:
      ServingError: the runtime rejected the inputs or failed, with the
        TensorFlow status code and message.
    """
    names = tuple(sorted(feeds))
    return self.run_sorted(names, [feeds[n] for n in names], tuple(fetches),
                           timeout_s)

  def run_sorted(self, names: Tuple[str, ...], values: list,
                 fetches: Tuple[str, ...],
                 timeout_s: Optional[float] = None) -> list:
    """`run` with feeds already as sorted names and values in that order.

    With batching enabled the call waits in its signature's queue and gets
    its rows of a batched run.
    """
    if self._batching is not None:
      return self._batching.run(names, values, fetches, timeout_s)
    return self._run_direct(names, values, fetches, timeout_s)

  def _run_direct(self, names: Tuple[str, ...], values: list,
                  fetches: Tuple[str, ...],
                  timeout_s: Optional[float]) -> list:
    try:
      run = self._callable(names, fetches, _timeout_bucket_ms(timeout_s))
      return run(*values)
    except tf.errors.OpError as e:
      raise serving_error.ServingError(
          serving_error.status_code_from_tf(e.error_code),
          _bounded(e.message)) from e
    except UnicodeDecodeError as e:
      # TensorFlow's status message quoted the input's bytes (ParseExample:
      # "Could not parse example input, value: '...'"), which are not UTF-8.
      detail = (e.object.decode('utf-8', 'replace')
                if isinstance(e.object, bytes) else str(e))
      raise serving_error.invalid_argument(_bounded(detail)) from e
    except (ValueError, TypeError) as e:
      raise serving_error.invalid_argument(_bounded(str(e))) from e

  def acquire(self) -> None:
    """Registers one in-flight user; pair with `release`."""
    with self._cond:
      self._refs += 1

  def release(self) -> None:
    """Ends one in-flight use started by `acquire`."""
    with self._cond:
      self._refs -= 1
      if self._refs == 0:
        self._cond.notify_all()

  def close(self, timeout_s: Optional[float] = None) -> bool:
    """Waits until no request holds this version, then frees the session.

    Args:
      timeout_s: How long to wait for the requests holding it; None waits
        as long as they take.

    Returns:
      True once closed (also when it already was); False if requests still
      held it when `timeout_s` passed (the session is then left open).
    """
    with self._cond:
      if not self._cond.wait_for(lambda: self._refs == 0, timeout_s):
        return False
      if self._closed:
        return True
      self._closed = True
    if self._batching is not None:
      self._batching.close()
    self._session.close()
    return True

  @property
  def in_use(self) -> int:
    """How many requests hold this version right now."""
    with self._cond:
      return self._refs


def start_thread_pools(
    session_config: Optional[tf.compat.v1.ConfigProto] = None) -> None:
  """Creates TensorFlow's process-wide thread pools in the calling thread.

  Sessions run on pools TensorFlow creates once per process, with the first
  session (the inter-op pool) and the first CPU device (the intra-op pool);
  their threads inherit the creating thread's CPU priority. Whichever
  thread happens to run the first session would otherwise fix the priority of
  every later request (before `load_priority`, that was a niced load thread,
  and every request ran niced). Call it from a thread at the serving priority
  before the first load, with the config versions load with. (Per-session pools, which
  `use_per_session_threads` or `session_inter_op_thread_pool` ask for, are
  created by each load and cannot be made here.)
  """
  graph = tf.Graph()
  with graph.as_default():
    tf.constant(0, name='start_thread_pools')
  with tf.compat.v1.Session(graph=graph, config=session_config) as session:
    session.run('start_thread_pools:0')


def _trimmed(meta_graph_def: meta_graph_pb2.MetaGraphDef
            ) -> meta_graph_pb2.MetaGraphDef:
  """What requests need of a MetaGraphDef once the session holds the graph."""
  kept = meta_graph_pb2.MetaGraphDef()
  kept.meta_info_def.CopyFrom(meta_graph_def.meta_info_def)
  kept.meta_info_def.ClearField('stripped_op_list')
  for key, signature in meta_graph_def.signature_def.items():
    kept.signature_def[key].CopyFrom(signature)
  return kept


def _load_error_code(error: Exception) -> grpc.StatusCode:
  if isinstance(error, tf.errors.OpError):
    return serving_error.status_code_from_tf(error.error_code)
  if isinstance(error, (FileNotFoundError, IOError)):
    return grpc.StatusCode.NOT_FOUND
  if isinstance(error, RuntimeError) and 'MetaGraphDef associated' in str(
      error):
    return grpc.StatusCode.NOT_FOUND
  return grpc.StatusCode.UNKNOWN


def load(name: str, version: int, path: str, tags: Sequence[str],
         session_config: Optional[tf.compat.v1.ConfigProto] = None,
         options: RuntimeOptions = RuntimeOptions()) -> Servable:
  """Loads one SavedModel version directory like TF Serving's bundle factory.

  Args:
    name: Model name (for messages).
    version: Version number.
    path: The version directory holding saved_model.pb.
    tags: MetaGraph tags to load, usually ["serve"].
    session_config: Optional session ConfigProto (thread pools).
    options: Request-path options of the servable.

  Returns:
    The loaded servable.

  Raises:
    LoadError: the directory is not a loadable SavedModel for `tags`.
  """
  try:
    session, meta_graph_def = saved_model_loader.load(path, tags,
                                                      session_config)
  except Exception as e:  # pylint: disable=broad-except
    detail = e.message if isinstance(e, tf.errors.OpError) else str(e)
    raise LoadError(
        f'Failed to load servable {{name: {name} version: {version}}} from '
        f'{path} with tags {{{",".join(tags)}}}: {detail}',
        _load_error_code(e)) from e
  simple = ({} if caller_thread.pool_configured(session_config) else
            caller_thread.simple_runs(meta_graph_def))
  if options.remove_unused_fields_from_bundle_metagraph:
    meta_graph_def = _trimmed(meta_graph_def)
  return Servable(name, version, path, session, meta_graph_def, options,
                  caller_thread_runs=simple)

