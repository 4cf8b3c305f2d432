#include "sockecho/exec.hpp"

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace sockecho {

std::vector<std::string> exec_environment(const Request& request) {
  const Address& peer = request.peer();
  const Address local = request.local();
  if (peer.family() == AF_UNIX) {
    std::vector<std::string> env = {"PROTO=UNIX", "UNIXLOCALPATH=" + local.path()};
    if (const std::optional<Credentials>& cred = peer.credentials()) {
      env.push_back("UNIXREMOTEEUID=" + std::to_string(cred->uid));
      env.push_back("UNIXREMOTEEGID=" + std::to_string(cred->gid));
      env.push_back("UNIXREMOTEPID=" + std::to_string(cred->pid));
    }
    return env;
  }
  // Without IPv6 brackets, and IPv4-mapped addresses as the IPv4 address they carry.
  const Address remote = peer.unmapped();
  const Address here = local.unmapped();
  const std::string remote_ip = remote.host();
  const std::string remote_port = std::to_string(remote.port());
  return {"PROTO=TCP",
          "TCPREMOTEIP=" + remote_ip,
          "TCPREMOTEPORT=" + remote_port,
          "TCPLOCALIP=" + here.host(),
          "TCPLOCALPORT=" + std::to_string(here.port()),
          "REMOTE_ADDR=" + remote_ip,
          "REMOTE_PORT=" + remote_port};
}

Outcome outcome_of(const ProgramResult& result) noexcept {
  switch (result.end) {
    case ProgramResult::End::exited:
      return result.code == 0 ? Outcome::ok : Outcome::failed;
    case ProgramResult::End::signaled:
      return Outcome::failed;
    case ProgramResult::End::timed_out:
      return Outcome::timeout;
    case ProgramResult::End::too_large:
      return Outcome::too_large;
  }
  return Outcome::failed;
}

Handler exec_handler(ExecOptions options) {
  if (options.argv.empty()) throw std::invalid_argument("exec_handler: no program");
  const std::string path = find_program(options.argv[0]);
  auto shared = std::make_shared<const ExecOptions>(std::move(options));
  return [shared, path](const Request& request, Reply& reply) {
    const ExecOptions& o = *shared;
    Program program(o.argv, exec_environment(request), path);
    const std::string who =
        "exec pid=" + std::to_string(program.pid()) + " peer=" + request.peer().to_string();
    ProgramResult result = program.run(request.bytes(), o.limits, [&](std::string_view line) {
      if (o.log.enabled(LogLevel::normal)) {
        o.log.event(LogLevel::normal, who + " stderr: " + std::string(line));
      }
    });
    if (result.log_dropped > 0) {
      o.log.event(LogLevel::normal,
                  who + " stderr: " + std::to_string(result.log_dropped) + " more bytes dropped");
    }
    switch (outcome_of(result)) {
      case Outcome::ok:
        reply.append_ref(o.prefix);
        reply.append(result.output);
        return;
      case Outcome::timeout:
        reply.fail(Outcome::timeout, o.argv[0] + " ran over " +
                                         std::to_string(o.limits.timeout.count()) +
                                         " ms (exec timeout)");
        return;
      case Outcome::too_large:
        reply.fail(Outcome::too_large, o.argv[0] + " wrote over " +
                                           std::to_string(o.limits.max_output) +
                                           " bytes (max output)");
        return;
      default:
        reply.fail(Outcome::failed, o.argv[0] + " failed", result.describe());
        return;
    }
  };
}

}  // namespace sockecho
