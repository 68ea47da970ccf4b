"""In-process check that a SavedModel loads and every signature runs.

`check_bundle()` is what the publisher runs on a staged bundle before it gets
a version number. It does what TensorFlow's SavedModel loader does (and TF
Serving's): parse `saved_model.pb`, pick the MetaGraph with the requested
tags, import its graph, restore the variables from `variables/` with the
SaverDef's restore op, and run the init op with asset paths fed. Then it feeds
every signature inputs synthesized from the TensorInfo dtypes and shapes
(batch 1; serialized `tf.Example`s carrying every feature the graph's parse
ops expect for string inputs that feed them) and checks that every output
comes back with its declared dtype and a shape compatible with its declared
static shape. Then, as TF Serving does at load, it replays the bundle's
warmup records (`assets.extra/tf_serving_warmup_requests`: Predict, Classify,
Regress and MultiInference logs) through the signatures they name; a record
that fails (an unknown signature or alias, a run error) fails the check, as it
would fail the version's load. This is a smoke test of loadability and
structure, not of numerical answers; `//cc/verify` loads the bundle with TF
Serving's own C++ loader.

Two things differ from `tf.compat.v1.saved_model.loader.load`, for the
merge's speed and memory:

  * Only the nodes the check touches get Python `Operation`s
    (`graph_import`); the session runs the whole imported graph either way.
  * Restore in groups. When the restore op is a NoOp over independent restore
    groups (the merge writes one per input graph, see `externalize`), the
    signatures are checked in sessions that each run only the groups holding
    the variables their signatures read, packed up to a memory budget (at
    least the largest group). So the check's peak memory follows the largest
    model, not the whole bundle. Every group runs in some session (a group no
    signature reads gets one of its own), so the ops the restore op would run
    all run: a group that fails to restore fails the check.

The check runs graphs from other teams, so:

  * It refuses (before importing anything) a graph with an op of
    `python/common/denied_ops.txt` in a node or library function, unless
    `allow_ops` names it; the SaverDef's own checkpoint ops are exempt.
  * Every run (restore, init, each signature) has a deadline,
    `timeout_seconds`: TensorFlow's RunOptions timeout cancels blocking ops,
    and a run still going after it (a loop that never ends is not
    cancellable) is abandoned in its thread and reported as a
    CheckTimeoutError with `abandoned=True`; the caller should then exit
    (the merge binary does, releasing its lock).
"""

import dataclasses
import os
import threading
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import message as message_lib
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import prediction_log_pb2

from python.common import op_policy
from python.merge import errors
from python.common import graph_import
from python.merge import saved_model_io
from python.merge import numerics as numerics_lib
from python.merge import warmup as warmup_lib

_MAX_ERROR_CHARS = 600
# Sessions restore groups up to this many bytes of variables (or the largest
# group, if larger); bundles below it are checked in one session.
DEFAULT_MEMORY_BUDGET_BYTES = 512 << 20
# The SavedModel names TF's loaders use (tf.saved_model constants).
_INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
_DEFAULT_SIGNATURE = "serving_default"
# The input alias of Classify/Regress signatures (serialized tf.Examples).
_EXAMPLES_ALIAS = "inputs"
_MAIN_OP_COLLECTION = "saved_model_main_op"
_LEGACY_INIT_OP_COLLECTION = "legacy_init_op"
_ASSETS_COLLECTION = "saved_model_assets"
_RESTORE_OPS = frozenset(("RestoreV2", "Restore", "RestoreSlice"))
DEFAULT_TIMEOUT_SECONDS = 120.0
# How long past its deadline a run may take to return once cancelled.
_CANCEL_GRACE_SECONDS = 5.0
# Sessions whose run was abandoned: closing them would wait for the run, and
# so would garbage collection; they live until the process exits.
_ABANDONED_SESSIONS: list = []
_VARIABLE_OPS = frozenset(("VarHandleOp", "VariableV2", "Variable"))


