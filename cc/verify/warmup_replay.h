// Replays assets.extra/tf_serving_warmup_requests as TF Serving's
// RunSavedModelWarmup does at load time: the PredictionLog records in order,
// at most kMaxWarmupRecords, stopping at the first error, each request checked
// the way TF Serving's Predict / Classify / Regress / MultiInference APIs
// check it before running.
//
// Counterparts in TF Serving's tensorflow_serving/servables/tensorflow/:
// saved_model_warmup_util.cc (internal::RunSavedModelWarmup: the file, its
// WarmupConsts::kMaxNumRecords limit, the first error stops the load) for
// ReplayWarmup, and saved_model_warmup.cc (RunWarmupRequest: one request by
// its log type, through request_runner.h here) for RunWarmupRequest.

#ifndef TF_SERVING_MERGE_CC_VERIFY_WARMUP_REPLAY_H_
#define TF_SERVING_MERGE_CC_VERIFY_WARMUP_REPLAY_H_

#include <string>

#include "absl/status/status.h"
#include "cc/verify/prediction_log.h"
#include "cc/verify/report_format.h"
#include "cc/verify/request_runner.h"
#include "cc/verify/saved_model_checks.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"

namespace tf_serving_merge {
namespace verify {

// <export_dir>/assets.extra/tf_serving_warmup_requests.
std::string WarmupPath(const std::string& export_dir);

// Executes one warmup request; `signature_used` receives the signature name
// (for multi-inference, the names joined with '+'). `graph` tells which
// inputs a PlaceholderWithDefault feeds, so a Predict request may omit them.
absl::Status RunWarmupRequest(const Runner& runner,
                              const tensorflow::MetaGraphDef& meta_graph,
                              const GraphIndex& graph,
                              const WarmupRequest& request,
                              std::string* signature_used);

// Replays the warmup file of `export_dir` into `report`: its path, records
// replayed (per signature), time, and the first error (a missing file is
// one), naming the record's index.
void ReplayWarmup(const Runner& runner,
                  const tensorflow::MetaGraphDef& meta_graph,
                  const GraphIndex& graph, const std::string& export_dir,
                  WarmupReport* report);

}  // namespace verify
}  // namespace tf_serving_merge

#endif  // TF_SERVING_MERGE_CC_VERIFY_WARMUP_REPLAY_H_
