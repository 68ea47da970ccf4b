"""Runs every signature of SavedModels and compares their answers.

Used by the benchmarks to check that our merged bundle answers exactly as the
seed approach's bundle does, on every signature, for the same inputs.
"""

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tests.bench import graph_gen


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Answers of one signature in two bundles.

  Attributes:
    signature: The signature name.
    identical: Every output is bit-identical.
    max_abs_diff: Largest absolute difference over all outputs.
  """
  signature: str
  identical: bool
  max_abs_diff: float


def run_signatures(
    export_dir: str, feeds: Mapping[str, Mapping[str, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
  """Loads `export_dir` (tag serve) and runs the given signatures.

  Args:
    export_dir: A SavedModel directory.
    feeds: Signature name -> input alias -> value.

  Returns:
    Signature name -> output alias -> value.

  Raises:
    KeyError: a signature or alias of `feeds` is not in the bundle.
  """
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    answers = {}
    for name, inputs in feeds.items():
      signature = meta.signature_def[name]
      feed_dict = {signature.inputs[alias].name: value
                   for alias, value in inputs.items()}
      fetches = {alias: info.name for alias, info in signature.outputs.items()}
      answers[name] = sess.run(fetches, feed_dict)
  return answers


def compare_bundles(reference_dir: str, candidate_dir: str,
                    graphs: Sequence[graph_gen.GraphInfo],
                    batch_size: int = 4) -> list[Comparison]:
  """Runs every graph's signature in both bundles on the same inputs.

  Args:
    reference_dir: The bundle taken as truth (e.g. the seed approach's).
    candidate_dir: The bundle checked against it.
    graphs: The generated graphs (one signature each).
    batch_size: Batch size of the inputs.

  Returns:
    One Comparison per signature.
  """
  feeds = {g.signature_name: graph_gen.sample_feeds(g, batch_size, seed=i)
           for i, g in enumerate(graphs)}
  reference = run_signatures(reference_dir, feeds)
  candidate = run_signatures(candidate_dir, feeds)
  comparisons = []
  for name in feeds:
    identical, diff = True, 0.0
    for alias, want in reference[name].items():
      got = candidate[name][alias]
      if got.shape != want.shape or got.dtype != want.dtype:
        identical, diff = False, float("inf")
        continue
      identical = identical and np.array_equal(got, want)
      if want.size:
        diff = max(diff, float(np.max(np.abs(
            got.astype(np.float64) - want.astype(np.float64)))))
    comparisons.append(Comparison(name, identical, diff))
  return comparisons