@dataclasses.dataclass(frozen=True)
class SignatureCheck:
  """The result of running one signature.

  Attributes:
    method_name: the SignatureDef method name.
    outputs: output alias -> (dtype name, shape of the returned value).
    numerics: with a `reference`, how the outputs compare with the frozen
      graph's own answers on the same inputs (`numerics`).
  """
  method_name: str
  outputs: dict[str, tuple[str, tuple[int, ...]]]
  numerics: Optional[numerics_lib.SignatureNumerics] = None


@dataclasses.dataclass(frozen=True)
class SessionPlan:
  """What one check session restores and runs.

  Attributes:
    restore_ops: ops to run (filename fed) before the init op.
    signatures: signature names to run after it.
    variable_bytes: size of the variables `restore_ops` restore, when their
      shapes are static.
  """
  restore_ops: tuple[str, ...]
  signatures: tuple[str, ...]
  variable_bytes: int


def check_bundle(
    export_dir: str,
    *,
    tags: Sequence[str] = ("serve",),
    expected_signatures: Optional[Iterable[str]] = None,
    batch_size: int = 1,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    reference: Optional[numerics_lib.Reference] = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    allow_ops: Iterable[str] = (),
    name: Optional[str] = None,
) -> dict[str, SignatureCheck]:
  """Loads `export_dir` and runs every signature on synthesized inputs.

  Args:
    export_dir: a SavedModel directory (local path or tf.io.gfile URI).
    tags: the MetaGraph tag-set to load.
    expected_signatures: if given, signatures that must be present.
    batch_size: size of the batch dimension (unknown first dimension) of the
      synthesized inputs.
    memory_budget_bytes: restore groups are packed into one session up to
      this many bytes of variables (see the module docstring).
    reference: each signature's frozen graph alone (`numerics.Reference`):
      signatures it knows are also compared with their graph's answers on
      the same inputs, with Grappler on as in a server (slower).
    timeout_seconds: deadline of each run (restore, init op, signature).
    allow_ops: denied ops (python/common/denied_ops.txt) accepted anyway.
    name: how messages name the bundle (default: "bundle <export_dir>").

  Returns:
    Signature name -> SignatureCheck, for every signature of the MetaGraph.

  Raises:
    errors.CheckTimeoutError: a run did not finish within timeout_seconds.
    errors.VerifyError: the bundle does not load, holds denied ops, a
      signature is missing or does not run, or an output has the wrong dtype
      or shape. The message names the bundle, the signature and the alias.
  """
  if not (isinstance(timeout_seconds, (int, float)) and timeout_seconds > 0):
    raise errors.VerifyError(
        f"timeout_seconds={timeout_seconds!r} must be a positive number of "
        "seconds.")
  label = name or f"bundle {export_dir}"

  def load_error(problem: str) -> errors.VerifyError:
    return errors.VerifyError(
        f"{label} does not load under tags {list(tags)}: {problem}")

  meta_graph = _read_meta_graph(export_dir, tags, load_error)
  findings = op_policy.find_denied_ops(
      meta_graph.graph_def, allowed=allow_ops,
      exempt_nodes=op_policy.saver_exemptions(meta_graph),
      saver_functions=op_policy.saver_only_functions(meta_graph))
  if findings:
    raise errors.VerifyError(op_policy.refusal(findings, label) +
                             " Nothing was run.")
  runner = _Runner(timeout_seconds, label)
  signatures = {name: signature
                for name, signature in meta_graph.signature_def.items()
                if name != _INIT_OP_SIGNATURE_KEY}
  if expected_signatures is not None:
    missing = [s for s in expected_signatures if s not in signatures]
    if missing:
      raise errors.VerifyError(
          f"{label} lacks signature(s) {missing}; it has "
          f"{sorted(signatures)}.")
  if not signatures:
    raise errors.VerifyError(f"{label} has no signatures.")

  graph_index = _Graph(meta_graph.graph_def)
  node_names = graph_index.nodes
  failures = {}
  tensors = {}  # Signature -> the tensor names of its inputs and outputs.
  for name in sorted(signatures):
    try:
      tensors[name] = _signature_tensors(name, signatures[name], node_names)
    except errors.VerifyError as e:
      failures[name] = str(e)
  init_op = _init_op(meta_graph)
  assets = _asset_feeds(export_dir, meta_graph)
  saver = meta_graph.saver_def if meta_graph.HasField("saver_def") else None
  wanted = {init_op} if init_op else set()
  wanted.update(_node(t) for t in assets)
  if saver is not None:
    wanted.update((saver.restore_op_name,
                   _node(saver.filename_tensor_name)))
    variables = os.path.join(export_dir, "variables", "variables")
    if not tf.io.gfile.exists(variables + ".index"):
      raise load_error(
          f"{variables}.index is missing, but the graph restores variables "
          "from it (SaverDef); write the checkpoint or drop the SaverDef.")
  for names in tensors.values():
    wanted.update(_node(t) for t in names)
  missing_ops = sorted(n for n in wanted if n not in node_names)
  if missing_ops:
    raise load_error(f"the graph lacks node(s) {missing_ops} that the "
                     "MetaGraph's SaverDef, init op or assets name.")
  plan = _plan(meta_graph, graph_index, init_op, sorted(tensors),
               memory_budget_bytes)
  wanted.update(op for session in plan for op in session.restore_ops)
  try:
    graph, ops = graph_import.import_graph_def(
        meta_graph.graph_def.SerializeToString(), wanted)
  except ValueError as e:
    raise load_error(_short(e)) from e

  def tensor(name: str) -> tf.Tensor:
    node, _, index = name.partition(":")
    return ops[node].outputs[int(index or 0)]

  examples = warmup_lib.ExampleSynthesizer(meta_graph.graph_def)
  replays = _warmup_replays(export_dir, signatures, load_error)
  warmup_failures = {}  # Record index -> message.
  results = {}
  for session in plan:
    config = (numerics_lib.server_config() if reference is not None else
              _session_config())
    sess = tf.compat.v1.Session(graph=graph, config=config)
    try:
      try:
        if session.restore_ops:
          runner.run(sess, [ops[op] for op in session.restore_ops],
                     {tensor(saver.filename_tensor_name): variables},
                     "restoring the variables")
        if init_op:
          runner.run(sess, ops[init_op],
                     {tensor(t): path for t, path in assets.items()},
                     f"the init op {init_op}")
      except tf.errors.OpError as e:
        raise load_error(_short(e)) from e
      for signature_name in session.signatures:
        try:
          results[signature_name] = _run_signature(
              runner, sess, tensor, signature_name,
              signatures[signature_name], batch_size, examples, reference)
        except errors.CheckTimeoutError:
          raise
        except errors.VerifyError as e:
          failures[signature_name] = str(e)
      for replay in replays:
        # A signature that failed on its own is reported once, as itself.
        if (replay.signatures[0] in session.signatures and
            not any(name in failures for name in replay.signatures)):
          try:
            _replay(runner, sess, tensor, replay)
          except (tf.errors.OpError, ValueError) as e:  # Run or feed errors.
            warmup_failures[replay.index] = (
                f"warmup record {replay.index} ({replay.kind} of signature(s) "
                f"{', '.join(replay.signatures)}) fails, so TF Serving would "
                f"not load this version: {_short(e)}")
    finally:
      if not runner.abandoned:
        sess.close()
  if failures or warmup_failures:
    parts = []
    if failures:
      parts.append(f"{len(failures)} of {len(signatures)} signature(s)")
    if warmup_failures:
      parts.append(f"{len(warmup_failures)} of {len(replays)} warmup "
                   "record(s)")
    raise errors.VerifyError(
        f"{label}: {' and '.join(parts)} failed the check:\n  " +
        "\n  ".join([failures[name] for name in sorted(failures)] +
                     [warmup_failures[i] for i in sorted(warmup_failures)]))
  return results


