"""Server-side batching as TF Serving does it (--enable_batching).

Mirrors tensorflow_serving/batching/batching_session.cc over TensorFlow's
SharedBatchScheduler (tensorflow/core/kernels/batching_util), configured from
a text `tensorflow.serving.BatchingParameters` as
servables/tensorflow/bundle_factory_util.cc does:

* `BatchingParameters`: the message of session_bundle_config.proto, built
  here from a descriptor (the proto is not in the tensorflow-serving-api pip
  package), so --batching_parameters_file and a model's
  `batching_params.pbtxt` parse with protobuf's own text format.
* `SharedBatchScheduler`: one pool of `num_batch_threads` threads shared by
  every queue of every servable; the threads take batches from the queues
  round-robin. A queue holds up to `max_enqueued_batches` batches of up to
  `max_batch_size` rows; the back batch is open and is closed when the next
  task does not fit, when it is full, or `batch_timeout_micros` after its first
  task arrived (0: as soon as a thread is free). A task that does not fit in
  a full queue is refused with UNAVAILABLE ("The batch scheduling queue to
  which this task was submitted is full"), as TF Serving does.
* `BatchingSession`: one per servable version, with one queue per (feeds,
  fetches) set, created at load for each signature and on first use for
  other sets (TF Serving's default scheduler creator). A run's inputs must
  share their 0th dimension; a batch concatenates them on dimension 0, pads
  the batch to the next of `allowed_batch_sizes` with copies of the last
  task's first row, runs the servable once, and hands each caller its rows of
  every output. `pad_variable_length_inputs` pads the other dimensions of an
  input to the longest in the batch with the tensor's first value.

Answers are the unbatched answers: a batch computes each row from its own
input row. One deliberate difference from TF Serving: when a batch of
several tasks cannot be merged (inputs of different dtypes or, without
padding, shapes) or its run fails with an error that depends on the inputs,
each task is run again on its own, so a bad request fails alone instead of
failing the requests it happened to be batched with.

  scheduler = batching.SharedBatchScheduler(batching.scheduler_options(p))
  session = batching.BatchingSession(scheduler, batching.queue_options(p),
                                     run_batch)
  outputs = session.run(feed_names, values, fetches, timeout_s)
"""

import collections
import dataclasses
import functools
import os
import threading
import time
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2

from python.serve import serving_error

# The file TF Serving reads from a version directory under
# --enable_per_model_batching_parameters.
PER_MODEL_FILENAME = 'batching_params.pbtxt'
# SharedBatchScheduler::Options / QueueOptions defaults.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10
DEFAULT_THREAD_POOL_NAME = 'batch_threads'
# server.cc names the pool so when --batching_parameters_file is not given.
MODEL_SERVER_THREAD_POOL_NAME = 'model_server_batch_threads'

QUEUE_FULL_MESSAGE = ('The batch scheduling queue to which this task was '
                      'submitted is full')
_MESSAGE_NAME = 'tensorflow.serving.BatchingParameters'
# Errors after which the tasks of a failed batch are not run again alone.
_NO_RETRY_CODES = (grpc.StatusCode.DEADLINE_EXCEEDED,
                   grpc.StatusCode.CANCELLED,
                   grpc.StatusCode.RESOURCE_EXHAUSTED,
                   grpc.StatusCode.UNAVAILABLE)


class BatchingConfigError(ValueError):
  """BatchingParameters that do not parse or that TF Serving refuses."""


# --- the BatchingParameters message -----------------------------------------

_FIELDS = (
    # (name, number, type name or scalar type, label)
    ('max_batch_size', 1, '.google.protobuf.Int64Value', False),
    ('batch_timeout_micros', 2, '.google.protobuf.Int64Value', False),
    ('max_enqueued_batches', 3, '.google.protobuf.Int64Value', False),
    ('num_batch_threads', 4, '.google.protobuf.Int64Value', False),
    ('thread_pool_name', 5, '.google.protobuf.StringValue', False),
    ('allowed_batch_sizes', 6, descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
     True),
    ('pad_variable_length_inputs', 7,
     descriptor_pb2.FieldDescriptorProto.TYPE_BOOL, False),
    ('enable_large_batch_splitting', 8, '.google.protobuf.BoolValue', False),
    ('max_execution_batch_size', 9, '.google.protobuf.Int64Value', False),
)
FIELD_NAMES = tuple(f[0] for f in _FIELDS)


