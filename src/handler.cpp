#include "sockecho/handler.hpp"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sockecho/connection.hpp"

namespace sockecho {

Request::Request(std::string_view bytes, const Connection& connection) noexcept
    : bytes_(bytes), peer_(&connection.peer()), connection_(&connection) {}

Address Request::local() const {
  if (local_ != nullptr) return *local_;
  return connection_ != nullptr ? connection_->local() : Address();
}

void Reply::append(std::string_view bytes) {
  if (bytes.empty()) return;
  pieces_.push_back({nullptr, owned_.size(), bytes.size()});
  owned_.append(bytes);
  size_ += bytes.size();
}

void Reply::append_ref(std::string_view bytes) {
  if (bytes.empty()) return;
  pieces_.push_back({bytes.data(), 0, bytes.size()});
  size_ += bytes.size();
}

void Reply::clear() noexcept {
  pieces_.clear();
  owned_.clear();
  size_ = 0;
  outcome_ = Outcome::ok;
  answered_ = true;
  fields_.clear();
  detail_.clear();
}

void Reply::truncate(std::size_t size) noexcept {
  while (size_ > size && !pieces_.empty()) {
    const Piece& last = pieces_.back();
    if (last.data == nullptr) owned_.resize(last.offset);
    size_ -= last.size;
    pieces_.pop_back();
  }
}

void Reply::set_outcome(Outcome outcome, std::string fields) {
  outcome_ = outcome;
  fields_ = std::move(fields);
}

void Reply::fail(Outcome outcome, std::string detail, std::string fields) {
  outcome_ = outcome;
  answered_ = false;
  detail_ = std::move(detail);
  fields_ = std::move(fields);
}

void Reply::pieces(std::vector<std::string_view>& out) const {
  out.clear();
  for (const Piece& piece : pieces_) {
    const char* data = piece.data != nullptr ? piece.data : owned_.data() + piece.offset;
    out.emplace_back(data, piece.size);
  }
}

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

Handler prefix_handler(std::string prefix) {
  return [prefix = std::move(prefix)](const Request& request, Reply& reply) {
    reply.append_ref(prefix);
    reply.append_ref(request.bytes());
  };
}

}  // namespace sockecho