class _Runner:
  """Session.run with a deadline that holds even for uncancellable graphs."""

  def __init__(self, timeout_seconds: float, label: str):
    self.timeout_seconds = float(timeout_seconds)
    self.label = label
    self.abandoned = False
    self._options = config_pb2.RunOptions(
        timeout_in_ms=max(int(self.timeout_seconds * 1000), 1))

  def _timeout(self, what: str, abandoned: bool) -> errors.CheckTimeoutError:
    return errors.CheckTimeoutError(
        f"{self.label}: {what} did not finish within the check's deadline of "
        f"{self.timeout_seconds:g} s (--check_timeout_seconds)"
        + ("; it could not be stopped (e.g. a loop that never ends)" if
           abandoned else "") +
        ". A graph that never finishes cannot be served: fix the model, or "
        "raise --check_timeout_seconds if it is merely slow.", abandoned)

  def run(self, sess, fetches, feed: dict, what: str) -> Any:
    """sess.run(fetches, feed) within the deadline; see the module doc."""
    outcome = {}

    def target():
      try:
        outcome["value"] = sess.run(fetches, feed_dict=feed,
                                    options=self._options)
      except BaseException as e:  # pylint: disable=broad-except
        outcome["error"] = e

    thread = threading.Thread(target=target, name="bundle-check-run",
                              daemon=True)
    thread.start()
    thread.join(self.timeout_seconds + _CANCEL_GRACE_SECONDS)
    if thread.is_alive():
      self.abandoned = True
      _ABANDONED_SESSIONS.append(sess)
      raise self._timeout(what, abandoned=True)
    error = outcome.get("error")
    if isinstance(error, tf.errors.DeadlineExceededError):
      raise self._timeout(what, abandoned=False) from error
    if error is not None:
      raise error
    return outcome["value"]