@functools.lru_cache(maxsize=None)
def batching_parameters_class() -> type:
  """The tensorflow.serving.BatchingParameters message class.

  Built from a FileDescriptorProto in a private descriptor pool, with the
  field names, numbers and types of session_bundle_config.proto.
  """
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  file_proto = descriptor_pb2.FileDescriptorProto(
      name='python/serve/batching_parameters.proto',
      package='tensorflow.serving', syntax='proto3',
      dependency=['google/protobuf/wrappers.proto'])
  message = file_proto.message_type.add(name='BatchingParameters')
  fdp = descriptor_pb2.FieldDescriptorProto
  for name, number, kind, repeated in _FIELDS:
    field = message.field.add(name=name, number=number, json_name=name)
    field.label = fdp.LABEL_REPEATED if repeated else fdp.LABEL_OPTIONAL
    if isinstance(kind, str):
      field.type = fdp.TYPE_MESSAGE
      field.type_name = kind
    else:
      field.type = kind
  pool.Add(file_proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName(_MESSAGE_NAME))


def new_batching_parameters():
  """An empty BatchingParameters message."""
  return batching_parameters_class()()


def parse_batching_parameters(text: str, source: str):
  """Parses a text-format BatchingParameters.

  Args:
    text: The text proto.
    source: Where it came from, for messages.

  Returns:
    The message.

  Raises:
    BatchingConfigError: the text does not parse (the wording of TF Serving's
      ParseProtoTextFile, plus the fields this message has).
  """
  params = new_batching_parameters()
  try:
    text_format.Parse(text, params)
  except text_format.ParseError as e:
    detail = str(e)
    if len(detail) > 300:
      detail = detail[:300] + '...'
    raise BatchingConfigError(
        f'Error parsing text-format {_MESSAGE_NAME}: {detail}. Invalid '
        f"protobuf file: '{source}'. Fields: {', '.join(FIELD_NAMES)}; "
        'wrapped ones are written `max_batch_size { value: 128 }`.') from e
  return params


def read_batching_parameters_file(path: str):
  """Reads and parses a BatchingParameters text file.

  Raises:
    BatchingConfigError: unreadable or invalid file.
  """
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise BatchingConfigError(
        f'Cannot read batching parameters {path}: {e}') from e
  return parse_batching_parameters(text, path)


def default_batching_parameters():
  """What server.cc uses for --enable_batching without a parameters file."""
  params = new_batching_parameters()
  params.thread_pool_name.value = MODEL_SERVER_THREAD_POOL_NAME
  return params


def per_model_batching_parameters(version_dir: str, common,
                                  per_model_configured: bool):
  """BatchingParameters of one version, as GetPerModelBatchingParams.

  Args:
    version_dir: The version directory.
    common: The server's BatchingParameters.
    per_model_configured: --enable_per_model_batching_parameters.

  Returns:
    `common` unless `per_model_configured`; then the version's
    batching_params.pbtxt, or None (that version is not batched) when it has
    none.

  Raises:
    BatchingConfigError: the version's file does not parse.
  """
  if not per_model_configured:
    return common
  path = os.path.join(version_dir, PER_MODEL_FILENAME)
  if not os.path.isfile(path):
    return None
  return read_batching_parameters_file(path)


# --- validated options ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SchedulerOptions:
  """SharedBatchScheduler::Options."""
  num_batch_threads: int = os.cpu_count() or 1
  thread_pool_name: str = DEFAULT_THREAD_POOL_NAME


