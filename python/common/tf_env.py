"""Environment variables the toolkit sets for TensorFlow, named once.

`ONEDNN_ASSUME_FROZEN_WEIGHTS`: on TensorFlow's x86 builds a MatMul/Conv
whose weights are not a `Const` (weights the merge moved into `variables/`)
takes another oneDNN kernel, and answers can differ from the frozen graph's
in the last bits. Served weights never change after the restore, so servers
of merged bundles set it to 1: the launcher, python/serve, the merge's check
and //cc/verify (whose C++ names it in cc/verify/verify_main.cc). See the
README's "Using a real tensorflow_model_server".
"""

ONEDNN_ASSUME_FROZEN_WEIGHTS = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"
