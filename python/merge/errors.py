"""Typed exceptions raised by the merge toolkit.

Every exception carries a message meant for the person running the tool: it
names the file, model and key involved, shows the offending value and says how
to fix it. Binaries print `str(error)` and exit 1.
"""


class MergeError(Exception):
  """Base class of every error the merge toolkit raises on purpose."""


class SpecError(MergeError):
  """The merge spec (TOML file or Python objects) is invalid."""


class GraphError(MergeError):
  """A frozen graph cannot be read, parsed or merged as the spec asks."""


class PublishError(MergeError):
  """The merged bundle cannot be published into the output base."""


class VerifyError(MergeError):
  """The staged bundle does not load or a signature does not run."""


class CheckTimeoutError(VerifyError):
  """A run of the bundle check did not finish within its deadline.

  Attributes:
    abandoned: True when the run could not be stopped and still runs in a
      background thread (a graph that loops forever is not cancellable);
      the process should exit soon, without closing that session.
  """

  def __init__(self, message: str, abandoned: bool = False):
    super().__init__(message)
    self.abandoned = abandoned
