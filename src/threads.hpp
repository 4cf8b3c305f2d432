// sockecho (private): threads started on demand, each recorded as retired when it leaves its
// loop and joined the next time one starts (ServerCore's workers, the waiting room's crew).
#pragma once

#include <algorithm>
#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "signal_mask.hpp"
#include "sockecho/log.hpp"

namespace sockecho::detail {

// Joins each thread listed in `retired` and removes it from `threads`; `retired` is left empty.
// A retired thread has left its loop and is ending, so each join waits a moment at most.
inline void join_retired(std::vector<std::thread>& threads,
                         std::vector<std::thread::id>& retired) noexcept {
  for (const std::thread::id id : retired) {
    const auto found = std::find_if(threads.begin(), threads.end(),
                                    [id](const std::thread& t) { return t.get_id() == id; });
    if (found == threads.end()) continue;
    found->join();
    threads.erase(found);
  }
  retired.clear();
}

// Joins the retired threads, then runs `body` on a new thread appended to `threads`, with every
// signal blocked in it when `block_signals` (it takes none of the program's). False when the
// system is out of threads or memory: that is logged, and the threads running go on.
template <class Body>
bool start_thread(std::vector<std::thread>& threads, std::vector<std::thread::id>& retired,
                  bool block_signals, const Logger& log, Body&& body) noexcept {
  join_retired(threads, retired);
  try {
    std::optional<BlockedSignals> blocked;
    if (block_signals) blocked.emplace();
    threads.emplace_back(std::forward<Body>(body));
    return true;
  } catch (const std::exception& e) {
    log.event(LogLevel::quiet, std::string("cannot start a worker: ") + e.what());
    return false;
  }
}

}  // namespace sockecho::detail