def plan_sessions(meta_graph: meta_graph_pb2.MetaGraphDef,
                  signatures: Sequence[str],
                  memory_budget_bytes: int) -> list[SessionPlan]:
  """Splits the restore into sessions, each with the signatures it serves.

  A restore group is a control input of the restore op (when that is a NoOp
  with only control inputs; else the restore op itself), and groups that
  share a RestoreV2 are one group (e.g. a tf.compat.v1 Saver's per-variable
  assigns from one RestoreV2). A signature needs the groups that restore the
  variables its outputs depend on (variables matched by shared name); the
  init op's groups go into every session. Signatures needing overlapping
  groups share a session; sessions are then packed in order while their
  variables fit `memory_budget_bytes` (or the largest single unit).

  Args:
    meta_graph: the MetaGraph to load.
    signatures: names of the signatures to run (in this order).
    memory_budget_bytes: see above.

  Returns:
    The sessions, in order. Every restore group is in at least one.
  """
  return _plan(meta_graph, _Graph(meta_graph.graph_def), _init_op(meta_graph),
               signatures, memory_budget_bytes)


def _plan(meta_graph, graph: "_Graph", init_op: Optional[str],
          signatures: Sequence[str],
          memory_budget_bytes: int) -> list[SessionPlan]:
  groups = _restore_groups(meta_graph, graph)
  group_of = {var: index for index, group in enumerate(groups)
              for var in group.variables}

  def needed(starts) -> frozenset:
    return frozenset(group_of[var] for var in graph.variables_of(starts)
                     if var in group_of)

  always = needed([init_op]) if init_op else frozenset()
  # Units: (groups, signatures), merged while they share a group.
  units = []
  for name in signatures:
    signature = meta_graph.signature_def[name]
    outputs = [_node(info.name) for info in signature.outputs.values()
               if info.WhichOneof("encoding") == "name"]
    unit_groups, unit_names = set(needed(outputs)), [name]
    for other in [u for u in units if u[0] & unit_groups]:
      units.remove(other)
      unit_groups |= other[0]
      unit_names = other[1] + unit_names
    units.append((unit_groups, unit_names))
  used = set().union(*(u[0] for u in units)) | always
  units.extend(({i}, []) for i in range(len(groups)) if i not in used)

  def size(group_set) -> int:
    return sum(groups[i].nbytes for i in group_set | always)

  budget = max([memory_budget_bytes] + [size(u[0]) for u in units])
  sessions = []
  current_groups, current_names = set(), []
  for unit_groups, unit_names in units:
    if (current_groups or current_names) and size(
        current_groups | unit_groups) > budget:
      sessions.append((current_groups, current_names))
      current_groups, current_names = set(), []
    current_groups |= unit_groups
    current_names += unit_names
  if current_groups or current_names or not sessions:
    sessions.append((current_groups, current_names))
  return [
      SessionPlan(
          restore_ops=tuple(op for i in sorted(group_set | always)
                            for op in groups[i].ops),
          signatures=tuple(names),
          variable_bytes=size(group_set)) for group_set, names in sessions
  ]


