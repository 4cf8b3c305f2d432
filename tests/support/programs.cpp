#include "programs.hpp"

#include <algorithm>
#include <array>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sockecho::test {

std::string server_program() { return SOCKECHO_SERVER_PROGRAM; }
std::string client_program() { return SOCKECHO_CLIENT_PROGRAM; }

namespace {

// "--unix" among the server's own options (not --exec's program's).
bool unix_socket(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "--exec") return false;
    if (arg == "--unix" || arg.rfind("--unix=", 0) == 0) return true;
  }
  return false;
}

std::vector<std::string> exactly(const std::vector<std::string>& args) {
  std::vector<std::string> argv{server_program()};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::vector<std::string> server_argv(std::vector<std::string> args) {
  if (unix_socket(args)) return exactly(args);
  // First, so that a test's own --port wins (the last one does) and --exec's program, which
  // takes every argument after it, gets none of these.
  const std::array<std::string, 3> first = {server_program(), "--port", "0"};
  args.insert(args.begin(), first.begin(), first.end());
  return args;
}

}  // namespace

std::vector<std::string> activated(const std::vector<std::string>& server_args) {
  std::vector<std::string> argv = {"/bin/sh", "-c", R"(LISTEN_PID=$$ exec "$0" "$@")",
                                   server_program()};
  argv.insert(argv.end(), server_args.begin(), server_args.end());
  return argv;
}

SpawnOptions passing(const std::vector<int>& fds) {
  SpawnOptions options;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    options.fds.emplace_back(fds[i], 3 + static_cast<int>(i));
  }
  options.env = {"LISTEN_FDS=" + std::to_string(fds.size())};
  return options;
}

ServerProcess::ServerProcess(const std::vector<std::string>& args) : Child(server_argv(args)) {
  std::optional<std::string> line = stdout_line();
  if (!line) throw std::runtime_error("sockecho-server printed no ready line; stderr: " + err());
  ready_ = *line;
  if (unix_socket(args)) {
    if (ready_.rfind("listening on unix:", 0) != 0) {
      throw std::runtime_error("not a Unix socket's ready line: " + ready_);
    }
    return;
  }
  port_ = port_of(ready_);
  if (port_ == 0) throw std::runtime_error("no port in ready line: " + ready_);
}

FixedPortServer::FixedPortServer(const std::vector<std::string>& args) : Child(exactly(args)) {
  ready_ = stdout_line();
}

namespace {

std::vector<std::string> with_metrics(std::vector<std::string> args) {
  const std::array<std::string, 2> metrics = {"--metrics", "127.0.0.1:0"};
  args.insert(args.begin(), metrics.begin(), metrics.end());
  return args;
}

}  // namespace

MeteredServer::MeteredServer(std::vector<std::string> args)
    : ServerProcess(with_metrics(std::move(args))) {
  const std::optional<std::string> line = stdout_line();
  if (line && line->rfind("metrics on 127.0.0.1:", 0) == 0) metrics_port_ = port_of(*line);
}

std::string haproxy_config(const std::string& bind, const std::vector<Backend>& backends) {
  const bool draining = std::any_of(backends.begin(), backends.end(),
                                    [](const Backend& b) { return b.health_port != 0; });
  std::string config =
      "global\n"
      "    maxconn 4096\n"
      "defaults\n"
      "    mode tcp\n"
      "    timeout connect 5s\n"
      "    timeout client 35s\n"
      "    timeout server 35s\n";
  if (draining) config += "    retries 3\n    option redispatch\n";
  config += "frontend sockecho\n    bind " + bind +
            "\n"
            "    default_backend sockecho_servers\n"
            "backend sockecho_servers\n"
            "    balance roundrobin\n";
  if (draining) config += "    option httpchk GET /health\n";
  for (std::size_t i = 0; i < backends.size(); ++i) {
    config += "    server s" + std::to_string(i + 1) +
              " 127.0.0.1:" + std::to_string(backends[i].port) + " check";
    if (backends[i].health_port != 0) {
      config += " port " + std::to_string(backends[i].health_port) + " inter 100ms fall 1 rise 1";
    }
    config += "\n";
  }
  return config;
}

}  // namespace sockecho::test
