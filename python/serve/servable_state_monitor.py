"""The state of every version the server has seen, and waits on it.

TF Serving's ServableStateMonitor: each version's last state
(ModelVersionStatus.State: START, LOADING, AVAILABLE, UNLOADING, END) and,
after a failed load, its error, kept after the version is unloaded (END), so
GetModelStatus reports what happened to it. Every change notifies the
condition the monitor shares with the manager, so `wait_until` sees the
manager's own records change too (as WaitUntilServablesReachState does).
"""

import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from tensorflow_serving.apis import get_model_status_pb2

from python.serve import serving_error

State = get_model_status_pb2.ModelVersionStatus.State

_StateAndError = Tuple[int, Optional[serving_error.ServingError]]


class ServableStateMonitor:
  """Version states by model; thread-safe under `condition`."""

  def __init__(self, condition: Optional[threading.Condition] = None):
    """Creates the monitor.

    Args:
      condition: Guards the states and is notified on every change; the
        manager passes its own, so its records and the states are read
        together.
    """
    self.condition = condition or threading.Condition()
    self._states: Dict[str, Dict[int, _StateAndError]] = {}

  def set_state(self, name: str, version: int, state: int,
                error: Optional[serving_error.ServingError] = None) -> None:
    """Records a version's state (and error) and notifies waiters."""
    with self.condition:
      self._states.setdefault(name, {})[version] = (state, error)
      self.condition.notify_all()

  def notify(self) -> None:
    """Wakes `wait_until` callers to look again (e.g. when stopping)."""
    with self.condition:
      self.condition.notify_all()

  def model_status(self, name: str, version: Optional[int] = None
                  ) -> List[Tuple[int, int, Optional[serving_error.ServingError]]]:
    """Returns (version, state, error) like ServableStateMonitor.

    Args:
      name: Model name.
      version: Only this version if given.

    Returns:
      (version, ModelVersionStatus.State, ServingError or None), newest
      version first.

    Raises:
      ServingError: NOT_FOUND if the model or version was never seen.
    """
    with self.condition:
      states = self._states.get(name, {})
      if version is not None:
        if version not in states:
          raise serving_error.not_found(
              f'Could not find version {version} of model {name}. Known '
              f'versions: {sorted(states, reverse=True)}.')
        return [(version,) + states[version]]
      if not states:
        raise serving_error.not_found(
            f'Could not find any versions of model {name}. Known models: '
            f'{sorted(self._states)}.')
      return [(v,) + states[v] for v in sorted(states, reverse=True)]

  def wait_until(self, done: Callable[[], bool],
                 timeout_s: Optional[float] = None,
                 poll_s: float = 1.0) -> bool:
    """Waits until `done()` (called under `condition`) returns True.

    `done` may raise to end the wait with an error.

    Args:
      done: The predicate, re-evaluated after every notification (and at
        least every `poll_s` without a timeout).
      timeout_s: Bound on the wait; None waits as long as it takes.
      poll_s: Longest wait between evaluations without a timeout.

    Returns:
      True once `done()` held; False when `timeout_s` passed first.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with self.condition:
      while not done():
        if deadline is None:
          self.condition.wait(poll_s)
          continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          return False
        self.condition.wait(remaining)
      return True
