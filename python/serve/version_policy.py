"""Which versions to serve, and the next (un)load: pure functions.

Two policies of TF Serving, each a pure function of what it looks at, so they
are tested without loading anything:

* `aspired_versions`: the model's `model_version_policy` (latest{num_versions},
  all, specific{versions}) applied to the versions found under its base path,
  as FileSystemStoragePathSource's ServableVersionPolicy does;
* `next_action`: AvailabilityPreservingPolicy, the manager's choice of the
  next load or unload given what is aspired and what it holds.

`storage_path_source` applies the first, `model_manager.ModelManager` carries
out the answers of the second.
"""

from typing import Collection, Dict, Mapping, Optional, Tuple

from absl import logging
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

State = get_model_status_pb2.ModelVersionStatus.State

# What `next_action` asks the manager to do with one version.
LOAD = 'load'
UNLOAD = 'unload'


def aspired_versions(config: model_server_config_pb2.ModelConfig,
                     on_disk: Dict[int, str]) -> Dict[int, str]:
  """Applies a model's version policy to the versions found on disk.

  Args:
    config: The model config holding `model_version_policy`.
    on_disk: Version number -> version directory.

  Returns:
    The subset of `on_disk` that should be loaded.
  """
  policy = config.model_version_policy
  choice = policy.WhichOneof('policy_choice')
  if choice == 'all':
    return dict(on_disk)
  if choice == 'specific':
    wanted = set(policy.specific.versions)
    missing = wanted - set(on_disk)
    if missing:
      logging.warning('Model %s: specific versions %s not found under %s',
                      config.name, sorted(missing), config.base_path)
    return {v: p for v, p in on_disk.items() if v in wanted}
  num_versions = 1
  if choice == 'latest' and policy.latest.num_versions > 0:
    num_versions = policy.latest.num_versions
  newest = sorted(on_disk, reverse=True)[:num_versions]
  return {v: on_disk[v] for v in newest}


def next_action(aspired: Collection[int], states: Mapping[int, int]
               ) -> Optional[Tuple[str, int]]:
  """The next (un)load of a model, keeping it available, as TF Serving does.

  TF Serving's AvailabilityPreservingPolicy as a pure function of what is
  aspired and what the manager holds, so that the policy is tested without
  loading anything and the manager only carries out its answers, one at a
  time, until it returns None. A version that is no longer aspired is
  unloaded only while an aspired version is available, when nothing is
  aspired at all (the model was removed), or when more than one unaspired
  version serves (the oldest goes first); otherwise the newest aspired
  version not yet known is loaded first, so a model never stops serving
  during a version change, even when the new version fails to load.

  Args:
    aspired: The versions the version policy wants served.
    states: Every version the manager holds -> its State (LOADING,
      AVAILABLE, UNLOADING or END after a failed load).

  Returns:
    (UNLOAD, version), (LOAD, version), or None when nothing is to be done.
  """
  serving = [v for v, state in states.items() if state == State.AVAILABLE]
  aspired_serving = [v for v in serving if v in aspired]
  unaspired_serving = [v for v in serving if v not in aspired]
  if unaspired_serving and (not aspired or aspired_serving or
                            len(unaspired_serving) > 1):
    return UNLOAD, min(unaspired_serving)
  new = [v for v in aspired if v not in states]
  if new:
    return LOAD, max(new)
  return None
