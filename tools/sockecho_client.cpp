// sockecho-client: send a message, half-close, print the reply. Reply bytes alone go to stdout.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>

#include "options.hpp"
#include "sockecho/sockecho.hpp"

namespace {

constexpr std::string_view kDefaultMessage = "hello\n";

// The input named by --file: stdin for "-", else the file, opened before connecting so a wrong
// path costs no connection. open() takes a directory for reading; only read() would refuse it,
// after the connect, so it is refused here.
sockecho::Fd open_input(const std::string& path) {
  if (path == "-") return {};
  sockecho::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw sockecho::os_error(errno, "open " + path);
  struct stat status {};
  if (::fstat(fd.get(), &status) != 0) throw sockecho::os_error(errno, "fstat " + path);
  if (S_ISDIR(status.st_mode)) throw sockecho::os_error(EISDIR, "open " + path);
  return fd;
}

// "30 s", "0.5 s": a --timeout value as the user wrote it.
std::string seconds(std::chrono::milliseconds timeout) {
  std::string text = std::to_string(timeout.count() / 1000);
  if (const auto part = timeout.count() % 1000; part != 0) {
    std::string decimals = std::to_string(1000 + part).substr(1);
    decimals.erase(decimals.find_last_not_of('0') + 1);
    text += "." + decimals;
  }
  return text + " s";
}

// What a reset by sockecho-server means.
constexpr std::string_view kLimits =
    "; usually one of its limits (--max-bytes, --timeout, --request-timeout, --max-per-source): "
    "its log line for this connection says which";

// The line for a failure of the exchange with `server`, saying what it means. `printed` is how
// many reply bytes already went to stdout.
std::string explain(const std::system_error& e, const std::string& server,
                    const sockecho::cli::ClientSettings& s, std::uint64_t printed) {
  // Writing the reply to stdout failed (its reader gone, say): not the server's doing.
  const bool stdout_failed = std::string_view(e.what()).rfind("write output", 0) == 0;
  std::string line;
  const auto* cut = dynamic_cast<const sockecho::RequestCut*>(&e);
  if (cut != nullptr && !cut->reset()) {
    line = "the server " + server + " ended the connection first: " + cut->what();
  } else if (cut != nullptr) {
    line = "the server " + server + " reset the connection: " + cut->what();
    line += kLimits;
  } else if (e.code() == std::errc::timed_out) {
    line = "timed out waiting for the server " + server + ": no progress for " +
           seconds(s.timeout) + " (--timeout) (" + e.what() + ")";
  } else if ((e.code() == std::errc::connection_reset || e.code() == std::errc::broken_pipe) &&
             !stdout_failed) {
    line = "the server " + server + " reset the connection: the request was not answered (" +
           e.what() + ")";
    line += kLimits;
  } else {
    line = e.what();
  }
  if (printed > 0 && s.mode == sockecho::cli::Mode::echo && !stdout_failed) {
    line += "; the " + std::to_string(printed) + " bytes already on stdout are not a whole reply";
  }
  return line;
}

// --udp: the message (--send, or --file read whole) as one datagram, the one reply printed.
int run_udp(const sockecho::cli::ClientSettings& s) {
  std::string message(s.send ? std::string_view(*s.send) : kDefaultMessage);
  if (s.file) {
    sockecho::Fd file = open_input(*s.file);
    message = sockecho::read_message(file ? file.get() : STDIN_FILENO,
                                     *s.file == "-" ? "stdin" : *s.file);
  }
  const std::string server = "udp:" + sockecho::join_host_port(s.host, s.port);
  if (!s.quiet) sockecho::cli::print(STDERR_FILENO, "send a datagram to " + server + "...\n");
  std::string reply;
  try {
    sockecho::DatagramSocket socket = sockecho::DatagramSocket::connect(s.host, s.port);
    reply = sockecho::datagram_request(socket, message, s.timeout);
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::timed_out) {
      throw std::runtime_error("no reply from " + server + " within " + seconds(s.timeout) +
                               " (--timeout): nothing answers there, or the datagram or its "
                               "reply was lost or not answered (too large, over the rate limit)");
    }
    if (e.code() == std::errc::connection_refused) {
      throw std::runtime_error(std::string(e.what()) + ": nothing listens on " + server);
    }
    throw;
  }
  if (!s.quiet) {
    sockecho::cli::print(STDERR_FILENO, "sent OK (" + std::to_string(message.size()) + " bytes)\n");
  }
  sockecho::write_all(STDOUT_FILENO, reply, "stdout");
  return 0;
}

int run(const sockecho::cli::ClientSettings& s) {
  if (s.udp) return run_udp(s);
  sockecho::Fd file;
  if (s.file) file = open_input(*s.file);
  const int input = file ? file.get() : STDIN_FILENO;
  const std::string source = s.file && *s.file != "-" ? *s.file : "stdin";
  const bool local = !s.unix_path.empty();
  const std::string server = sockecho::cli::target_name(s);

  if (!s.quiet) sockecho::cli::print(STDERR_FILENO, "try to connect to " + server + "...\n");
  sockecho::Connection connection;
  try {
    connection = local
                     ? sockecho::connect(sockecho::Address::unix_path(s.unix_path), {s.timeout, {}})
                     : sockecho::connect(s.host, s.port, s.timeout);
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::timed_out) throw;
    throw std::runtime_error("timed out connecting to " + server + " after " + seconds(s.timeout) +
                             " (--timeout) (" + e.what() + ")");
  }
  if (s.timeout.count() > 0) connection.set_timeout(s.timeout);

  try {
    if (s.mode == sockecho::cli::Mode::line) {
      sockecho::line_session(connection, input, STDOUT_FILENO, s.timeout);
      return 0;
    }
    const std::string_view message = s.send ? std::string_view(*s.send) : kDefaultMessage;
    const sockecho::Source what =
        s.file ? sockecho::Source::descriptor(input, source) : sockecho::Source::bytes(message);
    const auto sent = [&](std::uint64_t bytes) {
      if (!s.quiet)
        sockecho::cli::print(STDERR_FILENO, "sent OK (" + std::to_string(bytes) + " bytes)\n");
    };
    (void)sockecho::exchange(connection, what, STDOUT_FILENO, sent);
  } catch (const std::system_error& e) {
    throw std::runtime_error(explain(e, connection.peer().to_string(), s, connection.bytes_read()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything opens a descriptor: started with 0, 1 or 2 closed, the socket would take that
  // number, and the client would read its input from it or write its reply or status into it.
  if (!sockecho::cli::prepare_standard_streams("sockecho-client")) {
    return sockecho::cli::kExitFailure;
  }
  return sockecho::cli::run_program("sockecho-client", argc, argv, sockecho::cli::parse_client_args,
                                    sockecho::cli::client_usage, run);
}
