#include "cc/verify/report_format.h"

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "cc/verify/json_writer.h"

namespace tf_serving_merge {
namespace verify {
namespace {

using internal::MethodShortName;

// Indents the continuation lines of a multi-line message (TF errors end with
// "\n\t [[{{node ...}}]]").
std::string Indent(const std::string& text, const std::string& prefix) {
  return absl::StrReplaceAll(text, {{"\n", "\n" + prefix}});
}

std::string TensorsText(const std::map<std::string, TensorSummary>& tensors) {
  std::vector<std::string> parts;
  for (const auto& [alias, tensor] : tensors) {
    parts.push_back(absl::StrCat(alias, ":", internal::DtypeName(tensor.dtype),
                                 internal::ShapeString(tensor.shape)));
  }
  return absl::StrCat("(", absl::StrJoin(parts, ", "), ")");
}

void WriteTensors(const std::map<std::string, TensorSummary>& tensors,
                  JsonWriter* json) {
  json->BeginObject();
  for (const auto& [alias, tensor] : tensors) {
    json->Key(alias).BeginObject();
    json->Key("name").String(tensor.name);
    json->Key("dtype").String(internal::DtypeName(tensor.dtype));
    json->Key("shape");
    if (tensor.shape.unknown_rank()) {
      json->Null();
    } else {
      json->BeginArray();
      for (int i = 0; i < tensor.shape.dims(); ++i) {
        json->Int(tensor.shape.dim_size(i));
      }
      json->EndArray();
    }
    if (tensor.encoding != "name") {
      json->Key("encoding").String(tensor.encoding);
    }
    json->EndObject();
  }
  json->EndObject();
}

}  // namespace

absl::StatusOr<RunMode> ParseRunMode(std::string_view text) {
  if (text == "smoke+warmup") return RunMode::kSmokeAndWarmup;
  if (text == "smoke") return RunMode::kSmoke;
  if (text == "warmup") return RunMode::kWarmup;
  if (text == "none") return RunMode::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("--run='", text,
                   "' is not a run mode; choose smoke+warmup (the default), "
                   "smoke, warmup or none"));
}

std::string_view RunModeName(RunMode mode) {
  switch (mode) {
    case RunMode::kSmokeAndWarmup:
      return "smoke+warmup";
    case RunMode::kSmoke:
      return "smoke";
    case RunMode::kWarmup:
      return "warmup";
    case RunMode::kNone:
      return "none";
  }
  return "unknown";
}

bool VerifyReport::ok() const {
  if (!errors.empty()) return false;
  for (const auto& [name, signature] : signatures) {
    if (!signature.ok()) return false;
  }
  return !warmup.has_value() || warmup->ok();
}

std::string FormatText(const VerifyReport& report) {
  std::string out = absl::StrCat("export_dir: ", report.export_dir, "\n");
  absl::StrAppend(&out, "tags: ", absl::StrJoin(report.tags, ","),
                  "  run: ", RunModeName(report.run));
  if (report.loaded) {
    absl::StrAppend(&out, "  loaded in ",
                    absl::StrFormat("%.1f", report.load_ms), " ms");
  } else {
    absl::StrAppend(&out, "  not loaded");
  }
  absl::StrAppend(&out, "\n");
  size_t width = 0;
  for (const auto& [name, signature] : report.signatures) {
    width = std::max(width, name.size());
  }
  int failed = 0;
  for (const auto& [name, signature] : report.signatures) {
    if (!signature.ok()) ++failed;
    // "checked": static checks passed but the bundle did not load, or the
    // smoke run was skipped (no variables/).
    const bool smoke = report.run == RunMode::kSmoke ||
                       report.run == RunMode::kSmokeAndWarmup;
    const char* status = !signature.ok() ? "FAILED "
                         : (report.loaded && (signature.ran || !smoke))
                             ? "ok     "
                             : "checked";
    absl::StrAppend(&out, "  ", status, " ", name,
                    std::string(width - name.size() + 2, ' '),
                    MethodShortName(signature.method), " ",
                    TensorsText(signature.inputs), " -> ",
                    TensorsText(signature.outputs));
    if (signature.ran) {
      absl::StrAppend(&out, "  run ", absl::StrFormat("%.1f", signature.run_ms),
                      " ms");
      // Which candidate shape ran for inputs of unknown rank.
      std::vector<std::string> fed;
      for (const auto& [alias, tried] : signature.tried) {
        fed.push_back(absl::StrCat(
            alias, "=", tried.back(),
            tried.size() > 1
                ? absl::StrCat(" (after ",
                               absl::StrJoin(tried.begin(), tried.end() - 1,
                                             ", "),
                               ")")
                : ""));
      }
      if (!fed.empty()) {
        absl::StrAppend(&out, signature.ok() ? "  fed " : "  last tried ",
                        absl::StrJoin(fed, ", "));
      }
    }
    absl::StrAppend(&out, "\n");
    for (const std::string& error : signature.errors) {
      absl::StrAppend(&out, "      error: ", Indent(error, "        "), "\n");
    }
  }
  if (report.warmup.has_value()) {
    const WarmupReport& warmup = *report.warmup;
    absl::StrAppend(&out, "warmup: ", warmup.ok() ? "ok" : "FAILED", ", ",
                    warmup.records, " record(s) replayed in ",
                    absl::StrFormat("%.1f", warmup.run_ms), " ms from ",
                    warmup.path, "\n");
    if (!warmup.ok()) {
      absl::StrAppend(&out, "  error: ", Indent(warmup.error, "    "), "\n");
    }
  }
  for (const std::string& warning : report.warnings) {
    absl::StrAppend(&out, "warning: ", warning, "\n");
  }
  for (const std::string& error : report.errors) {
    absl::StrAppend(&out, "error: ", Indent(error, "  "), "\n");
  }
  if (report.ok()) {
    absl::StrAppend(&out, "RESULT: OK (", report.signatures.size(),
                    " signature(s))\n");
  } else {
    std::vector<std::string> why;
    if (failed > 0) {
      why.push_back(absl::StrCat(failed, " of ", report.signatures.size(),
                                 " signature(s) failed"));
    }
    if (report.warmup.has_value() && !report.warmup->ok()) {
      why.push_back("warmup failed");
    }
    if (!report.errors.empty()) {
      why.push_back(absl::StrCat(report.errors.size(), " bundle error(s)"));
    }
    absl::StrAppend(&out, "RESULT: FAILED (", absl::StrJoin(why, ", "), ")\n");
  }
  return out;
}

std::string FormatJson(const VerifyReport& report) {
  JsonWriter json;
  json.BeginObject();
  json.Key("ok").Bool(report.ok());
  json.Key("export_dir").String(report.export_dir);
  json.Key("tags").BeginArray();
  for (const std::string& tag : report.tags) json.String(tag);
  json.EndArray();
  json.Key("run").String(RunModeName(report.run));
  json.Key("loaded").Bool(report.loaded);
  json.Key("load_ms");
  if (report.loaded) {
    json.Double(report.load_ms);
  } else {
    json.Null();
  }
  json.Key("signatures").BeginObject();
  for (const auto& [name, signature] : report.signatures) {
    json.Key(name).BeginObject();
    json.Key("method").String(signature.method);
    json.Key("inputs");
    WriteTensors(signature.inputs, &json);
    json.Key("outputs");
    WriteTensors(signature.outputs, &json);
    json.Key("ok").Bool(signature.ok());
    json.Key("ran").Bool(signature.ran);
    json.Key("run_ms");
    if (signature.ran) {
      json.Double(signature.run_ms);
    } else {
      json.Null();
    }
    json.Key("fed");
    if (signature.ran) {
      json.BeginObject();
      for (const auto& [alias, shape] : signature.fed) {
        json.Key(alias).BeginArray();
        for (int64_t dim : shape.dim_sizes()) json.Int(dim);
        json.EndArray();
      }
      json.EndObject();
    } else {
      json.Null();
    }
    json.Key("error");
    if (signature.ok()) {
      json.Null();
    } else {
      json.String(absl::StrJoin(signature.errors, "; "));
    }
    json.Key("errors").BeginArray();
    for (const std::string& error : signature.errors) json.String(error);
    json.EndArray();
    json.EndObject();
  }
  json.EndObject();
  json.Key("warmup");
  if (report.warmup.has_value()) {
    const WarmupReport& warmup = *report.warmup;
    json.BeginObject();
    json.Key("path").String(warmup.path);
    json.Key("ok").Bool(warmup.ok());
    json.Key("records").Int(warmup.records);
    json.Key("records_per_signature").BeginObject();
    for (const auto& [name, count] : warmup.records_per_signature) {
      json.Key(name).Int(count);
    }
    json.EndObject();
    json.Key("run_ms").Double(warmup.run_ms);
    json.Key("error");
    if (warmup.ok()) {
      json.Null();
    } else {
      json.String(warmup.error);
    }
    json.EndObject();
  } else {
    json.Null();
  }
  json.Key("denied_ops").BeginObject();
  for (const auto& [op, nodes] : report.denied_ops) {
    json.Key(op).BeginArray();
    for (const std::string& node : nodes) json.String(node);
    json.EndArray();
  }
  json.EndObject();
  json.Key("warnings").BeginArray();
  for (const std::string& warning : report.warnings) json.String(warning);
  json.EndArray();
  json.Key("errors").BeginArray();
  for (const std::string& error : report.errors) json.String(error);
  json.EndArray();
  json.EndObject();
  return json.str();
}

}  // namespace verify
}  // namespace tf_serving_merge
