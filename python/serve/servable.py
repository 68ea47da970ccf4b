"""One loaded SavedModel version: a TensorFlow session plus its signatures.

TF Serving keeps one `SavedModelBundle` (session + MetaGraphDef) per loaded
version. `Servable` is the same thing built on TensorFlow's Python runtime:
`tf.compat.v1` loader under the requested tags, one `Session` per version, feeds
and fetches by tensor name. `Session.run` releases the GIL, so many request
threads can run one servable at once. A reference count lets the manager unload
a version only after every request holding it has finished.
"""

import threading
from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from python.serve import serving_error


class LoadError(Exception):
  """A SavedModel version could not be loaded (or warmed up)."""


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
               meta_graph_def: meta_graph_pb2.MetaGraphDef):
    self.name = name
    self.version = version
    self.path = path
    self.meta_graph_def = meta_graph_def
    self.signatures = meta_graph_def.signature_def
    self._session = session
    self._cond = threading.Condition()
    self._refs = 0
    self._closed = False

  def run(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str],
          timeout_s: Optional[float] = None) -> list:
    """Runs the session, mapping TensorFlow errors to `ServingError`.

    Args:
      feeds: Tensor name -> value.
      fetches: Tensor names to fetch.
      timeout_s: Optional deadline for the run, in seconds.

    Returns:
      The fetched values, in `fetches` order.

    Raises:
      ServingError: the runtime rejected the inputs or failed.
    """
    options = None
    if timeout_s is not None:
      options = tf.compat.v1.RunOptions(
          timeout_in_ms=max(1, int(timeout_s * 1000)))
    try:
      return self._session.run(list(fetches), feed_dict=dict(feeds),
                               options=options)
    except tf.errors.OpError as e:
      raise serving_error.ServingError(
          serving_error.status_code_from_tf(e.error_code), e.message) from e
    except (ValueError, TypeError) as e:
      raise serving_error.invalid_argument(str(e)) from e

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
    self._session.close()
    return True

  @property
  def in_use(self) -> int:
    """How many requests hold this version right now."""
    with self._cond:
      return self._refs


def load(name: str, version: int, path: str, tags: Sequence[str],
         session_config: Optional[tf.compat.v1.ConfigProto] = None
        ) -> Servable:
  """Loads one SavedModel version directory like TF Serving's bundle factory.

  Args:
    name: Model name (for messages).
    version: Version number.
    path: The version directory holding saved_model.pb.
    tags: MetaGraph tags to load, usually ["serve"].
    session_config: Optional session ConfigProto (thread pools).

  Returns:
    The loaded servable.

  Raises:
    LoadError: the directory is not a loadable SavedModel for `tags`.
  """
  graph = tf.Graph()
  session = tf.compat.v1.Session(graph=graph, config=session_config)
  try:
    with graph.as_default():
      meta_graph_def = tf.compat.v1.saved_model.loader.load(
          session, list(tags), path)
  except Exception as e:  # pylint: disable=broad-except
    session.close()
    detail = e.message if isinstance(e, tf.errors.OpError) else str(e)
    raise LoadError(
        f'Failed to load servable {{name: {name} version: {version}}} from '
        f'{path} with tags {{{",".join(tags)}}}: {detail}') from e
  graph.finalize()
  return Servable(name, version, path, session, meta_graph_def)

