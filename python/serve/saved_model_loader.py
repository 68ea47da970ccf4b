"""Loading a SavedModel into a session the way TensorFlow's C++ loader does.

TF Serving loads a version with `tensorflow::LoadSavedModel`
(cc/saved_model/loader.cc), which in C++:

1. reads saved_model.pb and picks the MetaGraphDef whose tags are the
   requested ones;
2. creates the session on its GraphDef (`Session::Create`);
3. restores the variables: runs `saver_def.restore_op_name` with
   `saver_def.filename_tensor_name` fed `<export>/variables/variables`, and
   skips this when there is no `variables/variables.index`;
4. runs the init op: the `__saved_model_init_op` signature's output, else
   the one node of the `saved_model_main_op` collection, else of
   `legacy_init_op`;

feeding every asset tensor (`asset_file_def`, else the `saved_model_assets`
collection) `<export>/assets/<filename>` in both runs.

`load` does the same steps, and runs them through session callables, as
`RunOnce` does. What it does not do is what `tf.compat.v1.saved_model.loader`
adds in Python: a Python `Operation` for each of the graph's nodes, the
collections rebuilt as Python objects, and a `Saver`. The server never uses
those (requests run callables on tensor names), and on a merged bundle of a
few thousand nodes that wrapping is most of a load. It is also pure Python,
so it competes for the GIL with the threads serving the other versions while
a new version loads. Here the only step that holds the GIL for long is the
GraphDef import itself (`graph_import`); restore and init run in the
session with the GIL released.

When the wrapper-free import is not available (another TensorFlow than the
pinned one), or the bundle has variables but no saver_def (the Python loader
then builds a Saver), `load` uses `tf.compat.v1.saved_model.loader.load`.
"""

import os
import re
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.saved_model import loader_impl

from python.common import graph_import
from python.serve import load_priority

# Names TensorFlow's loader looks up (cc/saved_model/constants.h).
INIT_OP_SIGNATURE_KEY = '__saved_model_init_op'
MAIN_OP_KEY = 'saved_model_main_op'
LEGACY_INIT_OP_KEY = 'legacy_init_op'

_TENSOR_SUFFIX = re.compile(r':\d+$')


def load(path: str, tags: Sequence[str],
         session_config: Optional[tf.compat.v1.ConfigProto] = None
        ) -> Tuple[tf.compat.v1.Session, meta_graph_pb2.MetaGraphDef]:
  """Loads the MetaGraphDef of `tags` from `path` into a new session.

  Args:
    path: A SavedModel directory (saved_model.pb or saved_model.pbtxt).
    tags: The MetaGraphDef's tags, as a set (order does not matter).
    session_config: Optional session ConfigProto.

  Returns:
    (session, meta_graph_def): the session, restored and initialized, on a
    finalized graph, and the MetaGraphDef loaded.

  Raises:
    IOError: there is no saved_model.pb(txt) in `path`.
    RuntimeError: no MetaGraphDef has exactly `tags` (TensorFlow's message,
      which lists the tag sets there are).
    tf.errors.OpError: the graph does not import (unknown op, bad attr ...)
      or restore/init failed, with TensorFlow's status code.
  """
  reader = loader_impl.SavedModelLoader(path)
  meta_graph_def = reader.get_meta_graph_def_from_tags(list(tags))
  index = os.path.join(path, 'variables', 'variables.index')
  has_variables = tf.io.gfile.exists(index)
  restore_op = meta_graph_def.saver_def.restore_op_name
  if not graph_import.fast_path_available() or (has_variables and
                                                not restore_op):
    return _load_python(path, tags, session_config), meta_graph_def

  _validate_saved_tensors(meta_graph_def.graph_def)
  try:
    graph, _ = graph_import.import_graph_def(
        meta_graph_def.graph_def.SerializeToString(), ())
  except ValueError as e:
    # Keep TensorFlow's status (NOT_FOUND for an unregistered op ...), as
    # Session::Create reports it to TF Serving.
    if isinstance(e.__cause__, tf.errors.OpError):
      raise e.__cause__ from None
    raise
  session = tf.compat.v1.Session(graph=graph, config=session_config)
  try:
    assets = {
        name: os.fsdecode(value) for name, value in
        loader_impl.get_asset_tensors(path, meta_graph_def).items()
    }
    if has_variables:
      feeds = dict(assets)
      feeds[meta_graph_def.saver_def.filename_tensor_name] = os.path.join(
          path, 'variables', 'variables')
      run_once(session, feeds, restore_op)
    init_op = init_op_name(meta_graph_def)
    if init_op:
      run_once(session, assets, init_op)
  except BaseException:
    session.close()
    raise
  graph.finalize()
  return session, meta_graph_def


