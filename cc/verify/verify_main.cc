// Verifies a SavedModel the way TensorFlow Serving loads and serves it.
//
//   bazel run //cc/verify -- --export_dir=/models/merged/3 [--tags=serve]
//       [--signatures=a,b] [--run=smoke+warmup|smoke|warmup|none]
//       [--allow_ops=Op1,Op2] [--run_timeout_ms=60000]
//       [--dump_requests=FILE] [--json]
//
// Exit status: 0 when every check holds, 1 when verification failed, 2 for
// bad usage. See verify_lib.h for what is checked.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/log/globals.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cc/verify/verify_lib.h"
#include "tools/cpp/runfiles/runfiles.h"

extern char** environ;

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

constexpr char kUsage[] =
    R"(usage: verify --export_dir=DIR [--tags=serve] [--signatures=a,b]
              [--run=smoke+warmup|smoke|warmup|none] [--allow_ops=Op1,Op2]
              [--run_timeout_ms=60000] [--dump_requests=FILE] [--json]

Loads the SavedModel in DIR with tensorflow::LoadSavedModel (as TensorFlow
Serving does), checks every signature against the graph, then runs them.

  --export_dir   SavedModel directory, e.g. /models/merged/3 (required),
                 or s3://bucket/prefix/3 (downloaded with boto3 into a
                 temporary directory first; AWS_ENDPOINT_URL, the AWS
                 credential chain and AWS_REGION apply)
  --tags         comma-separated tag-set to load (default: serve)
  --signatures   comma-separated signatures to check (default: all)
  --run          smoke+warmup (default): replay assets.extra/
                 tf_serving_warmup_requests when present (as TF Serving's
                 load does), then run each signature once on synthesized
                 inputs; smoke: only the latter; warmup: only the former
                 (the file must exist); none: load and check only
  --allow_ops    comma-separated ops of python/common/denied_ops.txt to
                 accept (default: none; a bundle using a denied op is
                 reported and neither loaded nor run)
  --run_timeout_ms  deadline of every graph run, the loader's included, in
                 milliseconds (default: 60000; 0: none)
  --dump_requests  write the requests the smoke run fed to FILE as
                 PredictionLog TFRecords (the warmup file's format)
  --json         print a JSON report instead of text

Exit status: 0 verified, 1 verification failed, 2 bad usage.
)";

struct Flags {
  std::string export_dir;
  std::string tags = "serve";
  std::string signatures;
  std::string run = "smoke+warmup";
  std::string allow_ops;
  std::string run_timeout_ms = "60000";
  std::string dump_requests;
  bool json = false;
  bool help = false;
};

std::vector<std::string> SplitList(const std::string& text) {
  if (text.empty()) return {};
  return absl::StrSplit(text, ',');
}

// Parses --name=value / --name value / --[no]json. Returns InvalidArgument
// for unknown flags, missing values and positional arguments.
absl::Status ParseFlags(int argc, char** argv, Flags* flags) {
  const std::map<std::string_view, std::string*> string_flags = {
      {"export_dir", &flags->export_dir},
      {"tags", &flags->tags},
      {"signatures", &flags->signatures},
      {"run", &flags->run},
      {"allow_ops", &flags->allow_ops},
      {"run_timeout_ms", &flags->run_timeout_ms},
      {"dump_requests", &flags->dump_requests},
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help" || arg == "-help") {
      flags->help = true;
      continue;
    }
    if (arg.substr(0, 1) != "-") {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "'; flags look like "
                       "--export_dir=DIR"));
    }
    arg.remove_prefix(arg.substr(0, 2) == "--" ? 2 : 1);
    std::string_view name = arg;
    std::string_view value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (name == "json" || name == "nojson") {
      if (name == "nojson" && has_value) {
        return absl::InvalidArgumentError("--nojson takes no value");
      }
      if (!has_value || value == "true" || value == "1") {
        flags->json = name == "json";
      } else if (value == "false" || value == "0") {
        flags->json = false;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "--json='", value, "' is not a boolean; use --json or --nojson"));
      }
      continue;
    }
    auto it = string_flags.find(name);
    if (it == string_flags.end()) {
      std::vector<std::string> known;
      for (const auto& [known_name, target] : string_flags) {
        known.push_back(absl::StrCat("--", known_name));
      }
      known.push_back("--json");
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag '--", name, "'; known flags: ",
                       absl::StrJoin(known, ", ")));
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value"));
      }
      value = argv[++i];
    }
    *it->second = std::string(value);
  }
  return absl::OkStatus();
}

// --- s3:// export dirs (issue 15) ----------------------------------------
// TensorFlow's C++ filesystems have no s3 scheme in this build, so the
// version is downloaded by //cc/verify:s3_fetch (boto3, the same code as the
// merge and the server) into a temporary directory, verified there, and
// deleted afterwards.

bool IsS3(const std::string& path) { return path.rfind("s3://", 0) == 0; }

