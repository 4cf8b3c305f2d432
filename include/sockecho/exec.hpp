// sockecho: a program run for each request (--exec): the request on its stdin, its stdout the
// reply. Built on Program (program.hpp); a Handler, for any way of serving.
#pragma once

#include <string>
#include <vector>

#include "sockecho/export.hpp"
#include "sockecho/handler.hpp"
#include "sockecho/log.hpp"
#include "sockecho/program.hpp"

namespace sockecho {

struct SOCKECHO_EXPORT ExecOptions {
  std::vector<std::string> argv;  // the program (looked up on PATH) and its arguments
  std::string prefix;             // put before the program's stdout in the reply
  ProgramLimits limits;           // runtime (timeout outcome) and stdout (too_large) limits
  Logger log;                     // where the program's stderr lines go, one log line each
};

// Runs the program once per request. Exit 0: the reply is prefix + its stdout. Otherwise the
// request fails unanswered (Reply::fail()) with the outcome of the program's end
// (ProgramResult::outcome()): failed, logged with exit=N or signal=NAME; timeout; too_large. The
// program is looked up once, here: a std::system_error if it cannot be run (find_program()).
[[nodiscard]] SOCKECHO_EXPORT Handler exec_handler(ExecOptions options);

}  // namespace sockecho
