#include "sockecho/exec.hpp"

#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace sockecho {

namespace {

// The address without IPv6 brackets, and IPv4-mapped peers as their IPv4 address.
std::string bare_host(const Address& address) {
  std::string host = address.host();
  constexpr std::string_view kMapped = "::ffff:";
  if (host.rfind(kMapped, 0) == 0 && host.find('.') != std::string::npos) {
    host.erase(0, kMapped.size());
  }
  return host;
}

}  // namespace

std::vector<std::string> exec_environment(const Connection& connection) {
  const Address& peer = connection.peer();
  const Address local = connection.local();
  if (peer.family() == AF_UNIX) {
    std::vector<std::string> env = {"PROTO=UNIX", "UNIXLOCALPATH=" + local.path()};
    if (const std::optional<Credentials> cred = connection.peer_credentials()) {
      env.push_back("UNIXREMOTEEUID=" + std::to_string(cred->uid));
      env.push_back("UNIXREMOTEEGID=" + std::to_string(cred->gid));
      env.push_back("UNIXREMOTEPID=" + std::to_string(cred->pid));
    }
    return env;
  }
  const std::string remote_ip = bare_host(peer);
  const std::string remote_port = std::to_string(peer.port());
  return {"PROTO=TCP",
          "TCPREMOTEIP=" + remote_ip,
          "TCPREMOTEPORT=" + remote_port,
          "TCPLOCALIP=" + bare_host(local),
          "TCPLOCALPORT=" + std::to_string(local.port()),
          "REMOTE_ADDR=" + remote_ip,
          "REMOTE_PORT=" + remote_port};
}

ConnectionHandler exec_handler(ExecOptions options) {
  if (options.argv.empty()) throw std::invalid_argument("exec_handler: no program");
  const std::string path = find_program(options.argv[0]);
  auto shared = std::make_shared<const ExecOptions>(std::move(options));
  return [shared, path](const Connection& connection, std::string_view request, Reply& reply) {
    const ExecOptions& o = *shared;
    Program program(o.argv, exec_environment(connection), path);
    const std::string who =
        "exec pid=" + std::to_string(program.pid()) + " peer=" + connection.peer().to_string();
    ProgramResult result = program.run(request, o.limits, [&](std::string_view line) {
      if (o.log.enabled(LogLevel::normal)) {
        o.log.event(LogLevel::normal, who + " stderr: " + std::string(line));
      }
    });
    if (result.log_dropped > 0) {
      o.log.event(LogLevel::normal,
                  who + " stderr: " + std::to_string(result.log_dropped) + " more bytes dropped");
    }
    switch (result.end) {
      case ProgramResult::End::exited:
        if (result.code == 0) {
          reply.append_ref(o.prefix);
          reply.append(result.output);
          return;
        }
        [[fallthrough]];
      case ProgramResult::End::signaled:
        throw ConnectionError(Outcome::failed, o.argv[0] + " failed", result.describe());
      case ProgramResult::End::timed_out:
        throw ConnectionError(Outcome::timeout, o.argv[0] + " ran over " +
                                                    std::to_string(o.limits.timeout.count()) +
                                                    " ms (exec timeout)");
      case ProgramResult::End::too_large:
        throw ConnectionError(Outcome::too_large, o.argv[0] + " wrote over " +
                                                      std::to_string(o.limits.max_output) +
                                                      " bytes (max output)");
    }
  };
}

}  // namespace sockecho