@dataclasses.dataclass(frozen=True)
class QueueOptions:
  """One queue's options (QueueOptions plus BatchingSessionOptions)."""
  max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
  batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
  max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
  allowed_batch_sizes: Tuple[int, ...] = ()
  pad_variable_length_inputs: bool = False
  enable_large_batch_splitting: bool = False
  # With large batch splitting: the largest batch that runs; tasks of up to
  # max_batch_size rows are split into pieces of at most this many.
  max_execution_batch_size: int = DEFAULT_MAX_BATCH_SIZE


def scheduler_options(params, source: str = 'BatchingParameters'
                     ) -> SchedulerOptions:
  """The shared pool's options, checked as SharedBatchScheduler::Create.

  Raises:
    BatchingConfigError: num_batch_threads < 1.
  """
  options = SchedulerOptions()
  if params.HasField('num_batch_threads'):
    threads = params.num_batch_threads.value
    if threads < 1:
      raise BatchingConfigError(
          f'{source}: num_batch_threads must be positive; was {threads}. Set '
          '`num_batch_threads { value: N }` with N >= 1 (about the number of '
          'cores).')
    options = dataclasses.replace(options, num_batch_threads=threads)
  if params.HasField('thread_pool_name'):
    options = dataclasses.replace(
        options, thread_pool_name=params.thread_pool_name.value or
        DEFAULT_THREAD_POOL_NAME)
  return options


def queue_options(params, source: str = 'BatchingParameters'
                 ) -> QueueOptions:
  """A servable's queue options, checked as TF Serving checks them.

  bundle_factory_util's WrapSessionForBatching (the last allowed batch size
  equals max_batch_size), SharedBatchScheduler::AddQueue (positive
  max_batch_size, non-negative timeout and queue length), and
  BatchingSession's rule that allowed_batch_sizes increase.

  Args:
    params: A BatchingParameters message.
    source: Where it came from, for messages.

  Returns:
    The options.

  Raises:
    BatchingConfigError: a value TF Serving refuses, with the fix.
  """
  def value(field, default):
    return getattr(params, field).value if params.HasField(field) else default

  max_batch_size = value('max_batch_size', DEFAULT_MAX_BATCH_SIZE)
  timeout = value('batch_timeout_micros', DEFAULT_BATCH_TIMEOUT_MICROS)
  max_enqueued = value('max_enqueued_batches', DEFAULT_MAX_ENQUEUED_BATCHES)
  splitting = value('enable_large_batch_splitting', False)
  execution = value('max_execution_batch_size', max_batch_size)
  allowed = tuple(params.allowed_batch_sizes)
  if max_batch_size <= 0:
    raise BatchingConfigError(
        f'{source}: max_batch_size must be positive; was {max_batch_size}. '
        'Set `max_batch_size { value: N }` with N >= 1.')
  if timeout < 0:
    raise BatchingConfigError(
        f'{source}: batch_timeout_micros must be non-negative; was '
        f'{timeout}. Use 0 to batch only what queued while threads were busy.')
  if max_enqueued < 0:
    raise BatchingConfigError(
        f'{source}: max_enqueued_batches must be non-negative; was '
        f'{max_enqueued}.')
  if splitting and not 0 < execution <= max_batch_size:
    raise BatchingConfigError(
        f'{source}: max_execution_batch_size must be in [1, max_batch_size='
        f'{max_batch_size}]; was {execution}.')
  for i, size in enumerate(allowed):
    if size <= 0:
      raise BatchingConfigError(
          f'{source}: allowed_batch_sizes entries must be positive; entry {i} '
          f'is {size}.')
    if i and size <= allowed[i - 1]:
      raise BatchingConfigError(
          f'{source}: allowed_batch_sizes entries must be monotonically '
          f'increasing; got {list(allowed)}.')
  if allowed:
    want = execution if splitting else max_batch_size
    name = 'max_execution_batch_size' if splitting else 'max_batch_size'
    if allowed[-1] != want:
      raise BatchingConfigError(
          f'{source}: Last entry in allowed_batch_sizes must match {name}; '
          f'last entry was {allowed[-1]}; expected {want}. Make the last '
          f'entry {want} or set {name} to {allowed[-1]}.')
  return QueueOptions(
      max_batch_size=max_batch_size, batch_timeout_micros=timeout,
      max_enqueued_batches=max_enqueued, allowed_batch_sizes=allowed,
      pad_variable_length_inputs=params.pad_variable_length_inputs,
      enable_large_batch_splitting=splitting,
      max_execution_batch_size=execution if splitting else max_batch_size)