@dataclasses.dataclass
class _RestoreGroup:
  ops: list
  readers: set  # RestoreV2-like nodes it runs.
  variables: dict  # Identity of each variable it assigns -> its bytes.

  @property
  def nbytes(self) -> int:
    return sum(self.variables.values())


class _Graph:
  """Node lookup and ancestor walks over a GraphDef."""

  def __init__(self, graph_def):
    self.nodes = {node.name: node for node in graph_def.node}

  def ancestors(self, starts) -> set:
    seen = set()
    stack = [s for s in starts if s in self.nodes]
    while stack:
      name = stack.pop()
      if name in seen:
        continue
      seen.add(name)
      for source in self.nodes[name].input:
        source = _node(source.lstrip("^"))
        if source not in seen and source in self.nodes:
          stack.append(source)
    return seen

  def variable_id(self, name: str) -> tuple[str, str]:
    """A variable's identity: (container, shared name or node name)."""
    node = self.nodes[name]
    shared = node.attr["shared_name"].s.decode() if (
        "shared_name" in node.attr) else ""
    container = node.attr["container"].s.decode() if (
        "container" in node.attr) else ""
    return container, shared or name

  def variables_of(self, starts) -> set:
    return {self.variable_id(name) for name in self.ancestors(starts)
            if self.nodes[name].op in _VARIABLE_OPS}

  def variable_bytes(self, name: str) -> int:
    node = self.nodes[name]
    dims = [d.size for d in node.attr["shape"].shape.dim]
    if node.attr["shape"].shape.unknown_rank or any(d < 0 for d in dims):
      return 0
    dtype = tf.dtypes.as_dtype(node.attr["dtype"].type).base_dtype
    return int(np.prod(dims, dtype=np.int64)) * max(dtype.size, 1)


def _restore_groups(meta_graph, graph: _Graph) -> list[_RestoreGroup]:
  if not meta_graph.HasField("saver_def"):
    return []
  restore = graph.nodes[meta_graph.saver_def.restore_op_name]
  heads = [restore.name]
  if (restore.op == "NoOp" and restore.input and
      all(i.startswith("^") for i in restore.input)):
    heads = [i[1:] for i in restore.input]
  groups = []
  for head in heads:
    ancestors = graph.ancestors([head])
    readers = {n for n in ancestors if graph.nodes[n].op in _RESTORE_OPS}
    group = _RestoreGroup(
        ops=[head], readers=readers,
        variables={graph.variable_id(n): graph.variable_bytes(n)
                   for n in ancestors if graph.nodes[n].op in _VARIABLE_OPS})
    for other in [g for g in groups if g.readers & readers]:
      groups.remove(other)
      group.ops = other.ops + group.ops
      group.readers |= other.readers
      group.variables.update(other.variables)
    groups.append(group)
  return groups