// Removes the downloaded copy when main returns.
struct TempDir {
  std::string path;
  ~TempDir() {
    if (path.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

// Downloads `uri` into a fresh directory under $TMPDIR (set in `dir`).
// Returns an error message, or "" on success; the fetcher's own one-line
// error has gone to stderr already.
std::string FetchS3(const char* argv0, const std::string& uri, TempDir* dir) {
  using bazel::tools::cpp::runfiles::Runfiles;
  std::string error;
  std::unique_ptr<Runfiles> runfiles(Runfiles::Create(argv0, &error));
  if (runfiles == nullptr) {
    return absl::StrCat("cannot find the runfiles of verify (", error,
                        "); run it with bazel run //cc/verify");
  }
  const std::string fetcher =
      runfiles->Rlocation("tf_serving_merge/cc/verify/s3_fetch");
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      absl::StrCat(tmp != nullptr && *tmp ? tmp : "/tmp", "/verify-s3-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    return absl::StrCat("cannot create a temporary directory ", templ,
                        " for the download of ", uri);
  }
  dir->path = templ;
  const std::string dest = absl::StrCat(templ, "/bundle");
  std::vector<std::string> args = {fetcher, absl::StrCat("--uri=", uri),
                                   absl::StrCat("--dest=", dest)};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  for (const auto& [name, value] : runfiles->EnvVars()) {
    env.push_back(absl::StrCat(name, "=", value));
  }
  std::vector<char*> argv_c, env_c;
  for (auto& a : args) argv_c.push_back(a.data());
  argv_c.push_back(nullptr);
  for (auto& e : env) env_c.push_back(e.data());
  env_c.push_back(nullptr);
  std::cout.flush();
  const pid_t pid = fork();
  if (pid < 0) return "cannot start the S3 download (fork failed)";
  if (pid == 0) {
    execve(argv_c[0], argv_c.data(), env_c.data());
    std::cerr << "verify: cannot run " << fetcher << "\n";
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    return absl::StrCat("could not download ", uri, " (see above)");
  }
  return "";
}

int UsageError(std::string_view message) {
  std::cerr << "verify: " << message << "\n\n" << kUsage;
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  // Keep TensorFlow's INFO logging out of the way unless asked for with
  // TF_CPP_MIN_LOG_LEVEL=0.
  if (std::getenv("TF_CPP_MIN_LOG_LEVEL") == nullptr) {
    absl::SetMinLogLevel(absl::LogSeverityAtLeast::kWarning);
  }

  // Served weights never change after the restore: let oneDNN treat them as
  // frozen, as the project's server and launcher do, so MatMul/Conv weights
  // that a merge moved into variables/ run through the same kernel as
  // constants (see python/merge/externalize.py). Read at kernel creation.
  setenv("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "1", /*overwrite=*/0);

  Flags flags;
  if (absl::Status s = ParseFlags(argc, argv, &flags); !s.ok()) {
    return UsageError(s.message());
  }
  if (flags.help) {
    std::cout << kUsage;
    return kExitOk;
  }
  tf_serving_merge::verify::VerifyOptions options;
  options.export_dir = flags.export_dir;
  TempDir s3_copy;
  if (IsS3(flags.export_dir)) {
    if (std::string e = FetchS3(argv[0], flags.export_dir, &s3_copy);
        !e.empty()) {
      std::cerr << "verify: " << e << "\n";
      return kExitFailed;
    }
    options.export_dir = s3_copy.path + "/bundle";
  }
  // `bazel run` starts binaries in their runfiles tree: resolve a relative
  // --export_dir against the directory the user ran Bazel from.
  const char* working_dir = std::getenv("BUILD_WORKING_DIRECTORY");
  if (working_dir != nullptr && !options.export_dir.empty() &&
      options.export_dir[0] != '/' &&
      options.export_dir.find("://") == std::string::npos) {
    options.export_dir = absl::StrCat(working_dir, "/", options.export_dir);
  }
  options.tags = SplitList(flags.tags);
  options.allow_ops = SplitList(flags.allow_ops);
  if (!absl::SimpleAtoi(flags.run_timeout_ms, &options.run_timeout_ms)) {
    return UsageError(absl::StrCat("--run_timeout_ms='", flags.run_timeout_ms,
                                   "' is not a whole number of milliseconds"));
  }
  options.dump_requests = flags.dump_requests;
  if (working_dir != nullptr && !options.dump_requests.empty() &&
      options.dump_requests[0] != '/' &&
      options.dump_requests.find("://") == std::string::npos) {
    options.dump_requests =
        absl::StrCat(working_dir, "/", options.dump_requests);
  }
  options.signatures = SplitList(flags.signatures);
  auto run = tf_serving_merge::verify::ParseRunMode(flags.run);
  if (!run.ok()) return UsageError(run.status().message());
  options.run = *run;
  if (absl::Status s = tf_serving_merge::verify::ValidateOptions(options);
      !s.ok()) {
    return UsageError(s.message());
  }

  auto report = tf_serving_merge::verify::VerifySavedModel(options);
  if (!report.ok()) return UsageError(report.status().message());
  if (IsS3(flags.export_dir)) report->export_dir = flags.export_dir;
  if (flags.json) {
    std::cout << tf_serving_merge::verify::FormatJson(*report) << std::endl;
  } else {
    std::cout << tf_serving_merge::verify::FormatText(*report) << std::flush;
  }
  return report->ok() ? kExitOk : kExitFailed;
}