def round_to_allowed_batch_size(allowed: Sequence[int], size: int) -> int:
  """The smallest allowed batch size >= size (size itself if none)."""
  for allowed_size in allowed:
    if allowed_size >= size:
      return allowed_size
  return size


# --- the scheduler ----------------------------------------------------------


class _Task:
  """One Run() call waiting for its batch (or one piece of a split call)."""

  __slots__ = ('values', 'size', 'deadline', 'outputs', 'error', '_done',
               'parent', 'index')

  def __init__(self, values: List[np.ndarray], size: int,
               deadline: Optional[float]):
    self.values = values
    self.size = size
    self.deadline = deadline
    self.outputs: Optional[List[np.ndarray]] = None
    self.error: Optional[serving_error.ServingError] = None
    self._done = threading.Lock()
    self._done.acquire()  # pylint: disable=consider-using-with
    self.parent: Optional['_SplitTask'] = None
    self.index = 0

  def finish(self, outputs, error) -> None:
    self.outputs = outputs
    self.error = error
    if self.parent is not None:
      self.parent.piece_done(self)
    else:
      self._done.release()

  def wait(self) -> None:
    self._done.acquire()  # pylint: disable=consider-using-with


class _SplitTask:
  """A task larger than max_execution_batch_size, run as several pieces."""

  def __init__(self, task: _Task, pieces: List[_Task]):
    self._task = task
    self._pieces = pieces
    self._left = len(pieces)
    self._lock = threading.Lock()
    for i, piece in enumerate(pieces):
      piece.parent = self
      piece.index = i

  def piece_done(self, unused_piece: _Task) -> None:
    with self._lock:
      self._left -= 1
      if self._left:
        return
    errors = [p.error for p in self._pieces if p.error is not None]
    if errors:
      self._task.finish(None, errors[0])
      return
    outputs = [np.concatenate([p.outputs[i] for p in self._pieces])
               for i in range(len(self._pieces[0].outputs))]
    self._task.finish(outputs, None)


class _Batch:
  __slots__ = ('tasks', 'size', 'start')

  def __init__(self):
    self.tasks: List[_Task] = []
    self.size = 0
    self.start = 0.0