def init_op_name(meta_graph_def: meta_graph_pb2.MetaGraphDef) -> str:
  """The init op TensorFlow's loader runs ('' for none), as GetInitOp finds it.

  Raises:
    tf.errors.FailedPreconditionError: the init op collection holds other
      than exactly one node.
  """
  signature = meta_graph_def.signature_def.get(INIT_OP_SIGNATURE_KEY)
  if signature is not None:
    output = signature.outputs.get(INIT_OP_SIGNATURE_KEY)
    return output.name if output is not None else ''
  collections = meta_graph_def.collection_def
  key = MAIN_OP_KEY if MAIN_OP_KEY in collections else LEGACY_INIT_OP_KEY
  if key not in collections:
    return ''
  nodes = collections[key].node_list.value
  if len(nodes) != 1:
    raise tf.errors.FailedPreconditionError(
        None, None,
        f'Expected exactly one main op in the {key} collection; found '
        f'{len(nodes)}: {list(nodes)}')
  return nodes[0]


def run_once(session: tf.compat.v1.Session, feeds: Mapping[str, str],
             target: str) -> None:
  """Runs `target` with string scalar feeds once, through a callable.

  As TensorFlow's `RunOnce`: the callable (and the executor it pruned) is
  released right after the run, so an init graph's constants do not stay
  allocated for the life of the session.
  """
  names = sorted(feeds)
  options = config_pb2.CallableOptions(
      feed=names, target=[_TENSOR_SUFFIX.sub('', target.lstrip('^'))])
  # Pruning and instantiating the run is native and GIL-free: niced.
  # pylint: disable-next=protected-access
  run = load_priority.run_niced(session._make_callable_from_options, options)
  try:
    run(*[np.array(os.fsencode(feeds[name]), dtype=object) for name in names])
  finally:
    del run  # Releases the callable (TF_SessionReleaseCallable).


def _validate_saved_tensors(graph_def: tf.compat.v1.GraphDef) -> None:
  """Refuses what TensorFlow's loader refuses (ValidateSavedTensors)."""
  for node in graph_def.node:
    if 'value' in node.attr:
      value = node.attr['value']
      if value.HasField('tensor'):
        dims = [d.size for d in value.tensor.tensor_shape.dim]
        if value.tensor.tensor_shape.unknown_rank or any(d < 0 for d in dims):
          raise tf.errors.FailedPreconditionError(
              None, None,
              f'Saved model contains node "{node.name}" (op "{node.op}") '
              'which initializes from a tensor with -1 elements')
    elif node.op == 'Const':
      raise tf.errors.FailedPreconditionError(
          None, None,
          f'Saved model contains node "{node.name}" which is a constant '
          'tensor but no value has been provided')


def _load_python(path: str, tags: Sequence[str],
                 session_config: Optional[tf.compat.v1.ConfigProto]
                ) -> tf.compat.v1.Session:
  """TensorFlow's Python v1 loader (wraps every node; see the docstring)."""
  graph = tf.Graph()
  session = tf.compat.v1.Session(graph=graph, config=session_config)
  try:
    with graph.as_default():
      tf.compat.v1.saved_model.loader.load(session, list(tags), path)
  except BaseException:
    session.close()
    raise
  graph.finalize()
  return session