def _read_meta_graph(export_dir: str, tags: Sequence[str],
                     load_error) -> meta_graph_pb2.MetaGraphDef:
  """The MetaGraph of saved_model.pb(txt) whose tag-set is `tags`."""
  try:
    saved_model = saved_model_io.read_saved_model(export_dir)
  except saved_model_io.SavedModelReadError as e:
    raise load_error(str(e)) from e
  for meta_graph in saved_model.meta_graphs:
    if set(meta_graph.meta_info_def.tags) == set(tags):
      return meta_graph
  found = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
  raise load_error(f"it has no MetaGraph with exactly these tags; its tag "
                   f"sets are {found}.")


@dataclasses.dataclass(frozen=True)
class _Replay:
  """One warmup record, as feeds and fetches of the signatures it calls."""
  index: int
  kind: str
  signatures: tuple[str, ...]
  feeds: dict  # Tensor name -> value.
  fetches: tuple[str, ...]  # Tensor names.


def _examples_value(request_input) -> np.ndarray:
  """Serialized tf.Examples of a Classify/Regress `Input`, as TF Serving.

  With a context, each example is the context's bytes followed by the
  example's: protobuf merges the two, the example's values winning.
  """
  kind = request_input.WhichOneof("kind")
  if kind == "example_list_with_context":
    listed = request_input.example_list_with_context
    context = listed.context.SerializeToString()
    values = [context + e.SerializeToString() for e in listed.examples]
  elif kind == "example_list":
    values = [e.SerializeToString()
              for e in request_input.example_list.examples]
  else:
    values = []
  return np.array(values, dtype=object)


def _warmup_replays(export_dir: str, signatures: dict,
                    load_error) -> list[_Replay]:
  """The warmup records of a bundle, each mapped onto its signatures.

  Raises:
    VerifyError: the file is unreadable or corrupt, or a record names a
      signature or an input alias the bundle does not have (TF Serving
      fails the load on each).
  """
  path = export_dir.rstrip("/") + "/" + warmup_lib.WARMUP_FILE
  if not tf.io.gfile.exists(path):
    return []
  try:
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
  except tf.errors.OpError as e:
    raise load_error(f"its warmup file {path} is corrupt: {_short(e)}") from e
  replays = []
  for index, record in enumerate(records):
    log = prediction_log_pb2.PredictionLog()
    try:
      log.ParseFromString(record)
    except message_lib.DecodeError as e:
      raise load_error(f"warmup record {index} of {path} is not a "
                       f"PredictionLog: {e}") from e
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
      request = log.predict_log.request
      calls = [(request.model_spec.signature_name or _DEFAULT_SIGNATURE,
                {a: tf.make_ndarray(t) for a, t in request.inputs.items()},
                tuple(request.output_filter))]
    elif kind in ("classify_log", "regress_log"):
      request = getattr(log, kind).request
      calls = [(request.model_spec.signature_name or _DEFAULT_SIGNATURE,
                {_EXAMPLES_ALIAS: _examples_value(request.input)}, ())]
    elif kind == "multi_inference_log":
      request = log.multi_inference_log.request
      value = _examples_value(request.input)
      calls = [(task.model_spec.signature_name or _DEFAULT_SIGNATURE,
                {_EXAMPLES_ALIAS: value}, ()) for task in request.tasks]
    else:
      raise load_error(
          f"warmup record {index} of {path} is a {kind or 'empty log'}; the "
          "merge writes and checks predict, classify, regress and "
          "multi-inference records only.")
    feeds, fetches, names = {}, [], []
    for name, inputs, output_filter in calls:
      signature = signatures.get(name)
      if signature is None:
        raise load_error(
            f"warmup record {index} ({kind}) calls signature {name!r}, which "
            f"the bundle does not have; it has {sorted(signatures)}.")
      for alias, value in inputs.items():
        info = signature.inputs.get(alias)
        if info is None:
          raise load_error(
              f"warmup record {index} ({kind}) sends input {alias!r} to "
              f"signature {name!r}, whose inputs are "
              f"{sorted(signature.inputs)}.")
        feeds[info.name] = value
      outputs = output_filter or tuple(sorted(signature.outputs))
      fetches.extend(signature.outputs[a].name for a in outputs
                     if a in signature.outputs)
      names.append(name)
    replays.append(_Replay(index=index, kind=kind.replace("_log", ""),
                           signatures=tuple(names), feeds=feeds,
                           fetches=tuple(dict.fromkeys(fetches))))
  return replays


