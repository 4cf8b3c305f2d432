#include "sockecho/status.hpp"

#include <algorithm>
#include <cstring>  // sigabbrev_np
#include <memory>
#include <optional>
#include <utility>

#include "sockecho/protocol.hpp"

namespace sockecho {

namespace {

constexpr std::string_view kErrorLine =
    "error expected 'status ID', 'result ID', 'cancel ID' or 'retry ID', where ID is 1 to 64 "
    "characters of [A-Za-z0-9_-]\n";

std::int64_t ms_between(WallTime from, WallTime to) {
  return std::max<std::int64_t>(0, (to - from).count());
}

std::string signal_name(int signal) {
  const char* abbrev = ::sigabbrev_np(signal);
  return abbrev != nullptr ? "SIG" + std::string(abbrev) : std::to_string(signal);
}

std::string_view state_word(const Job& job) {
  if (job.state == JobState::ended && job.end) return to_string(*job.end);
  return to_string(job.state);
}

// A request as `VERB ID`, with an optional "\n" or "\r\n": the verb and the ID, or nothing when
// it is not one.
struct Parsed {
  std::string_view verb;  // one of the verbs, or "invalid"
  std::string_view id;    // a valid ID, or empty
};

bool ends_with(std::string_view text, std::string_view end) {
  return text.size() >= end.size() && text.substr(text.size() - end.size()) == end;
}

Parsed parse(std::string_view request) {
  if (ends_with(request, "\r\n")) {
    request.remove_suffix(2);
  } else if (ends_with(request, "\n")) {
    request.remove_suffix(1);
  }
  const std::size_t space = request.find(' ');
  if (space == std::string_view::npos) return {"invalid", {}};
  const std::string_view verb = request.substr(0, space);
  const std::string_view id = request.substr(space + 1);
  for (const std::string_view known : {"status", "result", "cancel", "retry"}) {
    if (verb == known) return {known, valid_job_id(id) ? id : std::string_view()};
  }
  return {"invalid", {}};
}

// The word after "key=" in a log line's fields.
std::string_view field(std::string_view fields, std::string_view key) {
  std::size_t at = 0;
  while (at < fields.size()) {
    const std::size_t end = std::min(fields.find(' ', at), fields.size());
    const std::string_view word = fields.substr(at, end - at);
    if (word.size() > key.size() && word.substr(0, key.size()) == key && word[key.size()] == '=') {
      return word.substr(key.size() + 1);
    }
    at = end + 1;
  }
  return {};
}

template <std::size_t N>
std::size_t index_of(const std::array<std::string_view, N>& words, std::string_view word,
                     std::size_t otherwise) {
  const auto it = std::find(words.begin(), words.end(), word);
  return it == words.end() ? otherwise : static_cast<std::size_t>(it - words.begin());
}

Handler status_handler(JobQueue& jobs) {
  return [&jobs](const Request& request, Reply& reply) {
    const Parsed asked = parse(request.bytes());
    const std::string verb(asked.verb);
    if (asked.id.empty()) {
      reply.append_ref(kErrorLine);
      reply.set_outcome(Outcome::ok, "verb=" + verb + " result=error");
      return;
    }
    std::optional<Job> job;
    std::string output;
    if (asked.verb == "status") {
      job = jobs.find(asked.id);
    } else if (asked.verb == "result") {
      std::optional<std::pair<Job, std::string>> found = jobs.result(asked.id);
      if (found) {
        job = std::move(found->first);
        output = std::move(found->second);
      }
    } else if (asked.verb == "cancel") {
      job = jobs.cancel(asked.id);
    } else {
      job = jobs.retry(asked.id);
    }
    if (!job) {
      reply.append(format_unknown(asked.id));
      reply.set_outcome(Outcome::ok, "verb=" + verb + " result=unknown");
      return;
    }
    reply.append(format_status(*job, std::chrono::time_point_cast<std::chrono::milliseconds>(
                                         std::chrono::system_clock::now())));
    if (!output.empty()) reply.append(output);
    reply.set_outcome(Outcome::ok, "verb=" + verb + " result=ok");
  };
}

ServerOptions server_options(const StatusOptions& options,
                             std::function<void(const ConnectionRecord&)> finished) {
  ServerOptions out;
  out.workers = kStatusWorkers;
  out.timeout = options.timeout;
  out.max_per_source = 0;  // asking about a job is never a flood of connections to refuse
  out.on_connection = std::move(finished);
  return out;
}

}  // namespace

bool valid_job_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > kMaxJobIdLength) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

