"""Repository rule: TensorFlow's C++ headers and shared libraries from the pip wheel.

The `tensorflow` wheel installed in the project's virtual environment
(@python_venv) ships the C++ headers (with its own Eigen, absl and protobuf)
and `libtensorflow_framework.so.2` + `libtensorflow_cc.so.2`. This rule asks
that interpreter for `tf.sysconfig`, links the headers and libraries into the
repository and exposes them as one cc_library, `@<name>//:tensorflow`, so the
C++ code compiles against exactly the TensorFlow the Python code runs.

The libraries are linked with `-Wl,--no-as-needed`: the session factories
(DirectSession) register themselves from static initializers, and without the
flag the linker drops the library that holds them and `LoadSavedModel` fails
with "No session factory registered".
"""

_SYSCONFIG = """
import json, tensorflow as tf
print("TF_SYSCONFIG=" + json.dumps({
    "version": tf.__version__,
    "include": tf.sysconfig.get_include(),
    "lib": tf.sysconfig.get_lib(),
    "compile_flags": tf.sysconfig.get_compile_flags(),
}))
"""

_LIBRARIES = ["libtensorflow_framework.so.2", "libtensorflow_cc.so.2"]

def _tensorflow_cc_impl(rctx):
    python = rctx.path(rctx.attr.python)
    rctx.report_progress("Asking tf.sysconfig for TensorFlow's C++ headers and libraries")
    result = rctx.execute([python, "-c", _SYSCONFIG], timeout = 600, environment = {"TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = [l for l in result.stdout.splitlines() if l.startswith("TF_SYSCONFIG=")]
    if result.return_code != 0 or not lines:
        fail("tensorflow_cc(%s): `%s -c 'import tensorflow'` failed (exit %d):\n%s\nFix: the tensorflow wheel in %s must import." %
             (rctx.attr.name, python, result.return_code, result.stderr[-4000:], rctx.attr.python))
    config = json.decode(lines[-1][len("TF_SYSCONFIG="):])

    rctx.symlink(config["include"], "include")
    for lib in _LIBRARIES:
        path = rctx.path(config["lib"] + "/" + lib)
        if not path.exists:
            fail("tensorflow_cc(%s): %s not found in %s (tensorflow %s). Fix: install a tensorflow wheel that ships the C++ libraries." %
                 (rctx.attr.name, lib, config["lib"], config["version"]))
        rctx.symlink(path, "lib/" + lib)

    # -I is provided by `includes`; keep the defines and the language level.
    copts = [f for f in config["compile_flags"] if not f.startswith("-I")]
    rctx.file("BUILD.bazel", """\
package(default_visibility = ["//visibility:public"])

# TensorFlow {version} C++ API from the pip wheel (see tensorflow_cc.bzl).
cc_library(
    name = "tensorflow",
    hdrs = glob(["include/**"], exclude = ["include/**/*.py", "include/**/LICENSE*"]),
    includes = ["include"],
    copts = {copts},
    linkopts = [
        "-Wl,--no-as-needed",
        "-L{lib}",
        "-l:libtensorflow_framework.so.2",
        "-l:libtensorflow_cc.so.2",
        "-Wl,-rpath,{lib}",
        "-Wl,--as-needed",
    ],
    data = {libraries},
)

exports_files({libraries})
""".format(
        version = config["version"],
        copts = repr(copts),
        lib = str(rctx.path("lib")),
        libraries = repr(["lib/" + l for l in _LIBRARIES]),
    ))

tensorflow_cc = repository_rule(
    implementation = _tensorflow_cc_impl,
    attrs = {
        "python": attr.label(
            default = "@python_venv//:venv/bin/python3",
            allow_single_file = True,
            doc = "Interpreter whose tensorflow wheel provides the headers and libraries.",
        ),
    },
    doc = "TensorFlow C++ headers and shared libraries of the venv's tensorflow wheel, as @<name>//:tensorflow.",
)