def _replay(runner: _Runner, sess, tensor, replay: _Replay) -> None:
  """Runs one warmup record (raises the run's OpError)."""
  runner.run(sess, [tensor(n) for n in replay.fetches],
             {tensor(n): v for n, v in replay.feeds.items()},
             f"warmup record {replay.index}")


def _init_op(meta_graph) -> Optional[str]:
  """The op TF's loaders run after restoring (main op or legacy init op)."""
  signature = meta_graph.signature_def.get(_INIT_OP_SIGNATURE_KEY)
  if signature is not None:
    info = signature.outputs.get(_INIT_OP_SIGNATURE_KEY)
    if info is not None and info.name:
      return _node(info.name)
  for key in (_MAIN_OP_COLLECTION, _LEGACY_INIT_OP_COLLECTION):
    if key in meta_graph.collection_def:
      values = meta_graph.collection_def[key].node_list.value
      if values:
        return _node(values[0])
  return None


def _asset_feeds(export_dir: str, meta_graph) -> dict[str, str]:
  """Asset tensor name -> path of the file under assets/, as loaders feed."""
  asset_defs = list(meta_graph.asset_file_def)
  if not asset_defs and _ASSETS_COLLECTION in meta_graph.collection_def:
    for value in meta_graph.collection_def[_ASSETS_COLLECTION].any_list.value:
      asset_def = meta_graph_pb2.AssetFileDef()
      value.Unpack(asset_def)
      asset_defs.append(asset_def)
  return {a.tensor_info.name: os.path.join(export_dir, "assets", a.filename)
          for a in asset_defs}


def _node(tensor_name: str) -> str:
  return tensor_name.partition(":")[0]


def _session_config() -> tf.compat.v1.ConfigProto:
  """Session options for the check: Grappler off.

  The check is about whether the bundle loads and every signature runs with
  the declared dtypes and shapes. Grappler's rewrites do not change either
  (and its failures are never fatal for a server), but optimizing each
  signature's subgraph on its first run took most of the check's time
  (~0.4 s per signature on a 16k-node bundle, vs ~0.05 s to run it).
  """
  config = tf.compat.v1.ConfigProto()
  config.graph_options.rewrite_options.disable_meta_optimizer = True
  return config


def _signature_tensors(name: str, signature, node_names) -> list[str]:
  """The tensor names of a signature, checked against the graph's nodes."""
  tensors = []
  for kind, infos in (("input", signature.inputs),
                      ("output", signature.outputs)):
    for alias, info in sorted(infos.items()):
      if info.WhichOneof("encoding") != "name":
        raise errors.VerifyError(
            f'signature "{name}" {kind} "{alias}" uses the '
            f"{info.WhichOneof('encoding')} encoding; only dense tensors "
            "(name) are supported.")
      if _node(info.name) not in node_names:
        raise errors.VerifyError(
            f'signature "{name}" {kind} "{alias}" names tensor '
            f'"{info.name}", which is not in the graph.')
      tensors.append(info.name)
  return tensors


