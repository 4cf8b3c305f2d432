// sockecho: a program run for each request (--exec): the request on its stdin, its stdout the
// reply. Built on Program (program.hpp); a Handler, for any way of serving.
#pragma once

#include <string>
#include <vector>

#include "sockecho/handler.hpp"
#include "sockecho/log.hpp"
#include "sockecho/program.hpp"
#include "sockecho/record.hpp"

namespace sockecho {

struct ExecOptions {
  std::vector<std::string> argv;  // the program (looked up on PATH) and its arguments
  std::string prefix;             // put before the program's stdout in the reply
  ProgramLimits limits;           // runtime (timeout outcome) and stdout (too_large) limits
  Logger log;                     // where the program's stderr lines go, one log line each
};

// What a program run for `request` finds in its environment besides the server's, as
// "NAME=value". Over TCP: PROTO=TCP, TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT (the
// ucspi-tcp names), REMOTE_ADDR and REMOTE_PORT (CGI's). Over a Unix socket, the ucspi-unix
// names instead: PROTO=UNIX, UNIXLOCALPATH (the socket's path), and the peer's credentials
// UNIXREMOTEEUID, UNIXREMOTEEGID, UNIXREMOTEPID; no TCP or REMOTE_ variables.
[[nodiscard]] std::vector<std::string> exec_environment(const Request& request);

// The outcome of a program's end, the one map of it: exit 0 ok; another exit or a signal
// failed; over its runtime limit timeout; over its output limit too_large.
[[nodiscard]] Outcome outcome_of(const ProgramResult& result) noexcept;

// Runs the program once per request. Exit 0: the reply is prefix + its stdout. Otherwise the
// request fails unanswered (Reply::fail()) with outcome_of() the program's end: failed, logged
// with exit=N or signal=NAME; timeout; too_large.
// The program is looked up once, here: a std::system_error if it cannot be run (find_program()).
[[nodiscard]] Handler exec_handler(ExecOptions options);

}  // namespace sockecho