std::string format_status(const Job& job, WallTime now) {
  std::string line(state_word(job));
  line += " id=" + job.id + " attempts=" + std::to_string(job.attempts);
  if (job.exit_code) {
    line += " exit=" + std::to_string(*job.exit_code);
  } else if (job.signal) {
    line += " signal=" + signal_name(*job.signal);
  }
  if (!job.reason.empty()) line += " reason=" + job.reason;
  line += " queued_ms=" + std::to_string(ms_between(job.accepted, job.first_start.value_or(now)));
  if (job.run_start) {
    line += " run_ms=" + std::to_string(ms_between(*job.run_start, job.run_end.value_or(now)));
    line += " output_bytes=" + std::to_string(job.output_bytes);
    line += " stderr_bytes=" + std::to_string(job.stderr_bytes);
  }
  return line + "\n";
}

std::string format_unknown(std::string_view id) {
  return "unknown id=" + std::string(id) + " attempts=0 queued_ms=0\n";
}

StatusListener::StatusListener(Listener listener, JobQueue& jobs, StatusOptions options)
    : options_(std::move(options)) {
  Limits limits;
  limits.max_bytes = kStatusMaxRequest;
  limits.request_timeout = options_.request_timeout;
  // A request is at most kStatusMaxRequest bytes: no large buffer is ever charged.
  server_ = std::make_unique<Server>(
      std::move(listener), echo_protocol(status_handler(jobs), limits),
      server_options(options_, [this](const ConnectionRecord& record) { finished(record); }));
  thread_ = std::make_unique<ServingThread>(*server_);
}

StatusListener::~StatusListener() { thread_.reset(); }

void StatusListener::finished(const ConnectionRecord& record) noexcept {
  std::string_view verb = field(record.fields, "verb");
  std::string_view outcome = field(record.fields, "result");
  if (verb.empty()) verb = "invalid";
  switch (record.outcome) {
    case Outcome::ok:
      break;
    case Outcome::timeout:
      outcome = "timeout";
      break;
    case Outcome::too_large:
    case Outcome::reset:
      outcome = "reset";
      break;
    default:
      outcome = "error";
      break;
  }
  if (outcome.empty()) outcome = "error";
  const std::size_t v = index_of(kVerbs, verb, kVerbs.size() - 1);
  const std::size_t o = index_of(kOutcomes, outcome, 2);
  counts_[v][o].fetch_add(1, std::memory_order_relaxed);
  if (!options_.log.enabled(LogLevel::normal)) return;
  try {
    options_.log.event(LogLevel::normal, "status peer=" + record.peer.to_string() +
                                             " verb=" + std::string(kVerbs[v]) +
                                             " outcome=" + std::string(kOutcomes[o]));
  } catch (...) {  // NOLINT(bugprone-empty-catch): no memory for the line; the count stands
  }
}

void StatusListener::collect(Exposition& out) const {
  out.family("sockecho_status_requests_total", "counter",
             "Requests to the status listener, by verb and outcome.");
  for (std::size_t v = 0; v < kVerbs.size(); ++v) {
    for (std::size_t o = 0; o < kOutcomes.size(); ++o) {
      out.sample("sockecho_status_requests_total",
                 label("verb", kVerbs[v]) + "," + label("outcome", kOutcomes[o]),
                 counts_[v][o].load(std::memory_order_relaxed));
    }
  }
}

}  // namespace sockecho