def _run_signature(
    runner: _Runner, sess: tf.compat.v1.Session, tensor, name: str, signature,
    batch_size: int, examples: warmup_lib.ExampleSynthesizer,
    reference: Optional[numerics_lib.Reference] = None) -> SignatureCheck:
  """Runs one signature on inputs of python/common/synthesis's policy.

  Inputs of unknown rank have several candidate shapes (the graph's own,
  then [], [1], [batch]): attempt k feeds every such input its k-th
  candidate (or its last), and the first attempt that runs is checked.
  """
  try:
    aliases = sorted(signature.inputs)
    candidates = {alias: _candidates(signature.inputs[alias], batch_size,
                                     examples) for alias in aliases}
    fetches = {alias: tensor(info.name)
               for alias, info in signature.outputs.items()}
    feeds_of = {alias: tensor(signature.inputs[alias].name)
                for alias in aliases}
  except (IndexError, ValueError) as e:
    raise errors.VerifyError(
        f'signature "{name}" names a tensor the graph does not have: '
        f"{e}") from e
  attempts = max((len(c) for c in candidates.values()), default=1)
  first_error = None
  for attempt in range(attempts):
    by_alias = {alias: c[min(attempt, len(c) - 1)]
                for alias, c in candidates.items()}
    feed = {feeds_of[alias]: value for alias, value in by_alias.items()}
    try:
      values = runner.run(sess, fetches, feed, f'signature "{name}"')
      break
    except tf.errors.OpError as e:
      first_error = first_error or e
  else:
    tried = "; ".join(
        f"{alias}: " + ", ".join(str(list(v.shape)) for v in c)
        for alias, c in candidates.items() if len(c) > 1)
    raise errors.VerifyError(
        f'signature "{name}" does not run on synthesized inputs '
        f"(batch {batch_size}{'; shapes tried ' + tried if tried else ''}): "
        f"{_short(first_error)}") from first_error
  outputs = {}
  for alias, info in sorted(signature.outputs.items()):
    value = np.asarray(values[alias])
    want = tf.dtypes.as_dtype(info.dtype)
    got = tf.dtypes.as_dtype(value.dtype) if value.dtype != object else (
        tf.string)
    if got != want:
      raise errors.VerifyError(
          f'signature "{name}" output "{alias}": declared {want.name} but '
          f"the graph returns {got.name}.")
    declared = tf.TensorShape(info.tensor_shape)
    if not declared.is_compatible_with(value.shape):
      raise errors.VerifyError(
          f'signature "{name}" output "{alias}": declared shape {declared} '
          f"but the graph returns shape {list(value.shape)}.")
    outputs[alias] = (want.name, tuple(value.shape))
  # numerics: the same inputs through the frozen graph alone.
  numerics = None
  if reference is not None and name in reference:
    numerics = reference.compare(name, by_alias, values)
  return SignatureCheck(method_name=signature.method_name, outputs=outputs,
                        numerics=numerics)


def _candidates(info, batch_size: int,
                examples: warmup_lib.ExampleSynthesizer) -> list:
  """The values to try for one input (python/common/synthesis's policy)."""
  shape = tf.TensorShape(info.tensor_shape)
  dims = (None if shape.rank is None else
          [-1 if d is None else d for d in shape.as_list()])
  return examples.input_candidates(info.name, tf.dtypes.as_dtype(info.dtype),
                                   dims, batch_size)


def _short(e: Exception) -> str:
  """The useful part of an error: no Python stack traces, bounded length."""
  text = e.message if isinstance(e, tf.errors.OpError) else str(e)
  text = text.split("Original stack trace")[0]
  lines = []
  for line in text.splitlines():
    stripped = line.strip()
    if (not stripped or stripped == "Graph execution error:" or
        stripped.startswith(("Detected at node", "File \"")) or
        line.startswith("    ")):
      continue
    lines.append(stripped)
  text = " ".join(lines)
  return text if len(text) <= _MAX_ERROR_CHARS else (
      text[:_MAX_ERROR_CHARS] + "...")
