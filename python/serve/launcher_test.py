"""Tests of the launcher's choice of server binary (no model is served).

The launcher starts the project server as the //python/serve:serve binary
from its runfiles; the end-to-end tests (tests/serve_e2e_test and others)
exercise the servers it starts.
"""

import os
import subprocess
import sys

from absl.testing import absltest

from python.common import built_binaries
from python.serve import launcher


class ServerCommandTest(absltest.TestCase):

  def test_project_server_is_the_serve_binary_from_the_runfiles(self):
    command = launcher.server_command(['--port=1', '--model_name=m'])
    expected = os.path.join(os.environ['TEST_SRCDIR'],
                            os.environ['TEST_WORKSPACE'], 'python', 'serve',
                            'serve')
    self.assertEqual(command,
                     [sys.executable, expected, '--port=1', '--model_name=m'])
    self.assertTrue(os.access(expected, os.X_OK))

  def test_real_server_gets_the_same_flags(self):
    self.assertEqual(
        launcher.server_command(['--port=1'], '/opt/tensorflow_model_server'),
        ['/opt/tensorflow_model_server', '--port=1'])

  def test_the_binary_runs_and_answers_as_the_project_server(self):
    # Bad usage: the server's own exit code and TF Serving's message, so the
    # command started the project server (and not, say, a stale stub).
    result = subprocess.run(
        launcher.server_command([f'--port={launcher.free_port()}']),
        capture_output=True, text=True, env=launcher.project_server_env(),
        timeout=120, check=False)
    self.assertEqual(result.returncode, 2, result.stderr[-3000:])
    self.assertIn('Both --model_base_path and --model_config_file are empty',
                  result.stderr)

  def test_missing_binary_is_a_clear_error_before_anything_starts(self):
    empty = self.create_tempdir().full_path
    # No runfiles tree and no checkout holds it (built_binaries also looks
    # next to itself, in the tree it was run from).
    with absltest.mock.patch.dict(os.environ, {'TEST_SRCDIR': empty,
                                               'RUNFILES_DIR': empty}), \
        absltest.mock.patch.object(built_binaries, '_REPO_ROOT', empty):
      with self.assertRaisesRegex(
          launcher.LauncherError,
          r'Cannot start the project server: //python/serve:serve is not at '
          r'any of \[.*\]; .*//python/serve:launcher has in its data.*'
          r'`bazel build //python/serve:serve`'):
        launcher.server_command(['--port=1'])
      server = launcher.ServerProcess(model_name='m', model_base_path='/m',
                                      use_real_server=False)
      with self.assertRaises(launcher.LauncherError):
        server.start()
      self.assertIsNone(server.process)

  def test_named_real_server_that_does_not_exist(self):
    with absltest.mock.patch.dict(
        os.environ, {launcher.ENV_VAR: '/nonexistent/tensorflow_model_server'}):
      with self.assertRaisesRegex(
          launcher.LauncherError,
          r'\$TENSORFLOW_MODEL_SERVER=.*is not an executable file or a '
          r'command on PATH'):
        launcher.find_real_server()


if __name__ == '__main__':
  absltest.main()