class Queue:
  """One kind of task (one feeds/fetches set of one servable).

  Created by `SharedBatchScheduler.add_queue`; its state is guarded by the
  scheduler's lock.
  """

  def __init__(self, scheduler: 'SharedBatchScheduler', options: QueueOptions,
               process_batch: Callable[[List[_Task]], None]):
    self._scheduler = scheduler
    self.options = options
    self._process_batch = process_batch
    self._timeout_s = options.batch_timeout_micros / 1e6
    # Rows one batch holds: with large batch splitting, batches run at most
    # max_execution_batch_size rows (tasks were split to fit).
    self._capacity = (options.max_execution_batch_size
                      if options.enable_large_batch_splitting else
                      options.max_batch_size)
    self._batches: Deque[_Batch] = collections.deque([_Batch()])
    self._processing = 0
    self.closed = False

  # Called with the scheduler's lock held.
  def _open_batch_schedulable(self, now: float) -> bool:
    open_batch = self._batches[-1]
    if not open_batch.tasks:
      return False
    return (self.closed or open_batch.size >= self._capacity or
            now >= open_batch.start + self._timeout_s)

  def _add(self, task: _Task, now: float) -> bool:
    """Adds a task; returns whether idle batch threads must look again.

    They must when a batch became schedulable, and when the open batch got
    its first task (its timeout is a new wake-up time for them).
    """
    batches = self._batches
    if batches[-1].size + task.size > self._capacity:
      if len(batches) >= self.options.max_enqueued_batches:
        raise serving_error.ServingError(grpc.StatusCode.UNAVAILABLE,
                                         QUEUE_FULL_MESSAGE)
      batches.append(_Batch())
    open_batch = batches[-1]
    first = not open_batch.tasks
    if first:
      open_batch.start = now
    open_batch.tasks.append(task)
    open_batch.size += task.size
    return (first or len(batches) > 1 or
            self._open_batch_schedulable(now))

  def _take(self, now: float) -> Optional[_Batch]:
    """A closed batch to process now, or None."""
    batches = self._batches
    if len(batches) == 1:
      if not self._open_batch_schedulable(now):
        return None
      batches.append(_Batch())
    self._processing += 1
    return batches.popleft()

  def _next_timeout(self) -> Optional[float]:
    """When the open batch becomes schedulable by timeout (None: never)."""
    open_batch = self._batches[-1]
    if not open_batch.tasks:
      return None
    return open_batch.start + self._timeout_s

  def _empty(self) -> bool:
    return (self._processing == 0 and len(self._batches) == 1 and
            not self._batches[0].tasks)

  def schedule(self, task: _Task) -> None:
    """Enqueues a task (non-blocking), as Queue::Schedule.

    Raises:
      ServingError: INVALID_ARGUMENT for a task larger than max_batch_size,
        UNAVAILABLE when the queue is full or closed.
    """
    if task.size > self.options.max_batch_size:
      raise serving_error.invalid_argument(
          f'Task size {task.size} is larger than maximum batch size '
          f'{self.options.max_batch_size}')
    if (self.options.enable_large_batch_splitting and
        task.size > self.options.max_execution_batch_size):
      self._schedule_split(task)
      return
    self._scheduler.schedule(self, [task])

  def _schedule_split(self, task: _Task) -> None:
    step = self.options.max_execution_batch_size
    pieces = [_Task([v[start:start + step] for v in task.values],
                    min(step, task.size - start), task.deadline)
              for start in range(0, task.size, step)]
    _SplitTask(task, pieces)
    self._scheduler.schedule(self, pieces)

  def process(self, batch: _Batch) -> None:
    try:
      self._process_batch(batch.tasks)
    finally:
      self._scheduler.batch_done(self)

  def close(self) -> None:
    """Refuses new tasks and waits until the queued ones are processed."""
    self._scheduler.close_queue(self)


