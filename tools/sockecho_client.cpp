// sockecho-client: send a message, half-close, print the reply. Reply bytes alone go to stdout.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <string>
#include <vector>

#include "options.hpp"
#include "sockecho/sockecho.hpp"

namespace {

constexpr std::string_view kDefaultMessage = "hello\n";

// The input named by --file: stdin for "-", else the file, opened before connecting so a wrong
// path costs no connection.
sockecho::Fd open_input(const std::string& path) {
  if (path == "-") return {};
  sockecho::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw sockecho::os_error(errno, "open " + path);
  return fd;
}

int run(const sockecho::cli::ClientSettings& s) {
  sockecho::Fd file;
  if (s.file) file = open_input(*s.file);
  const int input = file ? file.get() : STDIN_FILENO;
  const std::string source = s.file && *s.file != "-" ? *s.file : "stdin";

  if (!s.quiet)
    sockecho::cli::print(STDERR_FILENO,
                         "try to connect to " + sockecho::join_host_port(s.host, s.port) + "...\n");
  sockecho::Connection connection = sockecho::connect(s.host, s.port, s.timeout);
  if (s.timeout.count() > 0) connection.set_timeout(s.timeout);

  if (s.mode == sockecho::cli::Mode::line) {
    sockecho::line_session(connection, input, STDOUT_FILENO, s.timeout);
    return 0;
  }
  std::uint64_t sent = 0;
  if (s.file) {
    sent = sockecho::send_from_fd(connection, input, source);
  } else {
    const std::string_view message = s.send ? std::string_view(*s.send) : kDefaultMessage;
    connection.write_all(message);
    sent = message.size();
  }
  connection.close_write();
  if (!s.quiet)
    sockecho::cli::print(STDERR_FILENO, "sent OK (" + std::to_string(sent) + " bytes)\n");
  sockecho::receive_to_fd(connection, STDOUT_FILENO);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return sockecho::cli::run_program("sockecho-client", argc, argv, sockecho::cli::parse_client_args,
                                    sockecho::cli::client_usage, run);
}
