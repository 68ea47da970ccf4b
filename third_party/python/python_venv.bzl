"""Repository rule: a Python virtual environment built from a hash-locked file.

`python_venv(name, lock)` creates `<output_base>/external/<name>/venv` with the
host's `python3 -m venv`, installs exactly the requirements pinned in `lock`
(`pip install --require-hashes`: every package, every hash), and exposes it as
a Python toolchain, so every py_binary / py_test runs on that interpreter and
no package is installed into the system Python.

Bazel caches the repository: a second build reuses the environment. The lock
is read through its label, so editing it (for example changing a pinned
version) invalidates the repository and the environment is re-created from
scratch on the next build.

Targets of the generated repository:
  :py_toolchain   register with register_toolchains()
  :python3        the interpreter (for repository rules and genrules)
"""

_REQUIRED_PYTHON = "3.11"

def _fail_with(rctx, what, result, fix):
    fail("\n".join([
        "python_venv(%s): %s failed (exit %d)." % (rctx.attr.name, what, result.return_code),
        "--- stdout (tail) ---",
        "\n".join(result.stdout.splitlines()[-25:]),
        "--- stderr (tail) ---",
        "\n".join(result.stderr.splitlines()[-40:]),
        "Fix: " + fix,
    ]))

def _host_python(rctx):
    name = rctx.attr.python
    python = rctx.which(name)
    if not python:
        fail("python_venv(%s): no `%s` on PATH. Install Python %s (e.g. `apt-get install python3 python3-venv`) and retry." %
             (rctx.attr.name, name, _REQUIRED_PYTHON))
    result = rctx.execute([python, "-c", "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])"])
    if result.return_code != 0:
        _fail_with(rctx, "running `%s`" % python, result, "make `%s` a working Python %s." % (name, _REQUIRED_PYTHON))
    executable, version = result.stdout.strip().splitlines()[-2:]
    if version != _REQUIRED_PYTHON:
        fail(("python_venv(%s): `%s` is Python %s but %s is locked for Python %s (wheels are cp%s). " +
              "Put a Python %s first on PATH as `%s`.") % (
            rctx.attr.name,
            executable,
            version,
            rctx.attr.lock,
            _REQUIRED_PYTHON,
            _REQUIRED_PYTHON.replace(".", ""),
            _REQUIRED_PYTHON,
            name,
        ))
    return executable

def _python_venv_impl(rctx):
    # Resolving the label records the lock's digest: editing it re-runs this rule.
    lock = rctx.path(rctx.attr.lock)
    host_python = _host_python(rctx)

    rctx.report_progress("Creating virtual environment from %s" % rctx.attr.lock)
    result = rctx.execute([host_python, "-m", "venv", "--clear", "venv"], timeout = 300)
    if result.return_code != 0:
        _fail_with(rctx, "`python3 -m venv`", result, "install the venv module (`apt-get install python3-venv`).")

    rctx.report_progress("Installing %s into the virtual environment (TensorFlow is large: minutes)" % rctx.attr.lock)
    result = rctx.execute(
        [
            "venv/bin/python",
            "-m",
            "pip",
            "install",
            "--require-hashes",
            "--only-binary=:all:",
            "--no-input",
            "--disable-pip-version-check",
            "--progress-bar=off",
            "-r",
            str(lock),
        ],
        timeout = rctx.attr.timeout,
        quiet = True,
    )
    if result.return_code != 0:
        _fail_with(
            rctx,
            "`pip install --require-hashes -r %s`" % rctx.attr.lock,
            result,
            "check that PyPI is reachable and that every package in the lock has its hashes " +
            "(regenerate it with tools/update_lock.sh).",
        )

    interpreter = str(rctx.path("venv/bin/python3"))
    rctx.file("BUILD.bazel", """\
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

package(default_visibility = ["//visibility:public"])

exports_files(["venv/bin/python3"])

py_runtime(
    name = "py3_runtime",
    interpreter_path = "{interpreter}",
    python_version = "PY3",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":py3_runtime",
)

toolchain(
    name = "py_toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)

alias(
    name = "python3",
    actual = "venv/bin/python3",
)
""".format(interpreter = interpreter))

python_venv = repository_rule(
    implementation = _python_venv_impl,
    attrs = {
        "lock": attr.label(mandatory = True, allow_single_file = True, doc = "pip requirements file with --hash pins."),
        "python": attr.string(default = "python3", doc = "Host interpreter used to create the environment."),
        "timeout": attr.int(default = 3600, doc = "Seconds allowed for pip install."),
    },
    environ = ["PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"],
    doc = "A virtual environment installed from a hash-locked requirements file, as a Python toolchain.",
)