class SharedBatchScheduler:
  """A pool of batch threads serving many queues round-robin.

  Threads start with the first queue and are daemons; `stop()` ends them once
  every queue is closed.
  """

  def __init__(self, options: SchedulerOptions = SchedulerOptions()):
    if options.num_batch_threads < 1:
      raise BatchingConfigError(
          f'num_batch_threads must be positive; was '
          f'{options.num_batch_threads}')
    self.options = options
    self._cond = threading.Condition(threading.Lock())
    self._queues: List[Queue] = []
    self._next = 0
    self._stopped = False
    self._threads: List[threading.Thread] = []

  def add_queue(self, options: QueueOptions,
                process_batch: Callable[[List[_Task]], None]) -> Queue:
    """A new queue whose batches `process_batch(tasks)` runs."""
    queue = Queue(self, options, process_batch)
    with self._cond:
      if self._stopped:
        raise RuntimeError('batch scheduler stopped')
      self._queues.append(queue)
      if not self._threads:
        for i in range(self.options.num_batch_threads):
          thread = threading.Thread(
              target=self._thread_logic, daemon=True,
              name=f'{self.options.thread_pool_name}_{i}')
          self._threads.append(thread)
          thread.start()
    return queue

  @property
  def num_queues(self) -> int:
    with self._cond:
      return len(self._queues)

  def schedule(self, queue: Queue, tasks: List[_Task]) -> None:
    now = time.monotonic()
    with self._cond:
      if queue.closed:
        raise serving_error.ServingError(
            grpc.StatusCode.UNAVAILABLE,
            'The batch scheduling queue is closed: the servable is being '
            'unloaded. Retry; the request will go to the version that '
            'replaced it.')
      notify = False
      for task in tasks:
        notify = queue._add(task, now) or notify  # pylint: disable=protected-access
      if notify:
        self._cond.notify()

  def batch_done(self, queue: Queue) -> None:
    with self._cond:
      queue._processing -= 1  # pylint: disable=protected-access
      if queue.closed:
        self._cond.notify_all()

  def close_queue(self, queue: Queue) -> None:
    """Closes a queue, waits until it is empty, then drops it."""
    with self._cond:
      queue.closed = True
      self._cond.notify_all()
      while not queue._empty():  # pylint: disable=protected-access
        self._cond.wait()
      if queue in self._queues:
        index = self._queues.index(queue)
        del self._queues[index]
        if self._next > index:
          self._next -= 1
        if self._next >= len(self._queues):
          self._next = 0

  def stop(self) -> None:
    """Lets the batch threads exit (after every queue is closed)."""
    with self._cond:
      self._stopped = True
      self._cond.notify_all()

  def _pick(self, now: float) -> Optional[Tuple[Queue, _Batch]]:
    queues = self._queues
    for _ in range(len(queues)):
      if self._next >= len(queues):
        self._next = 0
      queue = queues[self._next]
      self._next += 1
      batch = queue._take(now)  # pylint: disable=protected-access
      if batch is not None:
        return queue, batch
    return None

  def _wait_s(self, now: float) -> Optional[float]:
    wake = None
    for queue in self._queues:
      at = queue._next_timeout()  # pylint: disable=protected-access
      if at is not None and (wake is None or at < wake):
        wake = at
    return None if wake is None else max(0.0, wake - now)

  def _thread_logic(self) -> None:
    while True:
      with self._cond:
        while True:
          now = time.monotonic()
          picked = self._pick(now)
          if picked is not None:
            break
          if self._stopped and not self._queues:
            return
          self._cond.wait(self._wait_s(now))
      queue, batch = picked
      queue.process(batch)


# --- the batching session ---------------------------------------------------

# run_batch(feed_names, values, fetches, timeout_s) -> fetched values
RunBatch = Callable[[Tuple[str, ...], List[np.ndarray], Tuple[str, ...],
                     Optional[float]], List[np.ndarray]]


def compute_input_size(values: Sequence[np.ndarray]) -> int:
  """The batch size of one Run() call, as ComputeTensorBatchSize.

  Raises:
    ServingError: INVALID_ARGUMENT with TF Serving's messages (and the fix).
  """
  if not values:
    raise serving_error.invalid_argument(
        'Batching Run() must have at least one input tensor. (This '
        'signature has no inputs; it cannot run with --enable_batching.)')
  size = None
  for value in values:
    if value.ndim == 0:
      raise serving_error.invalid_argument(
          'Batching Run() input tensors must have at least one dimension. '
          '(Send a batch: [x] instead of the scalar x.)')
    if size is None:
      size = value.shape[0]
    elif value.shape[0] != size:
      raise serving_error.invalid_argument(
          'Batching Run() input tensors must have equal 0th-dimension size. '
          f'(Got sizes {[v.shape[0] for v in values]}.)')
  return size


class _MergeError(Exception):
  """The tasks of a batch cannot be concatenated."""

  def __init__(self, error: serving_error.ServingError):
    super().__init__(error.message)
    self.error = error


