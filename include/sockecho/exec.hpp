// sockecho: a program run for each request (--exec): the request on its stdin, its stdout the
// reply. Built on Program (program.hpp); plugs into echo_protocol() as a ConnectionHandler.
#pragma once

#include <string>
#include <vector>

#include "sockecho/connection.hpp"
#include "sockecho/log.hpp"
#include "sockecho/program.hpp"
#include "sockecho/session.hpp"

namespace sockecho {

struct ExecOptions {
  std::vector<std::string> argv;  // the program (looked up on PATH) and its arguments
  std::string prefix;             // put before the program's stdout in the reply
  ProgramLimits limits;           // runtime (timeout outcome) and stdout (too_large) limits
  Logger log;                     // where the program's stderr lines go, one log line each
};

// What a program run for `connection` finds in its environment besides the server's, as
// "NAME=value". Over TCP: PROTO=TCP, TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT (the
// ucspi-tcp names), REMOTE_ADDR and REMOTE_PORT (CGI's). Over a Unix socket, the ucspi-unix
// names instead: PROTO=UNIX, UNIXLOCALPATH (the socket's path), and the peer's credentials
// UNIXREMOTEEUID, UNIXREMOTEEGID, UNIXREMOTEPID; no TCP or REMOTE_ variables.
[[nodiscard]] std::vector<std::string> exec_environment(const Connection& connection);

// Runs the program once per request. Exit 0: the reply is prefix + its stdout. A non-zero exit
// or a signal ends the connection unanswered, outcome failed, logged with exit=N or
// signal=NAME; over the runtime limit, outcome timeout; over the output limit, too_large.
// The program is looked up once, here: a std::system_error if it cannot be run (find_program()).
[[nodiscard]] ConnectionHandler exec_handler(ExecOptions options);

}  // namespace sockecho
