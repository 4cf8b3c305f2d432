#include "sockecho/exec.hpp"

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "program_log.hpp"

namespace sockecho {

Handler exec_handler(ExecOptions options) {
  if (options.argv.empty()) throw std::invalid_argument("exec_handler: no program");
  const std::string path = find_program(options.argv[0]);
  auto shared = std::make_shared<const ExecOptions>(std::move(options));
  return [shared, path](const Request& request, Reply& reply) {
    const ExecOptions& o = *shared;
    Program program(o.argv, exec_environment(request), path);
    const std::string who =
        "exec pid=" + std::to_string(program.pid()) + " peer=" + request.peer().to_string();
    const ProgramResult result = detail::run_logged(program, request.bytes(), o.limits, o.log, who);
    switch (result.outcome()) {
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