def _pad_to(value: np.ndarray, dims: Sequence[int]) -> np.ndarray:
  """AddPadding: pads dims 1.. at the end with the tensor's first value."""
  if value.ndim < 1 or value.ndim > 6:
    raise _MergeError(serving_error.invalid_argument(
        'Only tensors with rank from 1 to 6 can be padded.'))
  widths = [(0, 0)] + [(0, want - have) for have, want in
                       zip(value.shape[1:], dims[1:])]
  if all(after == 0 for _, after in widths):
    return value
  if value.size < 1:
    raise _MergeError(serving_error.invalid_argument(
        'Got empty tensor in batch of non-empty tensors.'))
  if value.dtype == object:
    out = np.empty([value.shape[0]] + list(dims[1:]), dtype=object)
    out[...] = value.reshape(-1)[0]
    out[tuple(slice(0, n) for n in value.shape)] = value
    return out
  return np.pad(value, widths, mode='constant',
                constant_values=value.reshape(-1)[0])


class BatchingSession:
  """Batches the runs of one servable version, one queue per signature.

  Args:
    scheduler: The shared pool.
    options: This servable's queue options.
    run_batch: Runs merged inputs on the servable (raises ServingError).
    name: For thread-free diagnostics (the servable's name and version).
  """

  def __init__(self, scheduler: SharedBatchScheduler, options: QueueOptions,
               run_batch: RunBatch, name: str = ''):
    self._scheduler = scheduler
    self.options = options
    self._run_batch = run_batch
    self.name = name
    self._lock = threading.Lock()
    self._queues: Dict[Tuple[Tuple[str, ...], Tuple[str, ...]], Queue] = {}
    self._closed = False
    # Counted in the batch threads: runs of the servable, tasks they served,
    # and the largest batch (rows, padding included).
    self.batches_run = 0
    self.tasks_run = 0
    self.largest_batch = 0

  def add_signature(self, feeds: Tuple[str, ...],
                    fetches: Tuple[str, ...]) -> None:
    """Creates the queue of one (feeds, fetches) set ahead of its first run."""
    self._queue(feeds, fetches)

  def _queue(self, feeds: Tuple[str, ...], fetches: Tuple[str, ...]) -> Queue:
    key = (feeds, fetches)
    queue = self._queues.get(key)
    if queue is not None:
      return queue
    with self._lock:
      queue = self._queues.get(key)
      if queue is None:
        if self._closed:
          raise serving_error.ServingError(
              grpc.StatusCode.UNAVAILABLE,
              f'Servable {self.name} is being unloaded; retry.')
        queue = self._scheduler.add_queue(
            self.options, functools.partial(self._process, feeds, fetches))
        self._queues[key] = queue
    return queue

  @property
  def num_queues(self) -> int:
    return len(self._queues)

  def run(self, feeds: Tuple[str, ...], values: List[np.ndarray],
          fetches: Tuple[str, ...],
          timeout_s: Optional[float] = None) -> List[np.ndarray]:
    """Runs one call through its queue; blocks until its batch ran.

    Args:
      feeds: Feed tensor names, sorted.
      values: Their values, in `feeds` order.
      fetches: Tensor names to fetch.
      timeout_s: The call's deadline, from now.

    Returns:
      This call's rows of every fetched tensor, in `fetches` order.

    Raises:
      ServingError: TF Serving's batching errors, or the run's own error.
    """
    size = compute_input_size(values)
    queue = self._queue(feeds, fetches)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    task = _Task(values, size, deadline)
    queue.schedule(task)
    task.wait()
    if task.error is not None:
      raise task.error
    return task.outputs

  def close(self) -> None:
    """Closes every queue once its queued tasks have run."""
    with self._lock:
      self._closed = True
      queues = list(self._queues.values())
    for queue in queues:
      queue.close()

  # --- in a batch thread ---------------------------------------------------

  def _process(self, feeds: Tuple[str, ...], fetches: Tuple[str, ...],
               tasks: List[_Task]) -> None:
    """ProcessBatch: merge, run once, split; every task is finished."""
    try:
      self._process_tasks(feeds, fetches, tasks, retry_alone=True)
    except BaseException as e:  # pylint: disable=broad-except
      error = serving_error.internal(
          f'Batch processing failed: {type(e).__name__}: {str(e)[:500]}')
      for task in tasks:
        if task.outputs is None and task.error is None:
          task.finish(None, error)

  def _process_tasks(self, feeds, fetches, tasks: List[_Task],
                     retry_alone: bool) -> None:
    now = time.monotonic()
    deadlines = [t.deadline for t in tasks]
    live = [d for d in deadlines if d is None or d > now]
    if not live:
      error = serving_error.ServingError(
          grpc.StatusCode.RESOURCE_EXHAUSTED,
          'Run() timeout exceeded while waiting in batching queue')
      for task in tasks:
        task.finish(None, error)
      return
    timeout_s = None if None in live else max(live) - now
    size = sum(t.size for t in tasks)
    padded = round_to_allowed_batch_size(self.options.allowed_batch_sizes,
                                         size)
    try:
      merged = self._merge(tasks, padded - size)
      with self._lock:
        self.batches_run += 1
        self.tasks_run += len(tasks)
        self.largest_batch = max(self.largest_batch, padded)
      outputs = self._run_batch(feeds, merged, fetches, timeout_s)
    except (_MergeError, serving_error.ServingError) as e:
      error = e.error if isinstance(e, _MergeError) else e
      if retry_alone and len(tasks) > 1 and error.code not in _NO_RETRY_CODES:
        for task in tasks:
          self._process_tasks(feeds, fetches, [task], retry_alone=False)
        return
      for task in tasks:
        task.finish(None, error)
      return
    try:
      split = self._split(outputs, tasks, padded)
    except serving_error.ServingError as e:
      for task in tasks:
        task.finish(None, e)
      return
    for task, task_outputs in zip(tasks, split):
      task.finish(task_outputs, None)

  def _merge(self, tasks: List[_Task], padding: int) -> List[np.ndarray]:
    """MergeInputTensors: concatenation on dim 0 plus padding rows."""
    if len(tasks) == 1 and not padding:
      return tasks[0].values
    merged = []
    for j in range(len(tasks[0].values)):
      parts = [t.values[j] for t in tasks]
      first = parts[0]
      if any(p.dtype != first.dtype for p in parts):
        raise _MergeError(serving_error.invalid_argument(
            'Tensors of one input have different dtypes in one batch: '
            f'{sorted({str(p.dtype) for p in parts})}'))
      if self.options.pad_variable_length_inputs:
        if any(p.ndim != first.ndim for p in parts):
          raise _MergeError(serving_error.invalid_argument(
              'Tensors of one input have different ranks in one batch; '
              'padding needs equal ranks.'))
        dims = np.max([p.shape for p in parts], axis=0)
        parts = [_pad_to(p, dims) for p in parts]
      elif any(p.shape[1:] != first.shape[1:] for p in parts):
        raise _MergeError(serving_error.failed_precondition(
            'Tensors with the same name from different tasks have different '
            'shapes and padding is turned off. Set pad_variable_length_inputs '
            'to true, or ensure that all tensors with the same name have '
            'equal dimensions starting with the first dim.'))
      if padding:
        last = parts[-1]
        parts.append(np.repeat(last[:1], padding, axis=0))
      merged.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
    return merged

  @staticmethod
  def _split(outputs: Sequence[np.ndarray], tasks: List[_Task],
             padded: int) -> List[List[np.ndarray]]:
    """SplitOutputTensors: each task's rows of every output."""
    for output in outputs:
      output = np.asarray(output)
      if output.ndim == 0:
        raise serving_error.failed_precondition(
            'Batched output tensor has 0 dimensions. (With --enable_batching '
            'every output must have the batch as its 0th dimension.)')
      if output.shape[0] != padded:
        raise serving_error.failed_precondition(
            "Batched output tensor's 0th dimension does not equal the sum of "
            'the 0th dimension sizes of the input tensors. (Got '
            f'{output.shape[0]} rows for a batch of {padded}.)')
    if len(tasks) == 1 and tasks[0].size == padded:
      return [list(outputs)]
    split = []
    start = 0
    for task in tasks:
      end = start + task.size
      split.append([output[start:end] for output in outputs])
      start = end
    return split
